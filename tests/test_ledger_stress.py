"""Multi-process stress and crash tests on real SQLite files."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kling_budget.ledger import ReservationState, open_ledger
from tests import ledger_workers
from tests.ledger_workers import PRICE_MILLI

pytestmark = pytest.mark.slow

PROCESSES = 8


def run_race(url: str, *, naive: bool) -> list[str]:
    """Start PROCESSES workers together against the budget hierarchy; return every admitted key."""
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    go = manager.Event()
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(ledger_workers.reserve_until_denied, url, w, go, naive) for w in range(PROCESSES)]
        time.sleep(1.0)  # every worker has opened the ledger and waits on the event
        go.set()
        keys = [key for f in futures for key in f.result(timeout=120)]
    manager.shutdown()
    return keys


def overspend(url: str, admitted: int) -> tuple[int, int]:
    """(admitted, allowed): allowed = ⌊limit / price⌋ of the tightest shared budget."""
    ledger = open_ledger(url)
    limit = ledger.get_budget("account").limit_units_milli
    ledger.close()
    assert limit is not None
    return admitted, limit // PRICE_MILLI


def test_eight_processes_exhaust_the_budget_exactly(tmp_path: Path) -> None:
    """8 processes racing on an account → project → user hierarchy admit exactly ⌊limit / price⌋ jobs."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    ledger_workers.setup_hierarchy(url, account_units=450, project_units=1000, user_units=1000)
    keys = run_race(url, naive=False)
    admitted, allowed = overspend(url, len(keys))
    assert (admitted, allowed) == (300, 300)
    assert len(set(keys)) == len(keys)
    ledger = open_ledger(url)
    status = ledger.budget_status("account")
    assert status.counters.used_milli == 300 * PRICE_MILLI
    assert sum(ledger.budget_status(f"user-{u}").counters.used_milli for u in range(4)) == 300 * PRICE_MILLI
    report = ledger.verify()
    assert report.ok, report.problems
    ledger.close()


def test_processes_of_batching_threads_exhaust_the_budget_exactly(tmp_path: Path) -> None:
    """4 processes × 4 threads (writes group-committed in batches) admit exactly ⌊limit / price⌋ jobs."""
    url = f"sqlite:///{tmp_path / 'race-threads.db'}"
    ledger_workers.setup_hierarchy(url, account_units=450, project_units=1000, user_units=1000)
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    go = manager.Event()
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        futures = [pool.submit(ledger_workers.reserve_until_denied_in_threads, url, w, go) for w in range(4)]
        time.sleep(1.0)
        go.set()
        keys = [key for f in futures for key in f.result(timeout=120)]
    manager.shutdown()
    assert overspend(url, len(keys)) == (300, 300)
    assert len(set(keys)) == len(keys)
    ledger = open_ledger(url)
    assert ledger.budget_status("account").counters.used_milli == 300 * PRICE_MILLI
    report = ledger.verify()
    assert report.ok, report.problems
    ledger.close()


def test_negative_control_the_harness_catches_check_then_act(tmp_path: Path) -> None:
    """The same harness run on a naive check-then-record store detects the overspend (so it can fail)."""
    url = f"sqlite:///{tmp_path / 'naive.db'}"
    ledger_workers.setup_hierarchy(url, account_units=450, project_units=1000, user_units=1000)
    keys = run_race(url, naive=True)
    admitted, allowed = overspend(url, len(keys))
    assert admitted > allowed, "the naive store did not overspend; the harness would not catch a race"


def _read_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" ", 1)) for line in lines if " " in line]  # type: ignore[misc]


def _kill_cycle(url: str, tmp_path: Path, cycle: int, start: Callable[..., Any], threads: bool = False) -> list[Path]:
    logs = [tmp_path / f"cycle{cycle}-w{w}.log" for w in range(4)]
    target = ledger_workers.churn_threads_with_log if threads else ledger_workers.churn_with_log
    processes = [start(target=target, args=(url, w, str(log))) for w, log in enumerate(logs)]
    for process in processes:
        process.start()
    # Every writer is past its start-up (slow on a loaded machine) before the random wait.
    written = [Path(f"{log}.0") for log in logs] if threads else logs
    deadline = time.monotonic() + 120
    while not all(log.exists() and log.stat().st_size for log in written) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(1.2, 2.0))
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join()
    return logs


@pytest.mark.parametrize(
    ("cycles", "threads"),
    [(5, False), (3, True)],
    ids=["one-thread-per-process", "batching-threads"],
)
def test_kill_9_loses_no_acknowledged_operation(tmp_path: Path, cycles: int, threads: bool) -> None:
    """SIGKILL of 4 busy writers, 5 times: the file stays intact, verify passes, every ack is in the ledger;
    the same with 4 threads per writer, whose writes are group-committed in batches."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    ledger_workers.setup_hierarchy(url, account_units=10**7, project_units=10**7, user_units=10**7)
    context = multiprocessing.get_context("spawn")
    total_acks = windows_checked = 0
    for cycle in range(cycles):
        logs = _kill_cycle(url, tmp_path, cycle, context.Process, threads)
        if threads:
            logs = [Path(f"{log}.{t}") for log in logs for t in range(4)]
        with sqlite3.connect(tmp_path / "crash.db") as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ledger = open_ledger(url)
        report = ledger.verify()
        assert report.ok, report.problems
        windows_checked = max(windows_checked, report.checked_windows)
        for log in logs:
            for action, key in _read_log(log):
                total_acks += 1
                info = ledger.get_reservation(key)
                if action == "denied":
                    assert info.state is ReservationState.DENIED
                elif action == "reserved":
                    assert info.state is not ReservationState.DENIED
                elif action == "submitted":
                    assert info.state in (
                        ReservationState.SUBMITTED,
                        ReservationState.COMMITTED,
                        ReservationState.RELEASED,
                    )
                elif action == "committed":
                    assert info.state is ReservationState.COMMITTED
                elif action == "released":
                    assert info.state is ReservationState.RELEASED
        # Reservations that were submitted when the process died stay open: nothing releases them by time.
        open_holds = ledger.list_reservations(states=("submitted",), limit=100)
        for hold in open_holds:
            assert hold.task_id is not None
        ledger.close()
    assert total_acks > 100, "the workers did not get far enough to make the test meaningful"
    assert windows_checked >= 3  # account, project and user budget windows re-derived after a kill
