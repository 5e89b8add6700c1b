"""Reads of the ledger: reservations, the alert outbox, ``verify`` and ``usage``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kling_budget.budgets import Scope
from kling_budget.ledger._shared import LedgerShared
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.events import event_from_payload
from kling_budget.ledger.records import ReservationInfo, ReservationState, UsageRow, VerifyReport
from kling_budget.ledger.rows import RESERVATION_COLUMNS, info_from_row, scope_filter
from kling_budget.types import AlertEvent
from kling_budget.windows import to_micros

__all__ = ["LedgerReads"]


class LedgerReads(LedgerShared):
    """Reservations and alert events as stored, the outbox's delivery marks, and the derived reports."""

    def get_reservation(self, key: str) -> ReservationInfo:
        """One reservation by id (:class:`ReservationNotFoundError` if absent)."""
        return self.backend.run(lambda conn: self._require(conn, key), write=False)

    def find_by_task(self, task_id: str) -> ReservationInfo | None:
        """The reservation that Kling task ``task_id`` was submitted for, if any."""

        def tx(conn: Connection) -> ReservationInfo | None:
            row = conn.fetchone(f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE task_id = ?", (task_id,))
            return None if row is None else info_from_row(row)

        return self.backend.run(tx, write=False)

    def list_reservations(
        self,
        *,
        states: Sequence[ReservationState | str] = (),
        limit: int = 100,
        newest_first: bool = True,
        scope: Scope | None = None,
    ) -> list[ReservationInfo]:
        """Reservations, optionally only in ``states`` (e.g. the open ones: held, submitted) and ``scope``."""
        order = "DESC" if newest_first else "ASC"
        params: list[Any] = [ReservationState(str(s)).value for s in states]
        conditions = [f"state IN ({', '.join('?' for _ in params)})"] if params else []
        scope_sql, scope_params = scope_filter(scope or Scope())
        if scope_sql:
            conditions.append(scope_sql)
            params += scope_params
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {RESERVATION_COLUMNS} FROM reservations {where} ORDER BY reserved_at {order}, id LIMIT ?"
        rows = self.backend.run(lambda conn: conn.fetchall(sql, [*params, limit]), write=False)
        return [info_from_row(r) for r in rows]

    def pending_alerts(self, *, limit: int = 100) -> list[AlertEvent]:
        """Alert events not yet delivered, oldest first (the outbox)."""
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                "SELECT id, payload FROM alert_events WHERE delivered_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ),
            write=False,
        )
        return [event_from_payload(r[0], r[1]) for r in rows]

    def recent_alerts(self, *, limit: int = 50) -> list[AlertEvent]:
        """The newest alert events, delivered or not."""
        rows = self.backend.run(
            lambda conn: conn.fetchall("SELECT id, payload FROM alert_events ORDER BY id DESC LIMIT ?", (limit,)),
            write=False,
        )
        return [event_from_payload(r[0], r[1]) for r in rows]

    def mark_alerts_delivered(self, ids: Sequence[int], *, now: datetime | None = None) -> int:
        """Mark outbox events as delivered; returns how many were still pending."""
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> int:
            return sum(
                conn.execute("UPDATE alert_events SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL", (at, i))
                for i in ids
            )

        return self.backend.run(tx)

    def emit_alert(self, event: AlertEvent, *, now: datetime | None = None) -> AlertEvent | None:
        """Store an alert in the outbox unless one with the same ``dedupe_key`` exists; return it if new."""
        at = to_micros(now or self.now())
        stored = self.backend.run(lambda conn: self._insert_events(conn, [event], at))
        return stored[0] if stored else None

    def verify(self) -> VerifyReport:
        """Re-derive every counter from the append-only entries and report mismatches."""
        from kling_budget.ledger.verify import verify

        return verify(self.backend)

    def usage(
        self,
        *,
        start: datetime,
        end: datetime,
        group_by: Sequence[str] = ("project",),
        timezone: str = "UTC",
        week_start: int = 0,
        filters: Mapping[str, str] | None = None,
    ) -> list[UsageRow]:
        """Committed and held spend in ``[start, end)`` by project, user, api_key, model, pack_type, tag,
        hour, day, week or month (see :func:`kling_budget.ledger.queries.usage`)."""
        from kling_budget.ledger.queries import usage

        return usage(
            self.backend,
            start=start,
            end=end,
            group_by=group_by,
            timezone=timezone,
            week_start=week_start,
            filters=filters,
        )
