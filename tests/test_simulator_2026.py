"""The Kling simulator's 2026 design over real loopback HTTP: API-key auth, model-in-path creates, /tasks."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_budget.money import format_units
from kling_budget.pricing import PriceTable, quote_kling_request
from kling_budget.simulator import (
    AccountConfig,
    ManualClock,
    RunningSimulator,
    SimulatorConfig,
    running_simulator,
)
from kling_budget.types import PackType
from tests.simfixtures import api_client, expect_error, raw_post, serve, sim_client

T2V = "/text-to-video/kling-3.0"
OMNI = "/omni-video/kling-3.0-omni"
MOTION = "/motion-control/kling-2.6"
PROMPT = {"type": "prompt", "text": "a red fox in the snow"}
BODY: dict[str, Any] = {"contents": [PROMPT], "settings": {"resolution": "1080p", "duration": 5, "audio": "native"}}
FRAME = {"type": "first_frame", "url": "https://example.com/fox.png"}
DAY_MS = 86_400_000


@pytest.fixture
def kling() -> Iterator[tuple[RunningSimulator, ManualClock]]:
    with serve() as pair:
        yield pair


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSimulator]:
    """One simulator for tests whose requests are all refused (a refused request changes nothing)."""
    with running_simulator(SimulatorConfig.single(), clock=ManualClock()) as kling:
        yield kling


def create(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=body)
    payload: dict[str, Any] = answer.json()
    assert answer.status_code == 200 and payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


def tasks(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    payload: dict[str, Any] = client.get("/tasks", params=params).json()
    assert payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


def listing(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = client.post("/tasks", json=body).json()
    assert payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- auth


def test_api_key_creates_with_any_case_scheme(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """'Bearer <API key>' works on the new routes whatever the scheme's case."""
    sim, _ = kling
    for scheme in ("Bearer", "bearer", "BEARER"):
        answer = raw_post(sim.url(T2V), headers={"Authorization": f"{scheme} {sim.api_key}"}, json=BODY)
        assert answer.status_code == 200 and answer.json()["code"] == 0


@pytest.mark.parametrize("route", [("POST", T2V), ("GET", "/tasks?task_ids=1"), ("POST", "/tasks")])
def test_jwt_on_a_new_route_is_1002(shared: RunningSimulator, route: tuple[str, str]) -> None:
    """An access-key JWT, even a valid one, is HTTP 401 code 1002 on the 2026 design's routes."""
    method, path = route
    with sim_client(shared) as client:
        answer = client.request(method, path, json=BODY if method == "POST" else None)
    assert "API key" in expect_error(answer, 401, 1002)


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, 1001), ("Bearer", 1001), ("Basic sim-api-key", 1002), ("Bearer not-a-key", 1000)],
)
def test_bad_api_key_headers(shared: RunningSimulator, header: str | None, code: int) -> None:
    """No header is 1001, another scheme 1002, an unknown key 1000; all HTTP 401."""
    headers = {} if header is None else {"Authorization": header}
    expect_error(raw_post(shared.url(T2V), headers=headers, json=BODY), 401, code)


