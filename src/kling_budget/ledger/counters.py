"""The budget-window counter updates of the reserve and commit paths, as SQL.

One conditional ``UPDATE`` per window is the rule on PostgreSQL, where each statement takes row locks and
the windows must be locked one by one in lock order (see ``ledger/locks.py``). With one writer at a time
(SQLite) there are no row locks to order, so every window of a job is updated by one statement
(``UPDATE … FROM (VALUES …)``): fewer statements per operation on the path every job takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from kling_budget.budgets import Budget, Counters
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.rows import COUNTER_COLUMNS
from kling_budget.windows import Window

__all__ = ["HoldRefused", "add_held", "hold_all", "hold_limits", "one_statement", "settle_all"]

Target = tuple[Budget, Window, int]
"""A budget, the job's window in it and the units the job counts against it."""


class HoldRefused(Exception):
    """A window of the one-statement hold had no room: the transaction must be rolled back and the job
    reserved window by window (which finds the denial, or the room a concurrent release made)."""


def one_statement(conn: Connection) -> bool:
    """Whether every window of a job may be updated by one statement (no row locks to order: SQLite)."""
    return conn.dialect == "sqlite"


def _add_held_sql(check_units: bool, check_usd: bool) -> str:
    conditions = ["budget_id = ?", "window_start = ?"]
    if check_units:
        conditions.append("committed_milli + held_milli + ? <= ?")
    if check_usd:
        conditions.append("committed_nano + held_nano + ? <= ?")
    return (
        "UPDATE budget_windows SET held_milli = held_milli + ?, held_nano = held_nano + ? "
        f"WHERE {' AND '.join(conditions)} RETURNING {COUNTER_COLUMNS}"
    )


_ADD_HELD = {(units, usd): _add_held_sql(units, usd) for units in (False, True) for usd in (False, True)}


def hold_limits(budget: Budget, units_delta: int, usd_nano: int) -> tuple[int | None, int | None]:
    """The limits a job must fit in (``None``: not checked): hard budgets, on the amounts the job adds."""
    if not budget.hard:
        return None, None
    units = budget.limit_units_milli if units_delta > 0 else None
    usd = budget.limit_usd_nano if usd_nano > 0 else None
    return units, usd


def add_held(conn: Connection, budget: Budget, window: Window, units_delta: int, usd_nano: int) -> Counters | None:
    """Hold a job's price in one window if it fits; the counters after, or ``None`` when it does not fit
    (or the window row does not exist)."""
    limit_units, limit_usd = hold_limits(budget, units_delta, usd_nano)
    params: list[Any] = [units_delta, usd_nano, budget.id, window.start_us]
    if limit_units is not None:
        params += [units_delta, limit_units]
    if limit_usd is not None:
        params += [usd_nano, limit_usd]
    row = conn.fetchone(_ADD_HELD[limit_units is not None, limit_usd is not None], params)
    return None if row is None else Counters(*row)


@lru_cache(maxsize=32)
def _hold_all_sql(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)
    return (
        "UPDATE budget_windows SET held_milli = held_milli + v.column3, held_nano = held_nano + v.column4 "
        f"FROM (VALUES {values}) AS v "
        "WHERE budget_windows.budget_id = v.column1 AND budget_windows.window_start = v.column2 "
        "AND (v.column5 IS NULL OR committed_milli + held_milli + v.column3 <= v.column5) "
        "AND (v.column6 IS NULL OR committed_nano + held_nano + v.column4 <= v.column6) "
        f"RETURNING budget_id, {COUNTER_COLUMNS}"
    )


def hold_all(conn: Connection, targets: Sequence[Target], usd_nano: int) -> list[Counters]:
    """Hold a job's price in every target window with one statement; the counters after, in target order.

    Raises:
        HoldRefused: a window had no room (or no row); other windows may have been updated, so the
            caller's transaction must be rolled back.
    """
    params: list[Any] = []
    for budget, window, units_delta in targets:
        params += [budget.id, window.start_us, units_delta, usd_nano, *hold_limits(budget, units_delta, usd_nano)]
    rows = conn.fetchall(_hold_all_sql(len(targets)), params)
    if len(rows) != len(targets):
        raise HoldRefused
    after = {row[0]: Counters(*row[1:]) for row in rows}
    return [after[budget.id] for budget, _, _ in targets]


@lru_cache(maxsize=32)
def _settle_all_sql(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return (
        "UPDATE budget_windows SET held_milli = held_milli - v.column3, committed_milli = committed_milli + "
        "v.column4, overage_milli = overage_milli + v.column5, held_nano = held_nano - v.column6, "
        "committed_nano = committed_nano + v.column7, overage_nano = overage_nano + v.column8 "
        f"FROM (VALUES {values}) AS v "
        "WHERE budget_windows.budget_id = v.column1 AND budget_windows.window_start = v.column2 "
        f"RETURNING budget_id, {COUNTER_COLUMNS}"
    )


def settle_all(
    conn: Connection, moves: Sequence[tuple[int | None, int, int, int, int, int, int, int]]
) -> dict[int, Counters]:
    """Apply commit moves ``(budget id, window start, held units, actual units, overage units, held usd,
    actual usd, overage usd)`` with one statement; the counters after by budget id (a window without a
    row is skipped: its first job will fold this commit in)."""
    rows = conn.fetchall(_settle_all_sql(len(moves)), [value for move in moves for value in move])
    return {row[0]: Counters(*row[1:]) for row in rows}
