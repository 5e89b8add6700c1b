"""Alert delivery: events are stored exactly once in the ledger's outbox, then handed to sinks.

A sink is any callable taking an :class:`~kling_budget.types.AlertEvent`. A failing sink never blocks or
fails the ledger operation that produced the event: its error is logged and the event stays pending in
the outbox for a later delivery attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from kling_budget.types import AlertEvent

if TYPE_CHECKING:
    from kling_budget.ledger import Ledger

__all__ = ["AlertDispatcher", "AlertSink", "LogSink"]

logger = logging.getLogger("kling_budget.alerts")


class AlertSink(Protocol):
    """Something that delivers an alert (log, webhook, Slack, email)."""

    name: str

    def __call__(self, event: AlertEvent) -> None:
        """Deliver one event; raise on failure."""


class LogSink:
    """Writes each alert as one WARNING line to the ``kling_budget.alerts`` logger (the default sink)."""

    name = "log"

    def __call__(self, event: AlertEvent) -> None:
        logger.warning("ALERT %s: %s", event.kind.value, event.message)


class AlertDispatcher:
    """Delivers outbox events to sinks and marks them delivered once every sink accepted them."""

    def __init__(self, ledger: Ledger, sinks: Sequence[AlertSink]) -> None:
        self.ledger = ledger
        self.sinks = list(sinks)

    def deliver(self, events: Sequence[AlertEvent]) -> int:
        """Deliver ``events`` to every sink; return how many were fully delivered."""
        delivered = []
        for event in events:
            ok = True
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception as exc:  # a sink must never break enforcement
                    ok = False
                    logger.error("alert sink %s failed for %s: %s", getattr(sink, "name", sink), event.kind, exc)
            if ok and event.id is not None:
                delivered.append(event.id)
        if delivered:
            try:
                self.ledger.mark_alerts_delivered(delivered)
            except Exception as exc:
                logger.error("could not mark %d alerts delivered: %s", len(delivered), exc)
        return len(delivered)

    def flush(self, *, limit: int = 100) -> int:
        """Deliver pending outbox events (e.g. ones a crashed process or a failed sink left behind)."""
        return self.deliver(self.ledger.pending_alerts(limit=limit))
