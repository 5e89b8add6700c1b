"""Security of the proxy's virtual credentials and tenant isolation, over real HTTP on loopback.

The upstream is the Kling simulator (its keys stand for the real Kling credentials). Keys are issued,
rotated and revoked through the admin API, as an operator would, and used with plain HTTP as a client would.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget.kling.jwt import encode_token
from kling_budget.ledger import ReservationState
from kling_budget.server import GatewayState
from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.admin_support import ADMIN_TOKEN, auth, make_app, make_state, serve

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a lighthouse at dusk"}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """The simulator as upstream: tasks finish within a fraction of a second."""
    with running_simulator(SimulatorConfig.single(concurrency=50, queued_seconds=0.05, running_seconds=0.1)) as sim:
        yield sim


@pytest.fixture
def gateway(kling: RunningSimulator, tmp_path: Path) -> Iterator[tuple[str, GatewayState]]:
    """The whole gateway on loopback (no settle worker: only queries and callbacks settle)."""
    state = make_state(tmp_path, kling=kling, webhook_secret=WEBHOOK_SECRET)
    with serve(make_app(state), lifespan="on") as base_url:
        yield base_url, state


def http(base_url: str, authorization: str | None = None) -> httpx.Client:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.Client(base_url=base_url, headers=headers, timeout=20, verify=False)


def issue(base_url: str, name: str, project: str) -> dict[str, Any]:
    """A key of kind ``both`` issued through the admin API."""
    with http(base_url, f"Bearer {ADMIN_TOKEN}") as admin:
        response = admin.post("/admin/api/keys", json={"name": name, "project": project, "kind": "both"})
    assert response.status_code == 201, response.text
    return dict(response.json())


def jwt(key: dict[str, Any], **options: int) -> str:
    return "Bearer " + encode_token(key["access_key"], key["secret_key"], now=int(time.time()), **options)


def forged(claims: dict[str, Any], header: dict[str, Any] | None = None, signature: str = "") -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"Bearer {part(header or {'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
    return value


def test_missing_bad_expired_and_forged_credentials(gateway: tuple[str, GatewayState], kling: RunningSimulator) -> None:
    """Every bad credential is Kling's 401 with a 100x code; nothing is reserved and nothing reaches Kling."""
    base_url, state = gateway
    key = issue(base_url, "app", "p1")
    now = int(time.time())
    other = issue(base_url, "other", "p2")
    cases = [
        (None, 1001),
        ("Bearer", 1001),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", 1002),
        ("Bearer kbk_unknown-api-key", 1000),
        (f"Bearer {ADMIN_TOKEN}", 1000),
        (f"Bearer {kling.secret_key}", 1000),
        ("Bearer " + encode_token(key["access_key"], "not-the-secret", now=now), 1000),
        ("Bearer " + encode_token(key["access_key"], key["secret_key"], now=now - 7200, lifetime=1800), 1004),
        ("Bearer " + encode_token(key["access_key"], key["secret_key"], now=now + 600, skew=5), 1003),
        ("Bearer " + encode_token(key["access_key"], other["secret_key"], now=now), 1000),
        (forged({"iss": key["access_key"], "exp": now + 600, "nbf": now - 5}, {"alg": "none", "typ": "JWT"}), None),
        (forged({"iss": key["access_key"], "exp": now + 600, "nbf": now - 5}, signature="AAAA"), 1000),
        ("Bearer a.b.c", 1002),
    ]
    for authorization, code in cases:
        for method, path in (("POST", T2V), ("GET", T2V), ("GET", f"{T2V}/123")):
            with http(base_url, authorization) as client:
                response = client.request(method, path, json=BODY if method == "POST" else None)
            assert response.status_code == 401, (authorization, response.text)
            answer = response.json()
            assert set(answer) == {"code", "message", "request_id", "data"}
            assert answer["code"] in ((1000, 1002) if code is None else (code,)), (authorization, answer)
    assert state.ledger.list_reservations() == []
    assert kling.sim.tasks() == []


def test_rotation_and_revocation_through_the_admin_api_apply_at_once(gateway: tuple[str, GatewayState]) -> None:
    """After a rotate the old JWT and API key fail and the new ones work; after a revoke nothing works."""
    base_url, _ = gateway
    key = issue(base_url, "app", "p1")
    for authorization in (jwt(key), f"Bearer {key['api_key']}"):
        with http(base_url, authorization) as client:
            assert client.get(T2V).json()["code"] == 0
    with http(base_url, f"Bearer {ADMIN_TOKEN}") as admin:
        fresh = admin.post("/admin/api/keys/app/rotate").json()
    for authorization in (jwt(key), f"Bearer {key['api_key']}"):
        with http(base_url, authorization) as client:
            response = client.get(T2V)
        assert response.status_code == 401 and response.json()["code"] == 1000
    for authorization in (jwt(fresh), f"Bearer {fresh['api_key']}"):
        with http(base_url, authorization) as client:
            assert client.post(T2V, json=BODY).json()["code"] == 0
    with http(base_url, f"Bearer {ADMIN_TOKEN}") as admin:
        assert admin.post("/admin/api/keys/app/revoke").json()["revoked"] is True
    for authorization in (jwt(fresh), f"Bearer {fresh['api_key']}"):
        with http(base_url, authorization) as client:
            response = client.post(T2V, json=BODY)
        assert response.status_code == 401 and "revoked" in response.json()["message"]


