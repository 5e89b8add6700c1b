"""The ``kling-budget`` command line, driven through the real console entry point ``kling_budget.cli.main``."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kling_budget.cli import main
from kling_budget.windows import Period, window_at, zone

FIXTURE = Path(__file__).parent / "fixtures" / "recipe_cost_tracking.json"
TURBO = ["--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5"]  # 1.5 units, $0.21 at list price
V26_PRO_10_SOUND = ["--model", "kling-v2-6", "--mode", "pro", "--duration", "10", "--sound", "on"]  # 10 units


@dataclass
class Result:
    """What a user sees: the exit code, stdout and stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh SQLite ledger URL for this test."""
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
def kb(db: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``kling-budget --db <db> ARGS...`` in-process and return its exit code and output."""

    def run(*args: str, db_url: str | None = db) -> Result:
        capsys.readouterr()
        argv = ["--db", db_url, *args] if db_url else list(args)
        with pytest.raises(SystemExit) as exited:
            main(argv)
        out, err = capsys.readouterr()
        code = exited.value.code
        assert "Traceback" not in out + err
        return Result(0 if code is None else int(code), out, err)

    return run


def ok(result: Result) -> Result:
    assert result.code == 0, result
    return result


# ---------------------------------------------------------------------------------------------- price


def test_price_table_shows_breakdown_units_and_list_usd(kb: Any) -> None:
    """`price` prints the breakdown, the exact units and the dollars at list price."""
    result = ok(kb("price", *V26_PRO_10_SOUND))
    assert "kling-v2-6" in result.out
    assert "10 video units" in result.out
    assert "10 units = $1.40 at the list price" in result.out


def test_price_json_is_exact_decimal_strings(kb: Any) -> None:
    """`price --json` gives units and USD as exact strings, the params and the price version."""
    data = ok(kb("price", *V26_PRO_10_SOUND, "--json")).json()
    assert data["model"] == "kling-v2-6"
    assert data["pack_type"] == "video"
    assert (data["units"], data["usd"]) == ("10", "1.40")
    assert data["params"]["duration"] == 10
    assert data["params"]["mode"] == "pro"
    assert [line["units"] for line in data["breakdown"]] == ["10"]
    assert data["price_version"]


def test_price_resolves_alias_and_fractional_units(kb: Any) -> None:
    """An alternative spelling resolves to the canonical model; fractional units stay exact."""
    data = ok(kb("price", "--model", "kling-v2.5-turbo", "--mode", "std", "--duration", "5", "--json")).json()
    assert data["model"] == "kling-v2-5-turbo"
    assert (data["units"], data["usd"]) == ("1.5", "0.21")


def test_price_image_draws_from_the_image_pack(kb: Any) -> None:
    """Images are priced per image times n, in image-pack units."""
    one = ok(kb("price", "--product", "image", "--model", "kling-v2", "--json")).json()
    four = ok(kb("price", "--product", "image", "--model", "kling-v2", "-n", "4", "--json")).json()
    assert one["pack_type"] == four["pack_type"] == "image"
    assert float(four["units"]) == 4 * float(one["units"])


def test_price_list_names_products_and_models(kb: Any) -> None:
    """`price --list` lists every priced product with its models, as a table or JSON."""
    data = ok(kb("price", "--list", "--json")).json()
    assert {"video", "image", "try-on", "lip-sync"} <= set(data["products"])
    assert "kling-v2-6" in data["products"]["video"]
    table = ok(kb("price", "--list")).out
    assert "Price table" in table
    assert "kling-v2-6" in table


def test_price_needs_no_ledger_changes(kb: Any, tmp_path: Path) -> None:
    """Pricing leaves the ledger empty."""
    ok(kb("price", *TURBO))
    assert ok(kb("reservations", "--json")).json() == []
    assert ok(kb("budget", "list", "--json")).json() == []


# ---------------------------------------------------------------------------------------------- budgets


