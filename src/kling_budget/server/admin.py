"""The admin API: JSON under ``/admin/api``, behind a bearer admin token, described by OpenAPI 3.

Every route but the OpenAPI document itself needs ``Authorization: Bearer <admin token>`` (compared in
constant time); a missing or wrong token gets a 401 that says nothing about the token. Errors are one JSON
shape, ``{"error": {"code": ..., "message": ...}}`` with a one-line message: bad input is a 400, an unknown
resource a 404, a conflict a 409, an unreachable ledger a 503; bad input never causes a 5xx.

Amounts are exact decimal strings, as everywhere in kling-budget. The routes (see :mod:`.openapi`):

* ``GET /budgets``, ``POST /budgets``, ``GET|PUT|DELETE /budgets/{name}`` — budgets with their status
  (committed, held, remaining, reset time) and forecast;
* ``GET|POST /keys``, ``GET /keys/{key_id}``, ``POST /keys/{key_id}/revoke|rotate`` — virtual keys; a
  secret appears once, in the answer that created or rotated it;
* ``GET /usage`` (grouped), ``GET /usage/series`` (cumulative spend over time against budget lines);
* ``GET /reservations``, ``GET /reservations/{id}``, ``GET /holds`` — jobs and the open holds;
* ``GET /alerts`` — recent or pending alerts;
* ``GET /prices``, ``GET /prices/{product}``, ``POST /quote`` — the price table and a dry-run quote;
* ``POST /reconcile`` — settle open reservations from Kling's own answers.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, cast

import anyio.from_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kling_budget import forecast as forecasting
from kling_budget import reconcile as reconciling
from kling_budget.budgets import Budget, BudgetStatus, Scope, check_admission
from kling_budget.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    KlingBudgetError,
    LedgerUnavailableError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.ledger import ReservationInfo, ReservationState, UsageRow
from kling_budget.ledger.queries import GROUPS
from kling_budget.money import milli_to_units, nano_to_usd
from kling_budget.server.state import GatewayState
from kling_budget.types import Attribution, PackType
from kling_budget.windows import WEEKDAYS, Period, window_at, zone

if TYPE_CHECKING:
    from kling_budget.kling import KlingClient
    from kling_budget.server.keys import VirtualKey

__all__ = [
    "API_PREFIX",
    "ApiError",
    "Operation",
    "admin_routes",
    "budget_json",
    "error_response",
    "job_json",
    "operations",
]

API_PREFIX = "/admin/api"
MAX_BODY_BYTES = 64 * 1024
MAX_TEXT = 200
MAX_LAST_DAYS = 3660
MAX_SERIES_POINTS = 800

logger = logging.getLogger("kling_budget.server.admin")

_TZ_NAME = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")
_LAST_DAYS = re.compile(r"^last-([0-9]{1,4})d$")
_ATTRIBUTES = ("project", "user", "api_key", "model", "tag")
_USAGE_FILTERS = (*_ATTRIBUTES, "pack_type")
_OPEN_STATES = (ReservationState.HELD, ReservationState.SUBMITTED)
_PERIOD_OF_RANGE = {"today": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}


Handler = Callable[[Request, GatewayState], Awaitable[Response]]


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _bad(message: str) -> NoReturn:
    raise ApiError(400, "invalid_input", message)


def _not_found(message: str) -> NoReturn:
    raise ApiError(404, "not_found", message)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The admin API's error shape."""
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _ok(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------------- request parsing


class _Query:
    """Query parameters checked against the operation's accepted names; each given at most once."""

    def __init__(self, request: Request, accepted: Sequence[str]) -> None:
        self._values: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in accepted:
                names = ", ".join(accepted) if accepted else "none"
                _bad(f"unknown query parameter {name!r}; accepted: {names}")
            if name in self._values:
                _bad(f"query parameter {name!r} given more than once")
            if not value:
                _bad(f"query parameter {name!r} is empty; leave it out instead")
            self._values[name] = value

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._values.get(name)
        return default if value is None else _clean_text(value, name)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._values.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or len(value) > 6 or not low <= int(value) <= high:
            _bad(f"{name} must be a whole number from {low} to {high}, got {value[:40]!r}")
        return int(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._values.get(name)
        if value is None:
            return default
        if value not in ("true", "false"):
            _bad(f"{name} must be true or false, got {value[:40]!r}")
        return value == "true"

    def filters(self, names: Sequence[str]) -> dict[str, str]:
        return {n: v for n in names if (v := self.text(n))}


def _clean_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    """A short printable string: no control characters (PostgreSQL refuses NUL) and valid UTF-8."""
    if len(value) > limit:
        _bad(f"{what} is longer than {limit} characters")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
        _bad(f"{what} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _bad(f"{what} is not valid Unicode text")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def _json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; JSON numbers with a fraction arrive as ``Decimal``.

    ``optional``: an empty body means ``{}``.
    """
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if optional and not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request body as application/json")
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        _bad("the request body is not valid JSON")
    if not isinstance(data, dict):
        _bad("the request body must be a JSON object")
    return data


class _Body:
    """Fields of a JSON object body, checked one by one against the accepted names."""

    def __init__(self, data: Mapping[str, Any], accepted: Sequence[str], required: Sequence[str] = ()) -> None:
        unknown = [k for k in data if k not in accepted]
        if unknown:
            _bad(f"unknown field {unknown[0][:60]!r}; accepted: {', '.join(accepted)}")
        nulls = [k for k, v in data.items() if v is None]
        if nulls:
            _bad(f"field {nulls[0]!r} is null; leave it out instead")
        missing = [k for k in required if data.get(k) is None]
        if missing:
            _bad(f"field {missing[0]!r} is required")
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, default: str | None = None, limit: int = MAX_TEXT) -> str | None:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            _bad(f"{name} must be a string")
        return _clean_text(value, name, limit)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            _bad(f"{name} must be true or false")
        return value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _bad(f"{name} must be a whole number from {low} to {high}")
        return value

    def amount(self, name: str, places: int, digits: int) -> str | None:
        """An exact amount: a string like ``"1.50"`` or an integer; never a JSON number with a fraction."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, Decimal):
            _bad(f'{name} must be a string like "1.50" or a whole number, not a JSON number with a fraction')
        if isinstance(value, bool) or not isinstance(value, int | str):
            _bad(f'{name} must be a string like "1.50" or a whole number')
        text = str(value).strip()
        pattern = rf"^[0-9]{{1,{digits}}}(\.[0-9]{{1,{places}}})?$"
        if not re.fullmatch(pattern, text):
            _bad(
                f"{name} must be a positive number with at most {digits} digits before the point and "
                f"{places} after it, got {text[:40]!r}"
            )
        if Decimal(text) == 0:
            _bad(f"{name} must be greater than 0")
        return text

    def string_list(self, name: str, limit: int = 20) -> list[str]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
            _bad(f"{name} must be a list of at most {limit} strings")
        return [_clean_text(v, name) for v in value]


# ---------------------------------------------------------------------------------------------- time parsing


def _timezone(value: str | None) -> str:
    name = value or "UTC"
    if not _TZ_NAME.match(name):
        _bad(f"unknown time zone {name[:40]!r}; use an IANA name such as UTC or Europe/Berlin")
    zone(name)
    return name


def _instant(value: str, what: str, tz_name: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is read in ``tz_name``."""
    text = value.strip()
    if len(text) > 40:
        _bad(f"{what} is not an ISO 8601 date or date-time")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        _bad(f"{what} must be an ISO 8601 date or date-time such as 2026-03-01 or 2026-03-01T12:00:00Z")
    if not 1971 <= parsed.year <= 2999:
        _bad(f"{what} must be between the years 1971 and 2999")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(tz_name))
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Range:
    start: datetime
    end: datetime
    period: str  # the period name, or "custom" for from/to


def _range(query: _Query, now: datetime, tz_name: str) -> _Range:
    """``period`` (today, week, month, last-Nd; default month) or ``from``/``to`` (to defaults to now)."""
    period = query.text("period")
    low, high = query.text("from"), query.text("to")
    if low is not None or high is not None:
        if period is not None:
            _bad("give either period or from/to, not both")
        if low is None:
            _bad("to needs from")
        start = _instant(low, "from", tz_name)
        end = _instant(high, "to", tz_name) if high is not None else now
        if end <= start:
            _bad("to must be after from")
        return _Range(start, end, "custom")
    text = (period or "month").strip().lower()
    days = _LAST_DAYS.match(text)
    if days:
        count = int(days.group(1))
        if not 1 <= count <= MAX_LAST_DAYS:
            _bad(f"period last-Nd needs N from 1 to {MAX_LAST_DAYS}")
        return _Range(now - timedelta(days=count), now, text)
    kinds = {"today": Period.DAILY, "day": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}
    if text not in kinds:
        _bad(f"unknown period {text[:40]!r}; accepted: today, week, month, last-Nd (e.g. last-7d)")
    window = window_at(kinds[text], now, tz_name)
    assert window.end is not None
    return _Range(window.start, window.end, "today" if text == "day" else text)


# ---------------------------------------------------------------------------------------------- serialisation


def _units(milli: int | None) -> str | None:
    return None if milli is None else f"{milli_to_units(milli):f}"


def _usd(nano: int | None) -> str | None:
    # Positional notation always: str() of a Decimal below 1e-6 would read "3.3E-7".
    return None if nano is None else f"{nano_to_usd(nano):f}"


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
        show = _units if item.limit_kind == "units" else _usd
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
        "limit_units": _units(budget.limit_units_milli),
        "limit_usd": _usd(budget.limit_usd_nano),
        "committed_units": _units(counters.committed_milli),
        "held_units": _units(counters.held_milli),
        "overage_units": _units(counters.overage_milli),
        "remaining_units": _units(status.remaining_units_milli),
        "committed_usd": _usd(counters.committed_nano),
        "held_usd": _usd(counters.held_nano),
        "overage_usd": _usd(counters.overage_nano),
        "remaining_usd": _usd(status.remaining_usd_nano),
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
        "held_units": _units(info.units_milli),
        "held_usd": _usd(info.usd_nano),
        "actual_units": _units(info.actual_milli),
        "actual_usd": _usd(info.actual_nano),
        "cost_units": _units(cost_milli),
        "cost_usd": _usd(cost_nano),
        "overage_units": _units(info.overage_milli),
        "overage_usd": _usd(info.overage_nano),
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


def _usage_totals(rows: Iterable[UsageRow]) -> dict[str, Any]:
    rows = list(rows)
    return {
        "committed_units": _units(sum(r.committed_milli for r in rows)),
        "held_units": _units(sum(r.held_milli for r in rows)),
        "committed_usd": _usd(sum(r.committed_nano for r in rows)),
        "held_usd": _usd(sum(r.held_nano for r in rows)),
        "jobs": sum(r.jobs for r in rows),
    }


# ---------------------------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class Operation:
    """One admin route: method, path (relative to :data:`API_PREFIX`) and handler."""

    method: str
    path: str
    handler: Handler
    public: bool = False


_OPERATIONS: list[Operation] = []


def _op(method: str, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _OPERATIONS.append(Operation(method, path, handler, public))
        return handler

    return register


def operations() -> list[Operation]:
    """Every admin route (the OpenAPI document is checked against this list in the tests)."""
    return list(_OPERATIONS)


def _budget_filters(query: _Query) -> Scope:
    values = query.filters(("project", "user", "model"))
    return Scope(project=values.get("project", ""), user=values.get("user", ""), model=values.get("model", ""))


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


def _canonical_model(state: GatewayState, model: str | None) -> str | None:
    if not model:
        return model
    try:
        return state.tracker.prices.canonical_model(model)
    except KlingBudgetError:
        return model  # usage of a model no longer priced stays searchable


@_op("GET", "/openapi.json", public=True)
async def _openapi(request: Request, state: GatewayState) -> Response:
    from kling_budget.server.openapi import openapi_document

    _Query(request, ())
    return _ok(openapi_document())


@_op("GET", "/status")
async def _status(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    tracker = state.tracker
    now = tracker.ledger.now()
    return _ok({"now": now.isoformat(), "price_version": tracker.prices.version})


@_op("GET", "/budgets")
async def _list_budgets(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("project", "user", "model"))
    wanted = _budget_filters(query)
    wanted = Scope(project=wanted.project, user=wanted.user, model=_canonical_model(state, wanted.model) or "")

    def work() -> list[dict[str, Any]]:
        statuses = state.tracker.ledger.statuses()
        return [budget_json(state, s) for s in statuses if _applies(s.budget, wanted)]

    return _ok({"budgets": await state.run_sync(work)})


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


@_op("POST", "/budgets")
async def _create_budget(request: Request, state: GatewayState) -> Response:
    body = _Body(await _json_object(request), ("name", *_BUDGET_FIELDS), ("name",))
    name = body.text("name") or ""
    return await _save_budget(state, name, body, must_be_new=True)


@_op("GET", "/budgets/{name}")
async def _get_budget(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    name = request.path_params["name"]
    return _ok(await state.run_sync(lambda: budget_json(state, _budget_status(state, name))))


@_op("PUT", "/budgets/{name}")
async def _put_budget(request: Request, state: GatewayState) -> Response:
    body = _Body(await _json_object(request), _BUDGET_FIELDS)
    return await _save_budget(state, request.path_params["name"], body, must_be_new=False)


@_op("DELETE", "/budgets/{name}")
async def _delete_budget(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    name = request.path_params["name"]

    def work() -> None:
        _budget_status(state, name)
        state.tracker.delete_budget(name)

    await state.run_sync(work)
    return _ok({"deleted": name})


def _budget_status(state: GatewayState, name: str) -> BudgetStatus:
    names = {b.name for b in state.tracker.ledger.list_budgets()}
    if name not in names:
        _not_found(f"no budget named {name[:100]!r}")
    return state.tracker.ledger.budget_status(name)


async def _save_budget(state: GatewayState, name: str, body: _Body, *, must_be_new: bool) -> Response:
    _clean_text(name, "name", 100)
    limit_units = body.amount("limit_units", 3, 12)
    # 9 digits of dollars: the nano-dollar counters must stay within a signed 64-bit integer.
    limit_usd = body.amount("limit_usd", 9, 9)
    if limit_units is None and limit_usd is None:
        _bad("a budget needs limit_units and/or limit_usd")
    alert_at = body.data.get("alert_at")
    if alert_at is not None and (
        not isinstance(alert_at, list)
        or len(alert_at) > 10
        or not all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 1000 for t in alert_at)
    ):
        _bad("alert_at must be a list of at most 10 whole percentages from 1 to 1000")
    week_start: Any = body.data.get("week_start")
    if week_start is None:
        week_start = 0
    elif isinstance(week_start, bool) or not isinstance(week_start, int | str):
        _bad("week_start must be a weekday name or a number from 0 (Monday) to 6")
    elif isinstance(week_start, str):
        week_start = _clean_text(week_start, "week_start", 20)
    elif not 0 <= week_start <= 6:
        _bad("week_start must be a weekday name or a number from 0 (Monday) to 6")
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
        "timezone": _timezone(body.text("timezone", "UTC")),
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
    return _ok(payload, status)


def _key_json(key: VirtualKey) -> dict[str, Any]:
    return key.to_dict()


def _require_key(state: GatewayState, name: str) -> VirtualKey:
    found = [k for k in state.keys.list() if k.name == name]
    if not found:
        _not_found(f"no virtual key named {name[:100]!r}")
    return found[0]


@_op("GET", "/keys")
async def _list_keys(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("include_revoked", "project"))
    include_revoked = query.boolean("include_revoked", True)
    project = query.text("project")
    keys = await state.run_sync(lambda: state.keys.list(include_revoked=include_revoked))
    return _ok({"keys": [_key_json(k) for k in keys if project is None or k.project == project]})


@_op("POST", "/keys")
async def _create_key(request: Request, state: GatewayState) -> Response:
    body = _Body(await _json_object(request), ("name", "project", "user", "tags", "kind"), ("name", "project"))
    name = body.text("name", limit=100) or ""
    project = body.text("project") or ""
    user = body.text("user", "") or ""
    tags = body.string_list("tags")
    kind = body.text("kind", "jwt") or "jwt"
    if kind not in ("jwt", "api", "both"):
        _bad(f"kind must be jwt, api or both, got {kind[:40]!r}")

    def work() -> dict[str, Any]:
        if any(k.name == name for k in state.keys.list()):
            raise ApiError(409, "conflict", f"a virtual key named {name!r} exists (names are never reused)")
        issued = state.keys.create(name, project=project, user=user, tags=tags, kind=kind)
        return issued.to_dict()

    return _ok(await state.run_sync(work), 201)


@_op("GET", "/keys/{name}")
async def _get_key(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    name = request.path_params["name"]
    return _ok(_key_json(await state.run_sync(_require_key, state, name)))


@_op("POST", "/keys/{name}/revoke")
async def _revoke_key(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    name = request.path_params["name"]

    def work() -> VirtualKey:
        _require_key(state, name)
        return state.keys.revoke(name)

    return _ok(_key_json(await state.run_sync(work)))


@_op("POST", "/keys/{name}/rotate")
async def _rotate_key(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    name = request.path_params["name"]

    def work() -> dict[str, Any]:
        if _require_key(state, name).revoked:
            raise ApiError(409, "conflict", f"virtual key {name!r} is revoked; create a new key instead")
        return state.keys.rotate(name).to_dict()

    return _ok(await state.run_sync(work))


@_op("GET", "/usage")
async def _usage(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("group_by", "period", "from", "to", "timezone", "week_start", *_USAGE_FILTERS))
    tz_name = _timezone(query.text("timezone"))
    week_start = query.integer("week_start", 0, 0, 6)
    groups = [g.strip() for g in (query.text("group_by") or "project").split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if not groups or unknown or len(set(groups)) != len(groups) or len(groups) > 4:
        _bad(f"group_by takes 1 to 4 distinct names from: {', '.join(GROUPS)}")
    filters = query.filters(_USAGE_FILTERS)
    _check_pack_type(filters)
    if "model" in filters:
        filters["model"] = _canonical_model(state, filters["model"]) or ""
    ledger = state.tracker.ledger
    span = _range(query, ledger.now(), tz_name)

    def work() -> list[UsageRow]:
        return ledger.usage(
            start=span.start, end=span.end, group_by=groups, timezone=tz_name, week_start=week_start, filters=filters
        )

    rows = await state.run_sync(work)
    return _ok(
        {
            "start": span.start.isoformat(),
            "end": span.end.isoformat(),
            "period": span.period,
            "timezone": tz_name,
            "group_by": groups,
            "filters": filters,
            "rows": [{"group": dict(r.group), **_row_amounts(r)} for r in rows],
            "totals": _usage_totals(rows),
        }
    )


def _row_amounts(row: UsageRow) -> dict[str, Any]:
    return {
        "committed_units": _units(row.committed_milli),
        "held_units": _units(row.held_milli),
        "committed_usd": _usd(row.committed_nano),
        "held_usd": _usd(row.held_nano),
        "jobs": row.jobs,
    }


def _check_pack_type(filters: Mapping[str, str]) -> None:
    pack = filters.get("pack_type")
    if pack is not None and pack not in {p.value for p in PackType}:
        _bad(f"unknown pack_type {pack[:40]!r}; accepted: {', '.join(p.value for p in PackType)}")


def _buckets(span: _Range, bucket: str, tz_name: str) -> list[tuple[str, datetime]]:
    """The labels of every hour or day in ``span`` as :func:`ledger.queries.usage` writes them, in order."""
    tz = zone(tz_name)
    labels: dict[str, datetime] = {}
    if bucket == "hour":
        step = timedelta(minutes=15)  # the roll-up's granularity: exact for every offset in use
        at = span.start
        while at < span.end:
            labels.setdefault(at.astimezone(tz).strftime("%Y-%m-%dT%H:00"), at)
            at += step
    else:
        day = span.start.astimezone(tz).date()
        last = (span.end - timedelta(microseconds=1)).astimezone(tz).date()
        while day <= last:
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
            labels.setdefault(day.isoformat(), max(span.start, window_at(Period.DAILY, noon, tz_name).start))
            day += timedelta(days=1)
    return list(labels.items())


@_op("GET", "/usage/series")
async def _usage_series(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("period", "from", "to", "timezone", "bucket", *_USAGE_FILTERS))
    tz_name = _timezone(query.text("timezone"))
    filters = query.filters(_USAGE_FILTERS)
    _check_pack_type(filters)
    if "model" in filters:
        filters["model"] = _canonical_model(state, filters["model"]) or ""
    ledger = state.tracker.ledger
    now = ledger.now()
    span = _range(query, now, tz_name)
    bucket = query.text("bucket") or ("hour" if span.end - span.start <= timedelta(days=2) else "day")
    if bucket not in ("hour", "day"):
        _bad(f"bucket must be hour or day, got {bucket[:40]!r}")
    hours = (span.end - span.start) / timedelta(hours=1)
    if (hours if bucket == "hour" else hours / 24) > MAX_SERIES_POINTS:
        _bad(f"the period has more than {MAX_SERIES_POINTS} {bucket}s; use a shorter period or bucket=day")
    buckets = _buckets(span, bucket, tz_name)

    def work() -> tuple[list[UsageRow], list[BudgetStatus]]:
        rows = ledger.usage(start=span.start, end=span.end, group_by=[bucket], timezone=tz_name, filters=filters)
        return rows, ledger.statuses(now=now)

    rows, statuses = await state.run_sync(work)
    by_label = {r.group[bucket]: r for r in rows}
    points = []
    committed_milli = held_milli = committed_nano = held_nano = 0
    for label, start in buckets:
        row = by_label.get(label)
        if row is not None:
            committed_milli += row.committed_milli
            held_milli += row.held_milli
            committed_nano += row.committed_nano
            held_nano += row.held_nano
        points.append(
            {
                "label": label,
                "start": start.isoformat(),
                "committed_usd": _usd(row.committed_nano if row else 0),
                "held_usd": _usd(row.held_nano if row else 0),
                "committed_units": _units(row.committed_milli if row else 0),
                "held_units": _units(row.held_milli if row else 0),
                "jobs": row.jobs if row else 0,
                "cumulative_committed_usd": _usd(committed_nano),
                "cumulative_held_usd": _usd(held_nano),
                "cumulative_usd": _usd(committed_nano + held_nano),
                "cumulative_committed_units": _units(committed_milli),
                "cumulative_held_units": _units(held_milli),
                "cumulative_units": _units(committed_milli + held_milli),
            }
        )
    wanted = Scope(
        project=filters.get("project", ""),
        user=filters.get("user", ""),
        api_key=filters.get("api_key", ""),
        model=filters.get("model", ""),
        tag=filters.get("tag", ""),
    )
    lines = [
        {
            "budget": s.budget.name,
            "period": s.budget.period.value,
            "limit_usd": _usd(s.budget.limit_usd_nano),
            "limit_units": _units(s.budget.limit_units_milli),
            "unit_pack": s.budget.unit_pack.value,
            "resets_at": s.window.end.isoformat() if s.window.end else None,
        }
        for s in statuses
        if s.budget.scope == wanted and _PERIOD_OF_RANGE.get(span.period) is s.budget.period
    ]
    return _ok(
        {
            "start": span.start.isoformat(),
            "end": span.end.isoformat(),
            "now": now.isoformat(),
            "period": span.period,
            "timezone": tz_name,
            "bucket": bucket,
            "filters": filters,
            "points": points,
            "budget_lines": lines,
            "totals": _usage_totals(rows),
        }
    )


def _job_scope(state: GatewayState, query: _Query) -> Scope:
    values = query.filters(_ATTRIBUTES)
    return Scope(
        project=values.get("project", ""),
        user=values.get("user", ""),
        api_key=values.get("api_key", ""),
        model=_canonical_model(state, values.get("model")) or "",
        tag=values.get("tag", ""),
    )


@_op("GET", "/reservations")
async def _reservations(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("state", "limit", *_ATTRIBUTES))
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
                _bad(f"unknown state {item.strip()[:40]!r}; accepted: {accepted}")
    scope = _job_scope(state, query)
    infos = await state.run_sync(
        lambda: state.tracker.ledger.list_reservations(states=states, limit=limit, scope=scope)
    )
    return _ok({"reservations": [job_json(i) for i in infos]})


@_op("GET", "/reservations/{reservation_id}")
async def _reservation(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    key = request.path_params["reservation_id"]
    try:
        info = await state.run_sync(state.tracker.ledger.get_reservation, key)
    except ReservationNotFoundError:
        _not_found(f"no reservation with id {key[:100]!r}")
    return _ok(job_json(info))


@_op("GET", "/holds")
async def _holds(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("limit", *_ATTRIBUTES))
    limit = query.integer("limit", 100, 1, 500)
    scope = _job_scope(state, query)
    infos = await state.run_sync(
        lambda: state.tracker.ledger.list_reservations(states=_OPEN_STATES, limit=limit + 1, scope=scope)
    )
    shown = infos[:limit]
    return _ok(
        {
            "holds": [job_json(i) for i in shown],
            "count": len(shown),
            "truncated": len(infos) > limit,
            "held_units": _units(sum(i.units_milli for i in shown)),
            "held_usd": _usd(sum(i.usd_nano for i in shown)),
        }
    )


@_op("GET", "/alerts")
async def _alerts(request: Request, state: GatewayState) -> Response:
    query = _Query(request, ("limit", "pending"))
    limit = query.integer("limit", 50, 1, 500)
    pending = query.boolean("pending", False)
    ledger = state.tracker.ledger
    events = await state.run_sync(
        lambda: ledger.pending_alerts(limit=limit) if pending else ledger.recent_alerts(limit=limit)
    )
    return _ok({"alerts": [e.to_dict() for e in events]})


@_op("GET", "/prices")
async def _prices(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    table = state.tracker.prices
    return _ok(
        {
            "version": table.version,
            "currency": table.currency,
            "list_usd_per_unit": {p.value: f"{table.list_usd_per_unit(p):f}" for p in PackType},
            "products": [_product_json(state, name) for name in table.products()],
        }
    )


def _product_json(state: GatewayState, name: str) -> dict[str, Any]:
    table = state.tracker.prices
    info = table.product_info(name)
    return {
        "name": info.name,
        "pack_type": info.pack_type.value,
        "description": info.description,
        "default_mode": info.default_mode,
        "default_duration": info.default_duration,
        "default_resolution": info.default_resolution,
        "models": table.models(name),
    }


@_op("GET", "/prices/{product}")
async def _product_prices(request: Request, state: GatewayState) -> Response:
    _Query(request, ())
    table = state.tracker.prices
    product = request.path_params["product"]
    if product not in table.products():
        _not_found(f"unknown product {product[:60]!r}; known: {', '.join(table.products())}")
    rows = [
        {
            "model": r.model,
            "label": r.label,
            "mode": r.mode,
            "resolution": r.resolution,
            "sound": r.sound,
            "voice_control": r.voice_control,
            "video_input": r.video_input,
            "image_input": r.image_input,
            "per": r.per,
            "units": _units(r.units_milli),
            "durations": list(r.durations),
            "min_duration": r.min_duration,
            "max_duration": r.max_duration,
            "block_seconds": r.block_seconds,
            "max_n": r.max_n,
            "note": r.note,
            "source": r.source,
            "effective": r.effective,
        }
        for r in table.rows(product)
    ]
    return _ok({**_product_json(state, product), "rows": rows})


_QUOTE_FIELDS = (
    "model",
    "product",
    "mode",
    "duration",
    "resolution",
    "sound",
    "voice_control",
    "video_input",
    "image_input",
    "n",
    "project",
    "user",
    "api_key",
    "tags",
)


@_op("POST", "/quote")
async def _quote(request: Request, state: GatewayState) -> Response:
    body = _Body(await _json_object(request), _QUOTE_FIELDS, ("model",))
    duration: Any = body.data.get("duration")
    if duration is not None:
        if isinstance(duration, Decimal):
            duration = str(duration)
        if isinstance(duration, bool) or not isinstance(duration, int | str) or len(str(duration)) > 12:
            _bad('duration must be seconds as a whole number or a string like "5.04"')
    sound: Any = body.data.get("sound", False)
    if not isinstance(sound, bool | str) or (isinstance(sound, str) and len(sound) > 20):
        _bad('sound must be true, false, "on", "off" or "native"')
    tracker = state.tracker
    quote = tracker.quote(
        body.text("model") or "",
        product=body.text("product", "video") or "video",
        mode=body.text("mode"),
        duration=duration,
        resolution=body.text("resolution"),
        sound=sound,
        voice_control=body.boolean("voice_control", False),
        video_input=body.boolean("video_input", False),
        image_input=body.boolean("image_input", False),
        n=body.integer("n", 1, 1, 100) or 1,
    )
    attribution = Attribution(
        project=body.text("project", "") or "",
        user=body.text("user", "") or "",
        api_key=body.text("api_key", "") or "",
        model=quote.model,
        tags=tuple(body.string_list("tags")),
    )

    def verdicts() -> list[dict[str, Any]]:
        ledger = tracker.ledger
        now = ledger.now()
        result = []
        for budget in ledger.matching_budgets(attribution):
            status = ledger.budget_status(budget.name, now=now)
            units = budget.units_delta(quote.pack_type, quote.units_milli)
            denial = check_admission(budget, status.window, status.counters, units, quote.list_usd_nano)
            left_units = status.remaining_units_milli
            left_usd = status.remaining_usd_nano
            result.append(
                {
                    "budget": budget.name,
                    "hard": budget.hard,
                    "allowed": denial is None,
                    "reason": denial.message() if denial else "",
                    "remaining_units_after": None if left_units is None else _units(left_units - units),
                    "remaining_usd_after": None if left_usd is None else _usd(left_usd - quote.list_usd_nano),
                    "resets_at": status.window.end.isoformat() if status.window.end else None,
                }
            )
        return result

    checks = await state.run_sync(verdicts)
    return _ok(
        {
            "model": quote.model,
            "product": quote.product,
            "pack_type": quote.pack_type.value,
            "units": _units(quote.units_milli),
            "usd": _usd(quote.list_usd_nano),
            "price_version": quote.price_version,
            "description": quote.describe(),
            "params": dict(quote.params),
            "breakdown": [{"label": line.label, "units": _units(line.units_milli)} for line in quote.breakdown],
            "allowed": all(c["allowed"] for c in checks),
            "budgets": checks,
        }
    )


class _BlockingKling:
    """The blocking face of an ``AsyncKlingClient`` (same API), for reconcile run in a worker thread.

    Each awaitable method runs on the gateway's event loop through ``anyio.from_thread``, so reconcile
    shares the loop's connection pool instead of opening a second client.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return anyio.from_thread.run(functools.partial(attr, *args, **kwargs))

        return call


_RECONCILING: weakref.WeakKeyDictionary[GatewayState, anyio.Lock] = weakref.WeakKeyDictionary()


@_op("POST", "/reconcile")
async def _reconcile(request: Request, state: GatewayState) -> Response:
    data = await _json_object(request, optional=True)
    body = _Body(data, ("check_costs", "held_grace_seconds", "release_missing_older_than_seconds"))
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
        try:
            report = await state.run_sync(
                lambda: reconciling.reconcile(
                    state.tracker,
                    cast("KlingClient", _BlockingKling(client)),
                    check_costs=check_costs,
                    held_grace=timedelta(seconds=grace),
                    release_missing_older_than=None if missing is None else timedelta(seconds=missing),
                )
            )
        finally:
            await client.aclose()
    return _ok(report.to_dict())


# ---------------------------------------------------------------------------------------------- routing


def _authorized(request: Request, state: GatewayState) -> bool:
    """Whether the request carries the admin token (constant-time comparison; no token: never)."""
    token = state.config.admin_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return token is not None and scheme.lower() == "bearer" and token.matches(given.strip())


_UNAUTHORIZED = "the admin API needs a valid admin token: send Authorization: Bearer <token>"


def _dispatcher(state: GatewayState, handlers: Mapping[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    public = all(op.public for op in handlers.values())

    async def endpoint(request: Request) -> Response:
        if not public and not _authorized(request, state):
            return error_response(401, "unauthorized", _UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="admin"'})
        method = "GET" if request.method == "HEAD" else request.method
        op = handlers.get(method)
        if op is None:
            allowed = ", ".join(sorted(handlers))
            return error_response(405, "method_not_allowed", f"use {allowed} on this path", {"Allow": allowed})
        try:
            return await op.handler(request, state)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except ReservationNotFoundError as exc:
            return error_response(404, "not_found", str(exc))
        except (IdempotencyConflictError, ReservationResolvedError) as exc:
            return error_response(409, "conflict", str(exc))
        except LedgerUnavailableError as exc:
            logger.error("admin %s %s: ledger unavailable: %s", request.method, op.path, exc)
            return error_response(503, "ledger_unavailable", "the ledger cannot be reached; try again shortly")
        except (InvalidInputError, ConfigurationError) as exc:
            return error_response(400, "invalid_input", str(exc))
        except Exception:
            logger.exception("admin %s %s failed", request.method, op.path)
            return error_response(500, "internal_error", "the admin API failed on this request; see the gateway log")

    return endpoint


async def _unknown(request: Request, state: GatewayState) -> Response:
    if not _authorized(request, state):
        return error_response(401, "unauthorized", _UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="admin"'})
    return error_response(404, "not_found", "no admin API route at this path; see /admin/api/openapi.json")


def admin_routes(state: GatewayState) -> list[BaseRoute]:
    """The admin API's routes, to mount in the gateway app (``create_app`` does)."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in _OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = op
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes: list[BaseRoute] = [
        Route(API_PREFIX + path, _dispatcher(state, handlers), methods=methods) for path, handlers in by_path.items()
    ]

    async def unknown(request: Request) -> Response:
        return await _unknown(request, state)

    routes.append(Route(API_PREFIX + "/{rest:path}", unknown, methods=methods))
    routes.append(Route(API_PREFIX, unknown, methods=methods))
    return routes
