"""Resource packs: pricing a request, admitting a task (1102, 1303), charging packs, ``/account/costs``.

A create needs an online pack of its type whose remaining units, minus the charges of tasks still running,
cover the charge (else 1102), and a free concurrency slot (else 1303); the charge and the slots are held
until the task ends. A task that succeeds draws its charge from the packs, earliest expiry first. Pure: the
:class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kling_budget.errors import InvalidInputError, UnknownModelError
from kling_budget.money import format_units, milli_to_units, units_to_milli
from kling_budget.simulator.config import PackConfig
from kling_budget.simulator.endpoints import Endpoint
from kling_budget.simulator.protocol import SimError
from kling_budget.types import PackType, Quote

if TYPE_CHECKING:
    from kling_budget.simulator.accounts import Account

__all__ = [
    "Pack",
    "PackView",
    "Pricer",
    "admit",
    "cost_infos",
    "default_pricer",
    "draw",
    "hold",
    "new_pack",
    "pack_view",
    "price_request",
    "release",
]

log = logging.getLogger("kling_budget.simulator")

#: Prices one create request: ``(path, body) -> Quote``.
Pricer = Callable[[str, Mapping[str, Any]], Quote]

_DAY_MS = 86_400_000


def default_pricer() -> Pricer:
    """Price requests with :mod:`kling_budget.pricing` and its default price table."""
    from kling_budget.pricing import PriceTable, quote_kling_request

    table = PriceTable.default()

    def price(path: str, body: Mapping[str, Any]) -> Quote:
        return quote_kling_request(table, path, body)

    return price


@dataclass(frozen=True, slots=True)
class PackView:
    """A read-only snapshot of one resource pack, as of now (no reporting lag)."""

    account: str
    pack_id: str
    name: str
    pack_type: PackType
    total: Decimal
    remaining: Decimal
    concurrency: int
    status: str


@dataclass(slots=True)
class Pack:
    """One resource pack's mutable state (milli-units, Unix ms); ``deductions`` feed the reporting lag."""

    config: PackConfig
    pack_id: str
    name: str
    remaining_milli: int
    purchase_ms: int
    effective_ms: int
    invalid_ms: int
    deductions: deque[tuple[int, int]] = field(default_factory=deque)

    @property
    def pack_type(self) -> PackType:
        return self.config.pack_type

    def online(self, now: int) -> bool:
        return self.effective_ms <= now < self.invalid_ms and self.remaining_milli > 0

    def remaining_as_of(self, when: int) -> int:
        # Deductions are in time order and ``when`` only moves forward, so older ones can go.
        while self.deductions and self.deductions[0][0] <= when:
            self.deductions.popleft()
        return self.remaining_milli + sum(amount for _, amount in self.deductions)

    def status(self, now: int, remaining: int) -> str:
        if now < self.effective_ms:
            return "toBeOnline"
        if now >= self.invalid_ms:
            return "expired"
        return "runOut" if remaining <= 0 else "online"


def new_pack(pack: PackConfig, start: int, id_rng: random.Random) -> Pack:
    """A pack from its configuration; unset times default to bought and valid from a day before ``start``."""
    return Pack(
        config=pack,
        pack_id=uuid.UUID(int=id_rng.getrandbits(128), version=4).hex,
        name=pack.display_name(),
        remaining_milli=pack.remaining_milli,
        purchase_ms=pack.purchase_time_ms if pack.purchase_time_ms is not None else start - _DAY_MS,
        effective_ms=pack.effective_time_ms if pack.effective_time_ms is not None else start - _DAY_MS,
        invalid_ms=pack.invalid_time_ms if pack.invalid_time_ms is not None else start + 90 * _DAY_MS,
    )


def pack_view(account: str, pack: Pack, now: int) -> PackView:
    """A read-only snapshot of ``pack`` of ``account``."""
    return PackView(
        account=account,
        pack_id=pack.pack_id,
        name=pack.name,
        pack_type=pack.pack_type,
        total=milli_to_units(pack.config.total_milli),
        remaining=milli_to_units(pack.remaining_milli),
        concurrency=pack.config.concurrency,
        status=pack.status(now, pack.remaining_milli),
    )