def test_budget_set_in_berlin_time_zone(kb: Any) -> None:
    """A monthly budget's window starts at local midnight on the 1st in its IANA zone."""
    data = ok(
        kb(
            "budget",
            "set",
            "marketing",
            "--project",
            "marketing",
            "--period",
            "monthly",
            "--limit-units",
            "1000",
            "--limit-usd",
            "150",
            "--alert-at",
            "50,80,100",
            "--timezone",
            "Europe/Berlin",
            "--json",
        )
    ).json()
    assert data["budget"] == "marketing"
    assert data["scope"] == "project=marketing"
    assert (data["period"], data["timezone"], data["hard"]) == ("monthly", "Europe/Berlin", True)
    assert (data["limit_units"], data["limit_usd"]) == ("1000", "150.00")
    assert data["thresholds"] == [50, 80, 100]
    start = datetime.fromisoformat(data["window_start"])
    local = start.astimezone(zone("Europe/Berlin"))
    assert (local.day, local.hour, local.minute) == (1, 0, 0)
    assert start == window_at(Period.MONTHLY, datetime.now(UTC), "Europe/Berlin").start
    assert data["resets_at"] == data["window_end"]


def test_budget_set_weekly_soft_with_sunday_start(kb: Any) -> None:
    """`--week-start sunday` starts weekly windows on Sunday; `--soft` makes the budget alert-only."""
    weekly = ["--period", "weekly", "--week-start", "sunday"]
    data = ok(kb("budget", "set", "team", *weekly, "--limit-usd", "50", "--soft", "--json")).json()
    assert data["hard"] is False
    assert data["limit_units"] is None
    start, end = datetime.fromisoformat(data["window_start"]), datetime.fromisoformat(data["window_end"])
    assert start.weekday() == 6
    assert end - start == timedelta(days=7)


def test_budget_set_replaces_an_existing_budget(kb: Any) -> None:
    """Setting a budget again under the same name replaces its limit."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("budget", "set", "b", "--limit-units", "12.5"))
    budgets = ok(kb("budget", "list", "--json")).json()
    assert [(b["budget"], b["limit_units"]) for b in budgets] == [("b", "12.5")]


def test_budget_list_and_show(kb: Any) -> None:
    """`budget list` shows every budget; `budget show` one, as a table or JSON."""
    assert "no budgets yet" in ok(kb("budget", "list")).out
    ok(kb("budget", "set", "a", "--project", "pa", "--limit-units", "5"))
    ok(kb("budget", "set", "b", "--period", "daily", "--limit-usd", "2"))
    table = ok(kb("budget", "list")).out
    assert "project=pa" in table
    assert "whole account" in table
    assert [b["budget"] for b in ok(kb("budget", "list", "--json")).json()] == ["a", "b"]
    shown = ok(kb("budget", "show", "b", "--json")).json()
    assert (shown["budget"], shown["period"], shown["remaining_usd"]) == ("b", "daily", "2.00")
    assert shown["percent"] == "0.00"
    assert "Budget a" in ok(kb("budget", "show", "a")).out


def test_budget_delete_with_yes(kb: Any) -> None:
    """`budget delete --yes` removes the budget; showing it afterwards is bad input."""
    ok(kb("budget", "set", "b", "--limit-units", "5"))
    assert "deleted budget b" in ok(kb("budget", "delete", "b", "--yes")).out
    assert kb("budget", "show", "b").code == 2


def test_budget_delete_asks_first(kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `--yes`, `budget delete` asks; answering no keeps the budget and exits 130."""
    ok(kb("budget", "set", "b", "--limit-units", "5"))
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    refused = kb("budget", "delete", "b")
    assert refused.code == 130
    assert refused.err == "error: aborted\n"
    assert [b["budget"] for b in ok(kb("budget", "list", "--json")).json()] == ["b"]
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    ok(kb("budget", "delete", "b"))
    assert ok(kb("budget", "list", "--json")).json() == []


# ---------------------------------------------------------------------------------------------- check


def test_check_allowed_exits_0_and_reserves_nothing(kb: Any) -> None:
    """`check` says allowed (exit 0) when the job fits, and holds nothing."""
    ok(kb("budget", "set", "b", "--project", "p", "--limit-units", "2"))
    assert "allowed: kling-v2-5-turbo video: 1.5 units ($0.21)" in ok(kb("check", *TURBO, "--project", "p")).out
    assert ok(kb("budget", "show", "b", "--json")).json()["held_units"] == "0"
    assert ok(kb("reservations", "--json")).json() == []


