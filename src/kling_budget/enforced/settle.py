"""Settling a Kling job in the ledger from Kling's own answer: the one place that does it.

The enforced client's ``Job.wait()``, the callback handler, ``kling-budget reconcile`` and the gateway all
hand a freshly queried :class:`~kling_budget.kling.tasks.Task` to :meth:`JobSettler.settle`, which applies
these rules:

* The reservation is found by ``reservation_id`` when given, else by the task's ``external_task_id`` (the
  enforced client sends the reservation id as ``external_task_id``), else by the recorded Kling
  ``task_id``. No reservation → :attr:`SettleAction.UNKNOWN`, nothing changes.
* Task not finished → its ``task_id`` is recorded (``mark_submitted``) and nothing else happens: a
  running task holds its budget until Kling says how it ended.
* ``succeeded`` → ``commit`` with Kling's charge (``final_unit_deduction`` or ``billing[]``, read by
  :func:`kling_charge`: unit rows of the reservation's pack type; a charge from a cash balance commits the
  held units at the dollars actually paid; a zero row is free). Above the hold is overage: recorded, and
  alerted by the ledger. If Kling reports no charge at all, the held amount is committed and the outcome
  says so (``assumed_charge``).
* ``failed`` → ``release`` (Kling never charges failed tasks). Should Kling nevertheless report a charge
  on a failed task, that charge is committed instead: Kling's own number wins.
* Already settled the same way → an idempotent no-op (``ALREADY_COMMITTED`` / ``ALREADY_RELEASED``), so
  polling, repeated or out-of-order callbacks and reconcile can race safely: the ledger serialises the
  resolution and the losers see a replay.
* Settled differently (committed with other units, committed but Kling says failed, released but Kling
  says succeeded, or the reservation belongs to another task) → :attr:`SettleAction.CONFLICT`: nothing is
  changed, the outcome explains it, and a ``reconcile_drift`` alert is raised once per reservation.

:meth:`JobSettler.reject` settles a create that Kling refused outright (no task exists): the hold is
released, and a 1102 (resource pack depleted or expired) also raises an ``upstream_pack_exhausted``
alert, at most once per pack type per hour.

Everything here is blocking ledger I/O and thread-safe; async callers run it in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kling_budget.alerts import upstream_pack_exhausted_event
from kling_budget.errors import (
    KlingAPIError,
    KlingPackExhaustedError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.kling.tasks import ChargeType
from kling_budget.ledger import Ledger, ReservationInfo, ReservationState
from kling_budget.ledger.backend import Connection
from kling_budget.money import format_units, units_text, usd_to_nano
from kling_budget.types import AlertEvent, AlertKind, PackType

if TYPE_CHECKING:
    from kling_budget.alerts import AlertDispatcher
    from kling_budget.kling.tasks import Task
    from kling_budget.tracker import CostTracker

__all__ = [
    "DETAIL_PATH_KEY",
    "JobSettler",
    "KlingCharge",
    "SettleAction",
    "SettleOutcome",
    "kling_charge",
    "task_paths",
]

logger = logging.getLogger("kling_budget.enforced.settle")

DETAIL_PATH_KEY = "kling_path"
"""Key of a reservation's ``detail`` that holds the Kling create path the job was sent to."""

# Where a task of each product can have been created (Kling answers a task query only on its own path).
_PRODUCT_PATHS: dict[str, tuple[str, ...]] = {
    "video": ("/v1/videos/text2video", "/v1/videos/image2video", "/v1/videos/omni-video"),
    "multi-image-video": ("/v1/videos/multi-image2video",),
    "multi-elements": ("/v1/videos/multi-elements",),
    "video-extend": ("/v1/videos/video-extend",),
    "motion-control": ("/v1/videos/motion-control",),
    "lip-sync": ("/v1/videos/lip-sync", "/v1/videos/advanced-lip-sync"),
    "avatar": ("/v1/videos/avatar/image2video",),
    "effects": ("/v1/videos/effects",),
    "image": ("/v1/images/generations", "/v1/images/omni-image"),
    "multi-image-image": ("/v1/images/multi-image2image",),
    "image-expand": ("/v1/images/editing/expand",),
    "ai-multi-shot": ("/v1/general/ai-multi-shot",),
    "try-on": ("/v1/images/kolors-virtual-try-on",),
}


