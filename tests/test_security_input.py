"""Hostile request bodies against a real ``serve`` process: nothing blocks the server, every bad input is a 400.

Each attack is sent over loopback to a running gateway; the tests assert Kling's envelope (400, code 1201 or
1200 for a body that is not JSON at all), that ``/healthz`` keeps answering at once while the attack runs, that
no hold was left behind, and that the log has one line per request and no traceback.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kling_budget.kling.jwt import encode_token
from kling_budget.ledger import open_ledger
from kling_budget.simulator import RunningSimulator
from tests.serveproc import BODY, T2V, ServeProcess, running_serve, timed

ADMIN = "kbadm_security-tests-admin-token-0123456789"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture(scope="module")
def gateway(quick_kling: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One real gateway for the module, admin API on."""
    base = tmp_path_factory.mktemp("input")
    from tests.serveproc import gateway_env

    env = gateway_env(base / "home", KLING_BUDGET_ADMIN_TOKEN=ADMIN, KLING_WEBHOOK_SECRET=WEBHOOK_SECRET)
    with running_serve(quick_kling, f"sqlite:///{base / 'ledger.db'}", base / "home", env=env) as served:
        yield served


def _holds(gateway: ServeProcess) -> int:
    ledger = open_ledger(gateway.db)
    try:
        return len(ledger.list_reservations(limit=100_000))
    finally:
        ledger.close()


def _assert_bad(answer: Any, code: int = 1201, *fragments: str) -> None:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "request_id", "data"} and body["data"] is None
    assert body["code"] == code, body
    assert "\n" not in body["message"] and len(body["message"]) < 600
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def _healthz_stays_fast(gateway: ServeProcess, attack: Any) -> tuple[Any, float]:
    """Run ``attack`` in a thread while timing ``/healthz``; return (attack result, slowest healthz seconds)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(attack()))
    slowest = 0.0
    with gateway.client(None) as probe:
        thread.start()
        while thread.is_alive() or not result:
            answer, seconds = timed(lambda: probe.get("/healthz"))
            assert answer.status_code == 200
            slowest = max(slowest, seconds)
            if not thread.is_alive():
                break
            time.sleep(0.02)
    thread.join(timeout=60)
    return result[0], slowest


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**BODY, "duration": "1e1000000"}, "no exponent"),
        ({**BODY, "duration": "9" * 5000}, "duration is too long"),
        ({"model_name": "kling-v1", "prompt": "p", "n": "1e999999"}, "n must be an integer"),
    ],
)
def test_a_huge_number_in_a_field_is_refused_at_once_and_blocks_no_one(
    gateway: ServeProcess, body: dict[str, Any], fragment: str
) -> None:
    """`duration: "1e1000000"` (tens of seconds of CPU before) is a 400 at once; /healthz stays fast meanwhile."""
    path = "/v1/images/generations" if "n" in body else T2V
    before = _holds(gateway)
    with gateway.client() as client:
        answer, slowest = _healthz_stays_fast(gateway, lambda: timed(lambda: client.post(path, json=body)))
    response, seconds = answer
    _assert_bad(response, 1201, fragment)
    assert seconds < 2.0 and slowest < 2.0  # the attack took 25-30 s of the event loop before
    assert _holds(gateway) == before


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b'{"model_name": "kling-v1", "prompt": "p", "cfg_scale": 1e999999}', 1201, "too long or too large"),
        (b'{"model_name": "kling-v1", "prompt": "p", "cfg_scale": ' + b"7" * 5000 + b"}", 1201, "too long"),
        (b'{"model_name": "kling-v1", "prompt": "p", "cfg_scale": NaN}', 1201, "NaN"),
        (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 1201, "nests deeper"),
        (b'{"prompt": ' + b"[" * 40 + b"]" * 40 + b"}", 1201, "nests deeper"),
        (b'{"model_name": "kling-v1", "prompt": "a \\ud800 lone surrogate"}', 1201, "surrogate"),
        (b'{"model_name": "kling-v1", "prompt": "nul \\u0000 byte"}', 1201, "NUL"),
        (b'{"model_name": "kling-v1", "prompt": "p", "external_task_id": "x\\u0000"}', 1201, "NUL"),
        (b'{"model_name": "kling-v1", "prompt": "\xff\xfe"}', 1200, "not valid JSON"),
        (b"[1, 2]", 1200, "JSON object"),
        (b'{"model_name": "kling-v1", "prompt": "p", "external_task_id": "' + b"x" * 300 + b'"}', 1201, "at most"),
    ],
)
def test_malformed_bodies_are_a_clear_400_with_no_hold(
    gateway: ServeProcess, raw: bytes, code: int, fragment: str
) -> None:
    """Deep nesting, lone surrogates, NUL, huge numbers: Kling's envelope, code 1201 (1200: not JSON), no hold."""
    before = _holds(gateway)
    lines_before = len(gateway.log_lines())
    with gateway.client() as client:
        answer, seconds = timed(lambda: client.post(T2V, content=raw, headers={"content-type": "application/json"}))
    _assert_bad(answer, code, fragment)
    assert seconds < 2.0
    assert _holds(gateway) == before
    time.sleep(0.05)  # the access line is written after the answer
    # Start-up lines may still be arriving when the module's first test runs: count access lines only.
    new = [line for line in gateway.log_lines()[lines_before:] if '"route"' in line]
    assert len(new) == 1 and json.loads(new[0])["status"] == 400, new
    assert not any("Traceback" in line for line in gateway.log_lines())