def test_check_denied_exits_1_with_reason(kb: Any) -> None:
    """`check` exits 1 and names the budget when the job would not fit; `--json` has the denial."""
    ok(kb("budget", "set", "tiny", "--project", "p", "--period", "daily", "--limit-units", "1"))
    denied = kb("check", *TURBO, "--project", "p")
    assert denied.code == 1
    assert denied.out.startswith("denied: budget 'tiny'")
    data = json.loads(kb("check", *TURBO, "--project", "p", "--json").out)
    assert data["allowed"] is False
    assert data["denial"]["budget"] == "tiny"
    assert data["denial"]["price"] == "1.5"
    assert data["quote"]["units"] == "1.5"


def test_check_ignores_budgets_of_other_projects(kb: Any) -> None:
    """A budget scoped to another project does not deny the job."""
    ok(kb("budget", "set", "tiny", "--project", "other", "--limit-units", "1"))
    ok(kb("check", *TURBO, "--project", "p"))


# ---------------------------------------------------------------------------------------------- reserve


def test_reserve_json_holds_the_exact_price(kb: Any) -> None:
    """`reserve --json` returns the held reservation; the budget shows it as held."""
    ok(kb("budget", "set", "b", "--project", "p", "--limit-units", "10"))
    data = ok(kb("reserve", *TURBO, "--project", "p", "--user", "ann", "--tags", "x,y", "--json")).json()
    assert (data["state"], data["units"], data["usd"]) == ("held", "1.5", "0.21")
    assert (data["project"], data["user"], data["tags"]) == ("p", "ann", ["x", "y"])
    assert data["replayed"] is False
    status = ok(kb("budget", "show", "b", "--json")).json()
    assert (status["held_units"], status["committed_units"]) == ("1.5", "0")


def test_reserve_text_output_names_the_id(kb: Any) -> None:
    """Without `--json`, `reserve` prints one line with the id, units, dollars and state."""
    out = ok(kb("reserve", *TURBO, "--key", "job-1")).out
    assert out == "reserved job-1: 1.5 units, $0.21 [held]\n"


def test_reserve_key_replay_returns_the_same_hold(kb: Any) -> None:
    """Reserving again with the same `--key` replays the reservation instead of holding twice."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    first = ok(kb("reserve", *TURBO, "--key", "k1", "--json")).json()
    again = ok(kb("reserve", *TURBO, "--key", "k1", "--json")).json()
    assert again["id"] == first["id"] == "k1"
    assert again["replayed"] is True
    assert "(replayed" in ok(kb("reserve", *TURBO, "--key", "k1")).out
    assert ok(kb("budget", "show", "b", "--json")).json()["held_units"] == "1.5"


def test_reserve_ttl_sets_an_expiry(kb: Any) -> None:
    """`--ttl 10m` makes the hold expire ten minutes after it was taken."""
    data = ok(kb("reserve", *TURBO, "--ttl", "10m", "--json")).json()
    reserved, expires = datetime.fromisoformat(data["reserved_at"]), datetime.fromisoformat(data["expires_at"])
    assert expires - reserved == timedelta(minutes=10)
    assert ok(kb("reserve", *TURBO, "--json")).json()["expires_at"] is None


def test_reserve_denied_exits_1_naming_everything_needed_to_back_off(kb: Any) -> None:
    """A denial exits 1 with one stderr line naming budget, window, limit, committed, held, price and reset."""
    ok(kb("budget", "set", "tiny", "--project", "p", "--period", "daily", "--limit-units", "2"))
    ok(kb("reserve", *TURBO, "--project", "p"))
    denied = kb("reserve", *TURBO, "--project", "p", "--key", "second")
    assert denied.code == 1
    assert denied.out == ""
    lines = denied.err.splitlines()
    assert len(lines) == 1
    window = window_at(Period.DAILY, datetime.now(UTC), "UTC")
    assert window.end is not None
    assert lines[0] == (
        f"error: denied: budget 'tiny' (project=p, daily window from {window.start.isoformat()}) would be "
        "exceeded: limit 2 units, committed 0 units, held 1.5 units, price 1.5 units; "
        f"resets {window.end.isoformat()}"
    )
    assert kb("reserve", *TURBO, "--project", "p", "--key", "second").err == denied.err  # the denial replays
    assert ok(kb("budget", "show", "tiny", "--json")).json()["held_units"] == "1.5"


def test_reserve_denied_by_usd_limit(kb: Any) -> None:
    """A dollar limit denies in dollars."""
    ok(kb("budget", "set", "cash", "--limit-usd", "1"))
    denied = kb("reserve", *V26_PRO_10_SOUND)
    assert denied.code == 1
    assert "limit $1.00, committed $0.00, held $0.00, price $1.40" in denied.err


# ---------------------------------------------------------------------------------------------- commit, release


def test_commit_settles_the_hold(kb: Any) -> None:
    """`commit ID` turns the hold into committed spend."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    assert ok(kb("commit", "r1")).out == "committed r1: 1.5 units, $0.21 [committed]\n"
    status = ok(kb("budget", "show", "b", "--json")).json()
    assert (status["held_units"], status["committed_units"]) == ("0", "1.5")


