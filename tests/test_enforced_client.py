"""BudgetEnforcedClient against the Kling simulator over real HTTP: reserve, submit, settle on Kling's charge."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from kling_budget import CostTracker
from kling_budget.enforced import AsyncBudgetEnforcedClient, BudgetEnforcedClient
from kling_budget.enforced.settle import SettleAction
from kling_budget.errors import (
    BudgetExceededError,
    KlingAccountError,
    KlingAmbiguousCreateError,
    KlingAuthError,
    KlingConnectError,
    KlingPackExhaustedError,
    KlingParameterError,
    KlingPolicyError,
    KlingRateLimitError,
    KlingWaitTimeoutError,
    ReservationResolvedError,
    UnknownModelError,
)
from kling_budget.kling import KlingClient, TaskStatus
from kling_budget.ledger import ReservationState
from kling_budget.reconcile import ReconcileAction, reconcile_jobs
from kling_budget.simulator import FaultKind, RunningSimulator, SimulatorConfig
from tests.jobfixtures import (
    T2V,
    alert_kinds,
    async_client_for,
    client_for,
    create_sentinel,
    entry_kinds,
    held_units_milli,
    manual_sim,
    tracker_at,
)


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """A simulator on a manual clock with default packs."""
    with manual_sim() as running:
        yield running


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[CostTracker]:
    """A tracker with a 100-unit monthly budget on project "ads"."""
    opened = tracker_at(tmp_path)
    opened.set_budget("ads", project_id="ads", limit_units=100)
    yield opened
    opened.close()


@contextmanager
def enforced(tracker: CostTracker, kling: RunningSimulator, **options: object) -> Iterator[BudgetEnforcedClient]:
    """An enforced client for project "ads" on a simulator client, both closed afterwards."""
    with client_for(kling, **options) as client, BudgetEnforcedClient(tracker, client=client, project_id="ads") as kb:
        yield kb


def test_generate_video_holds_the_quote_then_commits_klings_units(
    tracker: CostTracker, kling: RunningSimulator
) -> None:
    """The quote is held while the task runs (submitted, with Kling's task id) and committed with Kling's units."""
    with enforced(tracker, kling) as client:
        job = client.generate_video("a red fox in the snow", duration=5, model="kling-v2.6")
        info = job.reservation
        assert (info.state, info.task_id, info.units_milli) == (ReservationState.SUBMITTED, job.task_id, 1500)
        assert held_units_milli(tracker, "ads") == 1500
        assert kling.sim.task(job.task_id).external_task_id == job.reservation_id
        task = job.wait(poll_interval=1)
    assert task.status is TaskStatus.SUCCEEDED and task.video_urls
    assert job.outcome is not None and job.outcome.action is SettleAction.COMMITTED
    assert job.charged_units == Decimal("1.5") == Decimal(kling.sim.task(job.task_id).charged_units)
    assert job.reservation.state is ReservationState.COMMITTED
    assert held_units_milli(tracker, "ads") == 0
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]


def test_charge_above_the_hold_is_committed_as_overage_and_alerted(
    tracker: CostTracker, kling: RunningSimulator
) -> None:
    """When Kling charges more than quoted, its units are committed, the excess is overage and an alert fires."""
    with enforced(tracker, kling) as client:
        job = client.generate_video("a fox [sim:charge=4]", model="kling-v2-6")
        job.wait(poll_interval=1)
    info = job.reservation
    assert (info.actual_milli, info.overage_milli) == (4000, 2500)
    assert tracker.budget_status("ads").counters.committed_milli == 4000
    assert "overage" in alert_kinds(tracker)


def test_denial_raises_before_any_http_call(tracker: CostTracker, kling: RunningSimulator) -> None:
    """A hard budget with no room raises BudgetExceededError and no create ever reaches Kling."""
    tracker.set_budget("tiny", project_id="ads", limit_units=1)
    sentinel = create_sentinel(kling)
    with enforced(tracker, kling) as client, pytest.raises(BudgetExceededError) as denied:
        client.generate_video("a fox", model="kling-v2-6")
    assert denied.value.denial is not None and denied.value.denial.budget == "tiny"
    assert sentinel.fired == 0 and kling.sim.tasks() == []
    assert tracker.ledger.list_reservations()[0].state is ReservationState.DENIED


def test_unpriceable_request_raises_before_reserving_or_sending(tracker: CostTracker, kling: RunningSimulator) -> None:
    """A model the price table does not know is a PricingError: nothing reserved, nothing sent."""
    sentinel = create_sentinel(kling)
    with enforced(tracker, kling) as client, pytest.raises(UnknownModelError):
        client.generate_video("a fox", model="kling-v99")
    assert sentinel.fired == 0 and tracker.ledger.list_reservations() == []


REJECTIONS = [
    ("auth", KlingAuthError, {"secret_key": "not-the-secret"}, "a fox", "kling-v2-6"),
    ("1201", KlingParameterError, {}, "a fox", "kling-v2-6"),
    ("1203", KlingParameterError, {}, "a fox", "kling-v1-5"),
    ("1301", KlingPolicyError, {}, "a fox [sim:reject=1301]", "kling-v2-6"),
    ("1103", KlingAccountError, {}, "a fox [sim:reject=1103]", "kling-v2-6"),
]


@pytest.mark.parametrize(("case", "error", "options", "prompt", "model"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_definite_rejection_releases_the_hold(
    tracker: CostTracker,
    kling: RunningSimulator,
    case: str,
    error: type[Exception],
    options: dict[str, object],
    prompt: str,
    model: str,
) -> None:
    """Kling refusing a create outright (auth, parameters, unknown model, policy, access) releases the hold."""
    extra = {"aspect_ratio": "4:3"} if case == "1201" else {}
    with enforced(tracker, kling, **options) as client, pytest.raises(error):
        client.generate_video(prompt, model=model, **extra)
    (info,) = tracker.ledger.list_reservations()
    assert info.state is ReservationState.RELEASED
    assert info.detail["release_reason"].startswith("Kling rejected the create")
    assert held_units_milli(tracker, "ads") == 0 and kling.sim.tasks() == []


def test_pack_exhausted_releases_and_alerts_once_per_hour(tmp_path: Path) -> None:
    """1102 releases the hold and raises one upstream_pack_exhausted alert, not one per rejected job."""
    tracker = tracker_at(tmp_path)
    with manual_sim(SimulatorConfig.single(packs={"video": "1"})) as kling, enforced(tracker, kling) as client:
        for _ in range(2):
            with pytest.raises(KlingPackExhaustedError):
                client.generate_video("a fox", model="kling-v2-6")
    assert {i.state for i in tracker.ledger.list_reservations()} == {ReservationState.RELEASED}
    assert alert_kinds(tracker).count("upstream_pack_exhausted") == 1
    tracker.close()


def test_concurrency_limit_after_retries_releases_the_hold(tmp_path: Path) -> None:
    """1303 (parallel tasks over the pack's quota) is retried with backoff, then the hold is released."""
    tracker = tracker_at(tmp_path)
    with manual_sim(SimulatorConfig.single(concurrency=1)) as kling, enforced(tracker, kling) as client:
        running = client.generate_video("a long fox [sim:running=100000]", model="kling-v2-6")
        with pytest.raises(KlingRateLimitError):
            client.generate_video("a second fox", model="kling-v2-6")
    states = {i.id: i.state for i in tracker.ledger.list_reservations()}
    assert states.pop(running.reservation_id) is ReservationState.SUBMITTED
    assert list(states.values()) == [ReservationState.RELEASED]
    tracker.close()


def test_connect_error_releases_the_hold(tracker: CostTracker) -> None:
    """A create that could never connect was never sent, so its hold is released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = KlingClient("ak", "sk", base_url=f"http://127.0.0.1:{port}", max_retries=1, sleep=lambda s: None)
    with BudgetEnforcedClient(tracker, client=client, project_id="ads") as kling, pytest.raises(KlingConnectError):
        kling.generate_video("a fox", model="kling-v2-6")
    assert tracker.ledger.list_reservations()[0].state is ReservationState.RELEASED
    client.close()


def test_ambiguous_5002_after_create_is_charged_once_and_settled_once(
    tracker: CostTracker, kling: RunningSimulator
) -> None:
    """Task created but answered 5002: the client finds it by external_task_id; one task, one charge, one commit."""
    kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST", count=1)
    with enforced(tracker, kling) as client:
        job = client.generate_video("a fox", model="kling-v2-6")
        job.wait(poll_interval=1)
    (task,) = kling.sim.tasks()
    assert task.task_id == job.task_id and task.external_task_id == job.reservation_id
    assert kling.sim.remaining("video") == Decimal(1000) - Decimal("1.5")
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]


def test_unresolvable_create_keeps_the_hold_until_reconcile(tracker: CostTracker, kling: RunningSimulator) -> None:
    """5002 on create and every lookup failing: the hold stays submitted, and reconcile commits Kling's charge once."""
    kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST", count=1)
    lookups = kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="GET", count=None)
    client = client_for(kling, max_retries=1)
    with (
        BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced_client,
        pytest.raises(KlingAmbiguousCreateError) as ambiguous,
    ):
        enforced_client.generate_video("a fox [sim:charge=2]", model="kling-v2-6")
    key = ambiguous.value.external_task_id
    assert tracker.ledger.get_reservation(key).state is ReservationState.SUBMITTED
    assert held_units_milli(tracker, "ads") == 1500
    kling.sim.faults.clear()
    assert lookups.fired > 0
    kling.sim.clock.advance(5)  # type: ignore[attr-defined]
    (item,) = reconcile_jobs(tracker, client)
    assert item.action is ReconcileAction.COMMITTED and item.charged_milli == 2000
    assert len(kling.sim.tasks()) == 1 and entry_kinds(tracker, key) == ["reserve", "commit"]
    assert reconcile_jobs(tracker, client) == []
    client.close()


def test_server_errors_on_every_create_keep_the_hold(tracker: CostTracker, kling: RunningSimulator) -> None:
    """5000 on every create may hide a created task: the hold is kept, then reconcile reports it missing."""
    kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="POST", count=None)
    client = client_for(kling, max_retries=1)
    with (
        BudgetEnforcedClient(tracker, client=client, project_id="ads") as enforced_client,
        pytest.raises(KlingAmbiguousCreateError) as ambiguous,
    ):
        enforced_client.generate_video("a fox", model="kling-v2-6")
    assert ambiguous.value.code == 5000
    (item,) = reconcile_jobs(tracker, client)
    assert item.action is ReconcileAction.MISSING and item.needs_attention
    assert tracker.ledger.get_reservation(ambiguous.value.external_task_id).state is ReservationState.SUBMITTED
    client.close()


