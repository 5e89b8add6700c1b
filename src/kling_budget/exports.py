"""Usage exports that spreadsheets and programs read as data.

One row per group, with the units of each pack type in their own columns (video and image units are
different things and are never added up), amounts as plain decimals with a fixed scale (3 places for units
and 9 for dollars, both exact), the currency in the column names, ISO 8601 timestamps, and CSV cells that a
spreadsheet cannot take for a formula.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kling_budget.types import PackType

if TYPE_CHECKING:
    from kling_budget.ledger import Ledger

__all__ = [
    "CURRENCY",
    "UNIT_PLACES",
    "USD_PLACES",
    "UsageExport",
    "UsageLine",
    "csv_text",
    "fixed_units",
    "fixed_usd",
    "usage_export",
]

CURRENCY = "USD"
UNIT_PLACES = 3  # milli-units
USD_PLACES = 9  # nano-dollars

_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _fixed(value: int, places: int) -> str:
    whole, fraction = divmod(abs(value), 10**places)
    return f"{'-' if value < 0 else ''}{whole}.{fraction:0{places}d}"


def fixed_units(milli: int) -> str:
    """Milli-units with three decimal places: ``4000`` → ``"4.000"``."""
    return _fixed(milli, UNIT_PLACES)


def fixed_usd(nano: int) -> str:
    """Nano-dollars with nine decimal places: ``7_000_000`` → ``"0.007000000"``."""
    return _fixed(nano, USD_PLACES)


def csv_cell(value: Any, *, numeric: bool = False) -> str:
    """One CSV cell that a spreadsheet shows as written: text starting with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return gets a leading ``'``; in a ``numeric`` column a plain number (``-1.500``) stays a
    number."""
    text = "" if value is None else str(value)
    if numeric and _PLAIN_NUMBER.fullmatch(text):
        return text
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], numeric: Sequence[str] = ()) -> str:
    """A CSV document (header row first) of ``rows`` by ``columns``, every cell through :func:`csv_cell`."""
    numeric_columns = set(numeric)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([csv_cell(row.get(c), numeric=c in numeric_columns) for c in columns])
    return buffer.getvalue()


def _unit_columns(pack: PackType) -> tuple[str, str]:
    return f"{pack.value}_committed_units", f"{pack.value}_held_units"


_MONEY_COLUMNS = (f"committed_{CURRENCY.lower()}", f"held_{CURRENCY.lower()}")


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Spend of one group: units per pack type (committed, held), dollars and committed jobs."""

    group: Mapping[str, str]
    units: Mapping[PackType, tuple[int, int]]
    committed_nano: int
    held_nano: int
    jobs: int

    def amounts(self) -> dict[str, str | int]:
        """The amount columns: fixed-scale decimal strings, and ``jobs`` as an integer."""
        result: dict[str, str | int] = {}
        for pack in PackType:
            committed, held = self.units.get(pack, (0, 0))
            committed_column, held_column = _unit_columns(pack)
            result[committed_column] = fixed_units(committed)
            result[held_column] = fixed_units(held)
        result[_MONEY_COLUMNS[0]] = fixed_usd(self.committed_nano)
        result[_MONEY_COLUMNS[1]] = fixed_usd(self.held_nano)
        result["jobs"] = self.jobs
        return result


@dataclass(frozen=True, slots=True)
class UsageExport:
    """Usage over ``[start, end)`` grouped by ``group_by``, ready for CSV or JSON."""

    start: datetime
    end: datetime
    timezone: str
    group_by: tuple[str, ...]
    lines: tuple[UsageLine, ...]

    @staticmethod
    def amount_columns() -> list[str]:
        """Units per pack type, committed and held, then dollars and jobs."""
        return [*(c for pack in PackType for c in _unit_columns(pack)), *_MONEY_COLUMNS, "jobs"]

    def columns(self) -> list[str]:
        """Every CSV column: the range (ISO timestamps), the groups, the amounts."""
        return ["start", "end", *self.group_by, *self.amount_columns()]

    def records(self) -> list[dict[str, str | int]]:
        """One dict per group: its group values and :meth:`UsageLine.amounts`."""
        return [{**{g: line.group.get(g, "") for g in self.group_by}, **line.amounts()} for line in self.lines]

    def to_json(self) -> dict[str, Any]:
        """``{"start", "end", "timezone", "currency", "group_by", "rows"}``; rows as :meth:`records`."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "timezone": self.timezone,
            "currency": CURRENCY,
            "group_by": list(self.group_by),
            "rows": self.records(),
        }

    def to_csv(self) -> str:
        """The CSV document, with the range in every row so rows keep their meaning when files are merged."""
        span = {"start": self.start.isoformat(), "end": self.end.isoformat()}
        return csv_text(
            self.columns(), [{**span, **record} for record in self.records()], numeric=self.amount_columns()
        )


def usage_export(
    ledger: Ledger,
    *,
    start: datetime,
    end: datetime,
    group_by: Sequence[str] = ("project",),
    timezone: str = "UTC",
    week_start: int = 0,
    filters: Mapping[str, str] | None = None,
) -> UsageExport:
    """:meth:`Ledger.usage` with units split by pack type (see :func:`kling_budget.ledger.queries.usage` for
    the arguments); ``group_by`` may include ``pack_type`` too."""
    groups = tuple(group_by)
    rows = ledger.usage(
        start=start,
        end=end,
        group_by=groups if "pack_type" in groups else (*groups, "pack_type"),
        timezone=timezone,
        week_start=week_start,
        filters=filters,
    )
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.group.get(g, "") for g in groups)
        line = merged.setdefault(key, {"units": {}, "committed_nano": 0, "held_nano": 0, "jobs": 0})
        pack = PackType(row.group["pack_type"])
        committed, held = line["units"].get(pack, (0, 0))
        line["units"][pack] = (committed + row.committed_milli, held + row.held_milli)
        line["committed_nano"] += row.committed_nano
        line["held_nano"] += row.held_nano
        line["jobs"] += row.jobs
    lines = tuple(UsageLine(dict(zip(groups, key, strict=True)), **values) for key, values in sorted(merged.items()))
    return UsageExport(start, end, timezone, groups, lines)
