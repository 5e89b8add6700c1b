"""Alerts leave a short-lived process: real scripts in subprocesses that never call close(), or crash, and a
real webhook receiver on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kling_budget.budgets import Budget
from kling_budget.ledger import open_ledger
from kling_budget.ledger.outbox import Outbox
from kling_budget.types import AlertEvent, AlertKind, Attribution, PackType
from tests.alert_receivers import http_receiver

ROOT = Path(__file__).resolve().parent.parent

# The recipe's style: a tracker, a budget, three recorded jobs (2 units each against 5: 80 %, then 120 %), and
# the end of the script, with no close().
RECIPE_SCRIPT = """
import sys
from kling_budget import Budget, BudgetPeriod, CostTracker

url, sinks, drain = sys.argv[1], sys.argv[2], float(sys.argv[3])
tracker = CostTracker(url) if sinks == "default" else CostTracker(url, alert_sinks=[])
tracker.alerts.drain_timeout = drain
tracker.set_budget("studio", Budget(period=BudgetPeriod.MONTHLY, limit_credits=5, alert_threshold=0.5))
for i in range(3):
    tracker.record_usage(f"job-{i}", 5, "kling-v1-6", project_id="studio")
print("recorded", flush=True)
"""

# A process that dies between writing its alerts to the outbox and delivering them.
CRASH_SCRIPT = """
import os, signal, sys
from kling_budget.budgets import Budget
from kling_budget.ledger import open_ledger
from kling_budget.types import Attribution, PackType

ledger = open_ledger(sys.argv[1])
ledger.set_budget(Budget.create("studio", project="studio", limit_units=5, alert_at="50,100"))
for i in range(3):
    ledger.record(f"job-{i}", units_milli=2000, pack_type=PackType.VIDEO, attribution=Attribution(project="studio"))
os.kill(os.getpid(), signal.SIGKILL)
"""

# The next process: opens the ledger through the library and ends.
OPEN_SCRIPT = """
import sys
from kling_budget import CostTracker

