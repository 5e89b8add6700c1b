"""``GET /budgets``, ``POST /budgets``, ``GET|PUT|DELETE /budgets/{name}``: budgets with their status in the
current window (committed, held, remaining, reset time) and forecast."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget import forecast as forecasting
from kling_budget.budgets import Budget, BudgetStatus, Scope
from kling_budget.money import units_text, usd_text
from kling_budget.server.admin._base import ApiError, Operations, bad, not_found, ok
from kling_budget.server.admin._params import Body, Query, clean_text, json_object, model_filter, scope_of, time_zone
from kling_budget.server.state import GatewayState
from kling_budget.windows import WEEKDAYS, Period

op = Operations()

_FILTERS = ("project", "user", "model")

_BUDGET_FIELDS = (
    "period",
    "limit_units",
    "limit_usd",
    "project",
    "user",
    "api_key",
    "model",
    "tag",
    "hard",
    "alert_at",
    "timezone",
    "week_start",
    "unit_pack",
)


# ---------------------------------------------------------------------------------------------- serialisation


def _scope_dict(scope: Scope) -> dict[str, str]:
    return {
        "project": scope.project,
        "user": scope.user,
        "api_key": scope.api_key,
        "model": scope.model,
        "tag": scope.tag,
    }


def _forecast(state: GatewayState, status: BudgetStatus) -> dict[str, Any] | None:
    """Projected spend at the window's end and projected exhaustion, per limit."""
    budget = status.budget
    if budget.period is Period.TOTAL:
        found = forecasting.forecast_budgets(state.tracker.ledger, [budget.name], now=status.as_of)
        if not found:
            return None
        result = found[0]
    else:
        result = forecasting.forecast(budget, status.counters, status.as_of, window=status.window)
    limits = []
    for item in result.limits:
        show = units_text if item.limit_kind == "units" else usd_text
        # A projection is not a charge: dollars to the cent read better than to the nano-dollar.
        projected = item.projected
        if projected is not None and item.limit_kind == "usd":
            projected = (projected + 5_000_000) // 10_000_000 * 10_000_000
        limits.append(
            {
                "limit_kind": item.limit_kind,
                "limit": show(item.limit),
                "used": show(item.used),
                "projected": show(projected),
                "projected_percent": None if item.projected is None else f"{item.percent(item.projected):f}",
                "exhaustion_at": item.exhaustion_at.isoformat() if item.exhaustion_at else None,
                "will_exceed": item.will_exceed,
            }
        )
    return {
        "confident": result.confident,
        "will_exceed": result.will_exceed,
        "exhaustion_at": result.exhaustion_at.isoformat() if result.exhaustion_at else None,
        "description": result.describe(),
        "limits": limits,
    }


def budget_json(state: GatewayState, status: BudgetStatus) -> dict[str, Any]:
    """A budget with its status in the current window (and forecast): what ``/budgets`` answers."""
    budget, counters, window = status.budget, status.counters, status.window
    return {
        "name": budget.name,
        "period": budget.period.value,
        "timezone": budget.timezone,
        "hard": budget.hard,
        "unit_pack": budget.unit_pack.value,
        "thresholds": list(budget.thresholds),
        "limit_units": units_text(budget.limit_units_milli),
        "limit_usd": usd_text(budget.limit_usd_nano),
        "committed_units": units_text(counters.committed_milli),
        "held_units": units_text(counters.held_milli),
        "overage_units": units_text(counters.overage_milli),
        "remaining_units": units_text(status.remaining_units_milli),
        "committed_usd": usd_text(counters.committed_nano),
        "held_usd": usd_text(counters.held_nano),
        "overage_usd": usd_text(counters.overage_nano),
        "remaining_usd": usd_text(status.remaining_usd_nano),
        "percent": f"{status.percent:f}",
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat() if window.end else None,
        "resets_at": window.end.isoformat() if window.end else None,
        "as_of": status.as_of.isoformat(),
        "scope": budget.scope.describe(),
        "scope_fields": _scope_dict(budget.scope),
        "week_start": WEEKDAYS[budget.week_start],
        "exhausted": status.exhausted,
        "forecast": _forecast(state, status),
    }


# ---------------------------------------------------------------------------------------------- routes


