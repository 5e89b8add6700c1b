"""Spend reports for people: a PNG chart and a self-contained HTML page.

:func:`build_report` gathers the numbers (pure data, exact integers): cumulative spend over the current
day, week or month per project or model, every budget with its forecast, the packs and the latest alerts.
:func:`render_png` draws them with matplotlib (imported only here, Agg canvas, no pyplot state);
:func:`render_html` embeds that PNG as base64 with inline CSS, so the file opens anywhere offline.
Money is converted to float only for plot coordinates.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_budget.budgets import BudgetStatus
from kling_budget.errors import ConfigurationError
from kling_budget.forecast import Forecast, forecast
from kling_budget.ledger.queries import hour_label
from kling_budget.ledger.records import Pack
from kling_budget.money import format_units, format_usd
from kling_budget.types import AlertEvent
from kling_budget.windows import Period, report_range, zone

if TYPE_CHECKING:
    from kling_budget.ledger import Ledger

__all__ = ["Report", "Series", "build_report", "render_html", "render_png", "write_report"]

PERIODS = {"day": Period.DAILY, "week": Period.WEEKLY, "month": Period.MONTHLY}
GROUPS = ("project", "model")
UNITS = ("usd", "units")


@dataclass(frozen=True, slots=True)
class Series:
    """Cumulative spend of one group: ``points`` are (bucket end, amount so far), committed + held."""

    label: str
    points: tuple[tuple[datetime, int], ...]
    committed: int
    held: int
    jobs: int

    @property
    def total(self) -> int:
        """Committed + held at the last point."""
        return self.committed + self.held


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one report shows. Amounts are milli-units (``unit="units"``) or nano-dollars (``"usd"``)."""

    period: str
    by: str
    unit: str
    timezone: str
    start: datetime
    end: datetime
    as_of: datetime
    series: tuple[Series, ...]
    budgets: tuple[tuple[BudgetStatus, Forecast], ...]
    packs: tuple[Pack, ...]
    alerts: tuple[AlertEvent, ...]

    @property
    def total(self) -> int:
        """Spend of every group together."""
        return sum(s.total for s in self.series)

    def projected(self, amount: int) -> int | None:
        """``amount`` spent so far, projected to the end of the period at the same rate (``None`` at or
        after the end)."""
        elapsed = (self.as_of - self.start) // timedelta(microseconds=1)
        whole = (self.end - self.start) // timedelta(microseconds=1)
        if elapsed <= 0 or self.as_of >= self.end:
            return None
        return (2 * amount * whole + elapsed) // (2 * elapsed)

    def projected_total(self) -> int | None:
        """The total at the end of the period at the burn rate so far (``None`` at or after the end)."""
        return self.projected(self.total)

    def fmt_rough(self, amount: int) -> str:
        """A projected amount for people: to the cent, or to a tenth of a unit."""
        if self.unit == "usd":
            return f"${(Decimal(amount) / 10**9).quantize(Decimal('0.01'), ROUND_HALF_UP):f}"
        return f"{(Decimal(amount) / 1000).quantize(Decimal('0.1'), ROUND_HALF_UP).normalize():f} units"

    def fmt(self, amount: int) -> str:
        """An amount in the report's unit, for people."""
        return format_usd(amount) if self.unit == "usd" else f"{format_units(amount)} units"

    def budget_limit(self, status: BudgetStatus) -> int | None:
        """The limit of ``status`` in the report's unit (``None`` if it has none in that unit)."""
        budget = status.budget
        return budget.limit_usd_nano if self.unit == "usd" else budget.limit_units_milli

    def title(self) -> str:
        """``Spend by project, month of 2026-03 (UTC)``."""
        local = self.start.astimezone(zone(self.timezone))
        label = {"day": "%Y-%m-%d", "week": "week of %Y-%m-%d", "month": "%Y-%m"}[self.period]
        return f"Spend by {self.by}, {self.period} {local.strftime(label)} ({self.timezone})"

    def slug(self) -> str:
        """File name stem: ``kling-budget-report-2026-03-project``."""
        local = self.start.astimezone(zone(self.timezone))
        stamp = local.strftime("%Y-%m" if self.period == "month" else "%Y-%m-%d")
        return f"kling-budget-report-{stamp}-{self.by}"


