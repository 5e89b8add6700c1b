"""Paying for tasks: resource-pack units or a cash balance, the deduction ledgers, and ``billing[]`` rows.

A create is paid from the packs of its type when their remaining units, less the charges of tasks still
running, cover the charge; otherwise from the account's cash wallet (test money first, then the balance)
when it covers the charge's list price less the account's discount; otherwise it is refused: 1101 on an
account with a cash wallet, 1102 on one without. The charge and a concurrency slot are held until the task
ends; a task that succeeds pays then (packs earliest expiry first), one ledger row per pack or balance it
drew on. Pure: the :class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kling_budget.money import format_units, milli_to_units
from kling_budget.simulator.config import AccountConfig
from kling_budget.simulator.packs import draw
from kling_budget.simulator.protocol import SimError
from kling_budget.types import PackType

if TYPE_CHECKING:
    from kling_budget.simulator.accounts import Account
    from kling_budget.simulator.task_model import Task

__all__ = [
    "CASH",
    "UNIT",
    "Funding",
    "LedgerEntry",
    "Wallet",
    "admit",
    "billing_rows",
    "hold",
    "money_text",
    "new_wallet",
    "pay",
    "release",
]

UNIT, CASH = "unit", "cash"
_SEQUENCE = itertools.count(1)


def money_text(value: Decimal) -> str:
    """An exact decimal as Kling writes amounts: ``"0.84"``, ``"6"``, ``"0"``."""
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True, slots=True)
class Funding:
    """How a task is paid: pack units (``unit``), or cash from one balance (``cash``).

    Cash amounts are in ``currency``: ``list_price`` is the charge at list price, ``amount`` what the balance
    pays after the account's discount.
    """

    charge_type: str = UNIT
    cash_type: str | None = None
    currency: str | None = None
    list_price: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)


@dataclass(slots=True)
class Wallet:
    """An account's cash: balances by ``cash_type`` (in drawing order), amounts held by running tasks."""

    currency: str
    discount: Decimal
    unit_prices: Mapping[PackType, Decimal]
    balances: dict[str, Decimal]
    concurrency: int
    held: dict[str, Decimal] = field(default_factory=dict)

    def price(self, pack_type: PackType, milli: int) -> tuple[Decimal, Decimal]:
        """``(list price, discounted amount)`` of ``milli`` units of ``pack_type``, exact."""
        listed = milli_to_units(milli) * self.unit_prices[pack_type]
        return listed, listed * (1 - self.discount)

    def covering(self, amount: Decimal) -> str | None:
        """The first balance whose unheld cash covers ``amount``, or ``None``."""
        for cash_type, balance in self.balances.items():
            if balance - self.held.get(cash_type, Decimal(0)) >= amount:
                return cash_type
        return None


def new_wallet(config: AccountConfig, usd_prices: Mapping[PackType, Decimal]) -> Wallet | None:
    """The cash wallet an account's configuration gives it (``None`` without a balance)."""
    balances = config.cash_balances()
    if not balances:
        return None
    return Wallet(
        currency=config.currency,
        discount=Decimal(config.discount),
        unit_prices={kind: config.unit_price(kind, usd_prices) for kind in PackType},
        balances=balances,
        concurrency=config.cash_concurrency,
    )


_AMOUNTS = frozenset(
    {
        "unit_before_deduction",
        "deduction_amount",
        "unit_after_deduction",
        "balance_before_deduction",
        "balance_after_deduction",
        "list_price",
    }
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of a deduction ledger, with the values its filters match on.

    ``row`` keeps amounts as recorded (milli-units as ``int``, cash as ``Decimal``); :meth:`render` writes
    them as Kling does, only for the rows a page shows.
    """

    time: int
    seq: int
    row: Mapping[str, Any]
    keys: Mapping[str, str]

    def render(self) -> dict[str, Any]:
        """The row as the ledger route answers it (amounts as decimal strings)."""
        return {key: _amount_text(value) if key in _AMOUNTS else value for key, value in self.row.items()}


def _amount_text(value: int | Decimal) -> str:
    return format_units(value) if isinstance(value, int) else money_text(value)


def admit(acct: Account, pack_type: PackType, charge: int, slots: int, now: int) -> Funding:
    """Decide how a new task of ``pack_type`` charging ``charge`` milli-units and holding ``slots`` is paid.

    Raises:
        SimError: 1102 (no cash wallet) or 1101 (with one) when neither the online packs, less the charges
            held, nor a balance cover the charge; 1303 when the pack type's concurrency quota (the largest of
            its online packs and of the wallet) has no ``slots`` left.
    """
    online = [p for p in acct.packs if p.pack_type is pack_type and p.online(now)]
    available = sum(p.remaining_milli for p in online) - acct.held_milli.get(pack_type, 0)
    wallet = acct.wallet
    if online and available >= charge:
        funding = Funding()
    elif wallet is not None:
        listed, amount = wallet.price(pack_type, charge)
        cash_type = wallet.covering(amount)
        if cash_type is None:
            raise SimError(
                1101,
                f"the {pack_type} packs and the {wallet.currency} balance cannot cover the task "
                f"({format_units(charge)} units, {money_text(amount)} {wallet.currency})",
            )
        funding = Funding(CASH, cash_type, wallet.currency, listed, amount)
    else:
        raise SimError(
            1102,
            f"{pack_type} packs have {format_units(max(available, 0))} units available, "
            f"the task needs {format_units(charge)}",
        )
    quotas = [p.config.concurrency for p in online] + ([wallet.concurrency] if wallet is not None else [])
    if acct.active_slots.get(pack_type, 0) + slots > max(quotas):
        raise SimError(1303)
    return funding


def hold(acct: Account, task: Task) -> None:
    """Hold a new task's concurrency slots and what it will pay, until it ends."""
    acct.active_slots[task.pack_type] = acct.active_slots.get(task.pack_type, 0) + task.slots
    funding = task.funding
    if funding.charge_type == UNIT:
        acct.held_milli[task.pack_type] = acct.held_milli.get(task.pack_type, 0) + task.charge_milli
    elif acct.wallet is not None and funding.cash_type is not None:
        held = acct.wallet.held
        held[funding.cash_type] = held.get(funding.cash_type, Decimal(0)) + funding.amount


