"""KlingClient / AsyncKlingClient against the Kling simulator over real HTTP on loopback.

The simulator runs on a ManualClock; the client's clock reads it and the client's sleep advances it, so
polling, backoff and token lifetimes take no wall time and are deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kling_budget.errors import (
    KlingAuthError,
    KlingPackExhaustedError,
    KlingParameterError,
    KlingTaskNotFoundError,
)
from kling_budget.kling import AsyncKlingClient, ChargeType, Endpoint, KlingClient, TaskStatus
from kling_budget.money import units_to_milli
from kling_budget.simulator import (
    FaultKind,
    ManualClock,
    RunningSimulator,
    SimulatorConfig,
    running_simulator,
)

T2V = "/v1/videos/text2video"
PROMPT = {"prompt": "a red fox in the snow", "model_name": "kling-v2-6", "mode": "pro", "duration": 5}


class SimTime:
    """The client's view of the simulator's manual clock; ``lag`` makes the client's clock run behind."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.lag = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.clock.now_ms() / 1000 - self.lag

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """A simulator on a manual clock with default packs."""
    with running_simulator(SimulatorConfig.single(), clock=ManualClock()) as running:
        yield running


def client_for(kling: RunningSimulator, **options: Any) -> tuple[KlingClient, SimTime]:
    assert isinstance(kling.sim.clock, ManualClock)
    time = SimTime(kling.sim.clock)
    client = KlingClient(
        kling.access_key,
        kling.secret_key,
        base_url=kling.base_url,
        clock=time,
        sleep=time.sleep,
        jitter=lambda: 0.5,
        timeout=10,
        **options,
    )
    return client, time


