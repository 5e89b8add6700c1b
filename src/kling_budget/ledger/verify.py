"""``verify``: re-derive every counter from the append-only entries and report each mismatch.

Checks, in one read transaction:
1. every reservation's entries match its state (reserve → commit | release; record; denied has none);
2. every (budget, window) counter equals the fold of the entries of the jobs in that scope and window;
3. every pack's held and committed units equal the sum of the allocations drawn from it;
4. the usage roll-up equals the reservations it summarises;
5. on SQLite, ``PRAGMA integrity_check``.
"""

from __future__ import annotations

from typing import Any

from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.records import VerifyReport
from kling_budget.ledger.rows import BUCKET_MICROS, BUDGET_COLUMNS, COUNTER_COLUMNS, budget_from_row, scope_filter
from kling_budget.windows import Window, from_micros

__all__ = ["verify"]

# One row per reservation with the amounts its entries say it has; the source of truth for every check.
_DERIVED = """
    SELECT r.id, r.kind, r.state, r.project, r.user_id, r.api_key, r.model, r.tags, r.pack_type, r.reserved_at,
           r.units_milli, r.usd_nano, r.actual_milli, r.actual_nano, r.overage_milli, r.overage_nano,
           a.n, a.rs_u, a.rs_d, a.cm_u, a.cm_d, a.rl_u, a.rl_d, a.rc_u, a.rc_d
    FROM reservations r LEFT JOIN (
        SELECT reservation_id, COUNT(*) AS n,
            MAX(CASE WHEN kind = 'reserve' THEN units_milli END) AS rs_u,
            MAX(CASE WHEN kind = 'reserve' THEN usd_nano END) AS rs_d,
            MAX(CASE WHEN kind = 'commit' THEN units_milli END) AS cm_u,
            MAX(CASE WHEN kind = 'commit' THEN usd_nano END) AS cm_d,
            MAX(CASE WHEN kind = 'release' THEN units_milli END) AS rl_u,
            MAX(CASE WHEN kind = 'release' THEN usd_nano END) AS rl_d,
            MAX(CASE WHEN kind = 'record' THEN units_milli END) AS rc_u,
            MAX(CASE WHEN kind = 'record' THEN usd_nano END) AS rc_d
        FROM entries GROUP BY reservation_id
    ) a ON a.reservation_id = r.id
"""


def _entry_amounts(row: tuple[Any, ...]) -> tuple[int, int, int, int, int, int] | None:
    """Counters of one job, in ``COUNTER_COLUMNS`` order, derived from its entries alone."""
    n, rs_u, rs_d, cm_u, cm_d, rl_u, _rl_d, rc_u, rc_d = row[16:25]
    if not n:
        return None
    if rc_u is not None:
        return rc_u, 0, 0, rc_d, 0, 0
    if cm_u is not None:
        return cm_u, 0, max(0, cm_u - rs_u), cm_d, 0, max(0, cm_d - rs_d)
    if rl_u is not None:
        return 0, 0, 0, 0, 0, 0
    return 0, rs_u, 0, 0, rs_d, 0


def _check_reservation(row: tuple[Any, ...]) -> str | None:
    rid, kind, state, units, usd, actual, actual_nano, overage, overage_nano = (
        row[0],
        row[1],
        row[2],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
    )
    n, rs_u, rs_d, cm_u, cm_d, rl_u, rl_d, rc_u, rc_d = row[16:25]
    n = n or 0
    if kind == "record":
        ok = state == "committed" and n == 1 and (rc_u, rc_d) == (actual, actual_nano) == (units, usd)
    elif state == "denied":
        ok = n == 0
    elif state in ("held", "submitted"):
        ok = n == 1 and (rs_u, rs_d) == (units, usd)
    elif state == "committed":
        ok = (
            n == 2
            and (rs_u, rs_d) == (units, usd)
            and (cm_u, cm_d) == (actual, actual_nano)
            and overage == max(0, actual - units)
            and overage_nano == max(0, actual_nano - usd)
        )
    elif state == "released":
        ok = n == 2 and (rs_u, rs_d) == (units, usd) == (rl_u, rl_d)
    else:
        ok = False
    return None if ok else f"reservation {rid} ({kind}, {state}) does not match its {n} entries"


