"""Resource packs: their state, drawing a charge from them, and ``/account/costs``.

A task that succeeds draws its charge from the online packs of its type, earliest expiry first (admission
and holds are in :mod:`.funding`). Pure: the :class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kling_budget.money import milli_to_units
from kling_budget.simulator.config import PackConfig
from kling_budget.types import PackType

if TYPE_CHECKING:
    from kling_budget.simulator.accounts import Account

__all__ = ["Pack", "PackView", "cost_infos", "draw", "new_pack", "pack_view"]

_DAY_MS = 86_400_000


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


def draw(
    acct: Account, pack_type: PackType, amount: int, due: int, *, record: bool
) -> tuple[list[tuple[Pack, int, int]], int]:
    """Take ``amount`` from the packs online at ``due``, earliest expiry first.

    Returns ``(drawn, left)``: each pack drawn on with its remaining milli-units before and the milli-units
    taken, and what no pack could cover. With ``record``, each deduction is remembered for the
    ``/account/costs`` reporting lag.
    """
    drawn: list[tuple[Pack, int, int]] = []
    left = amount
    packs = sorted(
        (p for p in acct.packs if p.pack_type is pack_type and p.online(due)),
        key=lambda p: (p.invalid_ms, p.effective_ms),
    )
    for pack in packs:
        take = min(left, pack.remaining_milli)
        if take:
            drawn.append((pack, pack.remaining_milli, take))
            pack.remaining_milli -= take
            if record:
                pack.deductions.append((due, take))
            left -= take
    return drawn, left


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
