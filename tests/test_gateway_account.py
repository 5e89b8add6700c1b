"""The gateway's account routes over real HTTP: ``GET /account/costs``, ``POST /account/billing/package|balance``.

A virtual key sees its own budgets and its own committed tasks in Kling's shapes; the admin token sees Kling's
own answer; a made-up key is 401. Storage-backed answers run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget.kling import KlingClient
from kling_budget.ledger import ReservationState
from kling_budget.server.task_store import now_micros
from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.gatewayutil import ADMIN_TOKEN, RunningGateway, kling_sample_token, running_gateway, wait_until

T2V_2026 = "/text-to-video/kling-3.0"
BODY_2026 = {"prompt": "a heron at dawn", "settings": {"duration": 5, "resolution": "720p"}}
T2V_V1 = "/v1/videos/text2video"
BODY_V1 = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a heron at dawn"}
ACCOUNT_ROUTES = [
    ("GET", "/account/costs", None),
    ("POST", "/account/billing/package", {"start_time": 0, "end_time": 1}),
    ("POST", "/account/billing/balance", {"start_time": 0, "end_time": 1}),
]


@pytest.fixture
def kling(quick_kling: Any) -> Any:
    """The module's simulator (tasks finish within a fraction of a second)."""
    return quick_kling


@pytest.fixture
def gw(kling, ledger_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(kling, ledger_url, tmp_path / "home", credentials="both", settle_interval=0) as gateway:
        yield gateway


def _window() -> dict[str, int]:
    now = now_micros() // 1000
    return {"start_time": now - 3_600_000, "end_time": now + 60_000}


def _settled(gw: RunningGateway, client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    """Create a task and query it until its reservation is committed; its Kling task id."""
    data = client.post(path, json=body).json()["data"]
    task_id = data.get("task_id") or data["id"]

    def committed() -> bool:
        if path.startswith("/v1/"):
            client.get(f"{path}/{task_id}")
        else:
            client.get("/tasks", params={"task_ids": task_id})
        return gw.state.ledger.find_by_task(task_id).state is ReservationState.COMMITTED

    wait_until(committed, 10)
    return str(task_id)


@pytest.mark.parametrize(("method", "path", "body"), ACCOUNT_ROUTES)
@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, 1001), ("Bearer kbk_made-up-key", 1000), ("Bearer a.b.c", 1002), ("Basic abc", 1002)],
)
def test_account_routes_refuse_bad_credentials(kling, sqlite_url, tmp_path, method, path, body, authorization, code):
    """A made-up, malformed or missing credential is 401 with Kling's code on every account route."""
    with (
        running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both") as gw,
        gw.client(authorization) as client,
    ):
        answer = client.request(method, path, json=body)
    assert answer.status_code == 401 and answer.json()["code"] == code
    assert answer.json()["data"] is None


