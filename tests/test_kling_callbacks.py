"""CallbackHandler against the Kling simulator's real callbacks: signatures, hints, duplicates, reordering, races."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import pytest

from kling_budget import CostTracker
from kling_budget.enforced import AsyncCallbackHandler, BudgetEnforcedClient, CallbackHandler, CallbackResult
from kling_budget.enforced.settle import SettleAction
from kling_budget.kling.webhooks import sign_webhook
from kling_budget.ledger import ReservationState
from kling_budget.simulator import FaultKind, RunningSimulator, SimulatorConfig, running_simulator
from tests.jobfixtures import (
    T2V,
    async_client_for,
    callback_endpoint,
    client_for,
    entry_kinds,
    manual_sim,
)
from tests.simfixtures import sim_client

SECRET = "whsec_" + base64.b64encode(b"kling-budget-callback-secret-32b").decode()


@pytest.fixture
def tracker(ledger_url: str) -> Iterator[CostTracker]:
    """A tracker on a fresh ledger (SQLite and PostgreSQL) with a 100-unit budget on project "ads"."""
    opened = CostTracker(ledger_url)
    opened.set_budget("ads", project_id="ads", limit_units=100)
    yield opened
    opened.close()


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """A simulator on a manual clock that signs its callbacks."""
    with manual_sim(SimulatorConfig.single(webhook_secret=SECRET)) as running:
        yield running


def signed(body: bytes, msg_id: str = "msg_test", secret: str = SECRET, stamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body``."""
    when = int(time.time()) if stamp is None else stamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(when),
        "webhook-signature": sign_webhook(secret, msg_id, when, body),
    }


def kling_task_body(kling: RunningSimulator, task_id: str) -> bytes:
    """The task exactly as Kling reports it now (what a callback for its current status carries)."""
    with sim_client(kling) as http:
        return json.dumps(http.get(f"{T2V}/{task_id}").json()["data"]).encode()


def test_callbacks_settle_the_job_from_klings_answer(tracker: CostTracker, kling: RunningSimulator) -> None:
    """Signed callbacks on each status change record the task while it runs and commit Kling's units at the end."""
    results: list[CallbackResult] = []
    with client_for(kling) as client:
        handler = CallbackHandler(tracker, client, webhook_secret=SECRET)

        def handle(body: bytes, headers: dict[str, str]) -> CallbackResult:
            results.append(handler.handle(body, headers))
            return results[-1]

        with (
            callback_endpoint(handle) as url,
            BudgetEnforcedClient(tracker, client=client, project_id="ads", callback_url=url) as enforced,
        ):
            job = enforced.generate_video("a fox [sim:charge=2]", model="kling-v2-6")
            kling.sim.wait_for_deliveries(1)
            kling.sim.clock.advance(0.2)  # type: ignore[attr-defined]
            kling.sim.wait_for_deliveries(2)
            kling.sim.clock.advance(0.5)  # type: ignore[attr-defined]
            deliveries = kling.sim.wait_for_deliveries(3)
    assert [d.http_status for d in deliveries] == [200, 200, 200]
    assert [r.outcome.action for r in results if r.outcome] == [
        SettleAction.RUNNING,
        SettleAction.RUNNING,
        SettleAction.COMMITTED,
    ]
    info = tracker.ledger.get_reservation(job.reservation_id)
    assert (info.state, info.actual_milli, info.task_id) == (ReservationState.COMMITTED, 2000, job.task_id)


