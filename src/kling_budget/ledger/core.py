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

:class:`Ledger` is put together from parts: this module opens holds (``reserve``, ``record``,
``mark_submitted``); ``resolve.py`` closes them (``commit``, ``release``, expiry); ``reads.py`` reads
reservations and alerts; ``budget_store.py`` and ``packs.py`` keep budgets and packs; ``_shared.py`` holds
what several of them use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kling_budget.budgets import Budget, Counters, check_admission
from kling_budget.errors import BudgetExceededError, IdempotencyConflictError, ReservationResolvedError
from kling_budget.ledger._shared import Write, _entry_write, _write_all
from kling_budget.ledger.backend import Backend, Connection, RowMissing, Statements
from kling_budget.ledger.budget_store import BudgetStore, LedgerConfig, NewWindows
from kling_budget.ledger.counters import HoldRefused, add_held, hold_all, hold_limits, one_statement, pipelined
from kling_budget.ledger.events import DENIAL_ALERT_INTERVAL_MICROS, over_limit, percent_text
from kling_budget.ledger.locks import config_lock_expression, lock_order
from kling_budget.ledger.one_trip import OneTrip, Prepared, WindowMove
from kling_budget.ledger.packs import PackStore
from kling_budget.ledger.reads import LedgerReads
from kling_budget.ledger.records import ReservationInfo, ReservationState
from kling_budget.ledger.resolve import HoldResolver
from kling_budget.ledger.rows import (
    COUNTER_COLUMNS,
    RESERVATION_COLUMNS,
    denial_from_dict,
    hash_request,
    info_from_row,
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


# SQLite only (one writer at a time): the configuration version read with the reservation, one statement.
_FETCH_WITH_VERSION = (
    "SELECT m.value, r.* FROM meta AS m LEFT JOIN "
    f"(SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?) AS r ON 1 WHERE m.key = 'config_version'"
)


class _Denied(Exception):
    def __init__(self, denial: Denial, budget_id: int, window: Window) -> None:
        super().__init__(denial.message())
        self.denial = denial
        self.budget_id = budget_id
        self.window = window


class _NotOpen(Exception):
    """``mark_submitted`` in one round trip found no open hold (or a caller's statement no row): the long way."""


class Ledger(HoldResolver, LedgerReads, BudgetStore, PackStore):
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

    def _request(
        self,
        kind: str,
        key: str,
        units_milli: int,
        pack_type: PackType | str,
        attribution: Attribution,
        product: str,
        now: datetime | None,
    ) -> tuple[PackType, datetime, int, str]:
        """The checked arguments of a ``reserve`` or ``record`` (``kind``): its pack type, its time (as a
        datetime and in microseconds) and the hash that tells a replay of the same request from another one."""
        validate_key(key)
        validate_amount(units_milli)
        pack = PackType(str(pack_type))
        at_dt = now or self.now()
        return pack, at_dt, to_micros(at_dt), hash_request(kind, units_milli, pack, attribution, product)

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
        pack, at_dt, at, request_hash = self._request("reserve", key, units_milli, pack_type, attribution, product, now)
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
        pack, at_dt, at, request_hash = self._request("record", key, units_milli, pack_type, attribution, product, now)

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
            update = (
                "UPDATE reservations SET state = 'submitted', task_id = COALESCE(?, task_id) "
                f"WHERE id = ? AND state IN ('held', 'submitted') RETURNING {RESERVATION_COLUMNS}",
                (task_id, key),
            )
            if fast[0] and isinstance(also, Statements) and pipelined(conn):
                # With the caller's statements and COMMIT, in one round trip (PostgreSQL). A hold that is not
                # open, or a required statement of the caller's that finds no row, stops that COMMIT: then
                # the long way, which answers exactly.
                statements = [update, *((sql, params) for sql, params, _ in also.items)]
                required = [0, *(index + 1 for index, item in enumerate(also.items) if item[2])]
                try:
                    rows = conn.fetch_each(statements, required=required, last=True)
                except RowMissing:
                    raise _NotOpen from None
                return info_from_row(rows[0])  # type: ignore[arg-type]
            row = conn.fetchone(*update)
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

        fast = [True]
        try:
            return self.backend.run(tx)
        except _NotOpen:
            fast[0] = False
            return self.backend.run(tx)

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
