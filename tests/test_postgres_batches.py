"""PostgreSQL reservations in one round trip, batched across the threads of one process (ledger/one_trip.py).

Every test shares one ledger between threads, so that concurrent reservations go to the server as one
transaction; each checks that every caller still gets its exact answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError
from kling_budget.ledger import Ledger, ReservationState, open_ledger
from kling_budget.ledger.backend import Connection
from kling_budget.types import AlertKind, Attribution, PackType
from tests.pgutil import fresh_postgres_url

pytestmark = pytest.mark.postgres

JOB: dict[str, Any] = {"units_milli": 1000, "pack_type": PackType.VIDEO}


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with fresh_postgres_url() as url:
        opened = open_ledger(url)
        yield opened
        opened.close()


def _threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]


def _warm(ledger: Ledger, attribution: Attribution) -> None:
    ledger.reserve("warm", attribution=attribution, **JOB)
    ledger.release("warm")


def test_threads_of_one_ledger_are_batched_and_admitted_exactly(ledger: Ledger) -> None:
    """16 threads of one process race for a 200-job budget under a three-level hierarchy: batches form,
    exactly 200 are admitted, every denial is exact, counters and entries agree."""
    ledger.set_budget(Budget.create("account", limit_units=200))
    ledger.set_budget(Budget.create("project", project="p", limit_units=10**6))
    for user in range(4):
        ledger.set_budget(Budget.create(f"user-{user}", project="p", user=f"u{user}", limit_units=10**6))
    _warm(ledger, Attribution(project="p", user="u0"))
    admitted: list[str] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        attribution = Attribution(project="p", user=f"u{index % 4}")
        n = 0
        while True:
            n += 1
            key = f"t{index}-{n}"
            try:
                ledger.reserve(key, attribution=attribution, **JOB)
            except BudgetExceededError as exc:
                assert exc.denial is not None and exc.denial.budget == "account"
                return
            with lock:
                admitted.append(key)

    _threads(16, race)
    group = ledger._one_trip.group  # type: ignore[union-attr]
    assert group.calls > group.batches, "no reservations were batched"
    assert len(admitted) == len(set(admitted)) == 200
    assert ledger.budget_status("account").counters.held_milli == 200 * 1000
    assert sum(ledger.budget_status(f"user-{u}").counters.held_milli for u in range(4)) == 200 * 1000
    report = ledger.verify()
    assert report.ok, report.problems[:5]


def test_a_failing_hook_in_a_batch_fails_only_its_own_reservation(ledger: Ledger) -> None:
    """Reservations with ``also`` statements, one of which raises: that caller gets its error and nothing
    of its reservation is stored; every other reservation of its batch is stored with its hook's row."""
    ledger.set_budget(Budget.create("account", limit_units=10**6))
    ledger.backend.run(lambda c: c.execute("CREATE TABLE side (id TEXT PRIMARY KEY)"))
    attribution = Attribution(project="p", user="u")
    _warm(ledger, attribution)

    class Refused(Exception):
        """The hook of one reservation refuses."""

    def hook(key: str) -> Callable[[Connection], None]:
        def insert(conn: Connection) -> None:
            conn.execute("INSERT INTO side (id) VALUES (?)", (key,))
            if key == "t3-5":
                raise Refused(key)

        return insert

    refused: list[str] = []

    def run(index: int) -> None:
        for n in range(10):
            key = f"t{index}-{n}"
            try:
                ledger.reserve(key, attribution=attribution, also=hook(key), submitted=True, **JOB)
            except Refused:
                refused.append(key)

    _threads(8, run)
    assert refused == ["t3-5"]
    side = {row[0] for row in ledger.backend.run(lambda c: c.fetchall("SELECT id FROM side"), write=False)}
    stored = {info.id for info in ledger.list_reservations(limit=1000)}
    expected = {f"t{i}-{n}" for i in range(8) for n in range(10)} - {"t3-5"}
    assert side == expected and stored == expected | {"warm"}
    assert all(info.state is ReservationState.SUBMITTED for info in ledger.list_reservations(states=("submitted",)))
    assert ledger.budget_status("account").counters.held_milli == 79 * 1000
    assert ledger.verify().ok


