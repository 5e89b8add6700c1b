"""The budget-window counter updates of the reserve and commit paths, as SQL.

One conditional ``UPDATE … RETURNING`` per window is the rule on PostgreSQL, where each statement takes row
locks and the windows must be locked one by one in lock order (see ``ledger/locks.py``). With one writer at
a time (SQLite) there are no row locks to order, and the counters after the moves are read back by one
``SELECT`` for every window of the job. SQLite buffers the rows of a ``RETURNING`` clause, and of an
``UPDATE … FROM (VALUES …)``, in temporary tables it creates and drops for every statement: plain
``UPDATE`` statements and one ``SELECT`` cost about two thirds of either (measured in instructions).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from kling_budget.budgets import Budget, Counters
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.rows import COUNTER_COLUMNS
from kling_budget.windows import Window

__all__ = [
    "HoldRefused",
    "add_held",
    "hold_all",
    "hold_limits",
    "one_statement",
    "pipelined",
    "settle_all",
    "settle_window",
    "windows_moved",
]

Target = tuple[Budget, Window, int]
"""A budget, the job's window in it and the units the job counts against it."""


class HoldRefused(Exception):
    """A window of the one-statement hold had no room: the transaction must be rolled back and the job
    reserved window by window (which finds the denial, or the room a concurrent release made)."""


def pipelined(conn: Connection) -> bool:
    """Whether a commit sends its writes and every window's move in one round trip, as statements run in
    order (PostgreSQL: row locks still taken one by one in lock order)."""
    return conn.dialect == "postgresql"


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


_HOLD = (
    "UPDATE budget_windows SET held_milli = held_milli + ?, held_nano = held_nano + ? "
    "WHERE budget_id = ? AND window_start = ? "
    "AND (? IS NULL OR committed_milli + held_milli + ? <= ?) AND (? IS NULL OR committed_nano + held_nano + ? <= ?)"
)

_SETTLE = (
    "UPDATE budget_windows SET held_milli = held_milli - ?, committed_milli = committed_milli + ?, "
    "overage_milli = overage_milli + ?, held_nano = held_nano - ?, committed_nano = committed_nano + ?, "
    "overage_nano = overage_nano + ? WHERE budget_id = ? AND window_start = ?"
)


def settle_window(
    budget_id: int | None, window_start: int, units: tuple[int, int, int], usd: tuple[int, int, int]
) -> tuple[str, tuple[Any, ...]]:
    """The move of one window at a commit (held amounts out, charged and overage in), returning its counters:
    one statement per window, in lock order (PostgreSQL)."""
    return f"{_SETTLE} RETURNING {COUNTER_COLUMNS}", (*units, *usd, budget_id, window_start)


def _windows(count: int) -> str:
    """The condition naming ``count`` windows by ``(budget id, window start)`` parameters."""
    return " OR ".join(["(budget_id = ? AND window_start = ?)"] * count)


@lru_cache(maxsize=32)
def _windows_moved_sql(count: int) -> str:
    return (
        "SELECT COUNT(*) FROM budget_windows WHERE xmin = pg_current_xact_id()::xid "
        f"AND ({_windows(count)}) HAVING COUNT(*) = ?"
    )


def windows_moved(keys: Sequence[tuple[int | None, int]]) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: a statement with a row only when every window ``(budget id, window start)`` was moved by
    the current transaction (its row version is this transaction's): a window whose row was missing to
    this transaction's ``UPDATE`` (a concurrent transaction creating it) makes it return none."""
    return _windows_moved_sql(len(keys)), (*(value for key in keys for value in key), len(keys))


@lru_cache(maxsize=32)
def _counters_sql(count: int) -> str:
    return f"SELECT budget_id, {COUNTER_COLUMNS} FROM budget_windows WHERE {_windows(count)}"


def _counters(conn: Connection, keys: Sequence[tuple[int | None, int]]) -> dict[int, Counters]:
    """The counters of the windows ``(budget id, window start)`` that have a row, by budget id."""
    rows = conn.fetchall(_counters_sql(len(keys)), [value for key in keys for value in key])
    return {row[0]: Counters(*row[1:]) for row in rows}


def hold_all(conn: Connection, targets: Sequence[Target], usd_nano: int) -> list[Counters]:
    """Hold a job's price in every target window (no row locks to order: SQLite); the counters after, in
    target order.

    Raises:
        HoldRefused: a window had no room (or no row); other windows may have been updated, so the
            caller's transaction must be rolled back.
    """
    for budget, window, units_delta in targets:
        limit_units, limit_usd = hold_limits(budget, units_delta, usd_nano)
        params = (units_delta, usd_nano, budget.id, window.start_us, limit_units, units_delta, limit_units)
        if not conn.execute(_HOLD, (*params, limit_usd, usd_nano, limit_usd)):
            raise HoldRefused
    after = _counters(conn, [(budget.id, window.start_us) for budget, window, _ in targets])
    return [after[budget.id] for budget, _, _ in targets]  # type: ignore[index]


def settle_all(
    conn: Connection, moves: Sequence[tuple[int | None, int, int, int, int, int, int, int]]
) -> dict[int, Counters]:
    """Apply commit moves ``(budget id, window start, held units, actual units, overage units, held usd,
    actual usd, overage usd)`` (no row locks to order: SQLite); the counters after by budget id (a window
    without a row is skipped: its first job will fold this commit in)."""
    keys = []
    for budget_id, window_start, *amounts in moves:
        if conn.execute(_SETTLE, (*amounts, budget_id, window_start)):
            keys.append((budget_id, window_start))
    return _counters(conn, keys) if keys else {}