def test_virtual_credentials_never_open_the_admin_api(gateway: tuple[str, GatewayState]) -> None:
    """A tenant's JWT, API key or secret is not an admin token."""
    base_url, _ = gateway
    key = issue(base_url, "app", "p1")
    for authorization in (jwt(key), f"Bearer {key['api_key']}", f"Bearer {key['secret_key']}"):
        with http(base_url, authorization) as client:
            assert client.get("/admin/api/keys").status_code == 401
            assert client.post("/admin/api/keys", json={"name": "mine", "project": "p1"}).status_code == 401


def test_a_tenant_can_neither_read_nor_settle_another_tenants_task(
    gateway: tuple[str, GatewayState], kling: RunningSimulator
) -> None:
    """Bob cannot see Alice's task by any id or listing, and nothing he does settles it; a forged callback
    is refused; Alice's own query settles it."""
    base_url, state = gateway
    alice, bob = issue(base_url, "alice", "p1"), issue(base_url, "bob", "p2")
    with http(base_url, f"Bearer {alice['api_key']}") as a:
        created = a.post(T2V, json={**BODY, "external_task_id": "alice-order-7"}).json()
    task_id = created["data"]["task_id"]
    (reservation,) = state.ledger.list_reservations()
    wait_for(lambda: kling.sim.task(task_id).status == "succeed")
    with http(base_url, f"Bearer {bob['api_key']}") as b:
        for path in (
            f"{T2V}/{task_id}",
            f"{T2V}/alice-order-7",
            f"{T2V}/{reservation.id}",
            f"{T2V}?task_id={task_id}",
            f"{T2V}?external_task_id=alice-order-7",
        ):
            response = b.get(path)
            assert response.status_code == 404 and response.json()["code"] == 1203, path
            assert response.json()["data"] is None
            if task_id not in path:
                assert task_id not in response.text
        assert b.get(T2V).json()["data"] == []
        assert b.get(f"{T2V}?pageNum=1&pageSize=500").json()["data"] == []
    assert state.ledger.get_reservation(reservation.id).state is ReservationState.SUBMITTED

    payload = json.dumps({"task_id": task_id, "task_status": "failed", "external_task_id": reservation.id})
    with http(base_url) as anyone:
        unsigned = anyone.post("/callbacks/kling", content=payload, headers={"content-type": "application/json"})
        badly_signed = anyone.post(
            "/callbacks/kling",
            content=payload,
            headers={
                "content-type": "application/json",
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            },
        )
    assert unsigned.status_code == 401 and badly_signed.status_code == 401
    assert state.ledger.get_reservation(reservation.id).state is ReservationState.SUBMITTED

    with http(base_url, f"Bearer {alice['api_key']}") as a:
        mine = a.get(f"{T2V}/alice-order-7").json()
    assert mine["data"]["task_status"] == "succeed"
    assert state.ledger.get_reservation(reservation.id).state is ReservationState.COMMITTED


def test_secrets_absent_from_logs_answers_and_errors(
    gateway: tuple[str, GatewayState], kling: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Admin token, virtual secrets and the real Kling secret never show in a log line or an answer."""
    caplog.set_level(logging.DEBUG)
    base_url, _ = gateway
    key = issue(base_url, "app", "p1")
    answers: list[httpx.Response] = []
    with http(base_url, f"Bearer {key['api_key']}") as client:
        answers.append(client.post(T2V, json=BODY))
        answers.append(client.post(T2V, json={**BODY, "model_name": "no-such-model"}))
        answers.append(client.post(T2V, content=b"{not json", headers={"content-type": "application/json"}))
        answers.append(client.get(f"{T2V}/does-not-exist"))
        answers.append(client.get("/metrics"))
        answers.append(client.get("/healthz"))
    with http(base_url, jwt(key)) as client:
        answers.append(client.get(T2V))
    with http(base_url, "Bearer " + encode_token(key["access_key"], "wrong", now=int(time.time()))) as client:
        answers.append(client.get(T2V))
    with http(base_url, f"Bearer {ADMIN_TOKEN}") as admin:
        answers.append(admin.get("/admin/api/keys"))
        answers.append(admin.get("/admin/api/reservations"))
        answers.append(admin.post("/admin/api/reconcile", json={"check_costs": True}))
    assert answers[0].json()["code"] == 0 and answers[-1].status_code == 200
    blob = "\n".join(
        [r.text + str(r.headers) for r in answers] + [r.getMessage() + str(r.__dict__) for r in caplog.records]
    )
    for secret in (ADMIN_TOKEN, key["secret_key"], key["api_key"], key["webhook_secret"], kling.secret_key):
        assert secret and secret not in blob
    assert auth()["Authorization"] not in blob
