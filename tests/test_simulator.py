"""The Kling simulator over real loopback HTTP: auth, tasks, lifecycle, packs, concurrency, account costs."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_budget.kling.jwt import encode_token
from kling_budget.money import format_units
from kling_budget.simulator import (
    AccountConfig,
    ManualClock,
    PackConfig,
    RunningSimulator,
    SimulatorConfig,
)
from kling_budget.types import PackType
from tests.simfixtures import expect_error, raw_get, raw_post, serve, sim_client

T2V = "/v1/videos/text2video"
IMAGES = "/v1/images/generations"
TRY_ON = "/v1/images/kolors-virtual-try-on"
VIDEO_BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a cat on a boat"}
IMAGE_BODY = {"model_name": "kling-v1", "prompt": "a red bicycle", "n": 3}
TRY_ON_BODY = {
    "model_name": "kolors-virtual-try-on-v1",
    "human_image": "https://x/h.png",
    "cloth_image": "https://x/c.png",
}


def quoted(path: str, body: dict[str, Any]) -> str:
    """What the pricing module says a request costs, as Kling writes units."""
    from kling_budget.pricing import PriceTable, quote_kling_request

    return format_units(quote_kling_request(PriceTable.default(), path, body).units_milli)


@pytest.fixture
def kling() -> Iterator[tuple[RunningSimulator, ManualClock]]:
    with serve() as pair:
        yield pair


def create(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=body)
    payload: dict[str, Any] = answer.json()
    assert answer.status_code == 200 and payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


def query(client: httpx.Client, path: str, ref: str) -> dict[str, Any]:
    payload: dict[str, Any] = client.get(f"{path}/{ref}").json()
    assert payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- auth


def test_valid_jwt_is_accepted(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A token signed like Kling's sample (iss, exp, nbf; HS256) gets code 0 and an envelope."""
    sim, _ = kling
    answer = raw_get(sim.url(T2V), headers={"Authorization": f"Bearer {sim.token()}"})
    payload = answer.json()
    assert answer.status_code == 200 and payload["code"] == 0 and payload["message"] == "SUCCEED"
    assert payload["data"] == [] and payload["request_id"]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, 1001),
        ("", 1001),
        ("Bearer", 1001),
        ("Basic abc", 1002),
        ("Bearertoken", 1002),
        ("Bearer a.b", 1002),
        ("Bearer x.y.z", 1002),
        ("Bearer unknown-api-key", 1000),
    ],
)
def test_bad_authorization_headers(kling: tuple[RunningSimulator, ManualClock], header: str | None, code: int) -> None:
    """Empty headers are 1001, malformed ones 1002, unknown keys 1000; all HTTP 401."""
    sim, _ = kling
    headers = {} if header is None else {"Authorization": header}
    expect_error(raw_get(sim.url(T2V), headers=headers), 401, code)


