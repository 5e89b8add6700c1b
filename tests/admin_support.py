"""Shared set-up for the admin API, dashboard, security and schemathesis tests: a gateway state over a
temporary SQLite ledger, an app serving the admin API and the dashboard, and a seeded month of jobs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from anyio.from_thread import start_blocking_portal
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from kling_budget.kling.auth import JWTAuth
from kling_budget.server import GatewayConfig, GatewayState, Secret, create_app
from kling_budget.simulator import RunningSimulator
from kling_budget.tracker import CostTracker

ADMIN_TOKEN = "adm-test-0123456789abcdef0123456789abcdef"
UPSTREAM_ACCESS_KEY = "real-kling-access-key-AK0123456789"
UPSTREAM_SECRET_KEY = "real-kling-secret-key-SK0123456789abcdef"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class MovableClock:
    """A clock tests move by hand (the ledger asks it for "now")."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_state(
    tmp_path: Path,
    *,
    token: str | None = ADMIN_TOKEN,
    kling: RunningSimulator | None = None,
    webhook_secret: str | None = None,
) -> GatewayState:
    """A gateway state over a fresh SQLite ledger in ``tmp_path``; ``state.clock`` is at :data:`NOW`.

    The upstream is the simulator ``kling`` when given, else a closed loopback port (the admin API and the
    dashboard call it only to reconcile).
    """
    clock = MovableClock(NOW)
    tracker = CostTracker(f"sqlite:///{tmp_path / 'gateway.db'}", clock=clock, alert_sinks=[])
    if kling is not None:
        assert kling.access_key is not None and kling.secret_key is not None
        upstream_url, upstream_auth = kling.base_url, JWTAuth(kling.access_key, kling.secret_key)
    else:
        upstream_url, upstream_auth = "http://127.0.0.1:9", JWTAuth(UPSTREAM_ACCESS_KEY, UPSTREAM_SECRET_KEY)
    config = GatewayConfig(
        upstream_url=upstream_url,
        upstream_auth=upstream_auth,
        admin_token=None if token is None else Secret(token),
        webhook_secret=None if webhook_secret is None else Secret(webhook_secret),
        home=tmp_path / "home",
        settle_interval=0,
    )
    state = GatewayState(config, tracker=tracker)
    state.clock = clock  # type: ignore[attr-defined]
    return state


def make_app(state: GatewayState) -> Starlette:
    """The whole gateway app (proxy, admin API, dashboard) on ``state``, without the settle worker."""
    return create_app(state.config, state=state, settle_worker=False)


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """``app`` with its lifespan acknowledged but not run (clients that open one per request would close
    the ledger after the first request)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    return wrapped


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    """The admin Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def seed(state: GatewayState) -> dict[str, Any]:
    """Budgets and ten days of jobs in March 2026; returns the ids of the interesting jobs.

    marketing/alice uses kling-v2-6 pro 10 s (5 units, $0.70) on even days, research/bob kling-v2-1 std
    5 s (2 units, $0.28) on odd days; today there is an open hold, a submitted job, a released one and
    one committed above its hold.
    """
    tracker, clock = state.tracker, state.clock  # type: ignore[attr-defined]
    tracker.set_budget("account", limit_usd="60", period="monthly")
    tracker.set_budget("marketing", project_id="marketing", limit_units="150", limit_usd="25", period="monthly")
    tracker.set_budget("alice-daily", user_id="alice", limit_usd="3", period="daily", hard=False)
    tracker.set_budget("research-total", project_id="research", limit_units="500", period="total")
    for day in range(2, 10):
        clock.now = datetime(2026, 3, day, 9, 30, tzinfo=UTC)
        if day % 2 == 0:
            tracker.record_usage(f"hist-m-{day}", 10, "kling-v2-6", "alice", "marketing", mode="pro", api_key="mkt-app")
        else:
            tracker.record_usage(f"hist-r-{day}", 5, "kling-v2-1", "bob", "research", mode="std", api_key="res-app")
    clock.now = NOW - timedelta(hours=3)
    held = tracker.reserve(model="kling-v2-6", mode="pro", duration=5, project_id="marketing", user_id="alice")
    submitted = tracker.reserve(model="kling-v2-1", mode="std", duration=10, project_id="research", user_id="bob")
    submitted.mark_submitted("task-sub-1")
    released = tracker.reserve(model="kling-v2-6", mode="std", duration=5, project_id="marketing", user_id="carol")
    released.release("failed upstream")
    over = tracker.reserve(model="kling-v2-1", mode="std", duration=5, project_id="research", user_id="bob")
    over.commit(units="3")
    clock.now = NOW
    return {"held": held.id, "submitted": submitted.id, "released": released.id, "overage": over.id}


class SyncClient:
    """A blocking HTTP client for an ASGI app, in process (one event loop in a helper thread)."""

    def __init__(self, app: ASGIApp) -> None:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request and read the whole answer."""
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self._portal.call(self._client.aclose)
        self._portal_cm.__exit__(None, None, None)


@contextmanager
def serve(app: ASGIApp, *, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
