"""The ledger contract: every backend must pass these (the ``ledger`` fixture runs each on SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import (
    BudgetExceededError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.ledger import Ledger, Pack, ReservationState
from kling_budget.ledger.backend import Connection, RowMissing, Statements
from kling_budget.types import AlertKind, Attribution, PackType

MARKETING = Attribution(project="marketing", user="alice", model="kling-v2-6", tags=("launch",))
ADS = Attribution(project="ads", user="bob", model="kling-v2-5-turbo")


def reserve(ledger: Ledger, key: str, milli: int = 2500, attribution: Attribution = MARKETING, **kw: object):  # type: ignore[no-untyped-def]
    return ledger.reserve(key, units_milli=milli, pack_type=PackType.VIDEO, attribution=attribution, **kw)  # type: ignore[arg-type]


def budget(name: str = "mk", **kw: object) -> Budget:
    options: dict[str, object] = {"project": "marketing", "limit_units": 10}
    options.update(kw)
    return Budget.create(name, **options)  # type: ignore[arg-type]


def test_reserve_holds_the_price_against_matching_budgets(ledger: Ledger) -> None:
    """A reservation holds its units and list-price dollars in every matching budget."""
    ledger.set_budget(budget())
    ledger.set_budget(Budget.create("everything", limit_usd=100))
    info = reserve(ledger, "r1")
    assert info.state is ReservationState.HELD
    assert (info.units_milli, info.usd_nano) == (2500, 350_000_000)
    status = ledger.budget_status("mk")
    assert (status.counters.held_milli, status.counters.committed_milli) == (2500, 0)
    assert ledger.budget_status("everything").counters.held_nano == 350_000_000


def test_non_matching_budget_is_untouched(ledger: Ledger) -> None:
    """A job of another project does not count against a project budget."""
    ledger.set_budget(budget())
    reserve(ledger, "r1", attribution=ADS)
    assert ledger.budget_status("mk").counters.held_milli == 0


def test_exact_exhaustion_and_typed_denial(ledger: Ledger) -> None:
    """With limit 10 and price 2.5 exactly four are admitted; the fifth denial names everything."""
    ledger.set_budget(budget())
    for i in range(4):
        reserve(ledger, f"r{i}")
    with pytest.raises(BudgetExceededError) as caught:
        reserve(ledger, "r4")
    denial = caught.value.denial
    assert denial is not None
    assert (denial.budget, denial.limit_kind, denial.limit, denial.committed, denial.held, denial.price) == (
        "mk",
        "units",
        10_000,
        0,
        10_000,
        2500,
    )
    assert denial.window_start == datetime(2026, 3, 1, tzinfo=UTC)
    assert denial.reset_at == datetime(2026, 4, 1, tzinfo=UTC)
    message = str(caught.value)
    for fragment in ("mk", "limit 10 units", "held 10 units", "price 2.5 units", "2026-04-01"):
        assert fragment in message


def test_denial_is_all_or_nothing_across_budgets(ledger: Ledger) -> None:
    """When one of two matching budgets is full, the other is not charged either."""
    ledger.set_budget(budget("roomy", limit_units=100))
    ledger.set_budget(budget("tight", limit_units=2))
    with pytest.raises(BudgetExceededError) as caught:
        reserve(ledger, "r1")
    assert caught.value.denial is not None and caught.value.denial.budget == "tight"
    assert ledger.budget_status("roomy").counters.held_milli == 0
    assert ledger.verify().ok


def test_usd_limit_denies_too(ledger: Ledger) -> None:
    """A dollar limit denies a job whose list price does not fit."""
    ledger.set_budget(Budget.create("usd", limit_usd="0.50"))
    reserve(ledger, "r1")  # $0.35
    with pytest.raises(BudgetExceededError) as caught:
        reserve(ledger, "r2")
    assert caught.value.denial is not None and caught.value.denial.limit_kind == "usd"


def test_soft_budget_alerts_but_never_blocks(ledger: Ledger) -> None:
    """A soft budget lets jobs through past its limit and raises the alerts."""
    ledger.set_budget(budget("soft", hard=False, limit_units=5))
    kinds = []
    for i in range(4):
        kinds += [a.kind for a in reserve(ledger, f"r{i}").alerts]
    assert ledger.budget_status("soft").counters.held_milli == 10_000
    assert kinds.count(AlertKind.THRESHOLD) == 3
    assert kinds.count(AlertKind.EXHAUSTED) == 1


def test_replay_returns_the_same_reservation(ledger: Ledger) -> None:
    """Reserving again with the same key and request returns the stored reservation, charging nothing."""
    ledger.set_budget(budget())
    first = reserve(ledger, "r1")
    again = reserve(ledger, "r1")
    assert again.replayed and again.id == first.id and again.units_milli == first.units_milli
    assert ledger.budget_status("mk").counters.held_milli == 2500


def test_replay_of_a_denied_key_is_denied_again(ledger: Ledger) -> None:
    """A denied key keeps its denial even after room frees up: a new attempt needs a new key."""
    ledger.set_budget(budget(limit_units=2))
    with pytest.raises(BudgetExceededError):
        reserve(ledger, "r1")
    ledger.set_budget(budget(limit_units=100))
    with pytest.raises(BudgetExceededError) as caught:
        reserve(ledger, "r1")
    assert caught.value.denial is not None and caught.value.denial.limit == 2000
    assert reserve(ledger, "r2").state is ReservationState.HELD


def test_same_key_different_request_conflicts(ledger: Ledger) -> None:
    """Reusing a key for a different request is refused."""
    reserve(ledger, "r1")
    with pytest.raises(IdempotencyConflictError):
        reserve(ledger, "r1", milli=5000)
    with pytest.raises(IdempotencyConflictError):
        reserve(ledger, "r1", attribution=ADS)


def test_commit_with_the_held_amount(ledger: Ledger) -> None:
    """Committing moves the hold to committed spend."""
    ledger.set_budget(budget())
    reserve(ledger, "r1")
    info = ledger.commit("r1")
    assert info.state is ReservationState.COMMITTED
    assert (info.actual_milli, info.overage_milli) == (2500, 0)
    counters = ledger.budget_status("mk").counters
    assert (counters.held_milli, counters.committed_milli) == (0, 2500)


def test_commit_below_the_hold_returns_the_difference(ledger: Ledger) -> None:
    """Kling charging less than held frees the difference."""
    ledger.set_budget(budget())
    reserve(ledger, "r1")
    ledger.commit("r1", units_milli=1000)
    counters = ledger.budget_status("mk").counters
    assert (counters.held_milli, counters.committed_milli, counters.committed_nano) == (0, 1000, 140_000_000)


def test_commit_above_the_hold_is_overage_and_alerts(ledger: Ledger) -> None:
    """Charges above the hold are recorded as overage, count against the budget and raise an alert."""
    ledger.set_budget(budget())
    reserve(ledger, "r1")
    info = ledger.commit("r1", units_milli=3000)
    assert (info.overage_milli, info.overage_nano) == (500, 70_000_000)
    assert AlertKind.OVERAGE in [a.kind for a in info.alerts]
    counters = ledger.budget_status("mk").counters
    assert (counters.committed_milli, counters.overage_milli) == (3000, 500)


def test_commit_replay_and_conflict(ledger: Ledger) -> None:
    """A second commit with the same units replays; with other units it is refused."""
    reserve(ledger, "r1")
    ledger.commit("r1", units_milli=2000)
    assert ledger.commit("r1", units_milli=2000).replayed
    with pytest.raises(ReservationResolvedError):
        ledger.commit("r1", units_milli=2500)


def test_a_reservation_resolves_at_most_once(ledger: Ledger) -> None:
    """Commit after release and release after commit are both refused; release replays."""
    reserve(ledger, "a")
    reserve(ledger, "b")
    ledger.release("a")
    assert ledger.release("a").replayed
    with pytest.raises(ReservationResolvedError):
        ledger.commit("a")
    ledger.commit("b")
    with pytest.raises(ReservationResolvedError):
        ledger.release("b")


def test_release_returns_the_hold(ledger: Ledger) -> None:
    """Releasing frees the held units and dollars."""
    ledger.set_budget(budget())
    reserve(ledger, "r1")
    ledger.release("r1", reason="kling failed the task")
    counters = ledger.budget_status("mk").counters
    assert (counters.held_milli, counters.held_nano, counters.committed_milli) == (0, 0, 0)
    assert ledger.get_reservation("r1").detail["release_reason"] == "kling failed the task"


def test_unknown_reservation(ledger: Ledger) -> None:
    """Operations on an unknown id say so."""
    with pytest.raises(ReservationNotFoundError):
        ledger.commit("nope")
    with pytest.raises(ReservationNotFoundError):
        ledger.release("nope")


def test_invalid_keys_and_amounts_are_refused(ledger: Ledger) -> None:
    """Empty keys and negative or non-integer amounts are refused before touching the ledger."""
    with pytest.raises(InvalidInputError):
        reserve(ledger, "")
    with pytest.raises(InvalidInputError):
        reserve(ledger, "x", milli=-1)
    with pytest.raises(InvalidInputError):
        reserve(ledger, "x", milli=1.5)  # type: ignore[arg-type]
    assert ledger.list_reservations() == []


def test_record_is_always_recorded_and_flagged_over_budget(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Recorded usage counts even past a hard limit, and is flagged with an alert."""
    ledger.set_budget(budget(limit_units=3))
    first = ledger.record("job-1", units_milli=2500, pack_type="video", attribution=MARKETING)
    assert not first.over_budget
    second = ledger.record("job-2", units_milli=2500, pack_type="video", attribution=MARKETING)
    assert second.over_budget and second.state is ReservationState.COMMITTED
    assert AlertKind.OVER_BUDGET_RECORD in [a.kind for a in second.alerts]
    third = ledger.record("job-3", units_milli=500, pack_type="video", attribution=MARKETING)
    assert third.over_budget and AlertKind.OVER_BUDGET_RECORD not in [a.kind for a in third.alerts]  # once a window
    assert ledger.budget_status("mk").counters.committed_milli == 5500
    assert ledger.record("job-2", units_milli=2500, pack_type="video", attribution=MARKETING).replayed
    with pytest.raises(BudgetExceededError):
        reserve(ledger, "r1", milli=1)


