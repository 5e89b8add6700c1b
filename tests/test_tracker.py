"""The Python API: ``CostTracker`` as the recipe's users expect it, and the atomic ``reserve`` path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from kling_budget import (
    Budget,
    BudgetExceededError,
    BudgetPeriod,
    CostTracker,
    InvalidInputError,
    Reservation,
    UsageRecord,
)
from kling_budget.ledger import ReservationState
from kling_budget.pricing import PACKAGED_FILE
from kling_budget.types import AlertEvent, AlertKind
from tests.conftest import FixedClock

TURBO: dict[str, Any] = {"model": "kling-v2-5-turbo", "mode": "std", "duration": 5}  # 1.5 units, $0.21 at list price


class Collect:
    """An alert sink that keeps what it receives."""

    name = "collect"
    inline = True  # appends to a list, cannot block: the dispatcher may call it in the caller's thread

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def __call__(self, event: AlertEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[AlertKind]:
        return [e.kind for e in self.events]


@pytest.fixture
def sink() -> Collect:
    """Alerts delivered by the tracker under test."""
    return Collect()


@pytest.fixture
def tracker(sqlite_url: str, clock: FixedClock, sink: Collect) -> Iterator[CostTracker]:
    """A tracker on a fresh SQLite ledger at 2026-03-10 12:00 UTC."""
    with CostTracker(sqlite_url, clock=clock, alert_sinks=[sink]) as opened:
        yield opened


# ------------------------------------------------------------------------------------------- pricing


def test_calculate_credits_and_cost_are_exact_decimals(tracker: CostTracker) -> None:
    """`calculate_credits(duration, model)` (the recipe's order) and `calculate_cost(credits)` are exact."""
    credits = tracker.calculate_credits(5, "kling-v2-5-turbo", "std")
    cost = tracker.calculate_cost(credits)
    assert (credits, cost) == (Decimal("1.5"), Decimal("0.21"))
    assert isinstance(credits, Decimal)
    assert isinstance(cost, Decimal)
    assert tracker.calculate_credits(model="kling-v2-6", duration=10, mode="pro", sound=True) == Decimal(10)
    assert tracker.calculate_cost(10, tier_credits=2000) == Decimal("1.40")
    assert tracker.calculate_cost(8, pack_type="image") == Decimal("0.028")


def test_calculate_cost_follows_the_pack_jobs_draw_from(tracker: CostTracker) -> None:
    """With a purchased pack registered, credits cost what the pack cost."""
    tracker.add_pack("bulk", units=60000, price_usd=7560)
    assert tracker.calculate_cost(10) == Decimal("1.26")


def test_calculate_credits_accepts_recipe_spellings(tracker: CostTracker) -> None:
    """`kling-v1.5` (the recipe's spelling) prices as `kling-v1-5`."""
    assert tracker.calculate_credits(model="kling-v1.5", duration=5) == tracker.calculate_credits(
        model="kling-v1-5", duration=5
    )


def test_unknown_model_names_the_accepted_ones(tracker: CostTracker) -> None:
    """An unknown model is an error naming what is accepted, never a default multiplier."""
    with pytest.raises(InvalidInputError, match=r"unknown model 'kling-pro'.*kling-v2-6"):
        tracker.calculate_credits(model="kling-pro", duration=10)


# ------------------------------------------------------------------------------------------- recipe flow


def test_the_recipes_own_example_runs(tracker: CostTracker) -> None:
    """The recipe's example (Budget with float literals, can_generate, record_usage, get_usage,
    check_budget) runs unchanged apart from a real model name."""
    tracker.set_budget(
        "marketing",
        Budget(period=BudgetPeriod.MONTHLY, limit_credits=10000, limit_usd=600.00, alert_threshold=0.8),
    )
    check = tracker.can_generate("marketing", duration=10, model="kling-v1-6")
    assert check["allowed"] is True and check["reason"] is None
    assert (check["credits_needed"], check["cost_needed"]) == (Decimal("4"), Decimal("0.56"))
    assert (check["credits_remaining"], check["cost_remaining"]) == (Decimal("10000"), Decimal("600.00"))
    record = tracker.record_usage(job_id="vid_abc123", duration=10, model="kling-v1-6", project_id="marketing")
    assert isinstance(record, UsageRecord)
    assert (record.job_id, record.credits_used, record.cost_usd, record.project_id, record.user_id) == (
        "vid_abc123",
        Decimal("4"),
        Decimal("0.56"),
        "marketing",
        None,
    )
    usage = tracker.get_usage(BudgetPeriod.MONTHLY, "marketing")
    assert (usage["period"], usage["total_credits"], usage["total_cost_usd"], usage["record_count"]) == (
        "monthly",
        Decimal("4"),
        Decimal("0.56"),
        1,
    )
    assert usage["start"] == "2026-03-01T00:00:00+00:00"
    status = tracker.check_budget("marketing")
    assert status["has_budget"] is True
    assert status["budget"]["limit_credits"] == Decimal("10000") and status["budget"]["limit_usd"] == Decimal("600.00")
    assert (status["credits_remaining"], status["usd_remaining"]) == (Decimal("9996"), Decimal("599.44"))
    assert (status["credits_percent"], status["over_budget"], status["alert_triggered"]) == (
        Decimal("0.0"),
        False,
        False,
    )
    assert tracker.get_budget("marketing").scope.project == "marketing"
    assert tracker.get_budget("marketing").thresholds == (80, 100)


def test_keyword_budgets_and_recipe_flow(tracker: CostTracker) -> None:
    """The keyword form of set_budget works with the recipe's checks; held jobs count as used."""
    budget = tracker.set_budget(
        "marketing", project_id="marketing", period=BudgetPeriod.MONTHLY, limit_credits=10, alert_at="80"
    )
    assert isinstance(budget, Budget)
    check = tracker.can_generate("marketing", duration=5, model="kling-v2-5-turbo", mode="std")
    assert (check["allowed"], check["credits_needed"], check["credits_remaining"]) == (True, Decimal("1.5"), 10)
    record = tracker.record_usage(
        "vid_abc123", duration=5, model="kling-v2-5-turbo", mode="std", project_id="marketing"
    )
    assert (record.status, record.duration, record.mode, record.over_budget) == ("committed", 5, "std", False)
    assert tracker.can_generate("marketing", 5, "kling-v2-5-turbo", mode="std")["credits_remaining"] == Decimal("8.5")
    tracker.reserve(**TURBO, project_id="marketing")
    status = tracker.check_budget("marketing")
    assert (status["usage"]["total_credits"], status["usage"]["held_credits"]) == (Decimal("3"), Decimal("1.5"))
    assert status["usd_remaining"] is None and status["cost_percent"] is None


def test_can_generate_without_budget_is_allowed(tracker: CostTracker) -> None:
    """With no budget in scope the job is allowed, as in the recipe ("No budget set")."""
    check = tracker.can_generate("nobody", 10, "kling-v1")
    assert check["allowed"] is True
    assert check["credits_remaining"] is None
    assert check["reason"] == "No budget set"
    assert tracker.check_budget("nobody") == {"has_budget": False}


def test_can_generate_denies_without_reserving(tracker: CostTracker) -> None:
    """A job that does not fit is refused with the reason; checking holds nothing."""
    tracker.set_budget("small", project_id="p", limit_units=1)
    check = tracker.can_generate("p", **TURBO)
    assert check["allowed"] is False
    assert check["reason"].startswith("budget 'small'")
    assert check["denial"]["price"] == "1.5"
    assert tracker.budget_status("small").counters.held_milli == 0


def test_record_usage_is_idempotent_on_job_id(tracker: CostTracker) -> None:
    """Recording the same job id twice books it once."""
    tracker.set_budget("all", limit_units=100)
    first = tracker.record_usage("job-1", **TURBO, project_id="p")
    second = tracker.record_usage("job-1", **TURBO, project_id="p")
    assert first == second
    assert tracker.budget_status("all").counters.committed_milli == 1500
    assert len(tracker.ledger.list_reservations()) == 1


def test_record_usage_over_budget_is_recorded_and_flagged(tracker: CostTracker, sink: Collect) -> None:
    """Usage that already happened is always recorded; over the limit it is flagged and alerts."""
    tracker.set_budget("tiny", project_id="p", limit_units=1)
    record = tracker.record_usage("over-1", **TURBO, project_id="p")
    assert record.over_budget is True
    assert tracker.budget_status("tiny").counters.committed_milli == 1500
    assert AlertKind.OVER_BUDGET_RECORD in sink.kinds()
    assert tracker.check_budget("tiny")["over_budget"] is True


def test_record_usage_positional_order_is_the_recipes(tracker: CostTracker) -> None:
    """`record_usage(job_id, duration, model, user_id, project_id)` as in the recipe."""
    record = tracker.record_usage("j", 10, "kling-v1", "alice", "marketing")
    assert (record.user_id, record.project_id, record.duration) == ("alice", "marketing", 10)


def test_record_usage_with_charged_credits(tracker: CostTracker) -> None:
    """`credits=` books what Kling actually charged instead of the table price."""
    assert tracker.record_usage("j", **TURBO, credits="2.25").credits == Decimal("2.25")
    with pytest.raises(InvalidInputError, match="charged units cannot be negative"):
        tracker.record_usage("k", **TURBO, credits=-1)


def test_usage_groups_and_filters(tracker: CostTracker, clock: FixedClock) -> None:
    """`usage` groups by any dimension and filters by project, user and model alias."""
    tracker.record_usage("a", **TURBO, project_id="p", user_id="ann")
    tracker.record_usage("b", 10, "kling-v1-5", project_id="p", user_id="bob")
    tracker.record_usage("c", **TURBO, project_id="q", user_id="ann")
    rows = tracker.usage(group_by=("project", "user"))
    assert [(r.group["project"], r.group["user"], r.committed_milli) for r in rows] == [
        ("p", "ann", 1500),
        ("p", "bob", tracker.quote("kling-v1-5", duration=10).units_milli),
        ("q", "ann", 1500),
    ]
    assert [r.jobs for r in tracker.usage(project_id="p", user_id="ann")] == [1]
    assert [r.group for r in tracker.usage(model="kling-v1.5", group_by=("model",))] == [{"model": "kling-v1-5"}]
    assert [r.group["day"] for r in tracker.usage(group_by=("day",), period="today")] == ["2026-03-10"]
    assert tracker.get_usage(BudgetPeriod.DAILY, "ann", key_type="user")["record_count"] == 2
    clock.now += timedelta(days=40)
    assert tracker.usage() == []
    assert tracker.get_usage(BudgetPeriod.MONTHLY)["record_count"] == 0
    earlier = tracker.usage(start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC))
    assert sum(r.jobs for r in earlier) == 3