def test_bad_or_missing_signature_is_rejected_before_anything_else(
    tracker: CostTracker, kling: RunningSimulator
) -> None:
    """Wrong secret, tampered body, stale timestamp or no headers: 401, no Kling query, ledger untouched."""
    with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced:
        job = enforced.generate_video("a fox", model="kling-v2-6")
        kling.sim.clock.advance(1)  # type: ignore[attr-defined]
        body = kling_task_body(kling, job.task_id)
        queries = kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="GET", count=None)
        handler = CallbackHandler(tracker, client, webhook_secret=SECRET)
        other = "whsec_" + base64.b64encode(b"some-other-secret-of-32-bytes-xx").decode()
        attempts = [
            (body, signed(body, secret=other)),
            (body.replace(b'"succeed"', b'"failed"'), signed(body)),
            (body, signed(body, stamp=int(time.time()) - 3600)),
            (body, {}),
        ]
        answers = [handler.handle(raw, headers) for raw, headers in attempts]
    assert [a.status_code for a in answers] == [401, 401, 401, 401]
    assert all(a.outcome is None and SECRET not in a.body for a in answers)
    assert queries.fired == 0
    assert tracker.ledger.get_reservation(job.reservation_id).state is ReservationState.SUBMITTED
    assert SECRET not in repr(handler)


def test_duplicate_and_out_of_order_callbacks_commit_once(tracker: CostTracker, kling: RunningSimulator) -> None:
    """Every notification twice, newest first: one commit, later stale hints change nothing."""
    kling.sim.callbacks.duplicate = True
    kling.sim.callbacks.reorder = True
    results: list[CallbackResult] = []
    with client_for(kling) as client:
        handler = CallbackHandler(tracker, client, webhook_secret=SECRET)

        def handle(body: bytes, headers: dict[str, str]) -> CallbackResult:
            results.append(handler.handle(body, headers))
            return results[-1]

        with (
            callback_endpoint(handle) as url,
            BudgetEnforcedClient(tracker, client=client, project_id="ads", callback_url=url) as enforced,
        ):
            job = enforced.generate_video("a fox", model="kling-v2-6")
            kling.sim.clock.advance(1)  # type: ignore[attr-defined]
            deliveries = kling.sim.wait_for_deliveries(6)
        replay = CallbackHandler(tracker, client)  # no webhook-id memory: the ledger alone keeps it idempotent
        again = replay.handle(deliveries[0].body, {})
    statuses = [json.loads(d.body)["task_status"] for d in deliveries]
    assert statuses == ["succeed", "succeed", "processing", "processing", "submitted", "submitted"]
    assert all(d.http_status == 200 for d in deliveries)
    actions = [r.outcome.action.value if r.outcome else "duplicate" for r in results]
    assert actions == ["committed", "duplicate", "already_committed", "duplicate", "already_committed", "duplicate"]
    assert again.outcome is not None and again.outcome.action is SettleAction.ALREADY_COMMITTED
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]


def test_callback_is_only_a_hint(tracker: CostTracker, kling: RunningSimulator) -> None:
    """A forged 'succeeded, 99 units' or 'failed' body for a running task changes nothing: Kling says running."""
    with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced:
        job = enforced.generate_video("a slow fox [sim:running=60]", model="kling-v2-6")
        handler = CallbackHandler(tracker, client)  # no secret configured: anyone can post
        forged = [
            {"task_id": job.task_id, "task_status": "succeed", "final_unit_deduction": "99"},
            {"task_id": job.task_id, "task_status": "failed", "task_status_msg": "x"},
            {"task_id": "1", "task_status": "failed", "task_info": {"external_task_id": job.reservation_id}},
        ]
        answers = [handler.handle(json.dumps(body).encode(), {}) for body in forged]
        assert [a.outcome.action for a in answers if a.outcome] == [SettleAction.RUNNING] * 3
        assert tracker.ledger.get_reservation(job.reservation_id).state is ReservationState.SUBMITTED
        job.wait(timeout=600, poll_interval=5)
    assert tracker.ledger.get_reservation(job.reservation_id).actual_milli == 1500


