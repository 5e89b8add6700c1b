"""The gateway serving Kling's 2026 API design over real HTTP: the simulator as upstream, uvicorn on loopback.

Creates on ``/<product>/<model>``, ``GET /tasks`` by ids, ``POST /tasks`` lists, callbacks, isolation between
keys, denials, ambiguous creates and settlement from ``billing[]`` — the same pipeline as ``/v1``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget.kling import KlingClient
from kling_budget.kling.webhooks import WebhookVerificationError, verify_webhook
from kling_budget.ledger import ReservationState
from kling_budget.server import DENIAL_CODE
from kling_budget.server.task_store import now_micros
from kling_budget.simulator import FaultKind, SimulatorConfig, running_simulator
from tests.gatewayutil import RunningGateway, kling_sample_token, running_gateway, wait_until
from tests.simfixtures import callback_receiver

T2V = "/text-to-video/kling-3.0"
PROMPT_BODY = {"prompt": "a red fox in the snow", "settings": {"duration": 5, "resolution": "720p"}}
PRODUCTS = {
    "text-to-video": (T2V, PROMPT_BODY, "3"),
    "image-to-video": (
        "/image-to-video/kling-2.6",
        {
            "contents": [{"type": "prompt", "text": "waves"}, {"type": "first_frame", "url": "https://x.test/a.png"}],
            "settings": {"duration": 5, "resolution": "1080p"},
        },
        "2.5",
    ),
    "omni-video": (
        "/omni-video/kling-v3-omni",
        {
            "contents": [{"type": "prompt", "text": "a city at night"}],
            "settings": {"aspect_ratio": "16:9", "resolution": "720p", "duration": 5},
        },
        "3",
    ),
    "motion-control": (
        "/motion-control/kling-3.0",
        {
            "contents": [
                {"type": "image", "url": "https://x.test/c.png"},
                {"type": "video", "url": "https://x.test/m.mp4"},
            ],
            "settings": {"resolution": "720p"},
        },
        None,  # held at the longest reference video; Kling charges the real length
    ),
}


@pytest.fixture
def kling(quick_kling: Any) -> Any:
    """The module's simulator (tasks finish within a fraction of a second)."""
    return quick_kling


