"""`reconcile` against the Kling simulator: crashed processes (real SIGKILL), lost answers, and pack drift."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from kling_budget import CostTracker
from kling_budget.enforced import BudgetEnforcedClient
from kling_budget.errors import KlingAmbiguousCreateError
from kling_budget.kling.billing import BillingRecord, parse_billing_record
from kling_budget.ledger import ReservationState
from kling_budget.ledger.outbox import Outbox
from kling_budget.reconcile import ReconcileAction, compare_tasks, reconcile, reconcile_jobs
from kling_budget.simulator import (
    AccountConfig,
    FaultKind,
    ManualClock,
    PackConfig,
    RunningSimulator,
    SimulatorConfig,
    running_simulator,
)
from kling_budget.types import PackType
from tests.alert_receivers import http_receiver
from tests.conftest import FixedClock
from tests.jobfixtures import (
    T2V,
    alert_kinds,
    client_for,
    entry_kinds,
    manual_sim,
    run_cli,
    tracker_at,
    use_sim_credentials,
)
from tests.simfixtures import sim_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """A simulator on a manual clock with default packs."""
    with manual_sim() as running:
        yield running


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def run_worker_until(mode: str, url: str, kling: RunningSimulator) -> list[str]:
    """Start tests/job_worker.py in MODE, wait for its progress line, SIGKILL it, return the line's words."""
    assert kling.access_key is not None and kling.secret_key is not None
    env = {**os.environ, "KLING_ACCESS_KEY": kling.access_key, "KLING_SECRET_KEY": kling.secret_key}
    code = "from tests.job_worker import main; main()"
    child = subprocess.Popen(
        [sys.executable, "-c", code, mode, url, kling.base_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith(mode), (line, child.stderr.read() if child.poll() is not None and child.stderr else "")
    finally:
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    return line.split()


def budgeted_ledger(tmp_path: Path) -> str:
    """A fresh ledger with a daily budget on the workers' project and a monthly one on the whole account."""
    with tracker_at(tmp_path) as tracker:
        tracker.set_budget("ads-daily", project_id="ads", period="daily", limit_units=100)
        tracker.set_budget("account-monthly", period="monthly", limit_units=1000)
    return db_url(tmp_path)


def verified_counters(url: str, key: str) -> dict[str, tuple[int, int]]:
    """After a crash: ``verify`` re-derives every budget window's counters from the entries and finds them
    right; returns (committed, held) milli-units per budget, in the windows of reservation ``key``."""
    with CostTracker(url) as tracker:
        report = tracker.verify()
        assert report.ok, report.problems
        assert report.checked_windows >= 2  # the windows the killed process wrote are among those checked
        return {
            status.budget.name: (status.counters.committed_milli, status.counters.held_milli)
            for status in tracker.ledger.statuses(now=tracker.ledger.get_reservation(key).reserved_at)
        }


class Later:
    """A tracker clock one hour ahead of the wall clock (past the reservation TTL and the held grace)."""

    def __call__(self) -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)


def test_killed_between_reserve_and_submit_is_expired_by_reconcile(tmp_path: Path, kling: RunningSimulator) -> None:
    """A process SIGKILLed right after reserving leaves a held hold; once its TTL passed, reconcile releases it."""
    url = budgeted_ledger(tmp_path)  # created before the child starts
    _, key = run_worker_until("reserved", url, kling)
    assert verified_counters(url, key) == {"ads-daily": (0, 1500), "account-monthly": (0, 1500)}
    with CostTracker(url) as now_tracker:
        info = now_tracker.ledger.get_reservation(key)
        assert info.state is ReservationState.HELD and info.expires_at is not None
        with client_for(kling) as client:
            assert reconcile_jobs(now_tracker, client) == []  # younger than the grace period: left alone
    with CostTracker(url, clock=Later()) as later, client_for(kling) as client:
        (item,) = reconcile_jobs(later, client)
        info = later.ledger.get_reservation(key)
    assert item.action is ReconcileAction.EXPIRED and not item.needs_attention
    assert info.state is ReservationState.RELEASED
    assert info.detail["release_reason"] == "ttl expired before submission"
    assert kling.sim.tasks() == []
    assert verified_counters(url, key) == {"ads-daily": (0, 0), "account-monthly": (0, 0)}


def test_killed_between_submit_and_settle_is_committed_by_cli_reconcile(
    tmp_path: Path, kling: RunningSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process SIGKILLed while waiting leaves a submitted hold; `reconcile` asks Kling and commits its units."""
    url = budgeted_ledger(tmp_path)
    _, key, task_id = run_worker_until("submitted", url, kling)
    assert verified_counters(url, key) == {"ads-daily": (0, 1500), "account-monthly": (0, 1500)}
    kling.sim.clock.advance(60)  # type: ignore[attr-defined]
    use_sim_credentials(monkeypatch, kling)
    result = run_cli(capsys, "--db", url, "reconcile", "--json")
    assert result.code == 0, result
    report = result.json()
    (item,) = report["items"]
    assert (item["reservation_id"], item["task_id"], item["action"]) == (key, task_id, "committed")
    assert (item["held_units"], item["charged_units"]) == ("1.5", "2.5")
    assert report["costs_checked"] and "12 h" in report["costs_note"]
    again = run_cli(capsys, "--db", url, "reconcile")
    assert again.code == 0 and "no open reservations" in again.out
    with CostTracker(url) as tracker:
        info = tracker.ledger.get_reservation(key)
        assert (info.state, info.actual_milli, info.overage_milli) == (ReservationState.COMMITTED, 2500, 1000)
        assert entry_kinds(tracker, key) == ["reserve", "commit"]
    assert verified_counters(url, key) == {"ads-daily": (2500, 0), "account-monthly": (2500, 0)}


def test_running_tasks_are_left_and_failed_ones_released(ledger_url: str, kling: RunningSimulator) -> None:
    """Reconcile leaves a running task's hold alone and releases the hold of a task Kling failed."""
    tracker = CostTracker(ledger_url)
    with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client) as enforced:
        slow = enforced.generate_video("a slow fox [sim:running=600]", model="kling-v2-6")
        failing = enforced.generate_video("a fox [sim:fail=moderation]", model="kling-v2-6")
        kling.sim.clock.advance(5)  # type: ignore[attr-defined]
        report = reconcile(tracker, client)
    actions = {i.reservation_id: i.action for i in report.items}
    assert actions == {slow.reservation_id: ReconcileAction.RUNNING, failing.reservation_id: ReconcileAction.RELEASED}
    assert report.ok and not report.drifting
    assert tracker.ledger.get_reservation(slow.reservation_id).state is ReservationState.SUBMITTED
    tracker.close()


def test_missing_task_is_reported_and_released_only_when_asked(
    tmp_path: Path, kling: RunningSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A submitted hold Kling has no task for is reported (exit 1) until --release-missing-older-than releases it."""
    url = db_url(tmp_path)
    tracker = tracker_at(tmp_path)
    kling.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="POST", count=None)
    with (
        client_for(kling, max_retries=0) as client,
        BudgetEnforcedClient(tracker, client=client) as enforced,
        pytest.raises(KlingAmbiguousCreateError) as lost,
    ):
        enforced.generate_video("a fox", model="kling-v2-6")
    tracker.close()
    key = lost.value.external_task_id
    use_sim_credentials(monkeypatch, kling)
    reported = run_cli(capsys, "--db", url, "reconcile", "--no-costs")
    assert reported.code == 1 and "missing" in reported.out and "1 need attention" in reported.out
    kept = run_cli(capsys, "--db", url, "reconcile", "--no-costs", "--release-missing-older-than", "24h", "--json")
    assert kept.code == 1 and kept.json()["items"][0]["action"] == "missing"
    released = run_cli(capsys, "--db", url, "reconcile", "--no-costs", "--release-missing-older-than", "0s", "--json")
    assert released.code == 0 and released.json()["items"][0]["action"] == "released_missing"
    with CostTracker(url) as reopened:
        assert reopened.ledger.get_reservation(key).state is ReservationState.RELEASED


def test_drift_report_against_account_costs(ledger_url: str, kling: RunningSimulator) -> None:
    """Ledger and Kling agree after settled jobs; spend that bypassed the ledger is drift, alerted once a day."""
    tracker = CostTracker(ledger_url)
    with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client) as enforced:
        enforced.generate_video("a fox", model="kling-v2-6").wait(poll_interval=1)
        enforced.generate_image("a lighthouse", model="kling-v2", n=2).wait(poll_interval=1)
        agreed = reconcile(tracker, client)
        with sim_client(kling) as http:  # another tool on the same Kling account, not through the ledger
            http.post(T2V, json={"model_name": "kling-v2-6", "prompt": "untracked [sim:charge=3]", "duration": "5"})
        kling.sim.clock.advance(5)  # type: ignore[attr-defined]
        drifted = reconcile(tracker, client)
        twice = reconcile(tracker, client)
    by_pack = {d.pack_type: d for d in agreed.drift}
    assert (by_pack["video"].kling_consumed_milli, by_pack["video"].ledger_committed_milli) == (1500, 1500)
    assert (by_pack["image"].kling_consumed_milli, by_pack["image"].ledger_committed_milli) == (8000, 8000)
    assert agreed.ok and by_pack["try_on"].drift_milli == 0
    (video,) = drifted.drifting
    assert (video.pack_type, video.kling_consumed_milli, video.drift_milli) == ("video", 4500, 3000)
    assert not drifted.ok and len(drifted.alerts) == 1 and twice.alerts == ()
    assert alert_kinds(tracker).count("reconcile_drift") == 1
    tracker.close()


def test_recent_commits_within_the_costs_lag_are_not_drift(tmp_path: Path) -> None:
    """With Kling's figures 12 h behind, units committed in the last 12 h missing from Kling are not drift."""
    tracker = tracker_at(tmp_path)
    with (
        manual_sim(SimulatorConfig.single(costs_lag_seconds=12 * 3600)) as kling,
        client_for(kling) as client,
        BudgetEnforcedClient(tracker, client=client) as enforced,
    ):
        enforced.generate_video("a fox", model="kling-v2-6").wait(poll_interval=1)
        report = reconcile(tracker, client, drift_threshold_milli=0)
    video = next(d for d in report.drift if d.pack_type == "video")
    assert (video.kling_consumed_milli, video.ledger_committed_milli, video.ledger_recent_milli) == (0, 1500, 1500)
    assert video.drift_milli == 0 and report.ok
    tracker.close()


def test_cli_reconcile_reports_drift_and_exits_1(
    tmp_path: Path, kling: RunningSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reconcile` prints the per-pack comparison with the 12 h lag note and exits 1 on drift; no secret shown."""
    with sim_client(kling) as http:
        http.post(T2V, json={"model_name": "kling-v2-6", "prompt": "untracked", "duration": "5"})
    kling.sim.clock.advance(5)  # type: ignore[attr-defined]
    use_sim_credentials(monkeypatch, kling)
    url = db_url(tmp_path)
    text = run_cli(capsys, "--db", url, "reconcile")
    assert text.code == 1 and "DRIFT" in text.out and "lags up to 12 h" in text.out
    data = run_cli(capsys, "--db", url, "reconcile", "--json", "--drift-threshold", "2")
    video = next(d for d in data.json()["drift"] if d["pack_type"] == "video")
    assert data.code == 0 and (video["kling_consumed_units"], video["drifting"]) == ("1.5", False)
    assert kling.secret_key is not None and kling.secret_key not in text.out + text.err + data.out + data.err
    bad = run_cli(capsys, "--db", url, "reconcile", "--held-grace", "soon")
    assert bad.code == 2 and bad.err.count("\n") == 1 and bad.err.startswith("error: --held-grace")


def test_account_costs_error_is_reported_not_hidden(tmp_path: Path, kling: RunningSimulator) -> None:
    """When /account/costs cannot be read the report says so and is not ok."""
    kling.sim.faults.inject(FaultKind.ERROR_5000, path="/account/costs", count=None)
    tracker = tracker_at(tmp_path)
    with client_for(kling, max_retries=0) as client:
        report = reconcile(tracker, client)
    assert report.costs_error is not None and "account/costs" in report.costs_error and not report.ok
    tracker.close()


def test_held_reservation_sent_without_marking_is_settled_not_expired(tmp_path: Path, kling: RunningSimulator) -> None:
    """Code that reserved with CostTracker.reserve and sent the job without marking it still gets Kling's charge."""
    tracker = tracker_at(tmp_path)
    hold = tracker.reserve(model="kling-v2-6", duration=5, ttl=timedelta(minutes=1))
    with sim_client(kling) as http:
        http.post(
            T2V, json={"model_name": "kling-v2-6", "prompt": "a fox", "duration": "5", "external_task_id": hold.id}
        )
    kling.sim.clock.advance(5)  # type: ignore[attr-defined]
    with CostTracker(db_url(tmp_path), clock=Later()) as later, client_for(kling) as client:
        (item,) = reconcile_jobs(later, client)
        info = later.ledger.get_reservation(hold.id)
    assert item.action is ReconcileAction.COMMITTED
    assert (info.state, info.actual_milli) == (ReservationState.COMMITTED, 1500)
    assert Decimal(kling.sim.tasks()[0].charged_units) == Decimal("1.5")
    tracker.close()


def _pack_effective_at(effective: datetime) -> SimulatorConfig:
    """One video pack (and an image pack) that became effective at ``effective``, to the millisecond."""
    ms = int(effective.timestamp() * 1000)
    return SimulatorConfig(
        accounts=(
            AccountConfig(
                packs=(
                    PackConfig(PackType.VIDEO, 1000, effective_time_ms=ms, purchase_time_ms=ms),
                    PackConfig(PackType.IMAGE, 1000, effective_time_ms=ms, purchase_time_ms=ms),
                )
            ),
        )
    )


def test_jobs_in_the_first_partial_quarter_hour_of_a_pack_are_not_drift(tmp_path: Path) -> None:
    """A pack effective at 12:07:31.123 and jobs settled 5 s later: the ledger has them, no drift, no alert."""
    effective = datetime(2026, 3, 10, 12, 7, 31, 123000, tzinfo=UTC)
    clock = FixedClock(effective + timedelta(seconds=5))
    with (
        running_simulator(
            _pack_effective_at(effective), clock=ManualClock(int(effective.timestamp() * 1000) + 1)
        ) as kling,
        client_for(kling) as client,
        CostTracker(db_url(tmp_path), clock=clock, alert_sinks=[]) as tracker,
        BudgetEnforcedClient(tracker, client=client) as enforced,
    ):
        for _ in range(2):
            enforced.generate_video("a fox", model="kling-v2-6", mode="pro", duration=10).wait(poll_interval=1)
        report = reconcile(tracker, client, drift_threshold_milli=0)
        kinds = alert_kinds(tracker)
    video = next(d for d in report.drift if d.pack_type == "video")
    assert (video.kling_consumed_milli, video.ledger_committed_milli, video.drift_milli) == (10000, 10000, 0)
    assert report.ok and not report.drifting and "reconcile_drift" not in kinds


def test_cli_reconcile_right_after_a_pack_became_effective_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scenario as a user meets it: a fresh pack, jobs through the enforced client, `reconcile` at once with
    a webhook sink configured: no false drift, nothing sent to the sink, exit 0."""
    effective = datetime.now(UTC) - timedelta(milliseconds=1)
    url = db_url(tmp_path)
    with (
        http_receiver() as receiver,
        running_simulator(_pack_effective_at(effective), clock=ManualClock()) as kling,
    ):
        with CostTracker(url, alert_sinks=[]) as tracker:
            Outbox(tracker.ledger.backend).add_sink("webhook", {"url": receiver.url, "timeout": 2, "attempts": 1})
            with client_for(kling) as client, BudgetEnforcedClient(tracker, client=client) as enforced:
                for model in ("kling-v2-6", "kling-v1-6"):
                    enforced.generate_video("a fox", model=model, mode="pro", duration=5).wait(poll_interval=1)
        use_sim_credentials(monkeypatch, kling)
        result = run_cli(capsys, "--db", url, "reconcile", "--json")
        sent = receiver.bodies()
    assert result.code == 0, result
    video = next(d for d in result.json()["drift"] if d["pack_type"] == "video")
    assert video["kling_consumed_units"] == video["ledger_committed_units"] != "0"
    assert not video["drifting"] and sent == []
    with CostTracker(url) as tracker:
        assert "reconcile_drift" not in alert_kinds(tracker)


def _billing(task_id: str, amount: str, **extra: str) -> BillingRecord:
    return parse_billing_record({"task_id": task_id, "deduction_amount": amount, **extra})


def test_per_task_billing_names_each_task_that_drifts(tmp_path: Path) -> None:
    """Kling's per-task ledgers against the ledger's commits: each disagreement is named with its task."""
    tracker = tracker_at(tmp_path)
    ledger = tracker.ledger
    quote = tracker.quote("kling-v2-6", mode="pro", duration=5)  # 2.5 units
    for key, task in (("agree", "t-ok"), ("less", "t-less"), ("gone", "t-released"), ("cash", "t-cash")):
        tracker.reserve_quote(quote, key=key, project_id="p").mark_submitted(task)
    ledger.commit("agree", units_milli=2500)
    ledger.commit("less", units_milli=2000)
    ledger.release("gone", reason="test")
    ledger.commit("cash", units_milli=2500, cash_usd_nano=280_000_000)
    records = [
        _billing("t-ok", "2.5", package_id="p1"),
        _billing("t-less", "2.5", package_id="p1"),
        _billing("t-released", "2.5", package_id="p1"),
        _billing("t-cash", "0.28", currency="USD", cash_type="balance"),
        _billing("t-stranger", "5", package_id="p1"),
        _billing("t-free", "0", package_id="p1"),
    ]
    checked, drift, alerts = compare_tasks(tracker, records)
    by_task = {d.task_id: d for d in drift}
    assert checked == 6 and sorted(by_task) == ["t-less", "t-released", "t-stranger"]
    assert "committed 2 units; Kling deducted 2.5" in by_task["t-less"].message
    assert "released" in by_task["t-released"].message
    assert by_task["t-stranger"].reservation_id is None and "bypassed" in by_task["t-stranger"].message
    assert len(alerts) == 3
    tracker.close()


def test_reconcile_compares_tasks_when_the_account_has_billing_ledgers(tmp_path: Path) -> None:
    """reconcile reads both billing ledgers (paged) and reports per-task drift; an account without them falls back."""
    import httpx

    from kling_budget.kling import KlingClient

    tracker = tracker_at(tmp_path)
    pages = {
        "/account/billing/package": [
            {
                "result": [{"task_id": "a", "deduction_amount": "1", "package_id": "p"}],
                "next_cursor": "n",
                "has_more": True,
            },
            {
                "result": [{"task_id": "b", "deduction_amount": "2", "package_id": "p"}],
                "next_cursor": "",
                "has_more": False,
            },
        ],
        "/account/billing/balance": [{"result": [], "next_cursor": "", "has_more": False}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/account/costs":
            return httpx.Response(200, json={"code": 0, "data": {"code": 0, "resource_pack_subscribe_infos": []}})
        data = pages[request.url.path].pop(0)
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})

    client = KlingClient(api_key="k", base_url="http://kling.test", transport=httpx.MockTransport(answer))
    report = reconcile(tracker, client)
    assert report.tasks_checked == 2 and [d.task_id for d in report.task_drift] == ["a", "b"]
    assert not report.ok and report.to_dict()["task_drift"][0]["kling_units"] == "1"

    def no_ledgers(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/account/costs":
            return httpx.Response(200, json={"code": 0, "data": {"code": 0, "resource_pack_subscribe_infos": []}})
        return httpx.Response(404, json={"code": 1202, "message": "no such method", "request_id": "r", "data": None})

    plain = KlingClient(api_key="k", base_url="http://kling.test", transport=httpx.MockTransport(no_ledgers))
    fallback = reconcile(tracker, plain)
    assert fallback.tasks_checked is None and fallback.costs_checked and fallback.ok
    tracker.close()
