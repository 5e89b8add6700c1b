"""Alert events the ledger writes to its outbox: budget events, and reading them back."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

from kling_budget.budgets import Budget, Counters
from kling_budget.money import format_units, format_usd, units_text, usd_text
from kling_budget.types import AlertEvent, AlertKind
from kling_budget.windows import Window, from_micros

__all__ = ["DENIAL_ALERT_INTERVAL_MICROS", "budget_event", "event_from_payload", "over_limit", "percent_text"]

DENIAL_ALERT_INTERVAL_MICROS = 60 * 1_000_000


def over_limit(budget: Budget, counters: Counters) -> bool:
    return bool(
        (budget.limit_units_milli is not None and counters.used_milli > budget.limit_units_milli)
        or (budget.limit_usd_nano is not None and counters.used_nano > budget.limit_usd_nano)
    )


def percent_text(used: int, limit: int) -> str:
    return str((Decimal(used) * 100 / Decimal(limit)).quantize(Decimal("0.01"))) if limit else ""


def budget_event(
    kind: AlertKind,
    budget: Budget,
    window: Window,
    counters: Counters,
    limit_kind: str,
    at: int,
    key: str,
    threshold: int | None,
) -> AlertEvent:
    if limit_kind == "units":
        limit, used, held = budget.limit_units_milli or 0, counters.used_milli, counters.held_milli
        fmt: Callable[[int], str] = lambda v: units_text(v)  # noqa: E731
        human: Callable[[int], str] = lambda v: f"{format_units(v)} units"  # noqa: E731
    else:
        limit, used, held = budget.limit_usd_nano or 0, counters.used_nano, counters.held_nano
        fmt = lambda v: usd_text(v)  # noqa: E731
        human = format_usd
    percent = percent_text(used, limit)
    what = f"reached {threshold}%" if kind is AlertKind.THRESHOLD else "is exhausted"
    message = (
        f"budget '{budget.name}' ({budget.scope.describe()}, {budget.period.value}) {what}: "
        f"{human(used)} of {human(limit)} used ({percent}%), {human(held)} of it held by running jobs"
    )
    suffix = f":{threshold}" if threshold is not None else ""
    return AlertEvent(
        kind=kind,
        message=message,
        dedupe_key=f"{kind.value}:{budget.id}:{window.start_us}{suffix}",
        budget=budget.name,
        scope=budget.scope.describe(),
        period=budget.period.value,
        window_start=window.start.isoformat(),
        window_end=window.end.isoformat() if window.end else "",
        limit_kind=limit_kind,
        limit=fmt(limit),
        used=fmt(used),
        held=fmt(held),
        percent=percent,
        threshold=threshold,
        reservation_id=key,
        created_at=from_micros(at).isoformat(),
    )


def event_from_payload(event_id: int, payload: str) -> AlertEvent:
    data = json.loads(payload)
    return AlertEvent(
        id=event_id,
        kind=AlertKind(data["kind"]),
        message=data["message"],
        dedupe_key=data["dedupe_key"],
        budget=data.get("budget", ""),
        scope=data.get("scope", ""),
        period=data.get("period", ""),
        window_start=data.get("window_start", ""),
        window_end=data.get("window_end", ""),
        limit_kind=data.get("limit_kind", ""),
        limit=data.get("limit", ""),
        used=data.get("used", ""),
        held=data.get("held", ""),
        percent=data.get("percent", ""),
        threshold=data.get("threshold"),
        reservation_id=data.get("reservation_id", ""),
        created_at=data.get("created_at", ""),
    )