def _boundaries(start: datetime, stop: datetime, hourly: bool, timezone: str) -> list[datetime]:
    """Bucket boundaries from ``start`` to ``stop``: local midnights (23/25 h apart across DST) or hours."""
    tz = zone(timezone)
    points = [start]
    cursor = start
    while cursor < stop:
        if hourly:
            nxt = cursor + timedelta(hours=1)
        else:
            day = cursor.astimezone(tz).date() + timedelta(days=1)
            nxt = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(start.tzinfo)
        cursor = min(nxt, stop)
        points.append(cursor)
    return points


def build_report(
    ledger: Ledger,
    *,
    period: str = "month",
    by: str = "project",
    unit: str = "usd",
    timezone: str = "UTC",
    now: datetime | None = None,
) -> Report:
    """The numbers of a report over the current ``period`` (day, week or month) in ``timezone``.

    Args:
        ledger: the ledger to read.
        period: ``day``, ``week`` or ``month``.
        by: ``project`` or ``model``.
        unit: ``usd`` (every job, at the price paid) or ``units`` (video units).
        timezone: IANA zone of the calendar period and the chart's axis.
        now: the report's "now" (default: the ledger's clock).
    """
    if period not in PERIODS:
        raise ConfigurationError(f"unknown report period {period!r}; accepted: {', '.join(PERIODS)}")
    if by not in GROUPS:
        raise ConfigurationError(f"cannot report by {by!r}; accepted: {', '.join(GROUPS)}")
    if unit not in UNITS:
        raise ConfigurationError(f"unknown report unit {unit!r}; accepted: {', '.join(UNITS)}")
    at = now or ledger.now()
    start, end = report_range(period, at, timezone)
    hourly = period == "day"
    time_group = "hour" if hourly else "day"
    stop = min(end, max(at, start + timedelta(microseconds=1)))
    through = min(end, at + timedelta(microseconds=1))  # a job reserved at ``at`` itself counts
    rows = ledger.usage(start=start, end=through, group_by=(by, time_group, "pack_type"), timezone=timezone)
    tz = zone(timezone)

    per_group: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if unit == "units" and row.group.get("pack_type") != "video":
            continue
        name = row.group.get(by) or "(none)"
        amounts = per_group.setdefault(name, {}).setdefault(row.group[time_group], [0, 0, 0])
        amounts[0] += row.committed_nano if unit == "usd" else row.committed_milli
        amounts[1] += row.held_nano if unit == "usd" else row.held_milli
        amounts[2] += row.jobs
    boundaries = _boundaries(start, stop, hourly, timezone)
    series = []
    for name, buckets in per_group.items():
        remaining = dict(buckets)  # popped as used: each hour or day counts once
        running, points = 0, [(start, 0)]
        for left, right in pairwise(boundaries):
            label = hour_label(left, timezone) if hourly else left.astimezone(tz).date().isoformat()
            values = remaining.pop(label, [0, 0, 0])
            running += values[0] + values[1]
            points.append((right, running))
        committed = sum(v[0] for v in buckets.values())
        held = sum(v[1] for v in buckets.values())
        jobs = sum(v[2] for v in buckets.values())
        series.append(Series(name, tuple(points), committed, held, jobs))
    series.sort(key=lambda s: (-s.total, s.label))
    budgets = tuple(
        (status, forecast(status.budget, status.counters, at, window=status.window))
        for status in ledger.statuses(now=at)
    )
    return Report(
        period=period,
        by=by,
        unit=unit,
        timezone=timezone,
        start=start,
        end=end,
        as_of=at,
        series=tuple(series),
        budgets=budgets,
        packs=tuple(ledger.list_packs()),
        alerts=tuple(ledger.recent_alerts(limit=15)),
    )


def _plot_value(report: Report, amount: int) -> float:
    """An exact amount as a float in dollars or units: for plot coordinates only."""
    return amount / (1e9 if report.unit == "usd" else 1e3)


