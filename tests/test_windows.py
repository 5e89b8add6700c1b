"""Calendar windows in the budget's time zone, across DST changes and month ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_budget.errors import ConfigurationError
from kling_budget.windows import EPOCH, Period, from_micros, parse_weekday, report_range, to_micros, window_at

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_window_in_utc() -> None:
    """A UTC day runs from midnight to midnight."""
    window = window_at(Period.DAILY, utc(2026, 3, 10, 12, 30))
    assert (window.start, window.end) == (utc(2026, 3, 10), utc(2026, 3, 11))


def test_daily_window_follows_local_midnight() -> None:
    """A Berlin day starts at 23:00 UTC the day before in winter."""
    window = window_at(Period.DAILY, utc(2026, 1, 15, 23, 30), "Europe/Berlin")
    assert window.start == utc(2026, 1, 15, 23)
    assert window.end == utc(2026, 1, 16, 23)


def test_spring_forward_day_is_23_hours() -> None:
    """On the DST spring-forward day in Berlin the window is 23 hours long."""
    window = window_at(Period.DAILY, datetime(2026, 3, 29, 12, tzinfo=BERLIN), "Europe/Berlin")
    assert window.end is not None
    assert window.end - window.start == timedelta(hours=23)


def test_fall_back_day_is_25_hours() -> None:
    """On the DST fall-back day in New York the window is 25 hours long."""
    window = window_at(Period.DAILY, datetime(2026, 11, 1, 12, tzinfo=NEW_YORK), "America/New_York")
    assert window.end is not None
    assert window.end - window.start == timedelta(hours=25)


def test_repeated_hour_belongs_to_the_same_day() -> None:
    """Both occurrences of 01:30 on the fall-back night fall in the same daily window."""
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=0)
    second = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
    assert second - first == timedelta(0) or second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)
    assert window_at(Period.DAILY, first, "America/New_York") == window_at(Period.DAILY, second, "America/New_York")


def test_skipped_midnight_starts_at_the_transition() -> None:
    """Where local midnight does not exist (Havana springs forward at 00:00), the day starts at the jump."""
    havana = ZoneInfo("America/Havana")
    window = window_at(Period.DAILY, datetime(2026, 3, 8, 12, tzinfo=havana), "America/Havana")
    assert window.start.astimezone(havana).hour == 1
    assert window.contains(datetime(2026, 3, 8, 1, 0, tzinfo=havana))


def test_monthly_window_across_year_end() -> None:
    """December's window ends on January 1st of the next year."""
    window = window_at(Period.MONTHLY, utc(2026, 12, 31, 23, 59))
    assert (window.start, window.end) == (utc(2026, 12, 1), utc(2027, 1, 1))


def test_monthly_window_in_february_of_a_leap_year() -> None:
    """February 2028 has 29 days."""
    window = window_at(Period.MONTHLY, utc(2028, 2, 29, 10))
    assert window.end is not None
    assert window.end - window.start == timedelta(days=29)


def test_month_end_in_local_time_is_not_utc_month_end() -> None:
    """At 23:30 UTC on Jan 31 it is already February in Berlin."""
    window = window_at(Period.MONTHLY, utc(2026, 1, 31, 23, 30), "Europe/Berlin")
    assert window.start == utc(2026, 1, 31, 23)
    assert window.end == utc(2026, 2, 28, 23)


def test_weekly_window_starts_on_configured_day() -> None:
    """A week starting on Sunday runs Sunday to Sunday."""
    window = window_at(Period.WEEKLY, utc(2026, 3, 11, 9), week_start=6)  # a Wednesday
    assert window.start == utc(2026, 3, 8)
    assert window.start.weekday() == 6
    assert window.end == utc(2026, 3, 15)


def test_weekly_window_default_monday() -> None:
    """The default week starts on Monday."""
    window = window_at(Period.WEEKLY, utc(2026, 3, 8, 9))  # a Sunday
    assert window.start == utc(2026, 3, 2)


def test_total_window_never_ends() -> None:
    """A total budget's window starts at the epoch and never resets."""
    window = window_at(Period.TOTAL, utc(2030, 1, 1))
    assert window.start == EPOCH
    assert window.end is None


@pytest.mark.parametrize("value", ["Mon", "monday", "0", 0, "sun", "Sunday", 6])
def test_parse_weekday_accepts_names_and_numbers(value: str | int) -> None:
    """Week starts parse from names, 3-letter prefixes and 0-6."""
    assert parse_weekday(value) in (0, 6)


@pytest.mark.parametrize("value", ["mo", "funday", "7", -1])
def test_parse_weekday_rejects_unknown_values(value: str | int) -> None:
    """An unknown week start names the accepted values."""
    with pytest.raises(ConfigurationError, match="monday"):
        parse_weekday(value)


def test_unknown_time_zone_is_a_clear_error() -> None:
    """An unknown zone names an example of an accepted one."""
    with pytest.raises(ConfigurationError, match="IANA"):
        window_at(Period.DAILY, utc(2026, 1, 1), "Mars/Olympus")


def test_naive_datetime_is_rejected() -> None:
    """Windows refuse naive datetimes instead of guessing a zone."""
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        window_at(Period.DAILY, datetime(2026, 1, 1))


ZONES = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "America/Havana",
        "Pacific/Chatham",
        "America/Santiago",
    ]
)
INSTANTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))


@given(
    instant=INSTANTS,
    tz=ZONES,
    period=st.sampled_from([Period.DAILY, Period.WEEKLY, Period.MONTHLY]),
    week_start=st.integers(0, 6),
)
def test_windows_contain_now_and_tile_time(instant: datetime, tz: str, period: Period, week_start: int) -> None:
    """Every instant lies in exactly one window, and the next window starts where this one ends."""
    window = window_at(period, instant, tz, week_start)
    assert window.contains(instant)
    assert window.end is not None
    following = window_at(period, window.end, tz, week_start)
    assert following.start == window.end
    before = window_at(period, window.start - timedelta(microseconds=1), tz, week_start)
    assert before.end == window.start
    local_start = window.start.astimezone(ZoneInfo(tz))
    if period is Period.MONTHLY:
        assert local_start.day == 1
    if period is Period.WEEKLY:
        assert local_start.weekday() == week_start


@given(instant=INSTANTS)
def test_micros_round_trip(instant: datetime) -> None:
    """Instants survive the ledger's integer-microsecond encoding exactly."""
    assert from_micros(to_micros(instant)) == instant


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("today", "2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),  # Berlin's 23-hour spring day
        ("month", "2026-02-28T23:00:00+00:00", "2026-03-31T22:00:00+00:00"),
        ("last-7d", "2026-03-22T12:00:00+00:00", "2026-03-29T12:00:00+00:00"),
    ],
)
def test_report_range_is_one_parser_for_every_report(period: str, start: str, end: str) -> None:
    """Report periods resolve in the zone (DST days included); last-Nd counts back from now."""
    now = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    low, high = report_range(period, now, "Europe/Berlin")
    assert (low.isoformat(), high.isoformat()) == (start, end)


@pytest.mark.parametrize("period", ["last-0d", "last-3661d", "last-99999d", "yesterday", "last-7"])
def test_report_range_refuses_what_it_cannot_name(period: str) -> None:
    """A period outside today/week/month/last-Nd (N 1-3660) is refused, naming what is accepted."""
    with pytest.raises(ConfigurationError, match="last-Nd"):
        report_range(period, datetime(2026, 3, 30, tzinfo=UTC))
