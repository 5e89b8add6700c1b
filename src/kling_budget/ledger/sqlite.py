"""SQLite ledger backend: one file on this host, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``.

WAL lets readers run beside the single writer; ``synchronous=FULL`` syncs the WAL on every commit so an
acknowledged reservation survives a power loss, not only a process crash; ``BEGIN IMMEDIATE`` takes the
write lock up front so a writer waits for the busy timeout instead of failing on lock upgrade. SQLite
only works for processes on one host: use PostgreSQL to share a ledger between machines.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kling_budget.errors import ConfigurationError, LedgerUnavailableError
from kling_budget.ledger.backend import Connection, Row, T
from kling_budget.ledger.schema import LATEST_VERSION, MIGRATIONS, apply_migration
from kling_budget.ledger.urls import sqlite_url
from kling_budget.private_files import (
    SQLITE_SIDE_FILES,
    make_private_dir,
    private_umask,
    tighten_files,
    with_side_files,
)

__all__ = ["SQLiteBackend"]

DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0


class _Queued:
    """One write waiting for the group-commit writer."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Connection], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _SQLiteConnection:
    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.raw.execute(sql, params).rowcount

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.raw.execute(sql, params).fetchone()
        return row

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.raw.execute(sql, params).fetchall())


class SQLiteBackend:
    """A ledger in one SQLite file. Thread-safe: one connection per backend, guarded by a lock.

    Args:
        path: the database file (created with its directory if missing).
        busy_timeout: seconds a writer waits for the lock before the ledger is reported unavailable.
        synchronous: ``FULL`` (default, durable across power loss) or ``NORMAL`` (benchmarks only).
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
        synchronous: str = "FULL",
        migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self.display_url = sqlite_url(self.path)
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ConfigurationError(f"synchronous must be FULL, EXTRA or NORMAL, got {synchronous!r}")
        try:
            make_private_dir(self.path.parent)
            with private_umask():  # the file, and the -wal/-shm files SQLite creates with its mode, are 0600
                raw = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailableError(f"cannot open ledger {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        try:
            raw.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with private_umask():
                mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise LedgerUnavailableError(f"cannot enable WAL on {self.path} (is it on a network filesystem?)")
            raw.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            tighten_files(with_side_files(self.path, SQLITE_SIDE_FILES))  # a ledger from before they were 0600
            raw.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raw.close()
            raise LedgerUnavailableError(f"{self.path} is not a usable ledger database: {exc}") from None
        self._conn = _SQLiteConnection(raw)
        self._identity = _identity(self.path)
        self._queue: queue.SimpleQueue[_Queued | None] | None = None
        self._writer: threading.Thread | None = None
        self._max_batch = 1
        if migrate:
            self.upgrade()

    def enable_group_commit(self, max_batch: int = 64) -> None:
        """Commit concurrent write transactions together: one fsync for many (a server's throughput).

        Each ``run(fn)`` still behaves as its own transaction: a writer thread runs the queued ``fn`` one after
        another inside one ``BEGIN IMMEDIATE`` transaction, each in its own ``SAVEPOINT`` (so one that raises
        is rolled back alone), then COMMITs once with ``synchronous`` as configured; every caller gets its
        result only after that COMMIT, so an answer is never given for a write that is not durable. Callers
        that are alone see no difference; under concurrency the fsync cost is shared by the batch.
        """
        with self._lock:
            if self._queue is not None:
                return
            self._queue = queue.SimpleQueue()
            self._max_batch = max_batch
            self._writer = threading.Thread(target=self._write_batches, name="kling-budget-sqlite-writer", daemon=True)
            self._writer.start()

    def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction; write transactions take the write lock first (``BEGIN IMMEDIATE``)."""
        if write and self._queue is not None and threading.current_thread() is not self._writer:
            item = _Queued(fn)
            self._queue.put(item)
            item.done.wait()
            if item.error is not None:
                raise item.error
            return item.result  # type: ignore[no-any-return]
        raw = self._conn.raw
        deadline = time.monotonic() + self._busy_timeout
        with self._lock:
            self._check_file()
            while True:
                try:
                    raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    break
                except sqlite3.OperationalError as exc:
                    # The busy handler already waited; a second try covers a checkpoint racing the lock.
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise LedgerUnavailableError(
                            f"ledger {self.path} is locked by another writer (waited {self._busy_timeout:g} s)"
                        ) from None
            try:
                result = fn(self._conn)
                raw.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                _rollback(raw)
                if _is_busy(exc):
                    raise LedgerUnavailableError(f"ledger {self.path} is busy: {exc}") from None
                raise LedgerUnavailableError(f"ledger {self.path} failed: {exc}") from None
            except BaseException:
                _rollback(raw)
                raise

    def _check_file(self) -> None:
        """Fail closed when the file was deleted or replaced under the open connection: SQLite would keep
        writing into the unlinked inode, and every write since would vanish with the process."""
        if _identity(self.path) != self._identity:
            raise LedgerUnavailableError(
                f"ledger file {self.path} was deleted or replaced while open; refusing to use it "
                "(restore the file, then restart)"
            )

    def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty file."""
        with self._lock:
            raw = self._conn.raw
            exists = raw.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if not exists:
                return 0
            row = raw.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            return int(row[0]) if row else 0

    def upgrade(self) -> list[int]:
        """Apply every pending migration, each in its own transaction."""
        applied: list[int] = []
        with self._lock:
            current = self.schema_version()
            if current > LATEST_VERSION:
                raise LedgerUnavailableError(
                    f"ledger {self.path} has schema version {current}, newer than this kling-budget "
                    f"({LATEST_VERSION}); upgrade kling-budget"
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue

                def apply(conn: Connection, migration: Any = migration) -> None:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                    )
                    if conn.fetchone("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
                        return
                    apply_migration(conn, migration, "sqlite")
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.name, int(time.time())),
                    )

                self.run(apply)
                applied.append(migration.version)
        return applied

    def _write_batches(self) -> None:
        assert self._queue is not None
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Queued]) -> None:
        def all_of(conn: Connection) -> None:
            for position, item in enumerate(batch):
                conn.execute(f"SAVEPOINT kb_{position}")
                try:
                    item.result = item.fn(conn)
                except sqlite3.OperationalError as exc:
                    # The connection itself failed (I/O error, lock): the whole batch is lost.
                    raise exc
                except BaseException as exc:
                    conn.execute(f"ROLLBACK TO kb_{position}")
                    item.error = exc
                conn.execute(f"RELEASE kb_{position}")

        try:
            self.run(all_of)
        except BaseException as exc:
            for item in batch:
                item.result, item.error = None, exc
        for item in batch:
            item.done.set()

    def close(self) -> None:
        """Close the connection (after the group-commit writer, if any, has finished its queue)."""
        if self._queue is not None and self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
        with self._lock:
            self._conn.raw.close()

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self.path)!r})"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; ``None`` when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _rollback(raw: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        raw.execute("ROLLBACK")
