"""``GET /openapi.json`` (the only route without the admin token) and ``GET /status``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.server.admin._base import Operations, ok
from kling_budget.server.admin._params import Query
from kling_budget.server.state import GatewayState

op = Operations()


@op("GET", "/openapi.json", public=True)
async def _openapi(request: Request, state: GatewayState) -> Response:
    from kling_budget.server.openapi import openapi_document

    Query(request, ())
    return ok(openapi_document())


@op("GET", "/status")
async def _status(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    tracker = state.tracker
    now = tracker.ledger.now()
    return ok({"now": now.isoformat(), "price_version": tracker.prices.version})
