"""The admin API in process: budgets, usage, series, jobs, holds, alerts, prices, quotes and keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_budget.kling import KlingClient
from kling_budget.money import milli_to_units, nano_to_usd
from kling_budget.server import GatewayState
from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.admin_support import NOW, SyncClient, auth, make_app, make_state, seed
from tests.gatewayutil import ADMIN_TOKEN as GATEWAY_ADMIN_TOKEN
from tests.gatewayutil import running_gateway


@pytest.fixture
def state(tmp_path: Path) -> Iterator[GatewayState]:
    """A gateway state with the seeded month."""
    st = make_state(tmp_path)
    st.seeded = seed(st)  # type: ignore[attr-defined]
    yield st
    st.tracker.close()


@pytest.fixture
def client(state: GatewayState) -> Iterator[SyncClient]:
    """An in-process client of the admin API."""
    c = SyncClient(make_app(state))
    yield c
    c.close()


def get(client: SyncClient, path: str, status: int = 200, /, **params: Any) -> Any:
    response = client.get("/admin/api" + path, params=params, headers=auth())
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def send(client: SyncClient, method: str, path: str, body: Any, status: int) -> Any:
    response = client.request(method, "/admin/api" + path, json=body, headers=auth())
    assert response.status_code == status, response.text
    return response.json()


def error(payload: Any) -> str:
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
    message = payload["error"]["message"]
    assert "\n" not in message
    return str(message)


# ------------------------------------------------------------------------------------------------ budgets


def test_budget_list_carries_the_ledger_status_exactly(client: SyncClient, state: GatewayState) -> None:
    """Every budget's committed, held, remaining and reset time are the ledger's, as exact strings."""
    budgets = {b["name"]: b for b in get(client, "/budgets")["budgets"]}
    assert sorted(budgets) == ["account", "alice-daily", "marketing", "research-total"]
    for name, shown in budgets.items():
        status = state.tracker.ledger.budget_status(name)
        c = status.counters
        assert shown["committed_usd"] == f"{nano_to_usd(c.committed_nano):f}"
        assert shown["held_usd"] == f"{nano_to_usd(c.held_nano):f}"
        assert shown["committed_units"] == f"{milli_to_units(c.committed_milli):f}"
        assert shown["held_units"] == f"{milli_to_units(c.held_milli):f}"
        assert shown["percent"] == str(status.percent)
        assert shown["resets_at"] == (status.window.end.isoformat() if status.window.end else None)
    account = budgets["account"]
    # 4 x $0.70 + 4 x $0.28 + $0.42 (3 units committed for the overage job) = $4.34; held: $0.35 + $0.56
    assert (account["committed_usd"], account["held_usd"], account["remaining_usd"]) == ("4.34", "0.91", "54.75")
    assert account["resets_at"] == "2026-04-01T00:00:00+00:00"
    assert budgets["research-total"]["resets_at"] is None
    assert budgets["alice-daily"]["hard"] is False


def test_budget_forecast_projects_to_the_window_end(client: SyncClient) -> None:
    """The forecast of a monthly budget projects its burn rate to the month's end."""
    account = get(client, "/budgets/account")
    forecast = account["forecast"]
    assert forecast is not None and forecast["confident"] is True
    (usd,) = forecast["limits"]
    # used $5.25 over 9.5 of 31 days -> $17.13 at the end of March (projections are shown to the cent)
    used = Decimal("5.25")
    expected = (used * 31 / Decimal("9.5")).quantize(Decimal("0.01"))
    assert usd["limit_kind"] == "usd" and usd["used"] == "5.25"
    assert usd["projected"] == str(expected) == "17.13"
    assert usd["will_exceed"] is False


def test_budget_filters_keep_the_budgets_that_apply(client: SyncClient) -> None:
    """Filtering by project keeps account-wide budgets and that project's, not another project's."""
    names = [b["name"] for b in get(client, "/budgets", project="marketing")["budgets"]]
    assert names == ["account", "alice-daily", "marketing"]
    names = [b["name"] for b in get(client, "/budgets", project="research", user="bob")["budgets"]]
    assert names == ["account", "research-total"]


