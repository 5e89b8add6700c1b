"""Connections cut around COMMIT (through tests/pgproxy.py): nothing is lost or counted twice.

A cut before COMMIT reached the server rolls the transaction back and the backend runs it again; a cut
after the server committed is resolved with ``pg_xact_status``; when even that cannot be learned the
call fails closed, and the caller's retry with the same key returns the same outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import LedgerUnavailableError
from kling_budget.ledger import Ledger, ReservationState
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.postgres import PostgresBackend
from kling_budget.types import Attribution, PackType
from tests.pgproxy import CuttingProxy
from tests.pgutil import fresh_postgres_url, with_host

pytestmark = pytest.mark.postgres

T = TypeVar("T")
COMMIT = b"COMMIT\x00"
JOB = {"units_milli": 2500, "pack_type": PackType.VIDEO, "attribution": Attribution(project="p0", user="u0")}


@pytest.fixture
def direct_url() -> Iterator[str]:
    with fresh_postgres_url() as url:
        yield url


@pytest.fixture
def proxy(direct_url: str) -> Iterator[CuttingProxy]:
    parts = urlsplit(direct_url)
    cutting = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield cutting
    cutting.close()


def _ledgers(direct_url: str, proxy: CuttingProxy, timeout: float = 10.0) -> tuple[Ledger, Ledger]:
    """(a ledger through the proxy with one pooled connection, a direct one to check the truth)."""
    truth = Ledger(PostgresBackend(direct_url))
    truth.set_budget(Budget.create("account", limit_units=100))
    via = Ledger(PostgresBackend(with_host(direct_url, "127.0.0.1", proxy.port), timeout=timeout, pool_max=1))
    return via, truth


def _retry(call: Callable[[], T], seconds: float = 15.0) -> T:
    """What a caller does after LedgerUnavailableError: retry the same call (same key) for a while."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except LedgerUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _assert_once(truth: Ledger, key: str) -> None:
    info = truth.get_reservation(key)
    assert info.state is ReservationState.HELD
    assert truth.budget_status("account").counters.held_milli == 2500
    assert truth.list_reservations(limit=10) == [truth.get_reservation(key)]
    report = truth.verify()
    assert report.ok, report.problems
    assert report.checked_entries == 1


def test_commit_ack_lost_after_the_server_committed(direct_url: str, proxy: CuttingProxy) -> None:
    """The server committed, the client never heard: pg_xact_status says so and the call succeeds once."""
    via, truth = _ledgers(direct_url, proxy)
    proxy.arm(COMMIT, "after")
    info = via.reserve("job-1", **JOB)  # type: ignore[arg-type]
    assert proxy.cuts == 1
    assert via.backend.stats["in_doubt_committed"] == 1  # type: ignore[attr-defined]
    assert not info.replayed
    _assert_once(truth, "job-1")
    again = via.reserve("job-1", **JOB)  # type: ignore[arg-type]
    assert again.replayed and again.state is info.state and again.usd_nano == info.usd_nano
    _assert_once(truth, "job-1")
    via.close()
    truth.close()


def test_commit_cut_before_the_server_saw_it_runs_once_more(direct_url: str, proxy: CuttingProxy) -> None:
    """COMMIT never arrived: the transaction aborted, so the backend safely runs it again."""
    via, truth = _ledgers(direct_url, proxy)
    proxy.arm(COMMIT, "before")
    info = via.reserve("job-2", **JOB)  # type: ignore[arg-type]
    assert proxy.cuts == 1
    assert via.backend.stats["in_doubt_aborted"] == 1  # type: ignore[attr-defined]
    assert not info.replayed
    _assert_once(truth, "job-2")
    via.close()
    truth.close()


def test_cut_mid_transaction_is_retried(direct_url: str, proxy: CuttingProxy) -> None:
    """A connection lost before COMMIT was sent: rolled back by the server, re-run on a new connection."""
    via, truth = _ledgers(direct_url, proxy)
    proxy.arm(b"INSERT INTO reservations", "before")
    via.reserve("job-3", **JOB)  # type: ignore[arg-type]
    assert proxy.cuts == 1
    assert via.backend.stats["lost"] == 1  # type: ignore[attr-defined]
    _assert_once(truth, "job-3")
    via.close()
    truth.close()


