"""Read-side queries over the ledger: usage by any grouping over a period, from the quarter-hour roll-up."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.records import UsageRow
from kling_budget.windows import Period, from_micros, to_micros, window_at, zone

__all__ = ["GROUPS", "usage"]

_ATTRIBUTE_COLUMNS = {
    "project": "project",
    "user": "user_id",
    "api_key": "api_key",
    "model": "model",
    "pack_type": "pack_type",
}
_TIME_GROUPS = ("hour", "day", "week", "month")
GROUPS = (*_ATTRIBUTE_COLUMNS, "tag", *_TIME_GROUPS)


def _time_label(group: str, bucket: int, tz_name: str, week_start: int) -> str:
    instant = from_micros(bucket)
    if group == "hour":
        return instant.astimezone(zone(tz_name)).strftime("%Y-%m-%dT%H:00")
    period = {"day": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}[group]
    start = window_at(period, instant, tz_name, week_start).start.astimezone(zone(tz_name))
    return start.strftime("%Y-%m") if group == "month" else start.strftime("%Y-%m-%d")


def usage(
    backend: Backend,
    *,
    start: datetime,
    end: datetime,
    group_by: Sequence[str] = ("project",),
    timezone: str = "UTC",
    week_start: int = 0,
    filters: Mapping[str, str] | None = None,
) -> list[UsageRow]:
    """Committed and held spend in ``[start, end)`` grouped by ``group_by``.

    Args:
        group_by: any of project, user, api_key, model, pack_type, tag, hour, day, week, month.
        timezone: IANA zone in which hours, days, weeks and months are cut.
        filters: exact matches on project, user, api_key, model, pack_type or tag.

    Jobs count in the period in which they were reserved. Time groups are exact for every zone because
    the roll-up is kept per quarter hour.
    """
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise ConfigurationError(f"cannot group usage by {', '.join(unknown)}; accepted: {', '.join(GROUPS)}")
    filters = dict(filters or {})
    bad = [k for k in filters if k not in (*_ATTRIBUTE_COLUMNS, "tag")]
    if bad:
        raise ConfigurationError(
            f"cannot filter usage by {', '.join(bad)}; accepted: {', '.join((*_ATTRIBUTE_COLUMNS, 'tag'))}"
        )
    if end <= start:
        raise ConfigurationError("the usage period must end after it starts")
    zone(timezone)
    time_groups = [g for g in group_by if g in _TIME_GROUPS]
    if "tag" in group_by or "tag" in filters:
        rows = backend.run(lambda conn: _from_reservations(conn, start, end, group_by, filters), write=False)
    else:
        rows = backend.run(
            lambda conn: _from_buckets(conn, start, end, group_by, filters, bool(time_groups)), write=False
        )
    totals: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for group, bucket, amounts in rows:
        labels = dict(group)
        for time_group in time_groups:
            labels[time_group] = _time_label(time_group, bucket, timezone, week_start)
        key = tuple((g, labels[g]) for g in group_by)
        total = totals[key]
        for i, amount in enumerate(amounts):
            total[i] += int(amount)
    return [
        UsageRow(dict(key), committed_milli=t[0], held_milli=t[1], committed_nano=t[2], held_nano=t[3], jobs=t[4])
        for key, t in sorted(totals.items())
        if any(t)  # groups whose jobs were all released show nothing
    ]


def _bounds(start: datetime, end: datetime) -> tuple[int, int]:
    return to_micros(start), to_micros(end)


def _from_buckets(
    conn: Connection,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    filters: Mapping[str, str],
    by_time: bool,
) -> list[tuple[list[tuple[str, str]], int, Sequence[Any]]]:
    low, high = _bounds(start, end)
    columns = [_ATTRIBUTE_COLUMNS[g] for g in group_by if g in _ATTRIBUTE_COLUMNS]
    names = [g for g in group_by if g in _ATTRIBUTE_COLUMNS]
    select = [*columns, "bucket" if by_time else "0"]
    where = ["bucket >= ?", "bucket < ?"]
    params: list[Any] = [low, high]
    for name, value in filters.items():
        where.append(f"{_ATTRIBUTE_COLUMNS[name]} = ?")
        params.append(value)
    group_clause = ", ".join([*columns, "bucket"] if by_time else columns)
    sql = (
        f"SELECT {', '.join(select)}, SUM(committed_milli), SUM(held_milli), SUM(committed_nano), "
        f"SUM(held_nano), SUM(jobs) FROM usage_buckets WHERE {' AND '.join(where)}"
        + (f" GROUP BY {group_clause}" if group_clause else "")
    )
    result: list[tuple[list[tuple[str, str]], int, Sequence[Any]]] = []
    for row in conn.fetchall(sql, params):
        group = list(zip(names, (str(v) for v in row[: len(names)]), strict=True))
        amounts = row[len(names) + 1 :]
        if amounts[4] is None:  # aggregate over no rows
            continue
        result.append((group, int(row[len(names)]), amounts))
    return result


def _from_reservations(
    conn: Connection,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    filters: Mapping[str, str],
) -> list[tuple[list[tuple[str, str]], int, Sequence[Any]]]:
    """Tags are many-to-many, so grouping or filtering by tag reads the reservations themselves."""
    low, high = _bounds(start, end)
    where = ["reserved_at >= ?", "reserved_at < ?", "state IN ('held', 'submitted', 'committed')"]
    params: list[Any] = [low, high]
    for name, value in filters.items():
        if name == "tag":
            continue
        where.append(f"{_ATTRIBUTE_COLUMNS[name]} = ?")
        params.append(value)
    rows = conn.fetchall(
        "SELECT project, user_id, api_key, model, pack_type, tags, reserved_at, state, units_milli, usd_nano, "
        f"actual_milli, actual_nano FROM reservations WHERE {' AND '.join(where)}",
        params,
    )
    wanted_tag = filters.get("tag")
    result: list[tuple[list[tuple[str, str]], int, Sequence[Any]]] = []
    for (
        project,
        user,
        api_key,
        model,
        pack_type,
        tags,
        reserved_at,
        state,
        units,
        usd,
        actual,
        actual_nano,
    ) in rows:
        tag_list = [t for t in tags.split(",") if t]
        if wanted_tag is not None and wanted_tag not in tag_list:
            continue
        values = {
            "project": project,
            "user": user,
            "api_key": api_key,
            "model": model,
            "pack_type": pack_type,
        }
        committed = state == "committed"
        amounts = (
            actual if committed else 0,
            0 if committed else units,
            actual_nano if committed else 0,
            0 if committed else usd,
            1 if committed else 0,
        )
        for tag in (tag_list or [""]) if "tag" in group_by else [None]:
            group = [(g, tag if g == "tag" else values[g]) for g in group_by if g in values or g == "tag"]
            result.append(([(g, str(v)) for g, v in group], int(reserved_at), amounts))
    return result