def test_mark_submitted_protects_from_ttl(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Only never-submitted reservations expire; a submitted one is never released by a timer."""
    reserve(ledger, "never-sent", ttl=timedelta(minutes=5))
    reserve(ledger, "sent", ttl=timedelta(minutes=5))
    ledger.mark_submitted("sent", task_id="task-1")
    clock.now += timedelta(minutes=10)
    assert ledger.expire_unsubmitted() == ["never-sent"]
    assert ledger.get_reservation("never-sent").state is ReservationState.RELEASED
    assert ledger.get_reservation("sent").state is ReservationState.SUBMITTED
    assert ledger.find_by_task("task-1") is not None
    with pytest.raises(ReservationResolvedError):
        ledger.mark_submitted("never-sent")


def test_commit_posts_to_the_window_of_the_reservation(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """A job reserved in March and committed in April counts in March."""
    ledger.set_budget(budget(limit_units=100))
    clock.now = datetime(2026, 3, 31, 23, 59, tzinfo=UTC)
    reserve(ledger, "r1")
    clock.now = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    ledger.commit("r1")
    assert ledger.budget_status("mk").counters.committed_milli == 0
    march = ledger.budget_status("mk", now=datetime(2026, 3, 15, tzinfo=UTC))
    assert march.counters.committed_milli == 2500
    assert ledger.verify().ok


def test_new_window_starts_clean(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """A daily budget resets at local midnight."""
    ledger.set_budget(budget(period="daily", limit_units=5, timezone="Europe/Berlin"))
    clock.now = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    reserve(ledger, "a")
    reserve(ledger, "b")
    with pytest.raises(BudgetExceededError):
        reserve(ledger, "c")
    clock.now = datetime(2026, 3, 10, 23, 1, tzinfo=UTC)  # 00:01 next day in Berlin
    assert reserve(ledger, "d").state is ReservationState.HELD


def test_budget_created_mid_window_counts_existing_spend(ledger: Ledger) -> None:
    """A budget created after jobs ran starts from the spend already in its window."""
    reserve(ledger, "r1")
    ledger.commit("r1")
    reserve(ledger, "r2")
    reserve(ledger, "other", attribution=ADS)
    ledger.set_budget(budget())
    status = ledger.budget_status("mk")
    assert (status.counters.committed_milli, status.counters.held_milli) == (2500, 2500)
    reserve(ledger, "r3")
    reserve(ledger, "r4")
    with pytest.raises(BudgetExceededError):
        reserve(ledger, "r5")
    assert ledger.verify().ok


def test_commit_into_a_window_with_no_row_yet_is_counted_once(ledger: Ledger) -> None:
    """A job committed after a budget covering it was created (its window has no row yet) is counted exactly
    once, beside a budget whose window row exists."""
    ledger.set_budget(budget("wide", project=None, limit_units=100))
    reserve(ledger, "r1")
    ledger.set_budget(budget("late", limit_units=100))
    ledger.commit("r1", units_milli=2000)
    assert ledger.budget_status("wide").counters.committed_milli == 2000
    assert ledger.budget_status("late").counters.committed_milli == 2000
    assert (ledger.budget_status("late").counters.held_milli, ledger.budget_status("wide").counters.held_milli) == (
        0,
        0,
    )
    assert ledger.verify().ok


def _meta(ledger: Ledger, key: str) -> object:
    row = ledger.backend.run(lambda conn: conn.fetchone("SELECT value FROM meta WHERE key = ?", (key,)), write=False)
    return None if row is None else row[0]


def test_last_statements_commit_the_transaction(ledger: Ledger) -> None:
    """fetch_each(last=True): the statements before and the last ones are all committed, rows answered."""

    def tx(conn: Connection) -> list[object]:
        conn.execute("INSERT INTO meta (key, value) VALUES ('t-before', 'a')")
        return conn.fetch_each(
            [
                ("INSERT INTO meta (key, value) VALUES ('t-last', 'b')", ()),
                ("UPDATE meta SET value = 'c' WHERE key = 't-before' RETURNING value", ()),
            ],
            required=(1,),
            last=True,
        )

    assert ledger.backend.run(tx) == [None, ("c",)]
    assert (_meta(ledger, "t-before"), _meta(ledger, "t-last")) == ("c", "b")


def test_a_required_statement_without_a_row_keeps_nothing(ledger: Ledger) -> None:
    """A required statement that finds no row raises RowMissing, nothing of the transaction is stored (not
    even with last=True), and the backend goes on working."""

    def tx(conn: Connection) -> list[object]:
        conn.execute("INSERT INTO meta (key, value) VALUES ('t-kept', 'a')")
        return conn.fetch_each(
            [
                ("INSERT INTO meta (key, value) VALUES ('t-also', 'b')", ()),
                ("UPDATE meta SET value = 'x' WHERE key = 't-nowhere' RETURNING value", ()),
            ],
            required=(1,),
            last=True,
        )

    for _ in range(2):  # the same pooled connection is usable again
        with pytest.raises(RowMissing):
            ledger.backend.run(tx)
    assert (_meta(ledger, "t-kept"), _meta(ledger, "t-also")) == (None, None)
    ledger.backend.run(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('t-after', 'ok')"))
    assert _meta(ledger, "t-after") == "ok"


def test_changing_a_budget_scope_rederives_its_counters(ledger: Ledger) -> None:
    """Changing what a budget covers recomputes its counters; changing the limit keeps them."""
    ledger.set_budget(budget(limit_units=100))
    reserve(ledger, "r1")
    reserve(ledger, "r2", attribution=ADS)
    ledger.set_budget(budget(limit_units=50))
    assert ledger.budget_status("mk").counters.held_milli == 2500
    ledger.set_budget(budget(project="ads", limit_units=50))
    assert ledger.budget_status("mk").counters.held_milli == 2500
    assert ledger.budget_status("mk").budget.scope.project == "ads"
    assert ledger.verify().ok


def test_tag_model_user_and_key_scopes(ledger: Ledger) -> None:
    """Budgets on a tag, a model, a user or an API key match only those jobs."""
    ledger.set_budget(Budget.create("tag", tag="launch", limit_units=100))
    ledger.set_budget(Budget.create("model", model="kling-v2-5-turbo", limit_units=100))
    ledger.set_budget(Budget.create("user", user="alice", limit_units=100))
    ledger.set_budget(Budget.create("key", api_key="ci-key", limit_units=100))
    reserve(ledger, "m", attribution=MARKETING)
    reserve(ledger, "a", attribution=ADS)
    reserve(ledger, "k", attribution=Attribution(api_key="ci-key", model="kling-v1"))
    held = {name: ledger.budget_status(name).counters.held_milli for name in ("tag", "model", "user", "key")}
    assert held == {"tag": 2500, "model": 2500, "user": 2500, "key": 2500}


def test_units_limit_counts_only_its_pack_type(ledger: Ledger) -> None:
    """A video-units limit ignores image units, while a dollar limit counts them."""
    ledger.set_budget(Budget.create("both", limit_units=1, limit_usd=1))
    ledger.reserve("img", units_milli=8000, pack_type=PackType.IMAGE, attribution=MARKETING)
    counters = ledger.budget_status("both").counters
    assert (counters.held_milli, counters.held_nano) == (0, 28_000_000)


def test_threshold_alerts_fire_exactly_once_per_window(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Crossing 50/80/100 % fires each threshold once, even when usage falls back and rises again."""
    ledger.set_budget(budget(limit_units=10))
    thresholds = []
    for i in range(4):
        thresholds += [a.threshold for a in reserve(ledger, f"r{i}").alerts if a.kind is AlertKind.THRESHOLD]
    ledger.release("r3")
    thresholds += [a.threshold for a in reserve(ledger, "r4").alerts if a.kind is AlertKind.THRESHOLD]
    assert sorted(thresholds) == [50, 80, 100]
    pending = ledger.pending_alerts()
    assert sorted(a.threshold for a in pending if a.kind is AlertKind.THRESHOLD) == [50, 80, 100]
    clock.now = datetime(2026, 4, 2, tzinfo=UTC)
    fresh = [a.threshold for a in reserve(ledger, "next-month", milli=6000).alerts if a.kind is AlertKind.THRESHOLD]
    assert fresh == [50]


def test_denials_raise_rate_limited_alerts(ledger: Ledger) -> None:
    """Repeated denials within a minute produce one 'denied' alert."""
    ledger.set_budget(budget(limit_units=1))
    for i in range(5):
        with pytest.raises(BudgetExceededError):
            reserve(ledger, f"d{i}")
    denied = [a for a in ledger.pending_alerts() if a.kind is AlertKind.DENIED]
    assert len(denied) == 1 and "mk" in denied[0].message


def test_alert_outbox_delivery(ledger: Ledger) -> None:
    """Delivered alerts leave the pending list and stay in the recent list."""
    ledger.set_budget(budget(limit_units=4))
    reserve(ledger, "r1")
    pending = ledger.pending_alerts()
    assert pending
    assert ledger.mark_alerts_delivered([a.id for a in pending if a.id is not None]) == len(pending)
    assert ledger.pending_alerts() == []
    assert len(ledger.recent_alerts()) == len(pending)


def test_packs_set_the_dollar_cost_soonest_expiring_first(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Jobs draw units from the soonest-expiring active pack at its price, spilling to the next and then list."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ledger.add_pack(Pack("late", PackType.VIDEO, 10_000, 1_000 * 10**6, start, datetime(2026, 12, 1, tzinfo=UTC)))
    ledger.add_pack(Pack("soon", PackType.VIDEO, 3_000, 300 * 10**6, start, datetime(2026, 6, 1, tzinfo=UTC)))
    a = reserve(ledger, "a")  # 2.5 units from 'soon' at $0.10
    b = reserve(ledger, "b")  # 0.5 from 'soon' + 2 from 'late', both $0.10
    assert (a.usd_nano, b.usd_nano) == (250_000_000, 250_000_000)
    packs = {p.name: p for p in ledger.list_packs()}
    assert (packs["soon"].held_milli, packs["late"].held_milli) == (3000, 2000)
    ledger.commit("a", units_milli=2000)
    ledger.release("b")
    packs = {p.name: p for p in ledger.list_packs()}
    assert (packs["soon"].committed_milli, packs["soon"].held_milli, packs["late"].held_milli) == (2000, 0, 0)
    assert ledger.verify().ok


def test_units_beyond_packs_are_priced_at_list(ledger: Ledger) -> None:
    """Units no pack covers are charged at the list price of the pack type."""
    ledger.add_pack(Pack("tiny", PackType.VIDEO, 1000, 100 * 10**6, datetime(2026, 1, 1, tzinfo=UTC), None))
    info = reserve(ledger, "r1")  # 1 unit at $0.10 + 1.5 at $0.14
    assert info.usd_nano == 100_000_000 + 210_000_000


def test_expired_pack_is_not_drawn(ledger: Ledger) -> None:
    """An expired pack's unused units are gone: jobs fall back to list price."""
    ledger.add_pack(
        Pack("old", PackType.VIDEO, 9000, 9 * 10**8, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    )
    assert reserve(ledger, "r1").usd_nano == 350_000_000


def test_pack_validation_and_removal(ledger: Ledger) -> None:
    """Bad packs are refused; a pack with jobs drawn from it cannot be removed."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigurationError):
        ledger.add_pack(Pack("zero", PackType.VIDEO, 0, 0, start, None))
    with pytest.raises(ConfigurationError):
        ledger.add_pack(Pack("backwards", PackType.VIDEO, 10, 0, start, start - timedelta(days=1)))
    ledger.add_pack(Pack("p", PackType.VIDEO, 10_000, 10**9, start, None))
    with pytest.raises(ConfigurationError):
        ledger.add_pack(Pack("p", PackType.VIDEO, 10_000, 10**9, start, None))
    reserve(ledger, "r1")
    with pytest.raises(ConfigurationError, match="drawn"):
        ledger.remove_pack("p")


def test_budget_admin(ledger: Ledger) -> None:
    """Budgets are listed by name, fetched, replaced and deleted; unknown names list the existing ones."""
    ledger.set_budget(budget("b"))
    ledger.set_budget(budget("a"))
    assert [b.name for b in ledger.list_budgets()] == ["a", "b"]
    ledger.delete_budget("a")
    with pytest.raises(ConfigurationError, match="existing: b"):
        ledger.get_budget("a")
    with pytest.raises(ConfigurationError):
        ledger.delete_budget("a")


def test_usage_groups_by_project_model_and_day(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Usage sums committed and held spend per group, days cut in the requested zone."""
    reserve(ledger, "a")
    ledger.commit("a")
    clock.now += timedelta(days=1)
    reserve(ledger, "b")
    reserve(ledger, "c", attribution=ADS)
    ledger.release("c")
    rows = ledger.usage(
        start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC), group_by=("project", "day")
    )
    table = {(r.group["project"], r.group["day"]): (r.committed_milli, r.held_milli, r.jobs) for r in rows}
    assert table == {
        ("marketing", "2026-03-10"): (2500, 0, 1),
        ("marketing", "2026-03-11"): (0, 2500, 0),
    }
    by_tag = ledger.usage(
        start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC), group_by=("tag",)
    )
    assert {r.group["tag"]: r.committed_milli + r.held_milli for r in by_tag} == {"launch": 5000}


def test_usage_rejects_unknown_groups(ledger: Ledger) -> None:
    """Grouping by an unknown field names the accepted ones."""
    with pytest.raises(ConfigurationError, match="accepted"):
        ledger.usage(start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC), group_by=("color",))