def test_unknown_outcome_fails_closed_and_the_retry_with_the_same_key_returns_the_same_outcome(
    direct_url: str, proxy: CuttingProxy
) -> None:
    """Ack lost and the server unreachable afterwards: LedgerUnavailableError (do not submit); once the
    server is back, retrying with the same key returns the reservation that did commit, counted once."""
    via, truth = _ledgers(direct_url, proxy, timeout=1.5)
    proxy.arm(COMMIT, "after")
    proxy.refuse_new = True
    with pytest.raises(LedgerUnavailableError, match="retry the operation with the same key"):
        via.reserve("job-4", **JOB)  # type: ignore[arg-type]
    proxy.refuse_new = False
    _assert_once(truth, "job-4")
    again = _retry(lambda: via.reserve("job-4", **JOB))  # type: ignore[arg-type]
    assert again.replayed and again.state is ReservationState.HELD
    _assert_once(truth, "job-4")

    # The same for a commit whose ack is lost: the retry replays it, the spend is counted once.
    proxy.arm(COMMIT, "after")
    proxy.refuse_new = True
    with pytest.raises(LedgerUnavailableError, match="retry the operation with the same key"):
        via.commit("job-4")
    proxy.refuse_new = False
    replay = _retry(lambda: via.commit("job-4"))
    assert replay.replayed and replay.state is ReservationState.COMMITTED
    counters = truth.budget_status("account").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 2500)
    assert truth.verify().ok
    via.close()
    truth.close()


ONE_TRIP = b"kling_budget_reserve"


def _warm(via: Ledger) -> None:
    """One reservation through the general path loads the configuration; later ones take one round trip."""
    via.reserve("warm", **JOB)  # type: ignore[arg-type]
    via.release("warm")


@pytest.mark.parametrize("mode", ["before", "after"])
def test_one_round_trip_reservation_cut_is_resolved_by_its_key(direct_url: str, proxy: CuttingProxy, mode: str) -> None:
    """The connection breaks during the one-round-trip reservation, before the server got it or after it
    committed: the ledger resolves it through its key (reserving it, or finding it), counted once."""
    via, truth = _ledgers(direct_url, proxy)
    _warm(via)
    proxy.arm(ONE_TRIP, mode)
    info = via.reserve("job-5", **JOB)  # type: ignore[arg-type]
    assert proxy.cuts == 1
    assert info.state is ReservationState.HELD and info.replayed is (mode == "after")
    assert truth.get_reservation("job-5").state is ReservationState.HELD
    counters = truth.budget_status("account").counters
    assert counters.held_milli == 2500
    report = truth.verify()
    assert report.ok, report.problems
    via.close()
    truth.close()


def _ownership_row(key: str) -> Callable[[Connection], None]:
    """A statement of the caller's own in the reservation's transaction (as the gateway's ownership row)."""

    def hook(conn: Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, 'owned') ON CONFLICT DO NOTHING", (f"own:{key}",))

    return hook


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_reservation_whose_commit_travels_with_it_is_resolved_when_cut(
    direct_url: str, proxy: CuttingProxy, mode: str
) -> None:
    """A one-round-trip reservation with the caller's own statements sends COMMIT with the function call.
    The cut leaves it in doubt; pg_xact_status says whether it committed (then it is found by its key, a
    replay) or not (then it runs again). Either way: reserved once, the caller's row stored once."""
    via, truth = _ledgers(direct_url, proxy)
    _warm(via)
    proxy.arm(ONE_TRIP, mode)
    info = via.reserve("job-6", also=_ownership_row("job-6"), **JOB)  # type: ignore[arg-type]
    assert proxy.cuts == 1
    stats = via.backend.stats  # type: ignore[attr-defined]
    # In doubt either way (COMMIT had been sent). Cut after sending, the server may still have stopped
    # before COMMIT (it writes the function's answer to the closed socket first): pg_xact_status tells.
    assert stats["in_doubt_committed"] + stats["in_doubt_aborted"] == 1, stats
    if mode == "before":
        assert stats["in_doubt_aborted"] == 1, stats
    assert info.state is ReservationState.HELD and info.replayed is (stats["in_doubt_committed"] == 1)
    assert truth.budget_status("account").counters.held_milli == 2500
    owned = truth.backend.run(lambda conn: conn.fetchall("SELECT value FROM meta WHERE key = 'own:job-6'"), write=False)
    assert owned == [("owned",)]
    report = truth.verify()
    assert report.ok, report.problems
    via.close()
    truth.close()


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_commit_whose_commit_travels_with_it_is_resolved_when_cut(
    direct_url: str, proxy: CuttingProxy, mode: str
) -> None:
    """A commit of no more than the hold sends COMMIT with its writes and window moves. The cut leaves it in
    doubt; pg_xact_status says whether it committed (the call then returns it as a replay) or not (it runs
    again). Either way the job is committed once."""
    via, truth = _ledgers(direct_url, proxy)
    via.reserve("job-7", **JOB)  # type: ignore[arg-type]
    proxy.arm(COMMIT, mode)
    info = via.commit("job-7")
    assert proxy.cuts == 1
    stats = via.backend.stats  # type: ignore[attr-defined]
    assert stats["in_doubt_committed"] + stats["in_doubt_aborted"] == 1, stats
    if mode == "before":
        assert stats["in_doubt_aborted"] == 1, stats
    assert info.state is ReservationState.COMMITTED and info.actual_milli == 2500
    assert info.replayed is (stats["in_doubt_committed"] == 1)
    counters = truth.budget_status("account").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 2500)
    report = truth.verify()
    assert report.ok, report.problems
    via.close()
    truth.close()