def price_request(
    pricer: Pricer,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    unpriced_units: Decimal | int | str | None,
    warned: set[tuple[str, str]],
) -> tuple[int, bool]:
    """The quote of a create in milli-units, and whether the pricer priced it (else ``unpriced_units``).

    ``warned`` remembers the ``(path, model)`` pairs already logged as unpriced.

    Raises:
        SimError: 1203 (unknown model) or 1201 when the pricer refuses and ``unpriced_units`` is ``None``.
    """
    try:
        quote = pricer(endpoint.path, body)
    except InvalidInputError as exc:
        fallback = unpriced_units
        if fallback is None:
            raise SimError(1203 if isinstance(exc, UnknownModelError) else 1201, str(exc)) from None
        key = (endpoint.path, str(body.get("model_name", "")))
        if key not in warned:
            warned.add(key)
            log.warning("no price for %s %s (%s); charging %s units", key[0], key[1] or "-", exc, fallback)
        return units_to_milli(fallback, "unpriced_units"), False
    if quote.pack_type is not endpoint.pack_type:
        log.warning(
            "pricing bills %s from the %s pack; Kling uses %s",
            endpoint.path,
            quote.pack_type,
            endpoint.pack_type,
        )
    return quote.units_milli, True


def admit(acct: Account, pack_type: PackType, charge: int, slots: int, now: int) -> None:
    """Check that the account can start a task of ``pack_type`` charging ``charge`` and holding ``slots``.

    Raises:
        SimError: 1102 when the online packs, less the charges held, cannot cover ``charge``; 1303 when the
            pack type's concurrency quota (the largest of its online packs) has no ``slots`` left.
    """
    online = [p for p in acct.packs if p.pack_type is pack_type and p.online(now)]
    available = sum(p.remaining_milli for p in online) - acct.held_milli.get(pack_type, 0)
    if not online or available < charge:
        raise SimError(
            1102,
            f"{pack_type} packs have {format_units(max(available, 0))} units available, "
            f"the task needs {format_units(charge)}",
        )
    quota = max(p.config.concurrency for p in online)
    if acct.active_slots.get(pack_type, 0) + slots > quota:
        raise SimError(1303)


def hold(acct: Account, pack_type: PackType, charge: int, slots: int) -> None:
    """Hold a new task's concurrency slots and planned charge until it ends."""
    acct.active_slots[pack_type] = acct.active_slots.get(pack_type, 0) + slots
    acct.held_milli[pack_type] = acct.held_milli.get(pack_type, 0) + charge


def release(acct: Account, pack_type: PackType, charge: int, slots: int) -> None:
    """Give back what :func:`hold` took, when the task ends."""
    acct.active_slots[pack_type] -= slots
    acct.held_milli[pack_type] -= charge


def draw(acct: Account, pack_type: PackType, amount: int, due: int, *, record: bool) -> int:
    """Take ``amount`` from the packs online at ``due``, earliest expiry first; return what none could cover.

    With ``record``, each deduction is remembered for the ``/account/costs`` reporting lag.
    """
    left = amount
    packs = sorted(
        (p for p in acct.packs if p.pack_type is pack_type and p.online(due)),
        key=lambda p: (p.invalid_ms, p.effective_ms),
    )
    for pack in packs:
        take = min(left, pack.remaining_milli)
        if take:
            pack.remaining_milli -= take
            if record:
                pack.deductions.append((due, take))
            left -= take
    return left


def cost_infos(
    packs: list[Pack], start: int, end: int, pack_name: str | None, now: int, as_of: int
) -> list[dict[str, Any]]:
    """``resource_pack_subscribe_infos``: the packs valid within ``[start, end]``, remaining as of ``as_of``."""
    infos = []
    for pack in packs:
        if pack_name and pack.name != pack_name:
            continue
        if pack.effective_ms > end or pack.invalid_ms < start:
            continue
        remaining = pack.remaining_as_of(as_of)
        infos.append(
            {
                "resource_pack_name": pack.name,
                "resource_pack_id": pack.pack_id,
                "resource_pack_type": pack.config.resource_pack_type,
                "total_quantity": milli_to_units(pack.config.total_milli),
                "remaining_quantity": milli_to_units(remaining),
                "purchase_time": pack.purchase_ms,
                "effective_time": pack.effective_ms,
                "invalid_time": pack.invalid_ms,
                "status": pack.status(now, remaining),
            }
        )
    return infos
