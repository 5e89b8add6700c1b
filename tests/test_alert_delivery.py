"""Alert delivery end to end: exactly once across processes, leases, retries, and sinks that hang or fail."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kling_budget.alerts import AlertDispatcher
from kling_budget.budgets import Budget
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.ledger.outbox import Outbox
from kling_budget.tracker import CostTracker
from kling_budget.types import AlertEvent, AlertKind, Attribution, PackType
from tests import alert_workers
from tests.alert_receivers import free_port, http_receiver

PROCESSES = 8


def _event(key: str, budget: str = "b") -> AlertEvent:
    return AlertEvent(kind=AlertKind.THRESHOLD, message=f"event {key}", dedupe_key=key, budget=budget, threshold=50)


def _add_webhook(ledger: Ledger, url: str, **config: object) -> int:
    settings = {"url": url, "timeout": 1.0, "attempts": 1, **config}
    return Outbox(ledger.backend).add_sink("webhook", settings).id


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.slow
def test_two_hundred_reserves_from_eight_processes_send_each_threshold_once(tmp_path: Path) -> None:
    """200 reserves from 8 processes crossing 50/80/100 % reach the receiver as exactly three threshold alerts
    and one exhausted alert, each once, although every process also flushes the outbox."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with http_receiver() as receiver:
        ledger = open_ledger(url)
        ledger.set_budget(Budget.create("studio", project="studio", limit_units=200, alert_at="50,80,100"))
        _add_webhook(ledger, receiver.url, timeout=5.0, attempts=3)
        ledger.close()
        context = multiprocessing.get_context("spawn")
        manager = context.Manager()
        go = manager.Event()
        with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
            futures = [pool.submit(alert_workers.reserve_and_flush, url, w, 25, go) for w in range(PROCESSES)]
            time.sleep(1.0)
            go.set()
            keys = [k for f in futures for k in f.result(timeout=180)]
        manager.shutdown()
        assert len(set(keys)) == 200
        bodies = receiver.wait_for(4, timeout=10)
        time.sleep(0.5)  # anything late would show up now
        bodies = receiver.bodies()
    assert sorted((b["kind"], b["threshold"]) for b in bodies) == [
        ("exhausted", None),
        ("threshold", 50),
        ("threshold", 80),
        ("threshold", 100),
    ]
    assert len({b["dedupe_key"] for b in bodies}) == 4
    ledger = open_ledger(url)
    assert Outbox(ledger.backend).counts() == {"delivered": 4, "pending": 0, "failed": 0}
    assert ledger.budget_status("studio").counters.held_milli == 200_000
    ledger.close()