def test_admin_quote_with_a_huge_duration_answers_at_once(gateway: ServeProcess) -> None:
    """The admin API's dry-run quote refuses `duration: "1e1000000"` at once; /healthz stays fast."""
    with gateway.client(f"Bearer {ADMIN}") as admin:
        answer, slowest = _healthz_stays_fast(
            gateway,
            lambda: timed(
                lambda: admin.post("/admin/api/quote", json={"model": "kling-v2-6", "duration": "1e1000000"})
            ),
        )
    response, seconds = answer
    assert response.status_code == 400 and "duration" in response.json()["error"]["message"]
    assert seconds < 2.0 and slowest < 2.0  # the attack took 25-30 s of the event loop before


def test_unknown_body_fields_are_refused_not_forwarded(gateway: ServeProcess, quick_kling: RunningSimulator) -> None:
    """A field the pricer does not know (it could change Kling's charge) is a 400 naming it; nothing is sent."""
    before = len(quick_kling.sim.tasks())
    with gateway.client() as client:
        for body in (
            {**BODY, "resolution_boost": "8k"},
            {**BODY, "n": 4},
            {**BODY, "multi_shot": True, "multi_prompt": [{"index": 1, "prompt": "a", "duration": "10"}]},
        ):
            answer = client.post(T2V, json=body)
            _assert_bad(answer, 1201, "is not accepted on /v1/videos/text2video")
        lip = client.post("/v1/videos/lip-sync", json={"input": {"video_id": "v", "mode": "text2video", "speed": 3}})
        _assert_bad(lip, 1201, "input.'speed'")
    assert len(quick_kling.sim.tasks()) == before


def test_a_jwt_valid_for_more_than_a_day_is_refused(gateway: ServeProcess) -> None:
    """A token whose exp - nbf exceeds 24 h (or exp - now without nbf) is refused with 1002; 30 min works."""
    key = gateway.key
    assert key.key.access_key and key.secret_key
    now = int(time.time())
    short = encode_token(key.key.access_key, key.secret_key, now=now)
    long = encode_token(key.key.access_key, key.secret_key, now=now, lifetime=25 * 3600)

    def unsigned_nbf() -> str:
        import hashlib
        import hmac

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        head = part({"alg": "HS256", "typ": "JWT"}) + "." + part({"iss": key.key.access_key, "exp": now + 30 * 86400})
        signature = hmac.new(key.secret_key.encode(), head.encode(), hashlib.sha256).digest()
        return head + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()

    with gateway.client(f"Bearer {short}") as client:
        assert client.get(T2V).status_code == 200
    for token in (long, unsigned_nbf()):
        with gateway.client(f"Bearer {token}") as client:
            answer = client.get(T2V)
        assert answer.status_code == 401 and answer.json()["code"] == 1002
        assert "24 h" in answer.json()["message"]


def test_non_ascii_and_oversized_signature_headers_are_a_plain_refusal(gateway: ServeProcess) -> None:
    """A callback with non-ASCII or huge webhook headers is refused with the constant answer, no traceback."""
    headers = [
        {"webhook-id": "msg_é", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,é"},
        {"webhook-id": "m", "webhook-timestamp": "9" * 5000, "webhook-signature": "v1," + "A" * 5000},
    ]
    with gateway.client(None) as client:
        for header in headers:
            encoded = {k: v.encode("utf-8") for k, v in header.items()}
            answer = client.post("/callbacks/kling", content=b"{}", headers=encoded)
            assert answer.status_code == 401 and answer.text == "ok\n"
            answer = client.post("/callbacks/kling/gw-x/token", content=b"{}", headers=encoded)
            assert answer.status_code == 401 and answer.text == "ok\n"
    assert not any("Traceback" in line for line in gateway.log_lines())
