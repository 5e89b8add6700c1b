"""Usage exports: fixed-scale decimals, units per pack type, and CSV cells a spreadsheet cannot run."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from kling_budget.exports import csv_cell, csv_text, fixed_units, fixed_usd, usage_export
from kling_budget.ledger import Ledger
from kling_budget.types import Attribution, PackType


def test_fixed_scale_decimals_are_exact() -> None:
    """Units keep three places and dollars nine, exactly, negative amounts included."""
    assert [fixed_units(v) for v in (0, 5, 1500, 4000, -2500, 10**15)] == [
        "0.000",
        "0.005",
        "1.500",
        "4.000",
        "-2.500",
        "1000000000000.000",
    ]
    assert [fixed_usd(v) for v in (0, 7_000_000, 210_000_000, -1, 10**18)] == [
        "0.000000000",
        "0.007000000",
        "0.210000000",
        "-0.000000001",
        "1000000000.000000000",
    ]


def test_cells_that_would_run_as_formulas_are_quoted() -> None:
    """=, +, -, @, tab and CR at the start of text get a leading '; plain numbers in numeric columns do not."""
    for text in ("=1+1", "+1", "-5", "@SUM(A1)", "\t=1", "\r=1", "-1.500"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("-1.500", numeric=True) == "-1.500"
    assert csv_cell("-1e3", numeric=True) == "'-1e3"  # not a plain decimal: text, and quoted
    assert csv_cell("=-1", numeric=True) == "'=-1"
    assert [csv_cell(v) for v in ("ads", "a=b", "", None, 3)] == ["ads", "a=b", "", "", "3"]
    document = csv_text(["name", "n"], [{"name": '=HYPERLINK("http://x","y")', "n": "-1.000"}], numeric=["n"])
    assert list(csv.reader(io.StringIO(document))) == [["name", "n"], ['\'=HYPERLINK("http://x","y")', "-1.000"]]


def test_units_of_each_pack_type_stay_in_their_own_columns(ledger: Ledger) -> None:
    """4 video units and 4 image units of one project are 4 and 4, never 8; dollars add up across packs."""
    for key, pack in (("v", PackType.VIDEO), ("i", PackType.IMAGE)):
        ledger.record(key, units_milli=4000, pack_type=pack, attribution=Attribution(project="ads"))
    export = usage_export(
        ledger,
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 4, 1, tzinfo=UTC),
        group_by=("project",),
    )
    (record,) = export.records()
    assert record == {
        "project": "ads",
        "video_committed_units": "4.000",
        "video_held_units": "0.000",
        "image_committed_units": "4.000",
        "image_held_units": "0.000",
        "try_on_committed_units": "0.000",
        "try_on_held_units": "0.000",
        "committed_usd": "0.574000000",
        "held_usd": "0.000000000",
        "jobs": 2,
    }
    by_pack = usage_export(
        ledger, start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC), group_by=("pack_type",)
    )
    assert [(r["pack_type"], r["video_committed_units"], r["image_committed_units"]) for r in by_pack.records()] == [
        ("image", "0.000", "4.000"),
        ("video", "4.000", "0.000"),
    ]
    header = export.to_csv().splitlines()[0].split(",")
    assert header[:3] == ["start", "end", "project"] and "committed_usd" in header
    assert export.to_json()["currency"] == "USD" and export.to_json()["start"] == "2026-03-01T00:00:00+00:00"
