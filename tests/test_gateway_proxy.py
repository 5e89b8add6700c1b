"""The gateway's proxy over real HTTP: the simulator as upstream, uvicorn on loopback."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from kling_budget.errors import LedgerUnavailableError
from kling_budget.kling import KlingClient
from kling_budget.kling.webhooks import WebhookVerificationError, verify_webhook
from kling_budget.ledger import ReservationState
from kling_budget.server import DENIAL_CODE
from kling_budget.simulator import FaultKind, ManualClock, SimulatorConfig, running_simulator
from tests.gatewayutil import ADMIN_TOKEN, RunningGateway, kling_sample_token, running_gateway, wait_until
from tests.simfixtures import callback_receiver

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox in the snow"}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def kling() -> Iterator:
    with running_simulator(SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=0.15)) as sim:
        yield sim


@pytest.fixture
def gw(kling, sqlite_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(kling, sqlite_url, tmp_path / "home") as gateway:
        yield gateway


def _key(gw: RunningGateway, name: str = "app", project: str = "p1", **kw):
    return gw.state.keys.create(name, project=project, kind="both", **kw)


def _bearer(issued) -> str:
    return f"Bearer {issued.api_key}"


def _poll(client: httpx.Client, path: str, status: str, timeout: float = 10) -> dict:
    def done():
        body = client.get(path).json()
        return body if body["data"] and body["data"]["task_status"] == status else None

    return wait_until(done, timeout)


def test_official_sample_jwt_create_query_settles_with_kling_units(gw):
    """A client signing its JWT like Kling's sample creates, queries and gets settled at Kling's charge."""
    issued = _key(gw)
    token = kling_sample_token(issued.key.access_key, issued.secret_key)
    with gw.client(f"Bearer {token}") as client:
        created = client.post(T2V, json=BODY)
        assert created.status_code == 200, created.text
        envelope = created.json()
        assert set(envelope) == {"code", "message", "request_id", "data"}
        assert envelope["code"] == 0 and envelope["data"]["task_status"] == "submitted"
        task_id = envelope["data"]["task_id"]
        done = _poll(client, f"{T2V}/{task_id}", "succeed")
    assert done["data"]["final_unit_deduction"] == "1.5"
    info = gw.state.ledger.find_by_task(task_id)
    assert info.state is ReservationState.COMMITTED and info.actual_milli == 1500
    assert info.attribution.project == "p1" and info.attribution.api_key == "app"


def test_kling_client_works_unchanged_against_the_gateway(gw):
    """Our own KlingClient pointed at the gateway with virtual credentials: create, wait, list."""
    issued = _key(gw)
    with KlingClient(issued.key.access_key, issued.secret_key, base_url=gw.base_url) as kling:
        task = kling.create_text_to_video(prompt="a cat", model_name="kling-v2-6", mode="pro", duration=5)
        done = kling.wait(task, timeout=10, poll_interval=0.05, max_poll_interval=0.1)
        listed = kling.list_tasks(T2V)
    assert done.status.value == "succeeded" and done.charged_units == Decimal("2.5")
    assert [t.task_id for t in listed] == [task.task_id]
    assert gw.state.ledger.find_by_task(task.task_id).actual_milli == 2500


def test_failed_task_releases_the_hold(gw):
    """A task Kling fails is released: nothing stays held or committed."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        task_id = client.post(T2V, json={**BODY, "prompt": "x [sim:fail=moderation]"}).json()["data"]["task_id"]
        failed = _poll(client, f"{T2V}/{task_id}", "failed")
    assert failed["data"]["task_status_msg"] == "moderation"
    info = gw.state.ledger.find_by_task(task_id)
    assert info.state is ReservationState.RELEASED