def test_api_key_still_works_on_v1(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """The same API key creates and reads legacy /v1 tasks."""
    sim, _ = kling
    with api_client(sim) as client:
        body = {"model_name": "kling-v2-6", "prompt": "a cat", "duration": "5"}
        task_id = create(client, "/v1/videos/text2video", body)["task_id"]
        assert client.get(f"/v1/videos/text2video/{task_id}").json()["data"]["task_status"] == "submitted"


# ---------------------------------------------------------------------------- create


def test_create_answer_and_lifecycle(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A create answers id/status/times/external_id; the task runs submitted -> processing -> succeeded."""
    sim, clock = kling
    with api_client(sim) as client:
        body = {**BODY, "options": {"external_task_id": "fox-1"}}
        data = create(client, T2V, body)
        assert set(data) == {"id", "status", "create_time", "update_time", "external_id"}
        assert (data["status"], data["external_id"]) == ("submitted", "fox-1") and data["id"].isdigit()
        assert data["create_time"] == data["update_time"] == clock.now_ms()
        [submitted] = tasks(client, task_ids=data["id"])
        assert submitted == {**data, "message": "", "outputs": []}
        clock.advance(0.2)
        [running] = tasks(client, task_ids=data["id"])
        assert (running["status"], running["update_time"]) == ("processing", data["create_time"] + 200)
        assert "billing" not in running
        clock.advance(0.5)
        [done] = tasks(client, external_task_ids="fox-1")
    assert done["status"] == "succeeded" and done["message"] == ""
    [output] = done["outputs"]
    assert output["type"] == "video" and output["url"].endswith(".mp4") and output["duration"] == "5"
    assert done["billing"] == [{"charge_type": "unit", "amount": "6", "package_type": "video"}]
    assert sim.sim.remaining(PackType.VIDEO) == 1000 - 6


def test_live_record_body_is_accepted(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """The body of Kling's recorded live omni create (alias kling-v3-omni) is accepted and priced."""
    sim, clock = kling
    body = {
        "contents": [{"type": "prompt", "text": "…"}],
        "settings": {"aspect_ratio": "16:9", "resolution": "720p", "duration": 5},
    }
    with api_client(sim) as client:
        data = create(client, "/omni-video/kling-v3-omni", body)
        clock.advance(1)
        [done] = tasks(client, task_ids=data["id"])
    assert done["billing"] == [{"charge_type": "unit", "amount": "3", "package_type": "video"}]


def table_units(model: str, *, product: str = "video", **facts: Any) -> str:
    """What the packaged price table says, in Kling's unit text."""
    return format_units(PriceTable.default().quote(model, product=product, **facts).units_milli)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (T2V, BODY, table_units("kling-v3", resolution="1080p", duration=5, sound="native")),
        ("/text-to-video/kling-2.6", {"prompt": "a cat"}, table_units("kling-v2-6", mode="std", duration=5)),
        (
            "/text-to-video/kling-2.6",
            {"prompt": "a cat", "settings": {"resolution": "1080p", "audio": "native", "duration": 10}},
            table_units("kling-v2-6", mode="pro", duration=10, sound="native"),
        ),
        (
            "/image-to-video/kling-2.5-turbo",
            {"contents": [FRAME], "settings": {"resolution": "1080p", "duration": 10}},
            table_units("kling-v2-5-turbo", mode="pro", duration=10),
        ),
        (
            "/image-to-video/kling-3.0-turbo",
            {"contents": [FRAME, {"type": "last_frame", "url": "https://x/l.png"}], "settings": {"duration": 7}},
            table_units("kling-3.0-turbo", resolution="720p", duration=7),
        ),
        (
            "/text-to-video/kling-3.0",
            {"prompt": "a cat", "settings": {"resolution": "4k", "duration": 15}},
            table_units("kling-v3", resolution="4k", duration=15),
        ),
        (
            OMNI,
            {
                "contents": [PROMPT, {"type": "feature_video", "url": "https://x/v.mp4"}],
                "settings": {"audio": "original"},
            },
            table_units("kling-v3-omni", resolution="1080p", duration=5, video_input=True),
        ),
        (
            "/omni-video/kling-o1",
            {
                "contents": [PROMPT, {"type": "base_video", "url": "https://x/v.mp4"}],
                "settings": {"resolution": "720p", "duration": 3},
            },
            table_units("kling-video-o1", resolution="720p", duration=10, video_input=True),
        ),
        (
            MOTION,
            {
                "contents": [{"type": "image", "url": "https://x/i.png"}, {"type": "video", "url": "https://x/v.mp4"}],
                "settings": {"character_orientation": "image"},
            },
            table_units("kling-v2-6", product="motion-control", resolution="720p", duration=10),
        ),
        (
            "/motion-control/kling-3.0",
            {
                "contents": [{"type": "image", "url": "https://x/i.png"}, {"type": "video", "url": "https://x/v.mp4"}],
                "settings": {"resolution": "1080p"},
            },
            table_units("kling-v3", product="motion-control", resolution="1080p", duration=30),
        ),
    ],
)
def test_charge_is_the_price_table(path: str, body: dict[str, Any], expected: str) -> None:
    """Every product and model is charged what the price table says for its settings (longest input when unmeasured);
    a body that states its resolution is charged exactly what the pricing module quotes for it."""
    settings = body.get("settings", {})
    if "resolution" in settings and settings.get("character_orientation") != "image":
        assert format_units(quote_kling_request(PriceTable.default(), path, body).units_milli) == expected
    with serve() as (sim, clock), api_client(sim) as client:
        data = create(client, path, body)
        clock.advance(1)
        [done] = tasks(client, task_ids=data["id"])
    assert done["billing"][0]["amount"] == expected
    assert sim.sim.task(data["id"]).priced
    assert sim.sim.remaining(PackType.VIDEO) == 1000 - Decimal(expected)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (T2V, {"settings": {"duration": 5}}, "prompt"),
        (T2V, {"prompt": "x", "contents": [PROMPT]}, "prompt"),
        (T2V, {"prompt": "x" * 2501}, "prompt"),
        (T2V, {"contents": "a fox"}, "contents"),
        (T2V, {"contents": [{"type": "sketch", "url": "u"}], "prompt": "x"}, "contents[0].type"),
        (T2V, {"contents": [{"type": "prompt"}]}, "contents[0].text"),
        (T2V, {"prompt": "x", "contents": [FRAME]}, "contents[0].type"),
        (T2V, {"prompt": "x", "settings": {"duration": "5"}}, "settings.duration"),
        (T2V, {"prompt": "x", "settings": {"duration": 16}}, "settings.duration"),
        (T2V, {"prompt": "x", "settings": {"duration": 2}}, "settings.duration"),
        ("/text-to-video/kling-2.6", {"prompt": "x", "settings": {"duration": 7}}, "settings.duration"),
        ("/text-to-video/kling-2.5-turbo", {"prompt": "x", "settings": {"duration": 15}}, "settings.duration"),
        (T2V, {"prompt": "x", "settings": {"resolution": "8k"}}, "settings.resolution"),
        ("/text-to-video/kling-2.6", {"prompt": "x", "settings": {"resolution": "4k"}}, "settings.resolution"),
        ("/text-to-video/kling-3.0-turbo", {"prompt": "x", "settings": {"resolution": "4k"}}, "settings.resolution"),
        (T2V, {"prompt": "x", "settings": {"aspect_ratio": "4:3"}}, "settings.aspect_ratio"),
        (T2V, {"prompt": "x", "settings": {"audio": "loud"}}, "settings.audio"),
        (T2V, {"prompt": "x", "settings": {"audio": "original"}}, "settings.audio"),
        ("/text-to-video/kling-2.6", {"prompt": "x", "settings": {"audio": "native"}}, "settings.audio"),
        ("/text-to-video/kling-2.5-turbo", {"prompt": "x", "settings": {"audio": "native"}}, "settings.audio"),
        (T2V, {"prompt": "x", "settings": {"multi_shot": "yes"}}, "settings.multi_shot"),
        (T2V, {"prompt": "x", "settings": []}, "settings"),
        (T2V, {"prompt": "x", "options": {"external_task_id": 7}}, "options.external_task_id"),
        (T2V, {"prompt": "x", "options": {"external_task_id": "e" * 256}}, "options.external_task_id"),
        (T2V, {"prompt": "x", "options": {"watermark_info": {"enabled": "no"}}}, "options.watermark_info.enabled"),
        ("/image-to-video/kling-3.0", {"prompt": "x"}, "first_frame"),
        ("/image-to-video/kling-3.0", {"contents": [{"type": "first_frame"}]}, "contents[0].url"),
        ("/image-to-video/kling-3.0", {"contents": [FRAME, FRAME]}, "contents"),
        ("/image-to-video/kling-3.0", {"contents": [{"type": "last_frame", "url": "u"}]}, "contents"),
        (OMNI, {"contents": [{"type": "feature_video", "url": "u"}]}, "prompt"),
        (
            OMNI,
            {"contents": [PROMPT, {"type": "base_video", "url": "u"}], "settings": {"duration": 16}},
            "settings.duration",
        ),
        (
            OMNI,
            {"contents": [PROMPT, {"type": "base_video", "url": "u"}, {"type": "feature_video", "url": "v"}]},
            "contents",
        ),
        (OMNI, {"contents": [PROMPT], "settings": {"audio": "original"}}, "settings.audio"),
        (
            OMNI,
            {"contents": [PROMPT, {"type": "feature_video", "url": "u"}], "settings": {"audio": "native"}},
            "settings.audio",
        ),
        ("/omni-video/kling-o1", {"contents": [PROMPT], "settings": {"resolution": "4k"}}, "settings.resolution"),
        (MOTION, {"contents": [{"type": "video", "url": "u"}]}, "image"),
        (MOTION, {"contents": [{"type": "image", "url": "u"}]}, "video"),
        (
            MOTION,
            {"contents": [{"type": "image", "url": "u"}, {"type": "video", "url": "v"}], "settings": {"duration": 5}},
            "settings.duration",
        ),
        (
            MOTION,
            {
                "contents": [{"type": "image", "url": "u"}, {"type": "video", "url": "v"}],
                "settings": {"character_orientation": "side"},
            },
            "settings.character_orientation",
        ),
        (
            MOTION,
            {
                "contents": [{"type": "image", "url": "u"}, {"type": "video", "url": "v"}],
                "settings": {"audio": "original"},
            },
            "settings.audio",
        ),
    ],
)
def test_invalid_creates_are_1201_naming_the_field(
    shared: RunningSimulator, path: str, body: dict[str, Any], field: str
) -> None:
    """A missing or illegal field is HTTP 400 code 1201 whose message names the field; nothing is created."""
    with api_client(shared) as client:
        assert field in expect_error(client.post(path, json=body), 400, 1201)
    assert shared.sim.tasks() == []


