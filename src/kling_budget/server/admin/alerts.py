"""``GET /alerts``: recent or pending alerts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.server.admin._base import Operations, ok
from kling_budget.server.admin._params import Query
from kling_budget.server.state import GatewayState

op = Operations()


@op("GET", "/alerts")
async def _alerts(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("limit", "pending"))
    limit = query.integer("limit", 50, 1, 500)
    pending = query.boolean("pending", False)
    ledger = state.tracker.ledger
    events = await state.run_sync(
        lambda: ledger.pending_alerts(limit=limit) if pending else ledger.recent_alerts(limit=limit)
    )
    return ok({"alerts": [e.to_dict() for e in events]})