def test_check_budget_reports_threshold_and_over_budget(tracker: CostTracker) -> None:
    """`check_budget` says when the alert threshold is reached and when the budget is used up."""
    tracker.set_budget("p-month", project_id="p", limit_units=2, alert_at="50")
    tracker.record_usage("j", **TURBO, project_id="p")
    status = tracker.check_budget("p-month")
    assert (status["credits_percent"], status["alert_triggered"], status["over_budget"]) == (
        Decimal("75.0"),
        True,
        False,
    )
    tracker.record_usage("k", **TURBO, project_id="p")
    assert tracker.check_budget("p-month")["over_budget"] is True


def test_usage_record_by_job_id(tracker: CostTracker) -> None:
    """`usage_record` reads one job back."""
    tracker.record_usage("j", **TURBO, project_id="p")
    record = tracker.usage_record("j")
    assert (record.job_id, record.model, record.credits_used) == ("j", "kling-v2-5-turbo", Decimal("1.5"))


# ------------------------------------------------------------------------------------------- reserve


def test_reserve_returns_a_held_reservation(tracker: CostTracker) -> None:
    """`reserve` holds the exact price against the matching budgets and returns a `Reservation`."""
    tracker.set_budget("b", project_id="p", limit_units=10)
    hold = tracker.reserve(**TURBO, project_id="p", user_id="ann")
    assert isinstance(hold, Reservation)
    assert (hold.units, hold.usd, hold.state) == (Decimal("1.5"), Decimal("0.21"), ReservationState.HELD)
    assert hold.quote is not None
    assert hold.quote.model == "kling-v2-5-turbo"
    assert tracker.budget_status("b").counters.held_milli == 1500
    assert repr(hold).startswith(f"Reservation(id='{hold.id}'")


