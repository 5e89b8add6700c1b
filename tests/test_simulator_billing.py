"""The Kling simulator's cash balance and billing ledgers over real loopback HTTP, for tasks of both designs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_budget.errors import ConfigurationError
from kling_budget.simulator import (
    AccountConfig,
    Caller,
    PackConfig,
    SimulatorConfig,
)
from kling_budget.types import PackType
from tests.simfixtures import api_client, expect_error, serve, sim_client

T2V = "/text-to-video/kling-3.0"
V1 = "/v1/videos/text2video"
IMAGES = "/v1/images/generations"
BODY: dict[str, Any] = {"prompt": "a fox", "settings": {"resolution": "1080p", "duration": 5, "audio": "native"}}
V1_BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a cat"}  # 1.5 units
PACKAGE = "/account/billing/package"
BALANCE = "/account/billing/balance"


def create(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    payload = client.post(path, json=body).json()
    assert payload["code"] == 0, payload
    data = payload["data"]
    return str(data.get("id") or data["task_id"])


def task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    [item] = client.get("/tasks", params={"task_ids": task_id}).json()["data"]
    return item  # type: ignore[no-any-return]


def ledger(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = client.post(path, json=body).json()
    assert payload["code"] == 0, payload
    return payload["data"]  # type: ignore[no-any-return]


def fox_columns(task_id: str) -> dict[str, Any]:
    """The ledger's description of a BODY task made with the "ads" key."""
    return {
        "task_id": task_id,
        "api_key_name": "ads",
        "product_function": "Text to Video",
        "model_name": "kling-3.0",
        "resolution": "1080p",
        "duration": "5",
        "refer_video_input": False,
        "video_sound": "native",
        "voice_control": False,
    }


def cash_row(amount: str, list_price: str, currency: str = "USD", cash_type: str = "balance") -> dict[str, str]:
    return {
        "charge_type": "cash",
        "cash_type": cash_type,
        "amount": amount,
        "currency": currency,
        "list_price": list_price,
    }


# ---------------------------------------------------------------------------- cash balance


def test_cash_only_account_pays_list_price() -> None:
    """Without packs a task is paid from the balance: a cash row with list price 6 U x $0.14 and no discount."""
    with serve(packs={}, balance="10") as (sim, clock), api_client(sim) as client:
        task_id = create(client, T2V, BODY)
        clock.advance(1)
        done = task(client, task_id)
    assert done["billing"] == [cash_row("0.84", "0.84")]
    assert sim.sim.cash() == Decimal("9.16")
    view = sim.sim.task(task_id)
    assert (view.charge_type, view.cash_charged, view.currency, view.charged_units) == ("cash", "0.84", "USD", "0")


def test_discount_and_cny() -> None:
    """A CNY account with a 25% discount pays 75% of the CNY list price (USD x 7 unless unit_prices say)."""
    with serve(packs={}, balance="100", currency="CNY", discount="0.25") as (sim, clock), api_client(sim) as client:
        task_id = create(client, T2V, BODY)
        clock.advance(1)
        assert task(client, task_id)["billing"] == [cash_row("4.41", "5.88", "CNY")]
    account = AccountConfig(
        key_pairs=(), api_keys=("k",), packs=(), balance="1", currency="CNY", unit_prices={"video": "0.1"}
    )
    with serve(SimulatorConfig(accounts=(account,))) as (sim, clock), api_client(sim) as client:
        task_id = create(client, T2V, BODY)
        clock.advance(1)
        assert task(client, task_id)["billing"] == [cash_row("0.6", "0.6", "CNY")]


def test_packs_first_then_balance_then_1101() -> None:
    """Packs pay while they cover the task (held charges count); then the balance; then 1101, not 1102."""
    with serve(packs={"video": 6}, balance="1") as (sim, clock), api_client(sim) as client:
        from_pack = create(client, T2V, BODY)
        from_cash = create(client, T2V, BODY)
        message = expect_error(client.post(T2V, json=BODY), 429, 1101)
        assert "balance" in message and "0.84" in message
        clock.advance(1)
        assert task(client, from_pack)["billing"] == [{"charge_type": "unit", "amount": "6", "package_type": "video"}]
        assert task(client, from_cash)["billing"] == [cash_row("0.84", "0.84")]
        expect_error(client.post(T2V, json=BODY), 429, 1101)
    assert sim.sim.remaining(PackType.VIDEO) == 0 and sim.sim.cash() == Decimal("0.16")


