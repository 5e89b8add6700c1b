"""Resolving holds: ``commit`` (settle with what Kling charged), ``release``, and the expiry of holds never
submitted. See :mod:`kling_budget.ledger.core` for the rules every ledger operation follows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from kling_budget.budgets import Counters
from kling_budget.errors import ReservationNotFoundError, ReservationResolvedError
from kling_budget.ledger._shared import LedgerShared, _entry_write, _one_statement, _write_all
from kling_budget.ledger.backend import Connection, RowMissing
from kling_budget.ledger.budget_store import LedgerConfig
from kling_budget.ledger.counters import one_statement, pipelined, settle_all, settle_window, windows_moved
from kling_budget.ledger.locks import config_lock_expression, for_update, lock_window, skip_locked
from kling_budget.ledger.packs import PackStore
from kling_budget.ledger.records import ReservationInfo, ReservationState
from kling_budget.ledger.rows import RESERVATION_COLUMNS, info_from_row, validate_amount
from kling_budget.money import format_units
from kling_budget.types import AlertEvent, AlertKind
from kling_budget.windows import from_micros, to_micros

__all__ = ["HoldResolver"]

# SQLite only (one writer at a time): the configuration version read with the reservation, one statement.
_REQUIRE_WITH_VERSION = (
    f"SELECT (SELECT value FROM meta WHERE key = 'config_version'), {RESERVATION_COLUMNS} "
    "FROM reservations WHERE id = ?"
)


class _WindowMissing(Exception):
    """A window had no row in the pipelined commit: roll back and commit window by window."""


class HoldResolver(PackStore, LedgerShared):
    """Commit, release and expiry: the operations that close a hold opened by ``reserve``."""

    def commit(
        self,
        key: str,
        *,
        units_milli: int | None = None,
        cash_usd_nano: int | None = None,
        now: datetime | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> ReservationInfo:
        """Settle a reservation with what Kling charged (default: the held amount).

        Units above the hold are recorded as overage (they count against the budgets and raise an alert);
        units below it return the difference to the budgets. ``cash_usd_nano``: Kling took money from a cash
        balance instead of pack units; the job costs exactly that, and any pack holds are released.
        ``also(conn)`` runs in the same transaction when this call settles the reservation (not on a replay);
        if it raises, nothing is stored.
        """
        if units_milli is not None:
            validate_amount(units_milli, "charged units")
        if cash_usd_nano is not None:
            validate_amount(cash_usd_nano, "charged dollars")
        at_dt = now or self.now()
        at = to_micros(at_dt)

        def tx(conn: Connection) -> ReservationInfo:
            info, version = self._require_for_write(conn, key)
            actual = info.units_milli if units_milli is None else units_milli
            if info.state is ReservationState.COMMITTED:
                if info.kind == "reserve" and info.actual_milli == actual:
                    return replace(info, replayed=True)
                raise ReservationResolvedError(
                    f"reservation {key} was already committed with {format_units(info.actual_milli or 0)} units"
                )
            if not info.state.is_open:
                raise ReservationResolvedError(f"reservation {key} is {info.state.value} and cannot be committed")
            if also is not None:
                also(conn)  # before the budget rows: their locks are held until COMMIT (see reserve)
            config = self._load_config(conn, locked=True, version=version)  # locked by _require_for_write
            if cash_usd_nano is None:
                actual_nano = self._settle_allocs(conn, config, info, actual, at)
            else:
                self._settle_allocs(conn, config, info, 0, at)  # no pack units were drawn
                actual_nano = cash_usd_nano
            overage = max(0, actual - info.units_milli)
            overage_nano = max(0, actual_nano - info.usd_nano)
            writes = (
                (
                    "UPDATE reservations SET state = 'committed', actual_milli = ?, actual_nano = ?, "
                    "overage_milli = ?, overage_nano = ?, resolved_at = ? WHERE id = ?",
                    (actual, actual_nano, overage, overage_nano, at, key),
                ),
                _entry_write(key, "commit", actual, actual_nano, at),
                self._bucket_write(
                    info.attribution,
                    info.pack_type,
                    to_micros(info.reserved_at),
                    held=(-info.units_milli, -info.usd_nano),
                    committed=(actual, actual_nano),
                    jobs=1,
                ),
            )
            events: list[AlertEvent] = []
            reserved_dt = info.reserved_at
            budgets = self._matching(config, info.attribution)
            moves = [
                (
                    budget,
                    self._window(budget, reserved_dt),
                    budget.units_delta(info.pack_type, info.units_milli),
                    budget.units_delta(info.pack_type, actual),
                    budget.units_delta(info.pack_type, overage),
                )
                for budget in budgets
            ]
            usd_moves = (info.usd_nano, actual_nano, overage_nano)
            moved: dict[int, Counters] | None = None
            if moves and pipeline[0] and pipelined(conn):  # dialect hook: see ledger/counters.py
                # The writes and every window's move in one round trip, in lock order. A charge no larger
                # than the hold raises no alert, so nothing follows the moves: COMMIT goes with them and the
                # hot rows (the usage roll-up, the account-wide window) are released without waiting for
                # this client; a last statement stops that COMMIT unless every window had a row to move.
                # Otherwise they stay locked one round trip (COMMIT) after it.
                final = actual <= info.units_milli and actual_nano <= info.usd_nano
                statements = [
                    _one_statement(writes),
                    *(
                        settle_window(budget.id, window.start_us, (held, charged, over), usd_moves)
                        for budget, window, held, charged, over in moves
                    ),
                ]
                if final:
                    statements.append(windows_moved([(budget.id, window.start_us) for budget, window, *_ in moves]))
                try:
                    rows = conn.fetch_each(statements, required=(len(moves) + 1,) if final else (), last=final)
                except RowMissing:
                    raise _WindowMissing from None
                rows = rows[1 : len(moves) + 1]
                if any(row is None for row in rows):
                    raise _WindowMissing
                moved = {budget.id: Counters(*row) for (budget, *_), row in zip(moves, rows, strict=True)}  # type: ignore[misc]
            else:
                _write_all(conn, *writes)
            if moved is None and moves and one_statement(conn):  # dialect hook: see ledger/counters.py
                moved = settle_all(
                    conn,
                    [
                        (budget.id, window.start_us, held, charged, over, info.usd_nano, actual_nano, overage_nano)
                        for budget, window, held, charged, over in moves
                    ],
                )
            for budget, window, held_delta, actual_delta, overage_delta in moves:  # budget rows last (see reserve)
                if moved is not None:
                    after = moved.get(budget.id)  # type: ignore[arg-type]
                else:
                    update = settle_window(
                        budget.id, window.start_us, (held_delta, actual_delta, overage_delta), usd_moves
                    )
                    row = conn.fetchone(*update)
                    if row is None and lock_window(conn, budget.id, window.start_us, exclusive=False):
                        row = conn.fetchone(*update)  # dialect hook: a concurrent creation is now committed or not
                    after = None if row is None else Counters(*row)
                if after is None:
                    continue  # window not materialised yet; its first job will fold this commit in
                if self._may_alert(config, budget, after, actual_delta - held_delta, actual_nano - info.usd_nano):
                    before = after.shifted(
                        held_milli=held_delta,
                        committed_milli=-actual_delta,
                        held_nano=info.usd_nano,
                        committed_nano=-actual_nano,
                    )
                    events += self._threshold_events(budget, window, before, after, at, key)
            if overage:
                events.append(
                    AlertEvent(
                        kind=AlertKind.OVERAGE,
                        message=(
                            f"Kling charged {format_units(actual)} units for {key}, "
                            f"{format_units(overage)} above the {format_units(info.units_milli)} held"
                        ),
                        dedupe_key=f"overage:{key}",
                        reservation_id=key,
                        created_at=from_micros(at).isoformat(),
                    )
                )
            stored = self._insert_events(conn, events, at) if events else ()
            return info.settled(
                actual_milli=actual,
                actual_nano=actual_nano,
                overage_milli=overage,
                overage_nano=overage_nano,
                resolved_at=from_micros(at),
                alerts=tuple(stored),
            )

        pipeline = [True]  # every window in one round trip with the writes, until a window has no row
        try:
            return self.backend.run(tx)
        except _WindowMissing:
            pipeline[0] = False  # window by window: waits for a concurrent creation, skips a missing row
            return self.backend.run(tx)

    def release(
        self,
        key: str,
        *,
        reason: str = "",
        now: datetime | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> ReservationInfo:
        """Return a reservation's hold to its budgets (Kling failed the task, or it was never sent).

        ``also(conn)`` runs in the same transaction when this call releases the reservation (not on a replay).
        """
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> ReservationInfo:
            info, version = self._require_for_write(conn, key)
            if info.state is ReservationState.RELEASED:
                return replace(info, replayed=True)
            if not info.state.is_open:
                raise ReservationResolvedError(f"reservation {key} is {info.state.value} and cannot be released")
            if also is not None:
                also(conn)
            config = self._load_config(conn, locked=True, version=version)  # locked by _require_for_write
            self._release_in(conn, config, info, at, reason)
            fresh = self._fetch(conn, key)
            assert fresh is not None
            return fresh

        return self.backend.run(tx)

    def _release_in(self, conn: Connection, config: LedgerConfig, info: ReservationInfo, at: int, reason: str) -> None:
        # Packs first, budget windows last: the lock order of reserve and commit (see ledger/locks.py).
        for pack_id, held in conn.fetchall(
            "SELECT pack_id, held_milli FROM allocations WHERE reservation_id = ? AND pack_id IS NOT NULL",
            (info.id,),
        ):
            conn.execute("UPDATE packs SET held_milli = held_milli - ? WHERE id = ?", (held, pack_id))
        detail = dict(info.detail)
        if reason:
            detail["release_reason"] = reason
        _write_all(
            conn,
            (
                "UPDATE reservations SET state = 'released', resolved_at = ?, detail = ? WHERE id = ?",
                (at, json.dumps(detail, default=str), info.id),
            ),
            _entry_write(info.id, "release", info.units_milli, info.usd_nano, at),
            self._bucket_write(
                info.attribution, info.pack_type, to_micros(info.reserved_at), held=(-info.units_milli, -info.usd_nano)
            ),
        )
        for budget in self._matching(config, info.attribution):  # budget rows last (see reserve)
            window = self._window(budget, info.reserved_at)
            held_delta = budget.units_delta(info.pack_type, info.units_milli)
            update = (
                "UPDATE budget_windows SET held_milli = held_milli - ?, held_nano = held_nano - ? "
                "WHERE budget_id = ? AND window_start = ?",
                (held_delta, info.usd_nano, budget.id, window.start_us),
            )
            if not conn.execute(*update) and lock_window(conn, budget.id, window.start_us, exclusive=False):
                conn.execute(*update)  # dialect hook: a concurrent creation is now committed or not

    def expire_unsubmitted(self, *, now: datetime | None = None, limit: int = 1000) -> list[str]:
        """Release reservations whose TTL passed and that were never marked submitted.

        A reservation that may have reached Kling (``submitted``) is never released here: only Kling's
        answer, through ``commit``/``release`` or ``kling-budget reconcile``, resolves it.
        """
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> list[str]:
            rows = conn.fetchall(
                "SELECT id FROM reservations WHERE state = 'held' AND expires_at IS NOT NULL AND expires_at <= ? "
                f"ORDER BY reserved_at, id LIMIT ?{skip_locked(conn)}",  # dialect hook: see ledger/locks.py
                (at, limit),
            )
            config = self._load_config(conn)
            expired = []
            for (key,) in rows:
                info = self._fetch(conn, key)
                assert info is not None
                self._release_in(conn, config, info, at, "ttl expired before submission")
                expired.append(key)
            return expired

        return self.backend.run(tx)

    def _require_for_write(self, conn: Connection, key: str) -> tuple[ReservationInfo, str | None]:
        """The reservation ``key`` locked for resolution, with the config lock held (taken in the same
        statement where the backend needs one), and ``meta.config_version`` when the backend lets it be read
        in the same statement (one writer at a time); else ``None`` (read it in a later statement)."""
        expression = config_lock_expression(conn)  # dialect hook: see ledger/locks.py
        if expression is not None:
            row = conn.fetchone(
                f"SELECT {expression}, {RESERVATION_COLUMNS} FROM reservations WHERE id = ?{for_update(conn)}", (key,)
            )
            if row is None:
                raise ReservationNotFoundError(f"no reservation with id {key!r}")
            return info_from_row(row[1:]), None
        row = conn.fetchone(_REQUIRE_WITH_VERSION, (key,))
        if row is None:
            raise ReservationNotFoundError(f"no reservation with id {key!r}")
        return info_from_row(row[1:]), row[0]