def test_commit_defaults_to_the_held_amount(tracker: CostTracker) -> None:
    """`commit()` settles with the held amount and returns a `UsageRecord`."""
    tracker.set_budget("b", limit_units=10)
    hold = tracker.reserve(**TURBO)
    record = hold.commit()
    assert (record.credits, record.status) == (Decimal("1.5"), "committed")
    counters = tracker.budget_status("b").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 1500)


def test_commit_with_more_units_is_overage(tracker: CostTracker, sink: Collect) -> None:
    """`commit(units=...)` above the hold records overage and alerts."""
    tracker.set_budget("b", limit_units=10)
    record = tracker.reserve(**TURBO).commit(units="2")
    assert record.credits == Decimal(2)
    assert tracker.budget_status("b").counters.overage_milli == 500
    assert AlertKind.OVERAGE in sink.kinds()


def test_commit_refuses_negative_units(tracker: CostTracker) -> None:
    """Negative charged units are refused in units, not milli-units."""
    hold = tracker.reserve(**TURBO)
    with pytest.raises(InvalidInputError, match=r"charged units cannot be negative, got '-1'"):
        hold.commit("-1")
    assert tracker.ledger.get_reservation(hold.id).state is ReservationState.HELD


def test_release_returns_the_hold(tracker: CostTracker) -> None:
    """`release()` gives the units back."""
    tracker.set_budget("b", limit_units=10)
    hold = tracker.reserve(**TURBO)
    hold.release("never sent")
    assert hold.state is ReservationState.RELEASED
    assert tracker.budget_status("b").counters.held_milli == 0


