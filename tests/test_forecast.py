"""Forecasts against hand-computed cases: DST days and weeks, month ends, daily budgets (#31934)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kling_budget.budgets import Budget, Counters
from kling_budget.forecast import Trailing, forecast, forecast_budgets
from kling_budget.ledger import Ledger
from kling_budget.types import Attribution, PackType

U = 1000  # milli-units per unit
USD = 10**9  # nano-dollars per dollar


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def units_budget(period: str, limit: int, timezone: str = "UTC", **kw: object) -> Budget:
    return Budget.create("b", period=period, limit_units=limit, timezone=timezone, **kw)  # type: ignore[arg-type]


def test_berlin_spring_forward_day_has_23_hours() -> None:
    """2026-03-29 in Berlin lasts 23 h: 11 units in the first 11 h project to 23 units, not 24."""
    fc = forecast(units_budget("daily", 20, "Europe/Berlin"), Counters(committed_milli=11 * U), utc(2026, 3, 29, 10))
    [limit] = fc.limits
    assert (fc.window_start, fc.window_end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert fc.elapsed == timedelta(hours=11)
    assert limit.projected == 23 * U
    assert limit.exhaustion_at == utc(2026, 3, 29, 19)  # 9 more units at 1 unit/h
    assert limit.rate_per_hour == Decimal(U)
    assert fc.will_exceed and fc.confident


def test_berlin_fall_back_day_has_25_hours() -> None:
    """2026-10-25 in Berlin lasts 25 h: 13 units in 13 h project to 25; a 30-unit limit is not reached."""
    fc = forecast(units_budget("daily", 30, "Europe/Berlin"), Counters(held_milli=13 * U), utc(2026, 10, 25, 11))
    [limit] = fc.limits
    assert (fc.window_start, fc.window_end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert limit.projected == 25 * U
    assert limit.exhaustion_at is None
    assert not fc.will_exceed


def test_new_york_week_with_spring_forward_has_167_hours() -> None:
    """The week of 2026-03-02 in New York is 167 h; 72 units in 72 h project to 167 and run out Sunday 07:00."""
    fc = forecast(units_budget("weekly", 150, "America/New_York"), Counters(committed_milli=72 * U), utc(2026, 3, 5, 5))
    [limit] = fc.limits
    assert (fc.window_start, fc.window_end) == (utc(2026, 3, 2, 5), utc(2026, 3, 9, 4))
    assert limit.projected == 167 * U
    assert limit.exhaustion_at == utc(2026, 3, 8, 11)
    assert "runs out 2026-03-08T07:00-04:00" in fc.describe()


def test_new_york_fall_back_day_in_dollars() -> None:
    """2026-11-01 in New York lasts 25 h: $13 in 13 h project to $25 (USD limits use nano-dollars)."""
    budget = Budget.create("b", period="daily", limit_usd=30, timezone="America/New_York")
    fc = forecast(budget, Counters(committed_nano=10 * USD, held_nano=3 * USD), utc(2026, 11, 1, 17))
    [limit] = fc.limits
    assert fc.window_end is not None and fc.window_end - fc.window_start == timedelta(hours=25)
    assert limit.projected == 25 * USD
    assert limit.to_dict()["projected"] == "25.00"
    assert limit.to_dict()["rate_per_hour"] == "1"


@pytest.mark.parametrize(
    ("now", "used", "hours", "projected"),
    [
        (utc(2026, 2, 8), 100, 168, 400),  # February 2026: 28 days = 672 h
        (utc(2028, 2, 8), 168, 168, 696),  # February 2028 (leap): 29 days = 696 h
        (utc(2026, 1, 11), 240, 240, 744),  # January: 31 days = 744 h
        (utc(2026, 4, 11), 240, 240, 720),  # April: 30 days = 720 h
    ],
)
def test_month_lengths(now: datetime, used: int, hours: int, projected: int) -> None:
    """A monthly window projects over its real length: 28, 29, 30 or 31 days."""
    fc = forecast(units_budget("monthly", 10_000), Counters(committed_milli=used * U), now)
    assert fc.elapsed == timedelta(hours=hours)
    assert fc.limits[0].projected == projected * U


def test_berlin_march_has_743_hours() -> None:
    """March 2026 in Berlin has 31 days minus the DST hour: 240 units in 240 h project to 743."""
    fc = forecast(
        units_budget("monthly", 1000, "Europe/Berlin"), Counters(committed_milli=240 * U), utc(2026, 3, 10, 23)
    )
    assert (fc.window_start, fc.window_end) == (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    assert fc.limits[0].projected == 743 * U


def test_february_exhaustion_time() -> None:
    """100 of 300 units after 7 days of February run out after 14 more days, on Feb 22."""
    fc = forecast(units_budget("monthly", 300), Counters(committed_milli=100 * U), utc(2026, 2, 8))
    assert fc.limits[0].exhaustion_at == utc(2026, 2, 22)


def test_daily_budget_projects_to_its_own_midnight_not_month_end() -> None:
    """#31934: a daily budget at 6 of 10 units by noon projects 12 at midnight and runs out at 20:00."""
    fc = forecast(units_budget("daily", 10), Counters(committed_milli=6 * U), utc(2026, 1, 15, 12))
    assert fc.window_end == utc(2026, 1, 16)
    assert fc.limits[0].projected == 12 * U
    assert fc.exhaustion_at == utc(2026, 1, 15, 20)


