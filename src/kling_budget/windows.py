"""Calendar budget windows, computed in the budget's IANA time zone. Pure: ``now`` is always an argument.

A window is ``[start, end)`` in UTC. Daily windows start at local midnight, weekly windows at local
midnight of the configured first day, monthly windows at local midnight on the 1st. Across a DST change a
"day" is 23 or 25 hours long. Where local midnight does not exist (a zone that springs forward at
00:00) the window starts at the transition instant; where it happens twice, at the first one.
A ``total`` window never resets: it starts at the epoch and has no end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kling_budget.errors import ConfigurationError

__all__ = [
    "EPOCH",
    "MAX_LAST_DAYS",
    "REPORT_PERIOD_PATTERN",
    "WEEKDAYS",
    "Period",
    "Window",
    "from_micros",
    "parse_weekday",
    "report_range",
    "to_micros",
    "window_at",
    "zone",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Period(StrEnum):
    """How often a budget's window resets."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"

    @classmethod
    def parse(cls, value: str | Period) -> Period:
        """Parse a period name, naming the accepted ones on error."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            accepted = ", ".join(p.value for p in cls)
            raise ConfigurationError(f"unknown period {value!r}; accepted: {accepted}") from None


@dataclass(frozen=True, slots=True)
class Window:
    """One budget window ``[start, end)``; ``end`` is ``None`` for a total budget."""

    start: datetime
    end: datetime | None
    #: Start as integer microseconds since the epoch (the ledger's window key).
    start_us: int = field(init=False, repr=False, compare=False)
    #: End as integer microseconds since the epoch, or ``None``.
    end_us: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: the ledger reads them several times per operation.
        object.__setattr__(self, "start_us", to_micros(self.start))
        object.__setattr__(self, "end_us", None if self.end is None else to_micros(self.end))

    def contains(self, instant: datetime) -> bool:
        """Whether ``instant`` falls inside the window."""
        return self.start <= instant and (self.end is None or instant < self.end)


def to_micros(instant: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    if instant.tzinfo is None:
        raise ConfigurationError("datetimes must be timezone-aware (e.g. datetime.now(UTC))")
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """Load an IANA zone by name, with a one-line error naming an example of what is accepted."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {name!r}; use an IANA name such as UTC, Europe/Berlin or America/New_York"
        ) from None


def parse_weekday(value: str | int) -> int:
    """A week's first day as 0 (Monday) .. 6 (Sunday) from a name, a 3-letter prefix or a number."""
    if isinstance(value, int):
        if 0 <= value <= 6:
            return value
    else:
        text = value.strip().lower()
        for index, name in enumerate(WEEKDAYS):
            if len(text) >= 3 and name.startswith(text):
                return index
        if text.isdigit() and 0 <= int(text) <= 6:
            return int(text)
    raise ConfigurationError(f"unknown week start {value!r}; accepted: {', '.join(WEEKDAYS)} (or 0-6, 0 = Monday)")


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # fold=0 picks the first of two ambiguous midnights; for a skipped midnight, fold=0 uses the offset in
    # force before the gap, which converts to exactly the transition instant.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _first_day(period: Period, local_day: date, week_start: int) -> date:
    if period is Period.DAILY:
        return local_day
    if period is Period.WEEKLY:
        return local_day - timedelta(days=(local_day.weekday() - week_start) % 7)
    return local_day.replace(day=1)


def _next_first_day(period: Period, first: date) -> date:
    if period is Period.DAILY:
        return first + timedelta(days=1)
    if period is Period.WEEKLY:
        return first + timedelta(days=7)
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def window_at(period: Period, now: datetime, tz_name: str = "UTC", week_start: int = 0) -> Window:
    """The window of ``period`` that contains ``now``, in time zone ``tz_name``.

    Args:
        period: daily, weekly, monthly or total.
        now: an aware datetime.
        tz_name: IANA time zone of the budget.
        week_start: first day of a weekly window, 0 = Monday .. 6 = Sunday.
    """
    if now.tzinfo is None:
        raise ConfigurationError("now must be timezone-aware (e.g. datetime.now(UTC))")
    if period is Period.TOTAL:
        return Window(EPOCH, None)
    tz = zone(tz_name)
    local_day = now.astimezone(tz).date()
    first = _first_day(period, local_day, week_start)
    start = _local_midnight(first, tz)
    end = _local_midnight(_next_first_day(period, first), tz)
    return Window(start, end)


MAX_LAST_DAYS = 3660
"""The longest ``last-Nd`` report range (ten years)."""
REPORT_PERIOD_PATTERN = r"^(today|day|week|month|last-[0-9]{1,4}d)$"
"""Every report period name :func:`report_range` accepts, as a regular expression (the API documents it)."""
_REPORT_PERIODS = {"today": Period.DAILY, "day": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}
_REPORT_PERIOD = re.compile(REPORT_PERIOD_PATTERN)


def report_range(period: str, now: datetime, tz_name: str = "UTC", week_start: int = 0) -> tuple[datetime, datetime]:
    """``[start, end)`` of a report period: the current day, week or month in ``tz_name``, or ``last-Nd``
    (the ``N`` days up to ``now``, N from 1 to :data:`MAX_LAST_DAYS`).

    The one parser of report periods, for the library, the CLI, reports and the admin API.

    Raises:
        ConfigurationError: an unknown period (the message names the accepted ones) or N out of range.
    """
    text = period.strip().lower() if isinstance(period, str) else ""
    if not _REPORT_PERIOD.match(text):
        shown = period[:40] if isinstance(period, str) else period
        raise ConfigurationError(
            f"unknown period {shown!r}; accepted: today, week, month, last-Nd (e.g. last-7d, N up to {MAX_LAST_DAYS})"
        )
    if text.startswith("last-"):
        days = int(text[5:-1])
        if not 1 <= days <= MAX_LAST_DAYS:
            raise ConfigurationError(f"period {text!r}: last-Nd needs N from 1 to {MAX_LAST_DAYS}")
        return now - timedelta(days=days), now
    window = window_at(_REPORT_PERIODS[text], now, tz_name, week_start)
    assert window.end is not None
    return window.start, window.end