def test_context_manager_commits_on_success(tracker: CostTracker) -> None:
    """Leaving the block normally commits the held amount."""
    with tracker.reserve(**TURBO) as hold:
        pass
    assert hold.state is ReservationState.COMMITTED
    assert tracker.ledger.get_reservation(hold.id).actual_milli == 1500


def test_context_manager_keeps_an_explicit_commit(tracker: CostTracker) -> None:
    """A commit made inside the block (with Kling's charge) is not overwritten on exit."""
    with tracker.reserve(**TURBO) as hold:
        hold.commit(units="1")
    assert tracker.ledger.get_reservation(hold.id).actual_milli == 1000


def test_context_manager_releases_on_exception(tracker: CostTracker) -> None:
    """An exception before submission releases the hold and propagates."""
    tracker.set_budget("b", limit_units=10)
    with pytest.raises(RuntimeError, match="boom"), tracker.reserve(**TURBO) as hold:
        raise RuntimeError("boom")
    assert hold.state is ReservationState.RELEASED
    assert hold.info.detail["release_reason"] == "RuntimeError before submission"
    assert tracker.budget_status("b").counters.held_milli == 0


def test_context_manager_leaves_a_submitted_reservation_open(
    tracker: CostTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception after `mark_submitted` leaves the hold open (the job may have reached Kling)."""
    tracker.set_budget("b", limit_units=10)
    with (
        caplog.at_level(logging.WARNING, logger="kling_budget"),
        pytest.raises(TimeoutError),
        tracker.reserve(**TURBO) as hold,
    ):
        hold.mark_submitted(task_id="kling-task-1")
        raise TimeoutError
    info = tracker.ledger.get_reservation(hold.id)
    assert (info.state, info.task_id) == (ReservationState.SUBMITTED, "kling-task-1")
    assert tracker.budget_status("b").counters.held_milli == 1500
    assert "left open for reconcile" in caplog.text


def test_reservation_can_be_resolved_from_another_tracker(sqlite_url: str, tracker: CostTracker) -> None:
    """`tracker.reservation(id)` picks up a hold made elsewhere (e.g. by another process)."""
    hold = tracker.reserve(**TURBO, key="shared")
    with CostTracker(sqlite_url, alert_sinks=[]) as other:
        other.reservation("shared").commit()
    assert tracker.ledger.get_reservation(hold.id).state is ReservationState.COMMITTED


def test_reserve_key_replays_and_empty_key_is_refused(tracker: CostTracker) -> None:
    """The same key returns the same reservation; an empty key is an error, not a fresh UUID."""
    tracker.set_budget("b", limit_units=10)
    first = tracker.reserve(**TURBO, key="k")
    again = tracker.reserve(**TURBO, key="k")
    assert (again.id, again.info.replayed) == (first.id, True)
    assert tracker.budget_status("b").counters.held_milli == 1500
    with pytest.raises(InvalidInputError, match="non-empty"):
        tracker.reserve(**TURBO, key="")


def test_reserve_ttl_expires_an_unsubmitted_hold_only(tracker: CostTracker, clock: FixedClock) -> None:
    """A held reservation past its TTL is released by the sweep; a submitted one never is."""
    tracker.set_budget("b", limit_units=10)
    idle = tracker.reserve(**TURBO, ttl=timedelta(minutes=5))
    sent = tracker.reserve(**TURBO, ttl=timedelta(minutes=5)).mark_submitted()
    assert idle.info.expires_at == clock.now + timedelta(minutes=5)
    assert tracker.ledger.expire_unsubmitted(now=clock.now + timedelta(minutes=6)) == [idle.id]
    assert tracker.ledger.get_reservation(sent.id).state is ReservationState.SUBMITTED
    assert tracker.budget_status("b").counters.held_milli == 1500


def test_budget_exceeded_error_carries_the_denial(tracker: CostTracker, clock: FixedClock) -> None:
    """A denial names budget, scope, window, limit, committed, held, price and reset time."""
    tracker.set_budget("daily", project_id="p", period="daily", limit_units=2)
    tracker.reserve(**TURBO, project_id="p")
    with pytest.raises(BudgetExceededError) as caught:
        tracker.reserve(**TURBO, project_id="p", key="too-much")
    denial = caught.value.denial
    assert denial is not None
    assert (denial.budget, denial.scope, denial.period, denial.limit_kind) == ("daily", "project=p", "daily", "units")
    assert (denial.limit, denial.committed, denial.held, denial.price) == (2000, 0, 1500, 1500)
    assert denial.window_start == datetime(2026, 3, 10, tzinfo=UTC)
    assert denial.reset_at == denial.window_end == datetime(2026, 3, 11, tzinfo=UTC)
    assert str(caught.value) == denial.message()
    assert denial.to_dict()["held"] == "1.5"
    with pytest.raises(BudgetExceededError):  # the same key gets the same answer
        tracker.reserve(**TURBO, project_id="p", key="too-much")


def test_budget_exceeded_error_still_works_the_recipe_way() -> None:
    """`raise BudgetExceededError("...")` as in the recipe works, with no denial."""
    error = BudgetExceededError("Budget exceeded for marketing")
    assert (str(error), error.denial) == ("Budget exceeded for marketing", None)


def test_soft_budget_alerts_but_never_denies(tracker: CostTracker, sink: Collect) -> None:
    """A soft budget lets jobs through past its limit and raises threshold alerts."""
    tracker.set_budget("soft", limit_units=2, hard=False)
    tracker.reserve(**TURBO).commit()
    tracker.reserve(**TURBO).commit()
    assert tracker.budget_status("soft").counters.committed_milli == 3000
    assert AlertKind.THRESHOLD in sink.kinds()


# ------------------------------------------------------------------------------------------- packs, prices


def test_usd_follows_the_pack_price(tracker: CostTracker) -> None:
    """After `add_pack`, a job's dollars follow what the pack cost, not the list price."""
    pack = tracker.add_pack("cheap", units=100, price_usd=10)
    assert pack.usd_per_unit == Decimal("0.1")
    hold = tracker.reserve(**TURBO)
    assert hold.usd == Decimal("0.15")
    assert tracker.quote(**TURBO).usd == Decimal("0.21")  # the list price is unchanged
    assert tracker.calculate_cost("1.5") == Decimal("0.15")  # credits cost what the pack cost
    assert hold.commit().cost_usd == Decimal("0.15")


def test_calculate_cost_draws_across_packs_like_a_reservation(tracker: CostTracker, clock: FixedClock) -> None:
    """Units beyond the soonest-expiring pack come from the next pack, then at list price, as a hold would."""
    tracker.add_pack("small", units=5, price_usd="0.5", expires_at=clock.now + timedelta(days=1))
    tracker.add_pack("big", units=5, price_usd="0.35", expires_at=clock.now + timedelta(days=30))
    # 5 units at $0.10 + 5 units at $0.07 + 2 units at the $0.14 list price
    assert tracker.calculate_cost(12) == Decimal("1.13")
    expected = tracker.calculate_cost(10)
    hold = tracker.reserve(model="kling-v2-6", mode="pro", duration=10, sound=True)  # 10 units
    assert expected == Decimal("0.85") and hold.usd == expected


def test_can_generate_agrees_with_reserve_on_a_dollar_budget(tracker: CostTracker) -> None:
    """A job its discounted pack makes affordable is allowed by the check and by the reservation alike."""
    tracker.set_budget("dollars", project_id="p", limit_usd="1")
    tracker.add_pack("cheap", units=100, price_usd=7)  # $0.07 a unit, half the list price
    check = tracker.check_quote(tracker.quote("kling-v2-6", mode="pro", duration=10, sound=True), project_id="p")
    assert check["allowed"] is True and check["cost_needed"] == Decimal("0.70")
    hold = tracker.reserve(model="kling-v2-6", mode="pro", duration=10, sound=True, project_id="p")
    assert hold.usd == Decimal("0.70")


def test_add_pack_rejects_an_unknown_pack_type(tracker: CostTracker) -> None:
    """An unknown pack type names the accepted ones."""
    with pytest.raises(InvalidInputError, match="unknown pack type 'audio'; accepted: video, image, try_on"):
        tracker.add_pack("x", units=1, price_usd=1, pack_type="audio")


def _custom_prices(tmp_path: Path) -> Path:
    """The packaged table with its own version and a video unit price of $0.20."""
    text = (resources.files("kling_budget") / "prices" / PACKAGED_FILE).read_text(encoding="utf-8")
    text = text.replace('version = "', 'version = "custom-', 1)
    assert 'video = "0.14"' in text
    path = tmp_path / "my-prices.toml"
    path.write_text(text.replace('video = "0.14"', 'video = "0.20"', 1), encoding="utf-8")
    return path


def test_custom_price_file_via_argument(sqlite_url: str, tmp_path: Path) -> None:
    """`prices=` points the tracker at your own price file."""
    with CostTracker(sqlite_url, prices=_custom_prices(tmp_path), alert_sinks=[]) as custom:
        assert custom.prices.version.startswith("custom-")
        assert custom.calculate_cost("1.5") == Decimal("0.30")
        assert custom.reserve(**TURBO).usd == Decimal("0.30")


def test_custom_price_file_via_environment(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`KLING_BUDGET_PRICES` points the tracker at your own price file."""
    monkeypatch.setenv("KLING_BUDGET_PRICES", str(_custom_prices(tmp_path)))
    with CostTracker(sqlite_url, alert_sinks=[]) as custom:
        assert custom.quote(**TURBO).usd == Decimal("0.30")


def test_budget_period_is_the_recipes_enum() -> None:
    """`BudgetPeriod.DAILY/WEEKLY/MONTHLY` exist with the recipe's values, plus TOTAL."""
    assert [p.value for p in BudgetPeriod] == ["daily", "weekly", "monthly", "total"]


def test_default_ledger_is_created_in_kling_budget_home(isolated_env: Path) -> None:
    """`CostTracker()` without arguments uses `$KLING_BUDGET_HOME/ledger.db`."""
    with CostTracker(alert_sinks=[]) as default:
        default.record_usage("j", **TURBO)
        assert "ledger.db" in repr(default)
    assert (isolated_env / "ledger.db").exists()


def test_budgets_can_be_set_from_a_budget_listed_and_deleted(tracker: CostTracker) -> None:
    """`set_budget` also takes a `Budget`; budgets can be listed and deleted (their spend stays)."""
    tracker.set_budget(Budget.create("team", user="ann", period="weekly", limit_usd="5", week_start="sunday"))
    tracker.set_budget("all", limit_units=100)
    tracker.record_usage("j", **TURBO, user_id="ann")
    assert [b.name for b in tracker.list_budgets()] == ["all", "team"]
    assert tracker.budget_status("team").counters.committed_nano == 210_000_000
    tracker.delete_budget("team")
    assert [b.name for b in tracker.list_budgets()] == ["all"]
    assert tracker.usage_record("j").credits == Decimal("1.5")
    with pytest.raises(InvalidInputError, match="no budget named 'team'"):
        tracker.get_budget("team")


def test_can_generate_matches_user_api_key_and_tag_scopes(tracker: CostTracker) -> None:
    """Budgets scoped by user, API key or tag only limit jobs carrying that attribute."""
    tracker.set_budget("ann", user_id="ann", limit_units=1)
    tracker.set_budget("ci-key", api_key="ci", limit_units=1)
    tracker.set_budget("promo", tag="promo", limit_units=1)
    assert tracker.can_generate(**TURBO)["allowed"] is True
    assert tracker.can_generate(**TURBO, user_id="ann")["allowed"] is False
    assert tracker.can_generate(**TURBO, api_key="ci")["allowed"] is False
    assert tracker.can_generate(**TURBO, tags=["promo", "x"])["allowed"] is False
    assert tracker.can_generate(**TURBO, tags=["x"])["allowed"] is True