def test_create_wait_reports_the_charged_units(kling: RunningSimulator) -> None:
    """create -> wait returns the succeeded task with the units the simulator deducted, exactly."""
    client, _ = client_for(kling)
    before = kling.sim.remaining("video")
    with client:
        task = client.create_text_to_video(**PROMPT)
        assert task.status is TaskStatus.SUBMITTED and task.charged_units_milli is None
        seen: list[TaskStatus] = []
        done = client.wait(task, poll_interval=0.1, on_progress=lambda t: seen.append(t.status))
    view = kling.sim.task(task.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.charged_units_milli == units_to_milli(view.charged_units) > 0
    assert before - kling.sim.remaining("video") == done.charged_units
    assert done.video_urls and seen[-1] is TaskStatus.SUCCEEDED
    assert TaskStatus.PROCESSING in seen


def test_failed_task_is_charged_zero(kling: RunningSimulator) -> None:
    """A task that fails reports status_message and a charge of 0; the pack is untouched."""
    kling.sim.script.fail_next(1, "content moderation")
    client, _ = client_for(kling)
    before = kling.sim.remaining("video")
    with client:
        done = client.wait(client.create_text_to_video(**PROMPT), poll_interval=0.1)
    assert done.status is TaskStatus.FAILED
    assert done.status_message == "content moderation"
    assert done.charged_units_milli == 0
    assert kling.sim.remaining("video") == before


def test_pack_exhausted_is_1102_without_a_task() -> None:
    """A create the video pack cannot cover raises KlingPackExhaustedError at once; no task exists."""
    config = SimulatorConfig.single(packs={"video": "1"})
    with running_simulator(config, clock=ManualClock()) as kling:
        client, time = client_for(kling)
        with client, pytest.raises(KlingPackExhaustedError) as info:
            client.create_text_to_video(**PROMPT)
        assert (info.value.code, info.value.http_status) == (1102, 429)
        assert info.value.request_id
        assert kling.sim.tasks() == []
        assert time.sleeps == []


def test_concurrency_limit_1303_is_retried_until_a_slot_frees() -> None:
    """With one concurrency slot a second create gets 1303, backs off and succeeds once the first ends."""
    config = SimulatorConfig.single(concurrency=1)
    with running_simulator(config, clock=ManualClock()) as kling:
        client, time = client_for(kling)
        with client:
            first = client.create_text_to_video(**PROMPT)
            second = client.create_text_to_video(**PROMPT)
        assert first.task_id != second.task_id
        assert len(kling.sim.tasks()) == 2
        assert time.sleeps and all(s >= 1.0 for s in time.sleeps)


@pytest.mark.parametrize("fault", [FaultKind.TIMEOUT_5002, FaultKind.TRUNCATE])
def test_ambiguous_create_is_charged_once(kling: RunningSimulator, fault: FaultKind) -> None:
    """5002 or a truncated answer after the task was made: the client finds it; exactly one task, one charge."""
    rule = kling.sim.faults.inject(fault, path=T2V, method="POST")
    client, _ = client_for(kling)
    before = kling.sim.remaining("video")
    with client:
        task = client.create_text_to_video(**PROMPT, external_task_id="order-42")
        done = client.wait(task, poll_interval=0.1)
    assert rule.fired == 1
    tasks = kling.sim.tasks()
    assert [t.task_id for t in tasks] == [task.task_id]
    assert tasks[0].external_task_id == "order-42" == done.external_task_id
    assert before - kling.sim.remaining("video") == done.charged_units > 0


def test_dropped_create_is_resubmitted_once(kling: RunningSimulator) -> None:
    """A connection dropped before processing: lookup says absent, one resubmission, one task."""
    rule = kling.sim.faults.inject(FaultKind.DROP, path=T2V, method="POST")
    client, _ = client_for(kling)
    with client:
        task = client.create_text_to_video(**PROMPT)
    assert rule.fired == 1
    assert [t.task_id for t in kling.sim.tasks()] == [task.task_id]


def test_persistent_ambiguity_raises_and_keeps_the_external_id(kling: RunningSimulator) -> None:
    """5002 on every create and every lookup: KlingAmbiguousCreateError; the one real task is findable."""
    from kling_budget.errors import KlingAmbiguousCreateError

    kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, count=None)
    client, _ = client_for(kling, max_retries=1)
    with client, pytest.raises(KlingAmbiguousCreateError) as info:
        client.create_text_to_video(**PROMPT, external_task_id="order-7")
    assert info.value.external_task_id == "order-7"
    tasks = kling.sim.tasks()
    assert len(tasks) == 1 and tasks[0].external_task_id == "order-7"
    kling.sim.faults.clear()
    with client_for(kling)[0] as again:
        assert again.get_task(external_task_id="order-7").task_id == tasks[0].task_id


@pytest.mark.parametrize("fault", [FaultKind.TRUNCATE, FaultKind.PLAIN_500, FaultKind.ERROR_5000])
def test_broken_query_answers_are_retried(kling: RunningSimulator, fault: FaultKind) -> None:
    """Truncated, plain-text 500 and 5000 answers to a query are retried transparently."""
    client, _ = client_for(kling)
    with client:
        task = client.create_text_to_video(**PROMPT)
        rule = kling.sim.faults.inject(fault, path=T2V, method="GET", count=2)
        again = client.get_task(task.task_id)
    assert rule.fired == 2
    assert again.task_id == task.task_id


def test_query_by_external_id_list_and_missing(kling: RunningSimulator) -> None:
    """Tasks are found by external id and listed; an unknown id raises KlingTaskNotFoundError."""
    client, _ = client_for(kling)
    with client:
        task = client.create_image_generation(prompt="a cat", n=2, external_task_id="img-1")
        found = client.get_task(external_task_id="img-1", endpoint=Endpoint.IMAGE_GENERATION)
        listed = client.list_tasks(Endpoint.IMAGE_GENERATION, page_size=10)
        with pytest.raises(KlingTaskNotFoundError):
            client.get_task("no-such-task")
        done = client.wait(found, poll_interval=0.1)
    assert found.task_id == task.task_id == listed[0].task_id
    assert len(done.image_urls) == 2