def test_commit_with_units_above_the_hold_records_overage(kb: Any) -> None:
    """`commit --units` above the hold counts as overage and raises an alert on stderr."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    result = ok(kb("commit", "r1", "--units", "2", "--json"))
    data = result.json()
    assert (data["actual_units"], data["overage_units"], data["actual_usd"]) == ("2", "0.5", "0.28")
    assert "ALERT overage" in result.err
    status = ok(kb("budget", "show", "b", "--json")).json()
    assert (status["committed_units"], status["overage_units"]) == ("2", "0.5")
    assert "overage: 0.5 units above the hold" in ok(kb("commit", "r1", "--units", "2")).out  # replay


def test_commit_with_fewer_units_returns_the_rest(kb: Any) -> None:
    """Committing less than held frees the difference."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    ok(kb("commit", "r1", "--units", "0.5"))
    status = ok(kb("budget", "show", "b", "--json")).json()
    assert (status["held_units"], status["committed_units"], status["remaining_units"]) == ("0", "0.5", "9.5")


def test_release_returns_the_hold(kb: Any) -> None:
    """`release` gives the held units back, keeps the reason, and replays harmlessly."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    data = ok(kb("release", "r1", "--reason", "Kling said 1301", "--json")).json()
    assert data["state"] == "released"
    assert data["detail"]["release_reason"] == "Kling said 1301"
    assert "(replayed" in ok(kb("release", "r1")).out
    assert ok(kb("budget", "show", "b", "--json")).json()["held_units"] == "0"


def test_resolved_reservation_cannot_change_outcome(kb: Any) -> None:
    """Committing a released reservation (or releasing a committed one) is refused with exit 1."""
    ok(kb("reserve", *TURBO, "--key", "gone"))
    ok(kb("release", "gone"))
    refused = kb("commit", "gone")
    assert refused.code == 1
    assert refused.err == "error: reservation gone is released and cannot be committed\n"
    ok(kb("reserve", *TURBO, "--key", "done"))
    ok(kb("commit", "done"))
    assert kb("release", "done").code == 1


# ---------------------------------------------------------------------------------------------- record


def test_record_within_budget_exits_0(kb: Any) -> None:
    """`record` books a job that already ran; `--units` overrides the table price."""
    ok(kb("budget", "set", "b", "--project", "ads", "--limit-units", "100"))
    data = ok(kb("record", "--job-id", "8672837", *V26_PRO_10_SOUND, "--project", "ads", "--json")).json()
    assert (data["kind"], data["state"], data["units"], data["over_budget"]) == ("record", "committed", "10", False)
    ok(kb("record", "--job-id", "8672838", *TURBO, "--project", "ads", "--units", "3"))
    assert ok(kb("budget", "show", "b", "--json")).json()["committed_units"] == "13"


def test_record_over_budget_exits_1_but_is_recorded(kb: Any) -> None:
    """A recorded job that goes over budget is still booked (the money is spent) and exits 1."""
    ok(kb("budget", "set", "tiny", "--project", "ads", "--limit-units", "5"))
    result = kb("record", "--job-id", "t-1", *V26_PRO_10_SOUND, "--project", "ads")
    assert result.code == 1
    assert result.out == "recorded t-1: 10 units, $1.40 [committed]\n"
    assert "over budget: t-1 took a budget past its limit" in result.err
    assert "ALERT over_budget_record" in result.err
    assert ok(kb("budget", "show", "tiny", "--json")).json()["committed_units"] == "10"
    [stored] = ok(kb("reservations", "--json")).json()
    assert (stored["id"], stored["over_budget"]) == ("t-1", True)


def test_record_is_idempotent_on_job_id(kb: Any) -> None:
    """Recording the same job id twice books it once."""
    ok(kb("budget", "set", "b", "--limit-units", "100"))
    ok(kb("record", "--job-id", "j1", *TURBO))
    again = ok(kb("record", "--job-id", "j1", *TURBO, "--json")).json()
    assert again["replayed"] is True
    assert ok(kb("budget", "show", "b", "--json")).json()["committed_units"] == "1.5"


# ---------------------------------------------------------------------------------------------- reservations


def test_reservations_open_lists_only_holds(kb: Any) -> None:
    """`reservations --open` shows held reservations only; without it every state is listed."""
    ok(kb("reserve", *TURBO, "--key", "open-1", "--project", "p"))
    ok(kb("reserve", *TURBO, "--key", "done-1"))
    ok(kb("commit", "done-1"))
    ok(kb("record", "--job-id", "rec-1", *TURBO))
    assert [r["id"] for r in ok(kb("reservations", "--open", "--json")).json()] == ["open-1"]
    assert {r["id"] for r in ok(kb("reservations", "--json")).json()} == {"open-1", "done-1", "rec-1"}
    table = ok(kb("reservations", "--open")).out
    assert "Open holds" in table
    assert "open-1" in table
    assert "done-1" not in table
    assert len(ok(kb("reservations", "--limit", "1", "--json")).json()) == 1


# ---------------------------------------------------------------------------------------------- usage


@pytest.fixture
def history(kb: Any) -> None:
    """Usage in January 2025 (imported from the recipe fixture, its credits booked as units) plus jobs now."""
    ok(kb("import", str(FIXTURE), "--credits", "as-units"))
    ok(kb("record", "--job-id", "now-1", *TURBO, "--project", "ads", "--user", "ann", "--tags", "promo"))
    ok(kb("reserve", *TURBO, "--project", "ads", "--user", "bob", "--key", "now-2"))


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_usage_date_range_by_project_model_day_as_csv(kb: Any, history: None) -> None:
    """`usage --from --to --by project,model,day --format csv` sums committed spend per group, exactly."""
    result = ok(
        kb("usage", "--by", "project,model,day", "--from", "2025-01-13", "--to", "2025-01-14", "--format", "csv")
    )
    assert result.out.splitlines()[0] == (
        "start,end,project,model,day,video_committed_units,video_held_units,image_committed_units,image_held_units,"
        "try_on_committed_units,try_on_held_units,committed_usd,held_usd,jobs"
    )
    rows = {(r["project"], r["model"], r["day"]): (r["video_committed_units"], r["jobs"]) for r in _csv(result.out)}
    assert rows == {
        ("marketing", "kling-v1", "2025-01-13"): ("30.000", "2"),
        ("marketing", "kling-v1-5", "2025-01-14"): ("10.000", "1"),
        ("research", "kling-v1-6", "2025-01-14"): ("20.000", "1"),
    }
    first = _csv(result.out)[0]
    assert (first["start"], first["end"]) == ("2025-01-13T00:00:00+00:00", "2025-01-15T00:00:00+00:00")


def test_usage_to_date_is_inclusive(kb: Any, history: None) -> None:
    """`--to` includes the whole day it names."""
    rows = _csv(ok(kb("usage", "--by", "day", "--from", "2025-01-13", "--to", "2025-01-13", "--format", "csv")).out)
    assert [(r["day"], r["jobs"]) for r in rows] == [("2025-01-13", "2")]


def test_usage_current_month_shows_committed_and_held(kb: Any, history: None) -> None:
    """The default period is this month; held units of open reservations are shown apart."""
    data = ok(kb("usage", "--by", "project,user", "--json")).json()
    rows = {(r["project"], r["user"]): r for r in data["rows"]}
    assert (rows[("ads", "ann")]["video_committed_units"], rows[("ads", "ann")]["jobs"]) == ("1.500", 1)
    assert (rows[("ads", "bob")]["video_held_units"], rows[("ads", "bob")]["video_committed_units"]) == (
        "1.500",
        "0.000",
    )
    assert not any(project == "marketing" for project, _ in rows)
    assert ok(kb("usage", "--by", "project", "--format", "json")).json()["group_by"] == ["project"]


def test_usage_periods(kb: Any, history: None) -> None:
    """`--period today` and `--period last-7d` cover the jobs made now."""
    for period in ("today", "week", "last-7d"):
        rows = ok(kb("usage", "--period", period, "--json")).json()["rows"]
        assert [r["project"] for r in rows] == ["ads"], period


def test_usage_filters_by_tag_project_and_model(kb: Any, history: None) -> None:
    """`--tag`, `--project` and `--model` (aliases accepted) filter the rows."""
    tagged = ok(kb("usage", "--tag", "promo", "--by", "user", "--json")).json()["rows"]
    assert [(r["user"], r["video_committed_units"]) for r in tagged] == [("ann", "1.500")]
    january = ["--from", "2025-01-01", "--to", "2025-01-31", "--json"]
    by_model = ok(kb("usage", "--by", "model", "--model", "kling-v1.5", *january)).json()["rows"]
    assert [(r["model"], r["video_committed_units"]) for r in by_model] == [("kling-v1-5", "10.000")]
    research = ok(kb("usage", "--project", "research", *january)).json()["rows"]
    assert [r["video_committed_units"] for r in research] == ["20.000"]


def test_usage_csv_and_json_keep_pack_types_apart_in_fixed_scale_decimals(kb: Any) -> None:
    """4 video units and 4 image units in one project are two columns, not "8"; dollars are plain decimals with
    nine places and the currency in the header; the JSON has the same fields."""
    ok(kb("record", "--job-id", "v1", "--model", "kling-v1-6", "--duration", "5", "--project", "ads"))
    ok(kb("record", "--job-id", "v2", "--model", "kling-v1-6", "--duration", "5", "--project", "ads"))
    ok(kb("record", "--job-id", "i1", "--model", "kling-v2", "--product", "image", "--project", "ads"))
    ok(kb("reserve", "--model", "kling-v2", "--product", "image", "-n", "2", "--project", "ads", "--key", "i2"))
    (row,) = _csv(ok(kb("usage", "--format", "csv")).out)
    assert {k: v for k, v in row.items() if k not in ("start", "end")} == {
        "project": "ads",
        "video_committed_units": "4.000",
        "video_held_units": "0.000",
        "image_committed_units": "4.000",
        "image_held_units": "8.000",
        "try_on_committed_units": "0.000",
        "try_on_held_units": "0.000",
        "committed_usd": "0.574000000",
        "held_usd": "0.028000000",
        "jobs": "3",
    }
    start, end = datetime.fromisoformat(row["start"]), datetime.fromisoformat(row["end"])
    assert start.tzinfo is not None and end > start
    data = ok(kb("usage", "--json")).json()
    assert data["currency"] == "USD" and (data["start"], data["end"]) == (row["start"], row["end"])
    assert data["rows"] == [{k: int(v) if k == "jobs" else v for k, v in row.items() if k not in ("start", "end")}]


def test_usage_csv_cells_cannot_run_as_formulas(kb: Any) -> None:
    """Names starting with =, +, - or @ are written with a leading ' so a spreadsheet shows them as text; the
    numeric columns stay numbers."""
    for i, project in enumerate(['=HYPERLINK("http://x")', "+1", "-5", "@SUM(A1)", "plain"]):
        ok(kb("record", "--job-id", f"j{i}", *TURBO, "--project", project))
    rows = _csv(ok(kb("usage", "--format", "csv")).out)
    assert sorted(r["project"] for r in rows) == ["'+1", "'-5", '\'=HYPERLINK("http://x")', "'@SUM(A1)", "plain"]
    assert {r["video_committed_units"] for r in rows} == {"1.500"}


def test_usage_table_for_people(kb: Any, history: None) -> None:
    """The default table names the range, zone and groups."""
    out = ok(kb("usage", "--by", "project", "--from", "2025-01-01", "--to", "2025-01-31")).out
    assert "Usage 2025-01-01 .. 2025-02-01 (UTC)" in out
    assert "marketing" in out


# ---------------------------------------------------------------------------------------------- verify


def test_verify_ok(kb: Any) -> None:
    """`verify` exits 0 on a consistent ledger."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    ok(kb("commit", "r1"))
    assert ok(kb("verify")).out.startswith("verify: ok (1 reservations, 2 entries, 1 budget windows)")
    assert ok(kb("verify", "--json")).json()["ok"] is True


