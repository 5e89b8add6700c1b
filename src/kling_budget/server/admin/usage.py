"""``GET /usage`` (spend grouped by attribute or time) and ``GET /usage/series`` (cumulative spend over time
against the budget lines that apply)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.budgets import BudgetStatus
from kling_budget.ledger import UsageRow
from kling_budget.ledger.queries import GROUPS, hour_label
from kling_budget.money import units_text, usd_text
from kling_budget.server.admin._base import Operations, bad, ok
from kling_budget.server.admin._params import ATTRIBUTES, Query, Range, model_filter, scope_of, time_range, time_zone
from kling_budget.server.state import GatewayState
from kling_budget.types import PackType
from kling_budget.windows import Period, window_at, zone

MAX_SERIES_POINTS = 800

op = Operations()

_USAGE_FILTERS = (*ATTRIBUTES, "pack_type")
_PERIOD_OF_RANGE = {"today": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}


def _usage_filters(state: GatewayState, query: Query) -> dict[str, str]:
    """The attribute and pack type filters given, checked; a model by its canonical name."""
    filters = query.filters(_USAGE_FILTERS)
    _check_pack_type(filters)
    return model_filter(state, filters)


def _check_pack_type(filters: Mapping[str, str]) -> None:
    pack = filters.get("pack_type")
    if pack is not None and pack not in {p.value for p in PackType}:
        bad(f"unknown pack_type {pack[:40]!r}; accepted: {', '.join(p.value for p in PackType)}")


@dataclass(slots=True)
class _Amounts:
    """Spend of one group, with units kept per pack type: a video unit and an image unit are not the same."""

    committed_milli: dict[str, int] = field(default_factory=dict)
    held_milli: dict[str, int] = field(default_factory=dict)
    committed_nano: int = 0
    held_nano: int = 0
    jobs: int = 0

    def add(self, row: UsageRow, pack: str) -> None:
        self.committed_milli[pack] = self.committed_milli.get(pack, 0) + row.committed_milli
        self.held_milli[pack] = self.held_milli.get(pack, 0) + row.held_milli
        self.committed_nano += row.committed_nano
        self.held_nano += row.held_nano
        self.jobs += row.jobs

    def to_dict(self) -> dict[str, Any]:
        packs = sorted(self.committed_milli)
        one = len(packs) <= 1  # units of different pack types are not added up
        return {
            "committed_units": units_text(sum(self.committed_milli.values())) if one else None,
            "held_units": units_text(sum(self.held_milli.values())) if one else None,
            "units_by_pack": {
                p: {"committed": units_text(self.committed_milli[p]), "held": units_text(self.held_milli[p])}
                for p in packs
            },
            "committed_usd": usd_text(self.committed_nano),
            "held_usd": usd_text(self.held_nano),
            "jobs": self.jobs,
        }


def _fold(rows: Iterable[UsageRow], groups: list[str]) -> tuple[list[tuple[dict[str, str], _Amounts]], _Amounts]:
    """Rows read with ``pack_type`` among their groups, folded into ``groups``; and the totals."""
    folded: dict[tuple[str, ...], tuple[dict[str, str], _Amounts]] = {}
    totals = _Amounts()
    for row in rows:
        group = {g: row.group[g] for g in groups}
        pack = row.group["pack_type"]
        key = tuple(group[g] for g in groups)
        if key not in folded:
            folded[key] = (group, _Amounts())
        folded[key][1].add(row, pack)
        totals.add(row, pack)
    return list(folded.values()), totals


@op("GET", "/usage")
async def _usage(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("group_by", "period", "from", "to", "timezone", "week_start", *_USAGE_FILTERS))
    tz_name = time_zone(query.text("timezone"))
    week_start = query.integer("week_start", 0, 0, 6)
    groups = [g.strip() for g in (query.text("group_by") or "project").split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if not groups or unknown or len(set(groups)) != len(groups) or len(groups) > 4:
        bad(f"group_by takes 1 to 4 distinct names from: {', '.join(GROUPS)}")
    filters = _usage_filters(state, query)
    ledger = state.tracker.ledger
    span = time_range(query, ledger.now(), tz_name)

    read_by = groups if "pack_type" in groups else [*groups, "pack_type"]

    def work() -> list[UsageRow]:
        return ledger.usage(
            start=span.start, end=span.end, group_by=read_by, timezone=tz_name, week_start=week_start, filters=filters
        )

    folded, totals = _fold(await state.run_sync(work), groups)
    return ok(
        {
            "start": span.start.isoformat(),
            "end": span.end.isoformat(),
            "period": span.period,
            "timezone": tz_name,
            "group_by": groups,
            "filters": filters,
            "rows": [{"group": group, **amounts.to_dict()} for group, amounts in folded],
            "totals": totals.to_dict(),
        }
    )


def _buckets(span: Range, bucket: str, tz_name: str) -> list[tuple[str, datetime]]:
    """The labels of every hour or day in ``span`` as :func:`ledger.queries.usage` writes them, in order."""
    tz = zone(tz_name)
    labels: dict[str, datetime] = {}
    if bucket == "hour":
        step = timedelta(minutes=15)  # the roll-up's granularity: exact for every offset in use
        at = span.start
        while at < span.end:
            labels.setdefault(hour_label(at, tz_name), at)
            at += step
    else:
        day = span.start.astimezone(tz).date()
        last = (span.end - timedelta(microseconds=1)).astimezone(tz).date()
        while day <= last:
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
            labels.setdefault(day.isoformat(), max(span.start, window_at(Period.DAILY, noon, tz_name).start))
            day += timedelta(days=1)
    return list(labels.items())


@op("GET", "/usage/series")
async def _usage_series(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("period", "from", "to", "timezone", "bucket", *_USAGE_FILTERS))
    tz_name = time_zone(query.text("timezone"))
    filters = _usage_filters(state, query)
    ledger = state.tracker.ledger
    now = ledger.now()
    span = time_range(query, now, tz_name)
    bucket = query.text("bucket") or ("hour" if span.end - span.start <= timedelta(days=2) else "day")
    if bucket not in ("hour", "day"):
        bad(f"bucket must be hour or day, got {bucket[:40]!r}")
    hours = (span.end - span.start) / timedelta(hours=1)
    if (hours if bucket == "hour" else hours / 24) > MAX_SERIES_POINTS:
        bad(f"the period has more than {MAX_SERIES_POINTS} {bucket}s; use a shorter period or bucket=day")
    buckets = _buckets(span, bucket, tz_name)

    def work() -> tuple[list[UsageRow], list[BudgetStatus]]:
        rows = ledger.usage(
            start=span.start, end=span.end, group_by=[bucket, "pack_type"], timezone=tz_name, filters=filters
        )
        return rows, ledger.statuses(now=now)

    rows, statuses = await state.run_sync(work)
    folded, totals = _fold(rows, [bucket])
    by_label = {group[bucket]: amounts for group, amounts in folded}
    # Units of different pack types are not added up: with more than one in the series, only per pack.
    one_pack = len({r.group["pack_type"] for r in rows}) <= 1
    points = []
    committed_milli = held_milli = committed_nano = held_nano = 0
    for label, start in buckets:
        amounts = by_label.get(label, _Amounts())
        committed_milli += sum(amounts.committed_milli.values())
        held_milli += sum(amounts.held_milli.values())
        committed_nano += amounts.committed_nano
        held_nano += amounts.held_nano
        shown = amounts.to_dict()
        points.append(
            {
                "label": label,
                "start": start.isoformat(),
                "committed_usd": shown["committed_usd"],
                "held_usd": shown["held_usd"],
                "committed_units": shown["committed_units"] if one_pack else None,
                "held_units": shown["held_units"] if one_pack else None,
                "units_by_pack": shown["units_by_pack"],
                "jobs": amounts.jobs,
                "cumulative_committed_usd": usd_text(committed_nano),
                "cumulative_held_usd": usd_text(held_nano),
                "cumulative_usd": usd_text(committed_nano + held_nano),
                "cumulative_committed_units": units_text(committed_milli) if one_pack else None,
                "cumulative_held_units": units_text(held_milli) if one_pack else None,
                "cumulative_units": units_text(committed_milli + held_milli) if one_pack else None,
            }
        )
    wanted = scope_of(filters)
    lines = [
        {
            "budget": s.budget.name,
            "period": s.budget.period.value,
            "limit_usd": usd_text(s.budget.limit_usd_nano),
            "limit_units": units_text(s.budget.limit_units_milli),
            "unit_pack": s.budget.unit_pack.value,
            "resets_at": s.window.end.isoformat() if s.window.end else None,
        }
        for s in statuses
        if s.budget.scope == wanted and _PERIOD_OF_RANGE.get(span.period) is s.budget.period
    ]
    return ok(
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
            "totals": totals.to_dict(),
        }
    )