def test_duplicate_external_id_is_a_parameter_error(kling: RunningSimulator) -> None:
    """Reusing an external_task_id is refused by Kling as 1201 and raised, not retried."""
    client, _ = client_for(kling)
    with client:
        client.create_text_to_video(**PROMPT, external_task_id="dup")
        with pytest.raises(KlingParameterError) as info:
            client.create_text_to_video(**PROMPT, external_task_id="dup")
    assert info.value.code == 1201
    assert len(kling.sim.tasks()) == 1


def test_expired_token_is_resigned(kling: RunningSimulator, caplog: pytest.LogCaptureFixture) -> None:
    """A cached token the simulator finds expired (1004) is re-signed once and the call succeeds."""
    caplog.set_level(logging.DEBUG, logger="kling_budget.kling")
    client, time = client_for(kling)
    with client:
        client.list_tasks()
        kling.sim.clock.advance(1801)
        time.lag = 1700  # the client's clock thinks its cached token is still fresh
        assert client.list_tasks() == []
    codes = [getattr(r, "kling_code", None) for r in caplog.records if hasattr(r, "kling_code")]
    assert codes == [0, 1004, 0]


def test_bad_secret_is_an_auth_error(kling: RunningSimulator) -> None:
    """A wrong secret key gives KlingAuthError (1000) without retries."""
    assert kling.access_key is not None
    with (
        KlingClient(kling.access_key, "wrong-secret", base_url=kling.base_url) as client,
        pytest.raises(KlingAuthError) as info,
    ):
        client.list_tasks()
    assert info.value.code == 1000


def test_api_key_auth() -> None:
    """A console API key works as a Bearer token."""
    config = SimulatorConfig.single(api_keys=("sim-api-key-1",))
    with (
        running_simulator(config, clock=ManualClock()) as kling,
        KlingClient(api_key="sim-api-key-1", base_url=kling.base_url) as client,
    ):
        assert client.list_tasks() == []


def test_new_status_names_and_billing(kling: RunningSimulator) -> None:
    """With `succeeded` and billing[] switched on, the charge comes from billing and matches the pack."""
    kling.sim.configure(new_status_names=True, report_billing=True)
    client, _ = client_for(kling)
    with client:
        done = client.wait(client.create_text_to_video(**PROMPT), poll_interval=0.1)
    assert done.raw["task_status"] == "succeeded"
    assert done.status is TaskStatus.SUCCEEDED
    assert done.charges[0].charge_type is ChargeType.UNIT and done.charges[0].package_type == "video"
    assert done.charged_units_milli == units_to_milli(kling.sim.task(done.task_id).charged_units)


def test_account_costs(kling: RunningSimulator) -> None:
    """/account/costs yields exact Decimal quantities and aware datetimes."""
    client, time = client_for(kling)
    now = datetime.fromtimestamp(int(time()), tz=UTC)
    with client:
        packs = client.get_account_costs(now - timedelta(days=30), now + timedelta(days=30))
    video = next(p for p in packs if "Video" in p.name)
    assert video.total_quantity == Decimal(1000) and isinstance(video.remaining_quantity, Decimal)
    assert video.invalid_time is not None and video.invalid_time.tzinfo is not None
    assert video.status == "online"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_client_parity(kling: RunningSimulator) -> None:
    """The async client creates through a 5002, waits and reports the one charge, like the sync one."""
    assert isinstance(kling.sim.clock, ManualClock)
    time = SimTime(kling.sim.clock)
    kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST")
    before = kling.sim.remaining("video")
    async with AsyncKlingClient(
        kling.access_key,
        kling.secret_key,
        base_url=kling.base_url,
        clock=time,
        sleep=time.async_sleep,
        jitter=lambda: 0.5,
        timeout=10,
    ) as client:
        task = await client.create_text_to_video(**PROMPT)
        done = await client.wait(task, poll_interval=0.1)
        with pytest.raises(KlingTaskNotFoundError):
            await client.get_task("missing")
    assert len(kling.sim.tasks()) == 1
    assert done.status is TaskStatus.SUCCEEDED
    assert before - kling.sim.remaining("video") == done.charged_units > 0
