"""The budget side of a budget-enforced job, shared by the sync and async clients (no Kling I/O).

:mod:`kling_budget.enforced` describes the lifecycle. This module holds every decision in it that does
not depend on how Kling is called: quoting (with the caller's ``units`` when the price table has none), the
body checks, the reservation key (the ``external_task_id``), whether a key resumes an earlier job, what a
failed create does to the hold, and the state and convenience-method plumbing the two job and client classes
have in common. :mod:`~kling_budget.enforced.sync` and :mod:`~kling_budget.enforced.aio` only
call Kling (and, in the async case, move the blocking ledger calls off the event loop).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from kling_budget.enforced.settle import DETAIL_PATH_KEY, JobSettler, SettleOutcome, task_paths
from kling_budget.errors import (
    InvalidInputError,
    KlingAmbiguousCreateError,
    KlingAPIError,
    PricingError,
    ReservationResolvedError,
)
from kling_budget.kling._base import _names_duplicate, compact, duration_text
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo, ReservationState
from kling_budget.money import Number, milli_to_units, units_to_milli, usd_nano_for_units, usd_to_nano
from kling_budget.pricing import quote_kling_request
from kling_budget.types import PackType, Quote, QuoteLine

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker, Reservation

logger = logging.getLogger("kling_budget.kling")

K = TypeVar("K")
"""The Kling client a budget-enforced client sends with (:class:`KlingClient` or :class:`AsyncKlingClient`)."""

DEFAULT_VIDEO_MODEL = "kling-v2-6"
DEFAULT_RESERVATION_TTL = timedelta(minutes=15)
"""A hold that was never marked submitted is released by ``reconcile`` after this long (the process died)."""


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


def _check_body(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInputError(f"create path must start with '/', got {path!r}")
    if not isinstance(body, Mapping):
        raise InvalidInputError(f"create body must be a mapping, got {type(body).__name__}")
    prepared = dict(body)
    external = prepared.get("external_task_id")
    if external is not None and (not isinstance(external, str) or not external.strip()):
        raise InvalidInputError("external_task_id must be a non-empty string")
    try:
        json.dumps(prepared)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"create body is not JSON-serialisable: {exc}") from None
    return prepared


class _Enforcer:
    """The ledger side of the lifecycle, shared by the sync and async clients (blocking calls only)."""

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

    def quote(
        self, path: str, body: Mapping[str, Any], *, input_duration: Number | None, units: Number | None
    ) -> Quote:
        table = self.tracker.prices
        try:
            return quote_kling_request(table, path, body, input_duration=input_duration)
        except PricingError:
            if units is None:
                raise
        # Priced by the caller (e.g. an effects template the table does not list).
        milli = units_to_milli(units, "units")
        pack = _pack_type_for(path)
        rate = usd_to_nano(table.list_usd_per_unit(pack))
        model = str(body.get("model_name") or body.get("effect_scene") or path.rsplit("/", 1)[-1])
        return Quote(
            product=path.rsplit("/", 1)[-1],
            model=model,
            pack_type=pack,
            units_milli=milli,
            list_usd_nano=usd_nano_for_units(milli, rate, 1000),
            breakdown=(QuoteLine("units given by the caller (not in the price table)", milli),),
            params={},
            price_version=table.version,
        )

    def prepare(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        input_duration: Number | None = None,
        units: Number | None = None,
        pricing_hints: Mapping[str, Any] | None = None,
    ) -> _Prepared:
        """Quote and reserve; raises ``BudgetExceededError`` before anything is sent."""
        prepared = _check_body(path, body)
        if self.callback_url and not prepared.get("callback_url"):
            prepared["callback_url"] = self.callback_url
        quote = self.quote(path, {**prepared, **(pricing_hints or {})}, input_duration=input_duration, units=units)
        key = prepared.get("external_task_id") or uuid.uuid4().hex
        prepared["external_task_id"] = key
        reservation = self.tracker.reserve_quote(
            quote,
            project_id=self.project_id,
            user_id=self.user_id,
            api_key=self.api_key_name,
            tags=self.tags,
            units=units,
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
        definite = isinstance(error, KlingAPIError) and not isinstance(error, KlingAmbiguousCreateError)
        if definite and isinstance(error, KlingAPIError) and not _names_duplicate(error):
            self.settler.reject(prepared.key, error, pack_type=prepared.quote.pack_type)
            return
        logger.warning(
            "kling create for reservation %s ended with %s; the hold is kept until Kling's answer is known "
            "(kling-budget reconcile)",
            prepared.key,
            type(error).__name__,
        )


def _resumable(prepared: _Prepared) -> bool:
    """Whether the key was already used: the job may exist on Kling, so look before sending anything."""
    info = prepared.reservation.info
    if info.state is ReservationState.RELEASED:
        raise ReservationResolvedError(
            f"reservation {info.id} was already released; use a new external_task_id for a new job"
        )
    return info.state in (ReservationState.SUBMITTED, ReservationState.COMMITTED)


def _attribution_args(
    project_id: str | None, user_id: str | None, api_key_name: str | None, tags: Iterable[str]
) -> dict[str, Any]:
    return {"project_id": project_id, "user_id": user_id, "api_key_name": api_key_name, "tags": tuple(tags)}


def _absent_on_kling(prepared: _Prepared) -> None:
    """A resumed key Kling has no task for: the create may be sent, unless the hold was already committed."""
    if prepared.reservation.info.state is ReservationState.COMMITTED:
        raise ReservationResolvedError(
            f"reservation {prepared.key} is committed but Kling has no task with that external_task_id"
        ) from None


def _resumed_path(task: Task, info: ReservationInfo) -> str:
    """The create path a job resumed from the ledger is polled on."""
    return task.endpoint or task_paths(info)[0]


# ---------------------------------------------------------------------------------------------- bodies


def _video_body(
    prompt: str | None,
    duration: int | str | None,
    model: str | None,
    *,
    table_model: Callable[[str], str],
    **fields: Any,
) -> dict[str, Any]:
    return compact(
        model_name=None if model is None else table_model(model),
        prompt=prompt,
        duration=duration_text(duration),
        **fields,
    )


# ---------------------------------------------------------------------------------------------- shared state


class _JobBase:
    """What :class:`~kling_budget.kling.Job` and :class:`~kling_budget.kling.AsyncJob` have in common."""

    _REPR_NAME: ClassVar[str]

    def __init__(self, path: str, reservation_id: str, quote: Quote | None, task: Task) -> None:
        self.path = path
        self.reservation_id = reservation_id
        self.quote = quote
        self.task = task
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

    def _settled(self, task: Task, outcome: SettleOutcome) -> Task:
        """Keep the settler's outcome once the task has finished."""
        if task.is_terminal:
            self.outcome = outcome
        return task

    def __repr__(self) -> str:
        return (
            f"{self._REPR_NAME}(reservation_id={self.reservation_id!r}, task_id={self.task_id!r}, "
            f"status={self.task.status.value!r})"
        )


class _ClientBase(Generic[K]):
    """What both budget-enforced clients have in common: the Kling client, the enforcer, model names."""

    _REPR_NAME: ClassVar[str]
    client: K
    _owns_client: bool
    _enforcer: _Enforcer

    def _attach(self, client: K | None, client_options: Mapping[str, Any], new_client: Callable[..., K]) -> None:
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

    def _canonical(self, product: str) -> Callable[[str], str]:
        prices = self._enforcer.tracker.prices

        def resolve(model: str) -> str:
            # The recipe's spellings ("kling-v1.5") become Kling's model names ("kling-v1-5").
            return prices.canonical_model(model, product)

        return resolve

    def __repr__(self) -> str:
        return f"{self._REPR_NAME}({self._enforcer.describe()}, client={self.client!r})"
