"""``POST /reconcile``: settle open reservations from Kling's own answers (one run at a time per gateway)."""

from __future__ import annotations

import asyncio
import inspect
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio
from starlette.requests import Request
from starlette.responses import Response

from kling_budget import reconcile as reconciling
from kling_budget.errors import ConfigurationError
from kling_budget.server.admin._base import ApiError, Operations, ok
from kling_budget.server.admin._params import Body, json_object
from kling_budget.server.state import GatewayState

if TYPE_CHECKING:
    from kling_budget.kling import KlingClient

op = Operations()


class _BlockingKling:
    """The blocking face of an ``AsyncKlingClient`` (same API), for reconcile run in a worker thread.

    Each awaitable method runs on the gateway's event loop (``loop``), so reconcile shares the loop's
    connection pool instead of opening a second client.
    """

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), self._loop).result()

        return call


_RECONCILING: weakref.WeakKeyDictionary[GatewayState, anyio.Lock] = weakref.WeakKeyDictionary()


@op("POST", "/reconcile")
async def _reconcile(request: Request, state: GatewayState) -> Response:
    data = await json_object(request, optional=True)
    body = Body(data, ("check_costs", "held_grace_seconds", "release_missing_older_than_seconds"))
    check_costs = body.boolean("check_costs", True)
    grace = body.integer("held_grace_seconds", 900, 0, 7 * 86400) or 0
    missing = body.integer("release_missing_older_than_seconds", None, 3600, 365 * 86400)
    lock = _RECONCILING.setdefault(state, anyio.Lock())
    if lock.locked():
        raise ApiError(409, "conflict", "a reconcile run is already in progress; try again when it ends")
    async with lock:
        try:
            client = state.kling_client()
        except ConfigurationError as exc:
            raise ApiError(409, "not_available", f"reconcile needs the upstream Kling client: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            report = await state.run_sync(
                lambda: reconciling.reconcile(
                    state.tracker,
                    cast("KlingClient", _BlockingKling(client, loop)),
                    check_costs=check_costs,
                    held_grace=timedelta(seconds=grace),
                    release_missing_older_than=None if missing is None else timedelta(seconds=missing),
                )
            )
        finally:
            await client.aclose()
    return ok(report.to_dict())
