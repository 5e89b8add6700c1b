"""Less exposure from a real ``serve`` process: guarded ``/metrics``, tenant-safe denials, scrubbed Kling errors."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator
from kling_budget.tracker import CostTracker
from tests.serveproc import BODY, T2V, gateway_env, prepare_ledger, running_serve

METRICS_TOKEN = "kbmet_security-tests-metrics-token-0123"


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """The simulator as Kling."""
    with running_simulator(SimulatorConfig.single(concurrency=100)) as sim:
        yield sim


def _own_address() -> str | None:
    """A non-loopback address of this host, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this picks the outgoing interface
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_metrics_need_the_token_when_one_is_set(kling: RunningSimulator, tmp_path: Path) -> None:
    """With KLING_BUDGET_METRICS_TOKEN set, /metrics is 401 without it (even from loopback) and 200 with it."""
    env = gateway_env(tmp_path / "home", KLING_BUDGET_METRICS_TOKEN=METRICS_TOKEN)
    with running_serve(kling, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "home", env=env) as gateway:
        with gateway.client(None) as client:
            assert client.get("/metrics").status_code == 401
            assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            answer = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert answer.status_code == 200 and "kling_gateway_requests_total" in answer.text


def test_metrics_are_loopback_only_by_default(kling: RunningSimulator, tmp_path: Path) -> None:
    """Without a token, /metrics answers loopback clients only (unless --public-metrics)."""
    address = _own_address()
    if address is None:
        pytest.skip("this host has no non-loopback address to connect from")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_serve(kling, db, tmp_path / "home", "--host", "0.0.0.0") as gateway:
        port = gateway.port
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
            assert client.get(f"http://{address}:{port}/metrics").status_code == 401
            assert client.get(f"http://{address}:{port}/healthz").status_code == 200
    key = prepare_ledger(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "home2")
    with (
        running_serve(kling, db, tmp_path / "home", "--host", "0.0.0.0", "--public-metrics", key=key) as gateway,
        httpx.Client(timeout=10) as client,
    ):
        assert client.get(f"http://{address}:{gateway.port}/metrics").status_code == 200


def test_a_denial_by_a_wider_budget_does_not_reveal_the_account_totals(kling: RunningSimulator, tmp_path: Path) -> None:
    """The tenant sees its own project budget's figures, but of an account-wide budget only its name and reset."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    key = prepare_ledger(db, tmp_path / "home")
    with CostTracker(db, alert_sinks=[]) as tracker:
        tracker.set_budget("p1-daily", project_id="p1", period="daily", limit_units=100)
        tracker.set_budget("account-monthly", period="monthly", limit_units="1.4")
    with running_serve(kling, db, tmp_path / "home", key=key) as gateway, gateway.client() as client:
        first = client.post(T2V, json=BODY)  # 1.5 units: fits the project's 100, not the account's 1.4
        assert first.status_code == 429 and first.json()["code"] == 1190
        message = first.json()["message"]
        assert "'account-monthly'" in message and "resets" in message
        for secret in ("1.4", "committed", "held", "limit", "price"):
            assert secret not in message, message
    with CostTracker(db, alert_sinks=[]) as tracker:
        tracker.set_budget("account-monthly", period="monthly", limit_units=100_000)
        tracker.set_budget("p1-daily", project_id="p1", period="daily", limit_units=1)
    with running_serve(kling, db, tmp_path / "home", key=key) as gateway, gateway.client() as client:
        own = client.post(T2V, json=BODY).json()["message"]
    assert "'p1-daily'" in own and "limit 1 units" in own and "committed 0 units" in own


class _LeakyKling(BaseHTTPRequestHandler):
    """A Kling that echoes the caller's credentials in its error messages (some APIs do)."""

    def do_POST(self) -> None:
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        _header, payload, signature = [*token.split("."), "", "", ""][:3]
        body = json.dumps(
            {
                "code": 1201,
                "message": f"bad token {token}; payload {payload}; signature {signature}; key sim-access-key",
                "request_id": f"req-{signature}",
                "detail": {"auth": token, "access_key": "sim-access-key"},
                "data": {"echo": token},
            }
        ).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.tokens.append(token)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_kling_errors_passed_through_never_carry_the_real_credentials(tmp_path: Path) -> None:
    """Kling's error envelope reaches the client without the access key, the token or any segment of it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LeakyKling)
    server.tokens = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        upstream = RunningSimulatorStub(f"http://127.0.0.1:{server.server_address[1]}")
        with (
            running_serve(upstream, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "home") as gateway,  # type: ignore[arg-type]
            gateway.client() as client,
        ):
            answer = client.post(T2V, json=BODY)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 400 and answer.json()["code"] == 1201
    token = server.tokens[0]  # type: ignore[attr-defined]
    text = answer.text
    assert "[REDACTED]" in text and answer.json()["data"] is None
    for leaked in ("sim-access-key", token, *[part for part in token.split(".") if len(part) >= 8]):
        assert leaked not in text, leaked


class RunningSimulatorStub:
    """Just the upstream URL ``running_serve`` needs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
