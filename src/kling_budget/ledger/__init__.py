"""The spend ledger and its storage backends; :func:`open_ledger` picks a backend from a URL."""

from kling_budget.ledger.backend import Backend, Connection
from kling_budget.ledger.core import LIST_PRICE_NANO_PER_UNIT, Ledger
from kling_budget.ledger.records import Pack, ReservationInfo, ReservationState, UsageRow, VerifyReport
from kling_budget.ledger.urls import open_backend, open_ledger

__all__ = [
    "LIST_PRICE_NANO_PER_UNIT",
    "Backend",
    "Connection",
    "Ledger",
    "Pack",
    "ReservationInfo",
    "ReservationState",
    "UsageRow",
    "VerifyReport",
    "open_backend",
    "open_ledger",
]
