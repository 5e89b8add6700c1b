"""``kling-budget serve``: a drop-in Kling API gateway with virtual keys, enforced budgets and settlement.

Needs the ``server`` extra (Starlette, uvicorn). See ``docs/gateway.md``.
"""

from kling_budget.server.app import create_app
from kling_budget.server.keys import IssuedKey, KeyStore, VirtualKey
from kling_budget.server.proxy import DENIAL_CODE
from kling_budget.server.state import GatewayConfig, GatewayState, Secret

__all__ = [
    "DENIAL_CODE",
    "GatewayConfig",
    "GatewayState",
    "IssuedKey",
    "KeyStore",
    "Secret",
    "VirtualKey",
    "create_app",
]
