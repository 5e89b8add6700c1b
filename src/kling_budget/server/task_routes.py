"""Kling's 2026-design task routes on the gateway: ``GET /tasks`` (by ids) and ``POST /tasks`` (a list).

Tasks of the 2026 design are created on ``POST /<product>/<model>`` (:class:`~kling_budget.server.proxy.Proxy`,
the same pipeline as ``/v1``) and queried here, always for the caller's own key only.

**``GET /tasks?task_ids=a,b`` or ``?external_task_ids=x,y``** — exactly one of the two, 1 to 50 comma-separated
ids of at most 200 characters. Ids that name no task of this key (another key's, a legacy ``/v1`` task, an
unknown one) are left out of the answer, as Kling leaves out the ids it does not know: nothing tells a tenant
whether another key's task exists. Kling is asked in at most two batched requests, with the gateway's API key:
the Kling task ids of the tasks found, and the gateway's external ids (reservation ids) of those whose task id
was never learned (an ambiguous create). Each answer is observed and settled like a ``/v1`` query and shown with
the client's own ids, in the order asked.

**``POST /tasks``** — ``{start_time, end_time, cursor, limit 1-500 (100), filters: status | product_type}``, read
by :mod:`kling_budget.kling.paging` as Kling reads it. Served from the gateway's own ownership rows of this key
(never Kling's account-wide list): each task's latest known state, newest first by the time the gateway created
it, with an opaque cursor.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kling_budget.designs import MODEL_IN_PATH_PRODUCTS, is_model_in_path
from kling_budget.kling._core import TASKS_PATH
from kling_budget.kling.paging import TASKS, ListQueryError, Query, page
from kling_budget.server.admission import MAX_EXTERNAL_ID
from kling_budget.server.keys import VirtualKey
from kling_budget.server.proxy import Proxy, kling_error, request_id, show_client_ids
from kling_budget.server.request_json import parse_list_query
from kling_budget.server.task_lists import newest_tasks
from kling_budget.server.task_store import TaskRow, dumps, now_micros

__all__ = ["MAX_TASK_IDS", "TaskRoutes", "list_item"]

logger = logging.getLogger("kling_budget.gateway")

MAX_TASK_IDS = 50
_ID_KINDS = ("task_ids", "external_task_ids")
_PRODUCT_PREFIXES = tuple(f"/{product}/" for product in MODEL_IN_PATH_PRODUCTS)
_ITEM_DEFAULTS: dict[str, Any] = {"message": "", "outputs": []}


class _Refused(Exception):
    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


def _json(envelope: dict[str, Any]) -> Response:
    return Response(dumps(envelope), status_code=200, media_type="application/json")


def _ids(request: Request) -> tuple[str, list[str]]:
    """(the id kind, the ids asked for, in order) of ``GET /tasks``, checked before any lookup."""
    given = [kind for kind in _ID_KINDS if kind in request.query_params]
    if len(given) != 1:
        raise _Refused(400, 1201, "give task_ids or external_task_ids (one of them, comma-separated ids)")
    kind = given[0]
    values = request.query_params.getlist(kind)
    if len(values) != 1:
        raise _Refused(400, 1201, f"give {kind} once, as comma-separated ids")
    ids = values[0].split(",")
    if len(ids) > MAX_TASK_IDS:
        raise _Refused(400, 1201, f"{kind} takes at most {MAX_TASK_IDS} ids, got {len(ids)}")
    for one in ids:
        if not one or len(one) > MAX_EXTERNAL_ID or not one.isprintable():
            raise _Refused(400, 1201, f"{kind} must be non-empty ids of at most {MAX_EXTERNAL_ID} characters")
    return kind, ids


def list_item(row: TaskRow) -> Any:
    """A 2026-design task item as the client sees it, from the task's latest known state."""
    data = row.data if isinstance(row.data, dict) else {"id": row.task_id, "status": row.status}
    missing = {name: value for name, value in _ITEM_DEFAULTS.items() if name not in data}
    return show_client_ids({**data, **missing}, row.client_external_id, model_in_path=True)


