"""PostgresBackend itself: URLs, sessions, transactions, retries, migrations, failing closed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from kling_budget.errors import ConfigurationError, LedgerUnavailableError
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.postgres import PostgresBackend, _parse_url, translate
from kling_budget.ledger.schema import LATEST_VERSION
from tests.pgutil import fresh_postgres_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_url() as url:
        yield url


@pytest.fixture
def backend(pg_url: str) -> Iterator[PostgresBackend]:
    opened = PostgresBackend(pg_url)
    yield opened
    opened.close()


def test_url_options_are_ours_and_the_password_is_never_displayed() -> None:
    """timeout/pool_* are stripped before libpq sees them; the display URL has no password."""
    conninfo, options, display, password = _parse_url(
        "postgresql+psycopg://app:pw%21@db.example:6432/kling?timeout=3&pool_max=4&sslmode=require&password=q"
    )
    assert options == {"timeout": "3", "pool_max": "4"}
    assert "timeout" not in conninfo and "pool_max" not in conninfo and "sslmode=require" in conninfo
    assert conninfo.startswith("postgresql://")
    assert display == "postgresql://app@db.example:6432/kling?sslmode=require"
    assert password == "pw!"
    with pytest.raises(ConfigurationError):
        PostgresBackend("postgresql://x@127.0.0.1/db?pool_max=0")
    with pytest.raises(ConfigurationError):
        PostgresBackend("mysql://x@127.0.0.1/db")


def test_placeholders_and_percent_signs_are_translated() -> None:
    """``?`` → ``%s`` and a literal ``%`` → ``%%``, so psycopg sees what the ledger meant."""
    translated = translate("SELECT a % 2 FROM t WHERE b = ? AND c LIKE ?")
    assert translated == "SELECT a %% 2 FROM t WHERE b = %s AND c LIKE %s"


def test_literal_percent_and_like_parameters_round_trip(backend: PostgresBackend) -> None:
    """A modulo in the SQL text and a LIKE pattern with % as a parameter both work."""
    row = backend.run(lambda c: c.fetchone("SELECT 7 % 4, 'a%b' LIKE ?", ("a\\%b",)), write=False)
    assert row == (3, True)


def test_unreachable_server_fails_closed_quickly() -> None:
    """Nothing listening: LedgerUnavailableError at open, naming the server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(LedgerUnavailableError, match=f"127.0.0.1:{port}"):
        PostgresBackend(f"postgresql://x:secret@127.0.0.1:{port}/db", timeout=2)
    assert time.monotonic() - started < 5