def render_png(report: Report, path: str | Path, *, dpi: int = 100) -> Path:
    """Draw the report's chart: cumulative spend per group, the total with its forecast to the end of the
    period, the limits of budgets with the same period, and every budget's used vs projected percent."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    tz = zone(report.timezone)

    def local(instant: datetime) -> datetime:
        return instant.astimezone(tz).replace(tzinfo=None)

    figure = Figure(figsize=(11, 8.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 2])
    unit_label = "USD" if report.unit == "usd" else "video units"
    palette = [f"C{i}" for i in range(10)]
    colors: dict[str, str] = {}
    for index, series in enumerate(report.series[:10]):
        colors[series.label] = palette[index]
        xs = [local(t) for t, _ in series.points]
        ys = [_plot_value(report, v) for _, v in series.points]
        top.plot(xs, ys, color=palette[index], linewidth=1.8, label=f"{series.label} ({report.fmt(series.total)})")
        projected = report.projected(series.total)
        if projected is not None:
            top.plot(
                [local(report.as_of), local(report.end)],
                [ys[-1], _plot_value(report, projected)],
                color=palette[index],
                linestyle="--",
                linewidth=1.0,
                alpha=0.7,
            )
    if report.series:
        total_points: dict[datetime, int] = {}
        for series in report.series:
            for t, v in series.points:
                total_points[t] = total_points.get(t, 0) + v
        times = sorted(total_points)
        top.plot(
            [local(t) for t in times],
            [_plot_value(report, total_points[t]) for t in times],
            color="black",
            linewidth=2.6,
            label=f"total ({report.fmt(report.total)})",
        )
        projected = report.projected_total()
        if projected is not None:
            top.plot(
                [local(report.as_of), local(report.end)],
                [_plot_value(report, report.total), _plot_value(report, projected)],
                color="black",
                linestyle="--",
                linewidth=1.6,
                label=f"forecast at this rate (total {report.fmt_rough(projected)} by period end)",
            )
    period = PERIODS[report.period]
    for status, _ in report.budgets:
        limit = report.budget_limit(status)
        if limit is None or status.budget.period is not period:
            continue
        # A budget on exactly one charted group takes that group's colour; any other is drawn in black.
        scope = status.budget.scope
        single = {"project": scope.project, "model": scope.model}[report.by]
        others = [v for k, v in (("project", scope.project), ("model", scope.model)) if k != report.by]
        narrow = any(others) or scope.user or scope.api_key or scope.tag
        top.axhline(
            _plot_value(report, limit),
            color=colors.get(single, "grey") if single else ("grey" if narrow else "black"),
            linestyle=":",
            linewidth=1.6,
            label=f"budget {status.budget.name} ({status.budget.scope.describe()}): {report.fmt(limit)}",
        )
    top.axvline(local(report.as_of), color="grey", linewidth=0.8)
    top.set_xlim(local(report.start), local(report.end))
    top.set_ylim(0, max(top.get_ylim()[1], 1e-9) * 1.08)  # budget lines clear of the frame
    top.set_title(report.title())
    top.set_ylabel(f"cumulative spend ({unit_label}, committed + held)")
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    top.xaxis.set_major_locator(locator)
    top.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    top.grid(True, alpha=0.3)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="upper left", fontsize=8)
    else:
        top.text(0.5, 0.5, "no spend in this period", transform=top.transAxes, ha="center", va="center")

    names = [status.budget.name for status, _ in report.budgets]
    if names:
        used = [float(status.percent) for status, _ in report.budgets]
        projected_pct = []
        for _, fc in report.budgets:
            values = [f.percent(f.projected) for f in fc.limits if f.projected is not None]
            best = max((v for v in values if v is not None), default=None)
            projected_pct.append(float(best) if best is not None else 0.0)
        positions = list(range(len(names)))
        bottom.barh(
            [p + 0.2 for p in positions], projected_pct, height=0.4, color="#f4a582", label="forecast at window end"
        )
        bottom.barh(
            [p - 0.2 for p in positions], used, height=0.4, color="#2166ac", label="used now (committed + held)"
        )
        bottom.axvline(100, color="#b2182b", linewidth=1.2, linestyle="--", label="limit")
        bottom.set_yticks(
            positions, [f"{n} ({s.budget.period.value})" for n, (s, _) in zip(names, report.budgets, strict=True)]
        )
        bottom.invert_yaxis()
        bottom.set_xlabel("% of limit")
        bottom.set_title("Budgets: used now and forecast at the end of their own window")
        bottom.legend(loc="lower right", fontsize=8)
        bottom.grid(True, axis="x", alpha=0.3)
    else:
        bottom.axis("off")
        bottom.text(0.5, 0.5, "no budgets", ha="center", va="center")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{padding:.35rem .6rem;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.over{color:#b2182b;font-weight:600}.muted{color:#777}img{max-width:100%;border:1px solid #eee}
"""