class TaskRoutes:
    """``GET /tasks`` and ``POST /tasks`` over one proxy (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.state = proxy.state

    def routes(self) -> list[BaseRoute]:
        """The two ``/tasks`` routes."""
        return [
            Route(TASKS_PATH, self.query_tasks, methods=["GET"], name="query tasks"),
            Route(TASKS_PATH, self.list_tasks, methods=["POST"], name="list tasks"),
        ]

    async def query_tasks(self, request: Request) -> Response:
        """``GET /tasks``: the caller's own tasks named by the ids, fresh from Kling, settled as seen."""
        rid = request_id(request)
        key = await self.proxy.authenticated(request)
        if isinstance(key, Response):
            return key
        try:
            kind, ids = _ids(request)
        except _Refused as refused:
            return kling_error(refused.http_status, refused.code, str(refused), rid)
        try:
            rows = await self.state.run_sync(self._own_rows, key, kind, ids)
        except Exception:
            logger.exception("ledger unavailable on a task query", extra={"request_id": rid})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", rid)
        if not rows:
            return _json({"code": 0, "message": "SUCCEED", "request_id": rid, "data": []})
        answers = await self._ask_kling(rows.values(), request)
        if isinstance(answers, Response):
            return answers
        items = []
        for ref in ids:
            row = rows.get(ref)
            item = None if row is None else answers.get(row.reservation_id)
            if row is not None and item is not None:
                items.append(show_client_ids(item, row.client_external_id, model_in_path=True))
        return _json({"code": 0, "message": "SUCCEED", "request_id": rid, "data": items})

    def _own_rows(self, key: VirtualKey, kind: str, ids: list[str]) -> dict[str, TaskRow]:
        """The key's 2026-design tasks by the ids asked for (an id of anything else maps to nothing)."""
        external = kind == "external_task_ids"
        found: dict[str, TaskRow] = {}
        for row in self.state.tasks.find_refs(key.id, list(dict.fromkeys(ids)), external=external):
            if not is_model_in_path(row.endpoint):
                continue
            names = (row.client_external_id, row.reservation_id) if external else (row.task_id,)
            for name in names:
                if name is not None:
                    found[name] = row
        return found

    async def _ask_kling(self, rows: Any, request: Request) -> dict[str, dict[str, Any]] | Response:
        """Kling's items for ``rows`` by reservation id, in one request per kind of id, each one observed."""
        upstream = self.state.model_in_path_upstream
        if upstream is None:
            return self.proxy.no_api_key(request_id(request))
        unique = {row.reservation_id: row for row in rows}
        by_task = {row.task_id: row for row in unique.values() if row.task_id}
        by_external = {row.reservation_id: row for row in unique.values() if not row.task_id}
        answers: dict[str, dict[str, Any]] = {}
        for kind, wanted, field in (("task_ids", by_task, "id"), ("external_task_ids", by_external, "external_id")):
            if not wanted:
                continue
            reply = await upstream.request(
                "GET", TASKS_PATH, params={kind: ",".join(wanted)}, operation="query", task_query=True
            )
            if reply.request_id:
                request.state.upstream_request_id = reply.request_id
            if not reply.ok:
                return self.proxy.pass_error(reply, request_id(request))
            for item in reply.data if isinstance(reply.data, list) else []:
                row = wanted.get(item.get(field)) if isinstance(item, dict) else None
                if row is not None and row.reservation_id not in answers:
                    answers[row.reservation_id] = item
                    await self.proxy.settlement.observe(row, item)
        return answers

    async def list_tasks(self, request: Request) -> Response:
        """``POST /tasks``: one page of the caller's own 2026-design tasks, from the gateway's records."""
        rid = request_id(request)
        key = await self.proxy.authenticated(request)
        if isinstance(key, Response):
            return key
        try:
            query = parse_list_query(await request.body(), TASKS, now_micros() // 1000)
        except ListQueryError as exc:
            return kling_error(400, exc.code, str(exc), rid)
        try:
            data = await self.state.run_sync(self._page, key, query)
        except Exception:
            logger.exception("ledger unavailable on a task list", extra={"request_id": rid})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", rid)
        return _json({"code": 0, "message": "SUCCEED", "request_id": rid, "data": data})

    def _page(self, key: VirtualKey, query: Query) -> dict[str, Any]:
        after = query.after
        rows = newest_tasks(
            self.state.tasks.backend,
            key.id,
            endpoint_prefixes=_PRODUCT_PREFIXES,
            start_ms=query.start,
            end_ms=query.end,
            after=None if after is None else (after[0], str(after[1])),
            statuses=query.values("status"),
            pack_types=query.values("product_type"),
            chunk=query.limit + 1,
        )
        entries = (
            (created_ms, reservation_id, {"status": row.status, "product_type": row.pack_type}, row)
            for created_ms, reservation_id, row in rows
        )
        return page(TASKS, query, entries, render=list_item)
