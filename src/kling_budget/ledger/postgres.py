"""PostgreSQL ledger backend: a ledger shared by processes on many hosts.

Write transactions run at READ COMMITTED: each budget window is charged with one conditional ``UPDATE``,
which re-checks its ``WHERE`` against the newest row version after waiting for a concurrent writer, so
admission is exact without ``SERIALIZABLE`` and its retries. Read transactions run at REPEATABLE READ READ
ONLY, so a multi-statement read (``verify``, status) sees one snapshot. ``synchronous_commit`` is forced on
for every connection: an acknowledged reservation is what lets a job be submitted, so it must survive a
server crash.

Retries, bounded: serialization failures and deadlocks (40001, 40P01); a unique violation (23505), which
at READ COMMITTED means a concurrent call inserted the same key between our check and our insert, so the
re-run reads the winner's row; and a connection lost *before* COMMIT was sent (the server rolled the
transaction back). A connection lost *during* COMMIT is in doubt: the transaction id taken at BEGIN is
looked up with ``pg_xact_status`` on a new connection, and the transaction is re-run only if it is known
to have aborted. If the server restarted in between (a crash), ``committed`` is not believed: a transaction
whose WAL never reached the disk leaves its id free to be handed out again after recovery, so the status
read may be another transaction's; the outcome is then reported unknown (retry with the same key).
Anything else that stops the ledger from answering in time raises :class:`LedgerUnavailableError` (fail
closed).

URL: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``. Every libpq parameter is
passed through; kling-budget reads and removes ``timeout`` (seconds to wait for a connection or a lock,
default 10), ``pool_min`` (default 1) and ``pool_max`` (default 10).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache, partial
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from kling_budget.errors import ConfigurationError, LedgerUnavailableError
from kling_budget.ledger.backend import Connection, Row, RowMissing, T
from kling_budget.ledger.schema import LATEST_VERSION, MIGRATIONS, Migration, apply_migration

__all__ = ["PostgresBackend", "StatementLost", "translate"]

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
MAX_CONFLICT_RETRIES = 10  # 40001 / 40P01
MAX_DUPLICATE_RETRIES = 3  # 23505: a concurrent insert of the same key won
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000  # a client stuck mid-transaction must not hold budget rows forever

_OWN_OPTIONS = ("timeout", "pool_min", "pool_max")
_SECRET_OPTIONS = ("password", "sslpassword")
_RETRY_STATES = frozenset({"40001", "40P01"})
_DUPLICATE_STATE = "23505"
_LOCKED_STATES = frozenset({"55P03", "57014"})  # lock_timeout, statement timeout / cancel
_WRITE_BEGIN = (
    "BEGIN ISOLATION LEVEL READ COMMITTED",
    "SELECT pg_current_xact_id()::text, pg_postmaster_start_time()::text",
)
_READ_BEGIN = ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",)
_MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('kling_budget.migrate:' || COALESCE(current_schema(), ''), 0))"
)

log = logging.getLogger(__name__)


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """Rewrite the ledger's ``?`` placeholders for psycopg: ``?`` → ``%s`` and a literal ``%`` → ``%%``.

    The ledger's SQL never has ``?`` inside a string literal; LIKE patterns are passed as parameters.
    """
    return sql.replace("%", "%%").replace("?", "%s")


class _PgConnection:
    """The :class:`Connection` the ledger's functions see: one psycopg cursor inside one transaction.

    The transaction's BEGIN is sent with its first statement, in one round trip (pipeline mode); a write
    transaction also reads its transaction id there (for a COMMIT whose answer is lost)."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any], *, write: bool) -> None:
        self._raw = raw
        self._cursor = raw.cursor()
        self._begin: tuple[str, ...] | None = _WRITE_BEGIN if write else _READ_BEGIN
        self.commit_sent = False
        self.xid = self.started = ""

    @property
    def began(self) -> bool:
        """Whether BEGIN was sent (a function that ran no statement has no transaction to end)."""
        return self._begin is None

    def _run(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        if self.commit_sent:
            raise _AfterCommit
        cursor = self._cursor
        if self._begin is None:
            cursor.execute(translate(sql), tuple(params))
            return cursor
        with self._raw.pipeline():
            ids = self._send_begin()
            cursor.execute(translate(sql), tuple(params))
        self._read_ids(ids)
        return cursor

    def _send_begin(self) -> psycopg.Cursor[Any] | None:
        """Queue BEGIN (and the transaction id query of a write) in the open pipeline."""
        begin = self._begin
        assert begin is not None
        self._begin = None
        self._raw.execute(begin[0], prepare=False)
        return self._raw.execute(begin[1]) if len(begin) > 1 else None

    def _read_ids(self, ids: psycopg.Cursor[Any] | None) -> None:
        row = ids.fetchone() if ids is not None else None
        if row:
            self.xid, self.started = str(row[0]), str(row[1])

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._run(sql, params).fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def fetch_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, last: bool = False, required: Collection[int] = ()
    ) -> list[Row | None]:
        # Pipeline mode: every statement is sent before any answer is read, and the server runs them in
        # order (so row locks are taken in the order given), all in one network round trip. A required
        # statement fails on the server when it finds no row, so a COMMIT sent after it is never applied.
        if self.commit_sent:
            raise _AfterCommit
        cursors = []
        may_fail = False
        ids = None
        error: psycopg.Error | None = None
        with self._raw.pipeline() as pipeline:
            try:
                if self._begin is not None:
                    ids = self._send_begin()
                for index, (sql, params) in enumerate(statements):
                    cursor = self._raw.cursor()
                    # psycopg's prepared-statement cache loses track of a statement it prepares in a
                    # pipeline that fails before it: so none after a statement that may fail is prepared.
                    query = _REQUIRED.format(sql=translate(sql)) if index in required else translate(sql)
                    cursor.execute(query, tuple(params), prepare=False if may_fail else None)
                    may_fail = may_fail or index in required
                    cursors.append(cursor)
                if last:
                    self.commit_sent = True
                    self._raw.execute("COMMIT", prepare=False if may_fail else None)
                pipeline.sync()
            except psycopg.Error as exc:
                error = exc
                if not self._raw.broken:
                    # The server skipped the rest, COMMIT included: read up to the end of the pipeline so the
                    # connection is ready for the caller's ROLLBACK (and psycopg logs no second error).
                    self.commit_sent = False
                    with contextlib.suppress(psycopg.Error):
                        pipeline.sync()
        if isinstance(error, psycopg.errors.DivisionByZero):
            raise RowMissing
        if error is not None:
            raise error
        self._read_ids(ids)
        return [cursor.fetchone() if cursor.description is not None else None for cursor in cursors]


