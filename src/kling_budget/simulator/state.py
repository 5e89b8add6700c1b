"""The simulated Kling: accounts, packs, tasks and their lifecycle, as a thread-safe state machine.

No I/O happens here: the HTTP layer (:mod:`.app`) calls :class:`Simulator` methods, which either return the
``data`` of a Kling envelope or raise :class:`~.protocol.SimError` with Kling's business code.

Tasks of both designs move ``submitted`` -> ``processing`` -> ``succeed`` | ``failed`` by the clock (a
failure before generation skips ``processing``). Nothing runs in the background: every call first applies
the transitions that are due (in time order, from a heap), so a task read late shows exactly the state and
``updated_at`` it would have had. A task is paid (packs, else the cash balance) at the moment it succeeds; a
failed task is never charged. A task holds ``slots`` (1, or ``n`` for image generation) of its pack type's
concurrency quota from creation until it ends, failure included.

Outcome control for tests (:class:`Script`) and prompt markers::

    sim.script.fail_next(2, "content moderation")   # the next two created tasks fail
    sim.script.fail_early_next()                     # the next task fails before generation
    sim.script.charge_next("7")                      # the next task succeeds but is charged 7 units
    sim.script.coupon_next()                         # the next task succeeds and is free (a coupon)
    sim.script.time_next(queued=0, running=30)       # the next task runs for 30 s

    {"prompt": "a cat [sim:fail=nsfw]"}              # this task fails with message "nsfw"
    {"prompt": "a cat [sim:fail_early=nsfw]"}        # ... before generation: billing [{"amount": "0"}]
    {"prompt": "a cat [sim:charge=2.5]"}             # this task is charged 2.5 units ("price drift")
    {"prompt": "a cat [sim:coupon]"}                 # this task is free: billing amount "0"
    {"prompt": "a cat [sim:running=3]"}              # this task stays processing 3 s ([sim:queued=..] too)
    {"prompt": "a cat [sim:reject=1301]"}            # the create is refused with this business code

:class:`Simulator` is the facade holding the lock; the parts live beside it: :mod:`.accounts` (keys, rate
limit, per-account records), :mod:`.creation` (validation and pricing of both designs, with
:mod:`.endpoints` and :mod:`.products`), :mod:`.funding` (packs or cash, 1101/1102/1303 admission,
payment, the deduction ledgers, ``billing[]``), :mod:`.packs` (pack state, ``/account/costs``),
:mod:`.task_model` (task records, the transition schedule, rendering), :mod:`.listings` (the 2026 list
routes, paged by :mod:`kling_budget.kling.paging`), :mod:`.validation` (query parameters), :mod:`.scripting`
(:class:`Script`, prompt markers) and :mod:`.callbacks` (the notification outbox).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from kling_budget.errors import ConfigurationError
from kling_budget.money import format_units, parse_decimal
from kling_budget.simulator.accounts import Account, Caller, KeyRing, rate_limit
from kling_budget.simulator.callbacks import CallbackControl, CallbackEvent, Delivery, Outbox
from kling_budget.simulator.clock import Clock, SystemClock
from kling_budget.simulator.config import CASH_TYPES, PackConfig, SimulatorConfig, parse_pack_type
from kling_budget.simulator.creation import Pricer, default_pricer, prepare
from kling_budget.simulator.faults import Faults
from kling_budget.simulator.funding import admit, hold, new_wallet, pay, release
from kling_budget.simulator.listings import BALANCE, PACKAGE, list_ledger
from kling_budget.simulator.listings import list_tasks as list_model_in_path
from kling_budget.simulator.packs import PackView, cost_infos, new_pack, pack_view
from kling_budget.simulator.protocol import SimError, dumps
from kling_budget.simulator.scripting import Script, plan_task, read_markers
from kling_budget.simulator.task_model import (
    FAILED,
    PROCESSING,
    SUBMITTED,
    SUCCEED,
    TERMINAL,
    Task,
    TaskView,
    Timeline,
    created_data,
    make_outputs,
    render,
    task_data,
    task_item,
    task_view,
)
from kling_budget.simulator.validation import ms_param, output_duration, page_param, parent_video, task_refs
from kling_budget.types import PackType

__all__ = [
    "CallbackControl",
    "CallbackEvent",
    "Caller",
    "Delivery",
    "PackView",
    "Pricer",
    "Script",
    "Simulator",
    "TaskView",
    "default_pricer",
]

log = logging.getLogger("kling_budget.simulator")


class Simulator:
    """The state of one simulated Kling deployment. Thread-safe; the HTTP app and tests share it.

    Attributes:
        clock: where time comes from (inject a :class:`~.clock.ManualClock` to step tasks without sleeping).
        script: deterministic outcomes for the next tasks (:class:`Script`).
        faults: transport and server faults to inject (:class:`~.faults.Faults`).
        callbacks: callback delivery switches (:class:`CallbackControl`).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        pricer: Pricer | None = None,
    ) -> None:
        self._config = config or SimulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self._pricer = pricer or default_pricer()
        self.script = Script()
        self.faults = Faults()
        self.callbacks = CallbackControl()
        self._lock = threading.RLock()
        self._outbox = Outbox(self._lock)
        self._rng = random.Random(self._config.seed)
        self._id_rng = random.Random(self._config.seed)
        self._next_id = self._id_rng.randrange(700_000_000_000_000_000, 880_000_000_000_000_000)
        self._timeline = Timeline()
        self._tasks: dict[str, Task] = {}
        self._unpriced_warned: set[tuple[str, str]] = set()
        self._finished: deque[tuple[int, str]] = deque()
        self._keys = KeyRing()
        self._accounts: dict[str, Account] = {}
        start = self.clock.now_ms()
        usd_prices = _usd_unit_prices()
        for account in self._config.accounts:
            if account.name in self._accounts:
                raise ConfigurationError(f"two accounts are named {account.name!r}")
            packs = [new_pack(p, start, self._id_rng) for p in account.packs]
            self._accounts[account.name] = Account(account.name, packs, new_wallet(account, usd_prices))
            self._keys.add(account)
        add_listener = getattr(self.clock, "add_listener", None)
        if callable(add_listener):
            add_listener(self._wake)

    # ----------------------------------------------------------------- configuration

    @property
    def config(self) -> SimulatorConfig:
        """The current configuration."""
        return self._config

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Change behaviour switches at run time (any :class:`SimulatorConfig` field except ``accounts``).

        Timing changes apply to tasks created afterwards.
        """
        if "accounts" in changes:
            raise ConfigurationError("accounts cannot change at run time; use add_pack() for packs")
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
            if "seed" in changes:
                self._rng = random.Random(self._config.seed)
            return self._config

    def set_timing(self, *, queued_seconds: float | None = None, running_seconds: float | None = None) -> None:
        """Change how long new tasks stay ``submitted`` and ``processing``."""
        changes: dict[str, float] = {}
        if queued_seconds is not None:
            changes["queued_seconds"] = queued_seconds
        if running_seconds is not None:
            changes["running_seconds"] = running_seconds
        self.configure(**changes)

    def add_pack(self, pack: PackConfig, *, account: str | None = None) -> PackView:
        """Give an account (default: the first) another resource pack; return it."""
        with self._lock:
            acct = self._account(account)
            new = new_pack(pack, self.clock.now_ms(), self._id_rng)
            acct.packs.append(new)
            return pack_view(acct.name, new, self.clock.now_ms())

    def add_cash(
        self, amount: Decimal | int | str, *, cash_type: str = "balance", account: str | None = None
    ) -> Decimal:
        """Top up (or, negative, take from) an account's cash balance; return the new balance.

        Raises:
            ConfigurationError: the account has no cash balance of that type.
        """
        delta = parse_decimal(amount, "amount")
        with self._lock:
            wallet = self._account(account).wallet
            if wallet is None or cash_type not in wallet.balances:
                raise ConfigurationError(f"the account has no {cash_type} (configure one on AccountConfig)")
            wallet.balances[cash_type] += delta
            return wallet.balances[cash_type]

    # ----------------------------------------------------------------- requests

    def authorize(self, authorization: str | None, *, api_key_only: bool = False, any_case: bool = False) -> Caller:
        """Check an ``Authorization`` header (and the account's rate limit); return who sent it.

        ``api_key_only`` is for the 2026 design's routes, which take an API key and refuse JWTs; ``any_case``
        accepts the ``Bearer`` scheme in any case (implied by ``api_key_only``).

        Raises:
            SimError: 1001 empty (or no token), 1002 not ``Bearer <token>``, a malformed JWT or a JWT where
                only API keys are taken, 1000 unknown key or bad signature, 1003 ``nbf`` in the future, 1004
                expired, 1302 over the rate limit.
        """
        caller = self._keys.authenticate(
            authorization, self.clock, self._config.jwt_leeway_seconds, api_key_only=api_key_only, any_case=any_case
        )
        if self._config.rate_limit_per_second is not None:
            with self._lock:
                rate_limit(self._accounts[caller.account], self.clock.now_ms(), self._config.rate_limit_per_second)
        return caller

    def create_task(self, caller: Caller, path: str, body: Any) -> dict[str, Any]:
        """Create a task of either design from a POST body; return the create response's ``data``.

        Raises:
            SimError: 1202 no create route at ``path``, 1200 body not a JSON object, 1201 bad parameter or
                duplicate external task id, 1203 unknown model, 1102 the packs cannot cover the task (1101
                when a cash balance cannot either), 1303 concurrency quota used up.
        """
        config = self._config
        creation = prepare(
            path, body, self._pricer, config.unpriced_units, self._unpriced_warned, extra_models=config.extra_models
        )
        markers = read_markers(creation.prompt, enabled=config.prompt_markers)
        external = creation.external_task_id
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._accounts[caller.account]
            if external is not None and external in acct.by_external:
                raise SimError(1201, f"external_task_id {external!r} already exists for this account")
            parent = None
            if creation.endpoint is not None:
                parent = parent_video(
                    acct.videos,
                    creation.endpoint,
                    creation.body,
                    strict=config.strict_video_refs,
                    media_base_url=config.media_base_url,
                )
                duration = output_duration(creation.endpoint, creation.body, parent)
            else:
                duration = creation.output_duration()
            plan = plan_task(markers, self.script, config.failure_probability, self._rng)
            charge = creation.quote_milli if plan.charge_milli is None else plan.charge_milli
            funding = admit(acct, creation.pack_type, charge, creation.count, now)
            self.script._consume()
            queued = plan.queued_ms if plan.queued_ms is not None else round(config.queued_seconds * 1000)
            running = plan.running_ms if plan.running_ms is not None else round(config.running_seconds * 1000)
            task = Task(
                task_id=self._new_task_id(),
                account=caller.account,
                legacy=creation.legacy,
                path=creation.path,
                result=creation.result,
                function=creation.function,
                model=creation.model,
                external_task_id=external,
                callback_url=creation.callback_url,
                pack_type=creation.pack_type,
                quote_milli=creation.quote_milli,
                priced=creation.priced,
                charge_milli=charge,
                slots=creation.count,
                fail_message=plan.fail,
                fail_early=plan.fail_early,
                coupon=plan.coupon,
                funding=funding,
                facts=creation.facts(duration),
                api_key_name=caller.api_key_name,
                created_ms=now,
                processing_ms=now + queued,
                finish_ms=now + queued + running,
                watermark=creation.watermark,
                duration=duration,
                count=creation.count,
                parent_video=parent,
                updated_ms=now,
            )
            self._tasks[task.task_id] = task
            acct.add_task(task)
            hold(acct, task)
            self._schedule(task.processing_ms, task)
            if config.callback_on_submit:
                self._emit(task)
            return created_data(task)

    def _new_task_id(self) -> str:
        self._next_id += self._id_rng.randrange(1, 5000)
        return str(self._next_id)

    def get_task(self, account: str, path: str, ref: str) -> dict[str, Any]:
        """One task of ``path`` by ``task_id`` or, failing that, by ``external_task_id``; its query ``data``.

        Raises:
            SimError: 1203 when the account has no such task on this endpoint.
        """
        with self._lock:
            self._advance(self.clock.now_ms())
            task = self._accounts[account].find_task(path, ref)
            if task is None:
                raise SimError(1203, f"task {ref!r} does not exist on {path}")
            return task_data(task, self._config)

    def list_tasks(self, account: str, path: str, page_num: str | None, page_size: str | None) -> list[dict[str, Any]]:
        """One page of the account's tasks on ``path``, newest first.

        Raises:
            SimError: 1201 when ``pageNum`` is not in [1, 1000] or ``pageSize`` not in [1, 500].
        """
        number = page_param("pageNum", page_num, 1, 1, 1000)
        size = page_param("pageSize", page_size, 30, 1, 500)
        with self._lock:
            self._advance(self.clock.now_ms())
            acct = self._accounts[account]
            newest_first = reversed(acct.by_path.get(path, {}))
            page = itertools.islice(newest_first, (number - 1) * size, number * size)
            return [task_data(acct.tasks[i], self._config) for i in page]

    def query_tasks(self, account: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """``GET /tasks``: the account's 2026-design tasks named by ``task_ids`` or ``external_task_ids``.

        One item per id that exists, in the order asked; ids that do not exist (or name a legacy task) are
        left out.

        Raises:
            SimError: 1201 for both parameters or neither, or a bad id list.
        """
        refs, external = task_refs(query)
        with self._lock:
            self._advance(self.clock.now_ms())
            acct = self._accounts[account]
            found = (acct.find_model_in_path(ref, external=external) for ref in refs)
            return [task_item(task) for task in found if task is not None]

    def list_model_in_path(self, account: str, body: Any) -> dict[str, Any]:
        """``POST /tasks``: one page of the account's 2026-design tasks, newest first.

        Raises:
            SimError: 1200 body not a JSON object; 1201 naming a bad window, limit, filter or cursor.
        """
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            return list_model_in_path(self._accounts[account], body, now)

    def billing_ledger(self, account: str, kind: str, body: Any) -> dict[str, Any]:
        """``POST /account/billing/package`` (``kind`` ``"package"``) or ``.../balance``: one ledger page.

        Raises:
            SimError: 1200 body not a JSON object; 1201 naming a missing window, a bad limit, filter or cursor.
        """
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._accounts[account]
            if kind == "package":
                return list_ledger(PACKAGE, acct.package_ledger, body, now)
            return list_ledger(BALANCE, acct.balance_ledger, body, now)

    def account_costs(
        self, account: str, start_time: str | None, end_time: str | None, pack_name: str | None
    ) -> dict[str, Any]:
        """The ``data`` of ``GET /account/costs``: the account's packs overlapping ``[start_time, end_time]``.

        Remaining quantities are reported as of ``costs_lag_seconds`` ago, like Kling's delayed statistics.

        Raises:
            SimError: 1201 for a missing or non-integer time or start after end; 1302 when called more often
                than ``costs_min_interval_seconds`` allows.
        """
        start = ms_param("start_time", start_time)
        end = ms_param("end_time", end_time)
        if start > end:
            raise SimError(1201, "start_time must not be after end_time")
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._accounts[account]
            interval = round(self._config.costs_min_interval_seconds * 1000)
            if interval and acct.last_costs_ms is not None and now - acct.last_costs_ms < interval:
                raise SimError(1302, "query /account/costs at most once per second")
            acct.last_costs_ms = now
            as_of = now - round(self._config.costs_lag_seconds * 1000)
            infos = cost_infos(acct.packs, start, end, pack_name, now, as_of)
            return {"code": 0, "msg": "success", "resource_pack_subscribe_infos": infos}

    # ----------------------------------------------------------------- lifecycle

    def advance(self) -> None:
        """Apply every transition due by now (the app and the scheduler call this; tests rarely need to)."""
        with self._lock:
            self._advance(self.clock.now_ms())

    def next_due_ms(self) -> int | None:
        """When the next transition is due (Unix ms), or ``None`` when no task is running."""
        with self._lock:
            return self._timeline.next_due()

    def next_callback_due_ms(self) -> int | None:
        """When the next transition of a task with a ``callback_url`` is due, or ``None``.

        The callback scheduler sleeps until then; tasks without callbacks never wake it.
        """
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            return self._timeline.next_callback_due(now)

    def _schedule(self, due: int, task: Task) -> None:
        if self._timeline.schedule(due, task):
            self._wake()

    def _advance(self, now: int) -> None:
        while (entry := self._timeline.pop_due(now)) is not None:
            due, task_id = entry
            task = self._tasks[task_id]
            if task.status == SUBMITTED and not (task.fail_early and task.fail_message is not None):
                task.status, task.updated_ms = PROCESSING, due
                self._schedule(task.finish_ms, task)
            else:
                self._finish(task, due)
            self._emit(task)
        if self._config.retention_seconds is not None:
            self._forget_before(now - round(self._config.retention_seconds * 1000))

    def _forget_before(self, cutoff: int) -> None:
        while self._finished and self._finished[0][0] < cutoff:
            _, task_id = self._finished.popleft()
            task = self._tasks.pop(task_id, None)
            if task is None:
                continue
            self._accounts[task.account].forget_task(task)
        for acct in self._accounts.values():
            acct.forget_deductions_before(cutoff)

    def _finish(self, task: Task, due: int) -> None:
        acct = self._accounts[task.account]
        release(acct, task)
        task.updated_ms = due
        if self._config.retention_seconds is not None:
            self._finished.append((due, task.task_id))
        if task.fail_message is not None:
            task.status = FAILED
            return
        left = pay(acct, task, due, record_lag=self._config.costs_lag_seconds > 0)
        if left:
            log.warning("task %s charged %s units more than its packs held", task.task_id, format_units(left))
        task.status = SUCCEED
        task.outputs = make_outputs(task, self._config.media_base_url, self._id_rng, acct.videos)

    # ----------------------------------------------------------------- callbacks

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Register the function that wakes the callback scheduler (thread-safe; called on any change)."""
        self._outbox.set_waker(waker)

    def _wake(self) -> None:
        self._outbox.wake()

    def _emit(self, task: Task) -> None:
        if not task.callback_url:
            return
        event = CallbackEvent(
            msg_id=f"msg_{uuid.uuid4().hex}",
            task_id=task.task_id,
            url=task.callback_url,
            status=task.status,
            terminal=task.status in TERMINAL,
            body=dumps(render(task, self._config)),
        )
        self._outbox.push(event)

    def take_callbacks(self) -> list[CallbackEvent]:
        """Notifications ready to send, in sending order (applies the ``reorder`` switch)."""
        with self._lock:
            return self._outbox.take(self.callbacks.reorder)

    def record_delivery(self, delivery: Delivery) -> None:
        """Remember a delivery attempt (called by the callback dispatcher)."""
        self._outbox.record(delivery)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every callback delivery attempt so far, in the order they finished."""
        return self._outbox.deliveries

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Block until at least ``count`` delivery attempts finished; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        return self._outbox.wait_for(count, timeout)

    # ----------------------------------------------------------------- inspection

    def _account(self, name: str | None) -> Account:
        if name is None:
            return next(iter(self._accounts.values()))
        try:
            return self._accounts[name]
        except KeyError:
            raise ConfigurationError(f"no account named {name!r}") from None

    def task(self, task_id: str) -> TaskView:
        """A snapshot of one task by ``task_id`` (any account).

        Raises:
            KeyError: no such task.
        """
        with self._lock:
            self._advance(self.clock.now_ms())
            return task_view(self._tasks[task_id])

    def tasks(self, *, account: str | None = None) -> list[TaskView]:
        """Snapshots of all tasks (of one account when given), oldest first."""
        with self._lock:
            self._advance(self.clock.now_ms())
            chosen = [self._account(account)] if account is not None else list(self._accounts.values())
            every = [t for a in chosen for t in a.tasks.values()]
            return [task_view(t) for t in sorted(every, key=lambda t: (t.created_ms, int(t.task_id)))]

    def packs(self, *, account: str | None = None) -> list[PackView]:
        """Snapshots of an account's packs (default: the first account), with no reporting lag."""
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._account(account)
            return [pack_view(acct.name, p, now) for p in acct.packs]

    def remaining(self, pack_type: PackType | str, *, account: str | None = None) -> Decimal:
        """Units left across an account's packs of one type, right now."""
        kind = parse_pack_type(pack_type)
        return sum((p.remaining for p in self.packs(account=account) if p.pack_type is kind), Decimal(0))

    def cash(self, cash_type: str = "balance", *, account: str | None = None) -> Decimal:
        """An account's cash balance of one type right now (``balance`` or ``test_balance``).

        Raises:
            ConfigurationError: the account has no such balance.
        """
        if cash_type not in CASH_TYPES:
            raise ConfigurationError(f"cash_type must be one of {', '.join(CASH_TYPES)}; got {cash_type!r}")
        with self._lock:
            self._advance(self.clock.now_ms())
            wallet = self._account(account).wallet
            if wallet is None or cash_type not in wallet.balances:
                raise ConfigurationError(f"the account has no {cash_type}")
            return wallet.balances[cash_type]

    def active_slots(self, pack_type: PackType | str, *, account: str | None = None) -> int:
        """Concurrency slots held by unfinished tasks of one pack type."""
        kind = parse_pack_type(pack_type)
        with self._lock:
            self._advance(self.clock.now_ms())
            return self._account(account).active_slots.get(kind, 0)


def _usd_unit_prices() -> dict[PackType, Decimal]:
    """List USD price of one unit of each pack type, from the packaged price table."""
    from kling_budget.pricing import PriceTable

    table = PriceTable.default()
    return {kind: table.list_usd_per_unit(kind) for kind in PackType}
