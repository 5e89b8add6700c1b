"""The Kling API protocol: httpx clients, parsed tasks, error codes, retries, JWT and webhook signatures.

Nothing here knows about budgets or the ledger: the budget-enforced clients, settlement and callbacks are in
:mod:`kling_budget.enforced`, one layer up.

Importing this package imports httpx; ``import kling_budget`` alone does not.
"""

from kling_budget.kling._core import REGIONS, Endpoint
from kling_budget.kling._flow import ProgressCallback
from kling_budget.kling.auth import APIKeyAuth, JWTAuth
from kling_budget.kling.client import DEFAULT_TIMEOUT, AsyncKlingClient, KlingClient
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
    "AsyncKlingClient",
    "Charge",
    "ChargeType",
    "Endpoint",
    "JWTAuth",
    "KlingClient",
    "ProgressCallback",
    "ResourcePack",
    "Task",
    "TaskOutput",
    "TaskStatus",
    "parse_resource_pack",
    "parse_task",
]
