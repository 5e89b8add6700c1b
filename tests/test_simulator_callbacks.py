"""Kling simulator callbacks: legacy payloads on every status change, Standard Webhooks signatures."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from kling_budget.kling.webhooks import WebhookVerificationError, sign_webhook, verify_webhook
from kling_budget.simulator import ManualClock, SimulatorConfig, running_simulator
from tests.simfixtures import callback_receiver, sim_client

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a cat"}
SECRET = "whsec_" + base64.b64encode(b"simulator-test-webhook-secret-32").decode()


def test_our_signer_matches_the_standardwebhooks_package() -> None:
    """kling_budget.kling.webhooks signs and verifies exactly like the reference standardwebhooks package."""
    body = b'{"task_id":"1","task_status":"succeed"}'
    stamp = int(time.time())
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    assert sign_webhook(SECRET, "msg_1", stamp, body) == theirs
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": theirs}
    assert verify_webhook(SECRET, headers, body, now=stamp) == "msg_1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, headers, body + b" ", now=stamp)


def test_callbacks_on_every_status_change_are_signed() -> None:
    """submitted, processing and succeed are POSTed in order, each verifiable with standardwebhooks."""
    clock = ManualClock()
    config = SimulatorConfig.single(webhook_secret=SECRET)
    with callback_receiver() as receiver, running_simulator(config, clock=clock) as kling:
        with sim_client(kling) as client:
            created = client.post(T2V, json={**BODY, "callback_url": receiver.url, "external_task_id": "cb-1"})
            task_id = created.json()["data"]["task_id"]
            receiver.wait_for(1)
            clock.advance(0.2)
            receiver.wait_for(2)
            clock.advance(0.5)
            got = receiver.wait_for(3)
            final = client.get(f"{T2V}/{task_id}").json()["data"]
        deliveries = kling.sim.wait_for_deliveries(3)
    payloads = [Webhook(SECRET).verify(r.body, r.headers) for r in got]
    for received in got:
        stamp = int(received.headers["webhook-timestamp"])
        assert verify_webhook(SECRET, received.headers, received.body, now=stamp) == received.headers["webhook-id"]
    assert [p["task_status"] for p in payloads] == ["submitted", "processing", "succeed"]
    assert all(p["task_id"] == task_id and p["task_info"]["external_task_id"] == "cb-1" for p in payloads)
    assert payloads[-1] == final
    assert payloads[-1]["final_unit_deduction"] == final["final_unit_deduction"] != "0"
    assert len({r.headers["webhook-id"] for r in got}) == 3
    assert [d.http_status for d in deliveries] == [200, 200, 200]
    assert got[0].path == "/kling/callback" and got[0].headers["content-type"] == "application/json"


def test_callbacks_fire_by_wall_clock_without_reads() -> None:
    """With the real clock, the scheduler fires callbacks as tasks progress, with no polling by the client."""
    config = SimulatorConfig.single(queued_seconds=0.05, running_seconds=0.05)
    with callback_receiver() as receiver, running_simulator(config) as kling:
        with sim_client(kling) as client:
            client.post(T2V, json={**BODY, "callback_url": receiver.url})
        got = receiver.wait_for(3)
    statuses = [json.loads(r.body)["task_status"] for r in got]
    assert statuses == ["submitted", "processing", "succeed"]
    assert "webhook-signature" not in got[0].headers


def test_failed_task_callback_reports_zero() -> None:
    """A failing task's last callback says failed, gives the reason and charges "0"."""
    clock = ManualClock()
    with callback_receiver() as receiver, running_simulator(clock=clock) as kling:
        kling.sim.script.fail_next(1, "risk control")
        kling.sim.configure(callback_on_submit=False)
        with sim_client(kling) as client:
            client.post(T2V, json={**BODY, "callback_url": receiver.url})
        clock.advance(1)
        got = receiver.wait_for(2)
    last = json.loads(got[-1].body)
    assert [json.loads(r.body)["task_status"] for r in got] == ["processing", "failed"]
    assert (last["task_status_msg"], last["final_unit_deduction"]) == ("risk control", "0")


