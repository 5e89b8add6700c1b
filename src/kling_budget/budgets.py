"""Budgets and the pure decisions made about them: scope matching, limit checks, thresholds, status.

Nothing here does I/O. The ledger reads counters and calls these functions with ``now`` and amounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from kling_budget.errors import ConfigurationError
from kling_budget.money import (
    Number,
    format_units,
    format_usd,
    parse_decimal,
    units_text,
    units_to_milli,
    usd_text,
    usd_to_nano,
)
from kling_budget.numeric import shown
from kling_budget.types import Attribution, Denial, PackType
from kling_budget.windows import Period, Window, parse_weekday, window_at, zone

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Budget",
    "BudgetStatus",
    "Counters",
    "Scope",
    "check_admission",
    "crossed_thresholds",
    "parse_thresholds",
]

DEFAULT_THRESHOLDS = (50, 80, 100)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which jobs a budget covers. Every non-empty field must match; all empty = the whole account."""

    project: str = ""
    user: str = ""
    api_key: str = ""
    model: str = ""
    tag: str = ""

    def matches(self, attribution: Attribution) -> bool:
        """Whether a job with ``attribution`` counts against this scope."""
        return (
            (not self.project or self.project == attribution.project)
            and (not self.user or self.user == attribution.user)
            and (not self.api_key or self.api_key == attribution.api_key)
            and (not self.model or self.model == attribution.model)
            and (not self.tag or self.tag in attribution.tags)
        )

    def describe(self) -> str:
        """``project=marketing, user=alice`` or ``whole account``."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("project", self.project),
                ("user", self.user),
                ("api_key", self.api_key),
                ("model", self.model),
                ("tag", self.tag),
            )
            if value
        ]
        return ", ".join(parts) or "whole account"


def _typed_number(value: Number | float, what: str) -> Number:
    """Floats only reach here from the recipe's ``Budget(...)`` literals; read them as typed."""
    if isinstance(value, float):
        return repr(value)
    return value


def parse_thresholds(value: str | Iterable[int | str]) -> tuple[int, ...]:
    """Alert thresholds in percent from ``"50,80,100"`` or a sequence; sorted, unique, each 1..1000."""
    items = value.split(",") if isinstance(value, str) else list(value)
    result: set[int] = set()
    for item in items:
        text = str(item).strip().rstrip("%")
        if not text:
            continue
        if not (text.isascii() and text.isdigit() and len(text) <= 4) or not 1 <= int(text) <= 1000:
            raise ConfigurationError(
                f"alert threshold {shown(item)} is not a whole percentage between 1 and 1000 (e.g. 50,80,100)"
            )
        result.add(int(text))
    return tuple(sorted(result))