def test_budget_create_get_replace_delete(client: SyncClient) -> None:
    """POST creates (201, then 409), PUT replaces (200) or creates (201), DELETE removes (then 404)."""
    body = {"name": "video-team", "project": "video", "limit_usd": "12.50", "period": "weekly", "alert_at": [90]}
    created = send(client, "POST", "/budgets", body, 201)
    assert created["limit_usd"] == "12.50" and created["period"] == "weekly" and created["thresholds"] == [90]
    assert created["scope_fields"]["project"] == "video" and created["week_start"] == "monday"
    assert "exists" in error(send(client, "POST", "/budgets", body, 409))
    replaced = send(client, "PUT", "/budgets/video-team", {"project": "video", "limit_units": 40, "hard": False}, 200)
    assert (replaced["limit_units"], replaced["limit_usd"], replaced["hard"]) == ("40", None, False)
    assert get(client, "/budgets/video-team")["limit_units"] == "40"
    made = send(
        client, "PUT", "/budgets/new-one", {"limit_usd": 3, "timezone": "Asia/Kolkata", "week_start": "sun"}, 201
    )
    assert made["timezone"] == "Asia/Kolkata" and made["week_start"] == "sunday"
    assert send(client, "DELETE", "/budgets/video-team", None, 200) == {"deleted": "video-team"}
    assert "video-team" in error(get(client, "/budgets/video-team", 404))
    error(send(client, "DELETE", "/budgets/video-team", None, 404))


def test_budget_update_keeps_the_window_counters(client: SyncClient) -> None:
    """Raising a limit keeps what the window already used."""
    before = get(client, "/budgets/marketing")
    after = send(client, "PUT", "/budgets/marketing", {"project": "marketing", "limit_units": "300"}, 200)
    assert after["committed_units"] == before["committed_units"] and after["held_units"] == before["held_units"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "x", "limit_usd": 1.5}, "not a JSON number with a fraction"),
        ({"name": "x"}, "limit_units and/or limit_usd"),
        ({"name": "x", "limit_usd": "0"}, "greater than 0"),
        ({"name": "x", "limit_usd": "1.0000000001"}, "9 after"),
        ({"name": "x", "limit_units": "10000000000000"}, "12 digits"),
        ({"name": "x", "limit_usd": "755289213803.9"}, "9 digits"),
        ({"name": "x", "limit_usd": "5", "alert_at": None}, "'alert_at' is null"),
        ({"name": "x", "limit_usd": "5", "period": "yearly"}, "unknown period"),
        ({"name": "x", "limit_usd": "5", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"name": "x", "limit_usd": "5", "timezone": "../../etc/passwd"}, "time zone"),
        ({"name": "x", "limit_usd": "5", "week_start": 9}, "week_start"),
        ({"name": "x", "limit_usd": "5", "alert_at": [0]}, "alert_at"),
        ({"name": "x", "limit_usd": "5", "unit_pack": "audio"}, "pack type"),
        ({"name": "x", "limit_usd": "5", "project": "a\x00b"}, "control characters"),
        ({"name": "x", "limit_usd": "5", "colour": "red"}, "unknown field 'colour'"),
        ({"name": "bad name!", "limit_usd": "5"}, "budget name"),
        ({"name": 5, "limit_usd": "5"}, "name must be a string"),
        ({"name": "x", "limit_usd": "5", "hard": "yes"}, "hard must be true or false"),
    ],
)
def test_budget_bad_input_is_one_clear_400(client: SyncClient, body: dict[str, Any], words: str) -> None:
    """Each invalid budget gets a 400 whose one-line message names the problem; nothing is created."""
    assert words in error(send(client, "POST", "/budgets", body, 400))
    assert "x" not in [b["name"] for b in get(client, "/budgets")["budgets"]]


