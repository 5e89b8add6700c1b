"""Two gateway instances on one PostgreSQL ledger: budgets shared exactly, settling safe in both at once."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from kling_budget.ledger import ReservationState
from kling_budget.server import DENIAL_CODE
from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.gatewayutil import running_gateway, wait_until
from tests.pgutil import fresh_postgres_url

pytestmark = pytest.mark.postgres

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "two instances"}


def test_two_instances_share_one_budget_exactly_and_settle_everything(tmp_path):
    """40 concurrent creates of 1.5 units alternating between two gateways: exactly 20 fit a 30-unit budget."""
    home = tmp_path / "home"
    config = SimulatorConfig.single(packs={"video": 10000}, concurrency=1000, queued_seconds=0.05, running_seconds=0.1)
    with (
        fresh_postgres_url() as db,
        running_simulator(config) as kling,
        running_gateway(kling, db, home, settle_interval=0.05) as one,
        running_gateway(kling, db, home, settle_interval=0.05) as two,
    ):
        one.state.tracker.set_budget("shared-daily", project_id="p", period="daily", limit_units=30)
        issued = one.state.keys.create("shared", project="p", kind="api")
        results: list[tuple[int, int]] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            gateway = one if n % 2 else two
            with httpx.Client(
                base_url=gateway.base_url, headers={"Authorization": f"Bearer {issued.api_key}"}, timeout=30
            ) as c:
                for _ in range(4):
                    answer = c.post(T2V, json=BODY)
                    with lock:
                        results.append((answer.status_code, answer.json()["code"]))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = Counter(results)
        assert counts == {(200, 0): 20, (429, DENIAL_CODE): 20}
        wait_until(lambda: all(t.status == "succeed" for t in kling.sim.tasks()))
        # Both workers poll the same open tasks table; every hold ends committed, once.
        from kling_budget.server.task_store import now_micros

        one.state.tasks.backend.run(lambda c: c.execute("UPDATE gateway_tasks SET next_check_at = ?", (now_micros(),)))
        ledger = one.state.ledger

        def all_committed() -> bool:
            states = Counter(r.state for r in ledger.list_reservations(limit=1000))
            return states[ReservationState.COMMITTED] == 20

        wait_until(all_committed, 20)
        status = ledger.budget_status("shared-daily")
        assert status.counters.committed_milli == 30_000 and status.counters.held_milli == 0
        assert ledger.verify().ok
