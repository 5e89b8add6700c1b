"""The ledger hooks the gateway relies on: reserve(submitted, also), mark_submitted(also), group commit."""

from __future__ import annotations

import threading

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError
from kling_budget.ledger import ReservationState, open_ledger
from kling_budget.types import Attribution, PackType

ATTR = Attribution(project="p", user="u", api_key="k", model="kling-v2-6")


class Boom(Exception):
    """Raised by a hook to abort its transaction."""


def test_reserve_submitted_with_also_is_one_transaction(ledger):
    """reserve(submitted=True, also=...) stores the hook's row with the reservation, or neither."""
    ledger.backend.run(lambda c: c.execute("CREATE TABLE side (id TEXT PRIMARY KEY)"))
    info = ledger.reserve(
        "r1",
        units_milli=1500,
        pack_type=PackType.VIDEO,
        attribution=ATTR,
        submitted=True,
        also=lambda c: c.execute("INSERT INTO side (id) VALUES ('r1')"),
    )
    assert info.state is ReservationState.SUBMITTED

    def fail(conn):
        conn.execute("INSERT INTO side (id) VALUES ('r2')")
        raise Boom

    with pytest.raises(Boom):
        ledger.reserve("r2", units_milli=1500, pack_type=PackType.VIDEO, attribution=ATTR, also=fail)
    rows = ledger.backend.run(lambda c: c.fetchall("SELECT id FROM side ORDER BY id"), write=False)
    assert rows == [("r1",)]
    assert [r.id for r in ledger.list_reservations()] == ["r1"]
    ledger.mark_submitted("r1", task_id="t1", also=lambda c: c.execute("UPDATE side SET id = 't1'"))
    assert ledger.find_by_task("t1").id == "r1"
    assert ledger.backend.run(lambda c: c.fetchall("SELECT id FROM side"), write=False) == [("t1",)]
    assert ledger.verify().ok


def test_commit_and_release_with_also_are_one_transaction(ledger):
    """commit(also=...) and release(also=...) store the hook's write with the settlement, or neither; a replay
    does not run the hook."""
    ledger.backend.run(lambda c: c.execute("CREATE TABLE side (id TEXT PRIMARY KEY)"))
    for key in ("c1", "r1"):
        ledger.reserve(key, units_milli=1500, pack_type=PackType.VIDEO, attribution=ATTR, submitted=True)

    def fail(conn):
        conn.execute("INSERT INTO side (id) VALUES ('lost')")
        raise Boom

    with pytest.raises(Boom):
        ledger.commit("c1", units_milli=1000, also=fail)
    with pytest.raises(Boom):
        ledger.release("r1", also=fail)
    assert ledger.get_reservation("c1").state is ReservationState.SUBMITTED
    assert ledger.get_reservation("r1").state is ReservationState.SUBMITTED
    ledger.commit("c1", units_milli=1000, also=lambda c: c.execute("INSERT INTO side (id) VALUES ('c1')"))
    ledger.release("r1", also=lambda c: c.execute("INSERT INTO side (id) VALUES ('r1')"))
    assert ledger.commit("c1", units_milli=1000, also=fail).replayed
    assert ledger.release("r1", also=fail).replayed
    assert ledger.backend.run(lambda c: c.fetchall("SELECT id FROM side ORDER BY id"), write=False) == [
        ("c1",),
        ("r1",),
    ]
    assert ledger.get_reservation("c1").actual_milli == 1000
    assert ledger.verify().ok


def test_group_commit_admits_exactly_the_budget_under_concurrency(tmp_path):
    """With group commit on, 16 threads racing for a 30-unit budget get exactly 20 holds of 1.5 units."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    ledger.backend.enable_group_commit()
    ledger.set_budget(Budget.create("daily", period="daily", limit_units=30, project="p"))
    admitted: list[str] = []
    denied: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(5):
            key = f"w{n}-{i}"
            try:
                ledger.reserve(key, units_milli=1500, pack_type=PackType.VIDEO, attribution=ATTR)
            except BudgetExceededError:
                with lock:
                    denied.append(key)
            else:
                with lock:
                    admitted.append(key)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 20 and len(denied) == 60
    assert ledger.budget_status("daily").counters.held_milli == 30_000
    assert ledger.verify().ok
    ledger.close()