@pytest.fixture
def gw(kling, sqlite_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both") as gateway:
        yield gateway


@pytest.fixture
def gw_any(kling, ledger_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway on each storage backend (SQLite, PostgreSQL)."""
    with running_gateway(kling, ledger_url, tmp_path / "home", credentials="both") as gateway:
        yield gateway


def _key(gw: RunningGateway, name: str = "app", project: str = "p1", **kw: Any):
    return gw.state.keys.create(name, project=project, kind="both", **kw)


def _bearer(issued: Any) -> str:
    return f"Bearer {issued.api_key}"


def _with_options(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {**body, "options": {**body.get("options", {}), **options}}


def _wait_status(client: httpx.Client, task_id: str, status: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        items = client.get("/tasks", params={"task_ids": task_id}).json()["data"]
        return items[0] if items and items[0]["status"] == status else None

    return wait_until(done, 10)


@pytest.mark.parametrize("product", list(PRODUCTS))
def test_each_product_creates_queries_and_settles_at_klings_billing(gw, kling, product):
    """Every 2026 product: priced, reserved, forwarded with the gateway's ids, queried on /tasks, settled."""
    path, body, expected = PRODUCTS[product]
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        created = client.post(path, json=_with_options(body, external_task_id=f"mine-{product}"))
        assert created.status_code == 200, created.text
        data = created.json()["data"]
        assert data["status"] == "submitted" and data["external_id"] == f"mine-{product}"
        done = _wait_status(client, data["id"], "succeeded")
        listed = client.post("/tasks", json={"filters": [{"key": "status", "values": ["succeeded"]}]}).json()
    assert [(t["id"], t["external_id"]) for t in listed["data"]["result"]] == [(data["id"], f"mine-{product}")]
    assert done["external_id"] == f"mine-{product}" and done["outputs"][0]["type"] == "video"
    charged = Decimal(done["billing"][0]["amount"])
    if expected is not None:
        assert charged == Decimal(expected)
    info = gw.state.ledger.find_by_task(data["id"])
    assert info.state is ReservationState.COMMITTED and info.actual_milli == int(charged * 1000)
    assert info.attribution.api_key == "app" and info.detail["kling_path"] == path
    upstream = kling.sim.task(data["id"])
    assert upstream.external_task_id == info.id and upstream.external_task_id.startswith("gw-")
    assert upstream.api_key_name  # Kling was called with the gateway's API key (a JWT is refused there)


def test_official_sample_jwt_and_api_key_both_work_on_the_2026_routes(gw):
    """A tenant may sign JWTs like Kling's sample or send its API key; the gateway forwards with its API key."""
    issued = _key(gw)
    token = kling_sample_token(issued.key.access_key, issued.secret_key)
    for authorization in (f"Bearer {token}", f"bearer {issued.api_key}"):
        with gw.client(authorization) as client:
            created = client.post(T2V, json=PROMPT_BODY)
            assert created.status_code == 200, created.text
            assert client.get("/tasks", params={"task_ids": created.json()["data"]["id"]}).json()["data"]


def test_v1_keeps_the_key_pair_and_the_2026_design_uses_the_api_key(gw, kling):
    """With both credentials configured, /v1 is signed with the key pair and the 2026 design sends the API key."""
    issued = _key(gw)
    legacy = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "both designs"}
    with gw.client(_bearer(issued)) as client:
        old = client.post("/v1/videos/text2video", json=legacy).json()["data"]["task_id"]
        new = client.post(T2V, json=PROMPT_BODY).json()["data"]["id"]
    assert kling.sim.task(old).api_key_name == ""  # JWT
    assert kling.sim.task(new).api_key_name == "api-key-1"


def test_only_an_api_key_serves_both_designs(kling, sqlite_url, tmp_path):
    """A gateway holding only a Kling API key forwards /v1 and 2026 creates with it."""
    with running_gateway(kling, sqlite_url, tmp_path / "home", credentials="api") as gw:
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            legacy = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "api key only"}
            assert client.post("/v1/videos/text2video", json=legacy).json()["code"] == 0
            assert client.post(T2V, json=PROMPT_BODY).json()["code"] == 0


def test_access_key_pair_only_refuses_2026_creates_up_front(kling, sqlite_url, tmp_path):
    """Without a Kling API key a 2026 create is 403/1103 naming KLING_API_KEY: nothing held, nothing sent."""
    with running_gateway(kling, sqlite_url, tmp_path / "home", credentials="jwt") as gw:
        issued = _key(gw)
        before = len(kling.sim.tasks())
        with gw.client(_bearer(issued)) as client:
            refused = client.post(T2V, json=PROMPT_BODY)
            listed = client.get("/tasks", params={"task_ids": "123"})
            unauthenticated = httpx.post(gw.url(T2V), json=PROMPT_BODY)
        assert refused.status_code == 403 and refused.json()["code"] == 1103
        assert "KLING_API_KEY" in refused.json()["message"]
        assert listed.status_code == 200 and listed.json()["data"] == []
        assert unauthenticated.status_code == 401  # credentials are checked first
        assert gw.state.ledger.list_reservations() == []
        assert len(kling.sim.tasks()) == before


