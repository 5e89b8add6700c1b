"""The alert dispatcher: delivers outbox events to sinks without ever holding up enforcement."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kling_budget.alerts._sinks import (
    AlertDeliveryError,
    LogSink,
    RetryPolicy,
    build_sink,
    describe_target,
    redact,
    secrets_of,
)
from kling_budget.errors import LedgerError
from kling_budget.ledger.outbox import ClaimedEvent, Outbox, SinkConfig
from kling_budget.types import AlertEvent, AlertKind

if TYPE_CHECKING:
    from kling_budget.alerts import AlertSink
    from kling_budget.ledger import Ledger

__all__ = ["AlertDispatcher", "FlushResult", "SinkTestResult"]

logger = logging.getLogger("kling_budget.alerts")

_STOP = object()


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one pass over the outbox did."""

    claimed: int = 0
    delivered: int = 0
    deferred: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {"claimed": self.claimed, "delivered": self.delivered, "deferred": self.deferred, "failed": self.failed}


@dataclass(frozen=True, slots=True)
class SinkTestResult:
    """The outcome of sending a test event to one sink."""

    sink: str
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    label: str
    sink: Callable[[AlertEvent], None]
    config: SinkConfig | None
    inline: bool
    secrets: tuple[str, ...] = field(repr=False)
    worst_case: float

    def matches(self, event: AlertEvent) -> bool:
        return self.config is None or self.config.matches(event)


def _local_entry(sink: AlertSink) -> _Entry:
    name = str(getattr(sink, "name", type(sink).__name__))
    retry = getattr(sink, "retry", None)
    return _Entry(
        key=str(getattr(sink, "key", f"local:{name}")),
        label=repr(sink) if type(sink).__repr__ is not object.__repr__ else name,
        sink=sink,
        config=None,
        inline=bool(getattr(sink, "inline", False)),
        secrets=(),
        worst_case=retry.worst_case_seconds() if isinstance(retry, RetryPolicy) else 30.0,
    )


_FALLBACK = _local_entry(LogSink())
"""Where an event goes when no sink wants it: the ``kling_budget.alerts`` log (WARNING; stderr by default)."""


def _configured_entry(config: SinkConfig) -> _Entry:
    sink = build_sink(config.kind, config.config, key=config.key)
    retry = getattr(sink, "retry", None)
    return _Entry(
        key=config.key,
        label=f"#{config.id} {config.kind} {describe_target(config.kind, config.config)}",
        sink=sink,
        config=config,
        inline=False,
        secrets=tuple(secrets_of(config.config)),
        worst_case=retry.worst_case_seconds() if isinstance(retry, RetryPolicy) else 30.0,
    )


def _wall() -> datetime:
    return datetime.now(UTC)


# Dispatchers with a worker thread that were not closed: an interpreter exit gives them a bounded drain, so a
# script that never calls close() still delivers its alerts (its worker is a daemon thread, killed at exit).
_unclosed: weakref.WeakSet[AlertDispatcher] = weakref.WeakSet()
_unclosed_lock = threading.Lock()
_exit_hook: list[bool] = []


def _watch_for_exit(dispatcher: AlertDispatcher) -> None:
    with _unclosed_lock:
        _unclosed.add(dispatcher)
        if not _exit_hook:
            # Registered late (after logging and the ledger's drivers were imported), so it runs before
            # their own exit hooks: the log still writes and the ledger still answers while we drain.
            atexit.register(_drain_at_exit)
            _exit_hook.append(True)


def _drain_at_exit() -> None:
    """Close every unclosed dispatcher, all of them within the longest ``drain_timeout`` among them."""
    with _unclosed_lock:
        dispatchers = list(_unclosed)
    if not dispatchers:
        return
    deadline = time.monotonic() + max(d.drain_timeout for d in dispatchers)
    for dispatcher in dispatchers:
        dispatcher.close(timeout=max(0.0, deadline - time.monotonic()))