def test_verify_names_a_corrupted_counter(kb: Any, tmp_path: Path) -> None:
    """A counter changed behind the ledger's back makes `verify` exit 1 naming the budget and mismatch."""
    ok(kb("budget", "set", "b", "--limit-units", "10"))
    ok(kb("reserve", *TURBO, "--key", "r1"))
    ok(kb("commit", "r1"))
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("UPDATE budget_windows SET committed_milli = committed_milli + 1000")
    conn.close()
    result = kb("verify")
    assert result.code == 1
    assert "1 problem(s)" in result.out
    assert "budget b window" in result.out
    assert "committed_milli 2500 != 1500" in result.out
    data = json.loads(kb("verify", "--json").out)
    assert data["ok"] is False
    assert any("committed_milli 2500 != 1500" in p for p in data["problems"])


# ---------------------------------------------------------------------------------------------- packs


def test_packs_add_list_remove(kb: Any) -> None:
    """Packs can be added, listed with what was drawn, and removed while unused."""
    assert ok(kb("packs", "add", "v-nov", "--units", "100", "--price", "10", "--expires", "2099-01-01")).out == (
        "added pack v-nov: 100 video units, $0.1/unit\n"
    )
    ok(kb("packs", "add", "img", "--type", "image", "--units", "1000", "--price", "2.5"))
    packs = {p["name"]: p for p in ok(kb("packs", "list", "--json")).json()}
    assert set(packs) == {"v-nov", "img"}
    assert "v-nov" in ok(kb("packs", "list")).out
    assert ok(kb("packs", "remove", "img")).out == "removed pack img\n"
    assert [p["name"] for p in ok(kb("packs", "list", "--json")).json()] == ["v-nov"]