def test_failed_task_releases_the_hold(tracker: CostTracker, kling: RunningSimulator) -> None:
    """Kling failing a task (never charged) releases the hold with Kling's reason."""
    with enforced(tracker, kling) as client:
        job = client.generate_video("a fox [sim:fail=content moderation]", model="kling-v2-6")
        task = job.wait(poll_interval=1)
    assert task.status is TaskStatus.FAILED
    assert job.outcome is not None and job.outcome.action is SettleAction.RELEASED
    info = job.reservation
    assert info.state is ReservationState.RELEASED and "content moderation" in info.detail["release_reason"]
    assert held_units_milli(tracker, "ads") == 0 and tracker.budget_status("ads").counters.committed_milli == 0


def test_wait_timeout_keeps_the_hold_and_a_later_wait_settles(tracker: CostTracker, kling: RunningSimulator) -> None:
    """A wait that times out leaves the hold submitted; waiting again settles it."""
    with enforced(tracker, kling) as client:
        job = client.generate_video("a slow fox [sim:running=60]", model="kling-v2-6")
        with pytest.raises(KlingWaitTimeoutError):
            job.wait(timeout=5, poll_interval=1)
        assert job.reservation.state is ReservationState.SUBMITTED
        job.wait(timeout=600, poll_interval=5)
    assert job.reservation.state is ReservationState.COMMITTED


