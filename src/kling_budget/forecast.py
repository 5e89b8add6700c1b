"""Spend forecasts: the burn rate inside a budget's current window → spend at the window's end and the
time the limit runs out.

The core (:func:`forecast`) is pure: it takes the budget, its counters and ``now``. The rate is what was
used (committed + held, so running jobs count) divided by the *real* time elapsed since the window
started, and the projection runs to the end of *this* window — a daily budget projects to midnight in
its time zone, not to the end of the month, and a day across a DST change lasts 23 or 25 hours. All
arithmetic is on integers (milli-units, nano-dollars, microseconds); Decimal only at the edges.

A total budget has no window end: its rate comes from a trailing period of usage (:class:`Trailing`)
and only an exhaustion time is projected. :func:`forecast_budgets` reads what the core needs from a ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from kling_budget.budgets import Budget, Counters
from kling_budget.money import format_units, format_usd, units_text, usd_text
from kling_budget.windows import Period, Window, from_micros, to_micros, zone

if TYPE_CHECKING:
    from kling_budget.ledger import Ledger

__all__ = ["Forecast", "LimitForecast", "Trailing", "forecast", "forecast_budgets"]

HOUR_US = 3_600_000_000
MIN_ELAPSED_US = HOUR_US  # below this a burn rate is mostly noise
MIN_ELAPSED_SHARE = 20  # ... and below 1/20 (5 %) of the window
TRAILING_DAYS = 7


@dataclass(frozen=True, slots=True)
class Trailing:
    """Usage over a trailing period, the rate source of budgets without a window end."""

    units_milli: int
    usd_nano: int
    span: timedelta


def _div_round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


@dataclass(frozen=True, slots=True)
class LimitForecast:
    """The forecast of one limit of a budget (units or dollars).

    Attributes:
        limit_kind: ``units`` (milli-units) or ``usd`` (nano-dollars); every amount is in that unit.
        used: committed + held now.
        rate_per_hour: burn rate, per hour, exact (``None`` without elapsed time or trailing usage).
        projected: used at the window's end at the current rate (``None`` for a total budget).
        exhaustion_at: when the limit runs out at the current rate, if before the window ends; ``None``
            if not (or if it already has: see ``exhausted``).
    """

    limit_kind: str
    limit: int
    used: int
    rate_per_hour: Decimal | None
    projected: int | None
    exhaustion_at: datetime | None

    @property
    def exhausted(self) -> bool:
        """Whether the limit is already fully used."""
        return self.used >= self.limit

    @property
    def will_exceed(self) -> bool:
        """Whether the projection goes past the limit (or it is already exhausted)."""
        return self.exhausted or (self.projected is not None and self.projected > self.limit)

    def percent(self, amount: int | None) -> Decimal | None:
        """``amount`` as a percentage of the limit (two decimals)."""
        if amount is None or not self.limit:
            return None
        return (Decimal(amount) * 100 / Decimal(self.limit)).quantize(Decimal("0.01"))

    def fmt(self, amount: int) -> str:
        """``12.5 units`` or ``$3.40``."""
        return f"{format_units(amount)} units" if self.limit_kind == "units" else format_usd(amount)

    def fmt_rough(self, amount: int) -> str:
        """A projected amount for people: dollars to the cent, units to a tenth (projections are not exact)."""
        if self.limit_kind == "units":
            return f"{(Decimal(amount) / 1000).quantize(Decimal('0.1'), ROUND_HALF_UP).normalize():f} units"
        return f"${(Decimal(amount) / 10**9).quantize(Decimal('0.01'), ROUND_HALF_UP):f}"

    def decimal(self, amount: int | None) -> str | None:
        """An amount as an exact decimal string in units or dollars."""
        if amount is None:
            return None
        return units_text(amount) if self.limit_kind == "units" else usd_text(amount)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; amounts as exact decimal strings."""
        rate = None
        if self.rate_per_hour is not None:
            scale = Decimal(1000) if self.limit_kind == "units" else Decimal(10**9)
            rate = str((self.rate_per_hour / scale).quantize(Decimal("0.000001"), ROUND_HALF_UP).normalize())
        return {
            "limit_kind": self.limit_kind,
            "limit": self.decimal(self.limit),
            "used": self.decimal(self.used),
            "percent": str(self.percent(self.used)),
            "rate_per_hour": rate,
            "projected": self.decimal(self.projected),
            "projected_percent": None if self.projected is None else str(self.percent(self.projected)),
            "exhaustion_at": self.exhaustion_at.isoformat() if self.exhaustion_at else None,
            "exhausted": self.exhausted,
            "will_exceed": self.will_exceed,
        }