def test_pack_price_sets_the_usd_of_jobs_drawn_from_it(kb: Any) -> None:
    """A job drawn from a pack costs what the pack cost per unit, not the list price."""
    ok(kb("packs", "add", "cheap", "--units", "100", "--price", "10"))
    assert ok(kb("reserve", *TURBO, "--json")).json()["usd"] == "0.15"
    assert ok(kb("price", *TURBO, "--json")).json()["usd"] == "0.21"  # the quote stays at list price
    refused = kb("packs", "remove", "cheap")
    assert refused.code == 2
    assert refused.err.startswith("error: ")


# ---------------------------------------------------------------------------------------------- import, demo


def test_import_twice_adds_nothing_the_second_time(kb: Any, tmp_path: Path) -> None:
    """Importing the recipe file twice imports the records once and leaves budgets unchanged."""
    first = ok(kb("import", str(FIXTURE), "--json")).json()
    assert first == {
        "records_imported": 6,
        "records_skipped": 0,
        "budgets_imported": 2,
        "budgets_unchanged": 0,
        "credit_limits_dropped": 2,
    }
    before = (ok(kb("reservations", "--json")).json(), _rows(tmp_path / "x.db"))
    second = ok(kb("import", str(FIXTURE)))
    assert second.out.startswith(
        f"imported 0 usage records (6 already present), 0 budgets (2 unchanged) from {FIXTURE}\n"
    )
    assert (ok(kb("reservations", "--json")).json(), _rows(tmp_path / "x.db")) == before
    assert [b["budget"] for b in ok(kb("budget", "list", "--json")).json()] == ["marketing", "research"]
    ok(kb("verify"))


