"""The budget-enforced lifecycle, written once as flows: quote, reserve, send, record, settle.

:mod:`kling_budget.enforced` describes the lifecycle. :class:`_Enforcer` holds the ledger side (quoting,
reserving, what a failed create does to the hold); :class:`_EnforcedMethods` and :class:`_JobBase` hold every
method as a flow (:mod:`kling_budget.kling._flow`) that sends through the Kling client's own flows and runs the
ledger work as :class:`~kling_budget.kling._flow.Blocking` actions. The blocking and async classes in
:mod:`kling_budget.enforced.client` only choose the driver: ledger calls then run inline, or in a worker thread.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from kling_budget.designs import create_option, with_create_option
from kling_budget.enforced.lookup import lookup_flow
from kling_budget.enforced.settle import DETAIL_PATH_KEY, JobSettler, SettleOutcome, task_paths
from kling_budget.errors import (
    InvalidInputError,
    KlingAmbiguousCreateError,
    KlingAPIError,
    KlingTaskNotFoundError,
    KlingWaitTimeoutError,
    PricingError,
    ReservationResolvedError,
)
from kling_budget.kling._core import _KlingCore, _names_duplicate
from kling_budget.kling._flow import AsyncDriver, Blocking, Flow, ProgressCallback, SyncDriver, operation
from kling_budget.kling.bodies import Create
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo, ReservationState
from kling_budget.money import Number, milli_to_units, units_to_milli, usd_nano_for_units, usd_to_nano
from kling_budget.pricing import quote_kling_request
from kling_budget.types import PackType, Quote, QuoteLine

if TYPE_CHECKING:
    from kling_budget.enforced.client import AsyncJob, Job
    from kling_budget.tracker import CostTracker, Reservation

logger = logging.getLogger("kling_budget.enforced")

P = ParamSpec("P")
C = TypeVar("C", bound=_KlingCore)

DEFAULT_VIDEO_MODEL = "kling-v2-6"
DEFAULT_RESERVATION_TTL = timedelta(minutes=15)
"""A hold that was never marked submitted is released by ``reconcile`` after this long (the process died)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A create request and the facts that price it but are not sent.

    Attributes:
        path: the create path; body: the JSON body as Kling expects it.
        input_duration: seconds of an input that sets the output length (lip-sync video ...), for the quote.
        units: hold this many units instead of the table's price (products the table does not price).
        pricing_hints: fields used for pricing only (e.g. the source model of a video extension).
    """

    path: str
    body: Mapping[str, Any]
    input_duration: Number | None = None
    units: Number | None = None
    pricing_hints: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, create: Create, **facts: Any) -> Submission:
        """A submission of ``create`` with pricing ``facts`` (``input_duration``, ``units``, ``pricing_hints``)."""
        return cls(create.path, create.body, **facts)


PRICING_FACTS = ("input_duration", "units", "pricing_hints")
"""Keyword arguments of an enforced ``create_*`` method that price the request and are never sent."""


@dataclass(slots=True)
class _Prepared:
    path: str
    body: dict[str, Any]
    quote: Quote
    reservation: Reservation

    @property
    def key(self) -> str:
        return self.reservation.id


def _pack_type_for(path: str) -> PackType:
    if "kolors-virtual-try-on" in path:
        return PackType.TRY_ON
    return PackType.IMAGE if path.startswith("/v1/images/") else PackType.VIDEO


class _Enforcer:
    """The ledger side of the lifecycle (blocking calls only)."""

    def __init__(
        self,
        tracker: CostTracker,
        *,
        project_id: str | None,
        user_id: str | None,
        api_key_name: str | None,
        tags: Iterable[str],
        callback_url: str | None,
        reservation_ttl: timedelta | None,
    ) -> None:
        self.tracker = tracker
        self.settler = JobSettler(tracker)
        self.project_id = project_id
        self.user_id = user_id
        self.api_key_name = api_key_name
        self.tags = tuple(tags)
        self.callback_url = callback_url
        self.reservation_ttl = reservation_ttl

    def describe(self) -> str:
        return f"project_id={self.project_id!r}, user_id={self.user_id!r}"

    def quote(self, submission: Submission, body: Mapping[str, Any]) -> Quote:
        table = self.tracker.prices
        priced = {**body, **(submission.pricing_hints or {})}
        try:
            return quote_kling_request(table, submission.path, priced, input_duration=submission.input_duration)
        except PricingError:
            if submission.units is None:
                raise
        # Priced by the caller (e.g. an effects template the table does not list).
        milli = units_to_milli(submission.units, "units")
        pack = _pack_type_for(submission.path)
        rate = usd_to_nano(table.list_usd_per_unit(pack))
        model = str(body.get("model_name") or body.get("effect_scene") or submission.path.rsplit("/", 1)[-1])
        return Quote(
            product=submission.path.rsplit("/", 1)[-1],
            model=model,
            pack_type=pack,
            units_milli=milli,
            list_usd_nano=usd_nano_for_units(milli, rate, 1000),
            breakdown=(QuoteLine("units given by the caller (not in the price table)", milli),),
            params={},
            price_version=table.version,
        )

    def _priced_model(self, body: dict[str, Any], quote: Quote) -> None:
        """Send the model name that was priced: the recipe's spellings (``kling-v2.6``) become Kling's."""
        model = body.get("model_name")
        if not isinstance(model, str) or model == quote.model:
            return
        try:
            canonical = self.tracker.prices.canonical_model(model, quote.product)
        except PricingError:
            return
        if canonical == quote.model:
            body["model_name"] = canonical

    def unbooked(self, submission: Submission) -> tuple[dict[str, Any], Quote | None]:
        """The body to send through a kling-budget gateway (which prices and holds the job itself) and the local
        quote for information (``None`` when the local table cannot price it); nothing is reserved here."""
        body = self._body(submission)
        try:
            quote: Quote | None = self.quote(submission, body)
        except PricingError:
            quote = None
        if quote is not None:
            self._priced_model(body, quote)
        path = submission.path
        external = create_option(path, body, "external_task_id") or uuid.uuid4().hex
        return with_create_option(path, body, "external_task_id", external), quote

    def _body(self, submission: Submission) -> dict[str, Any]:
        """The body to send: checked, with the default ``callback_url``."""
        path, body = submission.path, submission.body
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidInputError(f"create path must start with '/', got {path!r}")
        if not isinstance(body, Mapping):
            raise InvalidInputError(f"create body must be a mapping, got {type(body).__name__}")
        prepared = dict(body)
        external = create_option(path, prepared, "external_task_id")
        if external is not None and (not isinstance(external, str) or not external.strip()):
            raise InvalidInputError("external_task_id must be a non-empty string")
        if self.callback_url and not create_option(path, prepared, "callback_url"):
            prepared = with_create_option(path, prepared, "callback_url", self.callback_url)
        return prepared

    def prepare(self, submission: Submission) -> _Prepared:
        """Quote and reserve; raises ``BudgetExceededError`` before anything is sent."""
        path = submission.path
        prepared = self._body(submission)
        external = create_option(path, prepared, "external_task_id")
        quote = self.quote(submission, prepared)
        self._priced_model(prepared, quote)
        key = external or uuid.uuid4().hex
        prepared = with_create_option(path, prepared, "external_task_id", key)
        reservation = self.tracker.reserve_quote(
            quote,
            project_id=self.project_id,
            user_id=self.user_id,
            api_key=self.api_key_name,
            tags=self.tags,
            units=submission.units,
            key=key,
            ttl=self.reservation_ttl,
            detail={DETAIL_PATH_KEY: path},
        )
        return _Prepared(path, prepared, quote, reservation)

    def mark_submitted(self, prepared: _Prepared) -> None:
        """Before the HTTP call: from now on only Kling's answer resolves the hold."""
        prepared.reservation.mark_submitted()

    def created(self, prepared: _Prepared, task: Task) -> None:
        """Record Kling's task id on the reservation."""
        try:
            prepared.reservation.mark_submitted(task.task_id)
        except ReservationResolvedError:
            # A fast callback or a concurrent poll settled it already; the task id is then recorded there.
            prepared.reservation.info = self.tracker.ledger.get_reservation(prepared.key)

    def failed(self, prepared: _Prepared, error: BaseException) -> None:
        """After a create raised: release only when Kling definitely created nothing."""
        release_after_failed_create(self.settler, prepared.key, error, prepared.quote.pack_type)


