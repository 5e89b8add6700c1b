"""JobSettler's rules on a real ledger (SQLite and PostgreSQL), fed Kling task bodies of both designs."""

from __future__ import annotations

from typing import Any

import pytest

from kling_budget.enforced.settle import JobSettler, SettleAction, task_paths
from kling_budget.errors import KlingPackExhaustedError, KlingParameterError
from kling_budget.kling import parse_task
from kling_budget.ledger import Ledger, ReservationState
from kling_budget.types import Attribution, PackType


def reserve(ledger: Ledger, key: str = "r1", units_milli: int = 1500, **detail: Any) -> None:
    ledger.reserve(
        key,
        units_milli=units_milli,
        pack_type=PackType.VIDEO,
        attribution=Attribution(project="ads", model="kling-v2-6"),
        product="video",
        detail=detail,
    )


def legacy(status: str, *, task_id: str = "t1", external: str | None = "r1", **fields: Any) -> Any:
    body: dict[str, Any] = {"task_id": task_id, "task_status": status, **fields}
    if external is not None:
        body["task_info"] = {"external_task_id": external}
    return parse_task(body)


def drift_alerts(ledger: Ledger) -> list[str]:
    return [a.dedupe_key for a in ledger.recent_alerts(limit=100) if a.kind.value == "reconcile_drift"]


def test_running_task_records_its_id_and_holds(ledger: Ledger) -> None:
    """A task still running only records Kling's task id: the hold stays and nothing is settled."""
    reserve(ledger)
    outcome = JobSettler(ledger).settle(legacy("processing", final_unit_deduction="0"))
    info = ledger.get_reservation("r1")
    assert outcome.action is SettleAction.RUNNING and not outcome.settled
    assert (info.state, info.task_id) == (ReservationState.SUBMITTED, "t1")


def test_succeeded_commits_klings_units_and_replays_idempotently(ledger: Ledger) -> None:
    """Succeeded commits Kling's own deduction; the same answer again is a no-op."""
    reserve(ledger)
    settler = JobSettler(ledger)
    first = settler.settle(legacy("succeed", final_unit_deduction="1.25"))
    again = settler.settle(legacy("succeed", final_unit_deduction="1.25"))
    assert (first.action, first.charged_milli) == (SettleAction.COMMITTED, 1250)
    assert (again.action, again.charged_milli) == (SettleAction.ALREADY_COMMITTED, 1250)
    assert ledger.get_reservation("r1").actual_milli == 1250


def test_new_design_billing_is_summed_and_found_by_task_id(ledger: Ledger) -> None:
    """A new-design answer (`succeeded`, billing[]) settles the reservation found by its recorded task id."""
    reserve(ledger)
    ledger.mark_submitted("r1", task_id="n1")
    body = {
        "id": "n1",
        "status": "succeeded",
        "billing": [
            {"charge_type": "unit", "amount": "2", "package_type": "video"},
            {"charge_type": "cash", "amount": "0.1", "currency": "USD"},
        ],
    }
    outcome = JobSettler(ledger).settle(parse_task(body))
    assert (outcome.action, outcome.charged_milli, outcome.overage_milli) == (SettleAction.COMMITTED, 2000, 500)


def test_succeeded_without_a_charge_commits_the_hold_and_says_so(ledger: Ledger) -> None:
    """No deduction reported on a succeeded task: the held amount is committed and the outcome says so."""
    reserve(ledger)
    outcome = JobSettler(ledger).settle(legacy("succeed"))
    assert (outcome.action, outcome.charged_milli, outcome.assumed_charge) == (SettleAction.COMMITTED, 1500, True)
    assert "no charge" in outcome.message


def test_failed_releases_and_a_reported_charge_is_committed(ledger: Ledger) -> None:
    """Failed releases with Kling's reason; a failed task Kling says it charged is committed with that charge."""
    reserve(ledger, "r1")
    reserve(ledger, "r2")
    settler = JobSettler(ledger)
    released = settler.settle(legacy("failed", task_status_msg="moderation", final_unit_deduction="0"))
    charged = settler.settle(legacy("failed", task_id="t2", external="r2", final_unit_deduction="1"))
    assert released.action is SettleAction.RELEASED
    assert ledger.get_reservation("r1").detail["release_reason"] == "Kling task t1 failed: moderation"
    assert (charged.action, charged.charged_milli) == (SettleAction.COMMITTED, 1000)
    assert settler.settle(legacy("failed")).action is SettleAction.ALREADY_RELEASED


def test_contradictions_are_conflicts_not_changes(ledger: Ledger) -> None:
    """Other units after a commit, failed after a commit, succeeded after a release, or another task id: conflicts."""
    for key in ("c1", "c2", "c3"):
        reserve(ledger, key)
    settler = JobSettler(ledger)
    settler.settle(legacy("succeed", task_id="a", external="c1", final_unit_deduction="1.5"))
    other_units = settler.settle(legacy("succeed", task_id="a", external="c1", final_unit_deduction="3"))
    failed_after = settler.settle(legacy("failed", task_id="a", external="c1"))
    ledger.release("c2", reason="by hand")
    charged_after = settler.settle(legacy("succeed", task_id="b", external="c2", final_unit_deduction="1.5"))
    ledger.mark_submitted("c3", task_id="mine")
    stolen = settler.settle(legacy("succeed", task_id="theirs", external="c3", final_unit_deduction="1"))
    assert [o.action for o in (other_units, failed_after, charged_after, stolen)] == [SettleAction.CONFLICT] * 4
    assert ledger.get_reservation("c1").actual_milli == 1500
    assert ledger.get_reservation("c2").state is ReservationState.RELEASED
    assert ledger.get_reservation("c3").state is ReservationState.SUBMITTED
    assert sorted(drift_alerts(ledger)) == ["settle_conflict:c1", "settle_conflict:c2", "settle_conflict:c3"]


