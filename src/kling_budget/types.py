"""Frozen value types shared by pricing, budgets, the ledger and the front-ends. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from kling_budget.money import (
    format_units,
    format_usd,
    milli_to_units,
    nano_to_usd,
    units_text,
    units_to_milli,
    usd_text,
    usd_to_nano,
)

__all__ = [
    "AlertEvent",
    "AlertKind",
    "Attribution",
    "Denial",
    "PackType",
    "Quote",
    "QuoteLine",
]


class PackType(StrEnum):
    """The kind of prepaid resource pack a job's units are drawn from."""

    VIDEO = "video"
    IMAGE = "image"
    TRY_ON = "try_on"


@dataclass(frozen=True, slots=True)
class QuoteLine:
    """One line of a quote's breakdown, e.g. ``("0.3 U/s x 5 s", 1500)``."""

    label: str
    units_milli: int


@dataclass(frozen=True, slots=True)
class Quote:
    """The exact price of one Kling request, before it is sent.

    Attributes:
        product: what is generated (``"video"``, ``"image"``, ``"lip-sync"`` ...).
        model: the canonical model name (aliases already resolved).
        pack_type: which resource pack the units are drawn from.
        units_milli: the exact price in milli-units (1.5 units = 1500).
        list_usd_nano: the price at the list USD rate of the pack type, in nano-dollars.
        breakdown: how the units were computed.
        params: the normalised request (mode, duration, resolution, sound, n ...), JSON-serialisable.
        price_version: version of the price table that produced this quote.
        source: where the price comes from (documentation page), and ``effective`` its date.
        price_overlay: the price overlay that priced the request (``"<version> (<file>)"``), ``""`` when the
            table itself did.
    """

    product: str
    model: str
    pack_type: PackType
    units_milli: int
    list_usd_nano: int
    breakdown: tuple[QuoteLine, ...]
    params: Mapping[str, str | int | bool]
    price_version: str
    source: str = ""
    effective: str = ""
    price_overlay: str = ""

    @property
    def units(self) -> Decimal:
        """Exact price in units (``Decimal("1.5")``)."""
        return milli_to_units(self.units_milli)

    @property
    def usd(self) -> Decimal:
        """Exact price in dollars at the list rate of the pack type."""
        return nano_to_usd(self.list_usd_nano)

    def describe(self) -> str:
        """One line for people: ``kling-v2-6 video: 5 units ($0.70)``."""
        noun = "unit" if self.units_milli == 1000 else "units"
        return (
            f"{self.model} {self.product}: {format_units(self.units_milli)} {noun} ({format_usd(self.list_usd_nano)})"
        )


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who and what a job is charged to; budgets match on these fields.

    Empty strings mean "not given". ``tags`` are kept sorted and unique.
    """

    project: str = ""
    user: str = ""
    api_key: str = ""
    model: str = ""
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(sorted({t for t in self.tags if t})))


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a hard budget refused a reservation: everything a caller needs to back off correctly."""

    budget: str
    scope: str
    period: str
    window_start: datetime
    window_end: datetime | None
    limit_kind: str  # "units" or "usd"
    limit: int  # milli-units or nano-dollars, per limit_kind
    committed: int
    held: int
    price: int
    reset_at: datetime | None

    def _fmt(self, amount: int) -> str:
        return format_units(amount) + " units" if self.limit_kind == "units" else format_usd(amount)

    def message(self) -> str:
        """One human line naming budget, window, limit, committed, held, price and reset time."""
        reset = self.reset_at.isoformat() if self.reset_at else "never (total budget)"
        return (
            f"budget '{self.budget}' ({self.scope}, {self.period} window from "
            f"{self.window_start.isoformat()}) would be exceeded: limit {self._fmt(self.limit)}, "
            f"committed {self._fmt(self.committed)}, held {self._fmt(self.held)}, "
            f"price {self._fmt(self.price)}; resets {reset}"
        )

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form; amounts as exact decimal strings."""

        def amount(value: int) -> str:
            return units_text(value) if self.limit_kind == "units" else usd_text(value)

        return {
            "budget": self.budget,
            "scope": self.scope,
            "period": self.period,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "limit_kind": self.limit_kind,
            "limit": amount(self.limit),
            "committed": amount(self.committed),
            "held": amount(self.held),
            "price": amount(self.price),
            "reset_at": self.reset_at.isoformat() if self.reset_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Denial:
        """The denial :meth:`to_dict` describes (e.g. from a gateway's 1190 answer).

        Raises:
            ValueError: a field is missing or malformed.
        """
        kind = str(data["limit_kind"])
        if kind not in ("units", "usd"):
            raise ValueError(f"limit_kind must be units or usd, got {kind!r}")
        parse = units_to_milli if kind == "units" else usd_to_nano

        def amount(key: str) -> int:
            return parse(str(data[key]), key)

        def when(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(str(value))

        start = when("window_start")
        if start is None:
            raise ValueError("window_start is required")
        return cls(
            budget=str(data["budget"]),
            scope=str(data["scope"]),
            period=str(data["period"]),
            window_start=start,
            window_end=when("window_end"),
            limit_kind=kind,
            limit=amount("limit"),
            committed=amount("committed"),
            held=amount("held"),
            price=amount("price"),
            reset_at=when("reset_at"),
        )


class AlertKind(StrEnum):
    """What an alert is about."""

    THRESHOLD = "threshold"
    EXHAUSTED = "exhausted"
    DENIED = "denied"
    OVERAGE = "overage"
    OVER_BUDGET_RECORD = "over_budget_record"
    FORECAST = "forecast"
    PACK_LOW = "pack_low"
    PACK_EXPIRING = "pack_expiring"
    UPSTREAM_PACK_EXHAUSTED = "upstream_pack_exhausted"
    RECONCILE_DRIFT = "reconcile_drift"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert, stored durably in the ledger's outbox before any sink sees it.

    ``dedupe_key`` makes it fire exactly once: e.g. ``threshold:<budget id>:<window start>:80``.
    Amount fields are exact decimal strings in the unit named by ``limit_kind`` ("units" or "usd").
    """

    kind: AlertKind
    message: str
    dedupe_key: str
    budget: str = ""
    scope: str = ""
    period: str = ""
    window_start: str = ""
    window_end: str = ""
    limit_kind: str = ""
    limit: str = ""
    used: str = ""
    held: str = ""
    percent: str = ""
    threshold: int | None = None
    reservation_id: str = ""
    created_at: str = ""
    id: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "message": self.message,
            "budget": self.budget,
            "scope": self.scope,
            "period": self.period,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "limit_kind": self.limit_kind,
            "limit": self.limit,
            "used": self.used,
            "held": self.held,
            "percent": self.percent,
            "threshold": self.threshold,
            "reservation_id": self.reservation_id,
            "created_at": self.created_at,
            "dedupe_key": self.dedupe_key,
        }