def test_verify_detects_a_tampered_counter(ledger: Ledger) -> None:
    """verify re-derives counters from the entries and reports a counter changed behind its back."""
    ledger.set_budget(budget())
    reserve(ledger, "r1")
    assert ledger.verify().ok
    ledger.backend.run(lambda conn: conn.execute("UPDATE budget_windows SET held_milli = held_milli + 1"))
    report = ledger.verify()
    assert not report.ok and "held_milli 2501 != 2500" in report.problems[0]


def test_entries_are_append_only(ledger: Ledger) -> None:
    """The database itself refuses to update or delete ledger entries."""
    reserve(ledger, "r1")
    for sql in ("UPDATE entries SET units_milli = 0", "DELETE FROM entries"):
        with pytest.raises(Exception, match="append-only"):
            ledger.backend.run(lambda conn, sql=sql: conn.execute(sql))
    assert ledger.verify().ok


def test_reservation_serialises_to_json(ledger: Ledger) -> None:
    """A reservation's dict form is JSON with exact decimal strings."""
    info = reserve(ledger, "r1", detail={"params": {"mode": "pro"}})
    data = json.loads(json.dumps(info.to_dict()))
    assert data["units"] == "2.5" and data["usd"] == "0.35" and data["tags"] == ["launch"]
    assert data["detail"]["params"] == {"mode": "pro"}


