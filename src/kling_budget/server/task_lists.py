"""The list routes' reads of task ownership: a key's tasks and its committed tasks, newest first, lazily.

``POST /tasks`` (:mod:`kling_budget.server.task_routes`) and the billing ledgers (:mod:`kling_budget.server.account`)
page through a key's rows in the order a list cursor carries (:mod:`kling_budget.kling.paging`): newest
millisecond first, then the reservation id, so a page boundary inside one millisecond loses and repeats
nothing. Rows are read in chunks, each chunk its own read transaction; call from a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from kling_budget.ledger.backend import Backend, Connection, Row
from kling_budget.server.task_store import TASK_COLUMNS, TaskRow, task_row

__all__ = ["CommittedTask", "newest_committed", "newest_tasks"]


@dataclass(frozen=True, slots=True)
class CommittedTask:
    """A key's task whose reservation is committed: what the ledger booked for it, for the billing routes.

    Attributes:
        row: the ownership row (its ``data`` is Kling's last answer, with the charges Kling reported).
        model / pack_type: the reservation's model and pack type.
        units_milli: the units committed; ``usd_nano``: the dollars committed.
        committed_ms: when it was committed (Unix ms).
        params: the priced parameters (resolution, duration, sound ...).
    """

    row: TaskRow
    model: str
    pack_type: str
    units_milli: int
    usd_nano: int
    committed_ms: int
    params: dict[str, Any]


def _fetchall(sql: str, params: list[Any], conn: Connection) -> list[Row]:
    return conn.fetchall(sql, params)


def newest_tasks(
    backend: Backend,
    key_id: int,
    *,
    endpoint_prefixes: Sequence[str],
    start_ms: int,
    end_ms: int,
    after: tuple[int, str] | None = None,
    statuses: Sequence[str] | None = None,
    pack_types: Sequence[str] | None = None,
    chunk: int = 200,
) -> Iterator[tuple[int, str, TaskRow]]:
    """The key's visible tasks with a Kling task id on endpoints starting with ``endpoint_prefixes``, created
    in ``[start_ms, end_ms]``, newest first, after ``after`` (creation ms, reservation id), as
    ``(creation ms, reservation id, row)``; read lazily, ``chunk`` rows per transaction."""
    paths = " OR ".join("g.endpoint LIKE ?" for _ in endpoint_prefixes)
    where = f"g.key_id = ? AND g.task_id IS NOT NULL AND g.status <> 'rejected' AND ({paths})"
    params: list[Any] = [key_id, *(prefix + "%" for prefix in endpoint_prefixes)]
    for column, values in (("g.status", statuses), ("r.pack_type", pack_types)):
        if values is not None:
            where += f" AND {column} IN ({', '.join('?' for _ in values)})"
            params.extend(values)
    for found in _newest(backend, "g.created_at", where, params, start_ms, end_ms, after, chunk, ""):
        row = task_row(found)
        yield row.created_at // 1000, row.reservation_id, row


def newest_committed(
    backend: Backend,
    key_id: int,
    *,
    start_ms: int,
    end_ms: int,
    after: tuple[int, str] | None = None,
    pack_types: Sequence[str] | None = None,
    chunk: int = 200,
) -> Iterator[CommittedTask]:
    """The key's committed tasks with a Kling task id (both designs), committed in ``[start_ms, end_ms]``,
    most recently committed first, after ``after`` (commit ms, reservation id); read lazily."""
    where = "g.key_id = ? AND g.task_id IS NOT NULL AND r.state = 'committed'"
    params: list[Any] = [key_id]
    if pack_types is not None:
        where += f" AND r.pack_type IN ({', '.join('?' for _ in pack_types)})"
        params.extend(pack_types)
    extra = ", r.model, r.pack_type, r.actual_milli, r.actual_nano, r.resolved_at, r.detail"
    for found in _newest(backend, "r.resolved_at", where, params, start_ms, end_ms, after, chunk, extra):
        model, pack_type, units, usd, resolved, detail = found[-6:]
        try:
            priced = json.loads(detail or "{}").get("params")
        except (ValueError, AttributeError):
            priced = None
        yield CommittedTask(
            row=task_row(found[:-6]),
            model=str(model or ""),
            pack_type=str(pack_type),
            units_milli=int(units or 0),
            usd_nano=int(usd or 0),
            committed_ms=int(resolved) // 1000,
            params=priced if isinstance(priced, dict) else {},
        )


def _newest(
    backend: Backend,
    time_column: str,
    where: str,
    params: list[Any],
    start_ms: int,
    end_ms: int,
    after: tuple[int, str] | None,
    chunk: int,
    extra_columns: str,
) -> Iterator[Row]:
    """Rows matching ``where`` with ``time_column`` (µs) in ``[start_ms, end_ms]``, newest first by
    (millisecond, reservation id) — the order and the position a list cursor carries — in chunks."""
    select = (
        f"SELECT {TASK_COLUMNS}{extra_columns}, {time_column} FROM gateway_tasks g "
        f"JOIN reservations r ON r.id = g.reservation_id WHERE {where} AND {time_column} >= ? AND {time_column} < ?"
    )
    order = f" ORDER BY {time_column} / 1000 DESC, g.reservation_id DESC LIMIT ?"
    window = [start_ms * 1000, (end_ms + 1) * 1000]
    position = after
    while True:
        sql, args = select, [*params, *window]
        if position is not None:
            # before the position's millisecond, or within it with a smaller reservation id
            sql += f" AND ({time_column} < ? OR ({time_column} < ? AND g.reservation_id < ?))"
            args += [position[0] * 1000, (position[0] + 1) * 1000, position[1]]
        rows = backend.run(partial(_fetchall, sql + order, [*args, chunk]), write=False)
        for found in rows:
            yield found[:-1]
        if len(rows) < chunk:
            return
        position = (int(rows[-1][-1]) // 1000, str(rows[-1][0]))
