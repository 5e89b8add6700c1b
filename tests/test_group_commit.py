"""Group commit on the SQLite backend: batches of concurrent writes, each answered only once durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import LedgerUnavailableError
from kling_budget.ledger import open_ledger
from kling_budget.ledger import sqlite as sqlite_module
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.group_commit import GroupCommit
from kling_budget.ledger.sqlite import SQLiteBackend
from kling_budget.types import Attribution, PackType


class Boom(Exception):
    """Raised by one call of a batch."""


def _backend(tmp_path: Path) -> SQLiteBackend:
    backend = SQLiteBackend(tmp_path / "l.db")
    backend.run(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    return backend


def _queued_behind(backend: SQLiteBackend, calls: list[Callable[[Connection], Any]]) -> list[Any]:
    """Run ``calls`` from threads while a first write holds the batch open, so they form one batch; return
    each call's result or exception."""
    release = threading.Event()
    outcomes: list[Any] = [None] * len(calls)

    def first(conn: Connection) -> None:
        release.wait(10)

    def call(index: int) -> None:
        try:
            outcomes[index] = backend.run(calls[index])
        except Exception as exc:
            outcomes[index] = exc

    leader = threading.Thread(target=backend.run, args=(first,))
    leader.start()
    while backend.group._leaders == 0:
        time.sleep(0.001)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    while len(backend.group._waiting) < len(calls):
        time.sleep(0.001)
    release.set()
    for thread in [leader, *threads]:
        thread.join()
    return outcomes


def test_a_failing_call_in_a_batch_is_rolled_back_alone(tmp_path: Path) -> None:
    """Three writes in one batch, the middle one raises: its row is not stored, the others are."""
    backend = _backend(tmp_path)
    batches = backend.group.batches

    def failing(conn: Connection) -> None:
        conn.execute("INSERT INTO t (k) VALUES ('b')")
        raise Boom

    outcomes = _queued_behind(
        backend,
        [
            lambda c: c.execute("INSERT INTO t (k) VALUES ('a')"),
            failing,
            lambda c: c.execute("INSERT INTO t VALUES ('c')"),
        ],
    )
    assert outcomes[0] == 1 and isinstance(outcomes[1], Boom) and outcomes[2] == 1
    assert backend.group.batches == batches + 2  # the holding write, then the three together
    assert backend.run(lambda c: c.fetchall("SELECT k FROM t ORDER BY k"), write=False) == [("a",), ("c",)]
    backend.close()


def test_a_database_error_in_one_call_fails_only_that_call(tmp_path: Path) -> None:
    """A constraint violation inside a batch answers that caller with it; the batch still commits."""
    backend = _backend(tmp_path)
    backend.run(lambda c: c.execute("INSERT INTO t (k) VALUES ('dup')"))
    outcomes = _queued_behind(
        backend,
        [
            lambda c: c.execute("INSERT INTO t (k) VALUES ('dup')"),
            lambda c: c.execute("INSERT INTO t (k) VALUES ('x')"),
        ],
    )
    assert "UNIQUE" in str(outcomes[0]) and outcomes[1] == 1
    assert backend.run(lambda c: c.fetchall("SELECT k FROM t ORDER BY k"), write=False) == [("dup",), ("x",)]
    backend.close()


def test_each_write_is_answered_only_after_a_sync_that_covers_it(tmp_path: Path, monkeypatch: Any) -> None:
    """16 threads writing: every caller returns only once the WAL was synced after its commit, and one
    sync serves several commits."""
    backend = _backend(tmp_path)
    syncs: list[int] = []
    real = sqlite_module.os.fdatasync

    def slow_sync(fd: int) -> None:
        time.sleep(0.002)  # a slow disk, so that commits pile up behind a sync
        real(fd)
        syncs.append(1)

    monkeypatch.setattr(sqlite_module.os, "fdatasync", slow_sync)
    violations: list[tuple[int, int]] = []

    def writer(n: int) -> None:
        for i in range(20):
            mine: list[int] = []

            def insert(conn: Connection, key: str = f"{n}-{i}", mine: list[int] = mine) -> None:
                conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
                mine.append(backend._commits + 1)  # the commit number of this batch

            backend.run(insert)
            if backend._synced < mine[0]:
                violations.append((mine[0], backend._synced))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert violations == []
    assert backend.run(lambda c: c.fetchone("SELECT COUNT(*) FROM t"), write=False) == (320,)
    assert len(syncs) < 320 and backend.group.batches < 320  # writes shared syncs and transactions
    backend.close()


def test_a_failed_sync_fails_closed_until_reopened(tmp_path: Path, monkeypatch: Any) -> None:
    """fdatasync fails: the caller gets LedgerUnavailableError, and so does every later write of that
    backend (after a failed sync the kernel may report the next one clean without writing)."""
    backend = _backend(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_module.os, "fdatasync", broken)
    with pytest.raises(LedgerUnavailableError, match="syncing the WAL failed"):
        backend.run(lambda c: c.execute("INSERT INTO t (k) VALUES ('a')"))
    monkeypatch.undo()
    with pytest.raises(LedgerUnavailableError, match="reopen the ledger"):
        backend.run(lambda c: c.execute("INSERT INTO t (k) VALUES ('b')"))
    backend.close()
    reopened = SQLiteBackend(tmp_path / "l.db")
    reopened.run(lambda c: c.execute("INSERT INTO t (k) VALUES ('b')"))
    reopened.close()


def test_threads_reserving_through_one_ledger_share_batches_and_stay_exact(tmp_path: Path) -> None:
    """32 threads reserving and committing on one ledger: batches of several calls, counters exact."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    ledger.set_budget(Budget.create("account", limit_units=10**6))
    attribution = Attribution(project="p", user="u", model="kling-v2-6")

    def worker(n: int) -> None:
        for i in range(15):
            key = f"{n}-{i}"
            ledger.reserve(key, units_milli=1500, pack_type=PackType.VIDEO, attribution=attribution)
            ledger.commit(key, units_milli=1000)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    group = ledger.backend.group  # type: ignore[attr-defined]
    assert group.calls > group.batches
    counters = ledger.budget_status("account").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 32 * 15 * 1000)
    assert ledger.verify().ok
    ledger.close()


def test_group_commit_gives_every_caller_its_own_answer_with_several_leaders() -> None:
    """With two batches in flight at once, each caller still gets exactly its own result."""
    group: GroupCommit[int] = GroupCommit(_square_all, max_batch=4, max_leaders=2)
    results: dict[int, Any] = {}

    def call(n: int) -> None:
        results[n] = group.submit(n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n * n for n in range(200)}
    assert group.calls == 200


def _square_all(batch: Any) -> None:
    time.sleep(0.001)
    for call in batch:
        call.result = call.payload * call.payload
