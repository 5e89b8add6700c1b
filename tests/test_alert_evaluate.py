"""The alert evaluator (forecast, pack low, pack expiring) and the builders other components use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kling_budget.alerts import evaluate_alerts, reconcile_drift_event, upstream_pack_exhausted_event
from kling_budget.budgets import Budget
from kling_budget.ledger import Ledger
from kling_budget.ledger.records import Pack
from kling_budget.types import AlertKind, Attribution, PackType

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
START = datetime(2026, 3, 1, tzinfo=UTC)


def test_pack_expiring_with_units_unused_alerts_once(ledger: Ledger) -> None:
    """A pack expiring in 2 days with 90 of 100 units left, used at 10 units a week, alerts once."""
    pack = ledger.add_pack(Pack("p100", PackType.VIDEO, 100_000, 14 * 10**9, START, NOW + timedelta(days=2)), now=START)
    ledger.reserve(
        "r1", units_milli=10_000, pack_type=PackType.VIDEO, attribution=Attribution(), now=NOW - timedelta(days=2)
    )
    [event] = evaluate_alerts(ledger, now=NOW)
    assert event.kind is AlertKind.PACK_EXPIRING
    assert event.dedupe_key == f"pack_expiring:{pack.id}"
    assert "90 units left" in event.message and "about 87.143 units will go unused" in event.message
    assert (event.limit, event.used, event.held, event.percent) == ("100", "10", "10", "10.00")
    assert evaluate_alerts(ledger, now=NOW + timedelta(hours=1)) == []


def test_pack_low_alerts_once_and_ignores_inactive_packs(ledger: Ledger) -> None:
    """An active pack with at most 20 % left raises pack_low once; expired and future packs are ignored."""
    low = ledger.add_pack(Pack("small", PackType.IMAGE, 10_000, 10**9, START, None), now=START)
    ledger.add_pack(Pack("old", PackType.IMAGE, 10_000, 10**9, START - timedelta(days=60), START), now=START)
    ledger.add_pack(Pack("next", PackType.IMAGE, 10_000, 10**9, NOW + timedelta(days=1), None), now=START)
    ledger.record("r1", units_milli=8_500, pack_type=PackType.IMAGE, attribution=Attribution(), now=NOW)
    events = evaluate_alerts(ledger, now=NOW)
    assert [(e.kind, e.dedupe_key) for e in events] == [(AlertKind.PACK_LOW, f"pack_low:{low.id}:20")]
    assert "1.5 of 10 units left" in events[0].message
    assert evaluate_alerts(ledger, now=NOW) == []


def test_forecast_alert_once_per_window_and_again_in_the_next(ledger: Ledger) -> None:
    """A daily budget heading past its limit alerts once per day; a new window starts clean."""
    ledger.set_budget(Budget.create("daily", period="daily", limit_units=10))
    ledger.reserve("a", units_milli=6000, pack_type=PackType.VIDEO, attribution=Attribution(), now=NOW)
    [first] = evaluate_alerts(ledger, now=NOW)
    assert first.kind is AlertKind.FORECAST and first.budget == "daily"
    assert first.window_end == "2026-03-11T00:00:00+00:00"
    assert "12 units of 10 units projected (120.00%)" in first.message
    assert evaluate_alerts(ledger, now=NOW + timedelta(hours=2)) == []
    tomorrow = NOW + timedelta(days=1)
    ledger.reserve("b", units_milli=6000, pack_type=PackType.VIDEO, attribution=Attribution(), now=tomorrow)
    [second] = evaluate_alerts(ledger, now=tomorrow)
    assert second.dedupe_key != first.dedupe_key


def test_no_forecast_alert_when_exhausted_or_on_track(ledger: Ledger) -> None:
    """An exhausted budget (it has its own alert) and one on track raise no forecast alert."""
    ledger.set_budget(Budget.create("full", period="daily", limit_units=5, project="a"))
    ledger.set_budget(Budget.create("fine", period="daily", limit_units=100, project="b"))
    ledger.reserve("a", units_milli=5000, pack_type=PackType.VIDEO, attribution=Attribution(project="a"), now=NOW)
    ledger.reserve("b", units_milli=5000, pack_type=PackType.VIDEO, attribution=Attribution(project="b"), now=NOW)
    assert evaluate_alerts(ledger, now=NOW) == []


def test_upstream_and_reconcile_builders_deduplicate(ledger: Ledger) -> None:
    """Kling 1102 alerts repeat at most hourly per pack type; reconcile drift once per period and pack type."""
    first = upstream_pack_exhausted_event(at=NOW, pack_type="video", task_id="t1", detail="1102 balance not enough")
    assert first.kind is AlertKind.UPSTREAM_PACK_EXHAUSTED and "(task t1)" in first.message
    assert ledger.emit_alert(first) is not None
    assert ledger.emit_alert(upstream_pack_exhausted_event(at=NOW + timedelta(minutes=30), pack_type="video")) is None
    assert ledger.emit_alert(upstream_pack_exhausted_event(at=NOW + timedelta(hours=1), pack_type="video")) is not None
    drift = reconcile_drift_event(at=NOW, period_label="2026-03-10", ledger_units_milli=5000, kling_units_milli=7500)
    assert drift.message == (
        "reconcile drift over 2026-03-10: Kling charged 7.5 units, the ledger has 5 units (+2.5 units)"
    )
    assert ledger.emit_alert(drift) is not None
    assert ledger.emit_alert(drift) is None