def _rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


def test_demo_exhausts_the_budget_exactly(kb: Any) -> None:
    """`demo` races worker processes against one budget and shows it exactly exhausted, then exits 0."""
    result = ok(kb("demo", "--workers", "2", "--limit-units", "30", db_url=None))
    assert "admitted 20 jobs" in result.out
    assert "floor(30 / 1.5) = 20: exactly exhausted, no overspend." in result.out
    assert "would be exceeded" in result.out
    assert "verify: ok" in result.out
    assert re.search(r"^Demo ledger: sqlite:///[^/]\S*/demo\.db ", result.out, re.MULTILINE), result.out[:200]


# ---------------------------------------------------------------------------------------------- plumbing


def test_default_ledger_lives_in_kling_budget_home(kb: Any, isolated_env: Path) -> None:
    """Without `--db` the ledger is `$KLING_BUDGET_HOME/ledger.db`."""
    ok(kb("budget", "set", "b", "--limit-units", "5", db_url=None))
    assert (isolated_env / "ledger.db").exists()
    assert [b["budget"] for b in ok(kb("budget", "list", "--json", db_url=None)).json()] == ["b"]


def test_db_env_var_chooses_the_ledger(kb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`KLING_BUDGET_DB` chooses the ledger when `--db` is not given; a plain file path works."""
    monkeypatch.setenv("KLING_BUDGET_DB", str(tmp_path / "env.db"))
    ok(kb("budget", "set", "b", "--limit-units", "5", db_url=None))
    assert (tmp_path / "env.db").exists()
    assert ok(kb("budget", "list", "--json", db_url=f"sqlite:///{tmp_path / 'env.db'}")).json()[0]["budget"] == "b"


def test_version_and_help_exit_0(kb: Any) -> None:
    """`--version` and `--help` print and exit 0."""
    assert "version" in ok(kb("--version", db_url=None)).out
    assert "Usage: kling-budget" in ok(kb("--help", db_url=None)).out


def test_logging_setup_is_undone_after_each_command(kb: Any) -> None:
    """The stderr handler for alerts is removed when the command ends, restoring the logger."""
    log = logging.getLogger("kling_budget")
    before = (list(log.handlers), log.level, log.propagate)
    ok(kb("budget", "set", "b", "--limit-units", "1"))
    ok(kb("record", "--job-id", "j", *TURBO, "--units", "0.5"))
    assert (list(log.handlers), log.level, log.propagate) == before


def test_python_m_kling_budget_exits_with_the_command_code(tmp_path: Path) -> None:
    """`python -m kling_budget` exits 1 on a denied check, like the console script."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    env_cmd = [sys.executable, "-m", "kling_budget", "--db", url]
    subprocess.run([*env_cmd, "budget", "set", "t", "--limit-units", "1"], check=True, capture_output=True)
    denied = subprocess.run([*env_cmd, "check", *TURBO], capture_output=True, text=True)
    assert denied.returncode == 1, denied
    assert denied.stdout.startswith("denied: budget 't'")


def test_unexpected_error_is_one_line_unless_debugging(kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception is one `internal error` line with exit 1; `KLING_BUDGET_DEBUG=1` re-raises it."""

    def explode(self: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("kling_budget.tracker.CostTracker.verify", explode)
    result = kb("verify")
    assert result.code == 1
    assert result.err == "error: internal error (RuntimeError): disk on fire; set KLING_BUDGET_DEBUG=1 for details\n"
    monkeypatch.setenv("KLING_BUDGET_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["verify"])


def test_a_file_that_is_not_a_ledger_is_refused_in_one_line(kb: Any, tmp_path: Path) -> None:
    """Pointing `--db` at a file that is not a ledger database exits 1 with one line and changes nothing."""
    other = tmp_path / "notes.txt"
    other.write_text("not a database\n" * 100)
    result = kb("budget", "list", db_url=str(other))
    assert result.code == 1
    assert result.err.startswith("error: ")
    assert "not a usable ledger database" in result.err
    assert len(result.err.splitlines()) == 1
    assert other.read_text() == "not a database\n" * 100