def test_own_external_task_id_is_the_key_and_a_retry_resumes_the_job(
    tracker: CostTracker, kling: RunningSimulator
) -> None:
    """The caller's external_task_id becomes the reservation id; calling again resumes instead of paying twice."""
    with enforced(tracker, kling) as client:
        first = client.generate_video("a fox", model="kling-v2-6", external_task_id="order-42")
        again = client.generate_video("a fox", model="kling-v2-6", external_task_id="order-42")
        assert first.reservation_id == again.reservation_id == "order-42"
        assert again.task_id == first.task_id and len(kling.sim.tasks()) == 1
        again.wait(poll_interval=1)
        done = client.generate_video("a fox", model="kling-v2-6", external_task_id="order-42")
        assert done.task_id == first.task_id and done.task.is_terminal
        resumed = client.resume("order-42")
        assert resumed.task_id == first.task_id
    assert entry_kinds(tracker, "order-42") == ["reserve", "commit"]


def test_released_key_cannot_be_reused(tracker: CostTracker, kling: RunningSimulator) -> None:
    """An external_task_id whose reservation was released is refused: a new job needs a new id."""
    with enforced(tracker, kling) as client:
        with pytest.raises(KlingPolicyError):
            client.generate_video("a fox [sim:reject=1301]", model="kling-v2-6", external_task_id="once")
        with pytest.raises(ReservationResolvedError):
            client.generate_video("a fox", model="kling-v2-6", external_task_id="once")
    assert kling.sim.tasks() == []


def test_every_product_holds_its_own_pack_type(tracker: CostTracker, kling: RunningSimulator) -> None:
    """Images, try-on, lip sync, extension and effects are held on their pack type and settled on Kling's charge."""
    with enforced(tracker, kling) as client:
        video = client.generate_video("a fox", model="kling-v2-6")
        video.wait(poll_interval=1)
        video_id = video.task.outputs[0].id
        assert video_id is not None
        jobs = [
            client.generate_image("a lighthouse", model="kling-v2", n=3),
            client.virtual_try_on("https://x.invalid/human.png", "https://x.invalid/cloth.png"),
            client.image_to_video("https://x.invalid/fox.png", "the fox turns", model="kling-v2-1"),
            client.lip_sync(mode="text2video", video_id=video_id, text="hello", voice_id="v1", input_duration=5),
            client.extend_video(video_id, source_model="kling-v1-6", source_mode="std"),
            client.effects(
                "hug", {"images": ["https://x.invalid/a.png", "https://x.invalid/b.png"], "duration": "5"}, units=3
            ),
        ]
        for job in jobs:
            job.wait(poll_interval=1)
    packs = [job.reservation.pack_type.value for job in jobs]
    assert packs == ["image", "try_on", "video", "video", "video", "video"]
    for job in jobs:
        assert job.reservation.state is ReservationState.COMMITTED, job
        assert job.reservation.actual_milli == units_of(kling, job.task_id)