def test_without_a_balance_exhaustion_is_1102() -> None:
    """An account with packs only still answers 1102 when they cannot cover a task."""
    with serve(packs={"video": 5}) as (sim, _), api_client(sim) as client:
        expect_error(client.post(T2V, json=BODY), 429, 1102)


def test_failed_task_releases_its_cash_hold() -> None:
    """A running task holds its amount; when it fails the amount is free again and nothing is deducted."""
    with serve(packs={}, balance="1") as (sim, clock), api_client(sim) as client:
        failing = create(client, T2V, {**BODY, "prompt": "a fox [sim:fail=moderation]"})
        expect_error(client.post(T2V, json=BODY), 429, 1101)
        clock.advance(1)
        assert task(client, failing)["billing"] == []
        create(client, T2V, BODY)
    assert sim.sim.cash() == 1


def test_test_balance_is_drawn_first() -> None:
    """Test money pays first (cash_type test_balance) while it covers a task; then the balance."""
    with serve(packs={}, balance="5", test_balance="1") as (sim, clock), api_client(sim) as client:
        first = create(client, T2V, BODY)
        second = create(client, T2V, BODY)
        clock.advance(1)
        assert task(client, first)["billing"] == [cash_row("0.84", "0.84", cash_type="test_balance")]
        assert task(client, second)["billing"] == [cash_row("0.84", "0.84")]
    assert (sim.sim.cash("test_balance"), sim.sim.cash("balance")) == (Decimal("0.16"), Decimal("4.16"))


def test_coupon_and_charge_drift_on_cash() -> None:
    """[sim:coupon] pays nothing (amount "0", list price kept); [sim:charge=10] is listed at 10 U x $0.14."""
    with serve(packs={}, balance="10", discount="0.5") as (sim, clock), api_client(sim) as client:
        free = create(client, T2V, {**BODY, "prompt": "a fox [sim:coupon]"})
        drift = create(client, T2V, {**BODY, "prompt": "a fox [sim:charge=10]"})
        clock.advance(1)
        assert task(client, free)["billing"] == [cash_row("0", "0.84")]
        assert task(client, drift)["billing"] == [cash_row("0.7", "1.4")]
    assert sim.sim.cash() == Decimal("9.3")


def test_cash_concurrency_quota() -> None:
    """A cash-only account's parallel-task quota is cash_concurrency."""
    account = AccountConfig(key_pairs=(), api_keys=("k",), packs=(), balance="10", cash_concurrency=1)
    with serve(SimulatorConfig(accounts=(account,))) as (sim, clock), api_client(sim) as client:
        create(client, T2V, BODY)
        expect_error(client.post(T2V, json=BODY), 429, 1303)
        clock.advance(1)
        create(client, T2V, BODY)


def test_legacy_task_paid_in_cash() -> None:
    """A /v1 task paid in cash says final_unit_deduction "0" and final_balance_deduction {quota, list_price}."""
    with serve(packs={}, balance="10", discount="0.2") as (sim, clock), sim_client(sim) as client:
        task_id = create(client, V1, V1_BODY)
        running = client.get(f"{V1}/{task_id}").json()["data"]
        assert "final_balance_deduction" not in running
        clock.advance(1)
        done = client.get(f"{V1}/{task_id}").json()["data"]
        sim.sim.configure(report_billing=True)
        reported = client.get(f"{V1}/{task_id}").json()["data"]
    assert done["final_unit_deduction"] == "0"
    assert done["final_balance_deduction"] == {"quota": "0.168", "list_price": "0.21"}
    assert "billing" not in done
    assert reported["billing"] == [cash_row("0.168", "0.21")]


