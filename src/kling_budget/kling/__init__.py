"""The Kling API: httpx clients, budget-enforced clients, callbacks, parsed tasks, JWT and webhook signatures.

Importing this package imports httpx; ``import kling_budget`` alone does not.
"""

from kling_budget.kling._base import DEFAULT_TIMEOUT, REGIONS, Endpoint, ProgressCallback
from kling_budget.kling.auth import APIKeyAuth, JWTAuth
from kling_budget.kling.callbacks import AsyncCallbackHandler, CallbackHandler, CallbackResult
from kling_budget.kling.client import AsyncKlingClient, KlingClient
from kling_budget.kling.enforced import AsyncBudgetEnforcedClient, AsyncJob, BudgetEnforcedClient, Job
from kling_budget.kling.tasks import (
    Charge,
    ChargeType,
    ResourcePack,
    Task,
    TaskOutput,
    TaskStatus,
    parse_resource_pack,
    parse_task,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "REGIONS",
    "APIKeyAuth",
    "AsyncBudgetEnforcedClient",
    "AsyncCallbackHandler",
    "AsyncJob",
    "AsyncKlingClient",
    "BudgetEnforcedClient",
    "CallbackHandler",
    "CallbackResult",
    "Charge",
    "ChargeType",
    "Endpoint",
    "JWTAuth",
    "Job",
    "KlingClient",
    "ProgressCallback",
    "ResourcePack",
    "Task",
    "TaskOutput",
    "TaskStatus",
    "parse_resource_pack",
    "parse_task",
]