def task_paths(info: ReservationInfo) -> tuple[str, ...]:
    """The create paths on which to query a reservation's Kling task, most likely first.

    The path recorded by the enforced client when there is one; otherwise every path of the reservation's
    product (a reservation made with ``CostTracker.reserve`` does not say which endpoint was used).
    """
    recorded = info.detail.get(DETAIL_PATH_KEY)
    if isinstance(recorded, str) and recorded.startswith("/"):
        return (recorded,)
    return _PRODUCT_PATHS.get(info.product, ())


@dataclass(frozen=True, slots=True)
class KlingCharge:
    """What Kling took for a finished task, as the ledger records it.

    Attributes:
        units_milli: pack units to commit; ``None`` when Kling reported no charge at all (the hold is assumed).
        cash_usd_nano: dollars taken from a cash balance instead of pack units (``None``: priced from packs).
        notes: what was not booked as reported (other pack types, other currencies), for the outcome message.
    """

    units_milli: int | None
    cash_usd_nano: int | None = None
    notes: tuple[str, ...] = ()


_PACKAGE_TYPES = {"try-on": "try_on", "tryon": "try_on"}


def kling_charge(task: Task, pack_type: PackType, held_milli: int) -> KlingCharge:
    """Read a finished task's charge for a reservation of ``pack_type`` holding ``held_milli``. Pure.

    * unit rows of the reservation's pack type (or with no type, e.g. ``final_unit_deduction`` or a zero row)
      are committed; rows of another pack type are named in ``notes`` (that pack is not this budget's);
    * a charge taken only from a cash balance commits the held (list-price) units, and the money itself
      when it is in US dollars; another currency is named in ``notes`` and priced as units;
    * no charge reported at all: ``units_milli`` is ``None`` (the caller commits the hold and says so).
    """
    if not task.charges:
        return KlingCharge(task.charged_units_milli)
    units: int | None = None
    notes: list[str] = []
    cash_usd: list[Decimal] = []
    for charge in task.charges:
        if charge.charge_type is ChargeType.UNIT:
            kind = charge.package_type.lower() if charge.package_type else None
            kind = _PACKAGE_TYPES.get(kind, kind) if kind else None
            if kind is None or kind == pack_type.value:
                units = (units or 0) + (charge.units_milli or 0)
            else:
                notes.append(f"Kling also took {format_units(charge.units_milli or 0)} units from its {kind} pack")
        elif charge.currency is not None and charge.currency.upper() == "USD":
            cash_usd.append(charge.amount)
        else:
            currency = charge.currency or "balance currency"
            notes.append(f"Kling charged {charge.amount} {currency} from the cash balance (recorded at list price)")
    if units is None and cash_usd:
        return KlingCharge(held_milli, usd_to_nano(sum(cash_usd, Decimal(0)), "cash charge"), tuple(notes))
    if units is not None and cash_usd:
        notes.append(f"Kling also charged {sum(cash_usd, Decimal(0))} USD from the cash balance")
    return KlingCharge(held_milli if units is None else units, None, tuple(notes))


