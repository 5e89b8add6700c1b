"""Helpers for gateway tests: a gateway served by uvicorn on loopback, and Kling-style JWT signing.

Plain functions and context managers (not fixtures), so any gateway test module can import them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from kling_budget.kling.auth import JWTAuth
from kling_budget.server import GatewayConfig, GatewayState, Secret, create_app
from kling_budget.simulator import RunningSimulator
from kling_budget.simulator.runner import _bind, _ThreadedServer

ADMIN_TOKEN = "kbadm_test-admin-token-value-0123456789"


def kling_sample_token(
    access_key: str, secret_key: str, *, now: int | None = None, exp_in: int = 1800, nbf_ago: int = 5
) -> str:
    """A JWT signed exactly as Kling's official Python sample does (PyJWT's layout, hand-rolled)."""
    issued = int(time.time()) if now is None else now
    headers = {"alg": "HS256", "typ": "JWT"}
    payload = {"iss": access_key, "exp": issued + exp_in, "nbf": issued - nbf_ago}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps(headers, separators=(",", ":")).encode())
        + "."
        + b64(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = hmac.new(secret_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@dataclass
class RunningGateway:
    """A gateway served on loopback."""

    base_url: str
    state: GatewayState
    app: Any

    def url(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return self.base_url + path

    def client(self, authorization: str | None = None, **kwargs: Any) -> httpx.Client:
        """A plain httpx client on the gateway (optionally with a fixed Authorization header)."""
        headers = {"Authorization": authorization} if authorization else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, verify=False, **kwargs)


@contextmanager
def running_gateway(
    kling: RunningSimulator,
    db: str,
    home: Path,
    *,
    public: bool = False,
    settle_interval: float = 0.0,
    webhook_secret: str | None = None,
    **options: Any,
) -> Iterator[RunningGateway]:
    """Serve a gateway whose upstream is ``kling`` (with the simulator's credentials) in a thread."""
    assert kling.access_key is not None and kling.secret_key is not None
    sock = _bind("127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = GatewayConfig(
        upstream_url=kling.base_url,
        upstream_auth=JWTAuth(kling.access_key, kling.secret_key),
        db=db,
        home=home,
        public_url=base_url if public else None,
        settle_interval=settle_interval,
        webhook_secret=Secret(webhook_secret) if webhook_secret else None,
        admin_token=Secret(ADMIN_TOKEN),
        shutdown_grace=10,
        **{"allow_callback_hosts": ("127.0.0.1",), **options},  # tests' callback receivers are on loopback
    )
    app = create_app(config)
    server = _ThreadedServer(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)
        yield RunningGateway(base_url, app.state.gateway, app)
    finally:
        server.stop()
        thread.join(timeout=20)
        sock.close()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
