"""The Kling-compatible proxy: Kling's ``/v1`` task endpoints, enforced, on virtual credentials.

For every create path the pricing module supports (``POST P``), and its queries (``GET P/{id}``,
``GET P?task_id=`` / ``?external_task_id=``) and list (``GET P?pageNum=&pageSize=``), the gateway answers
in Kling's envelope ``{"code","message","request_id","data"}`` with Kling's HTTP statuses, so a Kling client
only changes its base URL and credentials.

One create::

    authenticate (virtual JWT or API key) ──bad──▶ 401, codes 1000-1004
    price the body (quote_kling_request) ──────────▶ 400/1201 naming what is accepted
    reserve + mark submitted + ownership row, one ledger transaction (worker thread)
        ├─ a hard budget has no room ──────────────▶ 429, code 1190 (DENIAL_CODE), Retry-After (server/denial.py)
        ├─ external_task_id already used by key ──▶ 400/1201
        └─ ledger unreachable ─────────────────────▶ 503/5001, nothing forwarded (fail closed)
    forward with the real credentials, external_task_id = reservation id (shielded from cancellation)
        ├─ code 0 with a task id ──▶ record the task id (one transaction), answer Kling's answer
        ├─ code 0, no task id (a synchronous endpoint) ──▶ commit the hold now, answer
        ├─ definite rejection (1000-1399, never connected) ──▶ release the hold, answer Kling's error
        └─ ambiguous (5000-5002, timeout, bad answer) ──▶ look it up by external id:
               found ──▶ as code 0;  Kling says no such task ──▶ release;  unknown ──▶ keep the hold,
               answer 504/5002 (the settle worker finds out later)

The client's own ``external_task_id`` is kept in the ownership row: queries accept it, and every answer
shows it back in ``task_info.external_task_id`` (the gateway's id never leaks). Every query result is
handed to :class:`~kling_budget.enforced.settle.JobSettler`. A client sees only its own key's tasks: anything else is
404/1203, exactly as if it did not exist.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kling_budget.designs import MODEL_IN_PATH_PRODUCTS, is_model_in_path, with_create_option
from kling_budget.enforced._core import keeps_hold
from kling_budget.errors import (
    BudgetExceededError,
    InvalidInputError,
    KlingAPIError,
    KlingConnectError,
)
from kling_budget.kling._core import Created
from kling_budget.pricing import SUPPORTED_PATHS
from kling_budget.server.admission import CreateAdmission, Refusal
from kling_budget.server.denial import DENIAL_CODE, DENIAL_HTTP_STATUS, denial_response
from kling_budget.server.exposure import owns_budget, scrub_upstream_error, tenant_denial_message
from kling_budget.server.keys import CredentialError, KeyDecryptionError, VirtualKey
from kling_budget.server.settlement import NO_API_KEY_MESSAGE, UNCONFIRMED_GRACE_SECONDS, Settlement, task_status
from kling_budget.server.state import GatewayState
from kling_budget.server.task_store import (
    MODE_DETAIL_KEY,
    DuplicateExternalIdError,
    dumps,
    new_id,
    now_micros,
)
from kling_budget.server.upstream import Upstream, UpstreamReply
from kling_budget.types import Quote

__all__ = [
    "DENIAL_CODE",
    "DENIAL_HTTP_STATUS",
    "Proxy",
    "kling_error",
    "request_id",
    "show_client_ids",
    "task_status",
]

logger = logging.getLogger("kling_budget.gateway")

RESERVATION_PREFIX = "gw-"
_HTTP_FOR_CODE = {
    1000: 401, 1001: 401, 1002: 401, 1003: 401, 1004: 401, 1100: 429, 1101: 429, 1102: 429, 1103: 403,
    1200: 400, 1201: 400, 1202: 404, 1203: 404, 1300: 400, 1301: 400, 1302: 429, 1303: 429, 1304: 429,
    5000: 500, 5001: 503, 5002: 504,
}  # fmt: skip
_LOOKUP_DELAYS = (0.2, 0.6)
_FIRST_CHECK_SECONDS = 5.0


def kling_error(http_status: int, code: int, message: str, request_id: str) -> Response:
    """A Kling-style error envelope (``data`` null)."""
    body = {"code": code, "message": message, "request_id": request_id, "data": None}
    return Response(dumps(body), status_code=http_status, media_type="application/json")


def request_id(request: Request) -> str:
    """The gateway's id of this request (the ``X-Request-Id`` header and the envelope's ``request_id``)."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else new_id()