def _verify(conn: Connection) -> VerifyReport:
    problems: list[str] = []
    derived = conn.fetchall(_DERIVED)
    for row in derived:
        problem = _check_reservation(row)
        if problem:
            problems.append(problem)
    entries_row = conn.fetchone("SELECT COUNT(*) FROM entries")
    entry_count = int(entries_row[0]) if entries_row else 0

    windows = conn.fetchall(f"SELECT budget_id, window_start, window_end, {COUNTER_COLUMNS} FROM budget_windows")
    budgets = {int(r[0]): budget_from_row(r) for r in conn.fetchall(f"SELECT {BUDGET_COLUMNS} FROM budgets")}
    for budget_id, start, end, *stored in windows:
        budget = budgets.get(int(budget_id))
        if budget is None:
            problems.append(f"window {start} belongs to a deleted budget {budget_id}")
            continue
        window = Window(from_micros(start), None if end is None else from_micros(end))
        if budget.window(window.start) != window:
            problems.append(f"budget {budget.name}: window {window.start.isoformat()} is not a {budget.period} window")
        conditions, params = scope_filter(budget.scope, "r")
        where = "r.reserved_at >= ?" + (" AND r.reserved_at < ?" if end is not None else "")
        where_params: list[Any] = [start] + ([end] if end is not None else [])
        sql = _DERIVED + f" WHERE {where}" + (f" AND {conditions}" if conditions else "")
        expected = [0] * 6
        for row in conn.fetchall(sql, [*where_params, *params]):
            amounts = _entry_amounts(row)
            if amounts is None:
                continue
            counts_units = row[8] == budget.unit_pack.value
            for i, value in enumerate(amounts):
                if i < 3 and not counts_units:
                    continue
                expected[i] += value
        if list(stored) != expected:
            names = [c.strip() for c in COUNTER_COLUMNS.split(",")]
            diffs = ", ".join(f"{n} {s} != {e}" for n, s, e in zip(names, stored, expected, strict=True) if s != e)
            problems.append(f"budget {budget.name} window {window.start.isoformat()}: {diffs}")

    for pack_id, name, held, committed, alloc_held, alloc_committed in conn.fetchall(
        "SELECT p.id, p.name, p.held_milli, p.committed_milli, "
        "COALESCE(SUM(CASE WHEN r.state IN ('held', 'submitted') THEN a.held_milli ELSE 0 END), 0), "
        "COALESCE(SUM(a.committed_milli), 0) FROM packs p "
        "LEFT JOIN allocations a ON a.pack_id = p.id LEFT JOIN reservations r ON r.id = a.reservation_id "
        "GROUP BY p.id, p.name, p.held_milli, p.committed_milli"
    ):
        if (held, committed) != (alloc_held, alloc_committed):
            problems.append(
                f"pack {name} ({pack_id}): held/committed {held}/{committed} "
                f"!= allocations {alloc_held}/{alloc_committed}"
            )

    expected_buckets: dict[tuple[Any, ...], list[int]] = {}
    for row in derived:
        amounts = _entry_amounts(row)
        if amounts is None:
            continue
        key = (row[9] - row[9] % BUCKET_MICROS, row[3], row[4], row[5], row[6], row[8])
        total = expected_buckets.setdefault(key, [0, 0, 0, 0, 0])
        total[0] += amounts[0]
        total[1] += amounts[1]
        total[2] += amounts[3]
        total[3] += amounts[4]
        total[4] += 1 if row[2] == "committed" else 0
    stored_buckets = {
        tuple(r[:6]): [int(v) for v in r[6:]]
        for r in conn.fetchall(
            "SELECT bucket, project, user_id, api_key, model, pack_type, committed_milli, held_milli, "
            "committed_nano, held_nano, jobs FROM usage_buckets"
        )
    }
    for key in sorted(set(expected_buckets) | set(stored_buckets), key=str):
        want = expected_buckets.get(key, [0, 0, 0, 0, 0])
        have = stored_buckets.get(key, [0, 0, 0, 0, 0])
        if want != have:
            problems.append(f"usage roll-up {from_micros(key[0]).isoformat()} {key[1:]}: {have} != {want}")

    if conn.dialect == "sqlite":
        integrity = conn.fetchall("PRAGMA integrity_check")
        if [r[0] for r in integrity] != ["ok"]:
            problems.extend(f"sqlite integrity: {r[0]}" for r in integrity)

    return VerifyReport(
        checked_reservations=len(derived),
        checked_entries=entry_count,
        checked_windows=len(windows),
        problems=tuple(problems),
    )


def verify(backend: Backend) -> VerifyReport:
    """Re-derive every counter from the entries; ``report.ok`` is true when all match."""
    return backend.run(_verify, write=False)