def test_denial_is_a_kling_envelope_with_code_1190_and_the_full_story(gw):
    """Over budget: HTTP 429, code 1190, message and data naming budget, window, limit, committed, held, price,
    reset; Retry-After is the seconds until the daily window resets."""
    gw.state.tracker.set_budget("team-daily", project_id="p1", period="daily", limit_units=2)
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        assert client.post(T2V, json=BODY).status_code == 200
        denied = client.post(T2V, json=BODY)
    assert denied.status_code == 429
    body = denied.json()
    assert body["code"] == DENIAL_CODE == 1190 and body["request_id"]
    denial = body["data"]["denial"]
    assert denial["budget"] == "team-daily" and denial["limit"] == "2" and denial["held"] == "1.5"
    reset = datetime.fromisoformat(denial["reset_at"])
    expected = math.ceil((reset - datetime.now(UTC)).total_seconds())
    retry_after = int(denied.headers["Retry-After"])
    assert body["data"]["retry_after"] == retry_after and expected - 5 <= retry_after <= expected + 1
    message = body["message"]
    for part in (
        "team-daily",
        "daily window",
        "limit 2 units",
        "committed 0 units",
        "held 1.5 units",
        "price 1.5 units",
        "resets 20",
    ):
        assert part in message, (part, message)
    assert len(gw.state.ledger.list_reservations(states=["held", "submitted", "committed"])) == 1


def test_client_external_task_id_round_trip(gw, kling):
    """The client's external_task_id is shown back, answers queries, and never reaches Kling."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        created = client.post(T2V, json={**BODY, "external_task_id": "order-42"}).json()
        assert created["data"]["task_info"]["external_task_id"] == "order-42"
        by_path = client.get(f"{T2V}/order-42").json()
        by_query = client.get(T2V, params={"external_task_id": "order-42"}).json()
        duplicate = client.post(T2V, json={**BODY, "external_task_id": "order-42"})
        listed = client.get(T2V).json()["data"]
    task_id = created["data"]["task_id"]
    assert by_path["data"]["task_id"] == by_query["data"]["task_id"] == task_id
    assert by_path["data"]["task_info"]["external_task_id"] == "order-42"
    assert listed[0]["task_info"]["external_task_id"] == "order-42"
    assert duplicate.status_code == 400 and duplicate.json()["code"] == 1201
    upstream_external = kling.sim.task(task_id).external_task_id
    assert upstream_external.startswith("gw-") and upstream_external != "order-42"


def test_a_tenant_sees_only_its_own_tasks(gw):
    """Another key's task id or external id is 404/1203, and lists are per key."""
    alice, bob = _key(gw, "alice", "p1"), _key(gw, "bob", "p2")
    with gw.client(_bearer(alice)) as a, gw.client(_bearer(bob)) as b:
        task_id = a.post(T2V, json={**BODY, "external_task_id": "secret-order"}).json()["data"]["task_id"]
        for path in (f"{T2V}/{task_id}", f"{T2V}/secret-order", f"{T2V}?task_id={task_id}"):
            other = b.get(path)
            assert other.status_code == 404 and other.json()["code"] == 1203
        assert b.get(T2V).json()["data"] == []
        assert [t["task_id"] for t in a.get(T2V).json()["data"]] == [task_id]


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, 1001),
        ("Bearer", 1001),
        ("Basic abc", 1002),
        ("Bearer kbk_not-a-real-key", 1000),
        ("Bearer a.b.c", 1002),
    ],
)
def test_missing_and_malformed_credentials(gw, authorization, code):
    """Missing, malformed and unknown credentials get Kling's 401 codes."""
    with gw.client(authorization) as client:
        answer = client.post(T2V, json=BODY)
    assert answer.status_code == 401 and answer.json()["code"] == code
    assert gw.state.ledger.list_reservations() == []