def test_legacy_billing_switch_follows_the_new_rules() -> None:
    """With report_billing, /v1 tasks carry no billing while running, [{"amount": "0"}] after an early failure."""
    with serve(report_billing=True) as (sim, clock), sim_client(sim) as client:
        early = create(client, V1, {**V1_BODY, "prompt": "x [sim:fail_early]"})
        ok = create(client, V1, V1_BODY)
        assert "billing" not in client.get(f"{V1}/{ok}").json()["data"]
        clock.advance(0.2)
        failed = client.get(f"{V1}/{early}").json()["data"]
        assert (failed["task_status"], failed["billing"], failed["final_unit_deduction"]) == (
            "failed",
            [{"amount": "0"}],
            "0",
        )
        clock.advance(1)
        assert client.get(f"{V1}/{ok}").json()["data"]["billing"][0]["amount"] == "1.5"


def test_top_up() -> None:
    """add_cash raises the balance, so a refused task is accepted afterwards."""
    with serve(packs={}, balance="0.5") as (sim, _), api_client(sim) as client:
        expect_error(client.post(T2V, json=BODY), 429, 1101)
        assert sim.sim.add_cash("1") == Decimal("1.5")
        create(client, T2V, BODY)


# ---------------------------------------------------------------------------- ledgers


def two_key_account(**options: Any) -> SimulatorConfig:
    """One account with two API keys (one named "ads", one named by position) and the key pair."""
    account = AccountConfig(api_keys=("key-ads", "key-web"), api_key_names={"key-ads": "ads"}, **options)
    return SimulatorConfig(accounts=(account,))


def test_package_ledger_rows_for_both_designs() -> None:
    """One row per pack a success drew on (earliest expiry first), for 2026 and /v1 tasks; failures have none."""
    packs = (PackConfig(PackType.VIDEO, 100), PackConfig(PackType.IMAGE, 100))
    with serve(two_key_account(packs=packs)) as (sim, clock):
        now = clock.now_ms()
        soon = sim.sim.add_pack(PackConfig(PackType.VIDEO, 4, invalid_time_ms=now + 86_400_000)).pack_id
        later = sim.sim.packs()[0].pack_id
        with api_client(sim, "key-ads") as ads, api_client(sim, "key-web") as web, sim_client(sim) as jwt:
            new = create(ads, T2V, BODY)
            clock.advance(1)
            legacy = create(web, V1, V1_BODY)
            create(web, T2V, {**BODY, "prompt": "x [sim:fail=no]"})
            clock.advance(1)
            image = create(jwt, IMAGES, {"model_name": "kling-v1", "prompt": "a bike", "n": 2})
            clock.advance(1)
            rows = ledger(jwt, PACKAGE, {"start_time": now, "end_time": clock.now_ms()})
    assert (rows["count"], rows["has_more"], rows["next_cursor"]) == (4, False, "")
    result = rows["result"]
    assert [r["task_id"] for r in result] == [image, legacy, new, new]
    assert result[3] == {
        "package_id": soon,
        "product_type": "video",
        **fox_columns(new),
        "deduction_time": now + 700,
        "unit_before_deduction": "4",
        "deduction_amount": "4",
        "unit_after_deduction": "0",
    }
    rest = result[2]
    assert (rest["package_id"], rest["unit_before_deduction"], rest["deduction_amount"]) == (later, "100", "2")
    assert (result[1]["api_key_name"], result[1]["model_name"], result[1]["resolution"]) == (
        "api-key-2",
        "kling-v2-6",
        "720p",
    )
    assert (result[1]["unit_before_deduction"], result[1]["deduction_amount"]) == ("98", "1.5")
    assert (result[0]["api_key_name"], result[0]["product_type"], result[0]["product_function"]) == (
        "",
        "image",
        "Image Generation",
    )
    assert (result[0]["resolution"], result[0]["duration"], result[0]["deduction_amount"]) == ("1k", "", "2")


