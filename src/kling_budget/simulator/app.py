"""The simulator's HTTP face: a Starlette app speaking both of Kling's API designs, and callbacks.

Legacy ``/v1`` routes (a JWT or an API key), for every create path ``P`` in :data:`~.endpoints.ENDPOINTS`
(``/v1/videos/text2video`` ...):

* ``POST P`` creates a task;
* ``GET P/{id}`` queries one task, ``{id}`` being its ``task_id`` or its ``external_task_id`` (Kling lists
  both as path parameters, "choose one"; a task id wins if both could match);
* ``GET P?external_task_id=...`` (or ``?task_id=...``) also queries one task, unless the
  ``external_id_query`` switch is off;
* ``GET P?pageNum=&pageSize=`` lists the account's tasks on ``P``, newest first.

The 2026 design's routes (an API key only; a JWT is 1002), see :mod:`.products` and :mod:`.listings`:

* ``POST /{product}/{model}`` creates a task (``text-to-video``, ``image-to-video``, ``omni-video``,
  ``motion-control``);
* ``GET /tasks?task_ids=a,b`` or ``?external_task_ids=x,y`` queries tasks; ``POST /tasks`` lists them.

Account routes (either credential):

* ``GET /account/costs?start_time=&end_time=[&resource_pack_name=]`` reports resource packs;
* ``POST /account/billing/package`` and ``POST /account/billing/balance`` page the deduction ledgers.

Callbacks are POSTed by a small scheduler running in the server's event loop; it sleeps until the next
transition is due (or until woken by a create or a manual clock) and never busy-loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kling_budget.kling.webhooks import sign_webhook
from kling_budget.simulator.endpoints import ENDPOINTS
from kling_budget.simulator.faults import Fault, FaultKind
from kling_budget.simulator.products import PRODUCTS
from kling_budget.simulator.protocol import SimError, dumps, envelope, new_request_id
from kling_budget.simulator.state import CallbackEvent, Caller, Delivery, Simulator

__all__ = ["CallbackDispatcher", "create_app"]

log = logging.getLogger("kling_budget.simulator")

_ABORT_KEY = "kling_budget.simulator.abort"
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
Action = Callable[[Request, Caller], Awaitable[Any]]


def _json(status: int, payload: Any) -> Response:
    return Response(content=dumps(payload), status_code=status, media_type="application/json")


def _error(err: SimError, request_id: str) -> Response:
    return _json(err.http_status, envelope(err.code, str(err), request_id, None))


class _AbortResponse(Response):
    """Close the connection: after half of ``body`` (truncation), or before any byte (drop)."""

    def __init__(self, body: bytes | None, status_code: int = 200) -> None:
        super().__init__(content=body or b"", status_code=status_code, media_type="application/json")
        self._partial = body[: max(1, len(body) // 2)] if body else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._partial is not None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self._partial, "more_body": True})
        abort: Callable[[], None] = scope[_ABORT_KEY]
        abort()
        # Return only once the server has seen the disconnect, so it does not answer 500 in our place.
        with anyio.move_on_after(5):
            while (await receive())["type"] != "http.disconnect":
                pass


class _ConnectionControl:
    """Outermost ASGI layer: gives handlers a way to close the raw connection (uvicorn's transport)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)

            def abort() -> None:
                if transport is None:
                    raise RuntimeError("truncate/drop faults need the simulator's own uvicorn server")
                transport.close()

            scope[_ABORT_KEY] = abort
        await self.app(scope, receive, send)


def _fault_response(fault: Fault, request_id: str, processed: Response | None) -> Response:
    kind = fault.kind
    if kind is FaultKind.SLOW and processed is not None:
        return processed
    if kind is FaultKind.TIMEOUT_5002:
        return _error(SimError(5002), request_id)
    if kind is FaultKind.UNAVAILABLE_5001:
        return _error(SimError(5001), request_id)
    if kind is FaultKind.PLAIN_500:
        return PlainTextResponse("Internal Server Error", status_code=500)
    if kind is FaultKind.TRUNCATE:
        full = processed if processed is not None else _error(SimError(5000), request_id)
        return _AbortResponse(bytes(full.body), full.status_code)
    if kind is FaultKind.DROP:
        return _AbortResponse(None)
    return _error(SimError(5000), request_id)


class _Handlers:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def collection(self, request: Request) -> Response:
        return await self._run(request, self._collection)

    async def item(self, request: Request) -> Response:
        return await self._run(request, self._item)

    async def costs(self, request: Request) -> Response:
        return await self._run(request, self._costs)

    async def create(self, request: Request) -> Response:
        return await self._run(request, self._create, api_key_only=True)

    async def tasks(self, request: Request) -> Response:
        return await self._run(request, self._tasks, api_key_only=True)

    async def billing(self, request: Request) -> Response:
        return await self._run(request, self._billing, any_case=True)

    async def unknown(self, request: Request) -> Response:
        return await self._run(request, self._unknown)

    async def _run(
        self, request: Request, action: Action, *, api_key_only: bool = False, any_case: bool = False
    ) -> Response:
        request_id = new_request_id()
        fault = self.sim.faults.pick(request.method, request.url.path)
        if fault is not None and fault.delay > 0:
            # The request has arrived in full before the server stalls; a client giving up changes nothing.
            with contextlib.suppress(ClientDisconnect):
                await request.body()
            await asyncio.sleep(fault.delay)
        if fault is not None and not fault.process and fault.kind is not FaultKind.SLOW:
            return _fault_response(fault, request_id, None)
        response = await self._answer(request, action, request_id, api_key_only, any_case)
        return response if fault is None else _fault_response(fault, request_id, response)

    async def _answer(
        self, request: Request, action: Action, request_id: str, api_key_only: bool, any_case: bool
    ) -> Response:
        try:
            header = request.headers.get("authorization")
            caller = self.sim.authorize(header, api_key_only=api_key_only, any_case=any_case)
            data = await action(request, caller)
        except SimError as err:
            return _error(err, request_id)
        except Exception:
            log.exception("simulator failed on %s %s", request.method, request.url.path)
            return _error(SimError(5000), request_id)
        return _json(200, envelope(0, "SUCCEED", request_id, data))

    async def _collection(self, request: Request, caller: Caller) -> Any:
        path = request.url.path.rstrip("/")
        if request.method == "POST":
            return self.sim.create_task(caller, path, await _json_body(request))
        if request.method in ("GET", "HEAD"):
            query = request.query_params
            account = caller.account
            if self.sim.config.external_id_query and ("task_id" in query or "external_task_id" in query):
                if "task_id" in query and "external_task_id" in query:
                    raise SimError(1201, "give task_id or external_task_id, not both")
                return self.sim.get_task(account, path, query.get("task_id") or query.get("external_task_id") or "")
            return self.sim.list_tasks(account, path, query.get("pageNum"), query.get("pageSize"))
        raise SimError(1202, f"{request.method} is not supported on {path}")

    async def _item(self, request: Request, caller: Caller) -> Any:
        if request.method not in ("GET", "HEAD"):
            raise SimError(1202, f"{request.method} is not supported on {request.url.path}")
        ref = str(request.path_params["ref"])
        base = request.url.path.removesuffix("/" + ref)
        return self.sim.get_task(caller.account, base, ref)

    async def _costs(self, request: Request, caller: Caller) -> Any:
        if request.method not in ("GET", "HEAD"):
            raise SimError(1202, f"{request.method} is not supported on /account/costs")
        query = request.query_params
        return self.sim.account_costs(
            caller.account, query.get("start_time"), query.get("end_time"), query.get("resource_pack_name")
        )

    async def _create(self, request: Request, caller: Caller) -> Any:
        if request.method != "POST":
            raise SimError(1202, f"{request.method} is not supported on {request.url.path}")
        return self.sim.create_task(caller, request.url.path, await _json_body(request))

    async def _tasks(self, request: Request, caller: Caller) -> Any:
        if request.method in ("GET", "HEAD"):
            return self.sim.query_tasks(caller.account, request.query_params)
        if request.method == "POST":
            return self.sim.list_model_in_path(caller.account, await _json_body(request, empty_is_object=True))
        raise SimError(1202, f"{request.method} is not supported on /tasks")

    async def _billing(self, request: Request, caller: Caller) -> Any:
        if request.method != "POST":
            raise SimError(1202, f"{request.method} is not supported on {request.url.path}")
        kind = request.url.path.rsplit("/", 1)[-1]
        return self.sim.billing_ledger(caller.account, kind, await _json_body(request))

    async def _unknown(self, request: Request, caller: Caller) -> Any:
        raise SimError(1202, f"no such API: {request.method} {request.url.path}")


async def _json_body(request: Request, *, empty_is_object: bool = False) -> Any:
    raw = await request.body()
    if empty_is_object and not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise SimError(1200, "the request body is not valid JSON") from None


class CallbackDispatcher:
    """Delivers a simulator's callbacks from inside the server's event loop.

    Notifications of one task are delivered in order, one after the other; different tasks in parallel.
    Standard Webhooks headers are added when the simulator has a webhook secret.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._chains: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Run until cancelled."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def waker() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake.set)

        self.sim.set_waker(waker)
        timeout = httpx.Timeout(self.sim.config.callback_timeout_seconds)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                while True:
                    wake.clear()
                    self.sim.advance()
                    events = self.sim.take_callbacks()
                    if events:
                        self._dispatch(client, events)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._sleep_seconds())
        finally:
            self.sim.set_waker(None)
            for chain in list(self._chains.values()):
                chain.cancel()

    def _sleep_seconds(self) -> float:
        due = self.sim.next_callback_due_ms()
        if due is None:
            return 1.0
        return min(max(0.0, (due - self.sim.clock.now_ms()) / 1000), 1.0)

    def _dispatch(self, client: httpx.AsyncClient, events: list[CallbackEvent]) -> None:
        groups: dict[str, list[CallbackEvent]] = {}
        for event in events:
            groups.setdefault(event.task_id, []).append(event)
        for task_id, group in groups.items():
            previous = self._chains.get(task_id)
            chain = asyncio.create_task(self._deliver_all(client, group, previous))
            self._chains[task_id] = chain
            chain.add_done_callback(functools.partial(self._forget, task_id))

    def _forget(self, task_id: str, done: asyncio.Task[None]) -> None:
        if self._chains.get(task_id) is done:
            del self._chains[task_id]

    async def _deliver_all(
        self, client: httpx.AsyncClient, events: list[CallbackEvent], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        for event in events:
            await self._deliver(client, event)
            if self.sim.callbacks.duplicate:
                await self._deliver(client, event)

    async def _deliver(self, client: httpx.AsyncClient, event: CallbackEvent) -> None:
        config = self.sim.config
        for attempt in range(1, config.callback_retries + 2):
            headers = {"content-type": "application/json", "user-agent": "kling-budget-simulator"}
            if config.webhook_secret:
                # Signature timestamps are wall-clock time: receivers check them against their own clock.
                stamp = int(time.time())
                headers["webhook-id"] = event.msg_id
                headers["webhook-timestamp"] = str(stamp)
                headers["webhook-signature"] = sign_webhook(config.webhook_secret, event.msg_id, stamp, event.body)
            status: int | None = None
            error: str | None = None
            try:
                answer = await client.post(event.url, content=event.body, headers=headers)
                status = answer.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.sim.record_delivery(
                Delivery(
                    msg_id=event.msg_id,
                    task_id=event.task_id,
                    url=event.url,
                    status=event.status,
                    attempt=attempt,
                    headers=headers,
                    body=event.body,
                    http_status=status,
                    error=error,
                )
            )
            if status is not None and 200 <= status < 300:
                return
            if attempt <= config.callback_retries:
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))


def create_app(sim: Simulator) -> ASGIApp:
    """The ASGI app serving ``sim`` (Starlette inside a thin connection-control layer)."""
    handlers = _Handlers(sim)
    routes = [
        Route("/account/costs", handlers.costs, methods=_ALL_METHODS),
        Route("/account/billing/package", handlers.billing, methods=_ALL_METHODS),
        Route("/account/billing/balance", handlers.billing, methods=_ALL_METHODS),
        Route("/tasks", handlers.tasks, methods=_ALL_METHODS),
    ]
    routes += [Route(f"/{product}/{{model}}", handlers.create, methods=_ALL_METHODS) for product in PRODUCTS]
    for path in ENDPOINTS:
        routes.append(Route(path, handlers.collection, methods=_ALL_METHODS))
        routes.append(Route(path + "/", handlers.collection, methods=_ALL_METHODS))
        routes.append(Route(path + "/{ref}", handlers.item, methods=_ALL_METHODS))
    routes.append(Route("/{rest:path}", handlers.unknown, methods=_ALL_METHODS))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dispatcher = asyncio.create_task(CallbackDispatcher(sim).run(), name="kling-simulator-callbacks")
        try:
            yield
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher

    return _ConnectionControl(Starlette(routes=routes, lifespan=lifespan))
