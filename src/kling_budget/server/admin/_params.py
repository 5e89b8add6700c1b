"""Reading requests: query parameters and JSON bodies checked against the accepted names, short text,
exact amounts, time zones, instants and time ranges, and attribute filters. Bad input is an
:class:`~kling_budget.server.admin._base.ApiError` (400, or 413/415 for the body itself), never a 5xx."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

from starlette.requests import Request

from kling_budget.budgets import Scope
from kling_budget.errors import ConfigurationError, KlingBudgetError
from kling_budget.server.admin._base import ApiError, bad
from kling_budget.server.state import GatewayState
from kling_budget.windows import report_range, zone

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT = 200

ATTRIBUTES = ("project", "user", "api_key", "model", "tag")

_TZ_NAME = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")


# ---------------------------------------------------------------------------------------------- request parsing


class Query:
    """Query parameters checked against the operation's accepted names; each given at most once."""

    def __init__(self, request: Request, accepted: Sequence[str]) -> None:
        self._values: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in accepted:
                names = ", ".join(accepted) if accepted else "none"
                bad(f"unknown query parameter {name!r}; accepted: {names}")
            if name in self._values:
                bad(f"query parameter {name!r} given more than once")
            if not value:
                bad(f"query parameter {name!r} is empty; leave it out instead")
            self._values[name] = value

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._values.get(name)
        return default if value is None else clean_text(value, name)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._values.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or len(value) > 6 or not low <= int(value) <= high:
            bad(f"{name} must be a whole number from {low} to {high}, got {value[:40]!r}")
        return int(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._values.get(name)
        if value is None:
            return default
        if value not in ("true", "false"):
            bad(f"{name} must be true or false, got {value[:40]!r}")
        return value == "true"

    def filters(self, names: Sequence[str]) -> dict[str, str]:
        return {n: v for n in names if (v := self.text(n))}


def clean_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    """A short printable string: no control characters (PostgreSQL refuses NUL) and valid UTF-8."""
    if len(value) > limit:
        bad(f"{what} is longer than {limit} characters")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
        bad(f"{what} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        bad(f"{what} is not valid Unicode text")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
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
        bad("the request body is not valid JSON")
    if not isinstance(data, dict):
        bad("the request body must be a JSON object")
    return data


class Body:
    """Fields of a JSON object body, checked one by one against the accepted names."""

    def __init__(self, data: Mapping[str, Any], accepted: Sequence[str], required: Sequence[str] = ()) -> None:
        unknown = [k for k in data if k not in accepted]
        if unknown:
            bad(f"unknown field {unknown[0][:60]!r}; accepted: {', '.join(accepted)}")
        nulls = [k for k, v in data.items() if v is None]
        if nulls:
            bad(f"field {nulls[0]!r} is null; leave it out instead")
        missing = [k for k in required if data.get(k) is None]
        if missing:
            bad(f"field {missing[0]!r} is required")
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, default: str | None = None, limit: int = MAX_TEXT) -> str | None:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            bad(f"{name} must be a string")
        return clean_text(value, name, limit)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            bad(f"{name} must be true or false")
        return value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bad(f"{name} must be a whole number from {low} to {high}")
        return value

    def amount(self, name: str, places: int, digits: int) -> str | None:
        """An exact amount: a string like ``"1.50"`` or an integer; never a JSON number with a fraction."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, Decimal):
            bad(f'{name} must be a string like "1.50" or a whole number, not a JSON number with a fraction')
        if isinstance(value, bool) or not isinstance(value, int | str):
            bad(f'{name} must be a string like "1.50" or a whole number')
        text = str(value).strip()
        pattern = rf"^[0-9]{{1,{digits}}}(\.[0-9]{{1,{places}}})?$"
        if not re.fullmatch(pattern, text):
            bad(
                f"{name} must be a positive number with at most {digits} digits before the point and "
                f"{places} after it, got {text[:40]!r}"
            )
        if Decimal(text) == 0:
            bad(f"{name} must be greater than 0")
        return text

    def string_list(self, name: str, limit: int = 20) -> list[str]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
            bad(f"{name} must be a list of at most {limit} strings")
        return [clean_text(v, name) for v in value]


# ---------------------------------------------------------------------------------------------- attribute filters


def _canonical_model(state: GatewayState, model: str | None) -> str | None:
    if not model:
        return model
    try:
        return state.tracker.prices.canonical_model(model)
    except KlingBudgetError:
        return model  # usage of a model no longer priced stays searchable


def model_filter(state: GatewayState, filters: dict[str, str]) -> dict[str, str]:
    """``filters`` (changed in place and returned) with a ``model`` filter by its canonical name."""
    if "model" in filters:
        filters["model"] = _canonical_model(state, filters["model"]) or ""
    return filters


def scope_of(filters: Mapping[str, str]) -> Scope:
    """The scope that attribute filters name (an attribute not filtered on is empty)."""
    return Scope(
        project=filters.get("project", ""),
        user=filters.get("user", ""),
        api_key=filters.get("api_key", ""),
        model=filters.get("model", ""),
        tag=filters.get("tag", ""),
    )


# ---------------------------------------------------------------------------------------------- time parsing


def time_zone(value: str | None) -> str:
    name = value or "UTC"
    if not _TZ_NAME.match(name):
        bad(f"unknown time zone {name[:40]!r}; use an IANA name such as UTC or Europe/Berlin")
    zone(name)
    return name


def instant(value: str, what: str, tz_name: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is read in ``tz_name``."""
    text = value.strip()
    if len(text) > 40:
        bad(f"{what} is not an ISO 8601 date or date-time")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        bad(f"{what} must be an ISO 8601 date or date-time such as 2026-03-01 or 2026-03-01T12:00:00Z")
    if not 1971 <= parsed.year <= 2999:
        bad(f"{what} must be between the years 1971 and 2999")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(tz_name))
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Range:
    start: datetime
    end: datetime
    period: str  # the period name, or "custom" for from/to


def time_range(query: Query, now: datetime, tz_name: str) -> Range:
    """``period`` (today, week, month, last-Nd; default month) or ``from``/``to`` (to defaults to now)."""
    period = query.text("period")
    low, high = query.text("from"), query.text("to")
    if low is not None or high is not None:
        if period is not None:
            bad("give either period or from/to, not both")
        if low is None:
            bad("to needs from")
        start = instant(low, "from", tz_name)
        end = instant(high, "to", tz_name) if high is not None else now
        if end <= start:
            bad("to must be after from")
        return Range(start, end, "custom")
    text = (period or "month").strip().lower()
    try:
        start, end = report_range(text, now, tz_name)
    except ConfigurationError as exc:
        bad(str(exc))
    return Range(start, end, "today" if text == "day" else text)
