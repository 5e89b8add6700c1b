"""A faithful Kling API simulator over real HTTP, for tests, demos and development without credentials.

It implements Kling as documented, in both of its API designs, not as any client expects: the legacy ``/v1``
task endpoints (JWT or API-key auth) and the 2026 "model in the path" design (``POST /text-to-video/kling-3.0``
..., ``GET``/``POST /tasks``; API key only, a JWT there is 1002), business codes and HTTP statuses, resource
packs and a cash balance, concurrency quotas, ``/account/costs``, the per-task billing ledgers
(``POST /account/billing/package`` and ``/balance``) and signed callbacks; plus deterministic outcome control
and fault injection. Start one with :func:`running_simulator` (tests) or :func:`run_simulator` /
``kling-budget simulate`` (foreground)::

    with running_simulator(SimulatorConfig.single(packs={"video": 100}), clock=ManualClock()) as kling:
        kling.sim.script.fail_next()                      # outcomes: Script
        kling.sim.faults.inject("timeout_5002", method="POST")   # faults: Faults
        kling.sim.configure(report_billing=True)           # switches: SimulatorConfig fields
        kling.sim.clock.advance(1)                         # tasks progress by the clock
        httpx.post(kling.url("/text-to-video/kling-3.0"), headers=kling.api_key_headers(), json={"prompt": "a fox"})

The default account has the key pair ``sim-access-key``/``sim-secret-key`` and the API key ``sim-api-key``;
``SimulatorConfig.single(packs={}, balance="20", currency="USD", discount="0.2")`` makes a cash-only account.

Choices made where Kling's documentation is silent or unverified:

* ``GET <path>/{id}`` takes a task id or an external task id (the docs list both as path parameters,
  "choose one"); ``GET <path>?external_task_id=`` works too (switch ``external_id_query``). An unknown task,
  or one of another endpoint or account, is 1203 (HTTP 404).
* ``final_unit_deduction`` is ``"0"`` until the task ends (``pending_deduction``), the charge when it
  succeeds, ``"0"`` when it fails or was paid in cash; ``task_result`` appears only on success; ``task_info``
  holds ``external_task_id`` only when one was given. A ``/v1`` task paid in cash also carries
  ``final_balance_deduction`` (``quota``: the discounted amount, ``list_price``) once it succeeded.
* Payment: a task is paid from its type's online packs when their remaining units, minus the charges of
  tasks still running, cover its charge; otherwise wholly from the cash balance (test money first, then the
  balance) when that covers its list price less the discount; a charge is never split between packs and
  cash. Neither: 1101 on an account with a cash balance, 1102 on one without. Packs are drawn earliest-expiry
  first when the task succeeds; cash is taken then too.
* Cash: the list price of a unit is the price table's USD list price (video $0.14); a CNY account's is that
  times 7 unless ``unit_prices`` says otherwise (Kling publishes no CNY unit prices). ``discount`` is the
  share taken off; amounts are exact decimals, never rounded.
* Scripted outcomes apply to both designs: ``[sim:charge=units]`` / ``charge_next`` set the units a task
  costs (paid in cash: list price = those units at the unit price); a coupon task (``[sim:coupon]`` /
  ``coupon_next``) is admitted and held like any other, then pays nothing; a failure before generation
  (``[sim:fail_early]`` / ``fail_early_next``) goes from ``submitted`` straight to ``failed`` when the task
  would have started processing.
* Concurrency is counted per account and pack type (not per model version); image tasks hold ``n`` slots,
  every other task one. The quota is the largest of the type's online packs and, on an account with a cash
  balance, ``cash_concurrency`` (default 10).
* Validation is Kling's documented rules (1201 naming the field; unknown model 1203), checked before
  pricing; unknown fields are ignored. A ``/v1`` request Kling accepts that :mod:`kling_budget.pricing`
  cannot price (effects templates) is charged ``unpriced_units`` (default 1).
* The 2026 design, beyond the documented rules: ``settings.resolution`` defaults to 720p (1080p on
  omni-video), ``duration`` to 5 s, ``audio`` to off; 4k is taken by kling-3.0 on text/image-to-video and by
  kling-3.0-omni only; ``native`` audio is refused on kling-2.5-turbo, kling-o1, motion control and with a
  reference video; motion control takes ``audio`` off only; an omni edit's ``duration`` is checked, then
  ignored. Content types per product: text-to-video ``prompt``, ``refer_image``, ``element``;
  image-to-video also ``first_frame``, ``last_frame``; omni-video all but ``image``/``video``, with a prompt
  required and at most one ``feature_video`` or ``base_video``; motion-control ``prompt``, ``image``,
  ``video``. The prompt is given once (top-level or as a content).
* A 2026 task is charged what :func:`kling_budget.pricing.quote_kling_request` quotes for its effective
  settings (defaults filled in). A length that follows an input video the request does not measure is the
  longest Kling accepts: an omni edit 15 s (kling-o1 10 s), motion control 30 s, or 10 s with
  ``character_orientation`` image; that is also the output's ``duration``.
* 2026 task items: ``external_id`` is ``""`` when none was given; ``outputs`` is ``[]`` until the task
  succeeds; ``billing`` is absent while the task runs; after a failure before generation it is
  ``[{"amount": "0"}]``, after any other failure ``[]``; a coupon task has one row with amount ``"0"`` (a
  cash row keeps its ``list_price``). ``report_billing`` adds the same ``billing`` to ``/v1`` tasks.
* ``GET /tasks`` answers each id once and only tasks of the 2026 design (``/v1`` tasks are left out, like
  unknown ids); ids are at most 255 characters.
* Lists (``POST /tasks``, the billing ledgers) are newest first; ``count`` is the number of items on the page;
  the window ``[start_time, end_time]`` is inclusive (on ``create_time``, on ``deduction_time``); a cursor
  stands for the whole query, so other fields sent with it are ignored, and a cursor of one route is 1201 on
  another. An empty ``POST /tasks`` body is ``{}``. The ledgers need ``start_time`` and ``end_time``
  unless a cursor is given; at most 10 filters of 1 to 100 values.
* Billing ledgers: one package row per pack a task drew on, one balance row per cash task; failed and coupon
  tasks have none. ``product_type`` is ``video``, ``image`` or ``try_on`` (a ``try-on`` filter matches too);
  ``product_function`` is the product's name ("Text to Video"); ``resolution`` is the 2026 setting or the
  ``/v1`` mode's (std 720p, pro 1080p; images 1k/2k); ``duration`` the output seconds (``""`` for images);
  ``refer_video_input`` and ``voice_control`` are booleans; ``video_sound`` is native, original or off.
  ``api_key_name`` is the key's configured name (``api-key-<n>`` by default) and ``""`` for tasks made with
  a JWT.
* Auth: the 2026 routes take ``Bearer`` in any case; ``/v1`` and ``/account/costs`` want it spelled
  ``Bearer``; the billing ledgers take either credential.
* ``/account/costs`` returns packs whose validity overlaps ``[start_time, end_time]``; quantities are JSON
  numbers written from exact decimals; ``msg`` is ``"success"``.
* Callbacks go out for ``submitted`` too, on every status change, in the task's own design's shape; they are
  not retried unless ``callback_retries`` is set, and their ``webhook-timestamp`` is wall-clock time even
  under a manual clock (receivers check it against theirs).
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
    Caller,
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
    "Caller",
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