def test_rounding_is_exact_and_half_up() -> None:
    """Projections are integers rounded half up: 1 milli-unit in 2 of 3 hours projects to 2 (1.5 → 2)."""
    budget = units_budget("daily", 1)
    fc = forecast(budget, Counters(committed_milli=1), utc(2026, 1, 15, 16))  # 16 of 24 h: 1 × 24/16 = 1.5
    assert fc.limits[0].projected == 2


def test_window_start_and_early_window() -> None:
    """At the window's first instant nothing is projected beyond what is used; early on it is not confident."""
    budget = units_budget("daily", 10)
    at_start = forecast(budget, Counters(committed_milli=3 * U), utc(2026, 1, 15))
    assert at_start.limits[0].projected == 3 * U and at_start.limits[0].rate_per_hour is None
    assert not at_start.confident
    assert not forecast(budget, Counters(committed_milli=U), utc(2026, 1, 15, 0, 30)).confident
    monthly = units_budget("monthly", 10)
    assert not forecast(monthly, Counters(), utc(2026, 1, 2, 12)).confident  # 36 h < 5 % of 744 h
    assert forecast(monthly, Counters(), utc(2026, 1, 3)).confident  # 48 h


def test_already_exhausted() -> None:
    """A used-up budget is exhausted and will exceed, without an exhaustion time in the future."""
    fc = forecast(units_budget("daily", 10), Counters(committed_milli=10 * U), utc(2026, 1, 15, 12))
    assert fc.limits[0].exhausted and fc.will_exceed and fc.exhaustion_at is None
    assert "already exhausted" in fc.describe()


def test_total_budget_uses_trailing_rate() -> None:
    """A total budget has no window end: 50 of 100 units at 14 units per 7 days run out in 25 days."""
    trailing = Trailing(units_milli=14 * U, usd_nano=0, span=timedelta(days=7))
    fc = forecast(units_budget("total", 100), Counters(committed_milli=50 * U), utc(2026, 1, 15), trailing=trailing)
    assert fc.window_end is None and fc.limits[0].projected is None
    assert fc.exhaustion_at == utc(2026, 2, 9)


def test_both_limits_are_forecast() -> None:
    """A budget with a units and a dollar limit gets one forecast per limit; the earliest exhaustion wins."""
    budget = Budget.create("b", period="daily", limit_units=100, limit_usd=10)
    fc = forecast(budget, Counters(committed_milli=30 * U, committed_nano=6 * USD), utc(2026, 1, 15, 12))
    assert [f.limit_kind for f in fc.limits] == ["units", "usd"]
    assert [f.projected for f in fc.limits] == [60 * U, 12 * USD]
    assert fc.exhaustion_at == utc(2026, 1, 15, 20)  # $4 more at $0.50/h


def test_forecast_budgets_reads_the_ledger(ledger: Ledger) -> None:
    """The library function forecasts from the ledger's counters (held jobs included)."""
    now = utc(2026, 3, 10, 12)
    ledger.set_budget(Budget.create("day", period="daily", limit_units=10))
    ledger.reserve("r1", units_milli=3 * U, pack_type=PackType.VIDEO, attribution=Attribution(), now=now)
    [fc] = forecast_budgets(ledger, ["day"], now=now)
    assert fc.limits[0].used == 3 * U
    assert fc.limits[0].projected == 6 * U
    assert fc.to_dict()["window_end"] == "2026-03-11T00:00:00+00:00"


def test_forecast_budgets_total_budget_from_recent_usage(ledger: Ledger) -> None:
    """A total budget's rate comes from the last 7 days of usage in its scope."""
    now = utc(2026, 3, 10, 12)
    ledger.set_budget(Budget.create("all-time", period="total", limit_units=100, project="p"))
    ledger.reserve("r1", units_milli=7 * U, pack_type=PackType.VIDEO, attribution=Attribution(project="p"), now=now)
    ledger.reserve("r2", units_milli=50 * U, pack_type=PackType.VIDEO, attribution=Attribution(project="q"), now=now)
    [fc] = forecast_budgets(ledger, ["all-time"], now=now + timedelta(hours=1))
    assert fc.limits[0].used == 7 * U
    assert fc.exhaustion_at == now + timedelta(hours=1) + timedelta(days=93)  # 93 units at 1 unit/day