class AlertDispatcher:
    """Delivers the ledger's outbox events to sinks, in a background thread, at least once.

    Enforcement calls :meth:`deliver` with the events its transaction stored; that call only runs the
    inline sinks (the log) and queues the rest, so a sink that hangs or fails never slows a reservation.
    The worker thread claims each event with a lease in the ledger (so another process flushing the outbox
    at the same time does not send it too), calls every sink that wants it (each with its own timeout and
    bounded retries), records which sinks accepted it, and marks it delivered once all of them did. A
    failed round is retried later with exponential backoff, at most ``max_rounds`` times; a sink that just
    failed is not called again for other events until its backoff has passed. Events that never reach the
    worker (full queue, a crash) stay pending in the outbox for :meth:`deliver_pending` (the next
    :class:`~kling_budget.tracker.CostTracker` that opens the ledger calls it), :meth:`flush`,
    ``kling-budget alerts deliver`` or any other process's dispatcher.

    A process that exits without :meth:`close` still delivers what it queued: an ``atexit`` hook closes
    every unclosed dispatcher, waiting at most ``drain_timeout`` in all. When no sink wants an event (none
    given, none configured in the ledger, or all filtered out), it is written to the ``kling_budget.alerts``
    log instead, so it is never dropped silently.

    Args:
        ledger: where the outbox and the configured sinks live.
        sinks: in-process sinks (default: none; :class:`~kling_budget.tracker.CostTracker` passes the log).
        configured: also deliver to the sinks stored in the ledger (``kling-budget alerts add``).
        background: deliver in a worker thread (``False``: :meth:`deliver` delivers before returning).
        retry_delay, max_retry_delay: seconds before the first retry round, doubled each round, capped.
        max_rounds: delivery rounds before an event is marked failed.
        poll_interval: if set, the worker also flushes due outbox events this often (for a gateway).
        drain_timeout: how long :meth:`close`, or the exit of a process that did not call it, waits for
            queued events (default 5 s).
        owner: the lease holder's name (default ``host:pid:random``).
    """

    def __init__(
        self,
        ledger: Ledger,
        sinks: Sequence[AlertSink] = (),
        *,
        configured: bool = True,
        background: bool = True,
        retry_delay: float = 10.0,
        max_retry_delay: float = 900.0,
        max_rounds: int = 10,
        poll_interval: float | None = None,
        drain_timeout: float = 5.0,
        queue_size: int = 10_000,
        sink_refresh: float = 5.0,
        owner: str | None = None,
        clock: Callable[[], datetime] = _wall,
    ) -> None:
        self.ledger = ledger
        self.outbox = Outbox(ledger.backend)
        self.sinks = list(sinks)
        self.configured = configured
        self.background = background
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.max_rounds = max(1, max_rounds)
        self.poll_interval = poll_interval
        self.drain_timeout = drain_timeout
        self.sink_refresh = sink_refresh
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._abandon = False
        self._blocked: dict[str, float] = {}
        self._sink_failures: Counter[str] = Counter()
        self._configured_cache: tuple[float, list[_Entry]] = (-1e18, [])
        self._next_flush: float | None = None
        self._last_error: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AlertDispatcher(sinks={len(self.sinks)}, configured={self.configured}, owner={self.owner!r})"

    # ----------------------------------------------------------------- public API

    def deliver(self, events: Sequence[AlertEvent]) -> int:
        """Hand freshly stored events over for delivery; returns at once (in background mode).

        Inline sinks (the log) run now; everything else happens in the worker thread. Returns how many
        events were accepted (events without an outbox id are ignored).
        """
        inline = [e for e in self._local_entries() if e.inline]
        items = [
            (event.id, frozenset(e.key for e in inline if e.matches(event) and self._call(e, event)))
            for event in events
            if event.id is not None
        ]
        return self._hand_over(items)

    def deliver_pending(self, *, limit: int = 1000) -> int:
        """Deliver (in the background) the outbox events nobody is delivering: those a process that crashed,
        or exited before delivering, left behind. Returns how many were queued.

        Only events whose next attempt is due and that no live deliverer holds a lease on are taken, so a
        process delivering its own events right now is never doubled, and a failing sink keeps its backoff.
        Costs one read of the outbox; a ledger that cannot be read is logged, not raised.
        """
        try:
            ids = self.outbox.pending_ids(limit=limit, now=self._clock())
        except LedgerError as exc:
            logger.warning("could not look for undelivered alerts: %s", exc)
            return 0
        return self._hand_over([(event_id, frozenset()) for event_id in ids])

    def _hand_over(self, items: Sequence[tuple[int, frozenset[str]]]) -> int:
        """Queue (event id, sinks that already have it) for the worker, or deliver now when not in background."""
        if not self.background:
            self._deliver_ids(items)
            return len(items)
        accepted = 0
        for item in items:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._count("queue_full")  # the event stays pending in the outbox
                continue
            accepted += 1
        if accepted:
            self._ensure_worker()
        return accepted

    def flush(self, *, limit: int = 100, due_only: bool = True) -> FlushResult:
        """Deliver pending outbox events now, in this thread (e.g. ones a crashed process left behind).

        Events leased by another deliverer are skipped. ``due_only=False`` also takes events whose next
        retry is not due yet.
        """
        totals: Counter[str] = Counter()
        cursor = 0  # one pass takes each event at most once, even one it just deferred
        for _ in range(limit):
            if self._abandon:
                break  # closing: what is left stays pending, unleased, for the next deliverer
            claimed = self.outbox.claim(
                self.owner, lease_seconds=self._lease_seconds(), due_only=due_only, after_id=cursor, now=self._clock()
            )
            if not claimed:
                break
            for item in claimed:
                cursor = max(cursor, item.event.id or 0)
                totals["claimed"] += 1
                totals[self._deliver_claimed(item, frozenset())] += 1
        return FlushResult(totals["claimed"], totals["delivered"], totals["deferred"], totals["failed"])

    def check(self, *, now: datetime | None = None) -> list[AlertEvent]:
        """Evaluate forecast and pack alerts (:func:`~kling_budget.alerts.evaluate.evaluate_alerts`), store
        the new ones in the outbox and deliver them; returns the new events."""
        from kling_budget.alerts.evaluate import evaluate_alerts

        events = evaluate_alerts(self.ledger, now=now)
        self.deliver(events)
        return events

    def send_test(self, sink_id: int | None = None) -> list[SinkTestResult]:
        """Send a test event, now and in this thread, to one configured sink, or to every configured sink
        (to the in-process sinks, else the log, when none is configured)."""
        if sink_id is not None:
            entries = [_configured_entry(self.outbox.get_sink(sink_id))]
        else:
            entries = self._configured_entries(force=True) or self._local_entries() or [_FALLBACK]
        now = self._clock()
        event = AlertEvent(
            kind=AlertKind.THRESHOLD,
            message="test alert from kling-budget: alerts reach this sink",
            dedupe_key=f"test:{uuid.uuid4().hex}",
            budget="",
            created_at=now.isoformat(),
        )
        results = []
        for entry in entries:
            ok = self._call(entry, event)
            results.append(SinkTestResult(entry.label, ok, "" if ok else self._last_error.get(entry.key, "")))
        return results

    def start(self) -> None:
        """Start the worker thread (it also starts on the first :meth:`deliver`)."""
        self._ensure_worker()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (waiting at most ``timeout``, default ``drain_timeout``) and stop.

        What is not delivered by then stays pending in the outbox.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        with _unclosed_lock:
            _unclosed.discard(self)
        if thread is None or not thread.is_alive():
            return
        wait = self.drain_timeout if timeout is None else timeout
        self._queue.put(_STOP)
        thread.join(wait)
        if thread.is_alive():
            self._abandon = True  # the worker stops after its current sink call; the outbox keeps the rest
            self._count("abandoned_on_close")
            logger.warning(
                "alert delivery did not finish within %.1f s; the rest stay pending in the ledger's outbox for "
                "the next process that opens it (or kling-budget alerts deliver)",
                wait,
            )

    def status(self) -> dict[str, Any]:
        """Counters of this dispatcher (sent, failures, retries ...) and its queue; for ``alerts list``
        and monitoring. Per-sink totals across processes are in :meth:`Outbox.sinks`."""
        with self._lock:
            stats = dict(self.stats)
            blocked = {k: round(v - time.monotonic(), 1) for k, v in self._blocked.items() if v > time.monotonic()}
        return {
            "owner": self.owner,
            "queued": self._queue.qsize(),
            "worker_alive": bool(self._thread and self._thread.is_alive()),
            "stats": stats,
            "sinks_backing_off": blocked,
        }

    # ----------------------------------------------------------------- internals

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.stats[name] += amount

    def _local_entries(self) -> list[_Entry]:
        return [_local_entry(s) for s in self.sinks]

    def _configured_entries(self, *, force: bool = False) -> list[_Entry]:
        if not self.configured:
            return []
        loaded_at, entries = self._configured_cache
        if force or time.monotonic() - loaded_at > self.sink_refresh:
            entries = []
            for config in self.outbox.sinks(enabled_only=True):
                try:
                    entries.append(_configured_entry(config))
                except Exception as exc:  # a broken stored config must not stop the other sinks
                    logger.warning("alert sink #%d is misconfigured: %s", config.id, exc)
                    self._count("misconfigured")
            self._configured_cache = (time.monotonic(), entries)
        return entries

    def _entries(self) -> list[_Entry]:
        return self._local_entries() + self._configured_entries()

    def _lease_seconds(self, entries: Sequence[_Entry] | None = None) -> float:
        entries = self._entries() if entries is None else entries
        return max(60.0, sum(e.worst_case for e in entries) + 30.0)

    def _round_delay(self, failures: int) -> float:
        return float(min(self.retry_delay * 2.0 ** max(0, failures - 1), self.max_retry_delay))

    def _call(self, entry: _Entry, event: AlertEvent) -> bool:
        """Call one sink; count and log a failure (secret-free) instead of raising."""
        try:
            entry.sink(event)
        except Exception as exc:
            message = str(exc) if isinstance(exc, AlertDeliveryError) else f"{type(exc).__name__}: {exc}"
            message = redact(message, entry.secrets)
            self._last_error[entry.key] = message
            with self._lock:
                self.stats["failures"] += 1
                self._sink_failures[entry.key] += 1
                self._blocked[entry.key] = time.monotonic() + self._round_delay(self._sink_failures[entry.key])
            logger.warning("alert sink %s failed for %s: %s", entry.label, event.dedupe_key, message)
            self._record(entry, ok=False, error=message)
            return False
        with self._lock:
            self.stats["sent"] += 1
            self._sink_failures.pop(entry.key, None)
            self._blocked.pop(entry.key, None)
        self._record(entry, ok=True)
        return True

    def _record(self, entry: _Entry, *, ok: bool, error: str = "") -> None:
        if entry.config is None:
            return
        try:
            self.outbox.record_sink_result(entry.config.id, ok=ok, error=error, now=self._clock())
        except Exception as exc:  # status bookkeeping must not turn a delivery into a failure
            logger.debug("could not record the status of alert sink %s: %s", entry.label, exc)

    def _deliver_ids(self, items: Sequence[tuple[int, frozenset[str]]]) -> None:
        for event_id, done in items:
            if self._abandon:
                return
            claimed = self.outbox.claim(
                self.owner, ids=[event_id], lease_seconds=self._lease_seconds(), now=self._clock()
            )
            for item in claimed:
                self._deliver_claimed(item, done)

    def _deliver_claimed(self, claimed: ClaimedEvent, inline_done: frozenset[str]) -> str:
        """Deliver one claimed event to every sink that wants it and has not got it; return the outcome:
        ``delivered``, ``deferred`` (retry later) or ``failed`` (given up)."""
        event = claimed.event
        assert event.id is not None
        done = set(claimed.delivered_to) | set(inline_done)
        errors: list[str] = []
        tried_and_failed = False
        wanted = [e for e in self._entries() if e.matches(event)] or [_FALLBACK]  # never dropped silently
        for entry in wanted:
            if entry.key in done:
                continue
            if self._abandon:
                errors.append(f"{entry.label}: not tried (dispatcher closing)")
                continue
            with self._lock:
                blocked = self._blocked.get(entry.key, 0.0) > time.monotonic()
            if blocked:
                errors.append(f"{entry.label}: backing off after a failure")
                continue
            if self._call(entry, event):
                done.add(entry.key)
            else:
                tried_and_failed = True
                errors.append(f"{entry.label}: {self._last_error.get(entry.key, 'failed')}")
        now = self._clock()
        if not errors:
            self.outbox.complete(self.owner, event.id, frozenset(done), now=now)
            self._count("delivered")
            return "delivered"
        attempts = claimed.attempts + (1 if tried_and_failed else 0)
        give_up = tried_and_failed and attempts >= self.max_rounds
        with self._lock:
            waits = [v - time.monotonic() for v in self._blocked.values() if v > time.monotonic()]
        delay = max(min(waits), 0.0) if waits else self._round_delay(max(attempts, 1))
        self.outbox.defer(
            self.owner,
            event.id,
            frozenset(done),
            error="; ".join(errors),
            retry_at=now + timedelta(seconds=delay),
            count_attempt=tried_and_failed,
            give_up=give_up,
            now=now,
        )
        if give_up:
            logger.warning("alert %s given up after %d delivery rounds: %s", event.dedupe_key, attempts, errors[0])
            self._count("given_up")
            return "failed"
        self._count("deferred")
        with self._lock:
            due = time.monotonic() + delay
            self._next_flush = due if self._next_flush is None else min(self._next_flush, due)
        return "deferred"

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="kling-budget-alerts", daemon=True)
            self._thread.start()
        _watch_for_exit(self)

    def _wait_seconds(self) -> float | None:
        with self._lock:
            waits = []
            if self._next_flush is not None:
                waits.append(self._next_flush - time.monotonic())
            if self.poll_interval is not None:
                waits.append(self.poll_interval)
        return max(0.0, min(waits)) if waits else None

    def _run(self) -> None:
        last_poll = time.monotonic()
        while not self._abandon:
            try:
                item = self._queue.get(timeout=self._wait_seconds())
            except queue.Empty:
                item = None
            batch = []
            stop = item is _STOP
            if item is not None and not stop:
                batch.append(item)
            while not stop:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is _STOP:
                    stop = True
                else:
                    batch.append(extra)
            try:
                if batch:
                    self._deliver_ids(batch)
                with self._lock:
                    due = self._next_flush is not None and self._next_flush <= time.monotonic()
                    if due:
                        self._next_flush = None
                polling = self.poll_interval is not None and time.monotonic() - last_poll >= self.poll_interval
                if (due or polling) and not stop:
                    last_poll = time.monotonic()
                    self.flush()
            except Exception as exc:  # the worker must survive a ledger hiccup; the outbox keeps the events
                self._count("worker_errors")
                if not self._closed:
                    logger.warning("alert delivery failed, events stay in the outbox: %s", exc)
            if stop:
                return
