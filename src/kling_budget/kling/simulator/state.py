"""The simulated Kling: accounts, packs, tasks and their lifecycle, as a thread-safe state machine.

No I/O happens here: the HTTP layer (:mod:`.app`) calls :class:`Simulator` methods, which either return the
``data`` of a Kling envelope or raise :class:`~.protocol.SimError` with Kling's business code.

Tasks move ``submitted`` -> ``processing`` -> ``succeed`` | ``failed`` by the clock. Nothing runs in the
background: every call first applies the transitions that are due (in time order, from a heap), so a task
read late shows exactly the state and ``updated_at`` it would have had. A pack is charged at the moment its
task succeeds; a failed task is never charged. A task holds ``slots`` (1, or ``n`` for image generation) of
its pack type's concurrency quota from creation until it ends, failure included.

Outcome control for tests (:class:`Script`) and prompt markers::

    sim.script.fail_next(2, "content moderation")   # the next two created tasks fail
    sim.script.charge_next("7")                      # the next task succeeds but is charged 7 units
    sim.script.time_next(queued=0, running=30)       # the next task runs for 30 s

    {"prompt": "a cat [sim:fail=nsfw]"}              # this task fails with message "nsfw"
    {"prompt": "a cat [sim:charge=2.5]"}             # this task is charged 2.5 units ("price drift")
    {"prompt": "a cat [sim:running=3]"}              # this task stays processing 3 s ([sim:queued=..] too)
    {"prompt": "a cat [sim:reject=1301]"}            # the create is refused with this business code
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kling_budget.errors import ConfigurationError, InvalidInputError, UnknownModelError
from kling_budget.kling.jwt import TokenError, decode_token, peek_issuer
from kling_budget.kling.simulator.clock import Clock, SystemClock
from kling_budget.kling.simulator.config import PackConfig, SimulatorConfig, parse_pack_type
from kling_budget.kling.simulator.endpoints import Endpoint, endpoint_for
from kling_budget.kling.simulator.faults import Faults
from kling_budget.kling.simulator.protocol import CODE_MESSAGE, SimError, dumps
from kling_budget.money import format_units, milli_to_units, units_to_milli
from kling_budget.types import PackType, Quote

__all__ = [
    "CallbackControl",
    "CallbackEvent",
    "Delivery",
    "PackView",
    "Pricer",
    "Script",
    "Simulator",
    "TaskView",
    "default_pricer",
]

log = logging.getLogger("kling_budget.simulator")

#: Prices one create request: ``(path, body) -> Quote``.
Pricer = Callable[[str, Mapping[str, Any]], Quote]

SUBMITTED, PROCESSING, SUCCEED, FAILED = "submitted", "processing", "succeed", "failed"
_TERMINAL = (SUCCEED, FAILED)
_DEFAULT_FAILURE = "simulated failure"
_MARKER = re.compile(r"\[sim:(fail|charge|queued|running|reject)(?:=([^\]]*))?\]")
_TOKEN_CODES = {"malformed": 1002, "signature": 1000, "not_yet_valid": 1003, "expired": 1004}
_DAY_MS = 86_400_000


def default_pricer() -> Pricer:
    """Price requests with :mod:`kling_budget.pricing` and its default price table."""
    from kling_budget.pricing import PriceTable, quote_kling_request

    table = PriceTable.default()

    def price(path: str, body: Mapping[str, Any]) -> Quote:
        return quote_kling_request(table, path, body)

    return price


@dataclass(frozen=True, slots=True)
class TaskView:
    """A read-only snapshot of one task, for tests and inspection.

    ``status`` uses the legacy words (``succeed``); unit amounts are exact decimal strings. ``priced`` is
    false when the pricing module had no price and ``unpriced_units`` was charged instead.
    """

    task_id: str
    account: str
    path: str
    model: str
    status: str
    status_msg: str
    external_task_id: str | None
    callback_url: str | None
    pack_type: PackType
    quoted_units: str
    priced: bool
    planned_charge_units: str
    charged_units: str
    slots: int
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class PackView:
    """A read-only snapshot of one resource pack, as of now (no reporting lag)."""

    account: str
    pack_id: str
    name: str
    pack_type: PackType
    total: Decimal
    remaining: Decimal
    concurrency: int
    status: str


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One status-change notification to deliver to a task's ``callback_url``."""

    msg_id: str
    task_id: str
    url: str
    status: str
    terminal: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt of a callback, as the simulator saw it.

    ``http_status`` is the receiver's answer, or ``None`` with ``error`` set when no answer came.
    """

    msg_id: str
    task_id: str
    url: str
    status: str
    attempt: int
    headers: Mapping[str, str]
    body: bytes
    http_status: int | None
    error: str | None


@dataclass(slots=True)
class CallbackControl:
    """Switches for callback delivery, flipped by tests at run time.

    Attributes:
        duplicate: send every notification twice (same ``webhook-id``), like an at-least-once retry.
        reorder: hold a task's notifications until it ends, then send them newest first.
    """

    duplicate: bool = False
    reorder: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    fail: str | None = None
    charge_milli: int | None = None
    queued_ms: int | None = None
    running_ms: int | None = None


class Script:
    """Deterministic outcomes for the next created tasks (in creation order, across accounts).

    Each queue is consumed by the next task that is accepted (a request refused with an error code consumes
    nothing). Queues are independent: ``fail_next`` and ``charge_next`` both apply to the next task.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail: deque[str] = deque()
        self._charge: deque[int] = deque()
        self._timing: deque[tuple[int | None, int | None]] = deque()

    def fail_next(self, n: int = 1, message: str = _DEFAULT_FAILURE) -> None:
        """Make the next ``n`` tasks end ``failed`` with ``task_status_msg`` = ``message`` (charged "0")."""
        with self._lock:
            self._fail.extend([message] * n)

    def charge_next(self, units: Decimal | int | str, n: int = 1) -> None:
        """Charge the next ``n`` successful tasks ``units`` instead of their quote (price drift)."""
        milli = units_to_milli(units, "charge")
        with self._lock:
            self._charge.extend([milli] * n)

    def time_next(self, *, queued: float | None = None, running: float | None = None, n: int = 1) -> None:
        """Give the next ``n`` tasks their own ``submitted`` / ``processing`` durations in seconds."""
        timing = (
            None if queued is None else round(queued * 1000),
            None if running is None else round(running * 1000),
        )
        with self._lock:
            self._timing.extend([timing] * n)

    def clear(self) -> None:
        """Forget everything scripted."""
        with self._lock:
            self._fail.clear()
            self._charge.clear()
            self._timing.clear()

    @property
    def pending(self) -> int:
        """How many scripted entries are still waiting (all queues together)."""
        with self._lock:
            return len(self._fail) + len(self._charge) + len(self._timing)

    def _peek(self) -> _Plan:
        with self._lock:
            queued, running = self._timing[0] if self._timing else (None, None)
            return _Plan(
                fail=self._fail[0] if self._fail else None,
                charge_milli=self._charge[0] if self._charge else None,
                queued_ms=queued,
                running_ms=running,
            )

    def _consume(self) -> None:
        with self._lock:
            for queue in (self._fail, self._charge, self._timing):
                if queue:
                    queue.popleft()


