"""kling-budget: exact pricing, a crash-safe spend ledger and enforced budgets for the Kling AI API.

Importing this package is cheap: the Kling client (httpx), PostgreSQL (psycopg) and the web server are
only imported when used.
"""

from typing import TYPE_CHECKING, Any

from kling_budget.budgets import Budget, BudgetStatus, Scope
from kling_budget.errors import (
    BudgetExceededError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    KlingAPIError,
    KlingBudgetError,
    LedgerError,
    LedgerUnavailableError,
    PricingError,
    ReservationNotFoundError,
    ReservationResolvedError,
    UnknownModelError,
    UnsupportedOptionError,
)
from kling_budget.pricing import PriceTable
from kling_budget.tracker import BudgetPeriod, CostTracker, Reservation, UsageRecord
from kling_budget.types import AlertEvent, Attribution, Denial, PackType, Quote

if TYPE_CHECKING:
    from kling_budget.enforced import AsyncBudgetEnforcedClient, BudgetEnforcedClient

__all__ = [
    "AlertEvent",
    "AsyncBudgetEnforcedClient",
    "Attribution",
    "Budget",
    "BudgetEnforcedClient",
    "BudgetExceededError",
    "BudgetPeriod",
    "BudgetStatus",
    "ConfigurationError",
    "CostTracker",
    "Denial",
    "IdempotencyConflictError",
    "InvalidInputError",
    "KlingAPIError",
    "KlingBudgetError",
    "LedgerError",
    "LedgerUnavailableError",
    "PackType",
    "PriceTable",
    "PricingError",
    "Quote",
    "Reservation",
    "ReservationNotFoundError",
    "ReservationResolvedError",
    "Scope",
    "UnknownModelError",
    "UnsupportedOptionError",
    "UsageRecord",
]


def __getattr__(name: str) -> Any:
    if name == "BudgetEnforcedClient":  # lazy: it pulls in httpx
        from kling_budget.enforced import BudgetEnforcedClient

        return BudgetEnforcedClient
    if name == "AsyncBudgetEnforcedClient":
        from kling_budget.enforced import AsyncBudgetEnforcedClient

        return AsyncBudgetEnforcedClient
    if name == "__version__":
        from importlib.metadata import version

        return version("kling-budget")
    raise AttributeError(f"module 'kling_budget' has no attribute {name!r}")