def test_package_ledger_filters() -> None:
    """api_key_name, product_type (try-on spelled either way), package_name and package_id filter; same key ORs."""
    with serve(two_key_account()) as (sim, clock):
        now = clock.now_ms()
        packs = {p.pack_type: p for p in sim.sim.packs()}
        with api_client(sim, "key-ads") as ads, api_client(sim, "key-web") as web:
            by_ads = create(ads, T2V, BODY)
            by_web = create(web, IMAGES, {"model_name": "kling-v1", "prompt": "a bike"})
            try_on = {"human_image": "https://x/h.png", "cloth_image": "https://x/c.png"}
            by_try_on = create(web, "/v1/images/kolors-virtual-try-on", try_on)
            clock.advance(1)
            window = {"start_time": now, "end_time": clock.now_ms()}

            def ids(*filters: dict[str, Any]) -> list[str]:
                return [r["task_id"] for r in ledger(ads, PACKAGE, {**window, "filters": list(filters)})["result"]]

            assert ids() == [by_try_on, by_web, by_ads]
            assert ids({"key": "api_key_name", "values": ["ads"]}) == [by_ads]
            assert ids(
                {"key": "api_key_name", "values": ["ads"]}, {"key": "api_key_name", "values": ["api-key-2"]}
            ) == [
                by_try_on,
                by_web,
                by_ads,
            ]
            assert ids({"key": "product_type", "values": ["image"]}) == [by_web]
            assert ids({"key": "product_type", "values": ["try-on"]}) == [by_try_on]
            assert ids({"key": "product_type", "values": ["try_on", "video"]}) == [by_try_on, by_ads]
            assert ids({"key": "package_name", "values": [packs[PackType.VIDEO].name]}) == [by_ads]
            assert ids({"key": "package_id", "values": [packs[PackType.IMAGE].pack_id]}) == [by_web]
            assert ids({"key": "api_key_name", "values": ["ads"]}, {"key": "product_type", "values": ["image"]}) == []
            both = [{"key": "package_name", "values": ["x"]}, {"key": "package_id", "values": ["y"]}]
            assert "package_name" in expect_error(ads.post(PACKAGE, json={**window, "filters": both}), 400, 1201)
            bad_type = [{"key": "product_type", "values": ["audio"]}]
            assert "filters[0].values" in expect_error(
                ads.post(PACKAGE, json={**window, "filters": bad_type}), 400, 1201
            )


def test_balance_ledger_rows_and_filter() -> None:
    """Cash deductions of both designs, balances before and after, list price, currency; filter api_key_name only."""
    with serve(two_key_account(packs=(), balance="10", discount="0.5")) as (sim, clock):
        now = clock.now_ms()
        with api_client(sim, "key-ads") as ads, sim_client(sim) as jwt:
            new = create(ads, T2V, BODY)
            create(ads, T2V, {**BODY, "prompt": "x [sim:fail=no]"})
            clock.advance(1)
            legacy = create(jwt, V1, V1_BODY)
            clock.advance(1)
            window = {"start_time": now, "end_time": clock.now_ms()}
            rows = ledger(jwt, BALANCE, window)["result"]
            only_ads = ledger(jwt, BALANCE, {**window, "filters": [{"key": "api_key_name", "values": ["ads"]}]})
            refused = ads.post(BALANCE, json={**window, "filters": [{"key": "product_type", "values": ["video"]}]})
            assert "filters[0].key" in expect_error(refused, 400, 1201)
    assert [r["task_id"] for r in rows] == [legacy, new]
    assert rows[1] == {
        **fox_columns(new),
        "deduction_time": now + 700,
        "cash_type": "balance",
        "balance_before_deduction": "10",
        "deduction_amount": "0.42",
        "balance_after_deduction": "9.58",
        "list_price": "0.84",
        "currency": "USD",
    }
    legacy_row = rows[0]
    assert (legacy_row["api_key_name"], legacy_row["model_name"], legacy_row["list_price"]) == (
        "",
        "kling-v2-6",
        "0.21",
    )
    assert (legacy_row["balance_before_deduction"], legacy_row["deduction_amount"]) == ("9.58", "0.105")
    assert legacy_row["balance_after_deduction"] == "9.475"
    assert [r["task_id"] for r in only_ads["result"]] == [new]


