"""READ COMMITTED races of the shared ledger, and the locks that close them (see ledger/locks.py).

Each test runs several ledgers (separate pools and configuration caches, as separate processes would
have) in threads against one PostgreSQL schema. The negative control turns the locks off and shows that
the same workload breaks the ledger, so the positive runs mean something.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError, ReservationResolvedError
from kling_budget.ledger import Ledger, ReservationState, locks, open_ledger
from kling_budget.types import Attribution, PackType
from tests.pgutil import fresh_postgres_url

pytestmark = pytest.mark.postgres

PROJECTS = ("p0", "p1", "p2")
PRICE = 1000


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_url() as url:
        yield url


def _attribution(rng: random.Random) -> Attribution:
    return Attribution(project=rng.choice(PROJECTS), user=f"u{rng.randrange(3)}", model="kling-v2-6")


def _in_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(i)`` for i in range(count) in threads; return what they raised."""
    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # reported to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return errors


def _all_in_threads(count: int, target: Callable[[int], None]) -> None:
    errors = _in_threads(count, target)
    if errors:
        raise errors[0]


def churn_and_reconfigure(url: str, seconds: float, *, workers: int = 4) -> tuple[Ledger, list[BaseException]]:
    """Reserve, commit and release in ``workers`` ledgers while another keeps creating, redefining and
    deleting budgets that match the open jobs; return a ledger to inspect the result and the errors."""
    setup = open_ledger(url)
    setup.set_budget(Budget.create("account", limit_units=10**9))
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        rng = random.Random(index)
        ledger = open_ledger(url)
        held: list[str] = []
        n = 0
        try:
            while time.monotonic() < stop:
                n += 1
                key = f"w{index}-{n}"
                ledger.reserve(key, units_milli=PRICE, pack_type=PackType.VIDEO, attribution=_attribution(rng))
                held.append(key)
                if len(held) > 6:
                    victim = held.pop(rng.randrange(len(held)))
                    if rng.random() < 0.5:
                        ledger.commit(victim, units_milli=PRICE + rng.choice((0, 0, 500)))
                    else:
                        ledger.release(victim)
        finally:
            ledger.close()

    def configurer(_: int) -> None:
        rng = random.Random(99)
        ledger = open_ledger(url)
        n = 0
        try:
            while time.monotonic() < stop:
                n += 1
                project = rng.choice(PROJECTS)
                ledger.set_budget(Budget.create(f"b{n}", project=project, limit_units=10**9))
                if n % 3 == 0:  # a definition change: the window rows are dropped and re-derived
                    ledger.set_budget(Budget.create(f"b{n - 1}", project=rng.choice(PROJECTS), limit_units=10**9))
                if n % 5 == 0:
                    ledger.delete_budget(f"b{n - 4}")
                time.sleep(0.005)
        finally:
            ledger.close()

    errors = _in_threads(workers + 1, lambda i: configurer(i) if i == workers else worker(i))
    return setup, errors


def test_budget_creation_racing_commits_and_releases_keeps_every_counter_exact(pg_url: str) -> None:
    """Window rows created (and re-created) while jobs in them commit and release: verify passes."""
    ledger, errors = churn_and_reconfigure(pg_url, seconds=4.0)
    try:
        assert not errors, errors[:3]
        report = ledger.verify()
        assert report.checked_windows > 10, "the workload did not create enough windows to mean anything"
        assert report.ok, report.problems[:5]
    finally:
        ledger.close()


