"""Kling compatibility details of the gateway over real HTTP: unknown paths, JWT leniency, trailing slashes,
Retry-After, the 1190 error class, gateway detection by our own clients, TLS and the public-URL warning."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from kling_budget.enforced import AsyncBudgetEnforcedClient, BudgetEnforcedClient
from kling_budget.errors import BudgetExceededError, GatewayBudgetExceededError, KlingAPIError
from kling_budget.kling import AsyncKlingClient, KlingClient
from kling_budget.ledger import ReservationState
from kling_budget.server.denial import retry_after_seconds
from kling_budget.simulator import SimulatorConfig, running_simulator
from kling_budget.tracker import CostTracker
from kling_budget.types import Denial
from tests.gatewayutil import RunningGateway, running_gateway, wait_until
from tests.jobfixtures import run_cli

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox in the snow"}
MARK = "X-Kling-Budget-Gateway"


@pytest.fixture
def kling() -> Iterator[Any]:
    with running_simulator(SimulatorConfig.single(concurrency=100, queued_seconds=0.02, running_seconds=0.05)) as sim:
        yield sim


@pytest.fixture
def gw(kling: Any, sqlite_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(kling, sqlite_url, tmp_path / "home") as gateway:
        yield gateway


@pytest.fixture
def issued(gw: RunningGateway) -> Any:
    return gw.state.keys.create("app", project="p1", kind="both")


def _official_sample(ak: str, sk: str, *, exp: float, nbf: float) -> str:
    """A token signed exactly as Kling's official Python sample does (PyJWT)."""
    return pyjwt.encode({"iss": ak, "exp": exp, "nbf": nbf}, sk, headers={"alg": "HS256", "typ": "JWT"})


def _handmade(ak: str, sk: str, payload: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps({"iss": ak, **payload}).encode())
    )
    return head + "." + b64(hmac.new(sk.encode(), head.encode(), hashlib.sha256).digest())


# ---------------------------------------------------------------------------------------------- unknown paths