def test_ledger_paging_window_and_limit() -> None:
    """Ledgers page newest first by cursor (limit default 500, at most 500) and need a window without a cursor."""
    with serve() as (sim, clock), api_client(sim) as client:
        now = clock.now_ms()
        ids = []
        for _ in range(5):
            ids.append(create(client, T2V, BODY))
            clock.advance(1)
        window = {"start_time": now, "end_time": clock.now_ms()}
        assert [r["task_id"] for r in ledger(client, PACKAGE, window)["result"]] == ids[::-1]
        first = ledger(client, PACKAGE, {**window, "limit": 2})
        second = ledger(client, PACKAGE, {"cursor": first["next_cursor"]})
        third = ledger(client, PACKAGE, {"cursor": second["next_cursor"], "start_time": "ignored"})
        pages = [first, second, third]
        assert [[r["task_id"] for r in page["result"]] for page in pages] == [ids[:2:-1], ids[2:0:-1], ids[:1]]
        assert [(page["has_more"], bool(page["next_cursor"])) for page in pages] == [
            (True, True),
            (True, True),
            (False, False),
        ]
        inclusive = ledger(client, PACKAGE, {"start_time": now + 1700, "end_time": now + 2700})
        assert [r["task_id"] for r in inclusive["result"]] == [ids[2], ids[1]]
        assert ledger(client, PACKAGE, {"start_time": now + 1701, "end_time": now + 2699})["result"] == []
        assert "start_time" in expect_error(client.post(PACKAGE, json={"end_time": now}), 400, 1201)
        assert "end_time" in expect_error(client.post(BALANCE, json={"start_time": now}), 400, 1201)
        assert "limit" in expect_error(client.post(PACKAGE, json={**window, "limit": 501}), 400, 1201)
        tasks_cursor = client.post("/tasks", json={"limit": 1}).json()["data"]["next_cursor"]
        assert "cursor" in expect_error(client.post(PACKAGE, json={"cursor": tasks_cursor}), 400, 1201)
        expect_error(client.post(BALANCE, content=b"[]"), 400, 1200)
        expect_error(client.get(PACKAGE), 404, 1202)


def test_retention_forgets_ledger_rows() -> None:
    """With retention_seconds, deduction rows older than that are dropped with their tasks."""
    with serve(retention_seconds=10) as (sim, clock), api_client(sim) as client:
        now = clock.now_ms()
        create(client, T2V, BODY)
        clock.advance(5)
        kept = create(client, T2V, BODY)
        clock.advance(6)
        rows = ledger(client, PACKAGE, {"start_time": now, "end_time": clock.now_ms()})["result"]
    assert [r["task_id"] for r in rows] == [kept]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"balance": "-1"}, "balance must not be negative"),
        ({"balance": 1.5}, "exact number"),
        ({"balance": "1", "discount": "1"}, "discount"),
        ({"balance": "1", "currency": "EUR"}, "currency"),
        ({"api_keys": ("k",), "api_key_names": {"other": "x"}}, "api_key_names"),
        ({"balance": "1", "unit_prices": {"audio": "1"}}, "unknown pack type"),
        ({"balance": "1", "cash_concurrency": 0}, "cash_concurrency"),
    ],
)
def test_cash_configuration_is_checked(options: dict[str, Any], problem: str) -> None:
    """Bad balances, discounts, currencies, key names, unit prices or quotas are refused with a one-line reason."""
    with pytest.raises(ConfigurationError) as refused:
        AccountConfig(**options)
    assert problem in str(refused.value)


def test_default_page_sizes() -> None:
    """Without a limit, POST /tasks answers 100 items and the ledgers 500, each saying there is more."""
    with serve(concurrency=1000) as (sim, clock), api_client(sim) as client:
        now = clock.now_ms()
        caller = Caller(sim.sim.config.accounts[0].name, "api-key-1")
        for _ in range(501):
            sim.sim.create_task(caller, "/text-to-video/kling-2.6", {"prompt": "a fox"})
        clock.advance(1)
        tasks_page = client.post("/tasks", json={}).json()["data"]
        ledger_page = ledger(client, PACKAGE, {"start_time": now, "end_time": clock.now_ms()})
    assert (tasks_page["count"], tasks_page["has_more"]) == (100, True)
    assert (ledger_page["count"], ledger_page["has_more"]) == (500, True)
