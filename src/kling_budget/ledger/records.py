"""What the ledger returns: reservations, packs, usage rows and verification reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kling_budget.money import milli_to_units, nano_to_usd, units_text, usd_text
from kling_budget.types import AlertEvent, Attribution, PackType

__all__ = ["Pack", "ReservationInfo", "ReservationState", "UsageRow", "VerifyReport"]


class ReservationState(StrEnum):
    """Lifecycle of a reservation: ``held`` → ``submitted`` → ``committed`` | ``released``; or ``denied``.

    ``held``: reserved, not yet sent to Kling; may be released by its TTL.
    ``submitted``: may have reached Kling; only Kling's answer (commit or release) resolves it.
    """

    HELD = "held"
    SUBMITTED = "submitted"
    COMMITTED = "committed"
    RELEASED = "released"
    DENIED = "denied"

    @property
    def is_open(self) -> bool:
        """Whether the reservation still holds budget."""
        return self in (ReservationState.HELD, ReservationState.SUBMITTED)


@dataclass(frozen=True, slots=True)
class ReservationInfo:
    """One reservation (or recorded usage) as stored in the ledger."""

    id: str
    kind: str  # "reserve" or "record"
    state: ReservationState
    attribution: Attribution
    product: str
    pack_type: PackType
    units_milli: int
    usd_nano: int
    actual_milli: int | None
    actual_nano: int | None
    overage_milli: int
    overage_nano: int
    over_budget: bool
    reserved_at: datetime
    resolved_at: datetime | None
    expires_at: datetime | None
    task_id: str | None
    detail: dict[str, Any]
    replayed: bool = False
    alerts: tuple[AlertEvent, ...] = field(default=(), compare=False)
    request_hash: str = field(default="", repr=False, compare=False)

    def settled(
        self,
        *,
        actual_milli: int,
        actual_nano: int,
        overage_milli: int,
        overage_nano: int,
        resolved_at: datetime,
        alerts: tuple[AlertEvent, ...],
    ) -> ReservationInfo:
        """This reservation as committed with the given charge (what ``commit`` stores)."""
        return ReservationInfo(
            self.id,
            self.kind,
            ReservationState.COMMITTED,
            self.attribution,
            self.product,
            self.pack_type,
            self.units_milli,
            self.usd_nano,
            actual_milli,
            actual_nano,
            overage_milli,
            overage_nano,
            self.over_budget,
            self.reserved_at,
            resolved_at,
            self.expires_at,
            self.task_id,
            self.detail,
            False,
            alerts,
            self.request_hash,
        )

    @property
    def units(self) -> Decimal:
        """Held units (the price reserved)."""
        return milli_to_units(self.units_milli)

    @property
    def usd(self) -> Decimal:
        """Held dollars."""
        return nano_to_usd(self.usd_nano)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; amounts as exact decimal strings."""
        a = self.attribution
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "project": a.project,
            "user": a.user,
            "api_key": a.api_key,
            "model": a.model,
            "tags": list(a.tags),
            "product": self.product,
            "pack_type": self.pack_type.value,
            "units": units_text(self.units_milli),
            "usd": usd_text(self.usd_nano),
            "actual_units": None if self.actual_milli is None else units_text(self.actual_milli),
            "actual_usd": None if self.actual_nano is None else usd_text(self.actual_nano),
            "overage_units": units_text(self.overage_milli),
            "overage_usd": usd_text(self.overage_nano),
            "over_budget": self.over_budget,
            "reserved_at": self.reserved_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "task_id": self.task_id,
            "detail": json.loads(json.dumps(self.detail, default=str)),
            "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class Pack:
    """A purchased Kling resource pack: units bought, price paid, validity, and what was drawn from it."""

    name: str
    pack_type: PackType
    units_milli: int
    price_nano: int
    starts_at: datetime
    expires_at: datetime | None
    held_milli: int = 0
    committed_milli: int = 0
    id: int | None = None

    @property
    def remaining_milli(self) -> int:
        """Units not yet committed or held."""
        return max(0, self.units_milli - self.held_milli - self.committed_milli)

    @property
    def usd_per_unit(self) -> Decimal:
        """Price paid per unit (exact division, for display)."""
        return (Decimal(self.price_nano) / Decimal(self.units_milli) * 1000 / 10**9).normalize()

    def active_at(self, now: datetime) -> bool:
        """Whether jobs at ``now`` can draw from this pack."""
        return self.starts_at <= now and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "pack_type": self.pack_type.value,
            "units": units_text(self.units_milli),
            "price_usd": usd_text(self.price_nano),
            "usd_per_unit": str(self.usd_per_unit),
            "starts_at": self.starts_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "held_units": units_text(self.held_milli),
            "committed_units": units_text(self.committed_milli),
            "remaining_units": units_text(self.remaining_milli),
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Spend of one group (e.g. one project × model × day)."""

    group: dict[str, str]
    committed_milli: int
    held_milli: int
    committed_nano: int
    held_nano: int
    jobs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.group,
            "committed_units": units_text(self.committed_milli),
            "held_units": units_text(self.held_milli),
            "committed_usd": usd_text(self.committed_nano),
            "held_usd": usd_text(self.held_nano),
            "jobs": self.jobs,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of re-deriving every counter from the append-only entries."""

    checked_reservations: int
    checked_entries: int
    checked_windows: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every counter matched."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "checked_reservations": self.checked_reservations,
            "checked_entries": self.checked_entries,
            "checked_windows": self.checked_windows,
            "problems": list(self.problems),
        }
