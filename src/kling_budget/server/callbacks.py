"""Kling's callbacks to the gateway, and the gateway's callbacks to its clients.

**In: ``POST /callbacks/kling/{reservation_id}/{token}``.** With ``--public-url``, every forwarded create
carries its own callback URL: the reservation id and an unguessable token (HMAC-SHA256 of the id under a
random key kept in the ledger, encrypted with the master key, so every instance sharing the database
accepts it). A callback is authenticated *before its body is read*: by the token, and additionally by Kling's
Standard Webhooks signature when ``KLING_WEBHOOK_SECRET`` is set. ``POST /callbacks/kling`` (no token) is
accepted only with a valid signature; without a webhook secret it is always refused.

A callback is only a hint. The gateway answers at once, with the same constant body whatever happened
(:data:`CALLBACK_BODY`; the status says only accepted 200, unauthenticated 401, unreadable 400, too large
413), and re-queries the task from Kling in the background — at most once per
``callback_requery_seconds`` per task, however many callbacks arrive: one arriving sooner is folded into a
re-query at the end of the interval. The answer is settled through the same path as a client's query.

**Out: the client's own ``callback_url``.** Each (task, status) is forwarded at most once, whichever instance
or path saw it first (``gateway_forwards``): the task as just re-queried from Kling (never a delivered body),
with the client's own ids, signed with the key's webhook secret (Standard Webhooks headers). The URL is checked
again at delivery (:class:`~kling_budget.server.callback_guard.CallbackPolicy`) and the checked address is the
one connected to. Two retries, in the background; at shutdown the gateway waits (bounded) for deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kling_budget.designs import is_model_in_path
from kling_budget.kling.webhooks import WebhookVerificationError, sign_webhook, verify_webhook
from kling_budget.server.callback_guard import CallbackURLError, parse_callback_url
from kling_budget.server.request_json import BadJSONError, parse_object
from kling_budget.server.state import CALLBACK_PATH, GatewayState
from kling_budget.server.task_store import TaskRow, dumps

if TYPE_CHECKING:
    from kling_budget.server.callback_tokens import CallbackTokens
    from kling_budget.server.proxy import Proxy

__all__ = ["CALLBACK_BODY", "CallbackForwarder", "KlingCallbacks", "callback_answer"]

logger = logging.getLogger("kling_budget.gateway.callbacks")

CALLBACK_BODY = b"ok\n"
"""The body of every answer to a callback (nothing about reservations, states or costs)."""
_MAX_PENDING = 10_000
_REQUERY_CONCURRENCY = 16
_SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_MAX_SIGNATURE_HEADER = 2048


def callback_answer(status: int) -> Response:
    """The constant callback answer with ``status``."""
    return Response(CALLBACK_BODY, status_code=status, media_type="text/plain")


class _Requeries:
    """At most one re-query per task per interval; a callback inside the interval is folded into the next one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: OrderedDict[str, float] = OrderedDict()
        self._pending: set[str] = set()

    def delay(self, reservation_id: str) -> float | None:
        """Seconds until this task may be re-queried, or ``None`` if a re-query is already due for it."""
        if reservation_id in self._pending or len(self._pending) >= _MAX_PENDING:
            return None
        self._pending.add(reservation_id)
        last = self._last.get(reservation_id)
        return 0.0 if last is None else max(0.0, last + self.interval - time.monotonic())

    def started(self, reservation_id: str) -> None:
        """The re-query begins: later callbacks need a new one."""
        self._pending.discard(reservation_id)
        self._last[reservation_id] = time.monotonic()
        self._last.move_to_end(reservation_id)
        while len(self._last) > _MAX_PENDING:
            self._last.popitem(last=False)