def test_negative_control_without_the_locks_the_same_workload_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the locks off the same workload fails (a window row written for a budget deleted under it,
    a refused update on a row deleted under it) or corrupts counters: the test above can fail."""
    monkeypatch.setattr(locks, "ENABLED", False)
    for _ in range(3):  # a race needs luck; three runs of 4 s have always been plenty
        with fresh_postgres_url() as url:
            ledger, errors = churn_and_reconfigure(url, seconds=4.0)
            try:
                if errors or not ledger.verify().ok:
                    return
            finally:
                ledger.close()
    pytest.fail("without the locks nothing went wrong; the workload is too gentle to prove anything")


def test_same_key_reserved_concurrently_is_one_reservation(pg_url: str) -> None:
    """Eight ledgers reserving one key at once: one reservation, one hold, the rest replay it."""
    setup = open_ledger(pg_url)
    setup.set_budget(Budget.create("account", limit_units=100))
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def reserve(_: int) -> None:
        ledger = open_ledger(pg_url)
        try:
            barrier.wait()
            info = ledger.reserve(
                "same-key", units_milli=PRICE, pack_type=PackType.VIDEO, attribution=Attribution(project="p0")
            )
            results.append(info.replayed)
        finally:
            ledger.close()

    _all_in_threads(8, reserve)
    try:
        assert sorted(results) == [False] + [True] * 7
        assert setup.budget_status("account").counters.held_milli == PRICE
        assert setup.verify().ok
    finally:
        setup.close()


def test_commit_and_release_of_one_key_at_once_resolve_it_once(pg_url: str) -> None:
    """A commit racing a release of the same reservation: exactly one wins, the other is refused."""
    setup = open_ledger(pg_url)
    setup.set_budget(Budget.create("account", limit_units=10**6))
    ledgers = [open_ledger(pg_url), open_ledger(pg_url)]
    try:
        for round_ in range(15):
            key = f"r{round_}"
            setup.reserve(key, units_milli=PRICE, pack_type=PackType.VIDEO, attribution=Attribution(project="p0"))
            barrier = threading.Barrier(2)
            outcomes: list[str] = []

            def resolve(
                index: int, key: str = key, barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes
            ) -> None:
                barrier.wait()
                try:
                    if index == 0:
                        ledgers[0].commit(key)
                        outcomes.append("committed")
                    else:
                        ledgers[1].release(key)
                        outcomes.append("released")
                except ReservationResolvedError:
                    outcomes.append("refused")

            _all_in_threads(2, resolve)
            assert sorted(outcomes) in (["committed", "refused"], ["refused", "released"])
            state = setup.get_reservation(key).state
            assert state.value == next(o for o in outcomes if o != "refused")
        assert setup.budget_status("account").counters.held_milli == 0
        report = setup.verify()
        assert report.ok, report.problems
    finally:
        for ledger in ledgers:
            ledger.close()
        setup.close()


def test_ttl_sweep_never_releases_a_reservation_that_was_marked_submitted(pg_url: str) -> None:
    """mark_submitted racing expire_unsubmitted: each job is either submitted or released, never both."""
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    setup = open_ledger(pg_url)
    setup.set_budget(Budget.create("account", limit_units=10**6))
    keys = [f"t{i}" for i in range(40)]
    for key in keys:
        setup.reserve(
            key,
            units_milli=PRICE,
            pack_type=PackType.VIDEO,
            attribution=Attribution(project="p0"),
            ttl=timedelta(seconds=1),
            now=start,
        )
    submitted: list[str] = []
    expired: list[str] = []

    def submitter(_: int) -> None:
        ledger = open_ledger(pg_url)
        try:
            for key in keys:
                try:
                    ledger.mark_submitted(key)
                    submitted.append(key)
                except ReservationResolvedError:
                    pass
        finally:
            ledger.close()

    def sweeper(index: int) -> None:
        ledger = open_ledger(pg_url)
        try:
            for _ in range(20):
                expired.extend(ledger.expire_unsubmitted(now=start + timedelta(minutes=1), limit=3))
        finally:
            ledger.close()

    _all_in_threads(3, lambda i: submitter(i) if i == 0 else sweeper(i))
    try:
        assert not set(submitted) & set(expired)
        assert len(expired) == len(set(expired))
        for key in submitted:
            assert setup.get_reservation(key).state is ReservationState.SUBMITTED
        for key in expired:
            assert setup.get_reservation(key).state is ReservationState.RELEASED
        assert setup.verify().ok
    finally:
        setup.close()


def test_exact_exhaustion_with_threads_on_one_budget(pg_url: str) -> None:
    """Twelve ledgers racing on a budget of 50 jobs admit exactly 50."""
    setup = open_ledger(pg_url)
    setup.set_budget(Budget.create("account", limit_units=50))
    admitted: list[str] = []

    def race(index: int) -> None:
        ledger = open_ledger(pg_url)
        try:
            n = 0
            while True:
                n += 1
                try:
                    ledger.reserve(
                        f"x{index}-{n}", units_milli=PRICE, pack_type=PackType.VIDEO, attribution=Attribution()
                    )
                except BudgetExceededError:
                    return
                admitted.append(f"x{index}-{n}")
        finally:
            ledger.close()

    _all_in_threads(12, race)
    try:
        assert len(admitted) == 50
        assert setup.budget_status("account").counters.held_milli == 50 * PRICE
    finally:
        setup.close()
