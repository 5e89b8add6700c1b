"""``GET /reservations``, ``GET /reservations/{reservation_id}``, ``GET /holds``: jobs and the open holds.

A job is known by the Kling task id its client holds (``task_id``; a gateway client's own
``external_task_id`` too); the reservation id (``id``) is the ledger's, shown beside it. Both find a job.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.budgets import Scope
from kling_budget.errors import ReservationNotFoundError
from kling_budget.ledger import ReservationInfo, ReservationState
from kling_budget.ledger.rows import MAX_KEY_LENGTH
from kling_budget.money import units_text, usd_text
from kling_budget.server.admin._base import Operations, bad, not_found, ok
from kling_budget.server.admin._params import ATTRIBUTES, Query, model_filter, scope_of
from kling_budget.server.state import GatewayState

op = Operations()

_OPEN_STATES = (ReservationState.HELD, ReservationState.SUBMITTED)


def job_json(info: ReservationInfo, external_task_id: str | None = None) -> dict[str, Any]:
    """A reservation as a job: the Kling task id first, then state, price held, what it cost; never
    free-form detail. ``external_task_id`` is the gateway client's own id for the task, when it gave one."""
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
        "task_id": info.task_id,
        "id": info.id,
        "external_task_id": external_task_id,
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
        "params": {str(k): v for k, v in params.items() if isinstance(v, str | int | bool)}
        if isinstance(params, dict)
        else {},
        "release_reason": reason if isinstance(reason, str) else None,
    }


def _job_scope(state: GatewayState, query: Query) -> Scope:
    return scope_of(model_filter(state, query.filters(ATTRIBUTES)))


def _external_ids(state: GatewayState, infos: list[ReservationInfo]) -> dict[str, str]:
    """The gateway clients' own ``external_task_id`` of these jobs, by reservation id (one query)."""
    keys = [i.id for i in infos]
    if not keys:
        return {}
    rows = state.ledger.backend.run(
        lambda conn: conn.fetchall(
            "SELECT reservation_id, client_external_id FROM gateway_tasks WHERE client_external_id IS NOT NULL "
            f"AND reservation_id IN ({', '.join('?' for _ in keys)})",
            keys,
        ),
        write=False,
    )
    return {str(r[0]): str(r[1]) for r in rows}


def _jobs_json(state: GatewayState, infos: list[ReservationInfo]) -> list[dict[str, Any]]:
    external = _external_ids(state, infos)
    return [job_json(i, external.get(i.id)) for i in infos]


def _find_job(state: GatewayState, ref: str) -> ReservationInfo | None:
    """A job by reservation id, else by the Kling task id a client holds."""
    try:
        return state.tracker.ledger.get_reservation(ref)
    except ReservationNotFoundError:
        return state.tracker.ledger.find_by_task(ref)


@op("GET", "/reservations")
async def _reservations(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("state", "limit", "task_id", *ATTRIBUTES))
    task_id = query.text("task_id")
    if task_id is not None:
        others = [name for name in ("state", *ATTRIBUTES) if query.text(name) is not None]
        if others:
            bad(f"task_id names one job; give it without {', '.join(others)}")
        found = await state.run_sync(state.tracker.ledger.find_by_task, task_id)
        return ok({"reservations": await state.run_sync(_jobs_json, state, [found] if found else [])})
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
    return ok({"reservations": await state.run_sync(_jobs_json, state, infos)})


@op("GET", "/reservations/{reservation_id}")
async def _reservation(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    key = request.path_params["reservation_id"]
    info = await state.run_sync(_find_job, state, key) if len(key) <= MAX_KEY_LENGTH else None
    if info is None:
        not_found(f"no job with reservation id or Kling task id {key[:100]!r}")
    (job,) = await state.run_sync(_jobs_json, state, [info])
    return ok(job)


@op("GET", "/holds")
async def _holds(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("limit", *ATTRIBUTES))
    limit = query.integer("limit", 100, 1, 500)
    scope = _job_scope(state, query)
    infos = await state.run_sync(
        lambda: state.tracker.ledger.list_reservations(states=_OPEN_STATES, limit=limit + 1, scope=scope)
    )
    shown = infos[:limit]
    jobs = await state.run_sync(_jobs_json, state, shown)
    return ok(
        {
            "holds": jobs,
            "count": len(shown),
            "truncated": len(infos) > limit,
            "held_units": units_text(sum(i.units_milli for i in shown)),
            "held_usd": usd_text(sum(i.usd_nano for i in shown)),
        }
    )