def test_bad_expired_not_yet_valid_and_revoked_credentials(gw):
    """Wrong secret 1000, expired 1004, not yet valid 1003, revoked key 1000 (JWT and API key)."""
    issued = _key(gw)
    ak = issued.key.access_key
    cases = [
        (kling_sample_token(ak, "wrong-secret"), 1000),
        (kling_sample_token(ak, issued.secret_key, exp_in=-60, nbf_ago=1900), 1004),
        (kling_sample_token(ak, issued.secret_key, nbf_ago=-120), 1003),
        (kling_sample_token("ak_unknown", issued.secret_key), 1000),
    ]
    for token, code in cases:
        with gw.client(f"Bearer {token}") as client:
            answer = client.get(T2V)
        assert answer.status_code == 401 and answer.json()["code"] == code
    gw.state.keys.revoke("app")
    for authorization in (f"Bearer {kling_sample_token(ak, issued.secret_key)}", _bearer(issued)):
        with gw.client(authorization) as client:
            answer = client.post(T2V, json=BODY)
        assert answer.status_code == 401 and answer.json()["code"] == 1000 and "revoked" in answer.json()["message"]


def test_rotated_key_refuses_old_credentials_and_keeps_tasks(gw):
    """After rotate the old secrets fail and the new ones see the key's earlier tasks."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        task_id = client.post(T2V, json=BODY).json()["data"]["task_id"]
    fresh = gw.state.keys.rotate("app")
    with gw.client(_bearer(issued)) as old, gw.client(_bearer(fresh)) as new:
        assert old.get(T2V).json()["code"] == 1000
        assert new.get(f"{T2V}/{task_id}").json()["data"]["task_id"] == task_id


def test_unpriceable_request_is_1201_naming_what_is_accepted(gw):
    """A model the price table does not know: 400/1201 listing models; nothing reserved or forwarded."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        answer = client.post(T2V, json={**BODY, "model_name": "kling-v9"})
        not_json = client.post(T2V, content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["code"] == 1201
    assert "kling-v9" in answer.json()["message"] and "kling-v2-6" in answer.json()["message"]
    assert not_json.status_code == 400 and not_json.json()["code"] == 1200
    assert gw.state.ledger.list_reservations() == []


def test_unknown_v1_route_is_refused_not_forwarded(gw, kling):
    """A /v1 path the gateway does not price is 404/1202 and never reaches Kling (no budget bypass)."""
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        answer = client.post("/v1/videos/multi-elements/init-selection", json={})
    assert answer.status_code == 404 and answer.json()["code"] == 1202
    assert kling.sim.tasks() == []


def test_ledger_unreachable_fails_closed(gw, kling, monkeypatch):
    """When the ledger cannot be reached the create is refused with 503/5001 and nothing is forwarded."""
    issued = _key(gw)

    def down(*args, **kwargs):
        raise LedgerUnavailableError("ledger is locked by another writer")

    monkeypatch.setattr(gw.state.tracker, "reserve_quote", down)
    with gw.client(_bearer(issued)) as client:
        answer = client.post(T2V, json=BODY)
    assert answer.status_code == 503 and answer.json()["code"] == 5001
    assert kling.sim.tasks() == []


def test_definite_upstream_rejection_releases_the_hold(sqlite_url, tmp_path):
    """Kling's 1102 (pack depleted) is passed through and the hold is released at once."""
    with (
        running_simulator(SimulatorConfig.single(packs={"video": 1})) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home") as gw,
    ):
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            answer = client.post(T2V, json=BODY)
        assert answer.status_code == 429 and answer.json()["code"] == 1102
        (info,) = gw.state.ledger.list_reservations()
        assert info.state is ReservationState.RELEASED
        with gw.client(_bearer(issued)) as client_retry:
            client_retry.post(T2V, json={**BODY, "external_task_id": "same"})
            again = client_retry.post(T2V, json={**BODY, "external_task_id": "same"})
        assert again.json()["code"] == 1102  # a rejected create frees its external id for a retry


def test_ambiguous_create_found_by_lookup_is_a_success(gw, kling):
    """Kling answers 5002 but created the task: the gateway finds it by external id and answers 200."""
    issued = _key(gw)
    kling.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST")
    with gw.client(_bearer(issued)) as client:
        answer = client.post(T2V, json={**BODY, "external_task_id": "amb-1"})
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["data"]["task_id"]
    assert answer.json()["data"]["task_info"]["external_task_id"] == "amb-1"
    assert gw.state.ledger.find_by_task(task_id).state is ReservationState.SUBMITTED
    assert len(kling.sim.tasks()) == 1


def test_unknown_create_outcome_keeps_the_hold_until_the_worker_learns(kling, sqlite_url, tmp_path):
    """5002 and every lookup failing: 504/5002, hold kept; later the worker releases it (never created)."""
    with running_gateway(kling, sqlite_url, tmp_path / "home", upstream_timeout=0.5, settle_interval=0.05) as gw:
        issued = _key(gw)
        kling.sim.faults.inject(FaultKind.UNAVAILABLE_5001, path=T2V, count=None, method="GET")
        kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="POST")
        with gw.client(_bearer(issued)) as client:
            answer = client.post(T2V, json=BODY)
        assert answer.status_code == 504 and answer.json()["code"] == 5002
        (info,) = gw.state.ledger.list_reservations()
        assert info.state is ReservationState.SUBMITTED
        kling.sim.faults.clear()
        _make_due(gw)  # as if the grace period had passed
        wait_until(lambda: gw.state.ledger.get_reservation(info.id).state is ReservationState.RELEASED)