def test_get_tasks_answers_in_the_order_asked_with_one_batched_request(gw_any, kling):
    """external_task_ids c,a,b,unknown: three items in that order, from one upstream query; unknown left out."""
    issued = _key(gw_any)
    with gw_any.client(_bearer(issued)) as client:
        ids = {}
        for name in ("a", "b", "c"):
            ids[name] = client.post(T2V, json=_with_options(PROMPT_BODY, external_task_id=name)).json()["data"]["id"]
        before = _upstream_queries(gw_any)
        answer = client.get("/tasks", params={"external_task_ids": "c,a,b,unknown"}).json()
        by_task = client.get("/tasks", params={"task_ids": f"{ids['b']},999,{ids['a']}"}).json()
    assert [item["external_id"] for item in answer["data"]] == ["c", "a", "b"]
    assert [item["id"] for item in answer["data"]] == [ids["c"], ids["a"], ids["b"]]
    assert [item["id"] for item in by_task["data"]] == [ids["b"], ids["a"]]
    assert _upstream_queries(gw_any) - before == 2  # one request per GET /tasks


def _upstream_queries(gw: RunningGateway) -> int:
    text = gw.state.metrics.render({})
    total = 0
    for line in text.splitlines():
        if line.startswith("kling_gateway_upstream_seconds_count") and 'operation="query"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, 1201),
        ({"task_ids": "1", "external_task_ids": "x"}, 1201),
        ({"task_ids": ",".join(str(n) for n in range(51))}, 1201),
        ({"task_ids": "1,,2"}, 1201),
        ({"external_task_ids": "x" * 201}, 1201),
    ],
)
def test_get_tasks_refuses_bad_id_lists(gw, params, code):
    """Both kinds, neither, more than 50 ids, an empty id or an overlong one: 400/1201."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        answer = client.get("/tasks", params=params)
    assert answer.status_code == 400 and answer.json()["code"] == code


def test_a_key_cannot_see_another_keys_tasks(gw_any):
    """Bob gets nothing for Alice's task ids, external ids or reservation id, and POST /tasks lists his own only."""
    alice, bob = _key(gw_any, "alice", "p1"), _key(gw_any, "bob", "p2")
    with gw_any.client(_bearer(alice)) as a, gw_any.client(_bearer(bob)) as b:
        task_id = a.post(T2V, json=_with_options(PROMPT_BODY, external_task_id="secret")).json()["data"]["id"]
        own = b.post(T2V, json=PROMPT_BODY).json()["data"]["id"]
        reservation = gw_any.state.ledger.find_by_task(task_id).id
        for params in ({"task_ids": task_id}, {"external_task_ids": "secret"}, {"external_task_ids": reservation}):
            seen = b.get("/tasks", params=params)
            assert seen.status_code == 200 and seen.json()["data"] == [], params
        assert [t["id"] for t in b.post("/tasks", json={}).json()["data"]["result"]] == [own]
        assert [t["id"] for t in a.post("/tasks", json={}).json()["data"]["result"]] == [task_id]
        # a legacy query path never shows a 2026 task either
        assert b.get(f"/v1/videos/text2video/{task_id}").json()["code"] == 1203