# A required statement, made to fail when it returns no row: COUNT(*) of its rows divides 1 (an error the
# ledger's own statements cannot raise otherwise). A CTE referenced twice is run once; the guard is the
# preserved side of the join and its value the join condition, so it is evaluated even with no row.
_REQUIRED = (
    "WITH found AS ({sql}) SELECT found.* FROM (SELECT 1 / COUNT(*) FROM found) AS guard(one) "
    "LEFT JOIN found ON guard.one = 1"
)


class _AfterCommit(RuntimeError):
    """A statement after ``fetch_each(last=True)``: a bug in the caller (that transaction is committed)."""

    def __init__(self) -> None:
        super().__init__("a statement after fetch_each(last=True), which committed the transaction")


class StatementLost(Exception):
    """The connection broke while one autocommit statement ran: it may or may not have committed."""


class _Lost(Exception):
    """The connection broke. ``xid`` is set when it broke after a write transaction sent COMMIT (in
    doubt); ``result`` is then what ``fn`` returned, valid if that transaction committed (``has_result``:
    ``fn`` had returned; it had not when its own last statements carried the COMMIT)."""

    def __init__(
        self, reason: str, *, xid: str | None = None, started: str = "", result: Any = None, has_result: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.xid = xid
        self.started = started  # the server's start time when the transaction began
        self.result = result
        self.has_result = has_result


class PostgresBackend:
    """A ledger in a PostgreSQL database (or schema), shared by every process that opens the same URL.

    Thread-safe: each transaction borrows its own connection from a ``psycopg_pool.ConnectionPool``.

    Args:
        url: ``postgresql://user@host:port/dbname`` (see the module docstring for options).
        timeout: seconds to wait for a connection or a row lock before the ledger is reported unavailable;
            overrides the URL's ``timeout``.
        pool_min, pool_max: connection pool size; override the URL's options.
        migrate: apply pending schema migrations on open (as :class:`SQLiteBackend` does).
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        pool_min: int | None = None,
        pool_max: int | None = None,
        migrate: bool = True,
    ) -> None:
        conninfo, options, self.display_url, self._password = _parse_url(url)
        self._timeout = float(timeout if timeout is not None else _option(options, "timeout", DEFAULT_TIMEOUT_SECONDS))
        low = int(pool_min if pool_min is not None else _option(options, "pool_min", DEFAULT_POOL_MIN))
        high = int(pool_max if pool_max is not None else _option(options, "pool_max", DEFAULT_POOL_MAX))
        if self._timeout <= 0:
            raise ConfigurationError("the PostgreSQL ledger timeout must be positive")
        if low < 0 or high < max(1, low):
            raise ConfigurationError("the PostgreSQL pool needs 0 <= pool_min <= pool_max and pool_max >= 1")
        self._conninfo = conninfo
        self._closed = False
        #: Retries and in-doubt resolutions so far, by kind (``conflict``, ``duplicate``, ``lost``,
        #: ``in_doubt_committed``, ``in_doubt_aborted``); for benchmarks and tests.
        self.stats: Counter[str] = Counter()
        self._check_lock = threading.Lock()
        # One direct connection first: its error says why (refused, auth, no such database), where a
        # pool would only time out.
        self._connect_once()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=low,
            max_size=high,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            timeout=self._timeout,
            name="kling-budget",
        )
        self._pool.open(wait=False)
        if migrate:
            try:
                self.upgrade()
            except BaseException:
                self.close()
                raise

    # ----------------------------------------------------------------- connections

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "SELECT set_config('synchronous_commit', 'on', false), set_config('lock_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(max(1, int(self._timeout * 1000))), str(IDLE_IN_TRANSACTION_TIMEOUT_MS)),
        )

    def _connect_once(self) -> None:
        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=max(2, int(self._timeout))) as conn:
                row = conn.execute("SELECT current_schema()").fetchone()
        except psycopg.Error as exc:
            raise LedgerUnavailableError(f"cannot connect to ledger {self.display_url}: {self._reason(exc)}") from None
        if not row or row[0] is None:
            raise ConfigurationError(
                f"ledger {self.display_url}: the search_path names no existing schema to keep the ledger in"
            )

    def _reason(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***").replace(quote(self._password, safe=""), "***")
        return text[:300]

    def _getconn(self, deadline: float) -> psycopg.Connection[Any]:
        if self._closed:
            raise LedgerUnavailableError(f"ledger {self.display_url} is closed")
        try:
            return self._pool.getconn(timeout=max(0.05, deadline - time.monotonic()))
        except PoolTimeout:
            raise LedgerUnavailableError(
                f"ledger {self.display_url} is unreachable (no connection within {self._timeout:g} s)"
            ) from None
        except psycopg.Error as exc:
            raise LedgerUnavailableError(f"ledger {self.display_url} is unreachable: {self._reason(exc)}") from None

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        try:
            self._pool.putconn(conn)
        except Exception:  # the pool is closing; the connection goes with it
            conn.close()

    def _drop_dead_connections(self) -> None:
        # After one broken connection (server restart, network cut) its idle siblings are likely dead too.
        if self._check_lock.acquire(blocking=False):
            try:
                self._pool.check()
            except Exception:
                pass
            finally:
                self._check_lock.release()

    # ----------------------------------------------------------------- transactions

    def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction (READ COMMITTED to write, REPEATABLE READ READ ONLY to read).

        Retries serialization failures, deadlocks, duplicate-key races and connections lost before
        COMMIT; resolves a connection lost during COMMIT with ``pg_xact_status``.
        """
        deadline = time.monotonic() + self._timeout
        conflicts = duplicates = lost = 0
        while True:
            conn = self._getconn(deadline)
            try:
                return self._attempt(conn, fn, write)
            except _Lost as exc:
                self._putconn(conn)
                self._drop_dead_connections()
                if exc.xid is not None:
                    status = self._xact_status(exc.xid, exc.started, deadline)
                    self.stats[f"in_doubt_{status or 'unknown'}"] += 1
                    if status == "committed" and exc.has_result:
                        result: T = exc.result
                        return result
                    # Committed by fn's own last statements (fetch_each(last=True)), its answer lost with the
                    # connection: run it again like an aborted one; every ledger write is keyed, so it replays.
                    if status not in ("committed", "aborted"):
                        raise LedgerUnavailableError(
                            f"lost the connection to ledger {self.display_url} during COMMIT and could not "
                            "learn whether it committed; retry the operation with the same key"
                        ) from None
                lost += 1
                self.stats["lost"] += 1
                if time.monotonic() >= deadline:
                    raise LedgerUnavailableError(f"ledger {self.display_url} is unreachable: {exc.reason}") from None
                time.sleep(min(0.05 * lost, 0.5, max(0.0, deadline - time.monotonic())))
            except psycopg.Error as exc:
                self._putconn(conn)
                state = exc.sqlstate or ""
                if state in _RETRY_STATES and conflicts < MAX_CONFLICT_RETRIES:
                    conflicts += 1
                    self.stats["conflict"] += 1
                    time.sleep(random.uniform(0, 0.002 * conflicts))
                    continue
                if state == _DUPLICATE_STATE and duplicates < MAX_DUPLICATE_RETRIES:
                    duplicates += 1
                    self.stats["duplicate"] += 1
                    continue
                if state in _RETRY_STATES:
                    raise LedgerUnavailableError(
                        f"ledger {self.display_url}: gave up after {conflicts} retries ({self._reason(exc)})"
                    ) from None
                if state in _LOCKED_STATES:
                    raise LedgerUnavailableError(
                        f"ledger {self.display_url} is locked by another writer (waited {self._timeout:g} s)"
                    ) from None
                raise
            except BaseException:
                self._putconn(conn)
                raise

    def run_single(self, sql: str, params: Sequence[Any]) -> Row | None:
        """Run one statement as a transaction of its own (autocommit): one round trip, COMMIT included.

        Not retried: a statement error is raised as psycopg raised it (the transaction was rolled back). A
        connection lost before the answer raises :class:`StatementLost`: the outcome is unknown, and only
        the caller can resolve it (e.g. by its idempotency key). No connection in time, or a lock held
        past the timeout, raises :class:`LedgerUnavailableError` (fail closed).
        """
        deadline = time.monotonic() + self._timeout
        conn = self._getconn(deadline)
        try:
            row: Row | None = conn.execute(translate(sql), tuple(params)).fetchone()
        except psycopg.Error as exc:
            self._putconn(conn)
            if conn.broken or conn.closed:
                self._drop_dead_connections()
                raise StatementLost(self._reason(exc)) from None
            if (exc.sqlstate or "") in _LOCKED_STATES:
                raise LedgerUnavailableError(
                    f"ledger {self.display_url} is locked by another writer (waited {self._timeout:g} s)"
                ) from None
            raise
        except BaseException:
            conn.close()  # interrupted mid-statement: never reuse a connection in an unknown state
            self._putconn(conn)
            raise
        self._putconn(conn)
        return row

    def _attempt(self, conn: psycopg.Connection[Any], fn: Callable[[Connection], T], write: bool) -> T:
        """One try; returns the connection to the pool itself only on success."""
        pg = _PgConnection(conn, write=write)
        try:
            result = fn(pg)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                # Lost after fn sent its COMMIT (fetch_each(last=True)): in doubt, and there is no result to
                # return if it committed; run() resolves the transaction's fate, then runs fn again.
                raise _Lost(self._reason(exc), xid=pg.xid if pg.commit_sent else None, started=pg.started) from None
            if pg.began:
                _rollback(conn)
            raise
        except BaseException:
            if pg.began and not (conn.broken or conn.closed):
                _rollback(conn)
            raise
        if pg.commit_sent or not pg.began:
            self._putconn(conn)  # fn's last statements carried the COMMIT, or fn ran no statement
            return result
        xid, started = pg.xid, pg.started
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if not (conn.broken or conn.closed):
                _rollback(conn)
                raise
            if not write:
                self._putconn(conn)
                return result  # nothing to lose: the reads are done
            raise _Lost(self._reason(exc), xid=xid, started=started, result=result, has_result=True) from None
        except BaseException:
            conn.close()  # interrupted mid-COMMIT: never reuse a connection in an unknown state
            raise
        self._putconn(conn)
        return result

    def _xact_status(self, xid: str, started: str, deadline: float) -> str | None:
        """``committed``, ``aborted``, or ``None`` when it cannot be learned before ``deadline`` (or cannot be
        trusted: see the module docstring)."""
        if not xid:
            return None
        while True:
            try:
                conn = self._pool.getconn(timeout=max(0.05, deadline - time.monotonic()))
            except psycopg.Error:
                return None
            try:
                row = conn.execute(
                    "SELECT pg_xact_status(%s::xid8), pg_postmaster_start_time()::text", (xid,)
                ).fetchone()
                status = row[0] if row else None
                if status == "committed" and row is not None and row[1] != started:
                    self.stats["in_doubt_after_restart"] += 1
                    return None  # the server restarted: the id may have been handed out again
            except psycopg.Error:
                status = "unreachable"
            finally:
                self._putconn(conn)
            if status in ("committed", "aborted"):
                return str(status)
            if status not in ("in progress", "unreachable") or time.monotonic() >= deadline:
                return None
            if status == "unreachable":
                self._drop_dead_connections()
            # "in progress": the server has not yet noticed the cut connection; it will commit or abort.
            time.sleep(0.02)

    # ----------------------------------------------------------------- schema

    def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty database or schema."""

        def read(conn: Connection) -> int:
            exists = conn.fetchone("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not exists or not exists[0]:
                return 0
            row = conn.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row[0]) if row else 0

        return self.run(read, write=False)

    def upgrade(self) -> list[int]:
        """Apply every pending migration, each in its own transaction under an advisory lock, so that
        several processes opening an empty database at once apply each migration exactly once."""
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise LedgerUnavailableError(
                f"ledger {self.display_url} has schema version {current}, newer than this kling-budget "
                f"({LATEST_VERSION}); upgrade kling-budget"
            )
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version > current and self.run(partial(_apply, migration=migration)):
                applied.append(migration.version)
        return applied

    def close(self) -> None:
        """Close the pool and its connections."""
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self.display_url!r})"


def _apply(conn: Connection, *, migration: Migration) -> bool:
    conn.execute(_MIGRATION_LOCK)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    if conn.fetchone("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
        return False  # another process applied it while we waited for the lock
    apply_migration(conn, migration, "postgresql")
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, int(time.time())),
    )
    return True


def _rollback(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        conn.close()


def _parse_url(url: str) -> tuple[str, dict[str, str], str, str]:
    """(libpq conninfo, kling-budget options, URL safe to print, password or '')."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigurationError(f"not a PostgreSQL URL (scheme {scheme!r}); use postgresql://user@host/dbname")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OWN_OPTIONS}
    passthrough = [(k, v) for k, v in query if k not in _OWN_OPTIONS]
    password = unquote(parts.password or "") or next((v for k, v in passthrough if k == "password"), "")
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passthrough), ""))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    shown = [(k, v) for k, v in passthrough if k not in _SECRET_OPTIONS]
    display = urlunsplit(("postgresql", netloc, parts.path, urlencode(shown), ""))
    return conninfo, options, display, password


def _option(options: dict[str, str], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        return float(options[name])
    except ValueError:
        raise ConfigurationError(f"ledger URL option {name}={options[name]!r} is not a number") from None
