"""SQLite ledger backend: one file on this host, WAL, durable commits, ``BEGIN IMMEDIATE``.

WAL lets readers run beside the single writer; every write is synced to disk before it is acknowledged,
so an acknowledged reservation survives a power loss, not only a process crash; ``BEGIN IMMEDIATE`` takes
the write lock up front so a writer waits for the busy timeout instead of failing on lock upgrade. SQLite
only works for processes on one host: use PostgreSQL to share a ledger between machines.

Durability (the default, ``synchronous=FULL``) is obtained as SQLite's ``FULL`` would, with one
difference in *where* the sync happens: the connection runs ``synchronous=NORMAL`` (COMMIT appends the
transaction to the WAL without waiting for the disk) and the backend then calls ``fdatasync`` on the WAL
itself, after releasing the write lock and before answering. The WAL is sequential, so a sync that
starts after a COMMIT returned covers that transaction and every earlier one: other writers (threads or
processes) commit while this one waits for the disk, and one flush often covers several of them. A
transaction is acknowledged only after a sync that covers it has returned. Concurrent write transactions
of one process are also group-committed (:mod:`kling_budget.ledger.group_commit`): one transaction,
one COMMIT and one sync for the batch, each caller in its own ``SAVEPOINT``. A caller alone sees no
difference. One consequence: another connection may *read* a write a moment before it is durable; only
the writer's acknowledgement is the licence to act on it (as with every backend, the ledger never acts
on a read).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from kling_budget.errors import ConfigurationError, LedgerUnavailableError
from kling_budget.ledger.backend import Connection, Row, RowMissing, T
from kling_budget.ledger.group_commit import Call, GroupCommit
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
DEFAULT_MAX_BATCH = 64
PAGE_SIZE = 2048
CACHE_KIB = 32 * 1024  # page cache per connection: the hot index pages of a large ledger stay in memory


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

    def fetch_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, last: bool = False, required: Collection[int] = ()
    ) -> list[Row | None]:
        rows = [self.raw.execute(sql, params).fetchone() for sql, params in statements]
        if any(rows[index] is None for index in required):
            raise RowMissing  # raised inside the transaction's function: it rolls back
        return rows


class SQLiteBackend:
    """A ledger in one SQLite file. Thread-safe: one connection per backend, guarded by a lock; concurrent
    write transactions are group-committed.

    Args:
        path: the database file (created with its directory if missing).
        busy_timeout: seconds a writer waits for the lock before the ledger is reported unavailable.
        synchronous: ``FULL`` (default, durable across power loss: the backend syncs the WAL before it
            answers), ``EXTRA`` (SQLite syncs inside COMMIT, as SQLite's own ``EXTRA``) or ``NORMAL``
            (no sync: benchmarks only).
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
            # New files only (no effect once a table exists): every commit appends each page it changed
            # to the WAL, about ten per reserve or commit, so smaller pages mean less to write and sync.
            raw.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            raw.execute(f"PRAGMA cache_size = {-CACHE_KIB}")
            with private_umask():
                mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise LedgerUnavailableError(f"cannot enable WAL on {self.path} (is it on a network filesystem?)")
            # FULL: the backend syncs the WAL itself after each commit, outside the write lock (see above).
            self._own_sync = synchronous.upper() == "FULL"
            raw.execute(f"PRAGMA synchronous = {'NORMAL' if self._own_sync else synchronous.upper()}")
            tighten_files(with_side_files(self.path, SQLITE_SIDE_FILES))  # a ledger from before they were 0600
            raw.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raw.close()
            raise LedgerUnavailableError(f"{self.path} is not a usable ledger database: {exc}") from None
        self._conn = _SQLiteConnection(raw)
        self._path_text = os.fspath(self.path)  # checked before every transaction: no Path conversion there
        self._identity = _identity(self._path_text)
        # Commits and syncs so far (under self._lock / self._sync_lock): a sync that starts after commit n
        # returned covers every commit up to n (the WAL is written in order).
        self._commits = 0
        self._synced = 0
        self._sync_lock = threading.Lock()
        self._wal_fd: int | None = None
        self._db_sync_fd: int | None = None
        self._broken: str | None = None
        self._group: GroupCommit[Callable[[Connection], Any]] = GroupCommit(
            self._commit_batch, self._sync_through, max_batch=DEFAULT_MAX_BATCH
        )
        if migrate:
            self.upgrade()

    def enable_group_commit(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        """Set the largest group-commit batch (group commit is always on; 1 turns batching off)."""
        self._group.max_batch = max_batch

    @property
    def group(self) -> GroupCommit[Callable[[Connection], Any]]:
        """The group-commit state (batch counts, for benchmarks and tests)."""
        return self._group

    def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction; write transactions take the write lock first (``BEGIN IMMEDIATE``)
        and return only once they are durable."""
        if write and not self._group.leading():
            result: T = self._group.submit(fn)
            return result
        with self._lock:
            return self._transaction(write, lambda: fn(self._conn))

    def _transaction(self, write: bool, body: Callable[[], T]) -> T:
        """``body()`` between BEGIN and COMMIT, rolled back if it raises; holds ``self._lock``."""
        self._begin(write)
        raw = self._conn.raw
        try:
            result = body()
            raw.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(raw)
            raise self._unavailable(exc) from None
        except BaseException:
            _rollback(raw)
            raise
        return result

    def _begin(self, write: bool) -> None:
        """``BEGIN IMMEDIATE`` (write) or ``BEGIN``, waiting up to the busy timeout; holds ``self._lock``."""
        if self._broken is not None:
            raise LedgerUnavailableError(self._broken)
        raw = self._conn.raw
        deadline = time.monotonic() + self._busy_timeout
        self._check_file()
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                return
            except sqlite3.OperationalError as exc:
                # The busy handler already waited; a second try covers a checkpoint racing the lock.
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise LedgerUnavailableError(
                        f"ledger {self.path} is locked by another writer (waited {self._busy_timeout:g} s)"
                    ) from None

    def _unavailable(self, exc: sqlite3.OperationalError) -> LedgerUnavailableError:
        if _is_busy(exc):
            return LedgerUnavailableError(f"ledger {self.path} is busy: {exc}")
        return LedgerUnavailableError(f"ledger {self.path} failed: {exc}")

    def _check_file(self) -> None:
        """Fail closed when the file was deleted or replaced under the open connection: SQLite would keep
        writing into the unlinked inode, and every write since would vanish with the process."""
        if _identity(self._path_text) != self._identity:
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
            if applied:
                # A migration that rebuilds a table writes it whole to the WAL; give that space back now
                # rather than when the last connection closes (best effort: readers may hold it).
                with contextlib.suppress(sqlite3.Error):
                    self._conn.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return applied

    def _commit_batch(self, batch: Sequence[Call[Callable[[Connection], Any]]]) -> int:
        """Run the calls of one batch in one transaction (each in its own savepoint when there are
        several); return the commit number a sync must cover."""
        raw = self._conn.raw

        def body() -> None:
            if len(batch) == 1:
                batch[0].result = batch[0].payload(self._conn)
                return
            for call in batch:
                self._run_in_savepoint(raw, call)

        with self._lock:
            self._transaction(True, body)
            self._commits += 1
            return self._commits

    def _run_in_savepoint(self, raw: sqlite3.Connection, call: Call[Callable[[Connection], Any]]) -> None:
        raw.execute("SAVEPOINT kb_call")
        try:
            call.result = call.payload(self._conn)
        except Exception as exc:
            if not raw.in_transaction:
                raise  # SQLite rolled the whole transaction back (I/O error, full disk): the batch fails
            raw.execute("ROLLBACK TO kb_call")
            call.fail(self._unavailable(exc) if isinstance(exc, sqlite3.OperationalError) else exc)
        raw.execute("RELEASE kb_call")

    def _sync_through(self, commit: int) -> None:
        """Return once commit number ``commit`` is on disk (``fdatasync`` of the WAL, shared by every
        commit made before it started)."""
        if not self._own_sync:
            return
        with self._sync_lock:
            if self._synced >= commit:
                return  # a sync that started after this commit has already returned
            target = self._commits
            try:
                os.fdatasync(self._wal())
            except OSError as exc:
                # After a failed sync the kernel may drop the dirty pages and report success next time:
                # nothing written since can be trusted, so this backend stops writing (fail closed).
                self._broken = f"ledger {self.path}: syncing the WAL failed ({exc}); reopen the ledger"
                raise LedgerUnavailableError(self._broken) from None
            self._synced = target

    def _wal(self) -> int:
        """A descriptor of the WAL file (kept open; reopened if the file was replaced)."""
        fd = self._wal_fd
        if fd is not None and os.fstat(fd).st_nlink > 0:
            return fd
        if fd is not None:
            os.close(fd)
            self._wal_fd = None
        try:
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            # No WAL: its last connection checkpointed every commit into the database file and removed it.
            return self._db_fd()
        return self._wal_fd

    def _db_fd(self) -> int:
        if self._db_sync_fd is None:
            self._db_sync_fd = os.open(self.path, os.O_RDONLY)
        return self._db_sync_fd

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.raw.close()
            for fd in (self._wal_fd, self._db_sync_fd):
                if fd is not None:
                    os.close(fd)
            self._wal_fd = self._db_sync_fd = None

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self.path)!r})"


def _identity(path: str) -> tuple[int, int] | None:
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
