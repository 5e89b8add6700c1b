"""Shared CLI plumbing: global options, output formats, and turning errors into one line + exit code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from kling_budget.errors import InvalidInputError
from kling_budget.windows import zone

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_BAD_INPUT = 2


@dataclass
class AppContext:
    """What every command needs: where the ledger is, which price file and overlay, and a lazily opened tracker."""

    db: str | None
    prices: str | None
    prices_overlay: str | None = None
    _tracker: Any = field(default=None, repr=False)

    def tracker(self, *, deliver_pending_alerts: bool = True) -> Any:
        """The :class:`~kling_budget.tracker.CostTracker`, opened on first use (which also delivers the alerts
        other processes left undelivered, unless told not to)."""
        if self._tracker is None:
            from kling_budget.tracker import CostTracker

            self._tracker = CostTracker(
                self.db,
                prices=self.prices,
                prices_overlay=self.prices_overlay,
                deliver_pending_alerts=deliver_pending_alerts,
            )
        return self._tracker

    def close(self) -> None:
        """Close the tracker if it was opened."""
        if self._tracker is not None:
            self._tracker.close()


pass_app = click.make_pass_decorator(AppContext)


def json_option(fn: F) -> F:
    """Add ``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def console() -> Console:
    """Rich console on stdout; wide when piped so tables are not truncated."""
    probe = Console()
    return Console(highlight=False, width=None if probe.is_terminal else 200)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON; Decimals and datetimes as strings."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime | date):
            return value.isoformat()
        raise TypeError(f"cannot serialise {type(value).__name__}")

    click.echo(json.dumps(data, indent=2, default=default))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table; numbers right-aligned."""
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, justify="right" if _numeric_column(column) else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console().print(table)


def _numeric_column(name: str) -> bool:
    return any(word in name.lower() for word in ("units", "usd", "%", "jobs", "percent", "held", "committed"))


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
MAX_TTL = timedelta(days=365)


def parse_ttl(value: str | None) -> timedelta | None:
    """``90s``, ``10m``, ``2h``, ``1d`` → timedelta (more than 0, at most 365 days)."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match:
        raise InvalidInputError(f"--ttl must look like 90s, 10m, 2h or 1d, got {value!r}")
    amount, unit = int(match.group(1)), match.group(2)
    if amount <= 0:
        raise InvalidInputError(f"--ttl must be positive, got {value!r}")
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds > MAX_TTL.total_seconds():
        raise InvalidInputError(f"--ttl must be at most 365d, got {value!r}")
    return timedelta(seconds=seconds)


def parse_date(value: str, option: str, timezone: str) -> datetime:
    """``YYYY-MM-DD`` (local midnight in ``timezone``) or an ISO datetime with offset."""
    tz = zone(timezone)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            parsed = datetime(day.year, day.month, day.day)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{option} must be a date like 2026-11-01 or an ISO datetime, got {value!r}") from None
    if not 1 < parsed.year < 9999:  # leaves room for time zone offsets and a day's end
        raise InvalidInputError(f"{option} must be between the years 2 and 9998, got {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def split_csv(value: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]
