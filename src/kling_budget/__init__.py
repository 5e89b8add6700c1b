"""kling-budget: exact pricing, a crash-safe spend ledger and enforced budgets for the Kling AI API."""

from kling_budget.errors import (
    BudgetExceededError,
    KlingBudgetError,
)

__all__ = [
    "BudgetExceededError",
    "KlingBudgetError",
]
