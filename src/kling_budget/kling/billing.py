"""Kling's per-task billing ledgers (``POST /account/billing/package`` and ``/account/billing/balance``), parsed.

Each row says what one task cost: units taken from a resource pack (``package`` ledger) or money taken from
a cash balance (``balance`` ledger). ``reconcile`` compares them task by task with what the ledger committed.
Amounts are exact decimals; floats are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kling_budget.errors import InvalidInputError
from kling_budget.kling.tasks import ChargeType
from kling_budget.money import parse_decimal

__all__ = ["BillingRecord", "parse_billing_record"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BillingRecord:
    """One deduction of a task, as Kling's billing ledger reports it.

    Attributes:
        task_id: the task charged.
        charge_type: ``unit`` (a resource-pack row) or ``cash`` (a balance row).
        amount: units deducted (unit) or money deducted after discount (cash), exact.
        product_type: ``video``, ``image``, ``try-on`` (unit rows), when given.
        package_id: the pack the units came from (unit rows).
        currency: ``USD`` or ``CNY`` (cash rows).
        list_price: the undiscounted price (cash rows), when given.
        api_key_name: the console API key the task was made with, when given.
        model_name: the model Kling billed.
        deducted_at: when the deduction happened (aware, UTC), when given.
        raw: the decoded row.
    """

    task_id: str
    charge_type: ChargeType
    amount: Decimal
    product_type: str | None = None
    package_id: str | None = None
    currency: str | None = None
    list_price: Decimal | None = None
    api_key_name: str | None = None
    model_name: str | None = None
    deducted_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _amount(value: Any, what: str) -> Decimal | None:
    return None if value is None or value == "" else parse_decimal(value, what)


def parse_billing_record(row: Any) -> BillingRecord:
    """Parse one row of either billing ledger (a unit row has ``package_id``/``unit_before_deduction``, a cash
    row ``currency``/``balance_before_deduction``).

    Raises:
        InvalidInputError: not an object, no task id, or an amount that is not an exact decimal.
    """
    if not isinstance(row, Mapping):
        raise InvalidInputError("a billing record must be a JSON object")
    task_id = _text(row.get("task_id"))
    if task_id is None:
        raise InvalidInputError("a billing record has no task_id")
    amount = _amount(row.get("deduction_amount"), "deduction_amount")
    if amount is None:
        raise InvalidInputError(f"billing record of task {task_id} has no deduction_amount")
    cash = "currency" in row or "balance_before_deduction" in row or "cash_type" in row
    stamp = _amount(row.get("deduction_time"), "deduction_time")
    return BillingRecord(
        task_id=task_id,
        charge_type=ChargeType.CASH if cash else ChargeType.UNIT,
        amount=amount,
        product_type=_text(row.get("product_type")),
        package_id=_text(row.get("package_id")),
        currency=_text(row.get("currency")),
        list_price=_amount(row.get("list_price"), "list_price"),
        api_key_name=_text(row.get("api_key_name")),
        model_name=_text(row.get("model_name")),
        deducted_at=None if stamp is None else _EPOCH + timedelta(milliseconds=int(stamp)),
        raw=row,
    )