@dataclass(frozen=True, slots=True, init=False)
class Budget:
    """A spending limit over a scope and a calendar period.

    Limits are exact integers: ``limit_units_milli`` counts units of ``unit_pack`` (a units limit on video
    units ignores image units, which are worth 40 times less), ``limit_usd_nano`` counts dollars of every
    job in scope. Build one with :meth:`create` to get validation and friendly units.

    The recipe's form also works and is completed by ``CostTracker.set_budget(key, budget)`` (the key
    names the budget and, as in the recipe, is the project it covers)::

        Budget(period=BudgetPeriod.MONTHLY, limit_credits=10000, limit_usd=600.00, alert_threshold=0.8)

    There, and only there, float literals are accepted and read by their shortest decimal form
    (``600.00`` → ``Decimal("600.0")``), which is exactly what was typed.
    """

    name: str
    scope: Scope
    period: Period
    limit_units_milli: int | None
    limit_usd_nano: int | None
    hard: bool
    thresholds: tuple[int, ...]
    timezone: str
    week_start: int
    unit_pack: PackType
    id: int | None = field(compare=False)

    def __init__(
        self,
        name: str = "",
        scope: Scope | None = None,
        period: Period | str = Period.MONTHLY,
        limit_units_milli: int | None = None,
        limit_usd_nano: int | None = None,
        hard: bool = True,
        thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS,
        timezone: str = "UTC",
        week_start: int = 0,
        unit_pack: PackType = PackType.VIDEO,
        id: int | None = None,
        *,
        limit_credits: Number | float | None = None,
        limit_usd: Number | float | None = None,
        alert_threshold: Number | float | None = None,
    ) -> None:
        if limit_credits is not None:
            limit_units_milli = units_to_milli(_typed_number(limit_credits, "limit_credits"), "limit_credits")
        if limit_usd is not None:
            limit_usd_nano = usd_to_nano(_typed_number(limit_usd, "limit_usd"), "limit_usd")
        if alert_threshold is not None:
            fraction = parse_decimal(_typed_number(alert_threshold, "alert_threshold"), "alert_threshold")
            percent = fraction * 100 if fraction <= 1 else fraction
            if percent != percent.to_integral_value() or not 1 <= percent <= 1000:
                raise ConfigurationError(
                    f"alert_threshold must be a fraction like 0.8 (or a whole percentage), got {alert_threshold!r}"
                )
            thresholds = tuple(sorted({int(percent), 100}))
        values = {
            "name": name,
            "scope": scope or Scope(),
            "period": Period.parse(period),
            "limit_units_milli": limit_units_milli,
            "limit_usd_nano": limit_usd_nano,
            "hard": hard,
            "thresholds": tuple(thresholds),
            "timezone": timezone,
            "week_start": week_start,
            "unit_pack": unit_pack,
            "id": id,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        period: Period | str = Period.MONTHLY,
        limit_units: Number | None = None,
        limit_usd: Number | None = None,
        project: str | None = None,
        user: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        hard: bool = True,
        alert_at: str | Sequence[int | str] = DEFAULT_THRESHOLDS,
        timezone: str = "UTC",
        week_start: str | int = 0,
        unit_pack: PackType | str = PackType.VIDEO,
    ) -> Budget:
        """Validate and build a budget from user-facing values (units and dollars as exact numbers)."""
        if not _NAME.match(name or ""):
            raise ConfigurationError(
                f"budget name {name!r} must be 1-100 characters of letters, digits and _ . : @ -, "
                "starting with a letter or digit"
            )
        if limit_units is None and limit_usd is None:
            raise ConfigurationError(f"budget {name!r} needs a limit: --limit-units and/or --limit-usd")
        units = None if limit_units is None else units_to_milli(limit_units, "limit in units")
        usd = None if limit_usd is None else usd_to_nano(limit_usd, "limit in USD")
        for amount, label in ((units, "limit in units"), (usd, "limit in USD")):
            if amount is not None and amount <= 0:
                raise ConfigurationError(f"{label} must be greater than 0")
        zone(timezone)
        try:
            pack = PackType(str(unit_pack))
        except ValueError:
            accepted = ", ".join(p.value for p in PackType)
            raise ConfigurationError(f"unknown pack type {unit_pack!r}; accepted: {accepted}") from None
        return cls(
            name=name,
            scope=Scope(
                project=(project or "").strip(),
                user=(user or "").strip(),
                api_key=(api_key or "").strip(),
                model=(model or "").strip(),
                tag=(tag or "").strip(),
            ),
            period=Period.parse(period),
            limit_units_milli=units,
            limit_usd_nano=usd,
            hard=hard,
            thresholds=parse_thresholds(alert_at),
            timezone=timezone,
            week_start=parse_weekday(week_start),
            unit_pack=pack,
        )

    def window(self, now: datetime) -> Window:
        """The window of this budget that contains ``now``."""
        return window_at(self.period, now, self.timezone, self.week_start)

    def units_delta(self, pack_type: PackType | str, units_milli: int) -> int:
        """How many of a job's milli-units count against this budget's units limit."""
        return units_milli if pack_type == self.unit_pack else 0  # a PackType is its value (StrEnum)

    def definition_key(self) -> tuple[object, ...]:
        """What decides which jobs and windows count; changing it re-derives the budget's counters."""
        return (self.scope, self.period, self.timezone, self.week_start, self.unit_pack)


@dataclass(frozen=True, slots=True)
class Counters:
    """A budget window's counters. ``committed`` includes ``overage`` (charges above the hold)."""

    committed_milli: int = 0
    held_milli: int = 0
    overage_milli: int = 0
    committed_nano: int = 0
    held_nano: int = 0
    overage_nano: int = 0

    def shifted(
        self, *, committed_milli: int = 0, held_milli: int = 0, committed_nano: int = 0, held_nano: int = 0
    ) -> Counters:
        """These counters moved by the given amounts (overage unchanged): the state before an update."""
        return Counters(
            self.committed_milli + committed_milli,
            self.held_milli + held_milli,
            self.overage_milli,
            self.committed_nano + committed_nano,
            self.held_nano + held_nano,
            self.overage_nano,
        )

    @property
    def used_milli(self) -> int:
        """Committed plus held units: what admission and alerts are evaluated on."""
        return self.committed_milli + self.held_milli

    @property
    def used_nano(self) -> int:
        """Committed plus held dollars."""
        return self.committed_nano + self.held_nano


def _percent(used: int, limit: int | None) -> Decimal | None:
    if not limit:
        return None
    return (Decimal(used) * 100 / Decimal(limit)).quantize(Decimal("0.01"))


