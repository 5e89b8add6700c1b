"""Reports: the numbers, the PNG (opened and checked), the self-contained HTML, and the lazy matplotlib import."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kling_budget.budgets import Budget
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.ledger.records import Pack
from kling_budget.report import build_report, write_report
from kling_budget.types import Attribution, PackType

NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


def populated(path: Path) -> Ledger:
    """A month of spend by three projects and two models, with budgets and a pack."""
    ledger = open_ledger(f"sqlite:///{path}", clock=lambda: NOW)
    ledger.set_budget(Budget.create("account", period="monthly", limit_usd=100))
    ledger.set_budget(Budget.create("marketing", project="marketing", period="monthly", limit_usd=30, hard=False))
    ledger.set_budget(Budget.create("studio-daily", project="studio", period="daily", limit_units=40))
    ledger.add_pack(
        Pack(
            "march-pack",
            PackType.VIDEO,
            500_000,
            70 * 10**9,
            datetime(2026, 3, 1, tzinfo=UTC),
            datetime(2026, 3, 31, tzinfo=UTC),
        ),
        now=datetime(2026, 3, 1, tzinfo=UTC),
    )
    jobs = [
        ("marketing", "kling-v2-6", 5000, 2),
        ("studio", "kling-v2-5-turbo", 1500, 3),
        ("research", "kling-v2-6", 10000, 1),
    ]
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)
    n = 0
    for day in range(20):
        for project, model, milli, per_day in jobs:
            for j in range(per_day + (day % 3 == 0)):
                at = start + timedelta(days=day, hours=2 * j)
                if at > NOW:
                    continue
                n += 1
                attribution = Attribution(project=project, model=model)
                if day >= 19 and j == 0:
                    ledger.reserve(
                        f"h{n}", units_milli=milli, pack_type=PackType.VIDEO, attribution=attribution, now=at
                    )
                else:
                    ledger.record(f"j{n}", units_milli=milli, pack_type=PackType.VIDEO, attribution=attribution, now=at)
    return ledger


def test_report_numbers(tmp_path: Path) -> None:
    """Series are cumulative per project, end at the group's committed + held, and every budget is forecast."""
    ledger = populated(tmp_path / "l.db")
    report = build_report(ledger, period="month", by="project", now=NOW)
    usage = {r.group["project"]: r for r in ledger.usage(start=report.start, end=NOW, group_by=("project",))}
    ledger.close()
    assert [s.label for s in report.series] == sorted(
        usage, key=lambda p: -(usage[p].committed_nano + usage[p].held_nano)
    )
    for series in report.series:
        row = usage[series.label]
        assert series.points[-1][1] == row.committed_nano + row.held_nano == series.total
        assert [v for _, v in series.points] == sorted(v for _, v in series.points)
    assert report.series[0].points[-1][0] == NOW
    assert [s.budget.name for s, _ in report.budgets] == ["account", "marketing", "studio-daily"]
    projected = report.projected_total()
    assert projected is not None and projected > report.total


def test_report_renders_a_chart_and_a_self_contained_page(tmp_path: Path) -> None:
    """The PNG opens, has the expected size and is not blank; the HTML embeds exactly that PNG, inline."""
    pytest.importorskip("matplotlib")
    from matplotlib import image

    ledger = populated(tmp_path / "l.db")
    report = build_report(ledger, period="month", by="project", now=NOW, timezone="Europe/Berlin")
    paths = write_report(report, tmp_path / "out")
    ledger.close()
    png = Path(paths["png"]).read_bytes()
    pixels = image.imread(paths["png"])
    assert pixels.shape[:2] == (850, 1100)
    assert pixels[..., :3].std() > 0.05  # lines and text, not a blank canvas
    distinct = {tuple(p) for p in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3).tolist()}
    assert len(distinct) > 50  # several coloured series
    page = Path(paths["html"]).read_text(encoding="utf-8")
    [embedded] = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(embedded) == png
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external assets
    assert "<style>" in page and "marketing" in page and "march-pack" in page
    assert "Budgets and forecast" in page


def test_report_by_model_in_units_and_daily(tmp_path: Path) -> None:
    """By model in units, and a daily report (hourly buckets), both render."""
    pytest.importorskip("matplotlib")
    ledger = populated(tmp_path / "l.db")
    by_model = build_report(ledger, period="month", by="model", unit="units", now=NOW)
    assert {s.label for s in by_model.series} == {"kling-v2-6", "kling-v2-5-turbo"}
    daily = build_report(ledger, period="day", now=NOW)
    assert daily.end - daily.start == timedelta(days=1)
    for report in (by_model, daily):
        paths = write_report(report, tmp_path / report.period)
        assert Path(paths["png"]).stat().st_size > 10_000
    ledger.close()


def test_empty_ledger_report(tmp_path: Path) -> None:
    """A report with no spend and no budgets still renders and says so."""
    pytest.importorskip("matplotlib")
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: NOW)
    paths = write_report(build_report(ledger, now=NOW), tmp_path)
    ledger.close()
    assert "none" in Path(paths["html"]).read_text(encoding="utf-8")


def test_importing_the_package_does_not_import_matplotlib() -> None:
    """``import kling_budget`` (and the alerts and forecast modules) stay light: no matplotlib, no httpx."""
    code = (
        "import sys, kling_budget, kling_budget.alerts, kling_budget.forecast, kling_budget.report; "
        "print(sorted(m for m in ('matplotlib', 'httpx', 'smtplib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