def test_concurrent_deliverers_send_every_event_once(ledger_url: str) -> None:
    """Eight deliverers flushing the same outbox at once (own connections, own leases) send each event once."""
    with http_receiver() as receiver:
        setup = open_ledger(ledger_url)
        _add_webhook(setup, receiver.url, timeout=15.0)  # a loaded CI machine must not turn this into a retry
        for i in range(40):
            setup.emit_alert(_event(f"evt:{i}"))
        setup.close()
        ledgers = [open_ledger(ledger_url) for _ in range(PROCESSES)]
        barrier = threading.Barrier(PROCESSES)

        def run(ledger: Ledger) -> None:
            barrier.wait()
            AlertDispatcher(ledger, background=False).flush()

        threads = [threading.Thread(target=run, args=(lg,)) for lg in ledgers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        keys = Counter(b["dedupe_key"] for b in receiver.bodies())
        counts = Outbox(ledgers[0].backend).counts()
        for lg in ledgers:
            lg.close()
    assert len(keys) == 40
    assert set(keys.values()) == {1}
    assert counts == {"delivered": 40, "pending": 0, "failed": 0}


def test_a_leased_event_waits_for_its_lease_then_goes_to_another_deliverer(ledger: Ledger) -> None:
    """An event claimed by a deliverer that died is skipped by others until the lease runs out."""
    with http_receiver() as receiver:
        _add_webhook(ledger, receiver.url)
        ledger.emit_alert(_event("evt:leased"))
        outbox = Outbox(ledger.backend)
        [claimed] = outbox.claim("crashed-process", lease_seconds=0.5)
        assert claimed.event.dedupe_key == "evt:leased"
        other = AlertDispatcher(ledger, background=False)
        assert other.flush().claimed == 0
        time.sleep(0.6)
        assert other.flush().delivered == 1
        assert [b["dedupe_key"] for b in receiver.bodies()] == ["evt:leased"]


def _latencies(tracker: CostTracker, count: int) -> list[float]:
    result = []
    for _ in range(count):
        started = time.perf_counter()
        tracker.reserve("kling-v2-5-turbo", mode="std", duration=5, units=1, project_id="p")
        result.append(time.perf_counter() - started)
    return result


def test_hanging_sink_does_not_slow_reserves_and_gets_the_events_later(tmp_path: Path) -> None:
    """With a webhook that hangs (each call would cost 2 x 1 s) reserves stay as fast as without any sink;
    once the receiver answers again every event arrives exactly once."""
    every_percent = list(range(1, 101))  # each 1-unit reserve crosses one threshold: one event per reserve
    with CostTracker(f"sqlite:///{tmp_path / 'base.db'}", alert_sinks=[]) as base:
        base.set_budget("p", project_id="p", limit_units=100, alert_at=every_percent)
        _latencies(base, 5)  # warm-up
        baseline = _latencies(base, 30)
    with http_receiver(mode="hang") as receiver:
        receiver.hang_seconds = 3.0
        with CostTracker(f"sqlite:///{tmp_path / 'hang.db'}", alert_sinks=[]) as tracker:
            tracker.alerts = AlertDispatcher(tracker.ledger, [], retry_delay=0.2, max_retry_delay=0.5, max_rounds=50)
            tracker.set_budget("p", project_id="p", limit_units=100, alert_at=every_percent)
            _add_webhook(tracker.ledger, receiver.url, timeout=1.0, attempts=2)
            _latencies(tracker, 5)
            hanging = _latencies(tracker, 30)
            outbox = Outbox(tracker.ledger.backend)
            assert _wait(lambda: outbox.sinks()[0].status.failures >= 1, 10)  # it really was called, and hung
            assert outbox.counts()["pending"] > 0
            receiver.mode = "ok"
            assert receiver.wait_for(35, timeout=60)
            assert _wait(lambda: Outbox(tracker.ledger.backend).counts()["pending"] == 0)
            keys = Counter(b["dedupe_key"] for b in receiver.bodies())
            status = Outbox(tracker.ledger.backend).sinks()[0].status
    assert max(hanging) < 0.5, f"slowest reserve took {max(hanging):.3f} s"
    assert statistics.median(hanging) < statistics.median(baseline) * 3 + 0.02
    assert len(keys) == 35 and set(keys.values()) == {1}
    assert status.sent == 35 and status.failures >= 1
    assert "timed out" in status.last_error


def test_failing_sink_is_reported_and_delivered_after_recovery(ledger: Ledger) -> None:
    """A receiver answering 500 leaves the event pending with the error counted; a later flush delivers it."""
    with http_receiver(mode="fail") as receiver:
        sink_id = _add_webhook(ledger, receiver.url)
        ledger.emit_alert(_event("evt:500"))
        dispatcher = AlertDispatcher(ledger, background=False, retry_delay=0.05)
        assert dispatcher.flush().deferred == 1
        [entry] = Outbox(ledger.backend).entries()
        assert entry.status == "retrying" and entry.attempts == 1
        assert "HTTP 500" in entry.last_error and "secret-token" not in entry.last_error
        sink = Outbox(ledger.backend).get_sink(sink_id)
        assert (sink.status.failures, sink.status.last_error) == (1, "webhook to 127.0.0.1: HTTP 500")
        receiver.mode = "ok"
        time.sleep(0.1)
        assert dispatcher.flush().delivered == 1
        assert [b["dedupe_key"] for b in receiver.bodies()] == ["evt:500"]
        assert Outbox(ledger.backend).get_sink(sink_id).status.consecutive_failures == 0


def test_connection_refused_then_receiver_starts(ledger: Ledger) -> None:
    """Events for a receiver that is down are delivered once it comes up."""
    port = free_port()
    _add_webhook(ledger, f"http://127.0.0.1:{port}/hook/secret-token-abcd")
    ledger.emit_alert(_event("evt:down"))
    dispatcher = AlertDispatcher(ledger, background=False, retry_delay=0.05)
    assert dispatcher.flush().deferred == 1
    with http_receiver(port=port) as receiver:
        time.sleep(0.1)
        assert dispatcher.flush(due_only=False).delivered == 1
        assert [b["dedupe_key"] for b in receiver.bodies()] == ["evt:down"]


def test_a_retry_goes_only_to_the_sink_that_failed(ledger: Ledger) -> None:
    """With two sinks of which one fails, the retry does not send the event to the other one again."""
    with http_receiver() as good, http_receiver(mode="fail") as bad:
        _add_webhook(ledger, good.url)
        _add_webhook(ledger, bad.url)
        ledger.emit_alert(_event("evt:two-sinks"))
        dispatcher = AlertDispatcher(ledger, background=False, retry_delay=0.05)
        dispatcher.flush()
        bad.mode = "ok"
        time.sleep(0.1)
        assert dispatcher.flush().delivered == 1
        assert len(good.bodies()) == 1
        assert len(bad.bodies()) == 1


def test_given_up_after_max_rounds_and_revived_on_request(ledger: Ledger) -> None:
    """After max_rounds failed rounds an event is marked failed; retry_failed() makes it deliverable again."""
    with http_receiver(mode="fail") as receiver:
        _add_webhook(ledger, receiver.url)
        ledger.emit_alert(_event("evt:give-up"))
        dispatcher = AlertDispatcher(ledger, background=False, retry_delay=0.01, max_rounds=2)
        assert dispatcher.flush(due_only=False).deferred == 1
        dispatcher._blocked.clear()
        assert dispatcher.flush(due_only=False).failed == 1
        assert Outbox(ledger.backend).entries()[0].status == "failed"
        assert dispatcher.flush(due_only=False).claimed == 0
        receiver.mode = "ok"
        assert Outbox(ledger.backend).retry_failed() == 1
        dispatcher._blocked.clear()
        assert dispatcher.flush().delivered == 1


def test_budget_and_kind_filters_choose_the_sinks(ledger: Ledger) -> None:
    """A sink for one budget (or some kinds) only receives those events; the others still complete."""
    with http_receiver() as only_a, http_receiver() as only_exhausted:
        Outbox(ledger.backend).add_sink("webhook", {"url": only_a.url, "attempts": 1}, budget="a")
        Outbox(ledger.backend).add_sink("webhook", {"url": only_exhausted.url, "attempts": 1}, kinds=["exhausted"])
        ledger.emit_alert(_event("evt:a", budget="a"))
        ledger.emit_alert(_event("evt:b", budget="b"))
        result = AlertDispatcher(ledger, background=False).flush()
        assert result.delivered == 2
        assert [b["dedupe_key"] for b in only_a.bodies()] == ["evt:a"]
        assert only_exhausted.bodies() == []


def test_tracker_reserve_queues_alerts_and_close_drains_them(tmp_path: Path) -> None:
    """A reservation that crosses a threshold returns before delivery; closing the tracker delivers it."""
    with http_receiver() as receiver:
        tracker = CostTracker(f"sqlite:///{tmp_path / 'l.db'}", alert_sinks=[])
        tracker.set_budget("p", project_id="p", limit_units=2, alert_at="50")
        _add_webhook(tracker.ledger, receiver.url)
        tracker.reserve("kling-v2-5-turbo", mode="std", duration=5, units=1, project_id="p")
        tracker.close()
        assert [b["threshold"] for b in receiver.bodies()] == [50]


def test_denials_and_forecasts_reach_the_outbox_and_the_receiver(tmp_path: Path) -> None:
    """Rate-limited denial alerts and the evaluator's forecast alert are delivered like the others."""
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: now)
    with http_receiver() as receiver:
        _add_webhook(ledger, receiver.url)
        ledger.set_budget(Budget.create("daily", period="daily", limit_units=10, alert_at="90"))
        ledger.reserve("r1", units_milli=6000, pack_type=PackType.VIDEO, attribution=Attribution(), now=now)
        for i in range(3):
            with pytest.raises(Exception, match="would be exceeded"):
                ledger.reserve(f"d{i}", units_milli=6000, pack_type=PackType.VIDEO, attribution=Attribution(), now=now)
        dispatcher = AlertDispatcher(ledger, background=False)
        new = dispatcher.check(now=now)
        assert [e.kind for e in new] == [AlertKind.FORECAST]
        assert dispatcher.check(now=now + timedelta(hours=1)) == []  # once per window
        dispatcher.flush()
        kinds = Counter(b["kind"] for b in receiver.bodies())
    ledger.close()
    assert kinds == {"denied": 1, "forecast": 1}