def test_alert_thresholds_fire_exactly_once_under_batches(ledger: Ledger) -> None:
    """A batch that would cross a threshold goes the general way: each threshold alerts exactly once,
    on the reservation that crossed it."""
    ledger.set_budget(Budget.create("account", limit_units=100, alert_at="25,50,75"))
    attribution = Attribution(project="p", user="u")
    _warm(ledger, attribution)
    alerts: list[tuple[str, str]] = []

    def run(index: int) -> None:
        for n in range(12):
            info = ledger.reserve(f"t{index}-{n}", attribution=attribution, **JOB)
            alerts.extend((info.id, event.kind.value) for event in info.alerts)

    _threads(8, run)
    assert ledger.budget_status("account").counters.held_milli == 96 * 1000
    kinds = sorted(kind for _, kind in alerts)
    assert kinds == [AlertKind.THRESHOLD.value] * 3
    stored = [e for e in ledger.recent_alerts(limit=50) if e.kind is AlertKind.THRESHOLD]
    assert len(stored) == 3 and {e.reservation_id for e in stored} == {key for key, _ in alerts}
    assert ledger.verify().ok


def test_without_the_function_the_ledger_reserves_the_long_way(ledger: Ledger) -> None:
    """A database whose function is missing (not upgraded) still reserves, through the general path."""
    ledger.set_budget(Budget.create("account", limit_units=10))
    attribution = Attribution(project="p")
    _warm(ledger, attribution)
    ledger.backend.run(lambda c: c.execute("DROP FUNCTION kling_budget_reserve(text, jsonb, jsonb, jsonb)"))
    for n in range(10):
        ledger.reserve(f"k{n}", attribution=attribution, **JOB)
    with pytest.raises(BudgetExceededError):
        ledger.reserve("k10", attribution=attribution, **JOB)
    assert ledger._one_trip is not None and not ledger._one_trip.enabled
    assert ledger.budget_status("account").counters.held_milli == 10 * 1000
    assert ledger.verify().ok


def test_ownership_rows_go_in_before_the_reservation_and_are_still_checked(ledger: Ledger) -> None:
    """On the one-trip path the gateway's ownership row is written before its reservation (the hot rows stay
    locked only until COMMIT); its foreign key is still enforced, at COMMIT."""
    import psycopg

    from kling_budget.master_key import SecretBox
    from kling_budget.server.keys import KeyStore
    from kling_budget.server.task_store import TaskStore

    attribution = Attribution(project="p", user="u", model="kling-v2-6")
    ledger.set_budget(Budget.create("account", limit_units=100))
    _warm(ledger, attribution)
    key = KeyStore(ledger.backend, SecretBox(SecretBox.generate())).create("k", project="p").key
    tasks = TaskStore(ledger.backend)

    def owned(reservation_id: str) -> Callable[[Connection], None]:
        return tasks.insert_hook(
            reservation_id, key_id=key.id, endpoint="/v1/videos/text2video", client_external_id=None,
            callback_url=None, check_at=0,
        )  # fmt: skip

    one_trip = ledger._one_trip
    assert one_trip is not None
    answers: list[bool] = []
    reserve = one_trip.reserve
    one_trip.reserve = lambda prepared: answers.append(reserve(prepared)) or answers[-1]  # type: ignore[method-assign]
    ledger.reserve("gw-1", attribution=attribution, submitted=True, also=owned("gw-1"), **JOB)
    assert answers == [True]  # applied in one trip, not declined to the general path
    row = ledger.backend.run(
        lambda c: c.fetchone("SELECT r.state FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id"),
        write=False,
    )
    assert row == ("submitted",)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        ledger.backend.run(owned("gw-never-reserved"))
    assert ledger.backend.run(lambda c: c.fetchone("SELECT count(*) FROM gateway_tasks"), write=False) == (1,)
    assert ledger.verify().ok