def usage_percent(budget: Budget, counters: Counters) -> Decimal:
    """The higher of the units and the USD percentage of the limit used (committed + held)."""
    values = [
        p
        for p in (
            _percent(counters.used_milli, budget.limit_units_milli),
            _percent(counters.used_nano, budget.limit_usd_nano),
        )
        if p is not None
    ]
    return max(values) if values else Decimal(0)


def check_admission(
    budget: Budget, window: Window, counters: Counters, units_milli: int, usd_nano: int
) -> Denial | None:
    """The denial a hard budget gives a job of ``units_milli``/``usd_nano``, or ``None`` if it fits.

    A job fits when committed + held + price stays within every limit the job adds to. Soft budgets never
    deny. A job that adds nothing to a limit (price 0 or another pack type) is never denied by that limit.
    """
    if not budget.hard:
        return None
    checks = (
        ("units", budget.limit_units_milli, counters.committed_milli, counters.held_milli, units_milli),
        ("usd", budget.limit_usd_nano, counters.committed_nano, counters.held_nano, usd_nano),
    )
    for kind, limit, committed, held, price in checks:
        if limit is not None and price > 0 and committed + held + price > limit:
            return Denial(
                budget=budget.name,
                scope=budget.scope.describe(),
                period=budget.period.value,
                window_start=window.start,
                window_end=window.end,
                limit_kind=kind,
                limit=limit,
                committed=committed,
                held=held,
                price=price,
                reset_at=window.end,
            )
    return None


def crossed_thresholds(budget: Budget, before: Counters, after: Counters) -> list[tuple[int, str]]:
    """Thresholds (percent) that ``after`` reaches and ``before`` did not, with the limit ("units"/"usd").

    Evaluated on committed + held, so an alert fires when the money is promised, before the jobs finish.
    """
    crossed: list[tuple[int, str]] = []
    for threshold in budget.thresholds:
        for kind, limit, old, new in (
            ("units", budget.limit_units_milli, before.used_milli, after.used_milli),
            ("usd", budget.limit_usd_nano, before.used_nano, after.used_nano),
        ):
            if limit and old * 100 < threshold * limit <= new * 100:
                crossed.append((threshold, kind))
                break
    return crossed


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where a budget stands in its current window."""

    budget: Budget
    window: Window
    counters: Counters
    as_of: datetime

    @property
    def remaining_units_milli(self) -> int | None:
        """Units left before the units limit (never negative), or ``None`` without a units limit."""
        limit = self.budget.limit_units_milli
        return None if limit is None else max(0, limit - self.counters.used_milli)

    @property
    def remaining_usd_nano(self) -> int | None:
        """Dollars left before the USD limit (never negative), or ``None`` without a USD limit."""
        limit = self.budget.limit_usd_nano
        return None if limit is None else max(0, limit - self.counters.used_nano)

    @property
    def percent(self) -> Decimal:
        """Highest percentage of a limit used, committed + held."""
        return usage_percent(self.budget, self.counters)

    @property
    def exhausted(self) -> bool:
        """Whether any limit is fully used."""
        return self.percent >= 100

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; amounts as exact decimal strings."""
        c, b = self.counters, self.budget

        def units(value: int | None) -> str | None:
            return None if value is None else units_text(value)

        def usd(value: int | None) -> str | None:
            return None if value is None else usd_text(value)

        return {
            "budget": b.name,
            "scope": b.scope.describe(),
            "period": b.period.value,
            "timezone": b.timezone,
            "hard": b.hard,
            "unit_pack": b.unit_pack.value,
            "thresholds": list(b.thresholds),
            "limit_units": units(b.limit_units_milli),
            "limit_usd": usd(b.limit_usd_nano),
            "committed_units": units(c.committed_milli),
            "held_units": units(c.held_milli),
            "overage_units": units(c.overage_milli),
            "remaining_units": units(self.remaining_units_milli),
            "committed_usd": usd(c.committed_nano),
            "held_usd": usd(c.held_nano),
            "overage_usd": usd(c.overage_nano),
            "remaining_usd": usd(self.remaining_usd_nano),
            "percent": str(self.percent),
            "window_start": self.window.start.isoformat(),
            "window_end": self.window.end.isoformat() if self.window.end else None,
            "resets_at": self.window.end.isoformat() if self.window.end else None,
            "as_of": self.as_of.isoformat(),
        }

    def describe_limits(self) -> str:
        """``10 units / $1.50`` style summary of the limits."""
        parts = []
        if self.budget.limit_units_milli is not None:
            parts.append(f"{format_units(self.budget.limit_units_milli)} units")
        if self.budget.limit_usd_nano is not None:
            parts.append(format_usd(self.budget.limit_usd_nano))
        return " / ".join(parts)