def test_account_costs_shows_the_keys_own_budgets_as_packs(gw):
    """One pack per budget the key owns, remaining after a hold; wider and other tenants' budgets absent."""
    tracker = gw.state.tracker
    tracker.set_budget("p1-daily", project_id="p1", period="daily", limit_units=50)
    tracker.set_budget("p1-total-usd", project_id="p1", period="total", limit_usd="20")
    tracker.set_budget("alice-weekly", user_id="alice", period="weekly", limit_units=10)
    tracker.set_budget("account-monthly", period="monthly", limit_units=1000)
    tracker.set_budget("p2-daily", project_id="p2", period="daily", limit_units=5)
    issued = gw.state.keys.create("app", project="p1", user="alice", kind="both")
    with gw.client(f"Bearer {issued.api_key}") as client:
        assert client.post(T2V_2026, json=BODY_2026).json()["code"] == 0
        answer = client.get("/account/costs", params={"start_time": 0, "end_time": now_micros() // 1000})
        one = client.get("/account/costs", params={"resource_pack_name": "alice-weekly"})
        bad = client.get("/account/costs", params={"start_time": "yesterday"})
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["code"] == 0 and data["msg"] == "success"
    packs = {p["resource_pack_name"]: p for p in data["resource_pack_subscribe_infos"]}
    assert set(packs) == {"p1-daily", "p1-total-usd (USD)", "alice-weekly"}
    daily = packs["p1-daily"]
    assert (daily["total_quantity"], daily["remaining_quantity"], daily["status"]) == (50, 47, "online")
    assert daily["resource_pack_type"] == "constant_period" and daily["invalid_time"] > daily["effective_time"]
    assert packs["p1-total-usd (USD)"]["resource_pack_type"] == "decreasing_total"
    assert packs["p1-total-usd (USD)"]["invalid_time"] is None
    assert Decimal(str(packs["p1-total-usd (USD)"]["remaining_quantity"])) == Decimal("19.58")
    assert packs["alice-weekly"]["status"] == "online" and packs["alice-weekly"]["remaining_quantity"] == 7
    assert [p["resource_pack_name"] for p in one.json()["data"]["resource_pack_subscribe_infos"]] == ["alice-weekly"]
    assert bad.status_code == 400 and bad.json()["code"] == 1201 and "start_time" in bad.json()["message"]


def test_account_costs_says_run_out_and_our_client_parses_it(gw):
    """An exhausted budget is runOut; KlingClient.get_account_costs reads the gateway's answer like Kling's."""
    gw.state.tracker.set_budget("p1-tiny", project_id="p1", period="daily", limit_units=3)
    issued = gw.state.keys.create("app", project="p1", kind="both")
    with gw.client(f"Bearer {issued.api_key}") as client:
        assert client.post(T2V_2026, json=BODY_2026).json()["code"] == 0
    with KlingClient(issued.key.access_key, issued.secret_key, base_url=gw.base_url) as ours:
        (pack,) = ours.get_account_costs(0, now_micros() // 1000 + 1000)
    assert pack.name == "p1-tiny" and pack.status == "runOut"
    assert pack.total_quantity == Decimal("3") and pack.remaining_quantity == Decimal("0")


def test_billing_package_lists_the_keys_committed_tasks_of_both_designs(gw):
    """Rows per committed task (v1 and 2026) with the committed units, paged by cursor; no other key's rows."""
    alice = gw.state.keys.create("alice", project="p1", kind="both")
    bob = gw.state.keys.create("bob", project="p2", kind="both")
    with gw.client(f"Bearer {alice.api_key}") as a, gw.client(f"Bearer {bob.api_key}") as b:
        old = _settled(gw, a, T2V_V1, BODY_V1)
        new = _settled(gw, a, T2V_2026, BODY_2026)
        bobs = _settled(gw, b, T2V_2026, BODY_2026)
        first = a.post("/account/billing/package", json={**_window(), "limit": 1}).json()["data"]
        second = a.post("/account/billing/package", json={"cursor": first["next_cursor"]}).json()["data"]
        theirs = b.post("/account/billing/package", json=_window()).json()["data"]
        filtered = a.post(
            "/account/billing/package",
            json={**_window(), "filters": [{"key": "api_key_name", "values": ["bob"]}]},
        ).json()["data"]
        balance = a.post("/account/billing/balance", json=_window()).json()["data"]
        missing = a.post("/account/billing/package", json={})
    rows = first["result"] + second["result"]
    assert first["has_more"] and not second["has_more"] and first["count"] == 1
    assert [r["task_id"] for r in rows] == [new, old]  # most recently committed first
    by_task = {r["task_id"]: r for r in rows}
    assert by_task[old]["deduction_amount"] == "1.5" and by_task[new]["deduction_amount"] == "3"
    assert by_task[new]["product_function"] == "text-to-video" and by_task[old]["product_function"] == "text2video"
    assert by_task[new]["resolution"] == "720p" and by_task[new]["duration"] == "5"
    assert all(r["api_key_name"] == "alice" and r["product_type"] == "video" for r in rows)
    assert set(rows[0]) == {
        "package_id", "product_type", "task_id", "api_key_name", "product_function", "model_name", "resolution",
        "duration", "refer_video_input", "video_sound", "voice_control", "deduction_time",
        "unit_before_deduction", "deduction_amount", "unit_after_deduction",
    }  # fmt: skip
    assert [r["task_id"] for r in theirs["result"]] == [bobs]
    assert filtered["result"] == [] and balance["result"] == []
    assert missing.status_code == 400 and missing.json()["code"] == 1201 and "start_time" in missing.json()["message"]


def test_billing_rows_parse_with_our_client_and_match_the_ledger(gw):
    """KlingClient.get_billing_package over the gateway: each row's deduction is the ledger's commit."""
    issued = gw.state.keys.create("app", project="p1", kind="both")
    with gw.client(f"Bearer {issued.api_key}") as client:
        tasks = [_settled(gw, client, T2V_2026, BODY_2026) for _ in range(3)]
    window = _window()
    with KlingClient(api_key=issued.api_key, base_url=gw.base_url) as ours:
        page = ours.get_billing_package(window["start_time"], window["end_time"], limit=500)
    assert sorted(r.task_id for r in page.records) == sorted(tasks)
    for record in page.records:
        info = gw.state.ledger.find_by_task(record.task_id)
        assert record.amount * 1000 == info.actual_milli and record.api_key_name == "app"


def test_billing_balance_lists_tasks_kling_charged_in_cash(sqlite_url, tmp_path):
    """On a cash-only Kling account the committed dollars are balance rows in USD, none on the package ledger."""
    config = SimulatorConfig.single(packs={}, balance="100", currency="USD", queued_seconds=0.05, running_seconds=0.1)
    with (
        running_simulator(config) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both") as gw,
    ):
        issued = gw.state.keys.create("app", project="p1", kind="both")
        with gw.client(f"Bearer {issued.api_key}") as client:
            task_id = _settled(gw, client, T2V_2026, BODY_2026)
            balance = client.post("/account/billing/balance", json=_window()).json()["data"]["result"]
            package = client.post("/account/billing/package", json=_window()).json()["data"]["result"]
        info = gw.state.ledger.find_by_task(task_id)
    (row,) = balance
    assert row["task_id"] == task_id and row["currency"] == "USD" and row["cash_type"] == "balance"
    assert Decimal(row["deduction_amount"]) * 10**9 == info.actual_nano
    assert package == []


def test_admin_token_gets_klings_own_account_answer(kling, sqlite_url, tmp_path):
    """With the admin token the account routes answer Kling's own data for the account (read-only)."""
    with (
        running_gateway(kling, sqlite_url, tmp_path / "home", credentials="both") as gw,
        gw.client(f"Bearer {ADMIN_TOKEN}") as admin,
    ):
        costs = admin.get("/account/costs", params={"start_time": 0, "end_time": now_micros() // 1000})
        package = admin.post("/account/billing/package", json=_window())
        bad = admin.post("/account/billing/package", json={"limit": 0})
        create = admin.post(T2V_2026, json=BODY_2026)
    names = [p["resource_pack_name"] for p in costs.json()["data"]["resource_pack_subscribe_infos"]]
    assert costs.status_code == 200 and names == [p.name for p in kling.sim.packs()]
    assert package.status_code == 200 and "result" in package.json()["data"]
    assert bad.status_code == 400 and bad.json()["code"] == 1201  # checked before anything is sent
    assert create.status_code == 401  # the admin token is no tenant key


def test_account_routes_work_with_a_sample_signed_jwt(gw):
    """A client signing JWTs like Kling's sample reads its account view too (a 'test credentials' call)."""
    issued = gw.state.keys.create("app", project="p1", kind="both")
    token = kling_sample_token(issued.key.access_key, issued.secret_key)
    with gw.client(f"Bearer {token}") as client:
        answer = client.get("/account/costs", params={"start_time": 0, "end_time": 1})
    assert answer.status_code == 200 and answer.json()["code"] == 0
    assert answer.json()["data"]["resource_pack_subscribe_infos"] == []
