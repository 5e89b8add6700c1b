"""Alerts: events are stored exactly once in the ledger's outbox, then delivered to sinks at least once.

A sink is any callable taking an :class:`~kling_budget.types.AlertEvent` and raising when the event was
not accepted (:class:`AlertSink`). Built in: :class:`LogSink` (default), :class:`WebhookSink` (JSON POST),
:class:`SlackSink` (incoming webhook) and :class:`EmailSink` (SMTP with STARTTLS and login), each with a
timeout and bounded retries (:class:`RetryPolicy`). Sinks stored in the ledger (``kling-budget alerts
add``) are shared by every process.

:class:`AlertDispatcher` delivers off the enforcement path: a failing or hanging sink never blocks or slows
a reservation, is logged and counted, and its events stay in the outbox until delivered.
:func:`evaluate_alerts` raises the alerts no single ledger operation can see (forecast to exceed, pack
running low or expiring); the ``*_event`` helpers build the events other components emit.
"""

from __future__ import annotations

from typing import Protocol

from kling_budget.alerts._dispatch import AlertDispatcher, FlushResult, SinkTestResult
from kling_budget.alerts._sinks import (
    AlertDeliveryError,
    EmailSink,
    LogSink,
    RetryPolicy,
    SlackSink,
    WebhookSink,
    mask_url,
    redact,
)
from kling_budget.alerts.evaluate import evaluate_alerts, reconcile_drift_event, upstream_pack_exhausted_event
from kling_budget.types import AlertEvent

__all__ = [
    "AlertDeliveryError",
    "AlertDispatcher",
    "AlertSink",
    "EmailSink",
    "FlushResult",
    "LogSink",
    "RetryPolicy",
    "SinkTestResult",
    "SlackSink",
    "WebhookSink",
    "evaluate_alerts",
    "mask_url",
    "reconcile_drift_event",
    "redact",
    "upstream_pack_exhausted_event",
]


class AlertSink(Protocol):
    """Something that delivers an alert (log, webhook, Slack, email).

    Optional attributes the dispatcher reads: ``key`` (the name delivery progress is recorded under,
    default ``local:<name>``), ``inline`` (``True`` only for sinks that cannot block, like the log: they
    run in the caller's thread) and ``retry`` (a :class:`RetryPolicy`, to size the delivery lease).
    """

    name: str

    def __call__(self, event: AlertEvent) -> None:
        """Deliver one event; raise (preferably :class:`AlertDeliveryError`) on failure."""
