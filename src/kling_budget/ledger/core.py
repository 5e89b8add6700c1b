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

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kling_budget.budgets import Budget, BudgetStatus, Counters, Scope, check_admission, crossed_thresholds
from kling_budget.errors import (
    BudgetExceededError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.ledger.backend import Backend, Connection, Row
from kling_budget.ledger.locks import for_update, lock_config, lock_order, lock_window, skip_locked
from kling_budget.ledger.records import Pack, ReservationInfo, ReservationState, UsageRow, VerifyReport
from kling_budget.money import (
    format_units,
    format_usd,
    units_text,
    usd_nano_for_units,
    usd_text,
)
from kling_budget.types import AlertEvent, AlertKind, Attribution, Denial, PackType
from kling_budget.windows import Period, Window, from_micros, to_micros

__all__ = ["LIST_PRICE_NANO_PER_UNIT", "Ledger"]

LIST_PRICE_NANO_PER_UNIT: Mapping[PackType, int] = {
    PackType.VIDEO: 140_000_000,  # $0.14
    PackType.IMAGE: 3_500_000,  # $0.0035
    PackType.TRY_ON: 70_000_000,  # $0.07
}
BUCKET_MICROS = 15 * 60 * 1_000_000  # usage roll-up granularity: exact for every UTC offset in use
DENIAL_ALERT_INTERVAL_MICROS = 60 * 1_000_000
_RES_COLUMNS = (
    "id, kind, state, project, user_id, api_key, model, tags, product, pack_type, units_milli, usd_nano, "
    "actual_milli, actual_nano, overage_milli, overage_nano, over_budget, reserved_at, resolved_at, "
    "expires_at, task_id, detail, request_hash"
)
_BUDGET_COLUMNS = (
    "id, name, scope_project, scope_user, scope_api_key, scope_model, scope_tag, period, timezone, "
    "week_start, unit_pack, limit_milli, limit_nano, hard, thresholds"
)
_COUNTER_COLUMNS = "committed_milli, held_milli, overage_milli, committed_nano, held_nano, overage_nano"
_MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class _Alloc:
    pack_id: int | None
    milli: int
    price_nano: int
    per_milli: int

    @property
    def usd_nano(self) -> int:
        return usd_nano_for_units(self.milli, self.price_nano, self.per_milli)


class _NewWindows:
    """Window rows created by one transaction attempt; cached only after the transaction commits."""

    def __init__(self) -> None:
        self.config: _Config | None = None
        self.created: list[tuple[int, int]] = []

    def start(self, config: _Config) -> _Config:
        self.config, self.created = config, []
        return config

    def committed(self) -> None:
        if self.config is not None:
            self.config.known_windows.update(self.created)


class _Denied(Exception):
    def __init__(self, denial: Denial, budget_id: int, window: Window) -> None:
        super().__init__(denial.message())
        self.denial = denial
        self.budget_id = budget_id
        self.window = window


@dataclass(slots=True)
class _Config:
    version: str
    budgets: tuple[Budget, ...]
    pack_types: frozenset[str]
    known_windows: set[tuple[int, int]]


def tags_column(tags: Iterable[str]) -> str:
    """Tags as stored: ``,a,b,`` (sorted), or empty."""
    items = sorted({t for t in tags if t})
    return f",{','.join(items)}," if items else ""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def scope_filter(scope: Scope, table: str = "") -> tuple[str, list[Any]]:
    """SQL conditions (joined by AND, possibly empty) selecting the reservations in ``scope``."""
    prefix = f"{table}." if table else ""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("project", scope.project),
        ("user_id", scope.user),
        ("api_key", scope.api_key),
        ("model", scope.model),
    ):
        if value:
            conditions.append(f"{prefix}{column} = ?")
            params.append(value)
    if scope.tag:
        conditions.append(f"{prefix}tags LIKE ? ESCAPE '\\'")
        params.append(f"%,{_like_escape(scope.tag)},%")
    return " AND ".join(conditions), params


def budget_from_row(row: Row) -> Budget:
    """Rebuild a :class:`Budget` from a ``budgets`` row (``_BUDGET_COLUMNS`` order)."""
    return Budget(
        id=int(row[0]),
        name=row[1],
        scope=Scope(project=row[2], user=row[3], api_key=row[4], model=row[5], tag=row[6]),
        period=Period(row[7]),
        timezone=row[8],
        week_start=int(row[9]),
        unit_pack=PackType(row[10]),
        limit_units_milli=row[11],
        limit_usd_nano=row[12],
        hard=bool(row[13]),
        thresholds=tuple(int(t) for t in json.loads(row[14])),
    )


def _validate_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > _MAX_KEY_LENGTH:
        raise InvalidInputError(f"a reservation key must be a non-empty string of at most {_MAX_KEY_LENGTH} chars")
    return key


def _validate_amount(units_milli: int, what: str = "units") -> int:
    if isinstance(units_milli, bool) or not isinstance(units_milli, int) or units_milli < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer number of milli-units")
    return units_milli