def _detail(path: str, key: VirtualKey, quote: Quote) -> dict[str, Any]:
    from kling_budget.enforced.settle import DETAIL_PATH_KEY

    detail: dict[str, Any] = {DETAIL_PATH_KEY: path, "gateway_key_id": key.id}
    mode = quote.params.get("mode")
    if isinstance(mode, str):
        detail[MODE_DETAIL_KEY] = mode  # a video extension of this task's video is priced with it
    return detail


def _json(http_status: int, envelope: dict[str, Any]) -> Response:
    return Response(dumps(envelope), status_code=http_status, media_type="application/json")


class _Unknown:
    """The fallback route's endpoint, an ASGI app so that the route matches every method."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.proxy.unknown(Request(scope, receive))
        await response(scope, receive, send)


class _Answer(Exception):
    """Stop handling and send this response."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def show_client_ids(data: Any, row_external: str | None, *, model_in_path: bool = False) -> Any:
    """Kling's task object as the client must see it: its own external id (``task_info.external_task_id`` on
    ``/v1``, ``external_id`` on the 2026 design: ``model_in_path``), never ours (nor the gateway's callback URL
    or options, should Kling ever echo them)."""
    if not isinstance(data, dict):
        return data
    shown = copy.copy(data)
    shown.pop("callback_url", None)
    if model_in_path:
        shown.pop("options", None)
        shown["external_id"] = row_external or ""
        shown.pop("external_task_id", None)
        return shown
    info = dict(shown.get("task_info") or {}) if isinstance(shown.get("task_info"), dict) else {}
    if row_external is not None:
        info["external_task_id"] = row_external
    else:
        info.pop("external_task_id", None)
    if "task_info" in shown or row_external is not None:
        shown["task_info"] = info
    if "external_task_id" in shown:  # a new-design style field, should Kling ever add it here
        shown["external_task_id"] = row_external
    return shown