def release(acct: Account, task: Task) -> None:
    """Give back what :func:`hold` took, when the task ends."""
    acct.active_slots[task.pack_type] -= task.slots
    funding = task.funding
    if funding.charge_type == UNIT:
        acct.held_milli[task.pack_type] -= task.charge_milli
    elif acct.wallet is not None and funding.cash_type is not None:
        acct.wallet.held[funding.cash_type] -= funding.amount


def pay(acct: Account, task: Task, due: int, *, record_lag: bool) -> int:
    """Take a successful task's charge and write its ledger rows; return milli-units no pack could cover.

    A coupon task pays nothing and writes no row.
    """
    if task.coupon:
        return 0
    funding = task.funding
    columns = _task_columns(task)
    if funding.charge_type == UNIT:
        drawn, left = draw(acct, task.pack_type, task.charge_milli, due, record=record_lag)
        for pack, before, taken in drawn:
            row = {
                "package_id": pack.pack_id,
                "product_type": str(task.pack_type),
                **columns,
                "deduction_time": due,
                "unit_before_deduction": before,
                "deduction_amount": taken,
                "unit_after_deduction": before - taken,
            }
            keys = {
                "api_key_name": task.api_key_name,
                "product_type": str(task.pack_type),
                "package_name": pack.name,
                "package_id": pack.pack_id,
            }
            acct.package_ledger.append(LedgerEntry(due, next(_SEQUENCE), row, keys))
        task.charged_milli = task.charge_milli
        return left
    wallet = acct.wallet
    assert wallet is not None and funding.cash_type is not None
    before_cash = wallet.balances[funding.cash_type]
    wallet.balances[funding.cash_type] = before_cash - funding.amount
    row = {
        **columns,
        "deduction_time": due,
        "cash_type": funding.cash_type,
        "balance_before_deduction": before_cash,
        "deduction_amount": funding.amount,
        "balance_after_deduction": before_cash - funding.amount,
        "list_price": funding.list_price,
        "currency": wallet.currency,
    }
    acct.balance_ledger.append(LedgerEntry(due, next(_SEQUENCE), row, {"api_key_name": task.api_key_name}))
    task.cash_charged = funding.amount
    return 0


def _task_columns(task: Task) -> dict[str, Any]:
    facts = task.facts
    return {
        "task_id": task.task_id,
        "api_key_name": task.api_key_name,
        "product_function": task.function,
        "model_name": task.model,
        "resolution": facts.resolution,
        "duration": facts.duration,
        "refer_video_input": facts.refer_video_input,
        "video_sound": facts.video_sound,
        "voice_control": facts.voice_control,
    }


def billing_rows(task: Task) -> list[dict[str, str]] | None:
    """The task's ``billing[]``: ``None`` (absent) while it runs, its deduction once it ended.

    A failure before generation is ``[{"amount": "0"}]``, any other failure ``[]``; a coupon task's row has
    amount ``"0"`` (a cash row keeps the list price).
    """
    if not task.ended:
        return None
    if task.fail_message is not None:
        return [{"amount": "0"}] if task.fail_early else []
    funding = task.funding
    if funding.charge_type == UNIT:
        return [{"charge_type": UNIT, "amount": format_units(task.charged_milli), "package_type": str(task.pack_type)}]
    return [
        {
            "charge_type": CASH,
            "cash_type": funding.cash_type or "balance",
            "amount": money_text(task.cash_charged),
            "currency": funding.currency or "USD",
            "list_price": money_text(funding.list_price),
        }
    ]
