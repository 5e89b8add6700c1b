"""Reconcile the ledger with Kling: settle jobs nobody settled, then compare spend per pack type.

**Jobs** (:func:`reconcile`). A process killed mid-job, a lost callback or a wait that timed out leaves a
reservation open. Each open reservation that may have reached Kling is looked up there:

* every ``submitted`` reservation, and every ``held`` one older than ``held_grace`` (code that reserved
  with ``CostTracker.reserve`` may have sent the job without marking it submitted);
* by its recorded ``task_id``, else by the reservation id as ``external_task_id``;
* found and finished → settled by :class:`~kling_budget.enforced.settle.JobSettler` (commit with Kling's units or
  release on failure); found and running → left alone (its id is recorded);
* not found, ``submitted`` → left open and reported (Kling may still have it in its backlog), unless
  ``release_missing_older_than`` is given and the reservation is older than that, when it is released;
* not found, ``held`` → left for its TTL;
* finally every ``held`` reservation past its TTL is released (``Ledger.expire_unsubmitted``): it was
  never marked submitted, so it never reached Kling.

A ``submitted`` reservation is never released because of time alone unless you ask for it: Kling's
answer decides (a task in Kling's backlog can still run and be charged).

**Drift** (:func:`compare_costs`). Kling's ``/account/costs`` reports each resource pack's total and
remaining units; consumption per pack type (video, image, try-on, from the pack name) is compared with
the units this ledger committed since the oldest of those packs became effective. Kling's remaining
quantities lag up to 12 hours, so committed units from the last ``costs_lag`` may be missing from Kling's
figure: only a difference outside ``[committed - committed in the lag window, committed]`` counts, and
only beyond ``drift_threshold``. Drift raises a ``reconcile_drift`` alert (once per pack type per day).
Kling consuming more than the ledger usually means spend that bypassed this ledger (another tool or key on
the same account); less usually means jobs committed here that Kling never charged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kling_budget.alerts import reconcile_drift_event
from kling_budget.enforced.lookup import lookup_task
from kling_budget.enforced.settle import JobSettler, SettleAction
from kling_budget.errors import KlingAPIError, KlingTaskNotFoundError, ReservationResolvedError
from kling_budget.kling.billing import BillingRecord
from kling_budget.kling.client import KlingClient
from kling_budget.kling.tasks import ChargeType, ResourcePack
from kling_budget.ledger import Ledger, ReservationInfo, ReservationState
from kling_budget.money import format_units, units_text, units_to_milli, usd_text, usd_to_nano
from kling_budget.types import AlertEvent, PackType

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = [
    "COSTS_LAG",
    "DEFAULT_HELD_GRACE",
    "PackDrift",
    "ReconcileAction",
    "ReconcileItem",
    "ReconcileReport",
    "TaskDrift",
    "compare_costs",
    "compare_tasks",
    "reconcile",
    "reconcile_jobs",
]

logger = logging.getLogger("kling_budget.reconcile")

COSTS_LAG = timedelta(hours=12)
"""How far Kling's ``/account/costs`` remaining quantities may lag behind (Kling's documentation)."""
DEFAULT_HELD_GRACE = timedelta(minutes=15)
DEFAULT_LOOKBACK = timedelta(days=90)
DEFAULT_DRIFT_THRESHOLD_MILLI = 1000
DEFAULT_BILLING_LOOKBACK = timedelta(days=7)
LAG_NOTE = (
    "Kling's /account/costs figures lag up to 12 h: units committed in the last 12 h may not show there yet "
    "and are not counted as drift"
)
_SCAN_LIMIT = 1_000_000


class ReconcileAction(StrEnum):
    """What reconcile did with one reservation."""

    COMMITTED = "committed"
    """Kling finished the task and charged it; committed with Kling's units."""
    RELEASED = "released"
    """Kling reports the task failed; the hold was released."""
    ALREADY_SETTLED = "already_settled"
    """Settled meanwhile (by a poll or a callback), consistently with Kling."""
    RUNNING = "running"
    """Kling is still working on it; left open."""
    MISSING = "missing"
    """Submitted, but Kling has no such task (yet); left open. Needs attention."""
    RELEASED_MISSING = "released_missing"
    """Submitted, not on Kling, and older than ``release_missing_older_than``: released."""
    NOT_SUBMITTED = "not_submitted"
    """Held, not on Kling: never sent; left for its TTL."""
    EXPIRED = "expired"
    """Held past its TTL and never submitted: released."""
    CONFLICT = "conflict"
    """The ledger settled it differently from Kling's answer. Needs attention."""
    ERROR = "error"
    """Kling could not be asked. Needs attention."""

    @property
    def needs_attention(self) -> bool:
        """Whether a person should look at it (reconcile exits 1)."""
        return self in (ReconcileAction.MISSING, ReconcileAction.CONFLICT, ReconcileAction.ERROR)