def test_jwt_signature_and_issuer_checked(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A token signed with the wrong secret, or for an unknown access key, is 1000."""
    sim, clock = kling
    now = clock.now_ms() // 1000
    wrong_secret = encode_token("sim-access-key", "not-the-secret", now=now)
    wrong_issuer = encode_token("someone-else", "sim-secret-key", now=now)
    for token in (wrong_secret, wrong_issuer):
        expect_error(raw_get(sim.url(T2V), headers={"Authorization": f"Bearer {token}"}), 401, 1000)


def test_jwt_time_claims_checked(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """nbf in the future is 1003; exp in the past is 1004 (both follow the simulator's clock)."""
    sim, clock = kling
    now = clock.now_ms() // 1000
    early = sim.token(now=now + 600)
    late = sim.token(now=now - 4000)
    expect_error(raw_get(sim.url(T2V), headers={"Authorization": f"Bearer {early}"}), 401, 1003)
    expect_error(raw_get(sim.url(T2V), headers={"Authorization": f"Bearer {late}"}), 401, 1004)
    token = sim.token()
    clock.advance(1801)
    expect_error(raw_get(sim.url(T2V), headers={"Authorization": f"Bearer {token}"}), 401, 1004)


def test_plain_api_key_is_accepted() -> None:
    """A configured API key works as 'Bearer <api key>' and reaches the same account."""
    with serve(api_keys=("kb-test-api-key",)) as (sim, _):
        headers = {"Authorization": "Bearer kb-test-api-key"}
        created = raw_post(sim.url(T2V), headers=headers, json=VIDEO_BODY).json()
        assert created["code"] == 0
        with sim_client(sim) as client:
            assert query(client, T2V, created["data"]["task_id"])["task_status"] == "submitted"


# ---------------------------------------------------------------------------- create / query / list


def test_video_create_query_and_list(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """Create answers 'submitted'; the task is found by task_id, by external id (path or query) and listed."""
    sim, _ = kling
    with sim_client(sim) as client:
        data = create(client, T2V, {**VIDEO_BODY, "external_task_id": "job-1"})
        assert data["task_status"] == "submitted"
        assert data["task_info"] == {"external_task_id": "job-1"}
        assert data["task_id"].isdigit() and data["created_at"] == data["updated_at"]
        by_id = query(client, T2V, data["task_id"])
        by_external = query(client, T2V, "job-1")
        by_param = client.get(T2V, params={"external_task_id": "job-1"}).json()["data"]
        assert by_id == by_external == by_param
        assert by_id["task_status"] == "submitted" and by_id["final_unit_deduction"] == "0"
        assert "task_result" not in by_id
        second = create(client, T2V, VIDEO_BODY)
        listed = client.get(T2V).json()["data"]
        assert [t["task_id"] for t in listed] == [second["task_id"], data["task_id"]]
        page = client.get(T2V, params={"pageNum": 2, "pageSize": 1}).json()["data"]
        assert [t["task_id"] for t in page] == [data["task_id"]]
        assert client.get(T2V, params={"pageNum": 3, "pageSize": 1}).json()["data"] == []


@pytest.mark.parametrize(("name", "value"), [("pageNum", 0), ("pageNum", 1001), ("pageSize", 0), ("pageSize", 501)])
def test_list_page_ranges(kling: tuple[RunningSimulator, ManualClock], name: str, value: int) -> None:
    """pageNum outside [1, 1000] or pageSize outside [1, 500] is 1201."""
    sim, _ = kling
    with sim_client(sim) as client:
        assert name in expect_error(client.get(T2V, params={name: value}), 400, 1201)


def test_unknown_task_is_1203(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A task id that does not exist, or belongs to another endpoint, is 1203 (HTTP 404)."""
    sim, _ = kling
    with sim_client(sim) as client:
        expect_error(client.get(f"{T2V}/123456"), 404, 1203)
        data = create(client, T2V, VIDEO_BODY)
        expect_error(client.get(f"/v1/videos/image2video/{data['task_id']}"), 404, 1203)


def test_tasks_are_private_to_their_account() -> None:
    """Another account cannot see a task, by id or by external id."""
    accounts = (
        AccountConfig(name="a", key_pairs=(("ak-a", "sk-a"),)),
        AccountConfig(name="b", key_pairs=(("ak-b", "sk-b"),)),
    )
    with serve(SimulatorConfig(accounts=accounts)) as (sim, clock):
        with sim_client(sim) as client:
            data = create(client, T2V, {**VIDEO_BODY, "external_task_id": "shared-name"})
        token_b = encode_token("ak-b", "sk-b", now=clock.now_ms() // 1000)
        other = httpx.Client(base_url=sim.base_url, verify=False, headers={"Authorization": f"Bearer {token_b}"})
        with other:
            expect_error(other.get(f"{T2V}/{data['task_id']}"), 404, 1203)
            expect_error(other.get(f"{T2V}/shared-name"), 404, 1203)
            assert other.post(T2V, json={**VIDEO_BODY, "external_task_id": "shared-name"}).json()["code"] == 0


def test_image_task_lifecycle_and_results(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """An image task with n=3 returns three indexed images and charges the image pack its quote."""
    sim, clock = kling
    with sim_client(sim) as client:
        data = create(client, IMAGES, IMAGE_BODY)
        clock.advance(1)
        done = query(client, IMAGES, data["task_id"])
    assert done["task_status"] == "succeed"
    assert [i["index"] for i in done["task_result"]["images"]] == [0, 1, 2]
    assert done["final_unit_deduction"] == quoted(IMAGES, IMAGE_BODY)
    assert sim.sim.remaining("image") == Decimal(10000) - Decimal(done["final_unit_deduction"])


def test_try_on_task_charges_try_on_pack(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A virtual try-on task returns one image and draws from the try-on pack."""
    sim, clock = kling
    with sim_client(sim) as client:
        data = create(client, TRY_ON, TRY_ON_BODY)
        clock.advance(1)
        done = query(client, TRY_ON, data["task_id"])
        assert [t["task_id"] for t in client.get(TRY_ON).json()["data"]] == [data["task_id"]]
    assert done["task_status"] == "succeed" and len(done["task_result"]["images"]) == 1
    assert done["final_unit_deduction"] == quoted(TRY_ON, TRY_ON_BODY)
    assert sim.sim.remaining(PackType.TRY_ON) == 1000 - Decimal(done["final_unit_deduction"])
    assert sim.sim.remaining(PackType.VIDEO) == 1000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_name": "kling-v1"}, "prompt"),
        ({"prompt": "x", "duration": "7"}, "duration"),
        ({"prompt": "x", "mode": "ultra"}, "mode"),
        ({"prompt": "x", "cfg_scale": 2}, "cfg_scale"),
        ({"prompt": "x" * 2501}, "prompt"),
        ({"prompt": "x", "external_task_id": 5}, "external_task_id"),
        ({"model_name": "kling-v2-6", "prompt": "x", "sound": "on"}, "sound"),
        ({"model_name": "kling-v1-6", "prompt": "x", "mode": "pro", "sound": "on"}, "sound"),
    ],
)
def test_invalid_parameters_are_1201(
    kling: tuple[RunningSimulator, ManualClock], body: dict[str, Any], field: str
) -> None:
    """Missing or illegal parameters are 1201 with a message naming the field."""
    sim, _ = kling
    with sim_client(sim) as client:
        assert field in expect_error(client.post(T2V, json=body), 400, 1201)


def test_unknown_model_and_bad_body(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """An unknown model_name is 1203; a body that is not a JSON object is 1200."""
    sim, _ = kling
    with sim_client(sim) as client:
        assert "kling-v9" in expect_error(client.post(T2V, json={"model_name": "kling-v9", "prompt": "x"}), 404, 1203)
        expect_error(client.post(T2V, content=b"{not json", headers={"content-type": "application/json"}), 400, 1200)
        expect_error(client.post(T2V, json=["prompt"]), 400, 1200)
        expect_error(client.get("/v1/videos/no-such-thing"), 404, 1202)


def test_duplicate_external_task_id(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """external_task_id is unique per account, across endpoints and after the first task ended."""
    sim, clock = kling
    with sim_client(sim) as client:
        create(client, T2V, {**VIDEO_BODY, "external_task_id": "dup"})
        clock.advance(5)
        message = expect_error(client.post(T2V, json={**VIDEO_BODY, "external_task_id": "dup"}), 400, 1201)
        assert "external_task_id" in message and "dup" in message
        expect_error(client.post(IMAGES, json={**IMAGE_BODY, "external_task_id": "dup"}), 400, 1201)
    assert len(sim.sim.tasks()) == 1


def test_video_extend_needs_a_known_video(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """video-extend accepts only a video this account generated, and echoes it as parent_video."""
    sim, clock = kling
    extend = "/v1/videos/video-extend"
    with sim_client(sim) as client:
        assert "video_id" in expect_error(client.post(extend, json={"video_id": "nope"}), 400, 1201)
        source = create(client, T2V, VIDEO_BODY)
        clock.advance(1)
        video = query(client, T2V, source["task_id"])["task_result"]["videos"][0]
        data = create(client, extend, {"video_id": video["id"], "prompt": "keep going"})
        assert data["task_info"]["parent_video"]["id"] == video["id"]
        clock.advance(1)
        done = query(client, extend, data["task_id"])
    assert done["task_status"] == "succeed"
    assert Decimal(done["task_result"]["videos"][0]["duration"]) > Decimal(video["duration"])


def test_other_endpoints_accept_documented_bodies(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """Every other task endpoint validates and runs like text2video; unpriced effects charge unpriced_units."""
    sim, clock = kling
    bodies = {
        "/v1/videos/image2video": {
            "model_name": "kling-v2-1",
            "mode": "std",
            "duration": "5",
            "image": "https://x/i.png",
        },
        "/v1/videos/multi-image2video": {
            "model_name": "kling-v1-6",
            "image_list": [{"image": "https://x/1.png"}, {"image": "https://x/2.png"}],
            "prompt": "two friends",
        },
        "/v1/videos/lip-sync": {
            "input": {"mode": "text2video", "video_url": "https://x/v.mp4", "text": "hello", "voice_id": "v1"}
        },
        "/v1/videos/effects": {"effect_scene": "pet_lion", "input": {"image": "https://x/p.png", "duration": "5"}},
        "/v1/videos/motion-control": {
            "image_url": "https://x/i.png",
            "video_url": "https://x/v.mp4",
            "character_orientation": "image",
            "mode": "std",
        },
        "/v1/videos/omni-video": {"model_name": "kling-video-o1", "prompt": "a dance", "duration": "5"},
        "/v1/videos/avatar/image2video": {"image": "https://x/a.png", "sound_file": "https://x/s.mp3"},
        "/v1/images/omni-image": {"prompt": "a poster", "n": 2},
        "/v1/images/multi-image2image": {"subject_image_list": [{"subject_image": "https://x/s.png"}]},
        "/v1/images/editing/expand": {
            "image": "https://x/e.png",
            **{f"{side}_expansion_ratio": 0.5 for side in ("up", "down", "left", "right")},
        },
    }
    with sim_client(sim) as client:
        expect_error(client.post("/v1/videos/image2video", json={"prompt": "no image"}), 400, 1201)
        expect_error(client.post("/v1/videos/lip-sync", json={"input": {"mode": "text2video"}}), 400, 1201)
        ids = {path: create(client, path, body)["task_id"] for path, body in bodies.items()}
        clock.advance(1)
        for path, task_id in ids.items():
            assert query(client, path, task_id)["task_status"] == "succeed"
    unpriced = {t.path for t in sim.sim.tasks() if not t.priced}
    assert unpriced == {"/v1/videos/effects"}
    assert sim.sim.task(ids["/v1/videos/effects"]).charged_units == "1"


# ---------------------------------------------------------------------------- lifecycle


def test_lifecycle_follows_the_clock(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """submitted for 0.2 s, processing for 0.5 s, then succeed with the quoted charge as a string."""
    sim, clock = kling
    with sim_client(sim) as client:
        data = create(client, T2V, VIDEO_BODY)
        created = data["created_at"]
        clock.advance_ms(199)
        assert query(client, T2V, data["task_id"])["task_status"] == "submitted"
        clock.advance_ms(1)
        running = query(client, T2V, data["task_id"])
        assert (running["task_status"], running["updated_at"]) == ("processing", created + 200)
        assert running["final_unit_deduction"] == "0"
        clock.advance(10)
        done = query(client, T2V, data["task_id"])
    assert (done["task_status"], done["updated_at"], done["task_status_msg"]) == ("succeed", created + 700, "")
    assert isinstance(done["final_unit_deduction"], str)
    assert done["final_unit_deduction"] == quoted(T2V, VIDEO_BODY)
    video = done["task_result"]["videos"][0]
    assert set(video) == {"id", "url", "duration"} and video["duration"] == "5"
    assert sim.sim.remaining("video") == 1000 - Decimal(done["final_unit_deduction"])


def test_timing_per_simulator_and_per_task(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """set_timing changes later tasks; script.time_next and [sim:running=..] change single tasks."""
    sim, clock = kling
    sim.sim.set_timing(queued_seconds=1, running_seconds=2)
    sim.sim.script.time_next(queued=0, running=10)
    with sim_client(sim) as client:
        scripted = create(client, T2V, VIDEO_BODY)["task_id"]
        normal = create(client, T2V, VIDEO_BODY)["task_id"]
        marked = create(client, T2V, {**VIDEO_BODY, "prompt": "cat [sim:running=60]"})["task_id"]
        clock.advance(3)
        states = [query(client, T2V, t)["task_status"] for t in (scripted, normal, marked)]
        assert states == ["processing", "succeed", "processing"]
        clock.advance(8)
        assert query(client, T2V, scripted)["task_status"] == "succeed"
        assert query(client, T2V, marked)["task_status"] == "processing"


def test_failed_task_is_never_charged(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """script.fail_next makes a task fail with the message; final_unit_deduction is "0" and packs are untouched."""
    sim, clock = kling
    sim.sim.script.fail_next(1, "content moderation")
    with sim_client(sim) as client:
        data = create(client, T2V, VIDEO_BODY)
        marked = create(client, T2V, {**VIDEO_BODY, "prompt": "x [sim:fail=nsfw]"})
        clock.advance(1)
        failed = query(client, T2V, data["task_id"])
        assert query(client, T2V, marked["task_id"])["task_status_msg"] == "nsfw"
    assert (failed["task_status"], failed["task_status_msg"]) == ("failed", "content moderation")
    assert failed["final_unit_deduction"] == "0" and "task_result" not in failed
    assert sim.sim.remaining("video") == 1000
    assert sim.sim.script.pending == 0


def test_price_drift_charges_a_different_amount(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """charge_next and [sim:charge=..] make Kling charge something other than the quote."""
    sim, clock = kling
    sim.sim.script.charge_next("7.25")
    with sim_client(sim) as client:
        first = create(client, T2V, VIDEO_BODY)["task_id"]
        second = create(client, T2V, {**VIDEO_BODY, "prompt": "x [sim:charge=0.05]"})["task_id"]
        clock.advance(1)
        assert query(client, T2V, first)["final_unit_deduction"] == "7.25"
        assert query(client, T2V, second)["final_unit_deduction"] == "0.05"
    assert sim.sim.remaining("video") == Decimal("992.70")
    assert sim.sim.task(first).quoted_units == quoted(T2V, VIDEO_BODY)


def test_new_design_billing_and_status_names() -> None:
    """With the switches on, results say 'succeeded' and carry billing[] (absent while the task runs)."""
    with serve(report_billing=True, new_status_names=True) as (sim, clock), sim_client(sim) as client:
        data = create(client, T2V, VIDEO_BODY)
        assert "billing" not in query(client, T2V, data["task_id"])
        clock.advance(1)
        done = query(client, T2V, data["task_id"])
    assert done["task_status"] == "succeeded"
    assert done["billing"] == [{"charge_type": "unit", "amount": quoted(T2V, VIDEO_BODY), "package_type": "video"}]


def test_random_failures_are_reproducible() -> None:
    """failure_probability with a seed fails the same tasks every run."""
    outcomes = []
    for _ in range(2):
        with serve(failure_probability=0.5, seed=42) as (sim, clock), sim_client(sim) as client:
            ids = [create(client, IMAGES, {**IMAGE_BODY, "n": 1})["task_id"] for _ in range(8)]
            clock.advance(1)
            outcomes.append([query(client, IMAGES, i)["task_status"] for i in ids])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"succeed", "failed"}


# ---------------------------------------------------------------------------- packs and concurrency


def test_pack_exhaustion_is_1102() -> None:
    """A create the remaining units cannot cover is 1102 (HTTP 429); running tasks' charges count as used."""
    price = quoted(T2V, VIDEO_BODY)
    with serve(packs={"video": Decimal(price) * 2, "image": 100}) as (sim, clock):
        with sim_client(sim) as client:
            create(client, T2V, VIDEO_BODY)
            create(client, T2V, VIDEO_BODY)
            assert "video" in expect_error(client.post(T2V, json=VIDEO_BODY), 429, 1102)
            clock.advance(1)
            expect_error(client.post(T2V, json=VIDEO_BODY), 429, 1102)
            assert create(client, IMAGES, IMAGE_BODY)["task_status"] == "submitted"
        assert sim.sim.packs()[0].status == "runOut"


def test_failed_task_gives_its_units_back() -> None:
    """Units held for a task that fails become available again when it ends."""
    price = quoted(T2V, VIDEO_BODY)
    with serve(packs={"video": price}) as (sim, clock):
        sim.sim.script.fail_next()
        with sim_client(sim) as client:
            create(client, T2V, VIDEO_BODY)
            expect_error(client.post(T2V, json=VIDEO_BODY), 429, 1102)
            clock.advance(1)
            create(client, T2V, VIDEO_BODY)


def test_expired_or_future_pack_is_not_usable() -> None:
    """Only online packs count: expired or not-yet-effective packs give 1102."""
    with serve(packs={"image": 100}) as (sim, clock):
        now = clock.now_ms()
        sim.sim.add_pack(PackConfig(PackType.VIDEO, 100, effective_time_ms=now - 10, invalid_time_ms=now + 1000))
        sim.sim.add_pack(PackConfig(PackType.VIDEO, 100, effective_time_ms=now + 5000))
        with sim_client(sim) as client:
            create(client, T2V, VIDEO_BODY)
            clock.advance(2)
            expect_error(client.post(T2V, json=VIDEO_BODY), 429, 1102)
            clock.advance(4)
            create(client, T2V, VIDEO_BODY)
        assert [p.status for p in sim.sim.packs() if p.pack_type is PackType.VIDEO] == ["expired", "online"]


def test_concurrency_limit_and_slot_release() -> None:
    """Past the pack's parallel-task quota a create is 1303; slots free when tasks end, failures included."""
    with serve(concurrency=2) as (sim, clock):
        sim.sim.script.fail_next()
        with sim_client(sim) as client:
            create(client, T2V, VIDEO_BODY)
            create(client, T2V, VIDEO_BODY)
            answer = client.post(T2V, json=VIDEO_BODY)
            assert expect_error(answer, 429, 1303) == "parallel task over resource pack limit"
            assert sim.sim.active_slots("video") == 2
            create(client, TRY_ON, TRY_ON_BODY)
            clock.advance(1)
            assert sim.sim.active_slots("video") == 0
            create(client, T2V, VIDEO_BODY)
            create(client, T2V, VIDEO_BODY)


def test_image_task_takes_n_slots() -> None:
    """An image task holds n slots of the image quota."""
    with serve(concurrency={"image": 4}) as (sim, _), sim_client(sim) as client:
        create(client, IMAGES, IMAGE_BODY)
        expect_error(client.post(IMAGES, json={**IMAGE_BODY, "n": 2}), 429, 1303)
        create(client, IMAGES, {**IMAGE_BODY, "n": 1})
        assert sim.sim.active_slots("image") == 4


def test_quota_is_the_largest_pack_not_the_sum() -> None:
    """Two online packs with quotas 1 and 2 allow 2 parallel tasks, not 3."""
    account = AccountConfig(
        packs=(PackConfig(PackType.VIDEO, 100, concurrency=1), PackConfig(PackType.VIDEO, 100, concurrency=2))
    )
    with serve(SimulatorConfig(accounts=(account,))) as (sim, _), sim_client(sim) as client:
        create(client, T2V, VIDEO_BODY)
        create(client, T2V, VIDEO_BODY)
        expect_error(client.post(T2V, json=VIDEO_BODY), 429, 1303)


def test_rate_limit_is_1302() -> None:
    """Over rate_limit_per_second requests in one clock second get 1302 until the next second."""
    with serve(rate_limit_per_second=2) as (sim, clock), sim_client(sim) as client:
        client.get(T2V)
        client.get(T2V)
        expect_error(client.get(T2V), 429, 1302)
        clock.advance(1)
        assert client.get(T2V).json()["code"] == 0


# ---------------------------------------------------------------------------- account costs


def test_account_costs_shape(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """/account/costs lists packs with Kling's fields; quantities are JSON numbers."""
    sim, clock = kling
    now = clock.now_ms()
    with sim_client(sim) as client:
        answer = client.get("/account/costs", params={"start_time": now - 1000, "end_time": now})
    assert b'"total_quantity":1000.0' in answer.content
    data = answer.json()["data"]
    assert (data["code"], data["msg"]) == (0, "success")
    infos = data["resource_pack_subscribe_infos"]
    assert [i["resource_pack_name"] for i in infos] == [
        "Video Generation - 1,000 entries",
        "Image Generation - 10,000 entries",
        "Virtual Try-On - 1,000 entries",
    ]
    assert set(infos[0]) == {
        "resource_pack_name",
        "resource_pack_id",
        "resource_pack_type",
        "total_quantity",
        "remaining_quantity",
        "purchase_time",
        "effective_time",
        "invalid_time",
        "status",
    }
    assert infos[0]["resource_pack_type"] == "decreasing_total" and infos[0]["status"] == "online"
    assert infos[0]["effective_time"] < now < infos[0]["invalid_time"]


def test_account_costs_parameters(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """start_time and end_time are required integers; resource_pack_name and the window filter packs."""
    sim, clock = kling
    now = clock.now_ms()
    with sim_client(sim) as client:
        assert "start_time" in expect_error(client.get("/account/costs", params={"end_time": now}), 400, 1201)
        assert "end_time" in expect_error(client.get("/account/costs", params={"start_time": now}), 400, 1201)
        expect_error(client.get("/account/costs", params={"start_time": "today", "end_time": now}), 400, 1201)
        named = client.get(
            "/account/costs",
            params={"start_time": now, "end_time": now, "resource_pack_name": "Virtual Try-On - 1,000 entries"},
        ).json()["data"]["resource_pack_subscribe_infos"]
        assert [i["resource_pack_name"] for i in named] == ["Virtual Try-On - 1,000 entries"]
        far_future = now + 400 * 86_400_000
        outside = client.get("/account/costs", params={"start_time": far_future, "end_time": far_future + 1})
        assert outside.json()["data"]["resource_pack_subscribe_infos"] == []


def test_account_costs_reporting_lag() -> None:
    """With a 12 h lag, remaining_quantity shows the pack as it was 12 h ago."""
    with serve(costs_lag_seconds=12 * 3600) as (sim, clock):
        with sim_client(sim) as client:
            create(client, T2V, VIDEO_BODY)
            clock.advance(60)

            def video_remaining() -> Decimal:
                now = clock.now_ms()
                answer = client.get("/account/costs", params={"start_time": now, "end_time": now})
                return Decimal(str(answer.json()["data"]["resource_pack_subscribe_infos"][0]["remaining_quantity"]))

            assert video_remaining() == 1000
            clock.advance(12 * 3600)
            assert video_remaining() == 1000 - Decimal(quoted(T2V, VIDEO_BODY))
        assert sim.sim.remaining("video") == 1000 - Decimal(quoted(T2V, VIDEO_BODY))


def test_account_costs_rate_is_limited_when_asked() -> None:
    """costs_min_interval_seconds turns a second call within the interval into 1302."""
    with serve(costs_min_interval_seconds=1) as (sim, clock):
        now = clock.now_ms()
        with sim_client(sim) as client:
            params = {"start_time": now, "end_time": now}
            assert client.get("/account/costs", params=params).json()["code"] == 0
            expect_error(client.get("/account/costs", params=params), 429, 1302)
            clock.advance(1)
            assert client.get("/account/costs", params=params).json()["code"] == 0


def test_retention_forgets_old_tasks() -> None:
    """With retention_seconds, ended tasks disappear after that long and their external ids free up."""
    with serve(retention_seconds=10) as (sim, clock), sim_client(sim) as client:
        old = create(client, T2V, {**VIDEO_BODY, "external_task_id": "old"})
        clock.advance(5)
        newer = create(client, T2V, VIDEO_BODY)
        clock.advance(5.6)
        assert query(client, T2V, "old")["task_status"] == "succeed"
        clock.advance(0.2)
        expect_error(client.get(f"{T2V}/{old['task_id']}"), 404, 1203)
        assert [t["task_id"] for t in client.get(T2V).json()["data"]] == [newer["task_id"]]
        create(client, T2V, {**VIDEO_BODY, "external_task_id": "old"})
