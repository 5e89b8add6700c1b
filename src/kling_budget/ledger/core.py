"""The spend ledger: reserve → commit | release, and record, over any :class:`Backend`.

Every operation is one short transaction that appends to ``entries`` (never updated or deleted) and
updates, in the same transaction, the counters of every (budget, window) the job falls in. A reservation
is admitted only if *every* matching hard budget has room: one conditional ``UPDATE`` per budget window,
in ascending budget order, and a denial rolls the whole transaction back (all or nothing).

Idempotency: the reservation id is the key. Replaying ``reserve``/``record`` with the same key and request
returns the stored outcome (including a denial); the same key with a different request raises
:class:`IdempotencyConflictError`. A reservation resolves at most once: ``commit`` replays when the units
match, ``release`` replays when already released, and any other second resolution raises
:class:`ReservationResolvedError`.

Windows: a job belongs to the windows containing its reservation time; its commit or release posts to
those same windows even after a reset. A budget's window row is created lazily by the first job in it,
initialised from the jobs already recorded in that window — so a budget created mid-month starts with the
month's spend, and ``verify`` re-derives exactly the same numbers from the entries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kling_budget.budgets import Budget, Counters, Scope, check_admission, crossed_thresholds
from kling_budget.errors import (
    BudgetExceededError,
    IdempotencyConflictError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.budget_store import BudgetStore, LedgerConfig, NewWindows, crosses
from kling_budget.ledger.counters import (
    HoldRefused,
    add_held,
    hold_all,
    hold_limits,
    one_statement,
    pipelined,
    settle_all,
    settle_window,
)
from kling_budget.ledger.events import (
    DENIAL_ALERT_INTERVAL_MICROS,
    budget_event,
    event_from_payload,
    over_limit,
    percent_text,
)
from kling_budget.ledger.locks import config_lock_expression, for_update, lock_order, lock_window, skip_locked
from kling_budget.ledger.one_trip import OneTrip, Prepared, WindowMove
from kling_budget.ledger.packs import PackStore
from kling_budget.ledger.records import ReservationInfo, ReservationState, UsageRow, VerifyReport
from kling_budget.ledger.rows import (
    BUCKET_MICROS,
    COUNTER_COLUMNS,
    RESERVATION_COLUMNS,
    denial_from_dict,
    hash_request,
    info_from_row,
    scope_filter,
    tags_column,
    validate_amount,
    validate_key,
)
from kling_budget.money import format_units, format_usd, usd_nano_for_units
from kling_budget.types import AlertEvent, AlertKind, Attribution, Denial, PackType
from kling_budget.windows import Period, Window, from_micros, to_micros

__all__ = ["LIST_PRICE_NANO_PER_UNIT", "Ledger"]

LIST_PRICE_NANO_PER_UNIT: Mapping[PackType, int] = {
    PackType.VIDEO: 140_000_000,  # $0.14
    PackType.IMAGE: 3_500_000,  # $0.0035
    PackType.TRY_ON: 70_000_000,  # $0.07
}


Write = tuple[str, tuple[Any, ...]]
"""One SQL statement and its parameters."""

# SQLite only (one writer at a time): the configuration version read with the reservation, one statement.
_FETCH_WITH_VERSION = (
    "SELECT m.value, r.* FROM meta AS m LEFT JOIN "
    f"(SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?) AS r ON 1 WHERE m.key = 'config_version'"
)

_REQUIRE_WITH_VERSION = (
    f"SELECT (SELECT value FROM meta WHERE key = 'config_version'), {RESERVATION_COLUMNS} "
    "FROM reservations WHERE id = ?"
)


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


class _WindowMissing(Exception):
    """A window had no row in the pipelined commit: roll back and commit window by window."""


class _Denied(Exception):
    def __init__(self, denial: Denial, budget_id: int, window: Window) -> None:
        super().__init__(denial.message())
        self.denial = denial
        self.budget_id = budget_id
        self.window = window


class Ledger(BudgetStore, PackStore):
    """The spend ledger over one backend.

    Args:
        backend: where entries and counters live (``SQLiteBackend``, ``PostgresBackend``).
        list_prices: dollars (nano) per unit of each pack type for units not covered by a purchased pack.
        clock: returns "now" when an operation is not given ``now`` (tests inject a fixed clock).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        list_prices: Mapping[PackType, int] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.backend = backend
        self.list_prices = dict(list_prices or LIST_PRICE_NANO_PER_UNIT)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._config = LedgerConfig("", (), frozenset(), set())
        self._config_lock = threading.Lock()
        self._windows: dict[tuple[Period, str, int], Window] = {}
        self._one_trip: OneTrip | None = None
        if backend.dialect == "postgresql" and hasattr(backend, "run_single"):
            self._one_trip = OneTrip(backend)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Ledger({self.backend.display_url!r})"

    def close(self) -> None:
        """Close the backend's connections."""
        self.backend.close()

    def now(self) -> datetime:
        """The ledger's clock."""
        return self._clock()

    def reserve(
        self,
        key: str,
        *,
        units_milli: int,
        pack_type: PackType | str,
        attribution: Attribution,
        product: str = "",
        detail: Mapping[str, Any] | None = None,
        ttl: timedelta | None = None,
        now: datetime | None = None,
        submitted: bool = False,
        also: Callable[[Connection], None] | None = None,
    ) -> ReservationInfo:
        """Hold ``units_milli`` against every matching budget in one atomic step.

        ``submitted=True`` stores the reservation as already marked submitted (reserve + ``mark_submitted``
        in one transaction, for a caller that sends the job right away and recovers a lost send by looking
        the job up). ``also(conn)`` runs in the same transaction right after the reservation row is written
        (e.g. the gateway's ownership row); if it raises, nothing is stored.

        Raises:
            BudgetExceededError: a hard budget has no room; ``.denial`` names budget, window, limit,
                committed, held, price and reset time. Replaying the key returns the same denial.
            IdempotencyConflictError: ``key`` was used for a different request.
            LedgerUnavailableError: the ledger cannot be reached or locked; do not submit the job.
        """
        validate_key(key)
        validate_amount(units_milli)
        pack = PackType(str(pack_type))
        at_dt = now or self.now()
        at = to_micros(at_dt)
        request_hash = hash_request("reserve", units_milli, pack, attribution, product)
        expires = None if ttl is None else to_micros(at_dt + ttl)

        def rows(usd_nano: int) -> tuple[ReservationInfo, Write, Write]:
            """The reservation row and the usage roll-up move of this job, priced at ``usd_nano``."""
            info, reservation_row = self._reservation_write(
                key=key,
                kind="reserve",
                state=ReservationState.SUBMITTED if submitted else ReservationState.HELD,
                request_hash=request_hash,
                attribution=attribution,
                product=product,
                pack=pack,
                units_milli=units_milli,
                usd_nano=usd_nano,
                at=at,
                expires=expires,
                detail=detail,
            )
            return info, reservation_row, self._bucket_write(attribution, pack, at, held=(units_milli, usd_nano))

        if self._one_trip is not None:
            done = self._reserve_in_one_trip(self._one_trip, attribution, pack, units_milli, at_dt, rows, also)
            if done is not None:
                return done

        windows = NewWindows()

        def tx(conn: Connection) -> ReservationInfo:
            existing, locked, version = self._fetch_for_write(conn, key)
            if existing is not None:
                return self._replay(existing, request_hash)
            config = windows.start(self._load_config(conn, locked=locked, version=version))
            allocs = self._allocate(conn, config, pack, units_milli, at)
            usd_nano = sum(a.usd_nano for a in allocs)
            info, reservation_row, bucket_row = rows(usd_nano)
            _write_all(conn, bucket_row, reservation_row, _entry_write(key, "reserve", units_milli, usd_nano, at))
            if also is not None:
                also(conn)
            if any(a.pack_id is not None for a in allocs):
                self._store_allocs(conn, key, allocs, committed=False)
            events: list[AlertEvent] = []
            budgets = self._matching(config, attribution)
            if together[0] and len(budgets) > 1 and one_statement(conn):  # dialect hook: ledger/counters.py
                targets = []
                for budget in budgets:
                    window = self._window(budget, at_dt)
                    self._ensure_window(conn, config, budget, window, windows.created, exclude=key)
                    targets.append((budget, window, budget.units_delta(pack, units_milli)))
                for (budget, window, units_delta), held in zip(targets, hold_all(conn, targets, usd_nano), strict=True):
                    if self._may_alert(config, budget, held, units_delta, usd_nano):
                        before = held.shifted(held_milli=-units_delta, held_nano=-usd_nano)
                        events += self._threshold_events(budget, window, before, held, at, key)
                budgets = ()
            # Budget rows last, broadest last: a row lock is held from its UPDATE to COMMIT, and the
            # account-wide row is the one every job waits for (see ledger/locks.py).
            for budget in budgets:
                window = self._window(budget, at_dt)
                self._ensure_window(conn, config, budget, window, windows.created, exclude=key)
                units_delta = budget.units_delta(pack, units_milli)
                after = add_held(conn, budget, window, units_delta, usd_nano)
                refused = 0
                while after is None:
                    counters = self._fold_or_row(conn, budget, window)
                    denial = check_admission(budget, window, counters, units_delta, usd_nano)
                    if denial is not None:
                        assert budget.id is not None
                        raise _Denied(denial, budget.id, window)
                    refused += 1
                    assert refused < 10, "conditional update refused a job that fits"
                    # READ COMMITTED: a release freed room after our UPDATE was refused; try again.
                    after = add_held(conn, budget, window, units_delta, usd_nano)
                if self._may_alert(config, budget, after, units_delta, usd_nano):
                    before = after.shifted(held_milli=-units_delta, held_nano=-usd_nano)
                    events += self._threshold_events(budget, window, before, after, at, key)
            if not events:
                return info
            return replace(info, alerts=tuple(self._insert_events(conn, events, at)))

        together = [True]  # every window at once (SQLite), until a window refuses (see ledger/counters.py)
        try:
            try:
                result = self.backend.run(tx)
            except HoldRefused:
                together[0] = False  # window by window: finds the denial, or the room a release made
                result = self.backend.run(tx)
        except _Denied as denied:
            return self._deny(key, request_hash, denied, attribution, product, pack, units_milli, at, detail)
        windows.committed()
        return result

    def _reserve_in_one_trip(
        self,
        one_trip: OneTrip,
        attribution: Attribution,
        pack: PackType,
        units_milli: int,
        at_dt: datetime,
        rows: Callable[[int], tuple[ReservationInfo, Write, Write]],
        also: Callable[[Connection], None] | None,
    ) -> ReservationInfo | None:
        """The reservation applied in one round trip (see ``ledger/one_trip.py``), or ``None`` when it
        needs the general path: no configuration cached yet, a pack to draw from, or the server declined."""
        config = self._config
        if not config.version or pack.value in config.pack_types:
            return None
        usd_nano = usd_nano_for_units(units_milli, self.list_prices[pack], 1000)  # no pack: the list price
        info, (_, reservation), (_, bucket) = rows(usd_nano)
        moves = []
        for budget in self._matching(config, attribution):
            assert budget.id is not None
            units_delta = budget.units_delta(pack, units_milli)
            moves.append(
                WindowMove(
                    lock_order(budget),
                    budget.id,
                    self._window(budget, at_dt).start_us,
                    units_delta,
                    usd_nano,
                    *hold_limits(budget, units_delta, usd_nano),
                    *self._alert_points(config, budget),
                )
            )
        return info if one_trip.reserve(Prepared(config.version, reservation, bucket, moves, also)) else None

    def _deny(
        self,
        key: str,
        request_hash: str,
        denied: _Denied,
        attribution: Attribution,
        product: str,
        pack: PackType,
        units_milli: int,
        at: int,
        detail: Mapping[str, Any] | None,
    ) -> ReservationInfo:
        denial = denied.denial
        event = AlertEvent(
            kind=AlertKind.DENIED,
            message=f"request denied: {denial.message()}",
            dedupe_key=f"denied:{denied.budget_id}:{denied.window.start_us}:{at // DENIAL_ALERT_INTERVAL_MICROS}",
            budget=denial.budget,
            scope=denial.scope,
            period=denial.period,
            window_start=denial.window_start.isoformat(),
            window_end=denial.window_end.isoformat() if denial.window_end else "",
            limit_kind=denial.limit_kind,
            limit=denial.to_dict()["limit"] or "",
            used=denial.to_dict()["committed"] or "",
            held=denial.to_dict()["held"] or "",
            percent=percent_text(denial.committed + denial.held, denial.limit),
            reservation_id=key,
            created_at=from_micros(at).isoformat(),
        )

        def tx(conn: Connection) -> ReservationInfo:
            existing = self._fetch(conn, key)
            if existing is not None:  # a concurrent call with the same key won
                return existing
            _, reservation_row = self._reservation_write(
                key=key,
                kind="reserve",
                state=ReservationState.DENIED,
                request_hash=request_hash,
                attribution=attribution,
                product=product,
                pack=pack,
                units_milli=units_milli,
                usd_nano=0,
                at=at,
                expires=None,
                detail={**(detail or {}), "denial": denial.to_dict()},
            )
            conn.execute(*reservation_row)
            stored_events[:] = self._insert_events(conn, [event], at)
            stored = self._fetch(conn, key)
            assert stored is not None
            return stored

        # The denial is stored first and raised after the commit, so a retry with the key gets the same answer.
        stored_events: list[AlertEvent] = []
        info = self.backend.run(tx)
        try:
            return self._replay(info, request_hash)
        except BudgetExceededError as exc:
            exc.alerts = tuple(stored_events)  # the caller delivers the (rate-limited) denial alert
            raise

    def record(
        self,
        key: str,
        *,
        units_milli: int,
        pack_type: PackType | str,
        attribution: Attribution,
        product: str = "",
        detail: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ReservationInfo:
        """Record usage that already happened elsewhere. Always recorded (the money is spent);
        ``over_budget`` is set, and an alert raised, when it took a hard or soft budget past its limit."""
        validate_key(key)
        validate_amount(units_milli)
        pack = PackType(str(pack_type))
        at_dt = now or self.now()
        at = to_micros(at_dt)
        request_hash = hash_request("record", units_milli, pack, attribution, product)

        windows = NewWindows()

        def tx(conn: Connection) -> ReservationInfo:
            existing, locked, version = self._fetch_for_write(conn, key)
            if existing is not None:
                return self._replay(existing, request_hash)
            config = windows.start(self._load_config(conn, locked=locked, version=version))
            allocs = self._allocate(conn, config, pack, units_milli, at)
            usd_nano = sum(a.usd_nano for a in allocs)
            conn.execute(*self._bucket_write(attribution, pack, at, committed=(units_milli, usd_nano), jobs=1))
            events: list[AlertEvent] = []
            over: list[tuple[Budget, Window]] = []
            for budget in self._matching(config, attribution):
                window = self._window(budget, at_dt)
                self._ensure_window(conn, config, budget, window, windows.created)
                units_delta = budget.units_delta(pack, units_milli)
                row = conn.fetchone(
                    "UPDATE budget_windows SET committed_milli = committed_milli + ?, "
                    "committed_nano = committed_nano + ? WHERE budget_id = ? AND window_start = ? "
                    f"RETURNING {COUNTER_COLUMNS}",
                    (units_delta, usd_nano, budget.id, window.start_us),
                )
                assert row is not None
                after = Counters(*row)
                before = after.shifted(committed_milli=-units_delta, committed_nano=-usd_nano)
                events += self._threshold_events(budget, window, before, after, at, key)
                if over_limit(budget, after):
                    over.append((budget, window))
            for budget, window in over:
                # Once per budget window, not per job: a stream of imports must not become a stream of alerts.
                events.append(
                    AlertEvent(
                        kind=AlertKind.OVER_BUDGET_RECORD,
                        message=(
                            f"recorded usage {key} ({format_units(units_milli)} units, {format_usd(usd_nano)}) "
                            f"took budget '{budget.name}' over its limit for the window from "
                            f"{window.start.isoformat()}"
                        ),
                        dedupe_key=f"over_budget_record:{budget.id}:{window.start_us}",
                        budget=budget.name,
                        scope=budget.scope.describe(),
                        period=budget.period.value,
                        window_start=window.start.isoformat(),
                        window_end=window.end.isoformat() if window.end else "",
                        reservation_id=key,
                        created_at=from_micros(at).isoformat(),
                    )
                )
            _, reservation_row = self._reservation_write(
                key=key,
                kind="record",
                state=ReservationState.COMMITTED,
                request_hash=request_hash,
                attribution=attribution,
                product=product,
                pack=pack,
                units_milli=units_milli,
                usd_nano=usd_nano,
                at=at,
                expires=None,
                detail=detail,
                actual=(units_milli, usd_nano),
                over_budget=bool(over),
            )
            _write_all(conn, reservation_row, _entry_write(key, "record", units_milli, usd_nano, at))
            if any(a.pack_id is not None for a in allocs):
                self._store_allocs(conn, key, allocs, committed=True)
            stored = self._insert_events(conn, events, at)
            info = self._fetch(conn, key)
            assert info is not None
            return replace(info, alerts=tuple(stored))

        result = self.backend.run(tx)
        windows.committed()
        return result

    def mark_submitted(
        self,
        key: str,
        *,
        task_id: str | None = None,
        now: datetime | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> ReservationInfo:
        """Mark a reservation as (possibly) sent to Kling; from now on no timer may release it.

        Call it *before* the HTTP request. Calling it again (e.g. to add Kling's ``task_id``) is fine.
        ``also(conn)`` runs in the same transaction after the update (e.g. the gateway records the task id
        in its own table); if it raises, nothing is stored.

        Raises:
            ReservationResolvedError: the reservation was already released (e.g. by its TTL) or
                committed — do not submit the job.
        """

        def tx(conn: Connection) -> ReservationInfo:
            # The common case in one statement (the row lock is taken by the UPDATE itself): an open hold.
            row = conn.fetchone(
                "UPDATE reservations SET state = 'submitted', task_id = COALESCE(?, task_id) "
                f"WHERE id = ? AND state IN ('held', 'submitted') RETURNING {RESERVATION_COLUMNS}",
                (task_id, key),
            )
            if row is not None:
                if also is not None:
                    also(conn)
                return info_from_row(row)
            info = self._require(conn, key, lock=True)
            if info.state is ReservationState.HELD or info.state is ReservationState.SUBMITTED:
                conn.execute(
                    "UPDATE reservations SET state = 'submitted', task_id = COALESCE(?, task_id) WHERE id = ?",
                    (task_id, key),
                )
            elif task_id is not None and info.state is ReservationState.COMMITTED and info.task_id in (None, task_id):
                conn.execute("UPDATE reservations SET task_id = ? WHERE id = ?", (task_id, key))
            else:
                raise ReservationResolvedError(
                    f"reservation {key} is {info.state.value}; it must not be submitted to Kling"
                )
            if also is not None:
                also(conn)
            fresh = self._fetch(conn, key)
            assert fresh is not None
            return fresh

        return self.backend.run(tx)

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
                # The writes and every window's move in one round trip, in lock order: the hot rows (the
                # usage roll-up, the account-wide window) stay locked one round trip (COMMIT) after it.
                rows = conn.fetch_each(
                    [
                        _one_statement(writes),
                        *(
                            settle_window(budget.id, window.start_us, (held, charged, over), usd_moves)
                            for budget, window, held, charged, over in moves
                        ),
                    ]
                )
                if any(row is None for row in rows[1:]):
                    raise _WindowMissing
                moved = {budget.id: Counters(*row) for (budget, *_), row in zip(moves, rows[1:], strict=True)}  # type: ignore[misc]
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
                    if after is not None and self._may_alert(
                        config, budget, after, actual_delta - held_delta, actual_nano - info.usd_nano
                    ):
                        before = after.shifted(
                            held_milli=held_delta,
                            committed_milli=-actual_delta,
                            held_nano=info.usd_nano,
                            committed_nano=-actual_nano,
                        )
                        events += self._threshold_events(budget, window, before, after, at, key)
                    continue
                update = settle_window(budget.id, window.start_us, (held_delta, actual_delta, overage_delta), usd_moves)
                row = conn.fetchone(*update)
                if row is None and lock_window(conn, budget.id, window.start_us, exclusive=False):
                    row = conn.fetchone(*update)  # dialect hook: a concurrent creation is now committed or not
                if row is None:
                    continue  # window not materialised yet; its first job will fold this commit in
                after = Counters(*row)
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

    @staticmethod
    def _fetch_for_write(conn: Connection, key: str) -> tuple[ReservationInfo | None, bool, str | None]:
        """The reservation ``key`` if it exists, with the config lock taken in the same statement where the
        backend needs one; returns (reservation, whether the lock is now held, ``meta.config_version`` when
        it could be read in the same statement). A row read from a snapshot just older than the lock is fine
        here: a concurrent insert of the same key fails on the primary key and is retried."""
        expression = config_lock_expression(conn)  # dialect hook: see ledger/locks.py
        if expression is None:
            # One writer at a time (SQLite): the version can be read in the same statement.
            found = conn.fetchone(_FETCH_WITH_VERSION, (key,))
            assert found is not None
            return (None if found[1] is None else info_from_row(found[1:])), False, found[0]
        found = conn.fetchone(
            f"SELECT {expression}, r.* FROM (SELECT 1) AS one "
            f"LEFT JOIN (SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?) AS r ON true",
            (key,),
        )
        assert found is not None
        return (None if found[1] is None else info_from_row(found[1:])), True, None

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

    @staticmethod
    def _replay(info: ReservationInfo, request_hash: str) -> ReservationInfo:
        if info.request_hash != request_hash:
            raise IdempotencyConflictError(
                f"key {info.id!r} was already used for a different request; use a new key for a new request"
            )
        if info.state is ReservationState.DENIED:
            denial = denial_from_dict(info.detail["denial"])
            raise BudgetExceededError(denial.message(), denial)
        return replace(info, replayed=True)