def keeps_hold(error: BaseException) -> bool:
    """Whether a create that raised ``error`` may have made a task, so its budget hold must be kept until
    Kling's answer is known; ``False`` only for a definite rejection (no task exists, the hold is released).

    The one rule for the enforced clients, the gateway and ``kling-budget generate``.
    """
    definite = isinstance(error, KlingAPIError) and not isinstance(error, KlingAmbiguousCreateError)
    return not definite or _names_duplicate(cast(KlingAPIError, error))


def release_after_failed_create(settler: JobSettler, reservation_id: str, error: BaseException, pack: PackType) -> bool:
    """Release the hold of a create that raised ``error`` if Kling definitely created nothing (``True``);
    otherwise keep it for ``kling-budget reconcile`` or the settle worker (see :func:`keeps_hold`)."""
    if not keeps_hold(error):
        settler.reject(reservation_id, cast(KlingAPIError, error), pack_type=pack)
        return True
    logger.warning(
        "kling create for reservation %s ended with %s; the hold is kept until Kling's answer is known "
        "(kling-budget reconcile)",
        reservation_id,
        type(error).__name__,
    )
    return False


def _resumable(prepared: _Prepared) -> bool:
    """Whether the key was already used: the job may exist on Kling, so look before sending anything."""
    info = prepared.reservation.info
    if info.state is ReservationState.RELEASED:
        raise ReservationResolvedError(
            f"reservation {info.id} was already released; use a new external_task_id for a new job"
        )
    return info.state in (ReservationState.SUBMITTED, ReservationState.COMMITTED)


