"""A faithful Kling API simulator over real HTTP, for tests, demos and development without credentials.

It implements Kling as documented (legacy ``/v1`` task endpoints, JWT and API-key auth, business codes and
HTTP statuses, resource packs, concurrency quotas, ``/account/costs``, signed callbacks), not as any client
expects, and adds deterministic outcome control and fault injection. Start one with
:func:`running_simulator` (tests) or :func:`run_simulator` / ``kling-budget simulate`` (foreground)::

    with running_simulator(SimulatorConfig.single(packs={"video": 100}), clock=ManualClock()) as kling:
        kling.sim.script.fail_next()                      # outcomes: Script
        kling.sim.faults.inject("timeout_5002", method="POST")   # faults: Faults
        kling.sim.configure(report_billing=True)           # switches: SimulatorConfig fields
        kling.sim.clock.advance(1)                         # tasks progress by the clock

Choices made where Kling's documentation is silent or unverified:

* ``GET <path>/{id}`` takes a task id or an external task id (the docs list both as path parameters,
  "choose one"); ``GET <path>?external_task_id=`` works too (switch ``external_id_query``). An unknown task,
  or one of another endpoint or account, is 1203 (HTTP 404).
* ``final_unit_deduction`` is ``"0"`` until the task ends (``pending_deduction``), the charge when it
  succeeds, ``"0"`` when it fails; ``task_result`` appears only on success; ``task_info`` holds
  ``external_task_id`` only when one was given.
* A create needs an online pack of its type whose remaining units, minus the charges of tasks still
  running, cover the charge (else 1102); packs are drawn earliest-expiry first when the task succeeds.
* Concurrency is counted per account and pack type (not per model version); image tasks hold ``n`` slots.
* Validation is Kling's documented rules (1201 naming the field; unknown ``model_name`` 1203), checked
  before pricing; a request Kling accepts that :mod:`kling_budget.pricing` cannot price (effects templates)
  is charged ``unpriced_units`` (default 1).
* ``/account/costs`` returns packs whose validity overlaps ``[start_time, end_time]``; quantities are JSON
  numbers written from exact decimals; ``msg`` is ``"success"``.
* Callbacks go out for ``submitted`` too, are not retried unless ``callback_retries`` is set, and their
  ``webhook-timestamp`` is wall-clock time even under a manual clock (receivers check it against theirs).
* ``billing[].package_type`` of a try-on task is ``"try_on"``.
"""

from kling_budget.simulator.app import create_app
from kling_budget.simulator.clock import Clock, ManualClock, SystemClock
from kling_budget.simulator.config import AccountConfig, PackConfig, SimulatorConfig
from kling_budget.simulator.endpoints import ENDPOINTS
from kling_budget.simulator.faults import FaultKind, FaultRule, Faults
from kling_budget.simulator.protocol import SimError
from kling_budget.simulator.runner import RunningSimulator, run_simulator, running_simulator
from kling_budget.simulator.state import (
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