def _make_due(gw: RunningGateway) -> None:
    from kling_budget.server.task_store import now_micros

    gw.state.tasks.backend.run(lambda c: c.execute("UPDATE gateway_tasks SET next_check_at = ?", (now_micros(),)))


def test_settle_worker_settles_tasks_nobody_asks_about(kling, sqlite_url, tmp_path):
    """With no query and no callback, the settle worker commits the task's charge."""
    with running_gateway(kling, sqlite_url, tmp_path / "home", settle_interval=0.05) as gw:
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            task_id = client.post(T2V, json=BODY).json()["data"]["task_id"]
        wait_until(lambda: kling.sim.task(task_id).status == "succeed")
        _make_due(gw)  # instead of waiting the first 5 s backoff
        wait_until(lambda: gw.state.ledger.find_by_task(task_id).state is ReservationState.COMMITTED, 10)


def test_callbacks_end_to_end(sqlite_url, tmp_path):
    """Kling calls the gateway back (signed); it settles and forwards to the client, re-signed, client ids."""
    config = SimulatorConfig.single(webhook_secret=WEBHOOK_SECRET, queued_seconds=0.05, running_seconds=0.1)
    with (
        running_simulator(config) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home", public=True, webhook_secret=WEBHOOK_SECRET) as gw,
        callback_receiver() as receiver,
    ):
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            created = client.post(T2V, json={**BODY, "external_task_id": "cb-1", "callback_url": receiver.url})
        task_id = created.json()["data"]["task_id"]
        reservation = gw.state.ledger.find_by_task(task_id)
        assert kling.sim.task(task_id).callback_url.startswith(gw.url(f"/callbacks/kling/{reservation.id}/"))
        wait_until(lambda: gw.state.ledger.find_by_task(task_id).state is ReservationState.COMMITTED, 10)
        received = wait_until(lambda: [r for r in receiver.received if b'"succeed"' in r.body], 10)
        last = received[-1]
        body = json.loads(last.body)
        assert body["task_id"] == task_id and body["task_info"]["external_task_id"] == "cb-1"
        verify_webhook(issued.webhook_secret, last.headers, last.body, now=int(time.time()))
        with pytest.raises(WebhookVerificationError):
            verify_webhook(WEBHOOK_SECRET, last.headers, last.body, now=int(time.time()))
        forged = httpx.post(gw.url("/callbacks/kling"), content=last.body, headers={"content-type": "application/json"})
        assert forged.status_code == 401