@dataclass(frozen=True, slots=True)
class ReconcileItem:
    """One reservation reconcile looked at.

    Attributes:
        reservation_id: the reservation (and ``external_task_id``).
        state_before: its state when reconcile started.
        action: what was done.
        task_id: Kling's task id, when known.
        task_status: Kling's status, when Kling was asked and answered.
        held_milli: units held.
        charged_milli: units committed, when committed.
        message: one line for people.
    """

    reservation_id: str
    state_before: str
    action: ReconcileAction
    task_id: str | None = None
    task_status: str | None = None
    held_milli: int = 0
    charged_milli: int | None = None
    message: str = ""

    @property
    def needs_attention(self) -> bool:
        """Whether a person should look at it."""
        return self.action.needs_attention

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; units as exact decimal strings."""
        return {
            "reservation_id": self.reservation_id,
            "state_before": self.state_before,
            "action": self.action.value,
            "task_id": self.task_id,
            "task_status": self.task_status,
            "held_units": units_text(self.held_milli),
            "charged_units": None if self.charged_milli is None else units_text(self.charged_milli),
            "needs_attention": self.needs_attention,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class PackDrift:
    """The ledger's committed units against Kling's consumption, for one pack type.

    Attributes:
        pack_type: ``video``, ``image`` or ``try_on``.
        since: the oldest effective time of the Kling packs compared (ledger units are counted from here).
        packs: names of the Kling packs compared.
        kling_consumed_milli: Σ(total − remaining) over those packs (Kling's figure, lagging up to 12 h).
        ledger_committed_milli: units committed in the ledger since ``since``.
        ledger_recent_milli: of those, units of jobs reserved within the lag window.
        drift_milli: Kling minus the nearest end of the accepted band (0 inside it); positive means Kling
            consumed more than the ledger recorded.
        drifting: whether ``|drift_milli|`` exceeds the threshold.
        compared: ``False`` when Kling lists no pack of this type (nothing to compare with).
    """

    pack_type: str
    since: datetime | None
    packs: tuple[str, ...]
    kling_consumed_milli: int
    ledger_committed_milli: int
    ledger_recent_milli: int
    drift_milli: int
    drifting: bool
    compared: bool = True

    @property
    def message(self) -> str:
        """One line for people."""
        if not self.compared:
            return (
                f"{self.pack_type}: ledger committed {format_units(self.ledger_committed_milli)} units; Kling lists "
                "no pack of this type (not compared)"
            )
        text = (
            f"{self.pack_type}: Kling consumed {format_units(self.kling_consumed_milli)} units, ledger committed "
            f"{format_units(self.ledger_committed_milli)} ({format_units(self.ledger_recent_milli)} in the lag window)"
        )
        if not self.drift_milli:
            return text + "; in agreement"
        side = "more" if self.drift_milli > 0 else "less"
        return text + f"; Kling shows {format_units(abs(self.drift_milli))} units {side} than the ledger explains"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; units as exact decimal strings."""
        return {
            "pack_type": self.pack_type,
            "since": self.since.isoformat() if self.since else None,
            "packs": list(self.packs),
            "kling_consumed_units": units_text(self.kling_consumed_milli),
            "ledger_committed_units": units_text(self.ledger_committed_milli),
            "ledger_recent_units": units_text(self.ledger_recent_milli),
            "drift_units": units_text(self.drift_milli),
            "drifting": self.drifting,
            "compared": self.compared,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class TaskDrift:
    """One task on which Kling's billing ledger and this ledger disagree.

    Attributes:
        task_id: Kling's task id.
        reservation_id: the reservation it was submitted for (``None``: the ledger has none).
        kling_units_milli / kling_usd_nano: what Kling's billing ledgers say it took (units, cash dollars).
        ledger_units_milli / ledger_usd_nano: what the ledger committed (``None`` when not committed).
        message: one line for people.
    """

    task_id: str
    reservation_id: str | None
    kling_units_milli: int
    kling_usd_nano: int
    ledger_units_milli: int | None
    ledger_usd_nano: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; amounts as exact decimal strings."""
        return {
            "task_id": self.task_id,
            "reservation_id": self.reservation_id,
            "kling_units": units_text(self.kling_units_milli),
            "kling_usd": usd_text(self.kling_usd_nano),
            "ledger_units": units_text(self.ledger_units_milli),
            "ledger_usd": usd_text(self.ledger_usd_nano),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """Everything one reconcile run did and found."""

    items: tuple[ReconcileItem, ...] = ()
    drift: tuple[PackDrift, ...] = ()
    costs_checked: bool = False
    costs_error: str | None = None
    alerts: tuple[AlertEvent, ...] = field(default=(), compare=False)
    tasks_checked: int | None = None
    task_drift: tuple[TaskDrift, ...] = ()

    @property
    def unresolved(self) -> tuple[ReconcileItem, ...]:
        """Items a person should look at (missing on Kling, conflicts, errors)."""
        return tuple(i for i in self.items if i.needs_attention)

    @property
    def drifting(self) -> tuple[PackDrift, ...]:
        """Pack types whose drift exceeds the threshold."""
        return tuple(d for d in self.drift if d.drifting)

    @property
    def ok(self) -> bool:
        """Nothing unresolved, no drift (per pack type or per task), and the costs check (if asked for) ran."""
        return not self.unresolved and not self.drifting and not self.task_drift and self.costs_error is None

    def counts(self) -> dict[str, int]:
        """How many items ended in each action."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.action.value] = counts.get(item.action.value, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "items": [i.to_dict() for i in self.items],
            "costs_checked": self.costs_checked,
            "costs_error": self.costs_error,
            "costs_note": LAG_NOTE,
            "drift": [d.to_dict() for d in self.drift],
            "unresolved": len(self.unresolved),
            "drifting": [d.pack_type for d in self.drifting],
            "tasks_checked": self.tasks_checked,
            "task_drift": [d.to_dict() for d in self.task_drift],
        }


Progress = Callable[[ReconcileItem, int, int], object]
"""Called after each reservation with the item, how many are done, and how many there are."""


def _settler(tracker_or_ledger: CostTracker | Ledger) -> JobSettler:
    return JobSettler(tracker_or_ledger)


def _candidates(ledger: Ledger, now: datetime, held_grace: timedelta) -> list[ReservationInfo]:
    submitted = ledger.list_reservations(states=[ReservationState.SUBMITTED], limit=_SCAN_LIMIT, newest_first=False)
    held = ledger.list_reservations(states=[ReservationState.HELD], limit=_SCAN_LIMIT, newest_first=False)
    cutoff = now - held_grace
    return sorted(
        [*submitted, *(h for h in held if h.reserved_at <= cutoff)],
        key=lambda info: (info.reserved_at, info.id),
    )


_SETTLED = {
    SettleAction.COMMITTED: ReconcileAction.COMMITTED,
    SettleAction.RELEASED: ReconcileAction.RELEASED,
    SettleAction.ALREADY_COMMITTED: ReconcileAction.ALREADY_SETTLED,
    SettleAction.ALREADY_RELEASED: ReconcileAction.ALREADY_SETTLED,
    SettleAction.RUNNING: ReconcileAction.RUNNING,
    SettleAction.CONFLICT: ReconcileAction.CONFLICT,
    SettleAction.UNKNOWN: ReconcileAction.ERROR,
}


def _one(
    settler: JobSettler,
    client: KlingClient,
    info: ReservationInfo,
    now: datetime,
    release_missing_older_than: timedelta | None,
) -> ReconcileItem:
    def item(action: ReconcileAction, message: str, task_id: str | None = info.task_id) -> ReconcileItem:
        return ReconcileItem(info.id, info.state.value, action, task_id, None, info.units_milli, None, message)

    try:
        task = lookup_task(client, info)
    except KlingTaskNotFoundError:
        if info.state is ReservationState.HELD:
            return item(ReconcileAction.NOT_SUBMITTED, "not on Kling; never sent (left for its TTL)")
        age = now - info.reserved_at
        if release_missing_older_than is not None and age >= release_missing_older_than:
            try:
                settler.ledger.release(info.id, reason=f"not found on Kling {_age(age)} after reservation")
            except ReservationResolvedError:
                return item(ReconcileAction.ALREADY_SETTLED, "settled meanwhile")
            return item(ReconcileAction.RELEASED_MISSING, f"not on Kling {_age(age)} after it was reserved; released")
        return item(
            ReconcileAction.MISSING,
            f"submitted {_age(age)} ago but Kling has no such task (it may be in Kling's backlog); left open: "
            "run again later, or release it with --release-missing-older-than",
        )
    except KlingAPIError as exc:
        return item(ReconcileAction.ERROR, str(exc))
    outcome = settler.settle(task, reservation_id=info.id)
    return ReconcileItem(
        info.id,
        info.state.value,
        _SETTLED[outcome.action],
        task.task_id,
        task.status.value,
        info.units_milli,
        outcome.charged_milli,
        outcome.message,
    )


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    return f"{seconds // 60}m{seconds % 60}s"


def reconcile_jobs(
    tracker_or_ledger: CostTracker | Ledger,
    client: KlingClient,
    *,
    held_grace: timedelta = DEFAULT_HELD_GRACE,
    release_missing_older_than: timedelta | None = None,
    on_progress: Progress | None = None,
) -> list[ReconcileItem]:
    """Settle every open reservation that may have reached Kling, then expire never-submitted holds.

    See the module docstring for the rules.

    Args:
        tracker_or_ledger: whose ledger to reconcile (a tracker also delivers the alerts raised).
        client: asks Kling about each task.
        held_grace: ``held`` reservations younger than this are left alone (their process may be about to
            send them).
        release_missing_older_than: release ``submitted`` reservations Kling has no task for once they are
            this old; by default they are left open and reported.
        on_progress: called after each reservation.
    """
    settler = _settler(tracker_or_ledger)
    ledger = settler.ledger
    now = ledger.now()
    candidates = _candidates(ledger, now, held_grace)
    items: list[ReconcileItem] = []
    for done, info in enumerate(candidates, start=1):
        item = _one(settler, client, info, now, release_missing_older_than)
        items.append(item)
        if on_progress is not None:
            on_progress(item, done, len(candidates))
    expired = set(ledger.expire_unsubmitted(now=now, limit=_SCAN_LIMIT))
    for index, item in enumerate(items):
        if item.reservation_id in expired:
            items[index] = ReconcileItem(
                reservation_id=item.reservation_id,
                state_before=item.state_before,
                action=ReconcileAction.EXPIRED,
                held_milli=item.held_milli,
                message="held past its TTL and never submitted; released",
            )
            expired.discard(item.reservation_id)
    for key in sorted(expired):
        info = ledger.get_reservation(key)
        items.append(
            ReconcileItem(
                reservation_id=key,
                state_before=ReservationState.HELD.value,
                action=ReconcileAction.EXPIRED,
                held_milli=info.units_milli,
                message="held past its TTL and never submitted; released",
            )
        )
    return items


def _pack_kind(pack: ResourcePack) -> PackType | None:
    name = pack.name.lower()
    if "try" in name or "试" in name:
        return PackType.TRY_ON
    if "image" in name or "图" in name:
        return PackType.IMAGE
    if "video" in name or "视频" in name:
        return PackType.VIDEO
    return None


def _milli(value: Decimal) -> int:
    return int((value * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def compare_costs(
    tracker_or_ledger: CostTracker | Ledger,
    packs: list[ResourcePack],
    *,
    costs_lag: timedelta = COSTS_LAG,
    drift_threshold_milli: int = DEFAULT_DRIFT_THRESHOLD_MILLI,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> tuple[list[PackDrift], list[AlertEvent]]:
    """Compare Kling's pack consumption with the ledger's committed units per pack type; alert on drift.

    Args:
        tracker_or_ledger: the ledger to compare (a tracker also delivers the alerts).
        packs: Kling's packs, from ``KlingClient.get_account_costs``.
        costs_lag: how far Kling's figures may lag (12 h per Kling).
        drift_threshold_milli: differences up to this many milli-units are not drift.
        lookback: for pack types Kling lists no pack of, ledger units are counted over this long.

    Returns:
        The comparison per pack type, and the alerts newly raised.
    """
    settler = _settler(tracker_or_ledger)
    ledger = settler.ledger
    now = ledger.now()
    consumed: dict[PackType, int] = {}
    since: dict[PackType, datetime] = {}
    names: dict[PackType, list[str]] = {}
    for pack in packs:
        kind = _pack_kind(pack)
        if kind is None:
            logger.warning("reconcile: cannot tell the pack type of Kling pack %r; not compared", pack.name)
            continue
        consumed[kind] = consumed.get(kind, 0) + _milli(pack.total_quantity - pack.remaining_quantity)
        start = pack.effective_time or pack.purchase_time
        if start is not None and (kind not in since or start < since[kind]):
            since[kind] = start
        names.setdefault(kind, []).append(pack.name)
    end = now + timedelta(microseconds=1)
    results: list[PackDrift] = []
    alerts: list[AlertEvent] = []
    ledger_types = {
        PackType(row.group["pack_type"])
        for row in ledger.usage(start=now - lookback, end=end, group_by=("pack_type",))
        if row.committed_milli
    }
    for kind in sorted(set(consumed) | ledger_types, key=lambda k: k.value):
        start = since.get(kind, now - lookback)
        committed = _committed(ledger, kind, start, end)
        recent = _committed(ledger, kind, max(start, now - costs_lag), end)
        if kind not in consumed:
            results.append(PackDrift(kind.value, None, (), 0, committed, recent, 0, False, compared=False))
            continue
        kling = consumed[kind]
        if kling > committed:
            drift = kling - committed
        elif kling < committed - recent:
            drift = kling - (committed - recent)
        else:
            drift = 0
        item = PackDrift(
            kind.value,
            since.get(kind),
            tuple(names.get(kind, ())),
            kling,
            committed,
            recent,
            drift,
            abs(drift) > drift_threshold_milli,
        )
        results.append(item)
        if item.drifting:
            # Labelled with today's date, so the alert repeats at most daily while the drift lasts.
            period = f"{start:%Y-%m-%d}..{now:%Y-%m-%d}"
            stored = settler.emit(
                reconcile_drift_event(
                    at=now,
                    period_label=period,
                    ledger_units_milli=committed,
                    kling_units_milli=kling,
                    pack_type=kind.value,
                )
            )
            if stored is not None:
                alerts.append(stored)
    return results, alerts


def _committed(ledger: Ledger, kind: PackType, start: datetime, end: datetime) -> int:
    if end <= start:
        return 0
    rows = ledger.usage(start=start, end=end, group_by=("pack_type",), filters={"pack_type": kind.value})
    return sum(row.committed_milli for row in rows)


_MAX_BILLING_PAGES = 200


def _billing_records(client: KlingClient, start: datetime, end: datetime) -> list[BillingRecord] | None:
    """Every row of both per-task billing ledgers in ``[start, end)``; ``None`` when the account has none."""
    records: list[BillingRecord] = []
    for read in (client.get_billing_package, client.get_billing_balance):
        cursor: str | None = None
        for _ in range(_MAX_BILLING_PAGES):
            try:
                page = read(start, end, cursor=cursor) if cursor is None else read(cursor=cursor)
            except KlingAPIError as exc:
                if exc.code in (1202, 1203) or exc.http_status == 404:
                    return None  # an account (or Kling region) without per-task billing ledgers
                raise
            records.extend(page.records)
            cursor = page.next_cursor
            if cursor is None:
                break
    return records


def compare_tasks(
    tracker_or_ledger: CostTracker | Ledger, records: list[BillingRecord]
) -> tuple[int, list[TaskDrift], list[AlertEvent]]:
    """Compare Kling's per-task deductions with what the ledger committed for each task; alert on drift.

    Each task Kling charged is looked up by its task id: no reservation (spend that bypassed this ledger), a
    reservation released although Kling charged, and a commit with other units (or, for a cash charge in US
    dollars, other dollars) are drift, named per task. Reservations still open are left to
    :func:`reconcile_jobs`.

    Returns:
        How many tasks were compared, the drift per task, and the alerts newly raised.
    """
    settler = _settler(tracker_or_ledger)
    ledger = settler.ledger
    units: dict[str, int] = {}
    dollars: dict[str, int] = {}
    for record in records:
        if record.charge_type is ChargeType.UNIT:
            units[record.task_id] = units.get(record.task_id, 0) + units_to_milli(record.amount, "deduction")
        elif (record.currency or "").upper() == "USD":
            dollars[record.task_id] = dollars.get(record.task_id, 0) + usd_to_nano(record.amount, "deduction")
        else:
            units.setdefault(record.task_id, 0)
    drift: list[TaskDrift] = []
    alerts: list[AlertEvent] = []
    tasks = sorted(set(units) | set(dollars))
    for task_id in tasks:
        kling_units, kling_usd = units.get(task_id, 0), dollars.get(task_id, 0)
        info = ledger.find_by_task(task_id)
        message = _task_mismatch(task_id, info, kling_units, kling_usd)
        if message is None:
            continue
        item = TaskDrift(
            task_id,
            None if info is None else info.id,
            kling_units,
            kling_usd,
            None if info is None else info.actual_milli,
            None if info is None else info.actual_nano,
            message,
        )
        drift.append(item)
        stored = settler.emit(
            reconcile_drift_event(
                at=ledger.now(),
                period_label=f"task {task_id}",
                ledger_units_milli=item.ledger_units_milli or 0,
                kling_units_milli=kling_units,
                pack_type=(info.pack_type.value if info is not None else ""),
            )
        )
        if stored is not None:
            alerts.append(stored)
    return len(tasks), drift, alerts


def _task_mismatch(task_id: str, info: ReservationInfo | None, kling_units: int, kling_usd: int) -> str | None:
    """Why Kling's deduction for ``task_id`` and the ledger's disagree, or ``None`` when they agree."""
    charged = f"{format_units(kling_units)} units" + (f" and ${usd_text(kling_usd)}" if kling_usd else "")
    if info is None:
        if kling_units == 0 and kling_usd == 0:
            return None
        return (
            f"Kling charged task {task_id} {charged} but no reservation has this task (spend that bypassed the ledger)"
        )
    if info.state.is_open:
        return None  # still being settled: reconcile_jobs decides it
    if info.state is not ReservationState.COMMITTED:
        if kling_units == 0 and kling_usd == 0:
            return None
        return f"reservation {info.id} is {info.state.value} but Kling charged task {task_id} {charged}"
    if kling_usd:
        if info.actual_nano == kling_usd:
            return None
        committed = usd_text(info.actual_nano or 0)
        return f"reservation {info.id} committed ${committed}; Kling charged task {task_id} {charged}"
    if info.actual_milli == kling_units:
        return None
    return (
        f"reservation {info.id} committed {format_units(info.actual_milli or 0)} units; "
        f"Kling deducted {format_units(kling_units)} for task {task_id}"
    )


def reconcile(
    tracker_or_ledger: CostTracker | Ledger,
    client: KlingClient,
    *,
    held_grace: timedelta = DEFAULT_HELD_GRACE,
    release_missing_older_than: timedelta | None = None,
    check_costs: bool = True,
    lookback: timedelta = DEFAULT_LOOKBACK,
    costs_lag: timedelta = COSTS_LAG,
    drift_threshold_milli: int = DEFAULT_DRIFT_THRESHOLD_MILLI,
    billing_lookback: timedelta = DEFAULT_BILLING_LOOKBACK,
    on_progress: Progress | None = None,
) -> ReconcileReport:
    """Settle unsettled jobs from Kling's answers, then compare spend with Kling's own account data: task by
    task with the per-task billing ledgers when the account has them, and per pack type with
    ``/account/costs``.

    Args:
        tracker_or_ledger: whose ledger to reconcile.
        client: the Kling client (its account is the one compared).
        held_grace / release_missing_older_than / on_progress: see :func:`reconcile_jobs`.
        check_costs: also compare with ``/account/costs`` (free, but Kling asks for at most 1 query/s).
        lookback: ask ``/account/costs`` for packs valid within this long before now.
        costs_lag / drift_threshold_milli: see :func:`compare_costs`.
        billing_lookback: compare the tasks Kling billed within this long before now (:func:`compare_tasks`).

    Returns:
        The report; ``report.ok`` is false when something needs attention or drifts.
    """
    items = reconcile_jobs(
        tracker_or_ledger,
        client,
        held_grace=held_grace,
        release_missing_older_than=release_missing_older_than,
        on_progress=on_progress,
    )
    if not check_costs:
        return ReconcileReport(items=tuple(items))
    ledger = tracker_or_ledger if isinstance(tracker_or_ledger, Ledger) else tracker_or_ledger.ledger
    now = ledger.now()
    try:
        records = _billing_records(client, now - billing_lookback, now)
    except KlingAPIError as exc:
        return ReconcileReport(items=tuple(items), costs_error=f"could not read Kling's billing ledgers: {exc}")
    checked: int | None = None
    task_drift: list[TaskDrift] = []
    alerts: list[AlertEvent] = []
    if records is not None:
        checked, task_drift, alerts = compare_tasks(tracker_or_ledger, records)
    try:
        packs = client.get_account_costs(now - lookback, now)
    except KlingAPIError as exc:
        return ReconcileReport(
            items=tuple(items),
            costs_error=f"could not read /account/costs: {exc}",
            tasks_checked=checked,
            task_drift=tuple(task_drift),
            alerts=tuple(alerts),
        )
    drift, pack_alerts = compare_costs(
        tracker_or_ledger, packs, costs_lag=costs_lag, drift_threshold_milli=drift_threshold_milli, lookback=lookback
    )
    return ReconcileReport(
        items=tuple(items),
        drift=tuple(drift),
        costs_checked=True,
        alerts=(*alerts, *pack_alerts),
        tasks_checked=checked,
        task_drift=tuple(task_drift),
    )
