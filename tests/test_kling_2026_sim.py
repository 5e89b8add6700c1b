"""KlingClient on Kling's 2026 design against the simulator over real loopback HTTP: both sides agree.

The simulator runs on a ManualClock; the client's clock reads it and its sleep advances it, so waiting takes
no wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_budget import CostTracker
from kling_budget.enforced import BudgetEnforcedClient
from kling_budget.errors import KlingAccountError, KlingAuthError, KlingParameterError
from kling_budget.kling import ChargeType, KlingClient, TaskStatus, bodies
from kling_budget.pricing import PriceTable, quote_kling_request
from kling_budget.simulator import FaultKind, ManualClock, RunningSimulator, SimulatorConfig, running_simulator
from tests.test_kling_client_sim import SimTime


@contextmanager
def connected(**options: Any) -> Iterator[tuple[RunningSimulator, KlingClient]]:
    """A simulator (``options`` as for SimulatorConfig.single) and a client sending its API key."""
    clock = ManualClock()
    with running_simulator(SimulatorConfig.single(**options), clock=clock) as kling:
        time = SimTime(clock)
        client = KlingClient(
            api_key=kling.api_key, base_url=kling.base_url, clock=time, sleep=time.sleep, jitter=lambda: 0.5, timeout=10
        )
        with client:
            yield kling, client


def test_text_to_video_is_charged_the_price_the_client_quotes() -> None:
    """kling-3.0 1080p native audio 5 s: the client's quote, the task's billing and the pack all say 6 units."""
    request = bodies.video_from_text("kling-3.0", "a fox", resolution="1080p", duration=5, audio="native")
    quote = quote_kling_request(PriceTable.default(), request.path, request.body)
    with connected() as (kling, client):
        job = client.create_video_from_text("kling-3.0", "a fox", resolution="1080p", duration=5, audio="native")
        done = client.wait(job, poll_interval=0.2)
    assert quote.units_milli == 6000
    assert done.status is TaskStatus.SUCCEEDED and done.charged_units_milli == 6000
    assert done.charges[0].charge_type is ChargeType.UNIT and done.charges[0].package_type == "video"
    assert len(done.video_urls) == 1
    assert kling.sim.remaining("video") == 1000 - 6


def test_lookups_and_paging_through_the_client() -> None:
    """get_tasks by either id and find_tasks page by page see the simulator's tasks."""
    with connected() as (_, client):
        made = [
            client.create_video_from_image("kling-2.6", "https://x/fox.png", external_task_id=f"img-{i}").task_id
            for i in range(3)
        ]
        by_external = client.get_tasks(external_task_ids=["img-2", "missing", "img-0"])
        first = client.find_tasks(limit=2)
        assert first.next_cursor is not None
        second = client.find_tasks(cursor=first.next_cursor, limit=2)
    assert [t.task_id for t in by_external] == [made[2], made[0]]
    assert [t.task_id for t in first.tasks + second.tasks] == made[::-1]
    assert second.next_cursor is None and not second.has_more


def test_early_failure_is_free_and_refusals_are_typed() -> None:
    """A failure before generation ends failed and charged 0; 1201 and a JWT on a new route raise typed errors."""
    with connected() as (kling, client):
        failed = client.wait(client.create_video_from_text("kling-3.0", "a fox [sim:fail_early=rejected]"))
        with pytest.raises(KlingParameterError) as bad:
            client.create_video_from_text("kling-2.6", "a fox", duration=7)
        assert kling.access_key is not None and kling.secret_key is not None
        jwt_client = KlingClient(kling.access_key, kling.secret_key, base_url=kling.base_url)
        with jwt_client, pytest.raises(KlingAuthError) as refused:
            jwt_client.get_tasks(["1"])
    assert failed.status is TaskStatus.FAILED and failed.charged_units_milli == 0
    assert bad.value.code == 1201 and "settings.duration" in str(bad.value)
    assert refused.value.code == 1002


def test_billing_ledgers_through_the_client() -> None:
    """get_billing_package and get_billing_balance parse the simulator's rows, unit and cash."""
    with connected(packs={"video": 6}, balance="1", discount="0.5") as (kling, client):
        from_pack = client.create_video_from_text("kling-3.0", "a", resolution="1080p", duration=5, audio="native")
        from_cash = client.create_video_from_text("kling-3.0", "b", resolution="1080p", duration=5, audio="native")
        with pytest.raises(KlingAccountError) as exhausted:
            client.create_video_from_text("kling-3.0", "c", resolution="4k", duration=15)
        done = client.wait(from_cash)
        end = kling.sim.clock.now_ms()
        units = client.get_billing_package(end - 60_000, end)
        cash = client.get_billing_balance(end - 60_000, end, api_key_name="api-key-1")
    assert exhausted.value.code == 1101
    assert [(r.task_id, r.charge_type, r.amount) for r in units.records] == [
        (from_pack.task_id, ChargeType.UNIT, Decimal(6))
    ]
    [row] = cash.records
    assert (row.task_id, row.charge_type, row.amount, row.currency) == (
        from_cash.task_id,
        ChargeType.CASH,
        Decimal("0.42"),
        "USD",
    )
    assert row.list_price == Decimal("0.84") and row.api_key_name == "api-key-1"
    assert done.charged_units_milli == 0 and done.charges[0].charge_type is ChargeType.CASH


def test_a_lost_create_answer_is_found_by_external_id() -> None:
    """A 2026 create answered 5002 after the task was made is found on /tasks by external id: one task, one charge."""
    with connected() as (kling, client):
        rule = kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path="/text-to-video", method="POST")
        job = client.create_video_from_text("kling-3.0", "a fox", resolution="1080p", duration=5, audio="native")
        done = client.wait(job)
    assert rule.fired == 1
    assert [t.task_id for t in kling.sim.tasks()] == [done.task_id]
    assert done.charged_units_milli == 6000 and kling.sim.remaining("video") == 1000 - 6


def test_enforced_client_holds_the_dearest_reading_and_commits_what_the_simulator_charged(tmp_path: Path) -> None:
    """Without a resolution the hold is the 4k price; Kling (here the simulator) bills its 1080p omni default."""
    tracker = CostTracker(str(tmp_path / "ledger.db"))
    tracker.set_budget("ads", project_id="ads", limit_units=100)
    refer = [{"type": "refer_image", "url": "https://x/fox.png", "id": "image_1"}]
    with connected() as (kling, client), BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced:
        exact = enforced.create_omni_video(
            "kling-3.0-omni", refer, prompt="a fox in <<<image_1>>>", resolution="720p", duration=8
        )
        open_ended = enforced.create_omni_video("kling-3.0-omni", refer, prompt="a fox", duration=8)
        held = (exact.held_units, open_ended.held_units)
        exact.wait()
        open_ended.wait()
    tracker.close()
    assert held == (Decimal("4.8"), Decimal(24))
    assert (exact.charged_units, open_ended.charged_units) == (Decimal("4.8"), Decimal("6.4"))
    assert kling.sim.remaining("video") == 1000 - Decimal("11.2")
