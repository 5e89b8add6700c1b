"""Parsed Kling tasks and resource packs: frozen values built from either API design, no I/O.

One parser, :func:`parse_task`, reads every task shape Kling sends:

* the legacy ``/v1`` design (create/query ``data`` and the legacy callback body): ``task_id``,
  ``task_status`` (``submitted|processing|succeed|failed``), ``task_status_msg``,
  ``task_info.external_task_id``, ``task_result.videos|images``, ``final_unit_deduction`` (a decimal
  *string*, possibly ``""`` while running) and, on cash-balance accounts,
  ``final_balance_deduction {quota, list_price}``; times in Unix milliseconds;
* the new design (model in the path; query items and the new callback body): ``id``, ``status``
  (``...|succeeded|...``), ``message``, ``external_id``, ``outputs[]``, ``billing[]`` and ``create_time`` /
  ``update_time``.

Charges are exact: JSON numbers should be decoded with ``parse_float=Decimal`` (the client does), strings
are parsed as decimals, and floats are refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kling_budget.errors import InvalidInputError
from kling_budget.money import milli_to_units, parse_decimal, units_to_milli

__all__ = [
    "Charge",
    "ChargeType",
    "ResourcePack",
    "Task",
    "TaskOutput",
    "TaskStatus",
    "parse_resource_pack",
    "parse_task",
]

logger = logging.getLogger("kling_budget.kling")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Below this a timestamp is taken as seconds (1e11 s is the year 5138; 1e11 ms is 1973).
_SECONDS_THRESHOLD = 10**11
_MAX_TIMESTAMP = 10**20  # parse_decimal's bound, so the fast path accepts nothing it refuses


class TaskStatus(StrEnum):
    """A task's lifecycle state; legacy ``succeed`` and new ``succeeded`` both map to :attr:`SUCCEEDED`."""

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished (succeeded or failed) and its charge is final."""
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


_STATUSES = {
    "submitted": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "succeed": TaskStatus.SUCCEEDED,
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}


class ChargeType(StrEnum):
    """What a deduction was taken from: resource-pack units or cash balance."""

    UNIT = "unit"
    CASH = "cash"


@dataclass(frozen=True, slots=True)
class Charge:
    """One deduction reported for a task (an item of ``billing[]``, or the legacy deduction fields).

    Attributes:
        charge_type: units from a resource pack, or cash from a balance.
        amount: exact units (unit) or discounted money amount (cash).
        package_type: unit only: ``video``, ``image``, ``audio`` ... (``None`` when Kling did not say).
        cash_type: cash only: ``balance`` or ``test_balance``.
        currency: cash only: ``CNY`` or ``USD`` (``None`` on the legacy ``final_balance_deduction``).
        list_price: cash only: the undiscounted list price, when given.
    """

    charge_type: ChargeType
    amount: Decimal
    package_type: str | None = None
    cash_type: str | None = None
    currency: str | None = None
    list_price: Decimal | None = None

    @property
    def units_milli(self) -> int | None:
        """The deducted units as integer milli-units, or ``None`` for a cash charge."""
        if self.charge_type is not ChargeType.UNIT:
            return None
        return units_to_milli(self.amount, "billing amount")


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """One generated file (video, image, audio ...); URLs expire after 30 days."""

    kind: str
    url: str
    id: str | None = None
    index: int | None = None
    duration: str | None = None
    watermark_url: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A Kling task as last seen, from a create/query answer or a callback body.

    Attributes:
        task_id: Kling's id.
        status: normalised lifecycle state.
        external_task_id: the caller's id sent on create, when Kling echoes it.
        status_message: Kling's status text (the failure reason on failed tasks), ``""`` if none.
        created_at: creation time (aware, UTC), when given.
        updated_at: last status change (aware, UTC), when given.
        outputs: generated files in Kling's order.
        charged_units_milli: units deducted from resource packs, exact, in milli-units, once the task is
            terminal. ``None`` while it runs (whatever Kling reports then, e.g. ``"0"``) and when a finished
            task has no deduction field; ``0`` for a failed task Kling reports no charge for (Kling documents
            that failed tasks are never charged) and for a cash-only charge.
        charges: every deduction item as reported (unit and cash), exact.
        endpoint: the create path the task belongs to (``/v1/videos/text2video`` ...), when known.
        raw: the decoded JSON object this task was parsed from.
    """

    task_id: str
    status: TaskStatus
    external_task_id: str | None = None
    status_message: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    outputs: tuple[TaskOutput, ...] = ()
    charged_units_milli: int | None = None
    charges: tuple[Charge, ...] = ()
    endpoint: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished; its charge is then final."""
        return self.status.is_terminal

    @property
    def charged_units(self) -> Decimal | None:
        """The deducted units as an exact ``Decimal`` (``None`` while unknown)."""
        return None if self.charged_units_milli is None else milli_to_units(self.charged_units_milli)

    @property
    def video_urls(self) -> tuple[str, ...]:
        """URLs of the generated videos."""
        return tuple(o.url for o in self.outputs if o.kind == "video")

    @property
    def image_urls(self) -> tuple[str, ...]:
        """URLs of the generated images."""
        return tuple(o.url for o in self.outputs if o.kind == "image")


@dataclass(frozen=True, slots=True)
class ResourcePack:
    """One resource pack from ``GET /account/costs`` (Kling says the remaining quantity lags up to 12 hours).

    Attributes:
        name: e.g. ``"Video Generation - 10,000 entries"``.
        pack_id: Kling's ``resource_pack_id``.
        pack_type: ``decreasing_total`` or ``constant_period``.
        total_quantity: units in the pack, exact.
        remaining_quantity: units left, exact (delayed).
        purchase_time: when bought (aware, UTC).
        effective_time: when usable from.
        invalid_time: when it expires.
        status: ``toBeOnline``, ``online``, ``expired`` or ``runOut``.
        raw: the decoded JSON object.
    """

    name: str
    pack_id: str
    pack_type: str
    total_quantity: Decimal
    remaining_quantity: Decimal
    purchase_time: datetime | None
    effective_time: datetime | None
    invalid_time: datetime | None
    status: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)


def _decode(payload: Mapping[str, Any] | bytes | str, what: str) -> Mapping[str, Any]:
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload, parse_float=Decimal)
        except ValueError:
            raise InvalidInputError(f"{what} is not valid JSON") from None
    if not isinstance(payload, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(f"expected a string id, got {type(value).__name__}")
    return str(value)


def _timestamp(value: Any, what: str) -> datetime | None:
    """Unix milliseconds (or seconds, when too small to be milliseconds) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if type(value) is int and abs(value) < _MAX_TIMESTAMP:
        number = value  # what Kling sends: skips the decimal parse
    else:
        if isinstance(value, bool):
            raise InvalidInputError(f"{what} must be a Unix timestamp, got a boolean")
        exact = parse_decimal(value, what)
        if exact != exact.to_integral_value():
            raise InvalidInputError(f"{what} must be a whole number of milliseconds, got {value!r}")
        number = int(exact)
    if abs(number) < _SECONDS_THRESHOLD:
        return _EPOCH + timedelta(seconds=number)
    return _EPOCH + timedelta(milliseconds=number)