def test_healthz_and_metrics(gw):
    """/healthz reports the ledger and upstream; /metrics is Prometheus text with the gateway's series."""
    gw.state.tracker.set_budget("tiny", project_id="p1", period="daily", limit_units=1)
    issued = _key(gw)
    with gw.client(_bearer(issued)) as client:
        client.post(T2V, json=BODY)
        health = client.get("/healthz")
        metrics = client.get("/metrics")
    assert health.status_code == 200 and health.json()["ledger"] == "ok"
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'kling_gateway_denials_total{budget="tiny"} 1' in text
    assert 'kling_gateway_requests_total{route="/v1/videos/text2video",method="POST",status="429"} 1' in text
    assert "kling_gateway_upstream_seconds_bucket" not in text or "operation=" in text


def test_secrets_never_appear_in_logs_responses_errors_or_reprs(gw, kling, caplog):
    """Real Kling keys, virtual secrets and the admin token are absent from logs, answers, errors, reprs."""
    caplog.set_level(logging.DEBUG, logger="kling_budget")
    issued = _key(gw)
    texts: list[str] = []
    with gw.client(_bearer(issued)) as client:
        texts.append(client.post(T2V, json=BODY).text)
        texts.append(client.post(T2V, json={**BODY, "model_name": "nope"}).text)
        texts.append(client.get(f"{T2V}/missing").text)
        kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="POST")
        texts.append(client.post(T2V, json=BODY).text)
        texts.append(client.get("/metrics").text)
        texts.append(client.get("/healthz").text)
    with gw.client(f"Bearer {kling_sample_token(issued.key.access_key, 'bad')}") as client:
        texts.append(client.get(T2V).text)
    texts += [repr(gw.state), repr(gw.state.config), repr(gw.state.keys), repr(gw.state.upstream), repr(issued)]
    texts += [r.getMessage() + str(r.__dict__) for r in caplog.records]
    blob = "\n".join(texts)
    for secret in (kling.secret_key, issued.secret_key, issued.api_key, issued.webhook_secret, ADMIN_TOKEN):
        assert secret and secret not in blob


def test_manual_clock_keeps_tasks_running_until_told(sqlite_url, tmp_path):
    """A query of a running task changes nothing in the ledger; the hold stays until Kling ends the task."""
    clock = ManualClock()
    with (
        running_simulator(SimulatorConfig.single(), clock=clock) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home") as gw,
    ):
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            task_id = client.post(T2V, json=BODY).json()["data"]["task_id"]
            assert client.get(f"{T2V}/{task_id}").json()["data"]["task_status"] == "submitted"
            assert gw.state.ledger.find_by_task(task_id).state is ReservationState.SUBMITTED
            clock.advance(5)
            assert client.get(f"{T2V}/{task_id}").json()["data"]["task_status"] == "succeed"
        assert gw.state.ledger.find_by_task(task_id).state is ReservationState.COMMITTED


def test_forged_unsigned_callback_is_never_forwarded_as_sent(sqlite_url, tmp_path):
    """Without a webhook secret a tokenless callback is refused; the client only ever gets Kling's task."""
    config = SimulatorConfig.single(queued_seconds=0.05, running_seconds=5)
    with (
        running_simulator(config) as kling,
        running_gateway(kling, sqlite_url, tmp_path / "home", public=True) as gw,
        callback_receiver() as receiver,
    ):
        issued = _key(gw)
        with gw.client(_bearer(issued)) as client:
            created = client.post(T2V, json={**BODY, "external_task_id": "f-1", "callback_url": receiver.url})
        task_id = created.json()["data"]["task_id"]
        forged = {"task_id": task_id, "task_status": "succeed", "final_unit_deduction": "0", "evil": True}
        answer = httpx.post(gw.url("/callbacks/kling"), json=forged)
        assert answer.status_code == 401
        received = receiver.wait_for(1)
        assert all(b"evil" not in r.body for r in received)
        assert gw.state.ledger.find_by_task(task_id).state is ReservationState.SUBMITTED  # still running at Kling