def test_malformed_bodies(client: SyncClient) -> None:
    """Not JSON, not an object, NaN, the wrong media type and an oversized body are refused."""
    for raw in (b"{", b"[1]", b'{"name": NaN}', b"\xff"):
        response = client.post(
            "/admin/api/budgets", content=raw, headers={**auth(), "content-type": "application/json"}
        )
        assert response.status_code == 400, raw
    response = client.post("/admin/api/budgets", content=b"name=x", headers={**auth(), "content-type": "text/plain"})
    assert response.status_code == 415
    big = b'{"name": "' + b"a" * 70_000 + b'"}'
    response = client.post("/admin/api/budgets", content=big, headers={**auth(), "content-type": "application/json"})
    assert response.status_code == 413
    deep = b"[" * 100_000 + b"]" * 100_000
    response = client.post("/admin/api/quote", content=deep, headers={**auth(), "content-type": "application/json"})
    assert response.status_code in (400, 413)


# ------------------------------------------------------------------------------------------------ usage


def test_usage_groups_and_totals(client: SyncClient) -> None:
    """Usage by project for the month: exact sums per project and in total."""
    usage = get(client, "/usage", group_by="project")
    rows = {r["group"]["project"]: r for r in usage["rows"]}
    assert rows["marketing"]["committed_usd"] == "2.80" and rows["marketing"]["held_usd"] == "0.35"
    assert rows["research"]["committed_usd"] == "1.54" and rows["research"]["held_usd"] == "0.56"
    assert usage["totals"]["committed_usd"] == "4.34" and usage["totals"]["jobs"] == 9
    assert usage["start"] == "2026-03-01T00:00:00+00:00" and usage["period"] == "month"


def test_usage_never_adds_video_and_image_units(client: SyncClient, state: GatewayState) -> None:
    """Units of different pack types stay apart (units_by_pack); a single units figure only when there is one."""
    state.tracker.reserve(model="kling-v2", product="image", n=4, project_id="marketing").commit()  # 16 image units
    usage = get(client, "/usage", group_by="project")
    rows = {r["group"]["project"]: r for r in usage["rows"]}
    marketing, research = rows["marketing"], rows["research"]
    assert marketing["committed_units"] is None and marketing["units_by_pack"]["image"]["committed"] == "16"
    assert research["committed_units"] == research["units_by_pack"]["video"]["committed"]
    assert usage["totals"]["committed_units"] is None and set(usage["totals"]["units_by_pack"]) == {"image", "video"}
    series = get(client, "/usage/series")
    assert series["points"][-1]["cumulative_units"] is None
    video_only = get(client, "/usage/series", pack_type="video")
    assert video_only["points"][-1]["cumulative_units"] is not None


def test_usage_filters_periods_and_time_zones(client: SyncClient) -> None:
    """Filters, today / last-Nd / from-to periods and local days in another time zone."""
    usage = get(client, "/usage", group_by="model", user="bob")
    assert [r["group"]["model"] for r in usage["rows"]] == ["kling-v2-1"]
    today = get(client, "/usage", group_by="project", period="today")
    assert {r["group"]["project"] for r in today["rows"]} == {"marketing", "research"}
    assert today["totals"]["committed_usd"] == "0.42"
    days = get(client, "/usage", group_by="day", **{"from": "2026-03-02", "to": "2026-03-04"})
    assert [r["group"]["day"] for r in days["rows"]] == ["2026-03-02", "2026-03-03"]
    # 09:30 UTC is 15:00 in Kolkata: same day; in Honolulu (-10) it is 23:30 the day before
    hawaii = get(client, "/usage", group_by="day", timezone="Pacific/Honolulu", period="last-30d")
    assert "2026-03-01" in [r["group"]["day"] for r in hawaii["rows"]]
    model = get(client, "/usage", group_by="project", model="Kling-V2.6")
    assert [r["group"]["project"] for r in model["rows"]] == ["marketing"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "project,project"}, "group_by"),
        ({"period": "fortnight"}, "unknown period"),
        ({"period": "last-99999d"}, "last-"),
        ({"period": "last-0d"}, "from 1"),
        ({"period": "month", "from": "2026-03-01"}, "not both"),
        ({"to": "2026-03-01"}, "to needs from"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "after from"),
        ({"from": "yesterday"}, "ISO 8601"),
        ({"from": "0001-01-01"}, "between the years"),
        ({"timezone": "Nowhere/Land"}, "unknown time zone"),
        ({"pack_type": "audio"}, "pack_type"),
        ({"projet": "typo"}, "unknown query parameter 'projet'"),
        ({"project": ""}, "'project' is empty"),
        ({"week_start": "8"}, "week_start"),
    ],
)
def test_usage_bad_query_is_400(client: SyncClient, params: dict[str, str], words: str) -> None:
    """Bad usage queries get one clear 400."""
    assert words in error(get(client, "/usage", 400, **params))


