"""A faithful Kling API simulator over real HTTP, for tests, demos and development without credentials.

It implements Kling as documented (legacy ``/v1`` task endpoints, JWT and API-key auth, business codes and
HTTP statuses, resource packs, concurrency quotas, ``/account/costs``, signed callbacks), not as any client
expects, and adds deterministic outcome control and fault injection. Start one with
:func:`running_simulator` (tests) or :func:`run_simulator` / ``kling-budget simulate`` (foreground).
"""

from kling_budget.kling.simulator.app import create_app
from kling_budget.kling.simulator.clock import Clock, ManualClock, SystemClock
from kling_budget.kling.simulator.config import AccountConfig, PackConfig, SimulatorConfig
from kling_budget.kling.simulator.endpoints import ENDPOINTS
from kling_budget.kling.simulator.faults import FaultKind, FaultRule, Faults
from kling_budget.kling.simulator.protocol import SimError
from kling_budget.kling.simulator.runner import RunningSimulator, run_simulator, running_simulator
from kling_budget.kling.simulator.state import (
    CallbackControl,
    Delivery,
    PackView,
    Script,
    Simulator,
    TaskView,
)

__all__ = [
    "ENDPOINTS",
    "AccountConfig",
    "CallbackControl",
    "Clock",
    "Delivery",
    "FaultKind",
    "FaultRule",
    "Faults",
    "ManualClock",
    "PackConfig",
    "PackView",
    "RunningSimulator",
    "Script",
    "SimError",
    "Simulator",
    "SimulatorConfig",
    "SystemClock",
    "TaskView",
    "create_app",
    "run_simulator",
    "running_simulator",
]