class Proxy:
    """The ``/v1`` routes and the callback route, over one :class:`GatewayState`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.admission = CreateAdmission(state)
        self.settlement = Settlement(state)

    # ------------------------------------------------------------------ routing

    def routes(self) -> list[BaseRoute]:
        """Routes for every supported create path (``/callbacks/kling`` is :mod:`kling_budget.server.callbacks`)."""
        routes: list[BaseRoute] = []
        for path in SUPPORTED_PATHS:
            routes.append(Route(path, self._bind(self.create, path), methods=["POST"], name=f"create {path}"))
            routes.append(Route(path, self._bind(self.collection, path), methods=["GET"], name=f"list {path}"))
            routes.append(
                Route(path + "/{ref:path}", self._bind(self.item, path), methods=["GET"], name=f"query {path}")
            )
        for product in MODEL_IN_PATH_PRODUCTS:  # the 2026 design: the model in the path, queried on /tasks
            routes.append(Route(f"/{product}/{{model}}", self._model_in_path_create, methods=["POST"], name=product))
        return routes

    async def _model_in_path_create(self, request: Request) -> Response:
        return await self.create(request, request.url.path.rstrip("/"))

    def fallback_route(self) -> BaseRoute:
        """Every path and method no other route serves: Kling's envelope, after authentication (mount it last)."""
        return Route("/{rest:path}", _Unknown(self), name="unknown")

    @staticmethod
    def _bind(handler: Callable[[Request, str], Awaitable[Response]], path: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await handler(request, path)

        return endpoint

    @staticmethod
    def _request_id(request: Request) -> str:
        return request_id(request)

    async def unknown(self, request: Request) -> Response:
        """Any path or method the gateway does not serve: 401 (as Kling) without valid credentials, else
        404/1202 in Kling's envelope. Never forwarded: there is no route around the budgets."""
        request_id = self._request_id(request)
        try:
            await self._authenticate(request, request_id)
        except _Answer as answer:
            return answer.response
        return kling_error(
            404,
            1202,
            f"the gateway does not serve {request.method} {request.url.path[:200]}; supported create paths: "
            + ", ".join((*SUPPORTED_PATHS, *(f"/{product}/<model>" for product in MODEL_IN_PATH_PRODUCTS)))
            + "; GET/POST /tasks; GET /account/costs; POST /account/billing/package, /account/billing/balance",
            request_id,
        )

    # ------------------------------------------------------------------ authentication

    async def _authenticate(self, request: Request, request_id: str) -> VirtualKey:
        header = request.headers.get("authorization")
        keys = self.state.keys
        try:
            if keys.is_cached(header):
                key = keys.authenticate(header)
            else:
                key = await self.state.run_sync(keys.authenticate, header)
        except CredentialError as exc:
            raise _Answer(kling_error(exc.http_status, exc.code, str(exc), request_id)) from None
        except KeyDecryptionError as exc:
            logger.error("key verification failed: %s", exc, extra={"request_id": request_id})
            raise _Answer(
                kling_error(500, 5000, "the gateway cannot verify this key (server configuration)", request_id)
            ) from None
        except Exception:
            logger.exception("key store unavailable", extra={"request_id": request_id})
            raise _Answer(
                kling_error(503, 5001, "the gateway cannot verify credentials right now", request_id)
            ) from None
        request.state.key_name = key.name
        return key

    async def authenticated(self, request: Request) -> VirtualKey | Response:
        """The caller's virtual key, or the 401 (or 5000/5001) answer to send instead."""
        try:
            return await self._authenticate(request, self._request_id(request))
        except _Answer as answer:
            return answer.response

    def no_api_key(self, request_id: str) -> Response:
        """403/1103 for Kling's 2026 design on a gateway configured with an access key pair only."""
        return kling_error(403, 1103, NO_API_KEY_MESSAGE, request_id)

    # ------------------------------------------------------------------ create

    async def create(self, request: Request, path: str) -> Response:
        """``POST <create path>``: price, reserve, forward, record (see the module docstring)."""
        request_id = self._request_id(request)
        try:
            key = await self._authenticate(request, request_id)
            upstream = self.state.upstream_for(path)
            if upstream is None:
                return self.no_api_key(request_id)
            # Read only after authentication; the body cap applies while reading (server/limits.py).
            admitted = await self.admission.admit(path, await request.body(), key)
        except _Answer as answer:
            return answer.response
        except Refusal as refusal:
            return kling_error(refusal.http_status, refusal.code, refusal.message, request_id)
        body, quote = admitted.body, admitted.quote
        client_external, client_callback = admitted.client_external, admitted.client_callback
        reservation_id = RESERVATION_PREFIX + new_id()
        # Where each design keeps them: top level on /v1, under "options" on the 2026 design.
        forward = with_create_option(path, body, "external_task_id", reservation_id)
        tokens = self.state.callback_tokens
        if tokens is not None:
            forward = with_create_option(path, forward, "callback_url", tokens.url_for(reservation_id))
        metrics = self.state.metrics
        try:
            await self.state.run_sync(self._reserve, key, path, quote, reservation_id, client_external, client_callback)
        except BudgetExceededError as exc:
            budget = exc.denial.budget if exc.denial is not None else ""
            metrics.denial(budget)
            request.state.budget = budget
            return await self._denial(exc, key, request_id)
        except DuplicateExternalIdError:
            return kling_error(
                400, 1201, f"external_task_id {client_external!r} already exists for this key", request_id
            )
        except InvalidInputError as exc:
            return kling_error(400, 1201, str(exc), request_id)
        except Exception as exc:
            logger.error(
                "ledger unavailable; create refused (fail closed): %s",
                type(exc).__name__,
                extra={"request_id": request_id},
            )
            return kling_error(
                503, 5001, "the budget ledger is unavailable; the request was not sent to Kling", request_id
            )
        request.state.reservation_id = reservation_id
        metrics.units("reserved", quote.pack_type.value, quote.units_milli)
        metrics.in_flight_creates += 1
        try:
            # Once the hold exists it must end recorded or released, even if the server is shutting down.
            with anyio.CancelScope(shield=True):
                response = await self._forward_create(
                    upstream, path, forward, key, quote, reservation_id, client_external, request
                )
        finally:
            metrics.in_flight_creates -= 1
        return response

    async def _denial(self, exc: BudgetExceededError, key: VirtualKey, request_id: str) -> Response:
        """The 429/1190 answer as this tenant may see it: no totals of a budget wider than its own scope."""
        denial = exc.denial
        if denial is None:
            return denial_response(None, f"request denied: {exc}", request_id, self.state.ledger.now(), full=False)
        try:
            budget = await self.state.run_sync(self.state.tracker.get_budget, denial.budget)
        except Exception:
            budget = None  # shown as a wider budget: nothing but its name and reset time
        own = budget is not None and owns_budget(key, budget)
        message = tenant_denial_message(denial, budget, key)
        return denial_response(denial, message, request_id, self.state.ledger.now(), full=own)

    def _reserve(
        self,
        key: VirtualKey,
        path: str,
        quote: Quote,
        reservation_id: str,
        client_external: str | None,
        client_callback: str | None,
    ) -> None:

        check_at = now_micros() + int((self.state.config.upstream_timeout + UNCONFIRMED_GRACE_SECONDS) * 1e6)
        self.state.tracker.reserve_quote(
            quote,
            project_id=key.project,
            user_id=key.user,
            api_key=key.name,
            tags=key.tags,
            key=reservation_id,
            detail=_detail(path, key, quote),
            submitted=True,
            also=self.state.tasks.insert_hook(
                reservation_id,
                key_id=key.id,
                endpoint=path,
                client_external_id=client_external,
                callback_url=client_callback,
                check_at=check_at,
            ),
        )

    async def _forward_create(
        self,
        upstream: Upstream,
        path: str,
        forward: dict[str, Any],
        key: VirtualKey,
        quote: Quote,
        reservation_id: str,
        client_external: str | None,
        request: Request,
    ) -> Response:
        request_id = self._request_id(request)
        try:
            created = await upstream.create(path, forward)
        except KlingAPIError as exc:
            if exc.request_id:
                request.state.upstream_request_id = exc.request_id
            if keeps_hold(exc):
                await self.settlement.keep_unknown(reservation_id)
                shown = client_external or reservation_id
                logger.warning(
                    "create outcome unknown; hold kept for the settle worker",
                    extra={"request_id": request_id, "reservation_id": reservation_id, "key": key.name},
                )
                return kling_error(
                    504,
                    5002,
                    "Kling did not confirm whether the task was created; the budget hold is kept until Kling "
                    f"tells. Query the task by external_task_id {shown!r} before sending it again",
                    request_id,
                )
            await self.settlement.rejected(reservation_id, quote, exc)
            return self.pass_error(UpstreamReply.of(exc), request_id)
        if created.request_id:
            request.state.upstream_request_id = created.request_id
        return await self._created(created, quote, reservation_id, client_external, request)

    def pass_error(self, reply: UpstreamReply, request_id: str) -> Response:
        """Kling's error answer for the client: scrubbed of the gateway's credentials; a refusal of the gateway's
        own credentials is the gateway's problem (502/5000), no answer at all is 503/5001."""
        error = reply.error
        assert error is not None
        code = error.code
        if isinstance(error, KlingConnectError) or code is None or reply.envelope is None:
            return kling_error(503, 5001, "Kling is unreachable; the request was not sent", request_id)
        if 1000 <= code <= 1004:
            # Kling refused the gateway's own credentials: not the client's fault, and not its business.
            logger.error("Kling refused the gateway's credentials (code %s)", code, extra={"request_id": request_id})
            return kling_error(
                502, 5000, f"the gateway's upstream credentials were refused by Kling (code {code})", request_id
            )
        envelope = reply.envelope
        for auth in self.state.config.upstream_auths:
            envelope = scrub_upstream_error(envelope, auth)
        return _json(reply.http_status or _HTTP_FOR_CODE.get(code, 400), envelope)

    async def _created(
        self,
        created: Created,
        quote: Quote,
        reservation_id: str,
        client_external: str | None,
        request: Request,
    ) -> Response:
        request_id = self._request_id(request)
        data = created.data
        if created.task is None:
            # A synchronous endpoint (no task): Kling has done the work and charged it.
            await self.settlement.settle_sync(reservation_id, quote, data)
        else:
            task_id = created.task.task_id
            request.state.task_id = task_id
            status = task_status(data) or created.task.status.value
            check_at = now_micros() + int(_FIRST_CHECK_SECONDS * 1e6)
            try:
                await self.state.run_sync(
                    self.state.ledger.mark_submitted,
                    reservation_id,
                    task_id=task_id,
                    also=self.state.tasks.record_hook(
                        reservation_id, task_id=task_id, status=status, data=data, check_at=check_at
                    ),
                )
            except Exception as exc:
                # The task exists and the hold stays; the settle worker will find it by external id.
                logger.error(
                    "could not record Kling task id (%s); the settle worker will",
                    type(exc).__name__,
                    extra={"request_id": request_id, "reservation_id": reservation_id, "task_id": task_id},
                )
        envelope = {"code": 0, "message": "SUCCEED", "request_id": created.request_id or request_id}
        model_in_path = created.task is not None and is_model_in_path(created.task.endpoint or "")
        envelope["data"] = show_client_ids(data, client_external, model_in_path=model_in_path)
        return _json(200, envelope)

    # ------------------------------------------------------------------ queries

    async def item(self, request: Request, path: str) -> Response:
        """``GET <path>/{task_id or external_task_id}``."""
        return await self._query(request, path, request.path_params["ref"])

    async def collection(self, request: Request, path: str) -> Response:
        """``GET <path>?task_id=|external_task_id=`` (one task) or ``?pageNum=&pageSize=`` (the list)."""
        query = request.query_params
        if "task_id" in query or "external_task_id" in query:
            if "task_id" in query and "external_task_id" in query:
                return kling_error(400, 1201, "give task_id or external_task_id, not both", self._request_id(request))
            return await self._query(request, path, query.get("task_id") or query.get("external_task_id") or "")
        return await self._list(request, path)

    async def _query(self, request: Request, path: str, ref: str) -> Response:
        request_id = self._request_id(request)
        try:
            key = await self._authenticate(request, request_id)
        except _Answer as answer:
            return answer.response
        try:
            row = await self.state.run_sync(self.state.tasks.find, key.id, path, ref)
        except Exception:
            logger.exception("ledger unavailable on query", extra={"request_id": request_id})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", request_id)
        if row is None:
            return kling_error(404, 1203, f"task {ref!r} does not exist on {path}", request_id)
        request.state.reservation_id = row.reservation_id
        reply = await self.settlement.query_upstream(row)
        if reply.request_id:
            request.state.upstream_request_id = reply.request_id
        if not reply.ok:
            return self.pass_error(reply, request_id)
        data = reply.data
        await self.settlement.observe(row, data)
        envelope = dict(reply.envelope or {})
        envelope["data"] = show_client_ids(data, row.client_external_id)
        return _json(200, envelope)

    async def _list(self, request: Request, path: str) -> Response:
        request_id = self._request_id(request)
        try:
            key = await self._authenticate(request, request_id)
        except _Answer as answer:
            return answer.response
        try:
            page = self._page(request.query_params.get("pageNum"), "pageNum", 1, 1000, 1)
            size = self._page(request.query_params.get("pageSize"), "pageSize", 1, 500, 30)
        except _Answer as answer:
            return answer.response
        try:
            rows = await self.state.run_sync(self.state.tasks.list_for_key, key.id, path, page=page, size=size)
        except Exception:
            logger.exception("ledger unavailable on list", extra={"request_id": request_id})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", request_id)
        items = [show_client_ids(row.data, row.client_external_id) for row in rows if row.data is not None]
        return _json(200, {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": items})

    def _page(self, raw: str | None, name: str, low: int, high: int, default: int) -> int:
        if raw is None or raw == "":
            return default
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else low - 1
        if not low <= value <= high:
            raise _Answer(kling_error(400, 1201, f"{name} must be an integer in [{low}, {high}]", new_id()))
        return value
