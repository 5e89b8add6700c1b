"""``create_app(config)``: the gateway's ASGI app (Kling's routes, callbacks, health, metrics, admin, dashboard).

Kling's routes: both API designs' creates and ``/v1`` queries (:mod:`kling_budget.server.proxy`), the 2026
design's ``/tasks`` (:mod:`kling_budget.server.task_routes`) and the account routes
(:mod:`kling_budget.server.account`).

The app owns one :class:`~kling_budget.server.state.GatewayState`. Request bodies are capped before they
are read (:mod:`kling_budget.server.limits`); ``/metrics`` is guarded (:mod:`kling_budget.server.exposure`);
``/healthz`` probes that the ledger takes writes, within ``health_timeout`` (:mod:`kling_budget.server.health`).
At start-up it starts the settle worker; at shutdown (SIGTERM under uvicorn: no new connections, in-flight
requests finish) it waits up to ``config.shutdown_grace`` seconds until every create in flight has its hold
recorded or released, stops the worker after its current sweep, finishes forwarding callbacks, and closes
the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_budget.server.account import AccountRoutes
from kling_budget.server.admin import admin_routes
from kling_budget.server.callbacks import CALLBACK_BODY, KlingCallbacks
from kling_budget.server.compat import KlingEdge
from kling_budget.server.dashboard import dashboard_routes
from kling_budget.server.exposure import metrics_allowed
from kling_budget.server.health import LedgerHealth
from kling_budget.server.limits import BodyLimit
from kling_budget.server.metrics import CONTENT_TYPE
from kling_budget.server.proxy import Proxy
from kling_budget.server.settle_worker import SettleWorker
from kling_budget.server.state import CALLBACK_PATH, GatewayConfig, GatewayState
from kling_budget.server.task_routes import TaskRoutes
from kling_budget.server.task_store import dumps, new_id

__all__ = ["create_app"]

access_log = logging.getLogger("kling_budget.gateway.access")
logger = logging.getLogger("kling_budget.gateway")


class _Observe:
    """Outermost ASGI layer: a request id, the access log line and the request counter for every request."""

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.state.metrics.request(template, scope["method"], status)
            if access_log.isEnabledFor(logging.INFO):
                request_state = scope.get("state", {})
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    template,
                    status,
                    extra={
                        "request_id": request_id,
                        "route": template,
                        "method": scope["method"],
                        "status": status,
                        "key": request_state.get("key_name"),
                        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                        "task_id": request_state.get("task_id"),
                        "reservation_id": request_state.get("reservation_id"),
                        "upstream_request_id": request_state.get("upstream_request_id"),
                        "budget": request_state.get("budget"),
                        "instance": self.state.config.instance,
                    },
                )


def create_app(
    config: GatewayConfig,
    *,
    state: GatewayState | None = None,
    settle_worker: bool = True,
) -> Starlette:
    """Build the gateway app.

    Args:
        config: the configuration (see :class:`~kling_budget.server.state.GatewayConfig`).
        state: an already built state (tests); by default built from ``config``.
        settle_worker: run the background settle worker (``config.settle_interval > 0`` too).

    Returns:
        A Starlette app; ``app.state.gateway`` is the :class:`GatewayState`.
    """
    gateway = state if state is not None else GatewayState(config)
    proxy = Proxy(gateway)
    callbacks = KlingCallbacks(gateway, proxy)
    worker = SettleWorker(gateway, proxy)
    ledger_health = LedgerHealth(gateway.ledger.backend, gateway.config.health_timeout)

    async def healthz(request: Request) -> Response:
        checks: dict[str, Any] = {"upstream": "configured" if gateway.config.upstream_url else "missing"}
        checks["ledger"] = await ledger_health.check()
        healthy = checks["ledger"] == "ok" and checks["upstream"] == "configured"
        body = {"status": "ok" if healthy else "unavailable", **checks, "instance": gateway.config.instance}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        if not metrics_allowed(request, gateway.config):
            return Response(
                "metrics are served to loopback clients, or with KLING_BUDGET_METRICS_TOKEN as a bearer token\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        try:
            open_tasks = float(await gateway.run_sync(gateway.tasks.open_count))
        except Exception:
            open_tasks = -1.0
        text = gateway.metrics.render({"kling_gateway_open_tasks": open_tasks})
        return Response(text, media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        run_worker = settle_worker and gateway.config.settle_interval > 0
        _warn_without_public_url(gateway.config)
        async with anyio.create_task_group() as group:
            if run_worker:
                group.start_soon(worker.run)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await _drain(gateway)
                    await worker.stop()
                    await callbacks.aclose()
                    group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await gateway.aclose()
        logger.info("gateway stopped", extra={"instance": gateway.config.instance})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *proxy.routes(),
        *TaskRoutes(proxy).routes(),
        *AccountRoutes(proxy).routes(),
        *callbacks.routes(),
        *admin_routes(gateway),
        *dashboard_routes(gateway),
        proxy.fallback_route(),  # last: whatever nothing above serves gets Kling's envelope
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    app.state.proxy = proxy
    app.state.worker = worker
    app.state.callbacks = callbacks
    app.add_middleware(BodyLimit, limits=gateway.config.limits, answer=_too_large)
    app.add_middleware(KlingEdge)
    app.add_middleware(_Observe, state=gateway)
    return app


def _warn_without_public_url(config: GatewayConfig) -> None:
    """Say at start-up what a missing public URL means for callbacks (they bypass the gateway)."""
    if config.public_url is None:
        logger.warning(
            "--public-url (KLING_BUDGET_PUBLIC_URL) is not set: Kling cannot call the gateway back, so a "
            "client's callback_url is sent to Kling unchanged and its callbacks carry the gateway's "
            "external_task_id (gw-...) instead of the client's, and holds settle only by polling; set "
            "--public-url to this gateway's public address",
            extra={"instance": config.instance},
        )


def _too_large(scope: Scope, cap: int) -> tuple[bytes, bytes]:
    """The 413 answer: the constant body on callbacks, Kling's envelope everywhere else."""
    if scope["path"].startswith(CALLBACK_PATH):
        return b"text/plain", CALLBACK_BODY
    request_id = scope.get("state", {}).get("request_id") or new_id()
    body = {
        "code": 1201,
        "message": f"the request body is larger than {cap} bytes, the gateway's limit for this path",
        "request_id": request_id,
        "data": None,
    }
    return b"application/json", dumps(body).encode("utf-8")


async def _drain(state: GatewayState) -> None:
    """Wait until no create is between its reservation and the record of its outcome (bounded)."""
    deadline = time.monotonic() + state.config.shutdown_grace
    while state.metrics.in_flight_creates > 0 and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    if state.metrics.in_flight_creates > 0:
        logger.error(
            "%d creates still in flight at shutdown; the settle worker will resolve them on the next start",
            state.metrics.in_flight_creates,
        )