@dataclass(slots=True)
class _Task:
    task_id: str
    account: str
    endpoint: Endpoint
    model: str
    external_task_id: str | None
    callback_url: str | None
    pack_type: PackType
    quote_milli: int
    priced: bool
    charge_milli: int
    slots: int
    fail_message: str | None
    created_ms: int
    processing_ms: int
    finish_ms: int
    watermark: bool
    duration: str
    count: int
    parent_video: dict[str, str] | None
    status: str = SUBMITTED
    updated_ms: int = 0
    charged_milli: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Pack:
    config: PackConfig
    pack_id: str
    name: str
    remaining_milli: int
    purchase_ms: int
    effective_ms: int
    invalid_ms: int
    deductions: deque[tuple[int, int]] = field(default_factory=deque)

    @property
    def pack_type(self) -> PackType:
        return self.config.pack_type

    def online(self, now: int) -> bool:
        return self.effective_ms <= now < self.invalid_ms and self.remaining_milli > 0

    def remaining_as_of(self, when: int) -> int:
        # Deductions are in time order and ``when`` only moves forward, so older ones can go.
        while self.deductions and self.deductions[0][0] <= when:
            self.deductions.popleft()
        return self.remaining_milli + sum(amount for _, amount in self.deductions)

    def status(self, now: int, remaining: int) -> str:
        if now < self.effective_ms:
            return "toBeOnline"
        if now >= self.invalid_ms:
            return "expired"
        return "runOut" if remaining <= 0 else "online"