def _amount(value: Any, what: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return parse_decimal(value, what)


def _status(value: Any) -> TaskStatus:
    if not isinstance(value, str):
        raise InvalidInputError(f"task status must be a string, got {type(value).__name__}")
    status = _STATUSES.get(value.strip().lower())
    if status is None:
        # An unknown state is treated as still running: waiting on is safe, releasing a hold would not be.
        logger.warning("unknown Kling task status %r treated as processing", value)
        return TaskStatus.PROCESSING
    return status


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _output(kind: str, item: Any) -> TaskOutput | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
        return None
    index = item.get("index")
    duration = item.get("duration")
    watermark = item.get("watermark_url")
    return TaskOutput(
        kind=kind,
        url=item["url"],
        id=_text(item.get("id")),
        index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        duration=None if duration is None or duration == "" else str(duration),
        watermark_url=watermark if isinstance(watermark, str) and watermark else None,
    )


def _billing(items: Sequence[Any]) -> tuple[Charge, ...]:
    charges = []
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidInputError("billing items must be objects")
        kind = item.get("charge_type")
        amount = _amount(item.get("amount"), "billing amount")
        if amount is None:
            raise InvalidInputError("billing item has no amount")
        if kind is None and amount == 0:
            # Kling's row for a task that failed before generation, or a free (coupon) task: nothing taken.
            charges.append(Charge(ChargeType.UNIT, amount))
            continue
        try:
            charge_type = ChargeType(str(kind))
        except ValueError:
            raise InvalidInputError(f"billing charge_type must be 'unit' or 'cash', got {kind!r}") from None
        charges.append(
            Charge(
                charge_type=charge_type,
                amount=amount,
                package_type=_text(item.get("package_type")),
                cash_type=_text(item.get("cash_type")),
                currency=_text(item.get("currency")),
                list_price=_amount(item.get("list_price"), "billing list_price"),
            )
        )
    return tuple(charges)


def parse_task(payload: Mapping[str, Any] | bytes | str, *, endpoint: str | None = None) -> Task:
    """Parse a task object of either API design, or a raw callback body.

    Args:
        payload: the ``data`` object of a create/query answer, an item of a list answer, or a callback body
            (legacy or new shape) as decoded JSON, bytes or text.
        endpoint: the create path the task belongs to, recorded on the result.

    Returns:
        The parsed :class:`Task`; ``raw`` keeps the decoded object.

    Raises:
        InvalidInputError: the payload is not a task object, has no id or status, or carries an amount that is
            not an exact decimal with at most three places.
    """
    data = _decode(payload, "task payload")
    legacy = "task_id" in data or "task_status" in data
    task_id = _text(data.get("task_id") if legacy else data.get("id"))
    if task_id is None:
        raise InvalidInputError("task payload has no task id ('task_id' or 'id')")
    status = _status(data.get("task_status") if legacy else data.get("status"))

    outputs: list[TaskOutput] = []
    charges: tuple[Charge, ...]
    if legacy:
        info = _mapping(data.get("task_info"))
        external = _text(info.get("external_task_id", data.get("external_task_id")))
        message = data.get("task_status_msg")
        created = _timestamp(data.get("created_at"), "created_at")
        updated = _timestamp(data.get("updated_at"), "updated_at")
        result = _mapping(data.get("task_result"))
        for kind, key in (("video", "videos"), ("image", "images"), ("audio", "audios")):
            outputs.extend(o for o in (_output(kind, i) for i in _sequence(result.get(key))) if o)
    else:
        external = _text(data.get("external_id", data.get("external_task_id")))
        message = data.get("message")
        created = _timestamp(data.get("create_time"), "create_time")
        updated = _timestamp(data.get("update_time"), "update_time")
        for item in _sequence(data.get("outputs")):
            output_type = item.get("type") if isinstance(item, Mapping) else None
            output = _output(output_type if isinstance(output_type, str) else "unknown", item)
            if output:
                outputs.append(output)

    charged: int | None = None
    billing = _sequence(data.get("billing"))
    if billing:
        charges = _billing(billing)
        charged = sum(c.units_milli or 0 for c in charges)
    else:
        units = _amount(data.get("final_unit_deduction"), "final_unit_deduction")
        unit_charges = () if units is None else (Charge(ChargeType.UNIT, units),)
        cash = _mapping(data.get("final_balance_deduction"))
        quota = _amount(cash.get("quota"), "final_balance_deduction.quota")
        cash_charges = (
            ()
            if quota is None
            else (
                Charge(
                    ChargeType.CASH,
                    quota,
                    list_price=_amount(cash.get("list_price"), "final_balance_deduction.list_price"),
                ),
            )
        )
        charges = unit_charges + cash_charges
        if units is not None:
            charged = units_to_milli(units, "final_unit_deduction")
        elif cash_charges:
            charged = 0
    if not status.is_terminal:
        # Kling may send "0" (or a figure) before the task ends; only a terminal task's charge is final.
        charged = None
    elif charged is None and status is TaskStatus.FAILED:
        charged = 0

    return Task(
        task_id=task_id,
        status=status,
        external_task_id=external,
        status_message=message if isinstance(message, str) else "",
        created_at=created,
        updated_at=updated,
        outputs=tuple(outputs),
        charged_units_milli=charged,
        charges=charges,
        endpoint=None if endpoint is None else str(endpoint),
        raw=data,
    )


def parse_resource_pack(payload: Mapping[str, Any]) -> ResourcePack:
    """Parse one item of ``resource_pack_subscribe_infos`` from ``GET /account/costs``.

    Args:
        payload: the decoded item (decode with ``parse_float=Decimal`` to keep quantities exact).

    Returns:
        The parsed :class:`ResourcePack`.

    Raises:
        InvalidInputError: a quantity is missing or not an exact number.
    """
    data = _decode(payload, "resource pack")
    total = _amount(data.get("total_quantity"), "total_quantity")
    remaining = _amount(data.get("remaining_quantity"), "remaining_quantity")
    if total is None or remaining is None:
        raise InvalidInputError("resource pack needs total_quantity and remaining_quantity")
    return ResourcePack(
        name=str(data.get("resource_pack_name") or ""),
        pack_id=str(data.get("resource_pack_id") or ""),
        pack_type=str(data.get("resource_pack_type") or ""),
        total_quantity=total,
        remaining_quantity=remaining,
        purchase_time=_timestamp(data.get("purchase_time"), "purchase_time"),
        effective_time=_timestamp(data.get("effective_time"), "effective_time"),
        invalid_time=_timestamp(data.get("invalid_time"), "invalid_time"),
        status=str(data.get("status") or ""),
        raw=data,
    )