def _all_pages(client: httpx.Client, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        data = client.post("/tasks", json={"cursor": cursor} if cursor else {"limit": limit}).json()["data"]
        pages.append([item["id"] for item in data["result"]])
        assert data["count"] == len(data["result"])
        if not data["has_more"]:
            assert data["next_cursor"] == ""
            return pages
        cursor = data["next_cursor"]


def test_post_tasks_pages_the_callers_tasks_newest_first_with_a_cursor(gw_any):
    """limit 2 over five tasks: pages of 2, 2, 1 via next_cursor, newest first, each task exactly once even when
    all were created in the same millisecond; filters and bad bodies."""
    issued = _key(gw_any)
    with gw_any.client(_bearer(issued)) as client:
        made = [client.post(T2V, json=PROMPT_BODY).json()["data"]["id"] for _ in range(5)]
        rows = gw_any.state.tasks.find_refs(issued.key.id, made, external=False)
        order = {row.task_id: (row.created_at // 1000, row.reservation_id) for row in rows}
        pages = _all_pages(client, 2)
        same = now_micros()
        gw_any.state.tasks.backend.run(lambda c: c.execute("UPDATE gateway_tasks SET created_at = ?", (same,)))
        tied = _all_pages(client, 2)
        _wait_status(client, made[-1], "succeeded")
        succeeded = client.post("/tasks", json={"filters": [{"key": "status", "values": ["succeeded"]}]})
        images = client.post("/tasks", json={"filters": [{"key": "product_type", "values": ["image"]}]})
        later = now_micros() // 1000 + 60_000
        future = client.post("/tasks", json={"start_time": later, "end_time": later + 60_000})
        bad = {
            "limit": client.post("/tasks", json={"limit": 501}),
            "cursor": client.post("/tasks", json={"cursor": "not-a-cursor"}),
            "a cursor": client.post(
                "/tasks", json={"cursor": _cursor({"k": "tasks", "s": 0, "e": 9, "l": 2, "a": [1, 5]})}
            ),
            "page": client.post("/tasks", json={"page": 2}),
            "filters": client.post("/tasks", json={"filters": [{"key": "model", "values": ["x"]}]}),
            "json": client.post("/tasks", content=b"{nope", headers={"content-type": "application/json"}),
        }
    assert [len(p) for p in pages] == [2, 2, 1] and [len(p) for p in tied] == [2, 2, 1]
    newest_first = sorted(made, key=order.__getitem__, reverse=True)  # by millisecond, then reservation id
    assert [task for page in pages for task in page] == newest_first
    tied_order = sorted(made, key=lambda task: order[task][1], reverse=True)
    assert [task for page in tied for task in page] == tied_order
    assert made[-1] in [item["id"] for item in succeeded.json()["data"]["result"]]
    assert images.json()["data"]["result"] == [] and future.json()["data"]["result"] == []
    for name, answer in bad.items():
        assert answer.status_code == 400, name
        assert answer.json()["code"] == (1200 if name == "json" else 1201), name
        assert name == "json" or name.split()[-1] in answer.json()["message"]


def _cursor(state: dict[str, Any]) -> str:
    """A cursor as a client could forge one (the gateway's cursors are base64 JSON)."""
    return base64.urlsafe_b64encode(json.dumps({"f": [], **state}).encode()).decode().rstrip("=")


def test_denial_1190_on_a_2026_create_sends_nothing(gw, kling):
    """A hard budget without room: 429/1190 in Kling's envelope with Retry-After, nothing forwarded or held."""
    gw.state.tracker.set_budget("tight", project_id="p1", period="daily", limit_units=4)
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        assert client.post(T2V, json=PROMPT_BODY).status_code == 200
        before = len(kling.sim.tasks())
        denied = client.post(T2V, json=PROMPT_BODY)
    assert denied.status_code == 429 and denied.json()["code"] == DENIAL_CODE
    assert denied.json()["data"]["budget"] == "tight" and int(denied.headers["retry-after"]) > 0
    assert "tight" in denied.json()["message"] and "price 3 units" in denied.json()["message"]
    assert len(kling.sim.tasks()) == before
    assert len(gw.state.ledger.list_reservations(states=["held", "submitted", "committed"])) == 1


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        (T2V, {**PROMPT_BODY, "settings": {"duration": 5, "fps": 60}}, "fps"),
        (T2V, {**PROMPT_BODY, "callback_url": "https://x.test/cb"}, "callback_url"),
        (T2V, {**PROMPT_BODY, "contents": [{"type": "audio", "url": "https://x.test/a.mp3"}]}, "audio"),
        ("/text-to-video/kling-9.9", PROMPT_BODY, "kling-9.9"),
        (T2V, {**PROMPT_BODY, "settings": {"duration": 99}}, "settings.duration"),
    ],
)
def test_unpriceable_2026_create_is_400_1201_naming_what_is_accepted(gw, kling, path, body, named):
    """An unpriced field, content type or model: 400/1201 naming it; nothing reserved or forwarded."""
    issued = _key(gw)
    before = len(kling.sim.tasks())
    with gw.client(_bearer(issued)) as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 400 and answer.json()["code"] == 1201, answer.text
    assert named in answer.json()["message"]
    assert gw.state.ledger.list_reservations() == [] and len(kling.sim.tasks()) == before


@pytest.mark.parametrize(
    "callback",
    ["http://169.254.169.254/latest/meta-data", "http://10.0.0.8/hook", "ftp://x.test/cb", "http://user@x.test/"],
)
def test_options_callback_url_is_checked_like_v1(kling, sqlite_url, tmp_path, callback):
    """options.callback_url to a private, link-local or odd target is 400/1201 before anything is held."""
    with running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both", allow_callback_hosts=()) as gw:
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            answer = client.post(T2V, json=_with_options(PROMPT_BODY, callback_url=callback))
        assert answer.status_code == 400 and answer.json()["code"] == 1201
        assert gw.state.ledger.list_reservations() == []


def test_2026_bodies_are_bounded_like_v1(gw):
    """Deep nesting and huge numbers are 400/1201; an over-cap body is 413 in Kling's envelope."""
    issued = _key(gw)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with gw.client(_bearer(issued)) as client:
        nested = client.post(T2V, json={**PROMPT_BODY, "contents": deep})
        number = client.post(T2V, content=b'{"prompt": "x", "settings": {"duration": 1e999999}}')
        big = client.post(T2V, content=b'{"prompt": "' + b"x" * (11 * 1024 * 1024) + b'"}')
    assert nested.status_code == 400 and nested.json()["code"] == 1201
    assert number.status_code == 400 and number.json()["code"] == 1201
    assert big.status_code == 413 and big.json()["code"] == 1201
    assert gw.state.ledger.list_reservations() == []


def test_duplicate_client_external_id_is_1201_and_never_reaches_kling(gw, kling):
    """options.external_task_id is unique per key: a second create with it is 400/1201."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        first = client.post(T2V, json=_with_options(PROMPT_BODY, external_task_id="once"))
        before = len(kling.sim.tasks())
        again = client.post(T2V, json=_with_options(PROMPT_BODY, external_task_id="once"))
    assert first.status_code == 200
    assert again.status_code == 400 and again.json()["code"] == 1201 and "once" in again.json()["message"]
    assert len(kling.sim.tasks()) == before


def test_ambiguous_create_keeps_the_hold_and_the_worker_resolves_it(kling, sqlite_url, tmp_path):
    """Kling times out (5002) yet creates the task, every lookup fails: 504/5002, hold kept; then the settle
    worker finds the task by the gateway's external id, records it and commits Kling's charge."""
    with running_gateway(
        kling, sqlite_url, tmp_path / "home", credentials="both", upstream_timeout=0.5, settle_interval=0.05
    ) as gw:
        issued = _key(gw)
        kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST")
        lookups = kling.sim.faults.inject(FaultKind.UNAVAILABLE_5001, path="/tasks", method="GET", count=None)
        try:
            with gw.client(_bearer(issued)) as client:
                answer = client.post(T2V, json=_with_options(PROMPT_BODY, external_task_id="amb"))
        finally:
            kling.sim.faults.clear()
        assert lookups.fired >= 1
        assert answer.status_code == 504 and answer.json()["code"] == 5002 and "amb" in answer.json()["message"]
        (info,) = gw.state.ledger.list_reservations()
        assert info.state is ReservationState.SUBMITTED and info.task_id is None
        created = [t for t in kling.sim.tasks() if t.external_task_id == info.id]
        assert len(created) == 1  # Kling did create it
        gw.state.tasks.backend.run(lambda c: c.execute("UPDATE gateway_tasks SET next_check_at = ?", (now_micros(),)))
        done = wait_until(lambda: gw.state.ledger.get_reservation(info.id).state is ReservationState.COMMITTED, 10)
        assert done
        settled = gw.state.ledger.get_reservation(info.id)
        assert settled.task_id == created[0].task_id and settled.actual_milli == 3000
        with gw.client(_bearer(issued)) as client:
            assert client.get("/tasks", params={"external_task_ids": "amb"}).json()["data"][0]["external_id"] == "amb"


def test_settles_from_billing_with_a_drifted_unit_charge(gw, kling):
    """Kling charges 7 units where 3 were held: the ledger commits 7 (overage), read from billing[]."""
    issued = _key(gw)
    kling.sim.script.charge_next("7")
    with gw.client(_bearer(issued)) as client:
        task_id = client.post(T2V, json=PROMPT_BODY).json()["data"]["id"]
        done = _wait_status(client, task_id, "succeeded")
    assert done["billing"] == [{"charge_type": "unit", "amount": "7", "package_type": "video"}]
    info = gw.state.ledger.find_by_task(task_id)
    assert info.actual_milli == 7000 and info.overage_milli == 4000


def test_failed_2026_task_releases_the_hold(gw):
    """A task failed before generation (billing [{"amount": "0"}]) releases its hold."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        body = {**PROMPT_BODY, "prompt": "x [sim:fail_early=moderation]"}
        task_id = client.post(T2V, json=body).json()["data"]["id"]
        failed = _wait_status(client, task_id, "failed")
    assert failed["message"] == "moderation"
    assert gw.state.ledger.find_by_task(task_id).state is ReservationState.RELEASED


def test_cash_account_settles_the_dollars_kling_took(sqlite_url, tmp_path):
    """A cash-only Kling account: billing[] has a USD cash row; the ledger commits those dollars."""
    config = SimulatorConfig.single(packs={}, balance="100", currency="USD", queued_seconds=0.05, running_seconds=0.1)
    with (
        running_simulator(config) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both") as gw,
    ):
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            task_id = client.post(T2V, json=PROMPT_BODY).json()["data"]["id"]
            done = _wait_status(client, task_id, "succeeded")
        (row,) = done["billing"]
        assert row["charge_type"] == "cash" and row["currency"] == "USD"
        info = gw.state.ledger.find_by_task(task_id)
        assert info.state is ReservationState.COMMITTED
        assert info.actual_nano == int(Decimal(row["amount"]) * 10**9)


@pytest.mark.parametrize("product", list(PRODUCTS))
def test_callbacks_of_2026_tasks_settle_and_are_forwarded_with_client_ids(tmp_path, sqlite_url, product):
    """Kling calls the gateway back with the new shape; the gateway settles, forwards once per status with the
    client's external_id, signed with the key's webhook secret; Kling only ever saw the gateway's URL and id."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    config = SimulatorConfig.single(webhook_secret=secret, queued_seconds=0.05, running_seconds=0.1)
    with (
        running_simulator(config) as kling,
        running_gateway(
            kling, sqlite_url, tmp_path / "home", public=True, webhook_secret=secret, credentials="both"
        ) as gw,
        callback_receiver() as receiver,
    ):
        issued = _key(gw)
        path, product_body, _ = PRODUCTS[product]
        body = _with_options(product_body, external_task_id="cb-2026", callback_url=receiver.url)
        with gw.client(_bearer(issued)) as client:
            task_id = client.post(path, json=body).json()["data"]["id"]
        reservation = gw.state.ledger.find_by_task(task_id)
        upstream = kling.sim.task(task_id)
        assert upstream.callback_url.startswith(gw.url(f"/callbacks/kling/{reservation.id}/"))
        assert upstream.external_task_id == reservation.id
        wait_until(lambda: gw.state.ledger.find_by_task(task_id).state is ReservationState.COMMITTED, 10)
        received = wait_until(lambda: [r for r in receiver.received if b'"succeeded"' in r.body], 10)
        forwarded = json.loads(received[-1].body)
        assert forwarded["id"] == task_id and forwarded["external_id"] == "cb-2026"
        assert Decimal(forwarded["billing"][0]["amount"]) * 1000 == gw.state.ledger.find_by_task(task_id).actual_milli
        assert reservation.id.encode() not in received[-1].body and b"callbacks/kling" not in received[-1].body
        verify_webhook(issued.webhook_secret, received[-1].headers, received[-1].body, now=int(time.time()))
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, received[-1].headers, received[-1].body, now=int(time.time()))
        time.sleep(0.2)  # Kling's duplicate or late callbacks do not forward a status twice
        statuses = [json.loads(r.body)["status"] for r in receiver.received]
        assert len(statuses) == len(set(statuses))


def test_our_own_client_speaks_the_2026_design_through_the_gateway(gw):
    """KlingClient with the virtual API key: create, get_tasks, find_tasks and wait all work via the gateway."""
    issued = _key(gw)
    with KlingClient(api_key=issued.api_key, base_url=gw.base_url) as client:
        task = client.create_video_from_text("kling-3.0", "a fox", resolution="720p", duration=5)
        done = client.wait(task, timeout=10, poll_interval=0.05, max_poll_interval=0.1)
        (again,) = client.get_tasks([task.task_id])
        listed = client.find_tasks(limit=10)
    assert done.status.value == "succeeded" and done.charged_units == Decimal("3")
    assert again.task_id == task.task_id and [t.task_id for t in listed.tasks] == [task.task_id]


@pytest.mark.parametrize("with_api_key", [True, False])
def test_serve_process_takes_the_api_key_from_the_environment(kling, sqlite_url, tmp_path, with_api_key):
    """`serve` with KLING_ACCESS_KEY/KLING_SECRET_KEY and KLING_API_KEY serves both designs (the 2026 one with the
    API key); without the API key it refuses 2026 creates with 403/1103 while /v1 works."""
    from tests.serveproc import gateway_env, running_serve

    home = tmp_path / "home"
    env = gateway_env(home, **({"KLING_API_KEY": kling.api_key} if with_api_key else {}))
    legacy = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "from the environment"}
    with running_serve(kling, sqlite_url, home, "--init", env=env) as served, served.client() as client:
        new = client.post(T2V, json=PROMPT_BODY)
        old = client.post("/v1/videos/text2video", json=legacy)
    assert old.status_code == 200 and old.json()["code"] == 0
    if with_api_key:
        assert new.status_code == 200 and kling.sim.task(new.json()["data"]["id"]).api_key_name == "api-key-1"
    else:
        assert new.status_code == 403 and new.json()["code"] == 1103


def test_client_ids_are_shown_in_each_designs_own_place():
    """external_id on a 2026 item ("" without one); task_info on /v1; a /v1 answer without a task is left alone."""
    from kling_budget.server.proxy import show_client_ids

    item = {"id": "1", "status": "succeeded", "external_id": "gw-abc", "callback_url": "https://gw/cb"}
    assert show_client_ids(item, "mine", model_in_path=True) == {
        "id": "1",
        "status": "succeeded",
        "external_id": "mine",
    }
    assert show_client_ids(item, None, model_in_path=True)["external_id"] == ""
    legacy = {"task_id": "2", "task_status": "succeed", "task_info": {"external_task_id": "gw-abc"}}
    assert show_client_ids(legacy, "mine")["task_info"] == {"external_task_id": "mine"}
    assert show_client_ids(legacy, None)["task_info"] == {}
    synchronous = {"session_id": "s", "face_data": []}
    assert show_client_ids(synchronous, None) == synchronous


def test_2026_routes_sit_before_the_fallback_route(gw):
    """A trailing slash is served as without; another method on a 2026 path is the fallback's 401, then 404/1202."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        created = client.post(T2V + "/", json=PROMPT_BODY)
        queried = client.get("/tasks/", params={"task_ids": created.json()["data"]["id"]})
        wrong_method = client.get(T2V)
    anonymous = httpx.get(gw.url(T2V))
    assert created.status_code == 200 and queried.json()["data"][0]["id"] == created.json()["data"]["id"]
    assert wrong_method.status_code == 404 and wrong_method.json()["code"] == 1202
    assert "/text-to-video/<model>" in wrong_method.json()["message"]
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 1001