@dataclass(slots=True)
class _Account:
    name: str
    packs: list[_Pack]
    tasks: dict[str, _Task] = field(default_factory=dict)
    by_external: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, dict[str, None]] = field(default_factory=dict)
    videos: dict[str, dict[str, str]] = field(default_factory=dict)
    active_slots: dict[PackType, int] = field(default_factory=dict)
    held_milli: dict[PackType, int] = field(default_factory=dict)
    rate_second: int = -1
    rate_count: int = 0
    last_costs_ms: int | None = None


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
        self._delivered = threading.Condition(self._lock)
        self._rng = random.Random(self._config.seed)
        self._id_rng = random.Random(self._config.seed)
        self._next_id = self._id_rng.randrange(700_000_000_000_000_000, 880_000_000_000_000_000)
        self._seq = 0
        self._heap: list[tuple[int, int, str]] = []
        self._callback_heap: list[tuple[int, int]] = []
        self._tasks: dict[str, _Task] = {}
        self._outbox: list[CallbackEvent] = []
        self._held: dict[str, list[CallbackEvent]] = {}
        self._deliveries: list[Delivery] = []
        self._waker: Callable[[], None] | None = None
        self._unpriced_warned: set[tuple[str, str]] = set()
        self._finished: deque[tuple[int, str]] = deque()
        self._access_keys: dict[str, tuple[str, str]] = {}
        self._api_keys: dict[str, str] = {}
        self._accounts: dict[str, _Account] = {}
        start = self.clock.now_ms()
        for account in self._config.accounts:
            if account.name in self._accounts:
                raise ConfigurationError(f"two accounts are named {account.name!r}")
            packs = [self._new_pack(p, start) for p in account.packs]
            self._accounts[account.name] = _Account(account.name, packs)
            for access_key, secret_key in account.key_pairs:
                self._access_keys[access_key] = (account.name, secret_key)
            for api_key in account.api_keys:
                self._api_keys[api_key] = account.name
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
            new = self._new_pack(pack, self.clock.now_ms())
            acct.packs.append(new)
            return self._pack_view(acct, new, self.clock.now_ms())

    def _new_pack(self, pack: PackConfig, start: int) -> _Pack:
        return _Pack(
            config=pack,
            pack_id=uuid.UUID(int=self._id_rng.getrandbits(128), version=4).hex,
            name=pack.display_name(),
            remaining_milli=pack.remaining_milli,
            purchase_ms=pack.purchase_time_ms if pack.purchase_time_ms is not None else start - _DAY_MS,
            effective_ms=pack.effective_time_ms if pack.effective_time_ms is not None else start - _DAY_MS,
            invalid_ms=pack.invalid_time_ms if pack.invalid_time_ms is not None else start + 90 * _DAY_MS,
        )

    # ----------------------------------------------------------------- requests

    def authorize(self, authorization: str | None) -> str:
        """Check an ``Authorization`` header (and the account's rate limit); return the account name.

        Raises:
            SimError: 1001 empty (or no token), 1002 not ``Bearer <token>`` or a malformed JWT, 1000 unknown
                key or bad signature, 1003 ``nbf`` in the future, 1004 expired, 1302 over the rate limit.
        """
        if authorization is None or not authorization.strip():
            raise SimError(1001)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme == "Bearer" and not token:
            raise SimError(1001, "no token after 'Bearer'")
        if scheme != "Bearer" or " " in token:
            raise SimError(1002, "expected 'Bearer <token>'")
        account = self._api_keys.get(token)
        if account is None:
            account = self._verify_jwt(token)
        if self._config.rate_limit_per_second is not None:
            with self._lock:
                self._rate_limit(self._accounts[account], self.clock.now_ms())
        return account

    def _verify_jwt(self, token: str) -> str:
        if "." not in token:
            raise SimError(1000, "unknown API key")
        try:
            issuer = peek_issuer(token)
        except TokenError as exc:
            raise SimError(1002, str(exc)) from None
        entry = self._access_keys.get(issuer)
        if entry is None:
            raise SimError(1000, "unknown access key")
        account, secret = entry
        try:
            decode_token(token, secret, now=self.clock.now_ms() // 1000, leeway=self._config.jwt_leeway_seconds)
        except TokenError as exc:
            raise SimError(_TOKEN_CODES.get(exc.reason, 1000), str(exc)) from None
        log.debug("authenticated access key %s", issuer)
        return account

    def _rate_limit(self, acct: _Account, now: int) -> None:
        limit = self._config.rate_limit_per_second
        if limit is None:
            return
        second = now // 1000
        if acct.rate_second != second:
            acct.rate_second, acct.rate_count = second, 0
        acct.rate_count += 1
        if acct.rate_count > limit:
            raise SimError(1302, f"more than {limit} requests per second")

    def create_task(self, account: str, path: str, body: Any) -> dict[str, Any]:
        """Create a task from a POST body; return the create response's ``data``.

        Raises:
            SimError: 1200 body not a JSON object, 1201 bad parameter or duplicate ``external_task_id``,
                1203 unknown model, 1102 not enough units in the pack type, 1303 concurrency quota used up.
        """
        endpoint = endpoint_for(path)
        if endpoint is None:
            raise SimError(1202, f"no task endpoint at {path}")
        if not isinstance(body, dict):
            raise SimError(1200, "the request body must be a JSON object")
        model = endpoint.check(body)
        quote_milli, priced = self._price(endpoint, body)
        markers = self._markers(body)
        external = body.get("external_task_id") or None
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._accounts[account]
            if external is not None and external in acct.by_external:
                raise SimError(1201, f"external_task_id {external!r} already exists for this account")
            parent = self._parent_video(acct, endpoint, body)
            plan = self._plan(markers)
            charge = quote_milli if plan.charge_milli is None else plan.charge_milli
            pack_type = endpoint.pack_type
            count = int(body.get("n") or 1) if pack_type is PackType.IMAGE else 1
            slots = count
            online = [p for p in acct.packs if p.pack_type is pack_type and p.online(now)]
            available = sum(p.remaining_milli for p in online) - acct.held_milli.get(pack_type, 0)
            if not online or available < charge:
                raise SimError(
                    1102,
                    f"{pack_type} packs have {format_units(max(available, 0))} units available, "
                    f"the task needs {format_units(charge)}",
                )
            quota = max(p.config.concurrency for p in online)
            if acct.active_slots.get(pack_type, 0) + slots > quota:
                raise SimError(1303)
            self.script._consume()
            queued = plan.queued_ms if plan.queued_ms is not None else round(self._config.queued_seconds * 1000)
            running = plan.running_ms if plan.running_ms is not None else round(self._config.running_seconds * 1000)
            task = _Task(
                task_id=self._new_task_id(),
                account=account,
                endpoint=endpoint,
                model=model,
                external_task_id=external,
                callback_url=body.get("callback_url") or None,
                pack_type=pack_type,
                quote_milli=quote_milli,
                priced=priced,
                charge_milli=charge,
                slots=slots,
                fail_message=plan.fail,
                created_ms=now,
                processing_ms=now + queued,
                finish_ms=now + queued + running,
                watermark=bool((body.get("watermark_info") or {}).get("enabled", False)),
                duration=self._duration(endpoint, body, parent),
                count=count,
                parent_video=parent,
                updated_ms=now,
            )
            self._tasks[task.task_id] = task
            acct.tasks[task.task_id] = task
            acct.by_path.setdefault(endpoint.path, {})[task.task_id] = None
            if external is not None:
                acct.by_external[external] = task.task_id
            acct.active_slots[pack_type] = acct.active_slots.get(pack_type, 0) + slots
            acct.held_milli[pack_type] = acct.held_milli.get(pack_type, 0) + charge
            self._schedule(task.processing_ms, task)
            if self._config.callback_on_submit:
                self._emit(task)
            data: dict[str, Any] = {
                "task_id": task.task_id,
                "task_status": SUBMITTED,
                "task_info": self._task_info(task),
                "created_at": task.created_ms,
                "updated_at": task.updated_ms,
            }
            return data

    def _price(self, endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[int, bool]:
        try:
            quote = self._pricer(endpoint.path, body)
        except InvalidInputError as exc:
            fallback = self._config.unpriced_units
            if fallback is None:
                raise SimError(1203 if isinstance(exc, UnknownModelError) else 1201, str(exc)) from None
            key = (endpoint.path, str(body.get("model_name", "")))
            if key not in self._unpriced_warned:
                self._unpriced_warned.add(key)
                log.warning("no price for %s %s (%s); charging %s units", key[0], key[1] or "-", exc, fallback)
            return units_to_milli(fallback, "unpriced_units"), False
        if quote.pack_type is not endpoint.pack_type:
            log.warning(
                "pricing bills %s from the %s pack; Kling uses %s",
                endpoint.path,
                quote.pack_type,
                endpoint.pack_type,
            )
        return quote.units_milli, True

    def _markers(self, body: Mapping[str, Any]) -> _Plan:
        prompt = body.get("prompt")
        if not self._config.prompt_markers or not isinstance(prompt, str) or "[sim:" not in prompt:
            return _Plan()
        fail: str | None = None
        charge = queued = running = rejection = None
        for name, value in _MARKER.findall(prompt):
            try:
                if name == "fail":
                    fail = value or _DEFAULT_FAILURE
                elif name == "charge":
                    charge = units_to_milli(value, "[sim:charge=...]")
                elif name == "queued":
                    queued = round(float(value) * 1000)
                elif name == "reject":
                    rejection = int(value)
                else:
                    running = round(float(value) * 1000)
            except (InvalidInputError, ValueError):
                raise SimError(1201, f"prompt marker [sim:{name}={value}] needs a number") from None
        if rejection is not None:
            if rejection not in CODE_MESSAGE or rejection == 0:
                raise SimError(1201, f"prompt marker [sim:reject={rejection}] needs a documented Kling error code")
            raise SimError(rejection)
        return _Plan(fail, charge, queued, running)

    def _plan(self, markers: _Plan) -> _Plan:
        scripted = self.script._peek()
        fail = markers.fail if markers.fail is not None else scripted.fail
        probability = self._config.failure_probability
        if fail is None and probability > 0 and self._rng.random() < probability:
            fail = _DEFAULT_FAILURE
        return _Plan(
            fail=fail,
            charge_milli=markers.charge_milli if markers.charge_milli is not None else scripted.charge_milli,
            queued_ms=markers.queued_ms if markers.queued_ms is not None else scripted.queued_ms,
            running_ms=markers.running_ms if markers.running_ms is not None else scripted.running_ms,
        )

    def _parent_video(self, acct: _Account, endpoint: Endpoint, body: Mapping[str, Any]) -> dict[str, str] | None:
        if endpoint.video_ref is None:
            return None
        holder: Any = body
        field_name = endpoint.video_ref
        if field_name.startswith("input."):
            holder, field_name = body.get("input") or {}, field_name.removeprefix("input.")
        video_id = holder.get(field_name)
        if not video_id:
            return None
        video = acct.videos.get(video_id)
        if video is not None:
            return dict(video)
        if self._config.strict_video_refs:
            raise SimError(1201, f"{endpoint.video_ref} {video_id!r} is not a video generated by this account")
        return {
            "id": video_id,
            "url": f"{self._config.media_base_url}/videos/{video_id}.mp4",
            "duration": "5",
        }

    @staticmethod
    def _duration(endpoint: Endpoint, body: Mapping[str, Any], parent: dict[str, str] | None) -> str:
        if endpoint.path.endswith("video-extend"):
            base = Decimal(parent["duration"]) if parent else Decimal(5)
            return f"{base + Decimal('4.5'):f}"
        if endpoint.path.endswith("lip-sync") and parent:
            return parent["duration"]
        holder = body.get("input") if endpoint.path.endswith("effects") else body
        duration = holder.get("duration") if isinstance(holder, dict) else None
        return duration if isinstance(duration, str) and duration else "5"

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
            acct = self._accounts[account]
            task = acct.tasks.get(ref)
            if task is None or task.endpoint.path != path:
                by_external = acct.by_external.get(ref)
                task = acct.tasks.get(by_external) if by_external else None
            if task is None or task.endpoint.path != path:
                raise SimError(1203, f"task {ref!r} does not exist on {path}")
            return self._task_data(task)

    def list_tasks(self, account: str, path: str, page_num: str | None, page_size: str | None) -> list[dict[str, Any]]:
        """One page of the account's tasks on ``path``, newest first.

        Raises:
            SimError: 1201 when ``pageNum`` is not in [1, 1000] or ``pageSize`` not in [1, 500].
        """
        number = _page_param("pageNum", page_num, 1, 1, 1000)
        size = _page_param("pageSize", page_size, 30, 1, 500)
        with self._lock:
            self._advance(self.clock.now_ms())
            acct = self._accounts[account]
            newest_first = reversed(acct.by_path.get(path, {}))
            page = itertools.islice(newest_first, (number - 1) * size, number * size)
            return [self._task_data(acct.tasks[i]) for i in page]

    def account_costs(
        self, account: str, start_time: str | None, end_time: str | None, pack_name: str | None
    ) -> dict[str, Any]:
        """The ``data`` of ``GET /account/costs``: the account's packs overlapping ``[start_time, end_time]``.

        Remaining quantities are reported as of ``costs_lag_seconds`` ago, like Kling's delayed statistics.

        Raises:
            SimError: 1201 for a missing or non-integer time or start after end; 1302 when called more often
                than ``costs_min_interval_seconds`` allows.
        """
        start = _ms_param("start_time", start_time)
        end = _ms_param("end_time", end_time)
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
            infos = []
            for pack in acct.packs:
                if pack_name and pack.name != pack_name:
                    continue
                if pack.effective_ms > end or pack.invalid_ms < start:
                    continue
                remaining = pack.remaining_as_of(as_of)
                infos.append(
                    {
                        "resource_pack_name": pack.name,
                        "resource_pack_id": pack.pack_id,
                        "resource_pack_type": pack.config.resource_pack_type,
                        "total_quantity": milli_to_units(pack.config.total_milli),
                        "remaining_quantity": milli_to_units(remaining),
                        "purchase_time": pack.purchase_ms,
                        "effective_time": pack.effective_ms,
                        "invalid_time": pack.invalid_ms,
                        "status": pack.status(now, remaining),
                    }
                )
            return {"code": 0, "msg": "success", "resource_pack_subscribe_infos": infos}

    # ----------------------------------------------------------------- lifecycle

    def advance(self) -> None:
        """Apply every transition due by now (the app and the scheduler call this; tests rarely need to)."""
        with self._lock:
            self._advance(self.clock.now_ms())

    def next_due_ms(self) -> int | None:
        """When the next transition is due (Unix ms), or ``None`` when no task is running."""
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def next_callback_due_ms(self) -> int | None:
        """When the next transition of a task with a ``callback_url`` is due, or ``None``.

        The callback scheduler sleeps until then; tasks without callbacks never wake it.
        """
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            while self._callback_heap and self._callback_heap[0][0] <= now:
                heapq.heappop(self._callback_heap)
            return self._callback_heap[0][0] if self._callback_heap else None

    def _schedule(self, due: int, task: _Task) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, task.task_id))
        if task.callback_url:
            heapq.heappush(self._callback_heap, (due, self._seq))
            if self._callback_heap[0][1] == self._seq:
                self._wake()

    def _advance(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            due, _, task_id = heapq.heappop(self._heap)
            task = self._tasks[task_id]
            if task.status == SUBMITTED:
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
            acct = self._accounts[task.account]
            del acct.tasks[task_id]
            acct.by_path[task.endpoint.path].pop(task_id, None)
            if task.external_task_id is not None and acct.by_external.get(task.external_task_id) == task_id:
                del acct.by_external[task.external_task_id]
            for output in task.outputs:
                acct.videos.pop(str(output.get("id", "")), None)

    def _finish(self, task: _Task, due: int) -> None:
        acct = self._accounts[task.account]
        acct.active_slots[task.pack_type] -= task.slots
        acct.held_milli[task.pack_type] -= task.charge_milli
        task.updated_ms = due
        if self._config.retention_seconds is not None:
            self._finished.append((due, task.task_id))
        if task.fail_message is not None:
            task.status = FAILED
            return
        left = task.charge_milli
        packs = sorted(
            (p for p in acct.packs if p.pack_type is task.pack_type and p.online(due)),
            key=lambda p: (p.invalid_ms, p.effective_ms),
        )
        for pack in packs:
            take = min(left, pack.remaining_milli)
            if take:
                pack.remaining_milli -= take
                if self._config.costs_lag_seconds > 0:
                    pack.deductions.append((due, take))
                left -= take
        if left:
            log.warning("task %s charged %s units more than its packs held", task.task_id, format_units(left))
        task.charged_milli = task.charge_milli
        task.status = SUCCEED
        task.outputs = self._outputs(task)

    def _outputs(self, task: _Task) -> list[dict[str, Any]]:
        base = self._config.media_base_url
        if task.endpoint.result == "images":
            return [{"index": i, "url": f"{base}/images/{task.task_id}-{i}.png"} for i in range(task.count)]
        video_id = str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))
        video = {"id": video_id, "url": f"{base}/videos/{video_id}.mp4", "duration": task.duration}
        self._accounts[task.account].videos[video_id] = dict(video)
        if task.watermark:
            video["watermark_url"] = f"{base}/videos/{video_id}-watermarked.mp4"
        return [video]

    # ----------------------------------------------------------------- rendering

    def _status_word(self, status: str) -> str:
        return "succeeded" if status == SUCCEED and self._config.new_status_names else status

    @staticmethod
    def _task_info(task: _Task) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if task.parent_video is not None:
            info["parent_video"] = dict(task.parent_video)
        if task.external_task_id is not None:
            info["external_task_id"] = task.external_task_id
        return info

    def _task_data(self, task: _Task) -> dict[str, Any]:
        ended = task.status in _TERMINAL
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": self._status_word(task.status),
            "task_status_msg": (task.fail_message or "") if task.status == FAILED else "",
            "task_info": self._task_info(task),
        }
        if task.status == SUCCEED:
            data["task_result"] = {task.endpoint.result: [dict(o) for o in task.outputs]}
        if task.endpoint.pack_type is not PackType.TRY_ON:
            data["watermark_info"] = {"enabled": task.watermark}
        if ended:
            data["final_unit_deduction"] = format_units(task.charged_milli)
        elif self._config.pending_deduction is not None:
            data["final_unit_deduction"] = self._config.pending_deduction
        if self._config.report_billing:
            data["billing"] = (
                [
                    {
                        "charge_type": "unit",
                        "amount": format_units(task.charged_milli),
                        "package_type": str(task.pack_type),
                    }
                ]
                if task.status == SUCCEED
                else []
            )
        data["created_at"] = task.created_ms
        data["updated_at"] = task.updated_ms
        return data

    # ----------------------------------------------------------------- callbacks

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Register the function that wakes the callback scheduler (thread-safe; called on any change)."""
        with self._lock:
            self._waker = waker

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker()

    def _emit(self, task: _Task) -> None:
        if not task.callback_url:
            return
        event = CallbackEvent(
            msg_id=f"msg_{uuid.uuid4().hex}",
            task_id=task.task_id,
            url=task.callback_url,
            status=task.status,
            terminal=task.status in _TERMINAL,
            body=dumps(self._task_data(task)),
        )
        self._outbox.append(event)
        self._wake()

    def take_callbacks(self) -> list[CallbackEvent]:
        """Notifications ready to send, in sending order (applies the ``reorder`` switch)."""
        with self._lock:
            events, self._outbox = self._outbox, []
            if not self.callbacks.reorder:
                held = [e for queue in self._held.values() for e in queue]
                self._held.clear()
                return held + events
            ready: list[CallbackEvent] = []
            for event in events:
                self._held.setdefault(event.task_id, []).append(event)
                if event.terminal:
                    ready.extend(reversed(self._held.pop(event.task_id)))
            return ready

    def record_delivery(self, delivery: Delivery) -> None:
        """Remember a delivery attempt (called by the callback dispatcher)."""
        with self._delivered:
            self._deliveries.append(delivery)
            self._delivered.notify_all()

    @property
    def deliveries(self) -> list[Delivery]:
        """Every callback delivery attempt so far, in the order they finished."""
        with self._lock:
            return list(self._deliveries)

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Block until at least ``count`` delivery attempts finished; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self._deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self._deliveries)} of {count} callback deliveries after {timeout} s")
            return list(self._deliveries)

    # ----------------------------------------------------------------- inspection

    def _account(self, name: str | None) -> _Account:
        if name is None:
            return next(iter(self._accounts.values()))
        try:
            return self._accounts[name]
        except KeyError:
            raise ConfigurationError(f"no account named {name!r}") from None

    def _view(self, task: _Task) -> TaskView:
        return TaskView(
            task_id=task.task_id,
            account=task.account,
            path=task.endpoint.path,
            model=task.model,
            status=task.status,
            status_msg=(task.fail_message or "") if task.status == FAILED else "",
            external_task_id=task.external_task_id,
            callback_url=task.callback_url,
            pack_type=task.pack_type,
            quoted_units=format_units(task.quote_milli),
            priced=task.priced,
            planned_charge_units=format_units(task.charge_milli),
            charged_units=format_units(task.charged_milli),
            slots=task.slots,
            created_at=task.created_ms,
            updated_at=task.updated_ms,
        )

    def task(self, task_id: str) -> TaskView:
        """A snapshot of one task by ``task_id`` (any account).

        Raises:
            KeyError: no such task.
        """
        with self._lock:
            self._advance(self.clock.now_ms())
            return self._view(self._tasks[task_id])

    def tasks(self, *, account: str | None = None) -> list[TaskView]:
        """Snapshots of all tasks (of one account when given), oldest first."""
        with self._lock:
            self._advance(self.clock.now_ms())
            chosen = [self._account(account)] if account is not None else list(self._accounts.values())
            every = [t for a in chosen for t in a.tasks.values()]
            return [self._view(t) for t in sorted(every, key=lambda t: (t.created_ms, int(t.task_id)))]

    def _pack_view(self, acct: _Account, pack: _Pack, now: int) -> PackView:
        return PackView(
            account=acct.name,
            pack_id=pack.pack_id,
            name=pack.name,
            pack_type=pack.pack_type,
            total=milli_to_units(pack.config.total_milli),
            remaining=milli_to_units(pack.remaining_milli),
            concurrency=pack.config.concurrency,
            status=pack.status(now, pack.remaining_milli),
        )

    def packs(self, *, account: str | None = None) -> list[PackView]:
        """Snapshots of an account's packs (default: the first account), with no reporting lag."""
        with self._lock:
            now = self.clock.now_ms()
            self._advance(now)
            acct = self._account(account)
            return [self._pack_view(acct, p, now) for p in acct.packs]

    def remaining(self, pack_type: PackType | str, *, account: str | None = None) -> Decimal:
        """Units left across an account's packs of one type, right now."""
        kind = parse_pack_type(pack_type)
        return sum((p.remaining for p in self.packs(account=account) if p.pack_type is kind), Decimal(0))

    def active_slots(self, pack_type: PackType | str, *, account: str | None = None) -> int:
        """Concurrency slots held by unfinished tasks of one pack type."""
        kind = parse_pack_type(pack_type)
        with self._lock:
            self._advance(self.clock.now_ms())
            return self._account(account).active_slots.get(kind, 0)


def _page_param(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SimError(1201, f"{name} must be an integer in [{low}, {high}]") from None
    if not low <= value <= high:
        raise SimError(1201, f"{name} must be an integer in [{low}, {high}]")
    return value


def _ms_param(name: str, raw: str | None) -> int:
    if raw is None or raw == "":
        raise SimError(1201, f"{name} is required (Unix time in ms)")
    try:
        return int(raw)
    except ValueError:
        raise SimError(1201, f"{name} must be an integer Unix time in ms") from None
