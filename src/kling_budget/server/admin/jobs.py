"""``GET /reservations``, ``GET /reservations/{reservation_id}``, ``GET /holds``: jobs and the open holds."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.budgets import Scope
from kling_budget.errors import ReservationNotFoundError
from kling_budget.ledger import ReservationInfo, ReservationState
from kling_budget.money import units_text, usd_text
from kling_budget.server.admin._base import Operations, bad, not_found, ok
from kling_budget.server.admin._params import ATTRIBUTES, Query, model_filter, scope_of
from kling_budget.server.state import GatewayState

op = Operations()

_OPEN_STATES = (ReservationState.HELD, ReservationState.SUBMITTED)


def job_json(info: ReservationInfo) -> dict[str, Any]:
    """A reservation as a job: state, price held, what it cost; never free-form detail."""
    committed = info.state is ReservationState.COMMITTED
    if committed:
        cost_milli, cost_nano = info.actual_milli or 0, info.actual_nano or 0
    elif info.state.is_open:
        cost_milli, cost_nano = info.units_milli, info.usd_nano
    else:
        cost_milli, cost_nano = 0, 0
    params = info.detail.get("params")
    reason = info.detail.get("release_reason")
    return {
        "id": info.id,
        "kind": info.kind,
        "state": info.state.value,
        "open": info.state.is_open,
        "project": info.attribution.project,
        "user": info.attribution.user,
        "api_key": info.attribution.api_key,
        "model": info.attribution.model,
        "tags": list(info.attribution.tags),
        "product": info.product,
        "pack_type": info.pack_type.value,
        "held_units": units_text(info.units_milli),
        "held_usd": usd_text(info.usd_nano),
        "actual_units": units_text(info.actual_milli),
        "actual_usd": usd_text(info.actual_nano),
        "cost_units": units_text(cost_milli),
        "cost_usd": usd_text(cost_nano),
        "overage_units": units_text(info.overage_milli),
        "overage_usd": usd_text(info.overage_nano),
        "over_budget": info.over_budget,
        "reserved_at": info.reserved_at.isoformat(),
        "resolved_at": info.resolved_at.isoformat() if info.resolved_at else None,
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "task_id": info.task_id,
        "params": {str(k): v for k, v in params.items() if isinstance(v, str | int | bool)}
        if isinstance(params, dict)
        else {},
        "release_reason": reason if isinstance(reason, str) else None,
    }


def _job_scope(state: GatewayState, query: Query) -> Scope:
    return scope_of(model_filter(state, query.filters(ATTRIBUTES)))


@op("GET", "/reservations")
async def _reservations(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("state", "limit", *ATTRIBUTES))
    limit = query.integer("limit", 50, 1, 500)
    wanted = query.text("state")
    states: list[ReservationState] = []
    if wanted == "open":
        states = list(_OPEN_STATES)
    elif wanted is not None:
        for item in wanted.split(","):
            try:
                states.append(ReservationState(item.strip()))
            except ValueError:
                accepted = ", ".join(["open", *(s.value for s in ReservationState)])
                bad(f"unknown state {item.strip()[:40]!r}; accepted: {accepted}")
    scope = _job_scope(state, query)
    infos = await state.run_sync(
        lambda: state.tracker.ledger.list_reservations(states=states, limit=limit, scope=scope)
    )
    return ok({"reservations": [job_json(i) for i in infos]})


@op("GET", "/reservations/{reservation_id}")
async def _reservation(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    key = request.path_params["reservation_id"]
    try:
        info = await state.run_sync(state.tracker.ledger.get_reservation, key)
    except ReservationNotFoundError:
        not_found(f"no reservation with id {key[:100]!r}")
    return ok(job_json(info))


@op("GET", "/holds")
async def _holds(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("limit", *ATTRIBUTES))
    limit = query.integer("limit", 100, 1, 500)
    scope = _job_scope(state, query)
    infos = await state.run_sync(
        lambda: state.tracker.ledger.list_reservations(states=_OPEN_STATES, limit=limit + 1, scope=scope)
    )
    shown = infos[:limit]
    return ok(
        {
            "holds": [job_json(i) for i in shown],
            "count": len(shown),
            "truncated": len(infos) > limit,
            "held_units": units_text(sum(i.units_milli for i in shown)),
            "held_usd": usd_text(sum(i.usd_nano for i in shown)),
        }
    )