def test_sessions_are_durable_and_reads_see_one_snapshot(backend: PostgresBackend) -> None:
    """synchronous_commit is on; writes are READ COMMITTED, reads REPEATABLE READ READ ONLY."""
    assert backend.run(lambda c: c.fetchone("SHOW synchronous_commit")) == ("on",)
    assert backend.run(lambda c: c.fetchone("SHOW transaction_isolation")) == ("read committed",)
    assert backend.run(lambda c: c.fetchone("SHOW transaction_isolation"), write=False) == ("repeatable read",)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        backend.run(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')"), write=False)
    # The failed transaction was rolled back and its connection reused cleanly.
    assert backend.run(lambda c: c.fetchone("SELECT COUNT(*) FROM meta WHERE key = 'x'"), write=False) == (0,)


def test_schema_version_and_a_newer_schema_is_refused(pg_url: str, backend: PostgresBackend) -> None:
    """The backend knows its version; a database migrated by a newer release is refused, not misread."""
    assert backend.schema_version() == LATEST_VERSION
    assert backend.upgrade() == []
    backend.run(lambda c: c.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)"))
    with pytest.raises(LedgerUnavailableError, match="newer than this kling-budget"):
        PostgresBackend(pg_url)


def test_concurrent_first_use_of_an_empty_database_migrates_once(pg_url: str) -> None:
    """Six processes' worth of backends opening one empty schema at once: one migration each, no error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        try:
            barrier.wait()
            PostgresBackend(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_deadlocks_are_retried(backend: PostgresBackend) -> None:
    """Two transactions locking two rows in opposite orders: PostgreSQL kills one, the backend re-runs it."""
    backend.run(lambda c: c.execute("CREATE TABLE dl (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
    backend.run(lambda c: c.execute("INSERT INTO dl VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def crossing(first: int, second: int) -> None:
        attempts = 0

        def tx(c: Connection) -> None:
            nonlocal attempts
            attempts += 1
            c.execute("UPDATE dl SET n = n + 1 WHERE id = ?", (first,))
            if attempts == 1:  # both first updates are in: each now waits for the other's row
                barrier.wait(timeout=120)
            c.execute("UPDATE dl SET n = n + 1 WHERE id = ?", (second,))

        try:
            backend.run(tx)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=crossing, args=(1, 2)), threading.Thread(target=crossing, args=(2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    # Usually one of the two is killed; on a loaded machine both deadlock checks can fire before either
    # transaction is gone, and both are killed (and re-run).
    assert backend.stats["conflict"] in (1, 2)
    assert backend.run(lambda c: c.fetchall("SELECT n FROM dl ORDER BY id")) == [(2,), (2,)]


def test_a_row_locked_past_the_timeout_fails_closed(pg_url: str) -> None:
    """A writer stuck behind a lock for longer than ``timeout``: LedgerUnavailableError, not a hang."""
    fast = PostgresBackend(pg_url, timeout=0.5)
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("UPDATE meta SET value = value WHERE key = 'config_version'")  # holds the row lock
        with pytest.raises(LedgerUnavailableError, match="locked"):
            fast.run(lambda c: c.execute("UPDATE meta SET value = value WHERE key = 'config_version'"))
        blocker.rollback()
    fast.close()


def test_a_commit_whose_commit_travels_with_it_fails_closed_behind_a_lock_and_keeps_nothing(pg_url: str) -> None:
    """A commit sending COMMIT with its window moves, stuck behind a lock on the account window past the
    timeout: LedgerUnavailableError, nothing of it kept (COMMIT was not applied), and the same commit
    succeeds once the lock is gone, counted once."""
    from kling_budget.budgets import Budget
    from kling_budget.ledger import Ledger, ReservationState
    from kling_budget.types import Attribution, PackType

    ledger = Ledger(PostgresBackend(pg_url, timeout=0.5))
    ledger.set_budget(Budget.create("account", limit_units=100))
    ledger.reserve("job", units_milli=2500, pack_type=PackType.VIDEO, attribution=Attribution(project="p"))
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("UPDATE budget_windows SET held_milli = held_milli")  # holds every window row's lock
        with pytest.raises(LedgerUnavailableError, match="locked"):
            ledger.commit("job")
        blocker.rollback()
    assert ledger.get_reservation("job").state is ReservationState.HELD
    info = ledger.commit("job")
    assert info.state is ReservationState.COMMITTED and not info.replayed
    counters = ledger.budget_status("account").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 2500)
    assert ledger.verify().ok
    ledger.close()


def test_closed_backend_refuses_work(pg_url: str) -> None:
    """After close() every call fails closed."""
    closed = PostgresBackend(pg_url)
    closed.close()
    with pytest.raises(LedgerUnavailableError, match="closed"):
        closed.run(lambda c: c.fetchone("SELECT 1"))


def test_a_search_path_without_a_schema_is_a_configuration_error(pg_url: str) -> None:
    """Pointing at a schema that does not exist says so instead of failing inside a migration."""
    from tests.pgutil import base_url, with_search_path

    with pytest.raises(ConfigurationError, match="no existing schema"):
        PostgresBackend(with_search_path(base_url(), "kb_no_such_schema"))


def test_begin_travels_with_the_first_statement_and_sets_the_transaction(backend: PostgresBackend) -> None:
    """BEGIN goes with a transaction's first statement: writes run at READ COMMITTED with a transaction id
    known, reads at REPEATABLE READ READ ONLY (a write there is refused), and a function that runs no
    statement opens nothing."""
    write = backend.run(
        lambda c: (c.fetchone("SHOW transaction_isolation"), c.fetchone("SELECT txid_current_if_assigned()"))
    )
    assert write[0] == ("read committed",) and write[1] is not None and write[1][0] is not None
    read = backend.run(
        lambda c: c.fetchall(
            "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')"
        ),
        write=False,
    )
    assert read == [("repeatable read", "on")]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        backend.run(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('ro', 'x')"), write=False)
    assert backend.run(lambda c: [c.fetch_each([("SHOW transaction_isolation", ())])]) == [[("read committed",)]]
    assert backend.run(lambda c: 42) == 42
    assert backend.run(lambda c: c.fetchone("SELECT value FROM meta WHERE key = 'ro'")) is None