UNKNOWN = [
    ("GET", "/v2/videos/text2video"),
    ("POST", "/nothing/here"),
    ("PUT", T2V),
    ("DELETE", f"{T2V}/123"),
    ("PATCH", "/v1/videos/not-a-product"),
    ("POST", "/"),
    ("OPTIONS", "/healthz"),
    ("GET", "/callbacks/kling"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN, ids=[f"{m} {p}" for m, p in UNKNOWN])
def test_unknown_paths_answer_kling_s_envelope_after_authentication(
    gw: RunningGateway, issued: Any, method: str, path: str
) -> None:
    """Any path or method not served: 401/1001 without credentials, 401/1000 with bad ones, then 404/1202."""
    with gw.client() as client:
        anonymous = client.request(method, path)
        wrong = client.request(method, path, headers={"Authorization": "Bearer kbk_not-a-key"})
        known = client.request(method, path, headers={"Authorization": f"Bearer {issued.api_key}"})
    for answer, status, code in ((anonymous, 401, 1001), (wrong, 401, 1000), (known, 404, 1202)):
        assert answer.status_code == status and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert set(body) == {"code", "message", "request_id", "data"} and body["code"] == code
        assert answer.headers[MARK] == "1"
    assert f"does not serve {method} {path}" in known.json()["message"]


def test_admin_and_dashboard_keep_their_own_answers(gw: RunningGateway) -> None:
    """The fallback route is the last one: the admin API's unknown paths and the dashboard are untouched."""
    with gw.client() as client:
        admin = client.get("/admin/api/nope")
        page = client.get("/dashboard")
        health = client.get("/healthz")
    assert admin.status_code == 401 and "error" in admin.json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert health.status_code == 200 and all(r.headers[MARK] == "1" for r in (admin, page, health))


# ---------------------------------------------------------------------------------------------- JWT


def test_tokens_signed_like_the_official_sample_with_integer_and_float_claims(gw: RunningGateway, issued: Any) -> None:
    """PyJWT tokens as Kling's sample signs them work with integer and with fractional exp/nbf."""
    ak, sk = issued.key.access_key, issued.secret_key
    now = time.time()
    tokens = [
        _official_sample(ak, sk, exp=int(now) + 1800, nbf=int(now) - 5),
        _official_sample(ak, sk, exp=now + 1800.25, nbf=now - 5.5),
    ]
    with gw.client() as client:
        for token in tokens:
            created = client.post(T2V, json=BODY, headers={"Authorization": f"Bearer {token}"})
            assert created.status_code == 200 and created.json()["code"] == 0, created.text


@pytest.mark.parametrize(
    ("shift", "code"),
    [({"nbf": 8}, 0), ({"nbf": 15}, 1003), ({"exp": -8}, 0), ({"exp": -15}, 1004), ({"exp": -9.5}, 0)],
    ids=["nbf-8s-ahead", "nbf-15s-ahead", "exp-8s-ago", "exp-15s-ago", "exp-9.5s-ago"],
)
def test_jwt_time_claims_allow_ten_seconds_of_clock_skew(
    gw: RunningGateway, issued: Any, shift: dict[str, float], code: int
) -> None:
    """nbf up to 10 s in the future and exp up to 10 s in the past are accepted (JWT_LEEWAY_SECONDS)."""
    now = time.time()
    exp, nbf = now + shift.get("exp", 1800), now + shift.get("nbf", -5)
    token = _official_sample(issued.key.access_key, issued.secret_key, exp=exp, nbf=nbf)
    with gw.client(f"Bearer {token}") as client:
        answer = client.get(T2V)
    assert answer.json()["code"] == code, answer.text


@pytest.mark.parametrize(
    ("payload", "code"),
    [({"exp": True}, 1002), ({"exp": "1999999999"}, 1002), ({"nbf": 0}, 1002), ({"exp": 4e9, "nbf": None}, 1002)],
    ids=["bool-exp", "string-exp", "no-exp", "null-nbf"],
)
def test_jwt_time_claims_that_are_not_numbers_are_malformed(
    gw: RunningGateway, issued: Any, payload: dict[str, Any], code: int
) -> None:
    """exp/nbf must be numbers (never booleans or strings) and exp is required: else 401/1002."""
    token = _handmade(issued.key.access_key, issued.secret_key, payload)
    with gw.client(f"Bearer {token}") as client:
        answer = client.get(T2V)
    assert answer.status_code == 401 and answer.json()["code"] == code


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(gw: RunningGateway, issued: Any, scheme: str) -> None:
    """`bearer <token>` in any case works, for an API key and for a JWT."""
    now = int(time.time())
    token = _official_sample(issued.key.access_key, issued.secret_key, exp=now + 600, nbf=now - 5)
    with gw.client() as client:
        for credential in (issued.api_key, token):
            answer = client.get(T2V, headers={"Authorization": f"{scheme} {credential}"})
            assert answer.status_code == 200 and answer.json()["code"] == 0, answer.text
        wrong = client.get(T2V, headers={"Authorization": f"Basic {issued.api_key}"})
    assert wrong.status_code == 401 and wrong.json()["code"] == 1002


# ---------------------------------------------------------------------------------------------- trailing slashes


def test_kling_paths_with_one_trailing_slash_are_served_like_without(
    gw: RunningGateway, issued: Any, kling: Any
) -> None:
    """create, query and list with a trailing slash work (rewritten, not redirected) and reach Kling's path."""
    with gw.client(f"Bearer {issued.api_key}", follow_redirects=False) as client:
        created = client.post(T2V + "/", json=BODY)
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["task_id"]
        queried = client.get(f"{T2V}/{task_id}/")
        listed = client.get(T2V + "/", params={"pageNum": 1, "pageSize": 10})
        by_param = client.get(T2V + "/", params={"task_id": task_id})
    assert queried.json()["data"]["task_id"] == task_id
    assert [t["task_id"] for t in listed.json()["data"]] == [task_id]
    assert by_param.json()["data"]["task_id"] == task_id
    assert [t.task_id for t in kling.sim.tasks()] == [task_id]


# ---------------------------------------------------------------------------------------------- denials


def test_retry_after_is_the_seconds_to_the_window_reset_and_absent_for_a_total_budget(
    gw: RunningGateway, issued: Any
) -> None:
    """A daily budget's 1190 has Retry-After (seconds to midnight UTC); a total budget's has none."""
    tracker = gw.state.tracker
    tracker.set_budget("tiny-daily", project_id="p1", period="daily", limit_units=1)
    with gw.client(f"Bearer {issued.api_key}") as client:
        daily = client.post(T2V, json=BODY)
        tracker.delete_budget("tiny-daily")
        tracker.set_budget("lifetime", project_id="p1", period="total", limit_units=1)
        total = client.post(T2V, json=BODY)
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    retry = int(daily.headers["Retry-After"])
    assert daily.status_code == 429 and abs(retry - math.ceil((midnight - now).total_seconds())) <= 5
    with pytest.raises(httpx.HTTPStatusError, match="429 Too Many Requests"):
        daily.raise_for_status()
    assert total.status_code == 429 and total.json()["code"] == 1190
    assert "Retry-After" not in total.headers and total.json()["data"]["retry_after"] is None
    assert total.json()["data"]["denial"]["period"] == "total"


def test_a_wider_budget_s_denial_has_retry_after_but_no_totals(gw: RunningGateway, issued: Any) -> None:
    """An account-wide budget's 1190 shows the tenant its name, reset and Retry-After, never the account's totals."""
    gw.state.tracker.set_budget("account-daily", period="daily", limit_units=1)
    with gw.client(f"Bearer {issued.api_key}") as client:
        denied = client.post(T2V, json=BODY)
    data = denied.json()["data"]
    assert denied.status_code == 429 and int(denied.headers["Retry-After"]) == data["retry_after"] > 0
    assert data["budget"] == "account-daily" and data["reset_at"] and data["denial"] is None
    assert "limit" not in denied.json()["message"]
    with (
        KlingClient(api_key=issued.api_key, base_url=gw.base_url) as kling,
        pytest.raises(GatewayBudgetExceededError) as raised,
    ):
        kling.create_text_to_video(prompt="a cat", model_name="kling-v2-6", mode="std", duration=5)
    assert raised.value.denial is None and raised.value.retry_after is not None


def test_retry_after_rounds_up_and_is_at_least_one_second() -> None:
    """The pure rule: ceil(seconds to reset), minimum 1; None without a reset."""
    now = datetime(2026, 12, 1, 23, 59, 58, 500_000, tzinfo=UTC)

    def denial(reset_at: datetime | None) -> Denial:
        return Denial("b", "all", "daily", now, reset_at, "units", 1000, 0, 0, 1500, reset_at)

    assert retry_after_seconds(denial(datetime(2026, 12, 2, tzinfo=UTC)), now) == 2
    assert retry_after_seconds(denial(now), now) == 1
    assert retry_after_seconds(denial(None), now) is None and retry_after_seconds(None, now) is None


def test_our_clients_raise_budget_exceeded_with_the_gateway_s_denial(gw: RunningGateway, issued: Any) -> None:
    """KlingClient maps 1190 to GatewayBudgetExceededError (a BudgetExceededError) carrying the denial; one request."""
    gw.state.tracker.set_budget("team-daily", project_id="p1", period="daily", limit_units=1)
    with KlingClient(api_key=issued.api_key, base_url=gw.base_url) as kling:
        with pytest.raises(GatewayBudgetExceededError) as raised:
            kling.create_text_to_video(prompt="a cat", model_name="kling-v2-6", mode="std", duration=5)
        assert kling.behind_gateway is True
    error = raised.value
    assert isinstance(error, BudgetExceededError) and isinstance(error, KlingAPIError) and not error.should_retry
    assert error.code == 1190 and error.http_status == 429
    assert error.denial is not None and error.denial.budget == "team-daily" and error.denial.limit == 1000
    assert error.denial.price == 1500 and error.denial.reset_at is not None
    assert error.retry_after is not None and 0 < error.retry_after <= 86_400
    assert "Kling error 1190 (denied by a budget of the kling-budget gateway)" in str(error)
    denied = gw.state.ledger.list_reservations(states=["denied"])
    assert len(denied) == 1  # sent once: a denial is never retried


# ---------------------------------------------------------------------------------------------- detection


def test_enforced_client_behind_a_gateway_leaves_budgeting_to_it(
    gw: RunningGateway, issued: Any, tmp_path: Path
) -> None:
    """One HEAD / finds the gateway: jobs are sent without a local hold, so nothing is booked twice."""
    with CostTracker(f"sqlite:///{tmp_path / 'local.db'}") as local:
        local.set_budget("local-daily", period="daily", limit_units=2)  # would deny the 2nd job if booked here
        with BudgetEnforcedClient(local, api_key=issued.api_key, base_url=gw.base_url) as client:
            jobs = [client.generate_video("a cat", 5, "kling-v2.6", mode="std") for _ in range(2)]
            done = jobs[0].wait(timeout=10, poll_interval=0.02, max_poll_interval=0.05)
        assert local.ledger.list_reservations() == []
        assert local.budget_status("local-daily").counters.used_milli == 0
    assert done.status.value == "succeeded" and all(job.gateway_held for job in jobs)
    assert jobs[0].reservation is None and jobs[0].quote is not None and jobs[0].quote.units_milli == 1500
    assert {job.task_id for job in jobs} == {r.task_id for r in gw.state.ledger.list_reservations()}
    info = wait_until(lambda: gw.state.ledger.find_by_task(done.task_id))
    assert info.attribution.api_key == "app"


@pytest.mark.anyio
async def test_async_enforced_client_behind_a_gateway_raises_the_gateway_s_denial(
    gw: RunningGateway, issued: Any, tmp_path: Path
) -> None:
    """The async enforced client detects the gateway too, and its 1190 is a BudgetExceededError."""
    gw.state.tracker.set_budget("team-daily", project_id="p1", period="daily", limit_units=2)
    with CostTracker(f"sqlite:///{tmp_path / 'local.db'}") as local:
        kling = AsyncKlingClient(api_key=issued.api_key, base_url=gw.base_url)
        async with AsyncBudgetEnforcedClient(local, client=kling) as client:
            job = await client.generate_video("a cat", 5, "kling-v2-6", mode="std")
            with pytest.raises(BudgetExceededError) as raised:
                await client.generate_video("a dog", 5, "kling-v2-6", mode="std")
        await kling.aclose()
        assert local.ledger.list_reservations() == []
    assert job.gateway_held and raised.value.denial is not None and raised.value.denial.budget == "team-daily"


def test_enforced_client_on_kling_itself_still_holds_locally(kling: Any, tmp_path: Path) -> None:
    """Against Kling (the simulator) the probe finds no gateway: the job is reserved in the local ledger."""
    with (
        CostTracker(f"sqlite:///{tmp_path / 'local.db'}") as local,
        KlingClient(kling.access_key, kling.secret_key, base_url=kling.base_url) as plain,
    ):
        with BudgetEnforcedClient(local, client=plain) as client:
            job = client.generate_video("a cat", 5, "kling-v2-6", mode="std")
        assert plain.behind_gateway is False
        assert not job.gateway_held and job.reservation is not None
        assert job.reservation.state is ReservationState.SUBMITTED


def test_gateway_option_overrides_detection(kling: Any, tmp_path: Path) -> None:
    """gateway=False never probes and always holds locally; gateway=True never holds locally."""
    with (
        CostTracker(f"sqlite:///{tmp_path / 'local.db'}") as local,
        KlingClient(kling.access_key, kling.secret_key, base_url=kling.base_url) as plain,
    ):
        with BudgetEnforcedClient(local, client=plain, gateway=False) as client:
            held = client.generate_video("a cat", 5, "kling-v2-6", mode="std")
        assert plain.behind_gateway is None and not held.gateway_held
        with BudgetEnforcedClient(local, client=plain, gateway=True) as client:
            sent = client.generate_video("a dog", 5, "kling-v2-6", mode="std")
        assert sent.gateway_held and len(local.ledger.list_reservations()) == 1


def test_generate_pointed_at_a_gateway_books_nothing_locally_and_reports_its_denial(
    gw: RunningGateway,
    issued: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`generate` through a gateway: no local hold, no local alert; a gateway denial is "denied: ...", exit 1."""
    monkeypatch.setenv("KLING_API_KEY", issued.api_key)
    db = f"sqlite:///{tmp_path / 'local.db'}"
    with CostTracker(db) as local:
        local.set_budget("local-daily", period="daily", limit_units="1.5")  # 100 % if the job were booked here
    gw.state.tracker.set_budget("team-daily", project_id="p1", period="daily", limit_units=2)
    args = ["--db", db, "generate", "video", "a red fox", "-m", "kling-v2-6", "--mode", "std", "-d", "5"]
    gateway = ["--api-base", gw.base_url, "--poll-interval", "0.02"]
    with caplog.at_level(logging.WARNING, logger="kling_budget"):
        result = run_cli(capsys, *args, *gateway, "--json")
    code, out, err = result.code, result.out, result.err
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "succeeded" and shown["gateway_held"] is True and shown["reservation"] is None
    with CostTracker(db) as local:
        assert local.ledger.list_reservations() == []
    assert not [r for r in caplog.records if "ALERT" in r.getMessage() and "local-daily" in r.getMessage()]
    result = run_cli(capsys, *args, *gateway, "--no-wait")
    code, err = result.code, result.err
    assert code == 1 and err.startswith("error: denied: Kling error 1190") and "team-daily" in err


# ---------------------------------------------------------------------------------------------- start-up


def test_startup_warns_when_callbacks_would_carry_gateway_ids(
    kling: Any, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without --public-url the gateway warns at start-up; with it, it does not."""
    with caplog.at_level(logging.WARNING, logger="kling_budget.gateway"):
        with running_gateway(kling, sqlite_url, tmp_path / "a"):
            pass
        warned = [r.getMessage() for r in caplog.records if "--public-url" in r.getMessage()]
        caplog.clear()
        with running_gateway(kling, sqlite_url, tmp_path / "b", public=True):
            pass
        quiet = [r.getMessage() for r in caplog.records if "--public-url" in r.getMessage()]
    assert len(warned) == 1 and "external_task_id (gw-...)" in warned[0] and quiet == []