def test_unknown_tasks_and_unreadable_bodies(tracker: CostTracker, kling: RunningSimulator) -> None:
    """A task no reservation belongs to is acknowledged and ignored; a body that is not a task is a 400."""
    with client_for(kling) as client:
        handler = CallbackHandler(tracker, client)
        unknown = handler.handle(b'{"task_id": "123", "task_status": "succeed"}', {})
        unreadable = handler.handle(b"not json", {})
    assert (unknown.status_code, unknown.outcome) == (200, None) and unknown.body.startswith("ignored")
    assert unreadable.status_code == 400


def test_kling_unreachable_answers_503_and_changes_nothing(tracker: CostTracker, kling: RunningSimulator) -> None:
    """When the task cannot be confirmed with Kling the handler answers 503 (retry later) and settles nothing."""
    with (
        client_for(kling, max_retries=0) as client,
        BudgetEnforcedClient(tracker, client=client, project_id="ads") as e,
    ):
        job = e.generate_video("a fox", model="kling-v2-6")
        kling.sim.clock.advance(1)  # type: ignore[attr-defined]
        body = kling_task_body(kling, job.task_id)
        kling.sim.faults.inject(FaultKind.UNAVAILABLE_5001, path=T2V, method="GET", count=1)
        answer = CallbackHandler(tracker, client).handle(body, {})
    assert answer.status_code == 503
    assert tracker.ledger.get_reservation(job.reservation_id).state is ReservationState.SUBMITTED


def test_polling_and_callbacks_racing_commit_exactly_once(ledger_url: str) -> None:
    """wait() polling and eight concurrent signed callbacks for the finished task: one commit, the rest replays."""
    tracker = CostTracker(ledger_url)
    config = SimulatorConfig.single(webhook_secret=SECRET, queued_seconds=0.01, running_seconds=0.02)
    with running_simulator(config) as kling, client_for(kling) as client:
        with BudgetEnforcedClient(tracker, client=client) as enforced:
            job = enforced.generate_video("a fox [sim:charge=3]", model="kling-v2-6")
        deadline = time.monotonic() + 10
        while kling.sim.task(job.task_id).status != "succeed":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        body = kling_task_body(kling, job.task_id)
        handler = CallbackHandler(tracker, client, webhook_secret=SECRET)
        barrier = threading.Barrier(9)
        outcomes: list[str] = []
        lock = threading.Lock()

        def callback(n: int) -> None:
            barrier.wait()
            result = handler.handle(body, signed(body, msg_id=f"msg_{n}"))
            with lock:
                outcomes.append(result.outcome.action.value if result.outcome else f"http {result.status_code}")

        def poll() -> None:
            barrier.wait()
            job.wait(timeout=10, poll_interval=0.01)
            assert job.outcome is not None
            with lock:
                outcomes.append(job.outcome.action.value)

        threads = [threading.Thread(target=callback, args=(n,)) for n in range(8)]
        threads.append(threading.Thread(target=poll))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert sorted(outcomes) == ["already_committed"] * 8 + ["committed"]
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]
    assert tracker.ledger.get_reservation(job.reservation_id).actual_milli == 3000
    assert tracker.verify().ok
    tracker.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_handler_settles_a_signed_callback(tracker: CostTracker, kling: RunningSimulator) -> None:
    """The async handler verifies, re-queries with the async client and commits, like the blocking one."""
    with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced:
        job = enforced.generate_video("a fox", model="kling-v2-6")
    kling.sim.clock.advance(1)  # type: ignore[attr-defined]
    body = kling_task_body(kling, job.task_id)
    async with async_client_for(kling) as async_client:
        handler = AsyncCallbackHandler(tracker, async_client, webhook_secret=SECRET)
        refused = await handler.handle(body, {"webhook-id": "x"})
        done = await handler.handle(body, signed(body, msg_id="msg_a"))
        duplicate = await handler.handle(body, signed(body, msg_id="msg_a"))
    assert refused.status_code == 401
    assert done.outcome is not None and done.outcome.action is SettleAction.COMMITTED
    assert duplicate.duplicate and duplicate.outcome is None
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]