class KlingCallbacks:
    """The callback routes and the background re-queries, over one :class:`GatewayState` and its proxy."""

    def __init__(self, state: GatewayState, proxy: Proxy) -> None:
        self.state = state
        self.proxy = proxy
        self.tokens: CallbackTokens | None = state.callback_tokens
        self.forwarder = CallbackForwarder(state)
        self._requeries = _Requeries(state.config.callback_requery_seconds)
        self._limiter = anyio.Semaphore(_REQUERY_CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[BaseRoute]:
        """``POST /callbacks/kling`` (signed only) and ``POST /callbacks/kling/{reservation_id}/{token}``."""
        return [
            Route(CALLBACK_PATH, self.signed_only, methods=["POST"], name="callback"),
            Route(CALLBACK_PATH + "/{reservation_id}/{token}", self.with_token, methods=["POST"], name="callback"),
        ]

    async def with_token(self, request: Request) -> Response:
        """A callback on a reservation's own URL: the token first, then (if configured) the signature."""
        reservation_id = request.path_params["reservation_id"]
        if self.tokens is None or not self.tokens.verify(reservation_id, request.path_params["token"]):
            return callback_answer(401)
        if self.state.config.webhook_secret is not None and not await self._signed(request):
            return callback_answer(401)
        self._schedule(reservation_id)
        return callback_answer(200)

    async def signed_only(self, request: Request) -> Response:
        """A callback without a token: accepted only with Kling's valid signature; the body names the task."""
        if self.state.config.webhook_secret is None or not _signature_headers(request):
            return callback_answer(401)
        raw = await request.body()
        if not self._verify(raw, request):
            return callback_answer(401)
        try:
            task_id, external_id = _task_ids(parse_object(raw))
        except BadJSONError:
            return callback_answer(400)
        try:
            row = await self.state.run_sync(self.state.tasks.find_for_callback, task_id, external_id)
        except Exception as exc:
            logger.error("ledger unavailable for a callback (%s)", type(exc).__name__)
            return callback_answer(503)
        if row is not None:
            self._schedule(row.reservation_id)
        return callback_answer(200)

    async def _signed(self, request: Request) -> bool:
        if not _signature_headers(request):
            return False
        return self._verify(await request.body(), request)

    def _verify(self, raw: bytes, request: Request) -> bool:
        secret = self.state.config.webhook_secret
        assert secret is not None
        try:
            verify_webhook(secret.reveal(), dict(request.headers), raw, now=int(time.time()))
        except WebhookVerificationError:
            return False
        return True

    # ------------------------------------------------------------------ re-queries

    def _schedule(self, reservation_id: str) -> None:
        delay = self._requeries.delay(reservation_id)
        if delay is None:
            return  # one is already due; it will see the latest state
        self._spawn(self._requery(reservation_id, delay))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requery(self, reservation_id: str, delay: float) -> None:
        try:
            if delay > 0:
                await anyio.sleep(delay)
            async with self._limiter:
                self._requeries.started(reservation_id)
                await self.refresh(reservation_id)
        except Exception as exc:
            logger.error(
                "callback re-query failed (%s); the settle worker will retry",
                type(exc).__name__,
                extra={"reservation_id": reservation_id},
            )

    async def refresh(self, reservation_id: str) -> None:
        """Query one task from Kling, settle from the answer, and forward a new status to the client once."""
        from kling_budget.server.settlement import task_status

        row = await self.state.run_sync(self.state.tasks.get, reservation_id)
        if row is None:
            return
        data: dict[str, Any]
        if row.settled and isinstance(row.data, dict):
            data = row.data  # its final state is known: no query to Kling with the real credentials
        else:
            reply = await self.proxy.settlement.query_upstream(row, operation="poll")
            if not reply.ok or not isinstance(reply.data, dict):
                return
            data = reply.data
            await self.proxy.settlement.observe(row, data)
        status = task_status(data)
        if not row.callback_url or status is None:
            return
        if await self.state.run_sync(self.state.tasks.mark_forwarded, reservation_id, status):
            self.forwarder.forward(row, data)

    async def aclose(self) -> None:
        """Let re-queries in progress finish and deliveries drain (bounded)."""
        with anyio.move_on_after(10.0):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await self.forwarder.drain(timeout=10.0)


def _signature_headers(request: Request) -> bool:
    """All three Standard Webhooks headers present, ASCII and short (checked before any body is read)."""
    for name in _SIGNATURE_HEADERS:
        value = request.headers.get(name)
        if not value or len(value) > _MAX_SIGNATURE_HEADER or not value.isascii():
            return False
    return True


def _task_ids(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(task id, external id) of a callback body of either API design."""
    info = body.get("task_info")
    legacy_external = info.get("external_task_id") if isinstance(info, dict) else None
    task_id = body.get("task_id", body.get("id"))
    external = legacy_external or body.get("external_task_id") or body.get("external_id")
    return (
        task_id if isinstance(task_id, str) and 0 < len(task_id) <= 200 else None,
        external if isinstance(external, str) and 0 < len(external) <= 200 else None,
    )


class CallbackForwarder:
    """Posts a task's state to the client's own ``callback_url`` (see the module docstring)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._pending: set[anyio.Event] = set()

    def forward(self, row: TaskRow, data: dict[str, Any]) -> None:
        """Schedule one delivery (returns at once)."""
        done = anyio.Event()
        self._pending.add(done)
        task = asyncio.get_running_loop().create_task(self._deliver(row, data, done))
        task.add_done_callback(lambda _t: None)

    async def _deliver(self, row: TaskRow, data: dict[str, Any], done: anyio.Event) -> None:
        import httpx

        from kling_budget.server.proxy import show_client_ids

        try:
            url = row.callback_url
            assert url is not None
            try:
                target = parse_callback_url(url)
                addresses = await self.state.callback_policy.resolve(target)
            except CallbackURLError as exc:
                logger.warning("callback not delivered: %s", exc, extra={"reservation_id": row.reservation_id})
                return
            visible = show_client_ids(data, row.client_external_id, model_in_path=is_model_in_path(row.endpoint))
            shown = dumps(visible).encode("utf-8")
            secret = await self.state.run_sync(self.state.keys.webhook_secret, row.key_id)
            pinned, host_header = _pinned(url, addresses[0])
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
                for attempt in range(3):
                    headers = {
                        "content-type": "application/json",
                        "user-agent": "kling-budget-gateway",
                        "host": host_header,
                    }
                    if secret:
                        msg_id = f"msg_{uuid.uuid4().hex}"
                        stamp = int(time.time())
                        headers["webhook-id"] = msg_id
                        headers["webhook-timestamp"] = str(stamp)
                        headers["webhook-signature"] = sign_webhook(secret, msg_id, stamp, shown)
                    try:
                        answer = await client.post(pinned, content=shown, headers=headers, extensions=extensions)
                        if 200 <= answer.status_code < 300:
                            return
                    except httpx.HTTPError:
                        pass
                    await anyio.sleep(0.5 * 2**attempt)
            logger.warning(
                "callback to the client failed after 3 attempts", extra={"reservation_id": row.reservation_id}
            )
        except Exception as exc:
            logger.error(
                "callback forwarding failed (%s)", type(exc).__name__, extra={"reservation_id": row.reservation_id}
            )
        finally:
            done.set()
            self._pending.discard(done)

    async def drain(self, *, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for deliveries in progress."""
        with anyio.move_on_after(timeout):
            for event in list(self._pending):
                await event.wait()


def _pinned(url: str, address: str) -> tuple[str, str]:
    """(``url`` with its host replaced by the checked ``address``, the original ``Host`` header value)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), parts.netloc
