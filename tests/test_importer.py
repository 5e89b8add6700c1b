"""Importing the recipe's ``cost_tracking.json``: history and budgets survive, and bad files change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_budget import CostTracker, InvalidInputError
from kling_budget.importer import ImportResult, import_recipe_data, import_recipe_file
from kling_budget.windows import Period
from tests.conftest import FixedClock

FIXTURE = Path(__file__).parent / "fixtures" / "recipe_cost_tracking.json"
JANUARY: dict[str, Any] = {"start": datetime(2025, 1, 1, tzinfo=UTC), "end": datetime(2025, 2, 1, tzinfo=UTC)}


@pytest.fixture
def tracker(sqlite_url: str, clock: FixedClock) -> Iterator[CostTracker]:
    """A tracker on a fresh SQLite ledger."""
    with CostTracker(sqlite_url, clock=clock, alert_sinks=[]) as opened:
        yield opened


def _snapshot(tracker: CostTracker) -> tuple[list[Any], list[Any]]:
    return [r.to_dict() for r in tracker.ledger.list_reservations(limit=1000)], tracker.list_budgets()


def test_realistic_recipe_file_keeps_history_at_its_original_time(tracker: CostTracker) -> None:
    """Every record lands at its original timestamp with its job id and attribution, re-priced in Kling units
    (the recipe's credits are its own scale) with the recipe's numbers kept alongside."""
    result = import_recipe_file(tracker, FIXTURE)
    assert result == ImportResult(
        records_imported=6, records_skipped=0, budgets_imported=2, budgets_unchanged=0, credit_limits_dropped=2
    )
    record = tracker.usage_record("CjhMIGeLGpsAAAAADPEpIA")
    assert (record.project_id, record.user_id, record.model, record.credits_used, record.cost_usd) == (
        "marketing",
        "bob",
        "kling-v1",
        Decimal(2),  # kling-v1 std 10 s; the recipe said 20 "credits"
        Decimal("0.28"),
    )
    assert record.details["recipe_record"]["credits_used"] == 20
    assert record.timestamp == datetime(2025, 1, 13, 15, 2, 44, 100200, tzinfo=UTC)
    assert record.details["imported_from"] == "recipe"
    assert tracker.usage_record("CjikY2eGC1gAAAAAAKz5Qw").model == "kling-v1-5"  # the recipe's "kling-v1.5"
    assert tracker.usage_record("CjhrD2eVB9sAAAAAAWmxNw").project_id is None  # "project_id": null
    by_project = {r.group["project"]: (r.committed_milli, r.jobs) for r in tracker.usage(**JANUARY)}
    assert by_project == {"": (1_000, 1), "marketing": (5_000, 3), "research": (4_000, 1)}
    assert tracker.verify().ok


def test_realistic_recipe_file_brings_its_budgets(tracker: CostTracker) -> None:
    """Recipe budgets keep their key as name and project, their dollar limit and alert threshold; the credit
    limit (in recipe credits, not Kling units) is dropped unless the file holds real units."""
    import_recipe_file(tracker, FIXTURE)
    marketing = tracker.get_budget("marketing")
    assert (marketing.scope.project, marketing.period, marketing.hard) == ("marketing", Period.MONTHLY, True)
    assert (marketing.limit_units_milli, marketing.limit_usd_nano) == (None, 600_000_000_000)
    assert marketing.thresholds == (80, 100)
    research = tracker.get_budget("research")
    assert (research.period, research.thresholds, research.limit_usd_nano) == (Period.WEEKLY, (90, 100), 40 * 10**9)


def test_credits_as_units_books_the_recorded_numbers(tracker: CostTracker) -> None:
    """With credits="as-units" the recorded credits and credit limits are booked as Kling units."""
    import_recipe_file(tracker, FIXTURE, credits="as-units")
    assert tracker.usage_record("CjhMIGeLGpsAAAAADPEpIA").credits_used == Decimal(20)
    assert tracker.get_budget("marketing").limit_units_milli == 10_000_000


def test_model_map_prices_models_the_table_does_not_know(tracker: CostTracker) -> None:
    """The recipe's "kling-pro" imports when mapped to a real model and mode."""
    record = {"job_id": "p", "model": "kling-pro", "duration": 10, "timestamp": "2025-01-13"}
    with pytest.raises(InvalidInputError, match="--model-map"):
        import_recipe_data(tracker, [record])
    import_recipe_data(tracker, [record], model_map={"kling-pro": "kling-v1-6:pro"})
    assert tracker.usage_record("p").credits_used == Decimal(7)


def test_importing_twice_adds_nothing(tracker: CostTracker) -> None:
    """The second import of the same file skips every record and leaves the budgets as they are."""
    import_recipe_file(tracker, FIXTURE)
    before = _snapshot(tracker)
    again = import_recipe_file(tracker, FIXTURE)
    assert again.to_dict() == {
        "records_imported": 0,
        "records_skipped": 6,
        "budgets_imported": 0,
        "budgets_unchanged": 2,
        "credit_limits_dropped": 2,
    }
    assert _snapshot(tracker) == before
    assert tracker.verify().ok


def test_changed_budget_is_updated_on_reimport(tracker: CostTracker) -> None:
    """A budget whose limit changed in the file is updated by the next import."""
    data = json.loads(FIXTURE.read_text())
    import_recipe_data(tracker, data)
    data["budgets"]["research"]["limit_usd"] = 75
    result = import_recipe_data(tracker, data)
    assert (result.budgets_imported, result.budgets_unchanged) == (1, 1)
    assert tracker.get_budget("research").limit_usd_nano == 75 * 10**9


def test_imported_spend_counts_against_the_current_window(tracker: CostTracker, clock: FixedClock) -> None:
    """History inside a budget's current window counts, and can take it over budget."""
    when = clock.now.isoformat()
    record = {"job_id": "now-1", "project_id": "ads", "model": "kling-v1", "duration": 5, "credits_used": 30}
    data = {"records": [{**record, "timestamp": when}], "budgets": {"ads": {"period": "daily", "limit_credits": 20}}}
    import_recipe_data(tracker, data, credits="as-units")
    status = tracker.budget_status("ads")
    assert status.counters.committed_milli == 30_000
    assert status.exhausted


ALTERNATIVES = {
    "list-of-records": [
        {"id": "a1", "project": "p", "model": "kling-v1", "duration": 5, "units": 2, "created_at": 1736760000},
    ],
    "usage-key-task-id": {
        "usage": [{"task_id": "a1", "project_id": "p", "model_name": "kling-v1", "credits": "2", "time": "2025-01-13"}],
    },
    "usage-records-key": {
        "usage_records": [
            {"job_id": "a1", "project_id": "p", "model": "kling-v1", "cost_credits": 2, "date": "2025-01-13T09:20:00Z"}
        ],
    },
    "history-key-decimal-seconds": {
        "history": [{"job_id": "a1", "project": "p", "model": "kling-v1", "credits": 2.0, "timestamp": 1736760000.5}],
    },
}


@pytest.mark.parametrize("data", ALTERNATIVES.values(), ids=ALTERNATIVES.keys())
def test_alternative_record_spellings(tracker: CostTracker, data: Any) -> None:
    """Common variations of the recipe's record fields import the same job."""
    parsed = json.loads(json.dumps(data), parse_float=Decimal)
    assert import_recipe_data(tracker, parsed, credits="as-units").records_imported == 1
    record = tracker.usage_record("a1")
    assert (record.project_id, record.model, record.credits_used) == ("p", "kling-v1", Decimal(2))
    assert record.timestamp.date() == datetime(2025, 1, 13).date()


def test_alternative_budget_spellings(tracker: CostTracker) -> None:
    """Budgets as a list, with `project`, `daily_limit`/`monthly_limit`, `budget_usd` and a percent threshold."""
    data = {
        "budgets": [
            {"project": "a", "daily_limit": 50, "alert_threshold": 75},
            {"project_id": "b", "monthly_limit": "12.5", "budget_usd": "3"},
            {"name": "c", "limit_usd": 9, "period": "total"},
        ]
    }
    assert import_recipe_data(tracker, data, credits="as-units").budgets_imported == 3
    a, b, c = (tracker.get_budget(key) for key in "abc")
    assert (a.period, a.limit_units_milli, a.thresholds) == (Period.DAILY, 50_000, (75, 100))
    assert (b.period, b.limit_units_milli, b.limit_usd_nano, b.thresholds) == (
        Period.MONTHLY,
        12_500,
        3_000_000_000,
        (50, 80, 100),
    )
    assert (c.period, c.limit_units_milli, c.limit_usd_nano) == (Period.TOTAL, None, 9_000_000_000)


def test_record_without_credits_is_priced_from_the_table(tracker: CostTracker) -> None:
    """A record without credits gets the exact table price of its model, mode and duration."""
    record = {"job_id": "p1", "model": "kling-v2-6", "mode": "pro", "duration": 10, "timestamp": "2025-01-13"}
    import_recipe_data(tracker, [record])
    assert tracker.usage_record("p1").credits_used == tracker.calculate_credits(10, "kling-v2-6", "pro")


def test_record_without_job_id_gets_a_stable_key(tracker: CostTracker) -> None:
    """A record without a job id is keyed by its content, so re-importing it is still a no-op."""
    data = [{"model": "kling-v1", "duration": 5, "credits_used": 10, "timestamp": "2025-01-13T09:00:00"}]
    assert import_recipe_data(tracker, data).records_imported == 1
    assert import_recipe_data(tracker, data).records_skipped == 1
    [info] = tracker.ledger.list_reservations()
    assert info.id.startswith("import-")


def test_same_job_twice_in_one_file_is_imported_once(tracker: CostTracker) -> None:
    """An identical duplicate record in the file is skipped, not double-counted."""
    record = {"job_id": "d", "model": "kling-v1", "duration": 5, "credits_used": 10, "timestamp": "2025-01-13"}
    result = import_recipe_data(tracker, [record, dict(record)])
    assert (result.records_imported, result.records_skipped) == (1, 1)


def test_empty_recipe_file_imports_nothing(tracker: CostTracker) -> None:
    """A recipe file with no records and no budgets yet is fine."""
    assert import_recipe_data(tracker, {"records": [], "budgets": {}}) == ImportResult(0, 0, 0, 0, 0)


GOOD = {"job_id": "good-1", "model": "kling-v1", "duration": 5, "credits_used": 10, "timestamp": "2025-01-13"}


def _with(**fields: Any) -> dict[str, Any]:
    return {"job_id": "bad-2", "model": "kling-v1", "duration": 5, "timestamp": "2025-01-13", **fields}


BAD: dict[str, tuple[Any, tuple[str, ...]]] = {
    "unknown-model": ({"records": [GOOD, _with(model="kling-pro")]}, ("record 2", "unknown model 'kling-pro'")),
    "bad-duration": ({"records": [GOOD, _with(duration=7)]}, ("record 2", "5, 10")),
    "bad-timestamp": ({"records": [GOOD, _with(timestamp="last tuesday")]}, ("record 2", "'last tuesday'")),
    "no-timestamp": ({"records": [GOOD, _with(timestamp=None)]}, ("record 2", "needs a timestamp")),
    "millisecond-timestamp": ({"records": [GOOD, _with(timestamp=10**17)]}, ("record 2", "Unix seconds")),
    "negative-credits": ({"records": [GOOD, _with(credits_used=-10)]}, ("record 2", "cannot be negative")),
    "credits-too-precise": ({"records": [GOOD, _with(credits="1.0001")]}, ("record 2", "3 decimal places")),
    "credits-not-a-number": ({"records": [GOOD, _with(credits="ten")]}, ("record 2", "'ten'")),
    "record-not-an-object": ({"records": [GOOD, "bad"]}, ("record 2", "must be an object")),
    "blank-job-id": ({"records": [GOOD, _with(job_id=" ")]}, ("record 2", "job id must be non-blank")),
    "long-job-id": ({"records": [GOOD, _with(job_id="x" * 300)]}, ("record 2", "at most 255")),
    "duplicate-job-id": ({"records": [GOOD, {**GOOD, "credits_used": 11}]}, ("record 2", "record 1", "different")),
    "records-not-a-list": ({"records": {"a": 1}}, ("must be a list",)),
    "not-an-object": (42, ("expected a JSON object",)),
    "nothing-known": ({"jobs": []}, ("no usage records or budgets", "'records'")),
    "budget-unknown-period": (
        {"records": [GOOD], "budgets": {"m": {"period": "yearly", "limit_credits": 5}}},
        ("budget 1 (m)", "unknown period 'yearly'", "monthly"),
    ),
    "budget-no-limit": ({"records": [GOOD], "budgets": {"m": {"period": "daily"}}}, ("budget 1 (m)", "no limit")),
    "budget-zero-limit": ({"records": [GOOD], "budgets": {"m": {"limit_credits": 0}}}, ("budget 1 (m)", "than 0")),
    "budget-bad-threshold": (
        {"records": [GOOD], "budgets": {"m": {"limit_credits": 5, "alert_threshold": "high"}}},
        ("budget 1 (m)", "alert_threshold 'high'", "0.8"),
    ),
    "budget-no-project": ({"records": [GOOD], "budgets": [{"limit_credits": 5}]}, ("budget 1", "project_id")),
    "budget-not-an-object": ({"records": [GOOD], "budgets": {"m": 5}}, ("budget 1", "must be an object")),
    "budgets-wrong-type": ({"records": [GOOD], "budgets": "all"}, ("'budgets' must be an object",)),
    "budget-bad-name": ({"budgets": {"two words": {"limit_credits": 5}}}, ("budget 1 (two words)", "budget name")),
}


@pytest.mark.parametrize(("data", "fragments"), BAD.values(), ids=BAD.keys())
def test_bad_data_is_one_line_and_imports_nothing(tracker: CostTracker, data: Any, fragments: tuple[str, ...]) -> None:
    """A bad record or budget fails the import with one line naming it and the problem; nothing is imported."""
    before = _snapshot(tracker)
    with pytest.raises(InvalidInputError) as caught:
        parsed = json.loads(json.dumps(data), parse_float=Decimal)
        import_recipe_data(tracker, parsed, source="costs.json", credits="as-units")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("costs.json")
    for fragment in fragments:
        assert fragment in message
    assert _snapshot(tracker) == before


def test_job_id_used_in_the_ledger_for_another_job_fails_the_import(tracker: CostTracker) -> None:
    """A job id already in the ledger for a different job fails the whole import before anything is written."""
    tracker.reserve(model="kling-v2-6", mode="pro", duration=5, key="taken")
    before = _snapshot(tracker)
    data = {"records": [GOOD, {**GOOD, "job_id": "taken"}]}
    with pytest.raises(InvalidInputError, match=r"record 2: job id 'taken' is already in the ledger for a different"):
        import_recipe_data(tracker, data)
    assert _snapshot(tracker) == before


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ("{oops", "is not valid JSON (line 1"),
        (b"\xff\xfe\x00", "is not UTF-8"),
    ],
    ids=["missing", "invalid-json", "not-utf8"],
)
def test_unreadable_files_are_one_line_errors(
    tracker: CostTracker, tmp_path: Path, content: str | bytes | None, fragment: str
) -> None:
    """A missing, non-JSON or non-UTF-8 file is a one-line error naming the file."""
    path = tmp_path / "cost_tracking.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as caught:
        import_recipe_file(tracker, path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
