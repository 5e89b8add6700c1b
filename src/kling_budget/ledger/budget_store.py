"""Budgets and their window counters: the configuration cache, budget admin, status and window folds."""

from __future__ import annotations

import json
import threading
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kling_budget.budgets import Budget, BudgetStatus, Counters
from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.locks import lock_config, lock_order, lock_window
from kling_budget.ledger.rows import BUDGET_COLUMNS, COUNTER_COLUMNS, budget_from_row, scope_filter
from kling_budget.types import Attribution, PackType
from kling_budget.windows import Period, Window, to_micros

__all__ = ["BudgetStore", "LedgerBase", "LedgerConfig", "NewWindows", "alert_points", "crosses"]


@dataclass(slots=True)
class LedgerConfig:
    """What a process caches of the ledger's configuration, valid while ``meta.config_version`` is unchanged.

    Besides the budgets it memoises what the hot path derives from them: the budgets an attribution
    matches (in lock order) and, per budget, the used amounts at which an alert fires.
    """

    version: str
    budgets: tuple[Budget, ...]
    pack_types: frozenset[str]
    known_windows: set[tuple[int, int]]
    matching: dict[Attribution, tuple[Budget, ...]] = field(default_factory=dict)
    alert_points: dict[int | None, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


_MAX_CACHED_ATTRIBUTIONS = 4096


def alert_points(budget: Budget) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The used amounts (units, dollars) at which a job crosses one of ``budget``'s thresholds or its limit.

    A change from ``old`` to ``new`` crosses threshold ``t`` of limit ``L`` when ``old * 100 < t * L <= new *
    100`` (see :func:`~kling_budget.budgets.crossed_thresholds`), i.e. when ``old < ceil(t * L / 100) <= new``
    for integers: so a job whose move skips every point can raise no threshold or exhaustion alert.
    """
    points = []
    for limit in (budget.limit_units_milli, budget.limit_usd_nano):
        values = {-(-t * limit // 100) for t in budget.thresholds} | {limit} if limit else set()
        points.append(tuple(sorted(values)))
    return points[0], points[1]


def crosses(points: tuple[int, ...], old: int, new: int) -> bool:
    """Whether a move of the used amount from ``old`` to ``new`` reaches one of ``points`` (sorted)."""
    index = bisect_right(points, old)
    return index < len(points) and points[index] <= new


class NewWindows:
    """Window rows created by one transaction attempt; cached only after the transaction commits."""

    def __init__(self) -> None:
        self.config: LedgerConfig | None = None
        self.created: list[tuple[int, int]] = []

    def start(self, config: LedgerConfig) -> LedgerConfig:
        """Begin an attempt under ``config``."""
        self.config, self.created = config, []
        return config

    def committed(self) -> None:
        if self.config is not None:
            self.config.known_windows.update(self.created)


class LedgerBase:
    """State shared by the parts of :class:`~kling_budget.ledger.core.Ledger`: the backend and its caches.

    The configuration (budgets, pack types) is cached per process and reloaded whenever another process
    bumps ``meta.config_version``; the current window of each calendar is cached too (hot path).
    """

    backend: Backend
    list_prices: dict[PackType, int]
    _config: LedgerConfig
    _config_lock: threading.Lock
    _windows: dict[tuple[Period, str, int], Window]

    def now(self) -> datetime:
        """The ledger's clock."""
        raise NotImplementedError

    def _load_config(self, conn: Connection, *, locked: bool = False, version: str | None = None) -> LedgerConfig:
        """The configuration, reloaded when another process changed it; takes the config lock shared first
        unless the caller already holds it (``locked``). ``version``: ``meta.config_version`` when the
        caller already read it in this transaction, after the lock."""
        if version is None:
            if not locked:
                lock_config(conn, exclusive=False)  # dialect hook: see ledger/locks.py
            row = conn.fetchone("SELECT value FROM meta WHERE key = 'config_version'")
            version = row[0] if row else ""
        config = self._config
        if config.version == version:
            return config
        budgets = tuple(budget_from_row(r) for r in conn.fetchall(f"SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY id"))
        pack_types = frozenset(r[0] for r in conn.fetchall("SELECT DISTINCT pack_type FROM packs"))
        fresh = LedgerConfig(version, budgets, pack_types, set())
        with self._config_lock:
            self._config = fresh
        return fresh

    @staticmethod
    def _bump_config(conn: Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'config_version'")

    def _window(self, budget: Budget, at: datetime) -> Window:
        """``budget.window(at)``, reusing the last window computed for the same calendar (hot path)."""
        key = (budget.period, budget.timezone, budget.week_start)
        window = self._windows.get(key)
        if window is None or not window.contains(at):
            window = budget.window(at)
            self._windows[key] = window
        return window

    @staticmethod
    def _matching(config: LedgerConfig, attribution: Attribution) -> tuple[Budget, ...]:
        """The budgets ``attribution`` counts against, in lock order (see ``ledger/locks.py``)."""
        found = config.matching.get(attribution)
        if found is None:
            found = tuple(sorted((b for b in config.budgets if b.scope.matches(attribution)), key=lock_order))
            if len(config.matching) >= _MAX_CACHED_ATTRIBUTIONS:
                config.matching.clear()
            config.matching[attribution] = found
        return found

    @staticmethod
    def _alert_points(config: LedgerConfig, budget: Budget) -> tuple[tuple[int, ...], tuple[int, ...]]:
        points = config.alert_points.get(budget.id)
        if points is None:
            points = config.alert_points[budget.id] = alert_points(budget)
        return points


class BudgetStore(LedgerBase):
    """Budget administration and status: the budget half of the ledger."""

    def set_budget(self, budget: Budget, *, now: datetime | None = None) -> Budget:
        """Create or replace the budget named ``budget.name``.

        Changing only limits, thresholds or hard/soft keeps the window counters. Changing what the budget
        covers (scope, period, time zone, week start, unit pack) re-derives its counters from the entries.
        """
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> Budget:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            row = conn.fetchone(f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE name = ?", (budget.name,))
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
            stored = conn.fetchone(f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE name = ?", (budget.name,))
            assert stored is not None
            return budget_from_row(stored)

        return self.backend.run(tx)

    def get_budget(self, name: str) -> Budget:
        """The budget called ``name``; :class:`ConfigurationError` names the existing ones if absent."""
        return self.backend.run(lambda conn: self._get_budget(conn, name), write=False)

    @staticmethod
    def _get_budget(conn: Connection, name: str) -> Budget:
        row = conn.fetchone(f"SELECT {BUDGET_COLUMNS} FROM budgets WHERE name = ?", (name,))
        if row is None:
            names = [r[0] for r in conn.fetchall("SELECT name FROM budgets ORDER BY name")]
            raise ConfigurationError(f"no budget named {name!r}; existing: {', '.join(names) if names else 'none'}")
        return budget_from_row(row)

    def list_budgets(self) -> list[Budget]:
        """Every budget, by name."""
        rows = self.backend.run(
            lambda conn: conn.fetchall(f"SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY name"), write=False
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
        return self.backend.run(lambda conn: self._status(conn, self._get_budget(conn, name), at), write=False)

    def statuses(self, *, now: datetime | None = None) -> list[BudgetStatus]:
        """The status of every budget at ``now``, by name."""
        at = now or self.now()

        def tx(conn: Connection) -> list[BudgetStatus]:
            rows = conn.fetchall(f"SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY name")
            return [self._status(conn, budget_from_row(r), at) for r in rows]

        return self.backend.run(tx, write=False)

    def matching_budgets(self, attribution: Attribution) -> list[Budget]:
        """The budgets a job with ``attribution`` counts against."""
        config = self.backend.run(self._load_config, write=False)
        return [b for b in config.budgets if b.scope.matches(attribution)]

    def matching_statuses(self, attribution: Attribution, *, now: datetime | None = None) -> list[BudgetStatus]:
        """The status at ``now`` of every budget a job with ``attribution`` counts against, in one read."""
        at = now or self.now()

        def tx(conn: Connection) -> list[BudgetStatus]:
            config = self._load_config(conn)
            return [self._status(conn, b, at) for b in config.budgets if b.scope.matches(attribution)]

        return self.backend.run(tx, write=False)

    def _status(self, conn: Connection, budget: Budget, at: datetime) -> BudgetStatus:
        assert budget.id is not None
        window = budget.window(at)
        row = conn.fetchone(
            f"SELECT {COUNTER_COLUMNS} FROM budget_windows WHERE budget_id = ? AND window_start = ?",
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
        config: LedgerConfig,
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
            f"INSERT INTO budget_windows (budget_id, window_start, window_end, {COUNTER_COLUMNS}) "
            f"SELECT ?, ?, ?, {select[len('SELECT ') :]} ON CONFLICT (budget_id, window_start) DO NOTHING",
            [budget.id, window.start_us, window.end_us, *params],
        )
        created.append(key)

    def _fold_or_row(self, conn: Connection, budget: Budget, window: Window) -> Counters:
        row = conn.fetchone(
            f"SELECT {COUNTER_COLUMNS} FROM budget_windows WHERE budget_id = ? AND window_start = ?",
            (budget.id, window.start_us),
        )
        return Counters(*row) if row else self._fold(conn, budget, window)