CostTracker(sys.argv[1])
"""

EXPECTED = [("exhausted", None), ("over_budget_record", None), ("threshold", 50), ("threshold", 100)]


def _run(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _add_webhook(url: str, receiver_url: str, **config: object) -> None:
    ledger = open_ledger(url)
    Outbox(ledger.backend).add_sink("webhook", {"url": receiver_url, "timeout": 5, "attempts": 1, **config})
    ledger.close()


def _outbox_counts(url: str) -> dict[str, int]:
    ledger = open_ledger(url)
    try:
        return Outbox(ledger.backend).counts()
    finally:
        ledger.close()


def _kinds(bodies: list[dict[str, object]]) -> list[tuple[object, object]]:
    return sorted((b["kind"], b["threshold"]) for b in bodies)  # type: ignore[type-var]


def test_a_script_that_never_closes_delivers_its_alerts_before_it_exits(ledger_url: str) -> None:
    """The recipe's script with a webhook configured: 50 %, 100 %, exhausted and over-budget reach the
    receiver by the time the process has exited, and nothing stays pending."""
    with http_receiver() as receiver:
        _add_webhook(ledger_url, receiver.url)
        done = _run(RECIPE_SCRIPT, ledger_url, "default", "5")
        bodies = receiver.bodies()  # no waiting: delivered before the interpreter exited
    assert done.returncode == 0, done.stderr[-2000:]
    assert _kinds(bodies) == EXPECTED
    assert len({b["dedupe_key"] for b in bodies}) == 4
    assert _outbox_counts(ledger_url) == {"delivered": 4, "pending": 0, "failed": 0}
    assert "Traceback" not in done.stderr


def test_without_any_sink_each_alert_is_logged_at_warning_on_stderr(sqlite_url: str) -> None:
    """No sink given and none configured: each alert is written once to the log at WARNING, which an
    unconfigured script shows on stderr, as the recipe printed it; the outbox marks them delivered."""
    done = _run(RECIPE_SCRIPT, sqlite_url, "none", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("ALERT ")]
    assert sorted(line.split(":")[0] for line in lines) == [
        "ALERT exhausted",
        "ALERT over_budget_record",
        "ALERT threshold",
        "ALERT threshold",
    ]
    assert any("reached 50%" in line for line in lines) and any("reached 100%" in line for line in lines)
    assert _outbox_counts(sqlite_url) == {"delivered": 4, "pending": 0, "failed": 0}


def test_the_default_log_sink_writes_each_alert_once(sqlite_url: str) -> None:
    """With the tracker's default log sink, an alert is logged once (the no-sink fallback does not repeat it)."""
    done = _run(RECIPE_SCRIPT, sqlite_url, "default", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    counts = Counter(line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("ALERT "))
    assert counts == {"ALERT threshold": 2, "ALERT exhausted": 1, "ALERT over_budget_record": 1}


def test_alerts_a_crash_left_are_delivered_once_by_the_next_processes_to_open_the_ledger(ledger_url: str) -> None:
    """A process SIGKILLed after writing its alerts leaves them pending; two processes that then open the
    ledger at the same time (and exit without close) deliver each of them to the webhook exactly once."""
    with http_receiver() as receiver:
        _add_webhook(ledger_url, receiver.url)
        crashed = _run(CRASH_SCRIPT, ledger_url)
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        assert receiver.bodies() == [] and _outbox_counts(ledger_url)["pending"] == 4
        openers = [
            subprocess.Popen([sys.executable, "-c", OPEN_SCRIPT, ledger_url], cwd=ROOT, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        for opener in openers:
            _, stderr = opener.communicate(timeout=60)
            assert opener.returncode == 0, stderr.decode()[-2000:]
        bodies = receiver.bodies()
    assert _kinds(bodies) == EXPECTED
    assert len({b["dedupe_key"] for b in bodies}) == len(bodies) == 4
    assert _outbox_counts(ledger_url) == {"delivered": 4, "pending": 0, "failed": 0}


def test_the_wait_at_exit_is_bounded_by_the_drain_timeout(sqlite_url: str) -> None:
    """A webhook that hangs holds the exit for the drain timeout (1 s here) only; the alert stays pending."""
    with http_receiver(mode="hang") as receiver:
        receiver.hang_seconds = 30
        _add_webhook(sqlite_url, receiver.url, timeout=20)
        process = subprocess.Popen(
            [sys.executable, "-c", RECIPE_SCRIPT, sqlite_url, "none", "1"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stdout.readline() == "recorded\n"
        recorded = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        waited = time.monotonic() - recorded
    assert process.returncode == 0, stderr[-2000:]
    assert waited < 4, f"the exit waited {waited:.1f} s for a hanging sink"
    assert "did not finish within 1.0 s" in stderr
    assert _outbox_counts(sqlite_url)["pending"] == 4


def test_pending_ids_skip_events_leased_by_a_live_deliverer(ledger_url: str) -> None:
    """What the next process takes: due, undelivered, not given up and not leased by another deliverer."""
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    ledger = open_ledger(ledger_url, clock=lambda: now)
    try:
        ledger.set_budget(Budget.create("b", project="p", limit_units=5, alert_at="50,100"))
        for i in range(3):
            ledger.record(f"j{i}", units_milli=2000, pack_type=PackType.VIDEO, attribution=Attribution(project="p"))
        outbox = Outbox(ledger.backend)
        ids = outbox.pending_ids(now=now)
        assert len(ids) == 4
        (leased,) = outbox.claim("someone-else", lease_seconds=60, ids=ids[:1], now=now)
        assert outbox.pending_ids(now=now) == ids[1:]
        assert outbox.pending_ids(now=now + timedelta(seconds=61)) == ids  # a dead deliverer's lease runs out
        outbox.complete("me", ids[1], ["sink:1"], now=now)
        assert ids[1] not in outbox.pending_ids(now=now)
        assert leased.event.kind in (AlertKind.THRESHOLD, AlertKind.EXHAUSTED, AlertKind.OVER_BUDGET_RECORD)
        assert isinstance(leased.event, AlertEvent)
    finally:
        ledger.close()