def test_repeated_query_parameter_is_400(client: SyncClient) -> None:
    """A parameter given twice is ambiguous."""
    response = client.get("/admin/api/usage?project=a&project=b", headers=auth())
    assert response.status_code == 400 and "more than once" in error(response.json())


def test_series_is_cumulative_and_carries_budget_lines(client: SyncClient) -> None:
    """Daily points for the month, cumulative sums ending at the totals, and the account budget's line."""
    series = get(client, "/usage/series")
    assert series["bucket"] == "day" and len(series["points"]) == 31
    assert series["points"][0]["label"] == "2026-03-01" and series["points"][-1]["label"] == "2026-03-31"
    last = series["points"][-1]
    assert last["cumulative_committed_usd"] == series["totals"]["committed_usd"] == "4.34"
    assert last["cumulative_usd"] == "5.25"
    running = [Decimal(p["cumulative_usd"]) for p in series["points"]]
    assert running == sorted(running)
    assert [line["budget"] for line in series["budget_lines"]] == ["account"]
    marketing = get(client, "/usage/series", project="marketing")
    assert [line["budget"] for line in marketing["budget_lines"]] == ["marketing"]
    assert marketing["budget_lines"][0]["limit_units"] == "150"
    assert get(client, "/usage/series", period="last-7d")["budget_lines"] == []
    assert get(client, "/usage/series", period="week")["budget_lines"] == []
    berlin = get(client, "/usage/series", timezone="Europe/Berlin")
    assert [line["budget"] for line in berlin["budget_lines"]] == ["account"]
    alice = get(client, "/usage/series", user="alice", period="today")
    assert [(line["budget"], line["limit_usd"]) for line in alice["budget_lines"]] == [("alice-daily", "3.00")]


def test_series_hours_for_today_in_a_half_hour_zone(client: SyncClient) -> None:
    """Today in Asia/Kolkata: 24 local hours; the 09:00 UTC jobs land at 14:00 local."""
    series = get(client, "/usage/series", period="today", timezone="Asia/Kolkata")
    assert series["bucket"] == "hour" and len(series["points"]) == 24
    busy = [p["label"] for p in series["points"] if p["jobs"] or p["held_usd"] != "0.00"]
    assert busy == ["2026-03-10T14:00+05:30"]
    assert "bucket=day" in error(get(client, "/usage/series", 400, period="last-60d", bucket="hour"))


# ------------------------------------------------------------------------------------------------ jobs and holds


def test_jobs_with_status_and_cost(client: SyncClient, state: GatewayState) -> None:
    """Recent jobs newest first; a committed job costs what Kling charged, a released one nothing."""
    ids = state.seeded  # type: ignore[attr-defined]
    jobs = {j["id"]: j for j in get(client, "/reservations", limit=50)["reservations"]}
    assert len(jobs) == 12
    over = jobs[ids["overage"]]
    assert (over["state"], over["cost_units"], over["overage_units"], over["cost_usd"]) == (
        "committed",
        "3",
        "1",
        "0.42",
    )
    released = jobs[ids["released"]]
    assert (released["state"], released["cost_usd"], released["release_reason"]) == (
        "released",
        "0.00",
        "failed upstream",
    )
    assert jobs[ids["submitted"]]["task_id"] == "task-sub-1"
    assert jobs[ids["held"]]["params"]["mode"] == "pro"
    one = get(client, f"/reservations/{ids['held']}")
    assert one == jobs[ids["held"]]
    assert "no job with reservation id or Kling task id" in error(get(client, "/reservations/nope", 404))