IMG = "https://x.invalid/a.png"


def units_of(kling: RunningSimulator, task_id: str) -> int:
    return int(Decimal(kling.sim.task(task_id).charged_units) * 1000)


def test_no_secret_in_logs_errors_or_reprs(
    tmp_path: Path, kling: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Secret keys and tokens never appear in DEBUG logs, error texts or reprs, on success or failure."""
    caplog.set_level(logging.DEBUG)
    tracker = tracker_at(tmp_path)
    texts: list[str] = []
    wrong = "wrong-secret-value-123"
    with enforced(tracker, kling) as good, enforced(tracker, kling, secret_key=wrong) as bad:
        texts += [repr(good), repr(bad), repr(good.client)]
        job = good.generate_video("a fox", model="kling-v2-6")
        texts.append(repr(job))
        job.wait(poll_interval=1)
        with pytest.raises(KlingAuthError) as refused:
            bad.generate_video("a fox", model="kling-v2-6")
        texts.append(str(refused.value))
    tracker.close()
    everything = "\n".join([caplog.text, *texts])
    assert kling.secret_key is not None and kling.secret_key not in everything
    assert wrong not in everything and "Bearer" not in everything and "eyJ" not in everything


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_client_reserves_submits_and_settles(tracker: CostTracker, kling: RunningSimulator) -> None:
    """The async client holds, submits, commits Kling's units, releases rejections and denies before HTTP."""
    async with AsyncBudgetEnforcedClient(tracker, client=async_client_for(kling), project_id="ads") as client:
        job = await client.generate_video("a fox [sim:charge=2]", model="kling-v2-6")
        task = await job.wait(poll_interval=1)
        assert task.status is TaskStatus.SUCCEEDED and job.charged_units == Decimal(2)
        with pytest.raises(KlingPolicyError):
            await client.generate_video("a fox [sim:reject=1301]", model="kling-v2-6")
        image = await client.generate_image("a lighthouse", model="kling-v2", n=2)
        await image.wait(poll_interval=1)
        tracker.set_budget("tiny", project_id="ads", limit_units=1)
        sentinel = create_sentinel(kling)
        with pytest.raises(BudgetExceededError):
            await client.generate_video("a fox", model="kling-v2-6")
        assert sentinel.fired == 0
        await client.client.aclose()
    states = sorted(i.state.value for i in tracker.ledger.list_reservations())
    assert states == ["committed", "committed", "denied", "released"]
    assert entry_kinds(tracker, job.reservation_id) == ["reserve", "commit"]


@pytest.mark.anyio
async def test_async_lip_sync_builds_the_same_body_as_sync(tracker: CostTracker) -> None:
    """Async and sync lip sync send the same body: input fields inside ``input``, other options at the top."""
    import json

    import httpx

    from kling_budget.kling import AsyncKlingClient

    bodies: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":  # the one probe for a kling-budget gateway
            return httpx.Response(404)
        bodies.append(json.loads(request.content))
        data = {"task_id": f"t{len(bodies)}", "task_status": "submitted", "created_at": 0, "updated_at": 0}
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})

    options = {"mode": "text2video", "video_id": "v1", "text": "hi", "voice_id": "x", "input_duration": 5}
    extra = {"watermark_info": {"enabled": False}}
    with BudgetEnforcedClient(
        tracker, client=KlingClient("ak", "sk", base_url="http://kling.test", transport=httpx.MockTransport(answer))
    ) as client:
        client.lip_sync(**options, **extra)  # type: ignore[arg-type]
    transport = httpx.MockTransport(answer)
    async with AsyncBudgetEnforcedClient(
        tracker, client=AsyncKlingClient("ak", "sk", base_url="http://kling.test", transport=transport)
    ) as aclient:
        await aclient.lip_sync(**options, **extra)  # type: ignore[arg-type]
    sync_body, async_body = ({k: v for k, v in b.items() if k != "external_task_id"} for b in bodies)
    assert sync_body == async_body
    assert sync_body["watermark_info"] == {"enabled": False}
    assert sync_body["input"] == {"mode": "text2video", "video_id": "v1", "text": "hi", "voice_id": "x"}