def test_unknown_task_changes_nothing(ledger: Ledger) -> None:
    """A task no reservation belongs to is reported as unknown."""
    outcome = JobSettler(ledger).settle(legacy("succeed", external=None, final_unit_deduction="1"))
    assert outcome.action is SettleAction.UNKNOWN and outcome.reservation is None


def test_reject_releases_and_1102_alerts_once_an_hour(ledger: Ledger) -> None:
    """A definite rejection releases the hold; 1102 raises one upstream_pack_exhausted alert per pack and hour."""
    for key in ("a", "b", "c"):
        reserve(ledger, key)
    settler = JobSettler(ledger)
    exhausted = KlingPackExhaustedError("Kling error 1102 (resource pack depleted or expired)", code=1102)
    settler.reject("a", exhausted)
    settler.reject("b", exhausted, pack_type=PackType.VIDEO)
    settler.reject("c", KlingParameterError("Kling error 1201 (invalid parameters)", code=1201))
    assert {ledger.get_reservation(k).state for k in "abc"} == {ReservationState.RELEASED}
    upstream = [a for a in ledger.recent_alerts() if a.kind.value == "upstream_pack_exhausted"]
    assert len(upstream) == 1 and "video" in upstream[0].message and upstream[0].reservation_id == "a"


@pytest.mark.parametrize(
    ("product", "detail", "expected"),
    [
        ("video", {"kling_path": "/v1/videos/image2video"}, ("/v1/videos/image2video",)),
        ("video", {}, ("/v1/videos/text2video", "/v1/videos/image2video", "/v1/videos/omni-video")),
        ("try-on", {}, ("/v1/images/kolors-virtual-try-on",)),
        ("tts", {}, ()),
    ],
)
def test_task_paths(ledger: Ledger, product: str, detail: dict[str, str], expected: tuple[str, ...]) -> None:
    """The recorded create path wins; otherwise every path of the product is a candidate."""
    ledger.reserve("p", units_milli=1000, pack_type="video", attribution=Attribution(), product=product, detail=detail)
    assert task_paths(ledger.get_reservation("p")) == expected


def new_design(status: str, billing: list[dict[str, Any]] | None = None, *, task_id: str = "n1") -> Any:
    body: dict[str, Any] = {"id": task_id, "status": status, "external_id": "r1"}
    if billing is not None:
        body["billing"] = billing
    return parse_task(body)


def test_unit_rows_of_another_pack_type_are_not_booked_on_this_pack(ledger: Ledger) -> None:
    """Only the reservation's pack type is committed; another pack's row is named in the outcome."""
    reserve(ledger)
    rows = [
        {"charge_type": "unit", "amount": "2", "package_type": "video"},
        {"charge_type": "unit", "amount": "1", "package_type": "video"},
        {"charge_type": "unit", "amount": "4", "package_type": "image"},
    ]
    outcome = JobSettler(ledger).settle(new_design("succeeded", rows))
    assert (outcome.action, outcome.charged_milli) == (SettleAction.COMMITTED, 3000)
    assert "4 units from its image pack" in outcome.message


def test_a_cash_charge_commits_the_dollars_paid(ledger: Ledger) -> None:
    """A task paid from a USD cash balance costs exactly that in dollars; its units are the held list units."""
    reserve(ledger, units_milli=6000)
    rows = [{"charge_type": "cash", "cash_type": "balance", "amount": "0.56", "currency": "USD", "list_price": "0.84"}]
    outcome = JobSettler(ledger).settle(new_design("succeeded", rows))
    info = ledger.get_reservation("r1")
    assert outcome.action is SettleAction.COMMITTED and not outcome.assumed_charge
    assert (info.actual_milli, info.actual_nano) == (6000, 560_000_000)
    assert ledger.verify().ok


def test_a_cash_charge_in_another_currency_is_named(ledger: Ledger) -> None:
    """A CNY cash charge cannot be counted in dollars: the held units are committed at list price and it is said."""
    reserve(ledger, units_milli=6000)
    rows = [{"charge_type": "cash", "amount": "4.06", "currency": "CNY"}]
    outcome = JobSettler(ledger).settle(new_design("succeeded", rows))
    assert outcome.charged_milli == 6000 and "4.06 CNY" in outcome.message


def test_a_zero_row_is_a_free_task_and_missing_billing_is_not_yet(ledger: Ledger) -> None:
    """[{"amount": "0"}] on success commits nothing; a running task without billing keeps its hold."""
    reserve(ledger)
    settler = JobSettler(ledger)
    assert settler.settle(new_design("processing")).action is SettleAction.RUNNING
    assert ledger.get_reservation("r1").state is ReservationState.SUBMITTED
    outcome = settler.settle(new_design("succeeded", [{"amount": "0"}]))
    assert (outcome.action, outcome.charged_milli, outcome.assumed_charge) == (SettleAction.COMMITTED, 0, False)


def test_a_failure_before_generation_releases_the_hold(ledger: Ledger) -> None:
    """Kling's zero row on a failed task: the hold is released (failed tasks are free)."""
    reserve(ledger)
    outcome = JobSettler(ledger).settle(new_design("failed", [{"amount": "0"}]))
    assert outcome.action is SettleAction.RELEASED
    assert ledger.get_reservation("r1").state is ReservationState.RELEASED