def test_polling_dispatcher_delivers_what_others_left_pending(ledger: Ledger) -> None:
    """A started dispatcher with poll_interval (the gateway's) delivers events no one handed to it, and stops
    promptly on close."""
    with http_receiver() as receiver:
        _add_webhook(ledger, receiver.url)
        dispatcher = AlertDispatcher(ledger, poll_interval=0.1)
        dispatcher.start()
        ledger.emit_alert(_event("evt:orphan"))
        assert receiver.wait_for(1, timeout=10)
        started = time.monotonic()
        dispatcher.close()
        assert time.monotonic() - started < 2
    assert [b["dedupe_key"] for b in receiver.bodies()] == ["evt:orphan"]
    assert dispatcher.status()["worker_alive"] is False


def test_sink_failures_are_logged_without_secrets(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    """The warning about a failing sink names it by masked URL and says why, without the token."""
    with http_receiver(mode="fail") as receiver, caplog.at_level("WARNING", logger="kling_budget.alerts"):
        _add_webhook(ledger, receiver.url)
        ledger.emit_alert(_event("evt:log"))
        AlertDispatcher(ledger, background=False).flush()
    [record] = [r for r in caplog.records if "failed for evt:log" in r.getMessage()]
    assert "/…abcd" in record.getMessage() and "HTTP 500" in record.getMessage()
    assert "secret-token" not in caplog.text
