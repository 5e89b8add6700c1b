"""What the parts of :class:`~kling_budget.ledger.core.Ledger` share: the rows an operation writes (its
reservation, its entry, the usage roll-up, alert events), the read of one reservation, and the alert check of a
window move."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from kling_budget.budgets import Budget, Counters, crossed_thresholds
from kling_budget.errors import ReservationNotFoundError
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.budget_store import LedgerBase, LedgerConfig, crosses
from kling_budget.ledger.events import budget_event
from kling_budget.ledger.locks import for_update
from kling_budget.ledger.records import ReservationInfo, ReservationState
from kling_budget.ledger.rows import BUCKET_MICROS, RESERVATION_COLUMNS, info_from_row, tags_column
from kling_budget.types import AlertEvent, AlertKind, Attribution, PackType
from kling_budget.windows import Window, from_micros

__all__ = ["LedgerShared", "Write"]

Write = tuple[str, tuple[Any, ...]]
"""One SQL statement and its parameters."""


def _entry_write(key: str, kind: str, units_milli: int, usd_nano: int, at: int) -> Write:
    """The append of one ledger entry."""
    return (
        "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, ?, ?, ?, ?)",
        (key, kind, units_milli, usd_nano, at),
    )


def _write_all(conn: Connection, *writes: Write) -> None:
    """Run several writes of one transaction; on PostgreSQL as one statement (data-modifying CTEs), one
    round trip instead of several — the reserve and commit paths are bound by round trips there."""
    if conn.dialect != "postgresql" or len(writes) == 1:
        for sql, params in writes:
            conn.execute(sql, params)
        return
    conn.execute(*_one_statement(writes))


def _one_statement(writes: Sequence[Write]) -> Write:
    """Several writes as one PostgreSQL statement (data-modifying CTEs; the last one is the main statement)."""
    if len(writes) == 1:
        return writes[0]
    ctes = ", ".join(f"w{i} AS ({sql} RETURNING 1)" for i, (sql, _) in enumerate(writes[:-1]))
    return f"WITH {ctes} {writes[-1][0]}", tuple(p for _, params in writes for p in params)


class LedgerShared(LedgerBase):
    """The row builders, the read of one reservation and the alert checks that the ledger's parts use."""

    @staticmethod
    def _reservation_write(
        *,
        key: str,
        kind: str,
        state: ReservationState,
        request_hash: str,
        attribution: Attribution,
        product: str,
        pack: PackType,
        units_milli: int,
        usd_nano: int,
        at: int,
        expires: int | None,
        detail: Mapping[str, Any] | None,
        actual: tuple[int, int] | None = None,
        over_budget: bool = False,
    ) -> tuple[ReservationInfo, Write]:
        """The insert of a reservation row, and the reservation it stores."""
        detail_text = json.dumps(dict(detail), default=str, sort_keys=True) if detail else "{}"
        resolved = at if state in (ReservationState.COMMITTED, ReservationState.DENIED) else None
        write: Write = (
            "INSERT INTO reservations (id, kind, state, request_hash, project, user_id, api_key, model, tags, "
            "product, pack_type, units_milli, usd_nano, actual_milli, actual_nano, over_budget, reserved_at, "
            "resolved_at, expires_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                kind,
                state.value,
                request_hash,
                attribution.project,
                attribution.user,
                attribution.api_key,
                attribution.model,
                tags_column(attribution.tags),
                product,
                pack.value,
                units_milli,
                usd_nano,
                None if actual is None else actual[0],
                None if actual is None else actual[1],
                int(over_budget),
                at,
                resolved,
                expires,
                detail_text,
            ),
        )
        info = ReservationInfo(
            id=key,
            kind=kind,
            state=state,
            attribution=attribution,
            product=product,
            pack_type=pack,
            units_milli=units_milli,
            usd_nano=usd_nano,
            actual_milli=None if actual is None else actual[0],
            actual_nano=None if actual is None else actual[1],
            overage_milli=0,
            overage_nano=0,
            over_budget=over_budget,
            reserved_at=from_micros(at),
            resolved_at=None if resolved is None else from_micros(resolved),
            expires_at=None if expires is None else from_micros(expires),
            task_id=None,
            detail=json.loads(detail_text) if detail else {},
            request_hash=request_hash,
        )
        return info, write

    @staticmethod
    def _bucket_write(
        attribution: Attribution,
        pack: PackType,
        at: int,
        *,
        held: tuple[int, int] = (0, 0),
        committed: tuple[int, int] = (0, 0),
        jobs: int = 0,
    ) -> Write:
        """The upsert that moves the quarter-hour usage roll-up of one job."""
        bucket = at - at % BUCKET_MICROS
        return (
            "INSERT INTO usage_buckets (bucket, project, user_id, api_key, model, pack_type, committed_milli, "
            "held_milli, committed_nano, held_nano, jobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bucket, project, user_id, api_key, model, pack_type) DO UPDATE SET "
            "committed_milli = usage_buckets.committed_milli + excluded.committed_milli, "
            "held_milli = usage_buckets.held_milli + excluded.held_milli, "
            "committed_nano = usage_buckets.committed_nano + excluded.committed_nano, "
            "held_nano = usage_buckets.held_nano + excluded.held_nano, "
            "jobs = usage_buckets.jobs + excluded.jobs",
            (
                bucket,
                attribution.project,
                attribution.user,
                attribution.api_key,
                attribution.model,
                pack.value,
                committed[0],
                held[0],
                committed[1],
                held[1],
                jobs,
            ),
        )

    @staticmethod
    def _threshold_events(
        budget: Budget, window: Window, before: Counters, after: Counters, at: int, key: str
    ) -> list[AlertEvent]:
        events = []
        for threshold, kind in crossed_thresholds(budget, before, after):
            events.append(budget_event(AlertKind.THRESHOLD, budget, window, after, kind, at, key, threshold))
        for kind, limit, old, new in (
            ("units", budget.limit_units_milli, before.used_milli, after.used_milli),
            ("usd", budget.limit_usd_nano, before.used_nano, after.used_nano),
        ):
            if limit and old < limit <= new:
                events.append(budget_event(AlertKind.EXHAUSTED, budget, window, after, kind, at, key, None))
                break
        return events

    @staticmethod
    def _insert_events(conn: Connection, events: Sequence[AlertEvent], at: int) -> list[AlertEvent]:
        stored = []
        for event in events:
            payload = json.dumps(event.to_dict(), sort_keys=True)
            changed = conn.execute(
                "INSERT INTO alert_events (dedupe_key, kind, budget, payload, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (dedupe_key) DO NOTHING",
                (event.dedupe_key, event.kind.value, event.budget, payload, at),
            )
            if changed:
                row = conn.fetchone("SELECT id FROM alert_events WHERE dedupe_key = ?", (event.dedupe_key,))
                stored.append(replace(event, id=None if row is None else int(row[0])))
        return stored

    @staticmethod
    def _fetch(conn: Connection, key: str, *, lock: bool = False) -> ReservationInfo | None:
        lock_sql = for_update(conn) if lock else ""  # dialect hook: see ledger/locks.py
        row = conn.fetchone(f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?{lock_sql}", (key,))
        return None if row is None else info_from_row(row)

    def _may_alert(self, config: LedgerConfig, budget: Budget, after: Counters, units: int, usd: int) -> bool:
        """Whether moving a window's used amounts by ``units``/``usd`` up to ``after`` can raise an alert
        (the exact check, :meth:`_threshold_events`, runs only when it can)."""
        unit_points, usd_points = self._alert_points(config, budget)
        used_milli, used_nano = after.used_milli, after.used_nano
        return crosses(unit_points, used_milli - units, used_milli) or crosses(usd_points, used_nano - usd, used_nano)

    def _require(self, conn: Connection, key: str, *, lock: bool = False) -> ReservationInfo:
        info = self._fetch(conn, key, lock=lock)
        if info is None:
            raise ReservationNotFoundError(f"no reservation with id {key!r}")
        return info