def test_duplicate_and_reordered_deliveries() -> None:
    """The duplicate switch sends each notification twice with one webhook-id; reorder sends newest first."""
    clock = ManualClock()
    config = SimulatorConfig.single(webhook_secret=SECRET)
    with callback_receiver() as receiver, running_simulator(config, clock=clock) as kling:
        kling.sim.callbacks.duplicate = True
        kling.sim.callbacks.reorder = True
        with sim_client(kling) as client:
            client.post(T2V, json={**BODY, "callback_url": receiver.url})
            clock.advance(0.2)
            time.sleep(0.05)
            assert receiver.received == []
            clock.advance(0.5)
            got = receiver.wait_for(6)
    statuses = [json.loads(r.body)["task_status"] for r in got]
    assert statuses == ["succeed", "succeed", "processing", "processing", "submitted", "submitted"]
    ids = [r.headers["webhook-id"] for r in got]
    assert ids[0] == ids[1] and ids[2] == ids[3] and len(set(ids)) == 3


def test_failed_deliveries_are_retried_when_configured() -> None:
    """A receiver answering 500 gets callback_retries more attempts; every attempt is recorded."""
    clock = ManualClock()
    config = SimulatorConfig.single(callback_retries=1, callback_on_submit=False)
    with callback_receiver() as receiver, running_simulator(config, clock=clock) as kling:
        receiver.status = 500
        with sim_client(kling) as client:
            client.post(T2V, json={**BODY, "callback_url": receiver.url})
        clock.advance(0.2)
        deliveries = kling.sim.wait_for_deliveries(2)
    assert [(d.status, d.attempt, d.http_status) for d in deliveries] == [
        ("processing", 1, 500),
        ("processing", 2, 500),
    ]


NEW_T2V = "/text-to-video/kling-3.0"
NEW_BODY = {"prompt": "a fox", "settings": {"resolution": "1080p", "duration": 5, "audio": "native"}}


def test_new_design_callbacks_carry_the_task_item_signed() -> None:
    """A 2026 task calls back on every status change with the task item (billing once ended), signed."""
    clock = ManualClock()
    config = SimulatorConfig.single(webhook_secret=SECRET)
    with callback_receiver() as receiver, running_simulator(config, clock=clock) as kling:
        headers = kling.api_key_headers()
        options = {"callback_url": receiver.url, "external_task_id": "cb-new"}
        with httpx.Client(base_url=kling.base_url, headers=headers, verify=False) as client:
            task_id = client.post(NEW_T2V, json={**NEW_BODY, "options": options}).json()["data"]["id"]
            receiver.wait_for(1)
            clock.advance(0.2)
            receiver.wait_for(2)
            clock.advance(0.5)
            got = receiver.wait_for(3)
            [final] = client.get("/tasks", params={"task_ids": task_id}).json()["data"]
    payloads = [Webhook(SECRET).verify(r.body, r.headers) for r in got]
    assert [p["status"] for p in payloads] == ["submitted", "processing", "succeeded"]
    assert all(p["id"] == task_id and p["external_id"] == "cb-new" for p in payloads)
    assert ["billing" in p for p in payloads] == [False, False, True]
    assert payloads[-1] == final
    assert final["billing"] == [{"charge_type": "unit", "amount": "6", "package_type": "video"}]
    assert len({r.headers["webhook-id"] for r in got}) == 3


def test_new_design_early_failure_callbacks() -> None:
    """A 2026 task failing before generation calls back submitted then failed, with billing [{"amount": "0"}]."""
    clock = ManualClock()
    with callback_receiver() as receiver, running_simulator(clock=clock) as kling:
        with httpx.Client(base_url=kling.base_url, headers=kling.api_key_headers(), verify=False) as client:
            body = {**NEW_BODY, "prompt": "a fox [sim:fail_early=bad image]", "options": {"callback_url": receiver.url}}
            client.post(NEW_T2V, json=body)
        clock.advance(1)
        got = receiver.wait_for(2)
    payloads = [json.loads(r.body) for r in got]
    assert [p["status"] for p in payloads] == ["submitted", "failed"]
    assert (payloads[1]["message"], payloads[1]["billing"]) == ("bad image", [{"amount": "0"}])
    assert "webhook-signature" not in got[0].headers