def test_a_job_is_listed_and_found_by_the_kling_task_id_its_client_holds(
    client: SyncClient, state: GatewayState
) -> None:
    """Jobs lead with Kling's task id, the reservation id beside it; either finds the job."""
    ids = state.seeded  # type: ignore[attr-defined]
    (job,) = get(client, "/reservations", task_id="task-sub-1")["reservations"]
    assert list(job)[:3] == ["task_id", "id", "external_task_id"]
    assert (job["task_id"], job["id"], job["external_task_id"]) == ("task-sub-1", ids["submitted"], None)
    assert get(client, "/reservations/task-sub-1") == get(client, f"/reservations/{ids['submitted']}") == job
    assert get(client, "/reservations", task_id="task-unknown")["reservations"] == []
    assert "without state" in error(get(client, "/reservations", 400, task_id="task-sub-1", state="open"))
    assert "longer than 200" in error(get(client, "/reservations", 400, task_id="t" * 201))


def test_job_filters_and_states(client: SyncClient, state: GatewayState) -> None:
    """state=open is the held and submitted ones; project/user filters and the limit apply in the ledger."""
    ids = state.seeded  # type: ignore[attr-defined]
    open_jobs = get(client, "/reservations", state="open")["reservations"]
    assert {j["id"] for j in open_jobs} == {ids["held"], ids["submitted"]}
    committed = get(client, "/reservations", state="committed", project="research")["reservations"]
    assert len(committed) == 5 and all(j["project"] == "research" for j in committed)
    assert len(get(client, "/reservations", limit=2)["reservations"]) == 2
    assert "unknown state" in error(get(client, "/reservations", 400, state="cooking"))
    assert "limit" in error(get(client, "/reservations", 400, limit="0"))


def test_holds_and_their_total(client: SyncClient) -> None:
    """Open holds with their exact total; a filter narrows both."""
    holds = get(client, "/holds")
    assert holds["count"] == 2 and holds["held_usd"] == "0.91" and holds["held_units"] == "6.5"
    assert holds["truncated"] is False
    assert get(client, "/holds", project="marketing")["held_usd"] == "0.35"
    one = get(client, "/holds", limit=1)
    assert one["count"] == 1 and one["truncated"] is True


def test_alerts_recent_and_pending(client: SyncClient, state: GatewayState) -> None:
    """The overage alert is listed, newest first; pending ones are the undelivered outbox."""
    alerts = get(client, "/alerts")["alerts"]
    assert any(a["kind"] == "overage" for a in alerts)
    ids = [a["id"] for a in alerts]
    assert ids == sorted(ids, reverse=True)
    pending = get(client, "/alerts", pending="true")["alerts"]
    assert {a["id"] for a in pending} <= set(ids)
    assert "pending must be true or false" in error(get(client, "/alerts", 400, pending="maybe"))


# ------------------------------------------------------------------------------------------------ prices and quotes


def test_price_table_listing(client: SyncClient) -> None:
    """Products with their models and list prices; one product's rows; an unknown product is 404."""
    prices = get(client, "/prices")
    assert prices["list_usd_per_unit"] == {"video": "0.14", "image": "0.0035", "try_on": "0.07"}
    video = next(p for p in prices["products"] if p["name"] == "video")
    assert "kling-v2-6" in video["models"]
    rows = get(client, "/prices/video")["rows"]
    assert any(r["model"] == "kling-v2-6" and r["mode"] == "pro" and r["per"] == "second" for r in rows)
    assert "unknown product" in error(get(client, "/prices/holograms", 404))