def _applies(budget: Budget, wanted: Scope) -> bool:
    """Whether jobs of the filtered scope can count against ``budget`` (its scope is empty or the same)."""
    return all(
        not want or have in ("", want)
        for have, want in (
            (budget.scope.project, wanted.project),
            (budget.scope.user, wanted.user),
            (budget.scope.model, wanted.model),
        )
    )


@op("GET", "/budgets")
async def _list_budgets(request: Request, state: GatewayState) -> Response:
    query = Query(request, _FILTERS)
    wanted = scope_of(model_filter(state, query.filters(_FILTERS)))

    def work() -> list[dict[str, Any]]:
        statuses = state.tracker.ledger.statuses()
        return [budget_json(state, s) for s in statuses if _applies(s.budget, wanted)]

    return ok({"budgets": await state.run_sync(work)})


@op("POST", "/budgets")
async def _create_budget(request: Request, state: GatewayState) -> Response:
    body = Body(await json_object(request), ("name", *_BUDGET_FIELDS), ("name",))
    name = body.text("name") or ""
    return await _save_budget(state, name, body, must_be_new=True)


@op("GET", "/budgets/{name}")
async def _get_budget(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    name = request.path_params["name"]
    return ok(await state.run_sync(lambda: budget_json(state, _budget_status(state, name))))


@op("PUT", "/budgets/{name}")
async def _put_budget(request: Request, state: GatewayState) -> Response:
    body = Body(await json_object(request), _BUDGET_FIELDS)
    return await _save_budget(state, request.path_params["name"], body, must_be_new=False)


@op("DELETE", "/budgets/{name}")
async def _delete_budget(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    name = request.path_params["name"]

    def work() -> None:
        _budget_status(state, name)
        state.tracker.delete_budget(name)

    await state.run_sync(work)
    return ok({"deleted": name})


def _budget_status(state: GatewayState, name: str) -> BudgetStatus:
    names = {b.name for b in state.tracker.ledger.list_budgets()}
    if name not in names:
        not_found(f"no budget named {name[:100]!r}")
    return state.tracker.ledger.budget_status(name)


async def _save_budget(state: GatewayState, name: str, body: Body, *, must_be_new: bool) -> Response:
    clean_text(name, "name", 100)
    limit_units = body.amount("limit_units", 3, 12)
    # 9 digits of dollars: the nano-dollar counters must stay within a signed 64-bit integer.
    limit_usd = body.amount("limit_usd", 9, 9)
    if limit_units is None and limit_usd is None:
        bad("a budget needs limit_units and/or limit_usd")
    alert_at = body.data.get("alert_at")
    if alert_at is not None and (
        not isinstance(alert_at, list)
        or len(alert_at) > 10
        or not all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 1000 for t in alert_at)
    ):
        bad("alert_at must be a list of at most 10 whole percentages from 1 to 1000")
    week_start: Any = body.data.get("week_start")
    if week_start is None:
        week_start = 0
    elif isinstance(week_start, bool) or not isinstance(week_start, int | str):
        bad("week_start must be a weekday name or a number from 0 (Monday) to 6")
    elif isinstance(week_start, str):
        week_start = clean_text(week_start, "week_start", 20)
    elif not 0 <= week_start <= 6:
        bad("week_start must be a weekday name or a number from 0 (Monday) to 6")
    model = body.text("model")
    options = {
        "period": body.text("period", "monthly") or "monthly",
        "limit_units": limit_units,
        "limit_usd": limit_usd,
        "project_id": body.text("project"),
        "user_id": body.text("user"),
        "api_key": body.text("api_key"),
        "tag": body.text("tag"),
        "hard": body.boolean("hard", True),
        "alert_at": tuple(alert_at) if alert_at is not None else (50, 80, 100),
        "timezone": time_zone(body.text("timezone", "UTC")),
        "week_start": week_start,
        "unit_pack": body.text("unit_pack", "video") or "video",
    }

    def work() -> tuple[int, dict[str, Any]]:
        tracker = state.tracker
        exists = any(b.name == name for b in tracker.ledger.list_budgets())
        if exists and must_be_new:
            raise ApiError(409, "conflict", f"a budget named {name!r} exists; PUT /budgets/{name} replaces it")
        tracker.set_budget(name, model=model, **options)
        return (200 if exists else 201), budget_json(state, tracker.ledger.budget_status(name))

    status, payload = await state.run_sync(work)
    return ok(payload, status)
