"""Read-side queries over the ledger: usage by any grouping over any period, exact to the microsecond.

Every range query of the product (usage, reports, forecasts, the dashboard and admin API, reconcile)
goes through :func:`usage`: the quarter-hour roll-up for the whole quarter hours of the range, the
reservations themselves for the partial quarter hours at its edges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.records import UsageRow
from kling_budget.ledger.rows import BUCKET_MICROS
from kling_budget.windows import Period, from_micros, to_micros, window_at, zone

__all__ = ["GROUPS", "hour_label", "split_range", "usage"]

_ATTRIBUTE_COLUMNS = {
    "project": "project",
    "user": "user_id",
    "api_key": "api_key",
    "model": "model",
    "pack_type": "pack_type",
}
_TIME_GROUPS = ("hour", "day", "week", "month")
GROUPS = (*_ATTRIBUTE_COLUMNS, "tag", *_TIME_GROUPS)


def hour_label(instant: datetime, tz_name: str) -> str:
    """The local hour ``instant`` falls in, as an ISO 8601 timestamp with its offset (``2026-10-25T02:00+01:00``):
    the two hours a DST change repeats have different labels."""
    local = instant.astimezone(zone(tz_name))
    return local.replace(minute=0, second=0, microsecond=0).isoformat(timespec="minutes")


def _time_label(group: str, bucket: int, tz_name: str, week_start: int) -> str:
    instant = from_micros(bucket)
    if group == "hour":
        return hour_label(instant, tz_name)
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
    """Committed and held spend of the jobs reserved in ``[start, end)``, grouped by ``group_by``.

    Args:
        group_by: any of project, user, api_key, model, pack_type, tag, hour, day, week, month.
        timezone: IANA zone in which hours, days, weeks and months are cut.
        filters: exact matches on project, user, api_key, model, pack_type or tag.

    Jobs count in the period in which they were reserved. The figures are exact for any ``start`` and
    ``end``, to the microsecond: whole quarter hours come from the usage roll-up, the partial quarter hours
    at either edge from the reservations themselves (see :func:`split_range`). Time groups are exact for
    every zone in use because the roll-up is kept per quarter hour.
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
    low, high = to_micros(start), to_micros(end)
    if "tag" in group_by or "tag" in filters:
        rows = backend.run(lambda conn: _from_reservations(conn, low, high, group_by, filters), write=False)
    else:
        rows = backend.run(
            lambda conn: _from_rollup(conn, low, high, group_by, filters, bool(time_groups)), write=False
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


def split_range(low: int, high: int) -> tuple[tuple[int, int] | None, list[tuple[int, int, int]]]:
    """``[low, high)`` (microseconds) as the whole roll-up buckets inside it and the partial pieces left over.

    Returns ``(whole, edges)``: ``whole`` is ``(first, last)`` with every bucket starting in ``[first, last)``
    wholly inside the range (``None`` if there is none); each edge is ``(from, to, bucket)``, a piece of the
    range inside the one bucket starting at ``bucket``, to be read from the reservations.
    """
    first = -(-low // BUCKET_MICROS) * BUCKET_MICROS  # the first bucket boundary at or after low
    last = high // BUCKET_MICROS * BUCKET_MICROS  # the last bucket boundary at or before high
    if first > last:  # the whole range lies inside one bucket
        return None, [(low, high, last)]
    edges = []
    if low < first:
        edges.append((low, first, first - BUCKET_MICROS))
    if last < high:
        edges.append((last, high, last))
    return ((first, last) if first < last else None), edges


# One job's contribution to the roll-up, from its reservation row: what ``_bucket_write`` adds up.
_RESERVATION_AMOUNTS = (
    "CASE WHEN state = 'committed' THEN actual_milli ELSE 0 END AS cm, "
    "CASE WHEN state = 'committed' THEN 0 ELSE units_milli END AS hm, "
    "CASE WHEN state = 'committed' THEN actual_nano ELSE 0 END AS cn, "
    "CASE WHEN state = 'committed' THEN 0 ELSE usd_nano END AS hn, "
    "CASE WHEN state = 'committed' THEN 1 ELSE 0 END AS j"
)


def _from_rollup(
    conn: Connection,
    low: int,
    high: int,
    group_by: Sequence[str],
    filters: Mapping[str, str],
    by_time: bool,
) -> list[tuple[list[tuple[str, str]], int, Sequence[Any]]]:
    """Whole quarter hours from ``usage_buckets``, the edges from ``reservations``, summed in one statement
    (one snapshot on every backend)."""
    columns = [_ATTRIBUTE_COLUMNS[g] for g in group_by if g in _ATTRIBUTE_COLUMNS]
    names = [g for g in group_by if g in _ATTRIBUTE_COLUMNS]
    conditions = "".join(f" AND {_ATTRIBUTE_COLUMNS[name]} = ?" for name in filters)
    filter_params = list(filters.values())
    selected = "".join(f"{c}, " for c in columns)
    parts: list[str] = []
    params: list[Any] = []
    whole, edges = split_range(low, high)
    if whole is not None:
        parts.append(
            f"SELECT {selected}bucket AS at, committed_milli AS cm, held_milli AS hm, committed_nano AS cn, "
            f"held_nano AS hn, jobs AS j FROM usage_buckets WHERE bucket >= ? AND bucket < ?{conditions}"
        )
        params += [whole[0], whole[1], *filter_params]
    for edge_low, edge_high, bucket in edges:
        parts.append(
            f"SELECT {selected}CAST(? AS BIGINT) AS at, {_RESERVATION_AMOUNTS} FROM reservations "
            f"WHERE reserved_at >= ? AND reserved_at < ? AND state IN ('held', 'submitted', 'committed')"
            f"{conditions}"
        )
        params += [bucket, edge_low, edge_high, *filter_params]
    keys = [*columns, "at"] if by_time else columns
    sql = (
        f"SELECT {selected}{'at' if by_time else '0'}, SUM(cm), SUM(hm), SUM(cn), SUM(hn), SUM(j) "
        f"FROM ({' UNION ALL '.join(parts)}) AS spans" + (f" GROUP BY {', '.join(keys)}" if keys else "")
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
    low: int,
    high: int,
    group_by: Sequence[str],
    filters: Mapping[str, str],
) -> list[tuple[list[tuple[str, str]], int, Sequence[Any]]]:
    """Tags are many-to-many, so grouping or filtering by tag reads the reservations themselves."""
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