def test_quote_names_the_budgets_that_would_deny(client: SyncClient) -> None:
    """A quote prices exactly and reports each matching budget's verdict without reserving."""
    quote = send(
        client, "POST", "/quote", {"model": "kling-v2-6", "mode": "pro", "duration": 10, "project": "marketing"}, 200
    )
    assert (quote["units"], quote["usd"], quote["allowed"]) == ("5", "0.70", True)
    marketing = next(b for b in quote["budgets"] if b["budget"] == "marketing")
    assert marketing["remaining_units_after"] == "122.5"
    send(client, "PUT", "/budgets/tiny", {"project": "marketing", "limit_usd": "0.50"}, 201)
    quote = send(
        client, "POST", "/quote", {"model": "kling-v2-6", "mode": "pro", "duration": 10, "project": "marketing"}, 200
    )
    tiny = next(b for b in quote["budgets"] if b["budget"] == "tiny")
    assert quote["allowed"] is False and tiny["allowed"] is False and "tiny" in tiny["reason"]
    assert get(client, "/holds")["count"] == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "kling-v9"}, "unknown model"),
        ({"model": "kling-v2-6", "duration": 7}, "duration"),
        ({"model": "kling-v2-6", "mode": "turbo"}, "mode"),
        ({"model": "kling-v2-6", "n": 0}, "n must be"),
        ({"model": "kling-v2-6", "duration": 5.5}, "duration"),
        ({"model": "kling-v2-6", "tags": "a"}, "tags must be a list"),
        ({"mode": "pro"}, "'model' is required"),
    ],
)
def test_quote_bad_input_is_400(client: SyncClient, body: dict[str, Any], words: str) -> None:
    """Requests that cannot be priced get one clear 400."""
    assert words in error(send(client, "POST", "/quote", body, 400))


# ------------------------------------------------------------------------------------------------ virtual keys


def test_key_lifecycle_shows_secrets_once(client: SyncClient) -> None:
    """Create shows the secrets once; list and get never; rotate shows new ones; revoke is idempotent."""
    issued = send(
        client, "POST", "/keys", {"name": "mkt-app", "project": "marketing", "user": "alice", "kind": "both"}, 201
    )
    secret, api_key = issued["secret_key"], issued["api_key"]
    assert secret and api_key and issued["webhook_secret"] and issued["access_key"]
    listed = client.get("/admin/api/keys", headers=auth())
    assert secret not in listed.text and api_key not in listed.text
    (key,) = listed.json()["keys"]
    assert key["name"] == "mkt-app" and "secret_key" not in key and key["revoked"] is False
    shown = client.get("/admin/api/keys/mkt-app", headers=auth())
    assert secret not in shown.text and api_key not in shown.text
    rotated = send(client, "POST", "/keys/mkt-app/rotate", None, 200)
    assert rotated["secret_key"] not in (None, secret) and rotated["id"] == issued["id"]
    assert "exists" in error(send(client, "POST", "/keys", {"name": "mkt-app", "project": "x"}, 409))
    revoked = send(client, "POST", "/keys/mkt-app/revoke", None, 200)
    assert revoked["revoked"] is True and revoked["revoked_at"]
    assert send(client, "POST", "/keys/mkt-app/revoke", None, 200)["revoked_at"] == revoked["revoked_at"]
    assert "revoked" in error(send(client, "POST", "/keys/mkt-app/rotate", None, 409))
    assert get(client, "/keys", include_revoked="false")["keys"] == []
    for path in ("/keys/ghost", "/keys/ghost/revoke", "/keys/ghost/rotate"):
        method = "GET" if path == "/keys/ghost" else "POST"
        assert "ghost" in error(send(client, method, path, None, 404))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "k"}, "'project' is required"),
        ({"name": "bad name", "project": "p"}, "key name"),
        ({"name": "k", "project": "p", "kind": "password"}, "kind must be"),
        ({"name": "k", "project": "p", "secret_key": "mine"}, "unknown field"),
    ],
)
def test_key_bad_input_is_400(client: SyncClient, body: dict[str, Any], words: str) -> None:
    """Bad key requests get one clear 400."""
    assert words in error(send(client, "POST", "/keys", body, 400))