@pytest.mark.parametrize(
    "path", ["/text-to-video/kling-v3", "/omni-video/kling-3.0", "/motion-control/kling-3.0-turbo"]
)
def test_unknown_model_is_1203(shared: RunningSimulator, path: str) -> None:
    """A model the product does not offer is HTTP 404 code 1203 naming the model."""
    model = path.rsplit("/", 1)[1]
    with api_client(shared) as client:
        message = expect_error(client.post(path, json=BODY), 404, 1203)
    assert f"model {model!r} does not exist" in message


def test_bad_bodies_and_unknown_routes(shared: RunningSimulator) -> None:
    """A body that is not a JSON object is 1200; an unknown product or a GET on a create route is 1202."""
    with api_client(shared) as client:
        expect_error(client.post(T2V, content=b"{", headers={"content-type": "application/json"}), 400, 1200)
        expect_error(client.post(T2V, json=["prompt"]), 400, 1200)
        expect_error(client.post("/text-to-image/kling-3.0", json=BODY), 404, 1202)
        expect_error(client.get(T2V), 404, 1202)
        expect_error(client.delete("/tasks"), 404, 1202)


def test_external_task_id_is_unique_per_account(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """A second create with the same options.external_task_id is 1201 naming it, across designs and after the end."""
    sim, clock = kling
    with api_client(sim) as client:
        create(client, T2V, {**BODY, "options": {"external_task_id": "job-7"}})
        clock.advance(5)
        again = client.post(OMNI, json={"contents": [PROMPT], "options": {"external_task_id": "job-7"}})
        assert "external_task_id" in expect_error(again, 400, 1201)
        legacy = client.post("/v1/videos/text2video", json={"prompt": "x", "external_task_id": "job-7"})
        assert "external_task_id" in expect_error(legacy, 400, 1201)
    assert len(sim.sim.tasks()) == 1


def test_external_ids_are_per_account() -> None:
    """Another account may reuse an external task id and cannot see the first account's tasks."""
    accounts = (
        AccountConfig(name="a", key_pairs=(), api_keys=("key-a",)),
        AccountConfig(name="b", key_pairs=(), api_keys=("key-b",)),
    )
    with serve(SimulatorConfig(accounts=accounts)) as (sim, _):
        with api_client(sim) as client:
            first = create(client, T2V, {**BODY, "options": {"external_task_id": "same"}})
        with httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer key-b"}) as other:
            assert tasks(other, task_ids=first["id"]) == []
            assert tasks(other, external_task_ids="same") == []
            create(other, T2V, {**BODY, "options": {"external_task_id": "same"}})


def test_packs_and_concurrency_apply_to_new_routes() -> None:
    """New-design tasks hold one video slot each (1303 past the quota) and the units they will cost (1102)."""
    with serve(packs={"video": 20}, concurrency=2) as (sim, clock), api_client(sim) as client:
        create(client, T2V, BODY)
        create(client, T2V, BODY)
        assert expect_error(client.post(T2V, json=BODY), 429, 1303) == "parallel task over resource pack limit"
        assert sim.sim.active_slots("video") == 2
        clock.advance(1)
        create(client, T2V, BODY)
        assert "video" in expect_error(client.post(T2V, json={**BODY, "settings": {"duration": 10}}), 429, 1102)


# ---------------------------------------------------------------------------- outcomes


def test_failures_before_and_during_generation(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """[sim:fail_early] goes submitted -> failed with billing [{"amount": "0"}]; [sim:fail] fails with billing []."""
    sim, clock = kling
    early_body = {"prompt": "a fox [sim:fail_early=image rejected]"}
    with api_client(sim) as client:
        early = create(client, T2V, early_body)["id"]
        late = create(client, T2V, {"prompt": "a fox [sim:fail=moderation]"})["id"]
        sim.sim.script.fail_early_next(1, "queue full")
        scripted = create(client, T2V, BODY)["id"]
        clock.advance(0.2)
        first, second, third = tasks(client, task_ids=f"{early},{late},{scripted}")
        assert (first["status"], first["message"], first["billing"]) == ("failed", "image rejected", [{"amount": "0"}])
        assert second["status"] == "processing" and "billing" not in second
        assert (third["status"], third["billing"]) == ("failed", [{"amount": "0"}])
        clock.advance(1)
        [second] = tasks(client, task_ids=late)
    assert (second["status"], second["message"], second["billing"], second["outputs"]) == (
        "failed",
        "moderation",
        [],
        [],
    )
    assert sim.sim.remaining(PackType.VIDEO) == 1000
    assert sim.sim.active_slots(PackType.VIDEO) == 0


def test_charge_marker_and_coupon_on_new_routes(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """[sim:charge=..] in a prompt content changes the charge; [sim:coupon] makes a task free (amount "0")."""
    sim, clock = kling
    with api_client(sim) as client:
        drift = create(client, T2V, {**BODY, "contents": [{"type": "prompt", "text": "a fox [sim:charge=7.5]"}]})
        free = create(client, T2V, {**BODY, "contents": [{"type": "prompt", "text": "a fox [sim:coupon]"}]})
        sim.sim.script.coupon_next()
        scripted = create(client, T2V, BODY)
        clock.advance(1)
        found = tasks(client, task_ids=f"{drift['id']},{free['id']},{scripted['id']}")
    assert [t["billing"][0]["amount"] for t in found] == ["7.5", "0", "0"]
    assert all(t["status"] == "succeeded" and t["billing"][0]["charge_type"] == "unit" for t in found)
    assert sim.sim.remaining(PackType.VIDEO) == Decimal("992.5")
    assert sim.sim.task(drift["id"]).quoted_units == "6"


# ---------------------------------------------------------------------------- GET /tasks


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"task_ids": "1", "external_task_ids": "a"},
        {"task_ids": ""},
        {"task_ids": "1,,2"},
        {"external_task_ids": ",".join(str(i) for i in range(51))},
        {"task_ids": "x" * 256},
    ],
)
def test_get_tasks_parameters(shared: RunningSimulator, query: dict[str, str]) -> None:
    """Exactly one of task_ids and external_task_ids, 1 to 50 non-empty ids; otherwise 1201."""
    with api_client(shared) as client:
        message = expect_error(client.get("/tasks", params=query), 400, 1201)
    assert "task_ids" in message