class Ledger:
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
        self._config = _Config("", (), frozenset(), set())
        self._config_lock = threading.Lock()
        self._windows: dict[tuple[Period, str, int], Window] = {}

    def __repr__(self) -> str:
        return f"Ledger({self.backend.display_url!r})"

    def close(self) -> None:
        """Close the backend's connections."""
        self.backend.close()

    def now(self) -> datetime:
        """The ledger's clock."""
        return self._clock()

    # ----------------------------------------------------------------- configuration cache

    def _load_config(self, conn: Connection) -> _Config:
        lock_config(conn, exclusive=False)  # dialect hook: see ledger/locks.py
        row = conn.fetchone("SELECT value FROM meta WHERE key = 'config_version'")
        version = row[0] if row else ""
        config = self._config
        if config.version == version:
            return config
        budgets = tuple(budget_from_row(r) for r in conn.fetchall(f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY id"))
        pack_types = frozenset(r[0] for r in conn.fetchall("SELECT DISTINCT pack_type FROM packs"))
        fresh = _Config(version, budgets, pack_types, set())
        with self._config_lock:
            self._config = fresh
        return fresh

    @staticmethod
    def _bump_config(conn: Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'config_version'")

    # ----------------------------------------------------------------- budgets

    def set_budget(self, budget: Budget, *, now: datetime | None = None) -> Budget:
        """Create or replace the budget named ``budget.name``.

        Changing only limits, thresholds or hard/soft keeps the window counters. Changing what the budget
        covers (scope, period, time zone, week start, unit pack) re-derives its counters from the entries.
        """
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> Budget:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            row = conn.fetchone(f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE name = ?", (budget.name,))
            values = (
                budget.scope.project,
                budget.scope.user,
                budget.scope.api_key,
                budget.scope.model,
                budget.scope.tag,
                budget.period.value,
                budget.timezone,
                budget.week_start,
                budget.unit_pack.value,
                budget.limit_units_milli,
                budget.limit_usd_nano,
                int(budget.hard),
                json.dumps(list(budget.thresholds)),
            )
            if row is None:
                conn.execute(
                    "INSERT INTO budgets (name, scope_project, scope_user, scope_api_key, scope_model, "
                    "scope_tag, period, timezone, week_start, unit_pack, limit_milli, limit_nano, hard, "
                    "thresholds, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (budget.name, *values, at, at),
                )
            else:
                existing = budget_from_row(row)
                if existing.definition_key() != budget.definition_key():
                    conn.execute("DELETE FROM budget_windows WHERE budget_id = ?", (existing.id,))
                conn.execute(
                    "UPDATE budgets SET scope_project = ?, scope_user = ?, scope_api_key = ?, scope_model = ?, "
                    "scope_tag = ?, period = ?, timezone = ?, week_start = ?, unit_pack = ?, limit_milli = ?, "
                    "limit_nano = ?, hard = ?, thresholds = ?, updated_at = ? WHERE id = ?",
                    (*values, at, existing.id),
                )
            self._bump_config(conn)
            stored = conn.fetchone(f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE name = ?", (budget.name,))
            assert stored is not None
            return budget_from_row(stored)

        return self.backend.run(tx)

    def get_budget(self, name: str) -> Budget:
        """The budget called ``name``; :class:`ConfigurationError` names the existing ones if absent."""

        def tx(conn: Connection) -> Budget:
            row = conn.fetchone(f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE name = ?", (name,))
            if row is None:
                names = [r[0] for r in conn.fetchall("SELECT name FROM budgets ORDER BY name")]
                raise ConfigurationError(f"no budget named {name!r}; existing: {', '.join(names) if names else 'none'}")
            return budget_from_row(row)

        return self.backend.run(tx, write=False)

    def list_budgets(self) -> list[Budget]:
        """Every budget, by name."""
        rows = self.backend.run(
            lambda conn: conn.fetchall(f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY name"), write=False
        )
        return [budget_from_row(r) for r in rows]

    def delete_budget(self, name: str) -> None:
        """Delete a budget and its window counters (the entries, and so the spend history, stay)."""

        def tx(conn: Connection) -> None:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            row = conn.fetchone("SELECT id FROM budgets WHERE name = ?", (name,))
            if row is None:
                raise ConfigurationError(f"no budget named {name!r}")
            conn.execute("DELETE FROM budget_windows WHERE budget_id = ?", (row[0],))
            conn.execute("DELETE FROM budgets WHERE id = ?", (row[0],))
            self._bump_config(conn)

        self.backend.run(tx)

    def budget_status(self, name: str, *, now: datetime | None = None) -> BudgetStatus:
        """Limit, committed, held, remaining, percent and window of one budget at ``now``."""
        at = now or self.now()
        budget = self.get_budget(name)
        return self.backend.run(lambda conn: self._status(conn, budget, at), write=False)

    def statuses(self, *, now: datetime | None = None) -> list[BudgetStatus]:
        """The status of every budget at ``now``, by name."""
        at = now or self.now()

        def tx(conn: Connection) -> list[BudgetStatus]:
            rows = conn.fetchall(f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY name")
            return [self._status(conn, budget_from_row(r), at) for r in rows]

        return self.backend.run(tx, write=False)

    def matching_budgets(self, attribution: Attribution) -> list[Budget]:
        """The budgets a job with ``attribution`` counts against."""
        config = self.backend.run(self._load_config, write=False)
        return [b for b in config.budgets if b.scope.matches(attribution)]

    def _status(self, conn: Connection, budget: Budget, at: datetime) -> BudgetStatus:
        assert budget.id is not None
        window = budget.window(at)
        row = conn.fetchone(
            f"SELECT {_COUNTER_COLUMNS} FROM budget_windows WHERE budget_id = ? AND window_start = ?",
            (budget.id, window.start_us),
        )
        counters = Counters(*row) if row else self._fold(conn, budget, window)
        return BudgetStatus(budget=budget, window=window, counters=counters, as_of=at)

    @staticmethod
    def _fold_select(budget: Budget, window: Window, *, exclude: str = "") -> tuple[str, list[Any]]:
        conditions, params = scope_filter(budget.scope)
        where = "reserved_at >= ?" + (" AND reserved_at < ?" if window.end is not None else "")
        where_params: list[Any] = [window.start_us] + ([window.end_us] if window.end is not None else [])
        if conditions:
            where += " AND " + conditions
        if exclude:  # the job being reserved: its hold is added by its own UPDATE
            where += " AND id <> ?"
            params = [*params, exclude]
        pack = budget.unit_pack.value
        select = (
            "SELECT "
            "COALESCE(SUM(CASE WHEN state = 'committed' AND pack_type = ? THEN actual_milli ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state IN ('held', 'submitted') AND pack_type = ? THEN units_milli ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state = 'committed' AND pack_type = ? THEN overage_milli ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state = 'committed' THEN actual_nano ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state IN ('held', 'submitted') THEN usd_nano ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state = 'committed' THEN overage_nano ELSE 0 END), 0) "
            f"FROM reservations WHERE {where}"
        )
        return select, [pack, pack, pack, *where_params, *params]

    def _fold(self, conn: Connection, budget: Budget, window: Window) -> Counters:
        select, params = self._fold_select(budget, window)
        row = conn.fetchone(select, params)
        assert row is not None
        return Counters(*(int(v) for v in row))

    def _ensure_window(
        self,
        conn: Connection,
        config: _Config,
        budget: Budget,
        window: Window,
        created: list[tuple[int, int]],
        exclude: str = "",
    ) -> None:
        """Create the budget's row for ``window`` if missing, initialised from the jobs already in it.

        ``created`` collects the rows this transaction made; they join the cache only once it commits.
        """
        assert budget.id is not None
        key = (budget.id, window.start_us)
        if key in config.known_windows:
            return
        if conn.fetchone(
            "SELECT 1 FROM budget_windows WHERE budget_id = ? AND window_start = ?", (budget.id, window.start_us)
        ):
            created.append(key)
            return
        lock_window(conn, budget.id, window.start_us, exclusive=True)  # dialect hook: see ledger/locks.py
        select, params = self._fold_select(budget, window, exclude=exclude)
        conn.execute(
            f"INSERT INTO budget_windows (budget_id, window_start, window_end, {_COUNTER_COLUMNS}) "
            f"SELECT ?, ?, ?, {select[len('SELECT ') :]} ON CONFLICT (budget_id, window_start) DO NOTHING",
            [budget.id, window.start_us, window.end_us, *params],
        )
        created.append(key)

    # ----------------------------------------------------------------- packs

    def add_pack(self, pack: Pack, *, now: datetime | None = None) -> Pack:
        """Register a purchased resource pack (units, price paid, validity)."""
        if not pack.name.strip() or len(pack.name) > 100:
            raise ConfigurationError("a pack needs a name of 1 to 100 characters")
        if pack.units_milli <= 0:
            raise ConfigurationError("a pack must contain more than 0 units")
        if pack.price_nano < 0:
            raise ConfigurationError("a pack's price cannot be negative")
        if pack.expires_at is not None and pack.expires_at <= pack.starts_at:
            raise ConfigurationError("a pack must expire after it starts")
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> Pack:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            if conn.fetchone("SELECT 1 FROM packs WHERE name = ?", (pack.name,)):
                raise ConfigurationError(f"a pack named {pack.name!r} already exists")
            conn.execute(
                "INSERT INTO packs (name, pack_type, units_milli, price_nano, starts_at, expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    pack.name,
                    pack.pack_type.value,
                    pack.units_milli,
                    pack.price_nano,
                    to_micros(pack.starts_at),
                    None if pack.expires_at is None else to_micros(pack.expires_at),
                    at,
                ),
            )
            self._bump_config(conn)
            return self._packs(conn, "WHERE name = ?", (pack.name,))[0]

        return self.backend.run(tx)

    def list_packs(self) -> list[Pack]:
        """Every registered pack, soonest expiry first."""
        return self.backend.run(lambda conn: self._packs(conn, "", ()), write=False)

    def remove_pack(self, name: str) -> None:
        """Remove a pack nothing was drawn from (otherwise it stays, for the record)."""

        def tx(conn: Connection) -> None:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            row = conn.fetchone("SELECT id FROM packs WHERE name = ?", (name,))
            if row is None:
                raise ConfigurationError(f"no pack named {name!r}")
            used = conn.fetchone("SELECT COUNT(*) FROM allocations WHERE pack_id = ?", (row[0],))
            if used and used[0]:
                raise ConfigurationError(
                    f"pack {name!r} has {used[0]} jobs drawn from it and stays in the ledger for the record"
                )
            conn.execute("DELETE FROM packs WHERE id = ?", (row[0],))
            self._bump_config(conn)

        self.backend.run(tx)

    @staticmethod
    def _packs(conn: Connection, where: str, params: Sequence[Any]) -> list[Pack]:
        rows = conn.fetchall(
            "SELECT id, name, pack_type, units_milli, price_nano, starts_at, expires_at, held_milli, "
            f"committed_milli FROM packs {where} ORDER BY COALESCE(expires_at, 9223372036854775807), id",
            params,
        )
        return [
            Pack(
                id=r[0],
                name=r[1],
                pack_type=PackType(r[2]),
                units_milli=r[3],
                price_nano=r[4],
                starts_at=from_micros(r[5]),
                expires_at=None if r[6] is None else from_micros(r[6]),
                held_milli=r[7],
                committed_milli=r[8],
            )
            for r in rows
        ]

    def _allocate(self, conn: Connection, config: _Config, pack_type: PackType, milli: int, at: int) -> list[_Alloc]:
        """Draw ``milli`` units from active packs, soonest expiry first; the rest at the list price."""
        allocs: list[_Alloc] = []
        remaining = milli
        if remaining > 0 and pack_type.value in config.pack_types:
            lock = " FOR UPDATE" if conn.dialect == "postgresql" else ""
            rows = conn.fetchall(
                "SELECT id, units_milli - held_milli - committed_milli, price_nano, units_milli FROM packs "
                "WHERE pack_type = ? AND starts_at <= ? AND (expires_at IS NULL OR expires_at > ?) "
                "AND held_milli + committed_milli < units_milli "
                f"ORDER BY COALESCE(expires_at, 9223372036854775807), id{lock}",
                (pack_type.value, at, at),
            )
            for pack_id, available, price_nano, units_milli in rows:
                take = min(remaining, int(available))
                allocs.append(_Alloc(pack_id, take, price_nano, units_milli))
                remaining -= take
                if remaining == 0:
                    break
        if remaining > 0 or not allocs:
            allocs.append(_Alloc(None, remaining, self.list_prices[pack_type], 1000))
        return allocs

    @staticmethod
    def _store_allocs(
        conn: Connection,
        reservation_id: str,
        allocs: Sequence[_Alloc],
        *,
        committed: bool,
        first_position: int = 0,
    ) -> None:
        for position, alloc in enumerate(allocs, start=first_position):
            conn.execute(
                "INSERT INTO allocations (reservation_id, position, pack_id, held_milli, committed_milli, "
                "price_nano, per_milli) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reservation_id,
                    position,
                    alloc.pack_id,
                    0 if committed else alloc.milli,
                    alloc.milli if committed else 0,
                    alloc.price_nano,
                    alloc.per_milli,
                ),
            )
            if alloc.pack_id is not None and alloc.milli:
                column = "committed_milli" if committed else "held_milli"
                conn.execute(f"UPDATE packs SET {column} = {column} + ? WHERE id = ?", (alloc.milli, alloc.pack_id))

    # ----------------------------------------------------------------- operations

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
        _validate_key(key)
        _validate_amount(units_milli)
        pack = PackType(str(pack_type))
        at_dt = now or self.now()
        at = to_micros(at_dt)
        request_hash = _request_hash("reserve", units_milli, pack, attribution, product)
        expires = None if ttl is None else to_micros(at_dt + ttl)

        windows = _NewWindows()

        def tx(conn: Connection) -> ReservationInfo:
            existing = self._fetch(conn, key)
            if existing is not None:
                return self._replay(existing, request_hash)
            config = windows.start(self._load_config(conn))
            allocs = self._allocate(conn, config, pack, units_milli, at)
            usd_nano = sum(a.usd_nano for a in allocs)
            self._bucket(conn, attribution, pack, at, held=(units_milli, usd_nano))
            info = self._insert_reservation(
                conn,
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
            conn.execute(
                "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, 'reserve', ?, ?, ?)",
                (key, units_milli, usd_nano, at),
            )
            if also is not None:
                also(conn)
            if any(a.pack_id is not None for a in allocs):
                self._store_allocs(conn, key, allocs, committed=False)
            events: list[AlertEvent] = []
            # Budget rows last, broadest last: a row lock is held from its UPDATE to COMMIT, and the
            # account-wide row is the one every job waits for (see ledger/locks.py).
            for budget in self._matching(config, attribution):
                window = self._window(budget, at_dt)
                self._ensure_window(conn, config, budget, window, windows.created, exclude=key)
                units_delta = budget.units_delta(pack, units_milli)
                after = self._add_held(conn, budget, window, units_delta, usd_nano)
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
                    after = self._add_held(conn, budget, window, units_delta, usd_nano)
                before = after.shifted(held_milli=-units_delta, held_nano=-usd_nano)
                events += self._threshold_events(budget, window, before, after, at, key)
            stored = self._insert_events(conn, events, at)
            return replace(info, alerts=tuple(stored))

        try:
            result = self.backend.run(tx)
        except _Denied as denied:
            return self._deny(key, request_hash, denied, attribution, product, pack, units_milli, at, detail)
        windows.committed()
        return result

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
            percent=_percent_text(denial.committed + denial.held, denial.limit),
            reservation_id=key,
            created_at=from_micros(at).isoformat(),
        )

        def tx(conn: Connection) -> ReservationInfo:
            existing = self._fetch(conn, key)
            if existing is not None:  # a concurrent call with the same key won
                return existing
            self._insert_reservation(
                conn,
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
        _validate_key(key)
        _validate_amount(units_milli)
        pack = PackType(str(pack_type))
        at_dt = now or self.now()
        at = to_micros(at_dt)
        request_hash = _request_hash("record", units_milli, pack, attribution, product)

        windows = _NewWindows()

        def tx(conn: Connection) -> ReservationInfo:
            existing = self._fetch(conn, key)
            if existing is not None:
                return self._replay(existing, request_hash)
            config = windows.start(self._load_config(conn))
            allocs = self._allocate(conn, config, pack, units_milli, at)
            usd_nano = sum(a.usd_nano for a in allocs)
            self._bucket(conn, attribution, pack, at, committed=(units_milli, usd_nano), jobs=1)  # before budget rows
            events: list[AlertEvent] = []
            over: list[tuple[Budget, Window]] = []
            for budget in self._matching(config, attribution):
                window = self._window(budget, at_dt)
                self._ensure_window(conn, config, budget, window, windows.created)
                units_delta = budget.units_delta(pack, units_milli)
                row = conn.fetchone(
                    "UPDATE budget_windows SET committed_milli = committed_milli + ?, "
                    "committed_nano = committed_nano + ? WHERE budget_id = ? AND window_start = ? "
                    f"RETURNING {_COUNTER_COLUMNS}",
                    (units_delta, usd_nano, budget.id, window.start_us),
                )
                assert row is not None
                after = Counters(*row)
                before = after.shifted(committed_milli=-units_delta, committed_nano=-usd_nano)
                events += self._threshold_events(budget, window, before, after, at, key)
                if _over_limit(budget, after):
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
            self._insert_reservation(
                conn,
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
            conn.execute(
                "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, 'record', ?, ?, ?)",
                (key, units_milli, usd_nano, at),
            )
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

    def commit(self, key: str, *, units_milli: int | None = None, now: datetime | None = None) -> ReservationInfo:
        """Settle a reservation with what Kling charged (default: the held amount).

        Units above the hold are recorded as overage (they count against the budgets and raise an alert);
        units below it return the difference to the budgets.
        """
        if units_milli is not None:
            _validate_amount(units_milli, "charged units")
        at_dt = now or self.now()
        at = to_micros(at_dt)

        def tx(conn: Connection) -> ReservationInfo:
            info = self._require(conn, key, lock=True)
            actual = info.units_milli if units_milli is None else units_milli
            if info.state is ReservationState.COMMITTED:
                if info.kind == "reserve" and info.actual_milli == actual:
                    return replace(info, replayed=True)
                raise ReservationResolvedError(
                    f"reservation {key} was already committed with {format_units(info.actual_milli or 0)} units"
                )
            if not info.state.is_open:
                raise ReservationResolvedError(f"reservation {key} is {info.state.value} and cannot be committed")
            config = self._load_config(conn)
            actual_nano = self._settle_allocs(conn, config, info, actual, at)
            overage = max(0, actual - info.units_milli)
            overage_nano = max(0, actual_nano - info.usd_nano)
            conn.execute(
                "UPDATE reservations SET state = 'committed', actual_milli = ?, actual_nano = ?, overage_milli = ?, "
                "overage_nano = ?, resolved_at = ? WHERE id = ?",
                (actual, actual_nano, overage, overage_nano, at, key),
            )
            conn.execute(
                "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, 'commit', ?, ?, ?)",
                (key, actual, actual_nano, at),
            )
            self._bucket(
                conn,
                info.attribution,
                info.pack_type,
                to_micros(info.reserved_at),
                held=(-info.units_milli, -info.usd_nano),
                committed=(actual, actual_nano),
                jobs=1,
            )
            events: list[AlertEvent] = []
            reserved_dt = info.reserved_at
            for budget in self._matching(config, info.attribution):  # budget rows last (see reserve)
                window = self._window(budget, reserved_dt)
                held_delta = budget.units_delta(info.pack_type, info.units_milli)
                actual_delta = budget.units_delta(info.pack_type, actual)
                overage_delta = budget.units_delta(info.pack_type, overage)
                update = (
                    "UPDATE budget_windows SET held_milli = held_milli - ?, committed_milli = committed_milli + ?, "
                    "overage_milli = overage_milli + ?, held_nano = held_nano - ?, "
                    "committed_nano = committed_nano + ?, overage_nano = overage_nano + ? "
                    f"WHERE budget_id = ? AND window_start = ? RETURNING {_COUNTER_COLUMNS}",
                    (
                        held_delta,
                        actual_delta,
                        overage_delta,
                        info.usd_nano,
                        actual_nano,
                        overage_nano,
                        budget.id,
                        window.start_us,
                    ),
                )
                row = conn.fetchone(*update)
                if row is None and lock_window(conn, budget.id, window.start_us, exclusive=False):
                    row = conn.fetchone(*update)  # dialect hook: a concurrent creation is now committed or not
                if row is None:
                    continue  # window not materialised yet; its first job will fold this commit in
                after = Counters(*row)
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
            stored = self._insert_events(conn, events, at)
            return replace(
                info,
                state=ReservationState.COMMITTED,
                actual_milli=actual,
                actual_nano=actual_nano,
                overage_milli=overage,
                overage_nano=overage_nano,
                resolved_at=from_micros(at),
                alerts=tuple(stored),
            )

        return self.backend.run(tx)

    def release(self, key: str, *, reason: str = "", now: datetime | None = None) -> ReservationInfo:
        """Return a reservation's hold to its budgets (Kling failed the task, or it was never sent)."""
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> ReservationInfo:
            info = self._require(conn, key, lock=True)
            if info.state is ReservationState.RELEASED:
                return replace(info, replayed=True)
            if not info.state.is_open:
                raise ReservationResolvedError(f"reservation {key} is {info.state.value} and cannot be released")
            config = self._load_config(conn)
            self._release_in(conn, config, info, at, reason)
            fresh = self._fetch(conn, key)
            assert fresh is not None
            return fresh

        return self.backend.run(tx)

    def _release_in(self, conn: Connection, config: _Config, info: ReservationInfo, at: int, reason: str) -> None:
        # Packs first, budget windows last: the lock order of reserve and commit (see ledger/locks.py).
        for pack_id, held in conn.fetchall(
            "SELECT pack_id, held_milli FROM allocations WHERE reservation_id = ? AND pack_id IS NOT NULL",
            (info.id,),
        ):
            conn.execute("UPDATE packs SET held_milli = held_milli - ? WHERE id = ?", (held, pack_id))
        detail = dict(info.detail)
        if reason:
            detail["release_reason"] = reason
        conn.execute(
            "UPDATE reservations SET state = 'released', resolved_at = ?, detail = ? WHERE id = ?",
            (at, json.dumps(detail, default=str), info.id),
        )
        conn.execute(
            "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, 'release', ?, ?, ?)",
            (info.id, info.units_milli, info.usd_nano, at),
        )
        self._bucket(
            conn,
            info.attribution,
            info.pack_type,
            to_micros(info.reserved_at),
            held=(-info.units_milli, -info.usd_nano),
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

    # ----------------------------------------------------------------- reads

    def get_reservation(self, key: str) -> ReservationInfo:
        """One reservation by id (:class:`ReservationNotFoundError` if absent)."""
        return self.backend.run(lambda conn: self._require(conn, key), write=False)

    def find_by_task(self, task_id: str) -> ReservationInfo | None:
        """The reservation that Kling task ``task_id`` was submitted for, if any."""

        def tx(conn: Connection) -> ReservationInfo | None:
            row = conn.fetchone(f"SELECT {_RES_COLUMNS} FROM reservations WHERE task_id = ?", (task_id,))
            return None if row is None else _info_from_row(row)

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
        sql = f"SELECT {_RES_COLUMNS} FROM reservations {where} ORDER BY reserved_at {order}, id LIMIT ?"
        rows = self.backend.run(lambda conn: conn.fetchall(sql, [*params, limit]), write=False)
        return [_info_from_row(r) for r in rows]

    def pending_alerts(self, *, limit: int = 100) -> list[AlertEvent]:
        """Alert events not yet delivered, oldest first (the outbox)."""
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                "SELECT id, payload FROM alert_events WHERE delivered_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ),
            write=False,
        )
        return [_event_from_payload(r[0], r[1]) for r in rows]

    def recent_alerts(self, *, limit: int = 50) -> list[AlertEvent]:
        """The newest alert events, delivered or not."""
        rows = self.backend.run(
            lambda conn: conn.fetchall("SELECT id, payload FROM alert_events ORDER BY id DESC LIMIT ?", (limit,)),
            write=False,
        )
        return [_event_from_payload(r[0], r[1]) for r in rows]

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

    # ----------------------------------------------------------------- internals

    def _window(self, budget: Budget, at: datetime) -> Window:
        """``budget.window(at)``, reusing the last window computed for the same calendar (hot path)."""
        key = (budget.period, budget.timezone, budget.week_start)
        window = self._windows.get(key)
        if window is None or not window.contains(at):
            window = budget.window(at)
            self._windows[key] = window
        return window

    @staticmethod
    def _matching(config: _Config, attribution: Attribution) -> list[Budget]:
        """The budgets ``attribution`` counts against, in lock order (see ``ledger/locks.py``)."""
        return sorted((b for b in config.budgets if b.scope.matches(attribution)), key=lock_order)

    @staticmethod
    def _add_held(conn: Connection, budget: Budget, window: Window, units_delta: int, usd_nano: int) -> Counters | None:
        conditions = ["budget_id = ?", "window_start = ?"]
        params: list[Any] = [units_delta, usd_nano, budget.id, window.start_us]
        if budget.hard:
            if budget.limit_units_milli is not None and units_delta > 0:
                conditions.append("committed_milli + held_milli + ? <= ?")
                params += [units_delta, budget.limit_units_milli]
            if budget.limit_usd_nano is not None and usd_nano > 0:
                conditions.append("committed_nano + held_nano + ? <= ?")
                params += [usd_nano, budget.limit_usd_nano]
        row = conn.fetchone(
            "UPDATE budget_windows SET held_milli = held_milli + ?, held_nano = held_nano + ? "
            f"WHERE {' AND '.join(conditions)} RETURNING {_COUNTER_COLUMNS}",
            params,
        )
        return None if row is None else Counters(*row)

    def _fold_or_row(self, conn: Connection, budget: Budget, window: Window) -> Counters:
        row = conn.fetchone(
            f"SELECT {_COUNTER_COLUMNS} FROM budget_windows WHERE budget_id = ? AND window_start = ?",
            (budget.id, window.start_us),
        )
        return Counters(*row) if row else self._fold(conn, budget, window)

    def _settle_allocs(self, conn: Connection, config: _Config, info: ReservationInfo, actual: int, at: int) -> int:
        """Turn the held allocations into committed ones for ``actual`` units; return the dollars (nano).

        Allocation rows exist only for reservations that drew from a pack; any other hold was priced at one
        rate, so its committed part costs the same rate.
        """
        rows = (
            conn.fetchall(
                "SELECT position, pack_id, held_milli, price_nano, per_milli FROM allocations "
                "WHERE reservation_id = ? ORDER BY position",
                (info.id,),
            )
            if info.pack_type.value in config.pack_types
            else []
        )
        if not rows:
            covered = min(actual, info.units_milli)
            usd = usd_nano_for_units(covered, info.usd_nano, info.units_milli) if covered else 0
            remaining = actual - covered
        else:
            remaining = actual
            usd = 0
        for position, pack_id, held, price_nano, per_milli in rows:
            used = min(remaining, held)
            remaining -= used
            conn.execute(
                "UPDATE allocations SET committed_milli = ? WHERE reservation_id = ? AND position = ?",
                (used, info.id, position),
            )
            if pack_id is not None:
                conn.execute(
                    "UPDATE packs SET held_milli = held_milli - ?, committed_milli = committed_milli + ? WHERE id = ?",
                    (held, used, pack_id),
                )
            usd += usd_nano_for_units(used, price_nano, per_milli)
        if remaining > 0:
            extra = self._allocate(conn, config, info.pack_type, remaining, at)
            if any(a.pack_id is not None for a in extra):
                self._store_allocs(conn, info.id, extra, committed=True, first_position=len(rows))
            usd += sum(a.usd_nano for a in extra)
        return usd

    @staticmethod
    def _insert_reservation(
        conn: Connection,
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
    ) -> ReservationInfo:
        detail_text = json.dumps(dict(detail or {}), default=str, sort_keys=True)
        resolved = at if state in (ReservationState.COMMITTED, ReservationState.DENIED) else None
        conn.execute(
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
        return ReservationInfo(
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
            detail=json.loads(detail_text),
            request_hash=request_hash,
        )

    @staticmethod
    def _bucket(
        conn: Connection,
        attribution: Attribution,
        pack: PackType,
        at: int,
        *,
        held: tuple[int, int] = (0, 0),
        committed: tuple[int, int] = (0, 0),
        jobs: int = 0,
    ) -> None:
        bucket = at - at % BUCKET_MICROS
        conn.execute(
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
            events.append(_budget_event(AlertKind.THRESHOLD, budget, window, after, kind, at, key, threshold))
        for kind, limit, old, new in (
            ("units", budget.limit_units_milli, before.used_milli, after.used_milli),
            ("usd", budget.limit_usd_nano, before.used_nano, after.used_nano),
        ):
            if limit and old < limit <= new:
                events.append(_budget_event(AlertKind.EXHAUSTED, budget, window, after, kind, at, key, None))
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
        row = conn.fetchone(f"SELECT {_RES_COLUMNS} FROM reservations WHERE id = ?{lock_sql}", (key,))
        return None if row is None else _info_from_row(row)

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
            denial = _denial_from_dict(info.detail["denial"])
            raise BudgetExceededError(denial.message(), denial)
        return replace(info, replayed=True)


def _request_hash(kind: str, units_milli: int, pack: PackType, attribution: Attribution, product: str) -> str:
    text = json.dumps(
        [
            kind,
            units_milli,
            pack.value,
            attribution.project,
            attribution.user,
            attribution.api_key,
            attribution.model,
            list(attribution.tags),
            product,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _info_from_row(row: Row) -> ReservationInfo:
    detail = json.loads(row[21]) if row[21] else {}
    tags = tuple(t for t in row[7].split(",") if t)
    return ReservationInfo(
        id=row[0],
        kind=row[1],
        state=ReservationState(row[2]),
        attribution=Attribution(project=row[3], user=row[4], api_key=row[5], model=row[6], tags=tags),
        product=row[8],
        pack_type=PackType(row[9]),
        units_milli=row[10],
        usd_nano=row[11],
        actual_milli=row[12],
        actual_nano=row[13],
        overage_milli=row[14],
        overage_nano=row[15],
        over_budget=bool(row[16]),
        reserved_at=from_micros(row[17]),
        resolved_at=None if row[18] is None else from_micros(row[18]),
        expires_at=None if row[19] is None else from_micros(row[19]),
        task_id=row[20],
        detail=detail,
        request_hash=row[22],
    )


def _over_limit(budget: Budget, counters: Counters) -> bool:
    return bool(
        (budget.limit_units_milli is not None and counters.used_milli > budget.limit_units_milli)
        or (budget.limit_usd_nano is not None and counters.used_nano > budget.limit_usd_nano)
    )


def _percent_text(used: int, limit: int) -> str:
    return str((Decimal(used) * 100 / Decimal(limit)).quantize(Decimal("0.01"))) if limit else ""


def _budget_event(
    kind: AlertKind,
    budget: Budget,
    window: Window,
    counters: Counters,
    limit_kind: str,
    at: int,
    key: str,
    threshold: int | None,
) -> AlertEvent:
    if limit_kind == "units":
        limit, used, held = budget.limit_units_milli or 0, counters.used_milli, counters.held_milli
        fmt: Callable[[int], str] = lambda v: units_text(v)  # noqa: E731
        human: Callable[[int], str] = lambda v: f"{format_units(v)} units"  # noqa: E731
    else:
        limit, used, held = budget.limit_usd_nano or 0, counters.used_nano, counters.held_nano
        fmt = lambda v: usd_text(v)  # noqa: E731
        human = format_usd
    percent = _percent_text(used, limit)
    what = f"reached {threshold}%" if kind is AlertKind.THRESHOLD else "is exhausted"
    message = (
        f"budget '{budget.name}' ({budget.scope.describe()}, {budget.period.value}) {what}: "
        f"{human(used)} of {human(limit)} used ({percent}%), {human(held)} of it held by running jobs"
    )
    suffix = f":{threshold}" if threshold is not None else ""
    return AlertEvent(
        kind=kind,
        message=message,
        dedupe_key=f"{kind.value}:{budget.id}:{window.start_us}{suffix}",
        budget=budget.name,
        scope=budget.scope.describe(),
        period=budget.period.value,
        window_start=window.start.isoformat(),
        window_end=window.end.isoformat() if window.end else "",
        limit_kind=limit_kind,
        limit=fmt(limit),
        used=fmt(used),
        held=fmt(held),
        percent=percent,
        threshold=threshold,
        reservation_id=key,
        created_at=from_micros(at).isoformat(),
    )


def _event_from_payload(event_id: int, payload: str) -> AlertEvent:
    data = json.loads(payload)
    return AlertEvent(
        id=event_id,
        kind=AlertKind(data["kind"]),
        message=data["message"],
        dedupe_key=data["dedupe_key"],
        budget=data.get("budget", ""),
        scope=data.get("scope", ""),
        period=data.get("period", ""),
        window_start=data.get("window_start", ""),
        window_end=data.get("window_end", ""),
        limit_kind=data.get("limit_kind", ""),
        limit=data.get("limit", ""),
        used=data.get("used", ""),
        held=data.get("held", ""),
        percent=data.get("percent", ""),
        threshold=data.get("threshold"),
        reservation_id=data.get("reservation_id", ""),
        created_at=data.get("created_at", ""),
    )


def _denial_from_dict(data: Mapping[str, Any]) -> Denial:
    from kling_budget.money import units_to_milli, usd_to_nano

    convert = units_to_milli if data["limit_kind"] == "units" else usd_to_nano
    return Denial(
        budget=data["budget"],
        scope=data["scope"],
        period=data["period"],
        window_start=datetime.fromisoformat(data["window_start"]),
        window_end=datetime.fromisoformat(data["window_end"]) if data["window_end"] else None,
        limit_kind=data["limit_kind"],
        limit=convert(data["limit"]),
        committed=convert(data["committed"]),
        held=convert(data["held"]),
        price=convert(data["price"]),
        reset_at=datetime.fromisoformat(data["reset_at"]) if data["reset_at"] else None,
    )