class SettleAction(StrEnum):
    """What :meth:`JobSettler.settle` did (or found)."""

    COMMITTED = "committed"
    """This call committed Kling's charge."""
    RELEASED = "released"
    """This call released the hold: the task failed."""
    RUNNING = "running"
    """The task has not finished; its id is recorded and the hold stays."""
    ALREADY_COMMITTED = "already_committed"
    """Committed earlier with the same units: nothing to do."""
    ALREADY_RELEASED = "already_released"
    """Released earlier and Kling agrees the task failed: nothing to do."""
    CONFLICT = "conflict"
    """Kling's answer contradicts how the reservation was settled; nothing was changed."""
    UNKNOWN = "unknown"
    """No reservation belongs to this task."""


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """The result of settling one job.

    Attributes:
        action: what happened.
        task: Kling's answer the decision was made from.
        reservation: the reservation after the call (``None`` when unknown).
        charged_milli: the units committed (by this call or earlier), when committed.
        assumed_charge: Kling reported no charge for a succeeded task, so the held amount was committed.
        message: one line for people.
    """

    action: SettleAction
    task: Task
    reservation: ReservationInfo | None
    charged_milli: int | None = None
    assumed_charge: bool = False
    message: str = ""

    @property
    def reservation_id(self) -> str | None:
        """The reservation's id, when one was found."""
        return None if self.reservation is None else self.reservation.id

    @property
    def settled(self) -> bool:
        """Whether the reservation is resolved consistently with Kling's answer (now or earlier)."""
        return self.action in (
            SettleAction.COMMITTED,
            SettleAction.RELEASED,
            SettleAction.ALREADY_COMMITTED,
            SettleAction.ALREADY_RELEASED,
        )

    @property
    def conflict(self) -> bool:
        """Whether the ledger and Kling disagree about this job."""
        return self.action is SettleAction.CONFLICT

    @property
    def overage_milli(self) -> int:
        """Units committed above the hold (0 when none or not committed)."""
        return 0 if self.reservation is None else self.reservation.overage_milli

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; amounts as exact decimal strings."""
        return {
            "action": self.action.value,
            "reservation_id": self.reservation_id,
            "task_id": self.task.task_id,
            "task_status": self.task.status.value,
            "charged_units": None if self.charged_milli is None else units_text(self.charged_milli),
            "held_units": None if self.reservation is None else units_text(self.reservation.units_milli),
            "overage_units": units_text(self.overage_milli),
            "assumed_charge": self.assumed_charge,
            "message": self.message,
        }


class JobSettler:
    """Settles reservations from Kling's answers (see the module docstring for the rules).

    Args:
        tracker_or_ledger: a :class:`~kling_budget.tracker.CostTracker` (its alert sinks then get the alerts
            settling raises, e.g. overage) or a bare :class:`~kling_budget.ledger.Ledger` (alerts stay in the
            ledger's outbox for a later ``flush``).
        alerts: deliver alerts through this dispatcher instead of the tracker's.
    """

    def __init__(self, tracker_or_ledger: CostTracker | Ledger, *, alerts: AlertDispatcher | None = None) -> None:
        if isinstance(tracker_or_ledger, Ledger):
            self.ledger = tracker_or_ledger
            self._alerts = alerts
        else:
            self.ledger = tracker_or_ledger.ledger
            self._alerts = alerts if alerts is not None else tracker_or_ledger.alerts

    def __repr__(self) -> str:
        return f"JobSettler(ledger={self.ledger!r})"

    # ------------------------------------------------------------------ lookups

    def find(self, task: Task, *, reservation_id: str | None = None) -> ReservationInfo | None:
        """The reservation ``task`` belongs to: by ``reservation_id``, ``external_task_id``, then ``task_id``."""
        for key in (reservation_id, task.external_task_id):
            if key:
                try:
                    return self.ledger.get_reservation(key)
                except ReservationNotFoundError:
                    if key == reservation_id:
                        return None
        return self.ledger.find_by_task(task.task_id)

    # ------------------------------------------------------------------ settling

    def settle(
        self,
        task: Task,
        *,
        reservation_id: str | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> SettleOutcome:
        """Apply Kling's answer about one task to its reservation, idempotently.

        Args:
            task: the task as just queried from Kling (a callback body is only a hint: query first).
            reservation_id: the reservation the task was submitted for, when the caller knows it.
            also: run in the ledger transaction that commits or releases the reservation, when this call
                does (the outcome's action is then ``COMMITTED`` or ``RELEASED``); not run otherwise.

        Returns:
            What was done; :attr:`SettleOutcome.conflict` is set when the ledger and Kling disagree.

        Raises:
            LedgerUnavailableError: the ledger cannot be reached; nothing changed, try again later.
        """
        info = self.find(task, reservation_id=reservation_id)
        if info is None:
            return SettleOutcome(
                SettleAction.UNKNOWN, task, None, message=f"no reservation for Kling task {task.task_id}"
            )
        if info.task_id is not None and info.task_id != task.task_id:
            return self._conflict(
                info, task, f"reservation {info.id} was submitted as Kling task {info.task_id}, not {task.task_id}"
            )
        if not task.is_terminal:
            return self._running(info, task)
        charged = task.charged_units_milli
        # Compared by value so this module does not import the Kling client (and httpx).
        if task.status.value == "succeeded" or (charged is not None and charged > 0):
            return self._commit(info, task, also)
        return self._release(info, task, also)

    def reject(
        self, reservation_id: str, error: KlingAPIError, *, pack_type: PackType | str | None = None
    ) -> ReservationInfo:
        """Release the hold of a create Kling refused outright (no task exists); alert on 1102.

        Only call this for a definite rejection: never for
        :class:`~kling_budget.errors.KlingAmbiguousCreateError`, whose task may exist and be charged.
        """
        if isinstance(error, KlingPackExhaustedError):
            kind = pack_type
            if kind is None:
                try:
                    kind = self.ledger.get_reservation(reservation_id).pack_type
                except ReservationNotFoundError:
                    kind = None
            self.pack_exhausted(error, pack_type=kind, reservation_id=reservation_id)
        return self.ledger.release(reservation_id, reason=f"Kling rejected the create: {error}")

    def pack_exhausted(
        self, error: KlingAPIError, *, pack_type: PackType | str | None = None, reservation_id: str = ""
    ) -> AlertEvent | None:
        """Raise an ``upstream_pack_exhausted`` alert for Kling's 1102, at most once per pack type per hour."""
        event = upstream_pack_exhausted_event(
            at=self.ledger.now(),
            pack_type=str(pack_type) if pack_type else "",
            reservation_id=reservation_id,
            detail=str(error),
        )
        return self.emit(event)

    # ------------------------------------------------------------------ rules

    def _running(self, info: ReservationInfo, task: Task) -> SettleOutcome:
        state = info.state
        if state is ReservationState.COMMITTED:
            return SettleOutcome(
                SettleAction.ALREADY_COMMITTED,
                task,
                info,
                charged_milli=info.actual_milli,
                message=f"reservation {info.id} is already committed; Kling still reports {task.status.value}",
            )
        if not state.is_open:
            return self._conflict(
                info, task, f"reservation {info.id} is {state.value} but Kling task {task.task_id} is still running"
            )
        if state is ReservationState.HELD or info.task_id is None:
            info = self._record_task(info, task)
            if not info.state.is_open:
                return self._running(info, task)
        return SettleOutcome(
            SettleAction.RUNNING, task, info, message=f"Kling task {task.task_id} is {task.status.value}"
        )

    def _commit(
        self, info: ReservationInfo, task: Task, also: Callable[[Connection], None] | None = None
    ) -> SettleOutcome:
        charge = kling_charge(task, info.pack_type, info.units_milli)
        units = charge.units_milli
        assumed = units is None
        if units is None:
            units = info.units_milli
        if info.state.is_open:
            if info.task_id is None:
                info = self._record_task(info, task)
            if info.state.is_open:
                try:
                    done = self.ledger.commit(info.id, units_milli=units, cash_usd_nano=charge.cash_usd_nano, also=also)
                except ReservationResolvedError:
                    info = self.ledger.get_reservation(info.id)  # settled by someone else meanwhile
                else:
                    self._deliver(done.alerts)
                    if done.replayed:
                        return self._already_committed(done, task)
                    note = " (Kling reported no charge: committed the held amount)" if assumed else ""
                    note += "".join(f"; {n}" for n in charge.notes)
                    if charge.notes:
                        logger.warning("task %s: %s", task.task_id, "; ".join(charge.notes))
                    over = f", {format_units(done.overage_milli)} above the hold" if done.overage_milli else ""
                    return SettleOutcome(
                        SettleAction.COMMITTED,
                        task,
                        done,
                        charged_milli=units,
                        assumed_charge=assumed,
                        message=f"committed {format_units(units)} units for Kling task {task.task_id}{over}{note}",
                    )
        if info.state is ReservationState.COMMITTED and (assumed or info.actual_milli == units):
            return self._already_committed(info, task)
        if info.state is ReservationState.COMMITTED:
            return self._conflict(
                info,
                task,
                f"reservation {info.id} was committed with {format_units(info.actual_milli or 0)} units "
                f"but Kling charged {format_units(units)} for task {task.task_id}",
            )
        return self._conflict(
            info,
            task,
            f"reservation {info.id} is {info.state.value} but Kling task {task.task_id} "
            f"{task.status.value} and charged {format_units(units)} units",
        )

    def _release(
        self, info: ReservationInfo, task: Task, also: Callable[[Connection], None] | None = None
    ) -> SettleOutcome:
        reason = f"Kling task {task.task_id} failed" + (f": {task.status_message}" if task.status_message else "")
        if info.state.is_open:
            if info.task_id is None:
                info = self._record_task(info, task)
            if info.state.is_open:
                try:
                    done = self.ledger.release(info.id, reason=reason, also=also)
                except ReservationResolvedError:
                    info = self.ledger.get_reservation(info.id)
                else:
                    if done.replayed:
                        return self._already_released(done, task)
                    return SettleOutcome(SettleAction.RELEASED, task, done, message=f"released: {reason}")
        if info.state is ReservationState.RELEASED:
            return self._already_released(info, task)
        return self._conflict(
            info,
            task,
            f"reservation {info.id} is {info.state.value} but Kling task {task.task_id} failed (failed tasks "
            "are not charged)",
        )

    # ------------------------------------------------------------------ helpers

    def _record_task(self, info: ReservationInfo, task: Task) -> ReservationInfo:
        try:
            return self.ledger.mark_submitted(info.id, task_id=task.task_id)
        except ReservationResolvedError:
            return self.ledger.get_reservation(info.id)  # resolved meanwhile; the caller re-classifies

    @staticmethod
    def _already_committed(info: ReservationInfo, task: Task) -> SettleOutcome:
        return SettleOutcome(
            SettleAction.ALREADY_COMMITTED,
            task,
            info,
            charged_milli=info.actual_milli,
            message=f"reservation {info.id} was already committed ({format_units(info.actual_milli or 0)} units)",
        )

    @staticmethod
    def _already_released(info: ReservationInfo, task: Task) -> SettleOutcome:
        return SettleOutcome(
            SettleAction.ALREADY_RELEASED, task, info, message=f"reservation {info.id} was already released"
        )

    def _conflict(self, info: ReservationInfo, task: Task, message: str) -> SettleOutcome:
        logger.error("settle conflict: %s", message)
        self.emit(
            AlertEvent(
                kind=AlertKind.RECONCILE_DRIFT,
                message=f"ledger and Kling disagree: {message}",
                dedupe_key=f"settle_conflict:{info.id}",
                reservation_id=info.id,
                created_at=self.ledger.now().isoformat(),
            )
        )
        return SettleOutcome(SettleAction.CONFLICT, task, info, charged_milli=info.actual_milli, message=message)

    def emit(self, event: AlertEvent) -> AlertEvent | None:
        """Store an alert in the ledger's outbox (deduplicated) and hand a new one to the sinks."""
        stored = self.ledger.emit_alert(event)
        if stored is not None:
            self._deliver((stored,))
        return stored

    def _deliver(self, events: tuple[AlertEvent, ...]) -> None:
        if events and self._alerts is not None:
            self._alerts.deliver(events)