def _table(columns: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            css = ' class="n"' if i in numeric else ""
            cells.append(f"<td{css}>{value}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(columns)}" class="muted">none</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report, png: bytes) -> str:
    """A self-contained HTML page: the chart embedded as base64, inline CSS, and the tables."""
    esc = html.escape
    tz = zone(report.timezone)

    def when(instant: datetime | None) -> str:
        return esc(instant.astimezone(tz).isoformat(timespec="minutes")) if instant else "-"

    spend_rows = []
    for s in report.series:
        share = f"{s.total * 100 / report.total:.1f}%" if report.total else "-"
        spend_rows.append(
            [
                esc(s.label),
                esc(report.fmt(s.committed)),
                esc(report.fmt(s.held)),
                esc(report.fmt(s.total)),
                str(s.jobs),
                share,
            ]
        )
    budget_rows = []
    for status, fc in report.budgets:
        parts = [f for f in fc.limits]
        projected = (
            "; ".join(
                f"{f.fmt_rough(f.projected)} ({f.percent(f.projected)}%)" for f in parts if f.projected is not None
            )
            or "-"
        )
        css = ' class="over"' if fc.will_exceed else ""
        budget_rows.append(
            [
                esc(status.budget.name),
                esc(status.budget.scope.describe()),
                esc(f"{status.budget.period.value} ({status.budget.timezone})"),
                esc(("hard " if status.budget.hard else "soft ") + status.describe_limits()),
                esc("; ".join(f.fmt(f.used) for f in parts)),
                f"{status.percent}%",
                f"<span{css}>{esc(projected)}</span>",
                when(fc.exhaustion_at),
                when(status.window.end),
            ]
        )
    pack_rows = [
        [
            esc(p.name),
            esc(p.pack_type.value),
            esc(format_units(p.units_milli)),
            esc(format_units(p.remaining_milli)),
            esc(format_usd(p.price_nano)),
            when(p.expires_at),
        ]
        for p in report.packs
    ]
    alert_rows = [
        [esc(a.created_at[:16]), esc(a.kind.value), esc(a.budget or "-"), esc(a.message)] for a in report.alerts
    ]
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report.title())}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>{esc(report.title())}</h1>
<p class="muted">Generated {when(report.as_of)} · period {when(report.start)} → {when(report.end)} ·
amounts are committed + held ({esc(report.unit)}) · total so far <strong>{esc(report.fmt(report.total))}</strong></p>
<img alt="Cumulative spend by {esc(report.by)} with budget limits and forecast" src="data:image/png;base64,{image}">
<h2>Spend by {esc(report.by)}</h2>
{_table([report.by, "committed", "held", "total", "jobs", "share"], spend_rows, {1, 2, 3, 4, 5})}
<h2>Budgets and forecast</h2>
{
        _table(
            ["budget", "scope", "period", "limit", "used", "used %", "forecast at window end", "runs out", "resets"],
            budget_rows,
            {4, 5, 6},
        )
    }
<h2>Resource packs</h2>
{_table(["pack", "type", "units", "remaining", "price", "expires"], pack_rows, {2, 3, 4})}
<h2>Latest alerts</h2>
{_table(["time", "kind", "budget", "message"], alert_rows, set())}
</body></html>
"""


def write_report(report: Report, out_dir: str | Path) -> dict[str, Any]:
    """Write ``<slug>.png`` and ``<slug>.html`` into ``out_dir``; return their paths."""
    directory = Path(out_dir)
    png_path = render_png(report, directory / f"{report.slug()}.png")
    html_path = directory / f"{report.slug()}.html"
    html_path.write_text(render_html(report, png_path.read_bytes()), encoding="utf-8")
    return {"png": str(png_path), "html": str(html_path)}