def test_get_tasks_order_missing_ids_and_legacy_tasks(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """Items come in the order asked, once each; unknown ids and legacy /v1 tasks are left out."""
    sim, _ = kling
    with api_client(sim) as client:
        a = create(client, T2V, {**BODY, "options": {"external_task_id": "a"}})["id"]
        b = create(client, OMNI, {"contents": [PROMPT], "options": {"external_task_id": "b"}})["id"]
        legacy = create(client, "/v1/videos/text2video", {"prompt": "x", "external_task_id": "v1"})["task_id"]
        assert [t["id"] for t in tasks(client, task_ids=f"{b},404,{a},{b},{legacy}")] == [b, a]
        assert [t["id"] for t in tasks(client, external_task_ids="b,nope,a,v1")] == [b, a]
        assert tasks(client, task_ids="404") == []
        assert tasks(client, task_ids=",".join(str(i) for i in range(50))) == []


# ---------------------------------------------------------------------------- POST /tasks


def test_list_pages_newest_first_with_a_cursor(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """POST /tasks pages newest first; next_cursor continues exactly where the page ended, then is ""."""
    sim, clock = kling
    with api_client(sim) as client:
        ids = []
        for _ in range(5):
            ids.append(create(client, T2V, {"prompt": "a fox"})["id"])
            clock.advance(0.001)
        create(client, "/v1/videos/text2video", {"prompt": "legacy tasks are not listed"})
        first = listing(client, {"limit": 2})
        assert [t["id"] for t in first["result"]] == ids[::-1][:2]
        assert (first["count"], first["has_more"]) == (2, True) and first["next_cursor"]
        created = create(client, T2V, {"prompt": "created between pages"})["id"]
        second = listing(
            client, {"cursor": first["next_cursor"], "limit": 500, "filters": [{"key": "status", "values": ["failed"]}]}
        )
        assert [t["id"] for t in second["result"]] == ids[::-1][2:4]
        third = listing(client, {"cursor": second["next_cursor"]})
        assert [t["id"] for t in third["result"]] == ids[:1]
        assert (third["count"], third["has_more"], third["next_cursor"]) == (1, False, "")
        everything = listing(client, {})
    assert [t["id"] for t in everything["result"]] == [created, *ids[::-1]]
    assert everything["count"] == 6 and everything["has_more"] is False


def test_list_filters_and_window(kling: tuple[RunningSimulator, ManualClock]) -> None:
    """Filters on status and product_type; the window is [start_time, end_time] on create_time, default 30 days."""
    sim, clock = kling
    with api_client(sim) as client:
        old = create(client, T2V, {"prompt": "old"})["id"]
        clock.advance(31 * 86_400)
        failing = create(client, T2V, {"prompt": "x [sim:fail=no]"})["id"]
        clock.advance(1)
        running = create(client, T2V, {"prompt": "still running"})["id"]
        now = clock.now_ms()

        def ids(body: dict[str, Any]) -> list[str]:
            return [t["id"] for t in listing(client, body)["result"]]

        assert ids({}) == [running, failing]
        assert ids({"start_time": 0}) == [running, failing, old]
        assert ids({"start_time": 0, "end_time": now - 31 * DAY_MS}) == [old]
        assert ids({"filters": [{"key": "status", "values": ["failed"]}]}) == [failing]
        either = [{"key": "status", "values": ["failed"]}, {"key": "status", "values": ["submitted"]}]
        assert ids({"filters": either}) == [running, failing]
        both = [{"key": "status", "values": ["submitted"]}, {"key": "product_type", "values": ["image"]}]
        assert ids({"filters": both}) == []
        assert ids({"filters": [{"key": "product_type", "values": ["video", "try_on"]}]}) == [running, failing]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": -1}, "end_time"),
        ({"start_time": 2000, "end_time": 1000}, "start_time"),
        ({"filters": {"key": "status"}}, "filters"),
        ({"filters": [{"key": "model", "values": ["x"]}]}, "filters[0].key"),
        ({"filters": [{"key": "status", "values": []}]}, "filters[0].values"),
        ({"filters": [{"key": "status", "values": ["succeed"]}]}, "filters[0].values"),
        ({"filters": [{"key": "product_type", "values": ["audio"]}]}, "filters[0].values"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": 5}, "cursor"),
    ],
)
def test_list_rejects_bad_bodies(shared: RunningSimulator, body: dict[str, Any], field: str) -> None:
    """Bad limits, times, filters or cursors are 1201 naming the field."""
    with api_client(shared) as client:
        assert field in expect_error(client.post("/tasks", json=body), 400, 1201)


def test_list_accepts_an_empty_body_and_refuses_other_routes_cursors(
    kling: tuple[RunningSimulator, ManualClock],
) -> None:
    """An empty POST body lists the default window; a billing-ledger cursor is refused by /tasks."""
    sim, clock = kling
    with api_client(sim) as client:
        for _ in range(2):
            create(client, T2V, BODY)
            clock.advance(1)
        assert client.post("/tasks").json()["data"]["count"] == 2
        now = clock.now_ms()
        ledger = client.post("/account/billing/package", json={"start_time": 0, "end_time": now, "limit": 1}).json()
        cursor = ledger["data"]["next_cursor"]
        assert cursor
        assert "cursor" in expect_error(client.post("/tasks", json={"cursor": cursor}), 400, 1201)