# ------------------------------------------------------------------------------------------------ routing


def test_unknown_routes_and_methods_answer_json(client: SyncClient) -> None:
    """An unknown admin path is a JSON 404 and an unsupported method a JSON 405 naming the allowed ones."""
    assert "no admin API route" in error(get(client, "/nothing/here", 404))
    response = client.request("PATCH", "/admin/api/budgets", headers=auth())
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    error(response.json())


def test_status_reports_the_ledger_clock(client: SyncClient, state: GatewayState) -> None:
    """``/status`` gives the gateway's now (the dashboard's time axis) and the price table version."""
    state.clock.now = NOW + timedelta(minutes=5)  # type: ignore[attr-defined]
    assert get(client, "/status") == {"now": "2026-03-10T12:05:00+00:00", "price_version": "2026-11-27"}


def test_gateway_jobs_show_the_task_id_and_external_id_the_client_holds(tmp_path: Path) -> None:
    """A create through the gateway with the client's own external_task_id: the admin API lists the job under
    the Kling task id the client got back, with that external id and the gateway's reservation id beside."""
    config = SimulatorConfig.single(concurrency=100, queued_seconds=60, running_seconds=60)
    with (
        running_simulator(config) as kling,
        running_gateway(kling, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "home") as gateway,
    ):
        issued = gateway.state.keys.create("app", project="p1", kind="api")
        with gateway.client(f"Bearer {issued.api_key}") as tenant:
            body = {"model_name": "kling-v2-6", "duration": "5", "prompt": "a fox", "external_task_id": "order-7"}
            created = tenant.post("/v1/videos/text2video", json=body).json()
        task_id = created["data"]["task_id"]
        with gateway.client(f"Bearer {GATEWAY_ADMIN_TOKEN}") as admin:
            (job,) = admin.get("/admin/api/reservations", params={"task_id": task_id}).json()["reservations"]
            listed = admin.get("/admin/api/reservations").json()["reservations"]
            holds = admin.get("/admin/api/holds").json()["holds"]
    assert (job["task_id"], job["external_task_id"]) == (task_id, "order-7")
    assert job["id"] != task_id and job["id"] not in str(created)  # the reservation id never reaches the client
    assert [(j["task_id"], j["external_task_id"], j["id"]) for j in listed] == [(task_id, "order-7", job["id"])]
    assert [h["task_id"] for h in holds] == [task_id]


def test_reconcile_settles_a_job_kling_finished(tmp_path: Path) -> None:
    """``POST /reconcile`` asks Kling about open jobs and commits the one Kling finished; a concurrent run
    would be refused, a bad option is a 400."""
    config = SimulatorConfig.single(queued_seconds=0.05, running_seconds=0.05)
    with running_simulator(config) as kling:
        state = make_state(tmp_path, kling=kling)
        client = SyncClient(make_app(state))
        try:
            hold = state.tracker.reserve(model="kling-v2-6", mode="std", duration=5, project_id="p1")
            with KlingClient(kling.access_key, kling.secret_key, base_url=kling.base_url) as direct:
                task = direct.create_task(
                    "/v1/videos/text2video",
                    {
                        "model_name": "kling-v2-6",
                        "mode": "std",
                        "duration": "5",
                        "prompt": "x",
                        "external_task_id": hold.id,
                    },
                )
            hold.mark_submitted(task.task_id)
            deadline = time.monotonic() + 10
            while kling.sim.task(task.task_id).status != "succeed" and time.monotonic() < deadline:
                time.sleep(0.05)
            report = send(client, "POST", "/reconcile", {"check_costs": True}, 200)
            assert report["counts"] == {"committed": 1} and report["costs_checked"] is True
            assert state.ledger.get_reservation(hold.id).state.value == "committed"
            assert send(client, "POST", "/reconcile", None, 200)["counts"] == {}
            assert "held_grace_seconds" in error(send(client, "POST", "/reconcile", {"held_grace_seconds": -1}, 400))
        finally:
            client.close()
            state.tracker.close()