def _absent_on_kling(prepared: _Prepared) -> None:
    """A resumed key Kling has no task for: the create may be sent, unless the hold was already committed."""
    if prepared.reservation.info.state is ReservationState.COMMITTED:
        raise ReservationResolvedError(
            f"reservation {prepared.key} is committed but Kling has no task with that external_task_id"
        ) from None


# ---------------------------------------------------------------------------------------------- jobs


class _JobBase:
    """A Kling job submitted under a budget hold (see :class:`~kling_budget.enforced.Job`)."""

    _REPR_NAME: ClassVar[str]

    def __init__(
        self,
        owner: _EnforcedMethods[Any],
        path: str,
        reservation_id: str,
        quote: Quote | None,
        task: Task,
        gateway_held: bool = False,
    ):
        self._owner = owner
        self.path = path
        self.reservation_id = reservation_id
        self.quote = quote
        self.task = task
        self.gateway_held = gateway_held
        self.outcome: SettleOutcome | None = None

    @property
    def task_id(self) -> str:
        """Kling's task id."""
        return self.task.task_id

    @property
    def held_units(self) -> Decimal | None:
        """Units held for the job (the quote)."""
        return None if self.quote is None else self.quote.units

    @property
    def charged_units(self) -> Decimal | None:
        """Units committed for the job once settled (``None`` before, or when released)."""
        if self.outcome is None or self.outcome.charged_milli is None:
            return None
        return milli_to_units(self.outcome.charged_milli)

    @property
    def reservation(self) -> ReservationInfo | None:
        """The reservation as stored now (a blocking ledger read); ``None`` when the gateway holds the job."""
        if self.gateway_held:
            return None
        return self._owner.tracker.ledger.get_reservation(self.reservation_id)

    def _settle(self, task: Task) -> Flow[Task]:
        self.task = task
        if self.gateway_held:  # the gateway settles its own hold from the same answers
            return task
        settler = self._owner.settler
        outcome = yield Blocking(lambda: settler.settle(task, reservation_id=self.reservation_id), shield=True)
        if task.is_terminal:
            self.outcome = outcome
        return task

    def _refresh(self) -> Flow[Task]:
        """Query the task once and settle it if it has finished."""
        task = yield from self._owner.client._get_task_flow(self.path, self.task_id, None)
        return (yield from self._settle(task))

    refresh = operation(_refresh)

    def _wait(
        self,
        timeout: float = 900.0,
        poll_interval: float = 5.0,
        *,
        max_poll_interval: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Flow[Task]:
        """Poll until the task ends (the interval grows 1.5x per poll), then settle the hold.

        Returns:
            The finished task; :attr:`outcome` says how the ledger was settled (committed with Kling's units,
            or released on failure).

        Raises:
            KlingWaitTimeoutError: still running at ``timeout``; the hold is kept (call ``wait`` again, or let
                ``kling-budget reconcile`` settle it).
        """
        client = self._owner.client
        try:
            task = yield from client._wait_flow(
                self.path,
                self.task_id,
                None,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                on_progress=on_progress,
            )
        except KlingWaitTimeoutError as exc:
            if exc.task is not None:
                yield from self._settle(exc.task)
            raise
        return (yield from self._settle(task))

    wait = operation(_wait)

    def __repr__(self) -> str:
        return (
            f"{self._REPR_NAME}(reservation_id={self.reservation_id!r}, task_id={self.task_id!r}, "
            f"status={self.task.status.value!r})"
        )


# ---------------------------------------------------------------------------------------------- clients


class job_operation(Generic[P]):
    """A method whose flow makes a job: a :class:`~kling_budget.enforced.Job` on the blocking client, an
    awaitable :class:`~kling_budget.enforced.AsyncJob` on the async one (an :class:`operation` typed per class).
    """

    def __init__(self, flow: Callable[Concatenate[Any, P], Flow[_JobBase]]) -> None:
        self._operation: operation[Any, P, _JobBase] = operation(flow)
        self.__doc__ = flow.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._operation.__set_name__(owner, name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> job_operation[P]: ...

    @overload
    def __get__(self, obj: SyncDriver, owner: type | None = None) -> Callable[P, Job]: ...

    @overload
    def __get__(self, obj: AsyncDriver, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, AsyncJob]]: ...

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return self._operation.__get__(cast(SyncDriver, obj), owner)


def _submitting(
    make: Callable[P, Submission | Create], doc: str | None = None
) -> Callable[Concatenate[_EnforcedMethods[Any], P], Flow[_JobBase]]:
    """The flow of an enforced product method made from a body builder or a recipe adapter."""

    signature = inspect.signature(make)
    # A body builder's **extra would send them: the facts that price a request are taken out first.
    facts_taken = tuple(name for name in PRICING_FACTS if name not in signature.parameters)

    @functools.wraps(make)
    def submit(self: _EnforcedMethods[Any], /, *args: P.args, **kwargs: P.kwargs) -> Flow[_JobBase]:
        facts = {name: kwargs.pop(name) for name in facts_taken if name in kwargs}
        request = make(*args, **kwargs)
        if isinstance(request, Submission):
            if facts:
                raise InvalidInputError(f"unexpected arguments {', '.join(sorted(facts))}")
            return self._submit_flow(request)
        return self._submit_flow(Submission.of(request, **facts))

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    submit.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()]
    )
    del submit.__wrapped__  # the signature above is the method's, with self
    if doc is not None:
        submit.__doc__ = doc
    return submit