@dataclass(frozen=True, slots=True)
class Forecast:
    """Where a budget is heading in its current window.

    ``confident`` is ``False`` while too little of the window has passed for a rate to mean much (less
    than an hour, or less than 5 % of the window); forecast alerts wait for it.
    """

    budget: str
    period: str
    timezone: str
    window_start: datetime
    window_end: datetime | None
    as_of: datetime
    limits: tuple[LimitForecast, ...]
    confident: bool

    @property
    def will_exceed(self) -> bool:
        """Whether any limit is projected to be exceeded in this window."""
        return any(f.will_exceed for f in self.limits)

    @property
    def exhaustion_at(self) -> datetime | None:
        """The earliest projected exhaustion time of any limit (inside the window), or ``None``."""
        times = [f.exhaustion_at for f in self.limits if f.exhaustion_at is not None]
        return min(times) if times else None

    @property
    def elapsed(self) -> timedelta:
        """Real time since the window started (for a total budget: since the epoch)."""
        return self.as_of - self.window_start

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "budget": self.budget,
            "period": self.period,
            "timezone": self.timezone,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "as_of": self.as_of.isoformat(),
            "confident": self.confident,
            "will_exceed": self.will_exceed,
            "exhaustion_at": self.exhaustion_at.isoformat() if self.exhaustion_at else None,
            "limits": [f.to_dict() for f in self.limits],
        }

    def describe(self) -> str:
        """One line for people, in the budget's time zone."""
        tz = zone(self.timezone)
        parts = []
        for f in self.limits:
            if f.projected is not None:
                text = f"{f.fmt_rough(f.projected)} of {f.fmt(f.limit)} projected ({f.percent(f.projected)}%)"
            else:
                text = f"{f.fmt(f.used)} of {f.fmt(f.limit)} used"
            if f.exhausted:
                text += ", already exhausted"
            elif f.exhaustion_at is not None:
                text += f", runs out {f.exhaustion_at.astimezone(tz).isoformat(timespec='minutes')}"
            parts.append(text)
        end = f" by {self.window_end.astimezone(tz).isoformat(timespec='minutes')}" if self.window_end else ""
        note = "" if self.confident else " (early in the window: rough)"
        return f"{'; '.join(parts) or 'no limit'}{end}{note}"


def _limit_forecast(
    kind: str, limit: int, used: int, now_us: int, window: Window, trailing: int | None, span_us: int | None
) -> LimitForecast:
    end_us = window.end_us
    projected: int | None = None
    rate: Decimal | None = None
    exhaustion: datetime | None = None
    if end_us is not None:
        elapsed = now_us - window.start_us
        total = end_us - window.start_us
        if elapsed > 0:
            rate = Decimal(used) * HOUR_US / Decimal(elapsed)
            projected = _div_round(used * total, elapsed)
            if 0 < used < limit:
                at = now_us + _ceil_div((limit - used) * elapsed, used)
                exhaustion = from_micros(at) if at < end_us else None
        else:
            projected = used
    elif trailing is not None and span_us:
        rate = Decimal(trailing) * HOUR_US / Decimal(span_us)
        if trailing > 0 and used < limit:
            exhaustion = from_micros(now_us + _ceil_div((limit - used) * span_us, trailing))
    return LimitForecast(kind, limit, used, rate, projected, exhaustion)


def forecast(
    budget: Budget,
    counters: Counters,
    now: datetime,
    *,
    window: Window | None = None,
    trailing: Trailing | None = None,
) -> Forecast:
    """The forecast of ``budget`` at ``now`` from its window's counters.

    Args:
        budget: the budget (its period and time zone give the window).
        counters: the current window's counters (committed and held).
        now: an aware datetime inside the window.
        window: the window the counters belong to (default: the budget's window at ``now``).
        trailing: recent usage, the rate source for a total budget (ignored for windowed budgets).
    """
    window = window or budget.window(now)
    now_us = to_micros(now)
    span_us = None if trailing is None else trailing.span // timedelta(microseconds=1)
    limits = []
    if budget.limit_units_milli is not None:
        limits.append(
            _limit_forecast(
                "units",
                budget.limit_units_milli,
                counters.used_milli,
                now_us,
                window,
                None if trailing is None else trailing.units_milli,
                span_us,
            )
        )
    if budget.limit_usd_nano is not None:
        limits.append(
            _limit_forecast(
                "usd",
                budget.limit_usd_nano,
                counters.used_nano,
                now_us,
                window,
                None if trailing is None else trailing.usd_nano,
                span_us,
            )
        )
    if window.end_us is not None:
        elapsed = now_us - window.start_us
        confident = elapsed >= MIN_ELAPSED_US and elapsed * MIN_ELAPSED_SHARE >= window.end_us - window.start_us
    else:
        confident = span_us is not None and span_us >= 24 * HOUR_US
    return Forecast(
        budget=budget.name,
        period=budget.period.value,
        timezone=budget.timezone,
        window_start=window.start,
        window_end=window.end,
        as_of=now,
        limits=tuple(limits),
        confident=confident,
    )


def _trailing_usage(ledger: Ledger, budget: Budget, now: datetime) -> Trailing:
    span = timedelta(days=TRAILING_DAYS)
    filters = {
        name: value
        for name, value in (
            ("project", budget.scope.project),
            ("user", budget.scope.user),
            ("api_key", budget.scope.api_key),
            ("model", budget.scope.model),
            ("tag", budget.scope.tag),
        )
        if value
    }
    # Through ``now`` itself: a job reserved at this very instant is part of the trailing rate.
    rows = ledger.usage(start=now - span, end=now + timedelta(microseconds=1), group_by=("pack_type",), filters=filters)
    units = sum(r.committed_milli + r.held_milli for r in rows if r.group.get("pack_type") == budget.unit_pack.value)
    usd = sum(r.committed_nano + r.held_nano for r in rows)
    return Trailing(units, usd, span)


def forecast_budgets(ledger: Ledger, names: Sequence[str] = (), *, now: datetime | None = None) -> list[Forecast]:
    """Forecasts of the named budgets (default: every budget) at ``now``, from the ledger's counters.

    Total budgets take their rate from the last 7 days of usage in their scope.
    """
    at = now or ledger.now()
    statuses = [ledger.budget_status(n, now=at) for n in names] if names else ledger.statuses(now=at)
    result = []
    for status in statuses:
        trailing = _trailing_usage(ledger, status.budget, at) if status.budget.period is Period.TOTAL else None
        result.append(forecast(status.budget, status.counters, at, window=status.window, trailing=trailing))
    return result