def _note(key: str, value: str, *, required: bool = False) -> Statements:
    """A caller's statement as data: insert a meta row (required: it must be new)."""
    sql = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING" + (" RETURNING key" if required else "")
    return Statements(((sql, (key, value), required),), error=lambda: ValueError(f"{key} exists"))


def test_statement_hooks_go_with_mark_submitted_and_the_long_way_still_answers(ledger: Ledger) -> None:
    """mark_submitted with the caller's statements: stored with an open hold; a released hold refuses and
    stores nothing; a committed one takes the task id and the statements."""
    ledger.set_budget(budget())
    reserve(ledger, "open")
    info = ledger.mark_submitted("open", task_id="t-open", also=_note("n-open", "1"))
    assert (info.state, info.task_id, _meta(ledger, "n-open")) == (ReservationState.SUBMITTED, "t-open", "1")
    reserve(ledger, "gone")
    ledger.release("gone")
    with pytest.raises(ReservationResolvedError):
        ledger.mark_submitted("gone", task_id="t-gone", also=_note("n-gone", "1"))
    assert _meta(ledger, "n-gone") is None
    reserve(ledger, "done")
    ledger.commit("done")
    info = ledger.mark_submitted("done", task_id="t-done", also=_note("n-done", "1"))
    assert (info.state, info.task_id, _meta(ledger, "n-done")) == (ReservationState.COMMITTED, "t-done", "1")
    with pytest.raises(ValueError, match="n-open exists"):
        ledger.mark_submitted("open", task_id="t-open", also=_note("n-open", "2", required=True))
    assert _meta(ledger, "n-open") == "1"
    assert ledger.verify().ok


def test_a_required_statement_hook_that_finds_no_row_refuses_the_reservation(ledger: Ledger) -> None:
    """A reservation whose caller's required statement finds no row raises the caller's error and stores
    nothing, also when the reservation would otherwise go in one round trip; the next one is stored."""
    ledger.set_budget(budget())
    reserve(ledger, "warm")  # the configuration is cached: later reservations may take one round trip
    ledger.backend.run(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('taken', 'x')"))
    with pytest.raises(ValueError, match="taken exists"):
        reserve(ledger, "r1", also=_note("taken", "y", required=True))
    with pytest.raises(ReservationNotFoundError):
        ledger.get_reservation("r1")
    assert ledger.budget_status("mk").counters.held_milli == 2500
    info = reserve(ledger, "r2", also=_note("fresh", "z", required=True))
    assert info.state is ReservationState.HELD and _meta(ledger, "fresh") == "z"
    assert ledger.budget_status("mk").counters.held_milli == 5000
    assert ledger.verify().ok