class _EnforcedMethods(Generic[C]):
    """Every method of the budget-enforced clients, written once (flows on the Kling client's flows)."""

    _REPR_NAME: ClassVar[str]
    client: C
    _owns_client: bool
    _enforcer: _Enforcer
    _gateway: bool | None = None

    def _attach(self, client: C | None, client_options: Mapping[str, Any], new_client: Callable[..., C]) -> None:
        """Send with ``client``, else with a new one built from ``client_options`` (then owned and closed)."""
        if client is not None and client_options:
            raise InvalidInputError("give either client or client options, not both")
        self._owns_client = client is None
        self.client = client if client is not None else new_client(**client_options)

    @property
    def tracker(self) -> CostTracker:
        """The tracker whose budgets are enforced."""
        return self._enforcer.tracker

    @property
    def settler(self) -> JobSettler:
        """The settler jobs are committed and released with."""
        return self._enforcer.settler

    def _new_job(
        self, path: str, reservation_id: str, quote: Quote | None, task: Task, gateway_held: bool = False
    ) -> _JobBase:
        raise NotImplementedError

    def _gateway_holds_budget(self) -> Flow[bool]:
        """Whether a kling-budget gateway at the base URL budgets the jobs: the ``gateway`` option, else asked
        once (an unanswered probe counts as "no": holding locally too can only over-count, never overspend)."""
        if self._gateway is not None:
            return self._gateway
        found = yield from self.client._detect_gateway_flow()
        return bool(found)

    def _submit_through_gateway(self, submission: Submission) -> Flow[_JobBase]:
        """Send without a local hold: the gateway prices, reserves and settles the job (1190 if it denies)."""
        enforcer = self._enforcer
        body, quote = enforcer.unbooked(submission)
        created = yield from self.client._create_flow(submission.path, body)
        external = create_option(submission.path, body, "external_task_id")
        return self._new_job(submission.path, external, quote, created.created_task, True)

    def _submit_flow(self, submission: Submission) -> Flow[_JobBase]:
        if (yield from self._gateway_holds_budget()):
            return (yield from self._submit_through_gateway(submission))
        enforcer = self._enforcer
        prepared: _Prepared = yield Blocking(lambda: enforcer.prepare(submission))
        if _resumable(prepared):
            found = yield from self._find(prepared)
            if found is not None:
                return found
        yield Blocking(lambda: enforcer.mark_submitted(prepared))
        try:
            created = yield from self.client._create_flow(prepared.path, prepared.body)
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            # Shielded: a cancelled caller must still release a definite rejection (or log the kept hold).
            yield Blocking(lambda: enforcer.failed(prepared, error), shield=True)
            raise
        yield Blocking(lambda: enforcer.created(prepared, created.created_task), shield=True)
        return self._new_job(prepared.path, prepared.key, prepared.quote, created.created_task)

    def _find(self, prepared: _Prepared) -> Flow[_JobBase | None]:
        try:
            task = yield from self.client._get_task_flow(prepared.path, None, prepared.key)
        except KlingTaskNotFoundError:
            _absent_on_kling(prepared)
            return None
        job = self._new_job(prepared.path, prepared.key, prepared.quote, task)
        yield from job._settle(task)
        return job

    def _submit(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        input_duration: Number | None = None,
        units: Number | None = None,
        pricing_hints: Mapping[str, Any] | None = None,
    ) -> Flow[_JobBase]:
        """Reserve the exact price of a create request, send it, and return the job.

        Args:
            path: the create path, e.g. ``"/v1/videos/text2video"``.
            body: the JSON body as Kling expects it; its ``external_task_id`` (if any) becomes the reservation
                key, otherwise the new reservation id is sent as ``external_task_id``.
            input_duration: seconds of an input that sets the output length (lip-sync video ...), for the quote.
            units: hold this many units instead of the table's price (required for products the table does
                not price, e.g. most effects templates).
            pricing_hints: fields used for pricing only, not sent (e.g. the source model of a video extension).

        Raises:
            BudgetExceededError: a hard budget has no room; nothing was sent.
            PricingError: the request cannot be priced; nothing was reserved or sent.
            KlingAPIError: Kling rejected the create; the hold was released.
            KlingAmbiguousCreateError: the task may exist; the hold is kept for ``kling-budget reconcile``.
        """
        return self._submit_flow(Submission(path, body, input_duration, units, pricing_hints))

    submit = job_operation(_submit)

    def _resume(self, reservation_id: str) -> Flow[_JobBase]:
        """A job for a reservation submitted earlier (e.g. by a process that was restarted).

        Raises:
            ReservationNotFoundError: no such reservation.
            KlingTaskNotFoundError: Kling has no task for it.
        """
        ledger = self.tracker.ledger
        info: ReservationInfo = yield Blocking(lambda: ledger.get_reservation(reservation_id))
        task = yield from lookup_flow(self.client, info)
        job = self._new_job(task.endpoint or task_paths(info)[0], info.id, None, task)
        yield from job._settle(task)
        return job

    resume = job_operation(_resume)

    def __repr__(self) -> str:
        return f"{self._REPR_NAME}({self._enforcer.describe()}, client={self.client!r})"
