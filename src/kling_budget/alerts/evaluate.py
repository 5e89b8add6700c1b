"""Alerts that no single ledger operation can see, and builders for alerts other components raise.

:func:`evaluate_alerts` looks at every budget and pack at ``now`` and stores, through
:meth:`Ledger.emit_alert`, at most one event per dedupe key:

* ``forecast:<budget id>:<window start>`` — the burn rate says the budget runs out before its window
  ends (once per window, only once the forecast is confident and the budget is not yet exhausted);
* ``pack_low:<pack id>:<percent>`` — an active pack has at most ``pack_low_percent`` of its units left;
* ``pack_expiring:<pack id>`` — a pack expires within ``expiring_within`` with units unused (the message
  says how many will be left at the current rate).

Call it periodically (``kling-budget alerts check``, the gateway, a cron job); running it twice is
harmless. :func:`upstream_pack_exhausted_event` and :func:`reconcile_drift_event` build the Kling 1102 and
reconcile-drift events with their dedupe keys, for the components that detect them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from kling_budget.forecast import forecast
from kling_budget.money import format_units, units_text
from kling_budget.types import AlertEvent, AlertKind
from kling_budget.windows import Period, to_micros

if TYPE_CHECKING:
    from kling_budget.ledger import Ledger
    from kling_budget.ledger.records import Pack

__all__ = ["evaluate_alerts", "reconcile_drift_event", "upstream_pack_exhausted_event"]

DEFAULT_PACK_LOW_PERCENT = 20
DEFAULT_EXPIRING_WITHIN = timedelta(days=7)
_UPSTREAM_INTERVAL = timedelta(hours=1)


def _percent(used: int, limit: int) -> str:
    return str((Decimal(used) * 100 / Decimal(limit)).quantize(Decimal("0.01"))) if limit else ""


def evaluate_alerts(
    ledger: Ledger,
    *,
    now: datetime | None = None,
    pack_low_percent: int = DEFAULT_PACK_LOW_PERCENT,
    expiring_within: timedelta = DEFAULT_EXPIRING_WITHIN,
) -> list[AlertEvent]:
    """Store the forecast and pack alerts due at ``now``; return the ones that are new.

    Args:
        ledger: the ledger to read budgets and packs from and to store events in.
        now: the instant to evaluate at (default: the ledger's clock).
        pack_low_percent: warn when an active pack has at most this share of its units left.
        expiring_within: warn when a pack with unused units expires within this time.
    """
    at = now or ledger.now()
    candidates = [*_forecast_events(ledger, at), *_pack_events(ledger, at, pack_low_percent, expiring_within)]
    new = []
    for event in candidates:
        stored = ledger.emit_alert(event, now=at)
        if stored is not None:
            new.append(stored)
    return new


def _forecast_events(ledger: Ledger, at: datetime) -> list[AlertEvent]:
    events = []
    for status in ledger.statuses(now=at):
        budget = status.budget
        if budget.period is Period.TOTAL:
            continue
        fc = forecast(budget, status.counters, at, window=status.window)
        if not fc.confident or fc.window_end is None:
            continue
        for limit in fc.limits:
            if limit.exhausted or not limit.will_exceed:
                continue
            held = status.counters.held_milli if limit.limit_kind == "units" else status.counters.held_nano
            events.append(
                AlertEvent(
                    kind=AlertKind.FORECAST,
                    message=f"budget '{budget.name}' ({budget.scope.describe()}, {fc.period}) is forecast to be "
                    f"exceeded: {fc.describe()}",
                    dedupe_key=f"forecast:{budget.id}:{to_micros(fc.window_start)}",
                    budget=budget.name,
                    scope=budget.scope.describe(),
                    period=fc.period,
                    window_start=fc.window_start.isoformat(),
                    window_end=fc.window_end.isoformat(),
                    limit_kind=limit.limit_kind,
                    limit=limit.decimal(limit.limit) or "",
                    used=limit.decimal(limit.used) or "",
                    held=limit.decimal(held) or "",
                    percent=str(limit.percent(limit.used)),
                    created_at=at.isoformat(),
                )
            )
            break  # one forecast alert per budget window, on its first limit projected to run out
    return events


def _pack_rate_per_us(ledger: Ledger, pack_type: str, at: datetime) -> Decimal:
    span = timedelta(days=7)
    through = at + timedelta(microseconds=1)  # jobs reserved at ``at`` itself count
    rows = ledger.usage(start=at - span, end=through, group_by=("pack_type",), filters={"pack_type": pack_type})
    used = sum(r.committed_milli + r.held_milli for r in rows)
    return Decimal(used) / Decimal(span // timedelta(microseconds=1))


def _pack_event(kind: AlertKind, pack: Pack, message: str, dedupe_key: str, at: datetime) -> AlertEvent:
    used = pack.committed_milli + pack.held_milli
    return AlertEvent(
        kind=kind,
        message=message,
        dedupe_key=dedupe_key,
        scope=f"pack {pack.name} ({pack.pack_type.value})",
        window_start=pack.starts_at.isoformat(),
        window_end=pack.expires_at.isoformat() if pack.expires_at else "",
        limit_kind="units",
        limit=units_text(pack.units_milli),
        used=units_text(used),
        held=units_text(pack.held_milli),
        percent=_percent(used, pack.units_milli),
        created_at=at.isoformat(),
    )


def _pack_events(ledger: Ledger, at: datetime, low_percent: int, within: timedelta) -> list[AlertEvent]:
    events = []
    for pack in ledger.list_packs():
        if not pack.active_at(at):
            continue
        remaining = pack.remaining_milli
        if remaining * 100 <= low_percent * pack.units_milli:
            events.append(
                _pack_event(
                    AlertKind.PACK_LOW,
                    pack,
                    f"pack '{pack.name}' ({pack.pack_type.value}) is running low: {format_units(remaining)} of "
                    f"{format_units(pack.units_milli)} units left",
                    f"pack_low:{pack.id}:{low_percent}",
                    at,
                )
            )
        if pack.expires_at is not None and remaining > 0 and pack.expires_at - at <= within:
            rate = _pack_rate_per_us(ledger, pack.pack_type.value, at)
            left_us = Decimal((pack.expires_at - at) // timedelta(microseconds=1))
            unused = max(0, remaining - int(rate * left_us))
            if unused <= 0:
                continue
            events.append(
                _pack_event(
                    AlertKind.PACK_EXPIRING,
                    pack,
                    f"pack '{pack.name}' ({pack.pack_type.value}) expires {pack.expires_at.isoformat()} with "
                    f"{format_units(remaining)} units left; at the last 7 days' rate about "
                    f"{format_units(unused)} units will go unused",
                    f"pack_expiring:{pack.id}",
                    at,
                )
            )
    return events


def upstream_pack_exhausted_event(
    *,
    at: datetime,
    pack_type: str = "",
    task_id: str = "",
    reservation_id: str = "",
    detail: str = "",
) -> AlertEvent:
    """The alert for Kling answering 1102 (resource pack exhausted or expired); at most one per pack
    type per hour. Store it with :meth:`Ledger.emit_alert`."""
    bucket = to_micros(at) // (_UPSTREAM_INTERVAL // timedelta(microseconds=1))
    what = f" for {pack_type} jobs" if pack_type else ""
    extra = f" (task {task_id})" if task_id else ""
    reason = f": {detail}" if detail else ""
    return AlertEvent(
        kind=AlertKind.UPSTREAM_PACK_EXHAUSTED,
        message=f"Kling reports the resource pack exhausted or expired{what} (code 1102){extra}{reason}",
        dedupe_key=f"upstream_pack_exhausted:{pack_type or 'any'}:{bucket}",
        scope=f"kling account{f' ({pack_type})' if pack_type else ''}",
        reservation_id=reservation_id,
        created_at=at.isoformat(),
    )


def reconcile_drift_event(
    *,
    at: datetime,
    period_label: str,
    ledger_units_milli: int,
    kling_units_milli: int,
    pack_type: str = "",
) -> AlertEvent:
    """The alert for the ledger's spend and Kling's own balance disagreeing over ``period_label`` (e.g.
    ``2026-03-10``); once per period and pack type. Store it with :meth:`Ledger.emit_alert`."""
    drift = kling_units_milli - ledger_units_milli
    sign = "+" if drift > 0 else ""
    return AlertEvent(
        kind=AlertKind.RECONCILE_DRIFT,
        message=f"reconcile drift over {period_label}{f' ({pack_type})' if pack_type else ''}: Kling charged "
        f"{format_units(kling_units_milli)} units, the ledger has {format_units(ledger_units_milli)} units "
        f"({sign}{format_units(drift)} units)",
        dedupe_key=f"reconcile_drift:{pack_type or 'all'}:{period_label}",
        scope=f"kling account{f' ({pack_type})' if pack_type else ''}",
        limit_kind="units",
        limit=units_text(kling_units_milli),
        used=units_text(ledger_units_milli),
        created_at=at.isoformat(),
    )
