"""Kling clients that hold every job against its budgets before any HTTP call, and settle it on Kling's charge.

One job runs this lifecycle (``ledger-design.md`` §2.3)::

    quote (exact, from the price table)
      → reserve the quote against every matching budget      denied → BudgetExceededError, no HTTP at all
      → mark submitted (from now on no timer may release it)
      → POST the create with external_task_id = reservation id
           definite rejection (1102, 1201, 1301, auth ...)  → release the hold (1102 also alerts)
           KlingAmbiguousCreateError (task may exist)        → keep the hold; settle later (reconcile)
           anything else unexpected                          → keep the hold; settle later (reconcile)
      → record Kling's task_id
      → Job.wait(): poll with backoff, then settle with JobSettler
           succeeded → commit Kling's units (above the hold: overage + alert); failed → release

The reservation id *is* the ``external_task_id`` sent to Kling: a caller that passes its own
``external_task_id`` gets it used as the reservation key, so retrying a call with the same id resumes the
same job instead of paying twice.

Example::

    from kling_budget import CostTracker
    from kling_budget.kling import BudgetEnforcedClient

    tracker = CostTracker()
    tracker.set_budget("marketing", project_id="marketing", period="monthly", limit_units=1000)
    with BudgetEnforcedClient(tracker, project_id="marketing") as kling:   # keys from KLING_* variables
        job = kling.generate_video("a red fox in the snow", duration=5, model="kling-v2-6")
        task = job.wait(timeout=900)
        print(task.video_urls, job.charged_units)
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.to_thread

from kling_budget.errors import (
    InvalidInputError,
    KlingAmbiguousCreateError,
    KlingAPIError,
    KlingTaskNotFoundError,
    KlingWaitTimeoutError,
    PricingError,
    ReservationResolvedError,
)
from kling_budget.jobs import DETAIL_PATH_KEY, JobSettler, SettleOutcome, task_paths
from kling_budget.kling._base import Endpoint, ProgressCallback, _names_duplicate, compact, duration_text
from kling_budget.kling._lookup import alookup_task, lookup_task
from kling_budget.kling.client import AsyncKlingClient, KlingClient
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo, ReservationState
from kling_budget.money import Number, milli_to_units, units_to_milli, usd_nano_for_units, usd_to_nano
from kling_budget.pricing import quote_kling_request
from kling_budget.types import PackType, Quote, QuoteLine

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker, Reservation

__all__ = ["DEFAULT_RESERVATION_TTL", "AsyncBudgetEnforcedClient", "AsyncJob", "BudgetEnforcedClient", "Job"]

logger = logging.getLogger("kling_budget.kling")

T = TypeVar("T")

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


class _BodiesMixin:
    """Request bodies of the convenience methods, shared by both clients."""

    _enforcer: _Enforcer

    def _canonical(self, product: str) -> Callable[[str], str]:
        prices = self._enforcer.tracker.prices

        def resolve(model: str) -> str:
            # The recipe's spellings ("kling-v1.5") become Kling's model names ("kling-v1-5").
            return prices.canonical_model(model, product)

        return resolve


# ---------------------------------------------------------------------------------------------- sync


class Job:
    """A Kling job submitted under a budget hold.

    Attributes:
        reservation_id: the ledger reservation, also the ``external_task_id`` sent to Kling.
        task_id: Kling's task id.
        quote: the exact price that was held (``None`` for a job resumed from the ledger).
        path: the create path (``/v1/videos/text2video`` ...).
        task: Kling's task as last seen.
        outcome: how the job was settled, once ``wait()`` or ``refresh()`` saw it finish.
    """

    def __init__(self, owner: BudgetEnforcedClient, path: str, reservation_id: str, quote: Quote | None, task: Task):
        self._owner = owner
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
    def reservation(self) -> ReservationInfo:
        """The reservation as stored now."""
        return self._owner.tracker.ledger.get_reservation(self.reservation_id)

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

    def refresh(self) -> Task:
        """Query the task once and settle it if it has finished."""
        task = self._owner.client.get_task(self.task_id, endpoint=self.path)
        return self._settle(task)

    def wait(
        self,
        timeout: float = 900.0,
        poll_interval: float = 5.0,
        *,
        max_poll_interval: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Poll until the task ends (the interval grows 1.5x per poll), then settle the hold.

        Returns:
            The finished task; :attr:`outcome` says how the ledger was settled (committed with Kling's units,
            or released on failure).

        Raises:
            KlingWaitTimeoutError: still running at ``timeout``; the hold is kept (call ``wait`` again, or let
                ``kling-budget reconcile`` settle it).
        """
        try:
            task = self._owner.client.wait(
                self.task_id,
                endpoint=self.path,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                on_progress=on_progress,
            )
        except KlingWaitTimeoutError as exc:
            if exc.task is not None:
                self._settle(exc.task)
            raise
        return self._settle(task)

    def _settle(self, task: Task) -> Task:
        self.task = task
        outcome = self._owner.settler.settle(task, reservation_id=self.reservation_id)
        if task.is_terminal:
            self.outcome = outcome
        return task

    def __repr__(self) -> str:
        return (
            f"Job(reservation_id={self.reservation_id!r}, task_id={self.task_id!r}, status={self.task.status.value!r})"
        )


class BudgetEnforcedClient(_BodiesMixin):
    """A blocking Kling client that reserves every job's exact price before sending it.

    Args:
        tracker: the :class:`~kling_budget.tracker.CostTracker` whose budgets and ledger are enforced.
        client: the :class:`~kling_budget.kling.KlingClient` to send with; by default one is built from
            ``client_options`` (credentials from arguments or ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY`` /
            ``KLING_API_KEY`` / ``KLING_API_BASE``) and closed with this object.
        project_id / user_id / api_key_name / tags: what every job is attributed to (budgets match on them).
        callback_url: sent as ``callback_url`` on every create that has none (see
            :class:`~kling_budget.kling.callbacks.CallbackHandler`).
        reservation_ttl: a hold never marked submitted (the process died before sending) is released after
            this long by ``kling-budget reconcile``; ``None`` keeps it until released by hand.
        **client_options: passed to :class:`~kling_budget.kling.KlingClient` when ``client`` is not given.

    Raises:
        ConfigurationError: missing or conflicting credentials (before anything is reserved).
    """

    def __init__(
        self,
        tracker: CostTracker,
        *,
        client: KlingClient | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key_name: str | None = None,
        tags: Iterable[str] = (),
        callback_url: str | None = None,
        reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL,
        **client_options: Any,
    ) -> None:
        if client is not None and client_options:
            raise InvalidInputError("give either client or client options, not both")
        self._owns_client = client is None
        self.client = client if client is not None else KlingClient(**client_options)
        self._enforcer = _Enforcer(
            tracker,
            **_attribution_args(project_id, user_id, api_key_name, tags),
            callback_url=callback_url,
            reservation_ttl=reservation_ttl,
        )

    @property
    def tracker(self) -> CostTracker:
        """The tracker whose budgets are enforced."""
        return self._enforcer.tracker

    @property
    def settler(self) -> JobSettler:
        """The settler jobs are committed and released with."""
        return self._enforcer.settler

    def close(self) -> None:
        """Close the Kling client if this object created it."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BudgetEnforcedClient({self._enforcer.describe()}, client={self.client!r})"

    # ------------------------------------------------------------------ generic

    def submit(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        input_duration: Number | None = None,
        units: Number | None = None,
        pricing_hints: Mapping[str, Any] | None = None,
    ) -> Job:
        """Reserve the exact price of a ``/v1`` create request, send it, and return the job.

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
        prepared = self._enforcer.prepare(
            path, body, input_duration=input_duration, units=units, pricing_hints=pricing_hints
        )
        if _resumable(prepared):
            found = self._find(prepared)
            if found is not None:
                return found
        self._enforcer.mark_submitted(prepared)
        try:
            task = self.client.create_task(path, prepared.body)
        except BaseException as exc:
            self._enforcer.failed(prepared, exc)
            raise
        self._enforcer.created(prepared, task)
        return Job(self, path, prepared.key, prepared.quote, task)

    def _find(self, prepared: _Prepared) -> Job | None:
        try:
            task = self.client.get_task(external_task_id=prepared.key, endpoint=prepared.path)
        except KlingTaskNotFoundError:
            if prepared.reservation.info.state is ReservationState.COMMITTED:
                raise ReservationResolvedError(
                    f"reservation {prepared.key} is committed but Kling has no task with that external_task_id"
                ) from None
            return None
        job = Job(self, prepared.path, prepared.key, prepared.quote, task)
        job._settle(task)
        return job

    def resume(self, reservation_id: str) -> Job:
        """A :class:`Job` for a reservation submitted earlier (e.g. by a process that was restarted).

        Raises:
            ReservationNotFoundError: no such reservation.
            KlingTaskNotFoundError: Kling has no task for it.
        """
        info = self.tracker.ledger.get_reservation(reservation_id)
        task = lookup_task(self.client, info)
        job = Job(self, task.endpoint or task_paths(info)[0], info.id, None, task)
        job._settle(task)
        return job

    # ------------------------------------------------------------------ products

    def generate_video(
        self,
        prompt: str,
        duration: int | str = 5,
        model: str = DEFAULT_VIDEO_MODEL,
        *,
        mode: str | None = None,
        negative_prompt: str | None = None,
        aspect_ratio: str | None = None,
        cfg_scale: float | None = None,
        sound: str | None = None,
        camera_control: Mapping[str, Any] | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Text to video (``/v1/videos/text2video``) under budget: the recipe's ``generate_video``.

        ``model`` accepts the recipe's spellings (``kling-v2.6``) and sends Kling's name. Other arguments are
        Kling's fields; see :meth:`submit` for what is raised.
        """
        body = _video_body(
            prompt,
            duration,
            model,
            table_model=self._canonical("video"),
            mode=mode,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            cfg_scale=cfg_scale,
            sound=sound,
            camera_control=camera_control,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.TEXT_TO_VIDEO, body)

    def image_to_video(
        self,
        image: str,
        prompt: str | None = None,
        duration: int | str = 5,
        model: str = DEFAULT_VIDEO_MODEL,
        *,
        mode: str | None = None,
        image_tail: str | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        sound: str | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Image to video (``/v1/videos/image2video``) under budget; ``image`` is a URL or raw base64."""
        body = _video_body(
            prompt,
            duration,
            model,
            table_model=self._canonical("video"),
            image=image,
            image_tail=image_tail,
            mode=mode,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            sound=sound,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.IMAGE_TO_VIDEO, body)

    def generate_image(
        self,
        prompt: str,
        *,
        model: str | None = None,
        n: int = 1,
        resolution: str | None = None,
        aspect_ratio: str | None = None,
        negative_prompt: str | None = None,
        image: str | None = None,
        image_reference: str | None = None,
        image_fidelity: float | None = None,
        human_fidelity: float | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Image generation (``/v1/images/generations``) under budget; ``n`` images are held (and charged)."""
        body = compact(
            model_name=None if model is None else self._canonical("image")(model),
            prompt=prompt,
            negative_prompt=negative_prompt,
            image=image,
            image_reference=image_reference,
            image_fidelity=image_fidelity,
            human_fidelity=human_fidelity,
            resolution=resolution,
            n=n,
            aspect_ratio=aspect_ratio,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.IMAGE_GENERATION, body)

    def extend_video(
        self,
        video_id: str,
        prompt: str | None = None,
        *,
        source_model: str | None = None,
        source_mode: str | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Extend a generated video (``/v1/videos/video-extend``) under budget.

        Kling extends with the source video's model and mode, which the request does not carry: give them
        as ``source_model`` / ``source_mode`` for an exact hold, otherwise the highest extension price is held
        (and the difference returned on commit).
        """
        body = compact(
            video_id=video_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        hints = compact(model_name=source_model, mode=source_mode)
        return self.submit(Endpoint.VIDEO_EXTEND, body, pricing_hints=hints)

    def lip_sync(
        self,
        *,
        mode: str,
        video_id: str | None = None,
        video_url: str | None = None,
        text: str | None = None,
        voice_id: str | None = None,
        voice_language: str | None = None,
        voice_speed: float | None = None,
        audio_type: str | None = None,
        audio_file: str | None = None,
        audio_url: str | None = None,
        input_duration: Number | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Lip sync (``/v1/videos/lip-sync``) under budget.

        The price follows the video's length, which the request does not carry: pass ``input_duration``
        (seconds) for an exact hold, otherwise the longest accepted video is held.
        """
        body = compact(
            input=compact(
                mode=mode,
                video_id=video_id,
                video_url=video_url,
                text=text,
                voice_id=voice_id,
                voice_language=voice_language,
                voice_speed=voice_speed,
                audio_type=audio_type,
                audio_file=audio_file,
                audio_url=audio_url,
            ),
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.LIP_SYNC, body, input_duration=input_duration)

    def effects(
        self,
        effect_scene: str,
        input: Mapping[str, Any],
        *,
        units: Number | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """A video-effects template (``/v1/videos/effects``) under budget.

        Kling prices effects per template; pass ``units`` when your price table does not list the template.
        """
        body = compact(
            effect_scene=effect_scene,
            input=dict(input),
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.VIDEO_EFFECTS, body, units=units)

    def virtual_try_on(
        self,
        human_image: str,
        cloth_image: str,
        *,
        model: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Job:
        """Kolors virtual try-on (``/v1/images/kolors-virtual-try-on``) under budget (try-on pack units)."""
        body = compact(
            model_name=model,
            human_image=human_image,
            cloth_image=cloth_image,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.submit(Endpoint.VIRTUAL_TRY_ON, body)


# ---------------------------------------------------------------------------------------------- async


async def _blocking(fn: Callable[[], T]) -> T:
    """Ledger work is blocking I/O: keep it off the event loop."""
    return await anyio.to_thread.run_sync(fn)


class AsyncJob:
    """The async twin of :class:`Job` (same attributes; ``refresh`` and ``wait`` are awaitable)."""

    def __init__(
        self, owner: AsyncBudgetEnforcedClient, path: str, reservation_id: str, quote: Quote | None, task: Task
    ) -> None:
        self._owner = owner
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
        """Units committed for the job once settled."""
        if self.outcome is None or self.outcome.charged_milli is None:
            return None
        return milli_to_units(self.outcome.charged_milli)

    async def refresh(self) -> Task:
        """Query the task once and settle it if it has finished."""
        task = await self._owner.client.get_task(self.task_id, endpoint=self.path)
        return await self._settle(task)

    async def wait(
        self,
        timeout: float = 900.0,
        poll_interval: float = 5.0,
        *,
        max_poll_interval: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Poll until the task ends, then settle the hold; see :meth:`Job.wait`."""
        try:
            task = await self._owner.client.wait(
                self.task_id,
                endpoint=self.path,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                on_progress=on_progress,
            )
        except KlingWaitTimeoutError as exc:
            if exc.task is not None:
                await self._settle(exc.task)
            raise
        return await self._settle(task)

    async def _settle(self, task: Task) -> Task:
        self.task = task
        settler = self._owner.settler
        outcome = await _blocking(lambda: settler.settle(task, reservation_id=self.reservation_id))
        if task.is_terminal:
            self.outcome = outcome
        return task

    def __repr__(self) -> str:
        return (
            f"AsyncJob(reservation_id={self.reservation_id!r}, task_id={self.task_id!r}, "
            f"status={self.task.status.value!r})"
        )


class AsyncBudgetEnforcedClient(_BodiesMixin):
    """The async twin of :class:`BudgetEnforcedClient`: same arguments, awaitable methods, on
    :class:`~kling_budget.kling.AsyncKlingClient`. Ledger calls run in a worker thread."""

    def __init__(
        self,
        tracker: CostTracker,
        *,
        client: AsyncKlingClient | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key_name: str | None = None,
        tags: Iterable[str] = (),
        callback_url: str | None = None,
        reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL,
        **client_options: Any,
    ) -> None:
        if client is not None and client_options:
            raise InvalidInputError("give either client or client options, not both")
        self._owns_client = client is None
        self.client = client if client is not None else AsyncKlingClient(**client_options)
        self._enforcer = _Enforcer(
            tracker,
            **_attribution_args(project_id, user_id, api_key_name, tags),
            callback_url=callback_url,
            reservation_ttl=reservation_ttl,
        )

    @property
    def tracker(self) -> CostTracker:
        """The tracker whose budgets are enforced."""
        return self._enforcer.tracker

    @property
    def settler(self) -> JobSettler:
        """The settler jobs are committed and released with."""
        return self._enforcer.settler

    async def aclose(self) -> None:
        """Close the Kling client if this object created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncBudgetEnforcedClient({self._enforcer.describe()}, client={self.client!r})"

    async def submit(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        input_duration: Number | None = None,
        units: Number | None = None,
        pricing_hints: Mapping[str, Any] | None = None,
    ) -> AsyncJob:
        """Reserve, send and return the job; see :meth:`BudgetEnforcedClient.submit`."""
        enforcer = self._enforcer
        prepared = await _blocking(
            lambda: enforcer.prepare(
                path, body, input_duration=input_duration, units=units, pricing_hints=pricing_hints
            )
        )
        if _resumable(prepared):
            found = await self._find(prepared)
            if found is not None:
                return found
        await _blocking(lambda: enforcer.mark_submitted(prepared))
        try:
            task = await self.client.create_task(path, prepared.body)
        except BaseException as exc:
            error = exc
            # Shielded: a cancelled caller must still release a definite rejection (or log the kept hold).
            with anyio.CancelScope(shield=True):
                await _blocking(lambda: enforcer.failed(prepared, error))
            raise
        with anyio.CancelScope(shield=True):
            await _blocking(lambda: enforcer.created(prepared, task))
        return AsyncJob(self, path, prepared.key, prepared.quote, task)

    async def _find(self, prepared: _Prepared) -> AsyncJob | None:
        try:
            task = await self.client.get_task(external_task_id=prepared.key, endpoint=prepared.path)
        except KlingTaskNotFoundError:
            if prepared.reservation.info.state is ReservationState.COMMITTED:
                raise ReservationResolvedError(
                    f"reservation {prepared.key} is committed but Kling has no task with that external_task_id"
                ) from None
            return None
        job = AsyncJob(self, prepared.path, prepared.key, prepared.quote, task)
        await job._settle(task)
        return job

    async def resume(self, reservation_id: str) -> AsyncJob:
        """An :class:`AsyncJob` for a reservation submitted earlier; see :meth:`BudgetEnforcedClient.resume`."""
        info = await _blocking(lambda: self.tracker.ledger.get_reservation(reservation_id))
        task = await alookup_task(self.client, info)
        job = AsyncJob(self, task.endpoint or task_paths(info)[0], info.id, None, task)
        await job._settle(task)
        return job

    async def generate_video(
        self,
        prompt: str,
        duration: int | str = 5,
        model: str = DEFAULT_VIDEO_MODEL,
        *,
        mode: str | None = None,
        negative_prompt: str | None = None,
        aspect_ratio: str | None = None,
        sound: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """Text to video under budget; see :meth:`BudgetEnforcedClient.generate_video`."""
        body = _video_body(
            prompt,
            duration,
            model,
            table_model=self._canonical("video"),
            mode=mode,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            sound=sound,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.submit(Endpoint.TEXT_TO_VIDEO, body)

    async def image_to_video(
        self,
        image: str,
        prompt: str | None = None,
        duration: int | str = 5,
        model: str = DEFAULT_VIDEO_MODEL,
        *,
        mode: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """Image to video under budget; see :meth:`BudgetEnforcedClient.image_to_video`."""
        body = _video_body(
            prompt,
            duration,
            model,
            table_model=self._canonical("video"),
            image=image,
            mode=mode,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.submit(Endpoint.IMAGE_TO_VIDEO, body)

    async def generate_image(
        self,
        prompt: str,
        *,
        model: str | None = None,
        n: int = 1,
        resolution: str | None = None,
        aspect_ratio: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """Image generation under budget; see :meth:`BudgetEnforcedClient.generate_image`."""
        body = compact(
            model_name=None if model is None else self._canonical("image")(model),
            prompt=prompt,
            resolution=resolution,
            n=n,
            aspect_ratio=aspect_ratio,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.submit(Endpoint.IMAGE_GENERATION, body)

    async def extend_video(
        self,
        video_id: str,
        prompt: str | None = None,
        *,
        source_model: str | None = None,
        source_mode: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """Extend a video under budget; see :meth:`BudgetEnforcedClient.extend_video`."""
        body = compact(
            video_id=video_id,
            prompt=prompt,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        hints = compact(model_name=source_model, mode=source_mode)
        return await self.submit(Endpoint.VIDEO_EXTEND, body, pricing_hints=hints)

    async def lip_sync(
        self,
        *,
        mode: str,
        input_duration: Number | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **input_fields: Any,
    ) -> AsyncJob:
        """Lip sync under budget; ``input_fields`` go into Kling's ``input`` object (``video_id``, ``text``...)."""
        body = compact(
            input=compact(mode=mode, **input_fields),
            callback_url=callback_url,
            external_task_id=external_task_id,
        )
        return await self.submit(Endpoint.LIP_SYNC, body, input_duration=input_duration)

    async def effects(
        self,
        effect_scene: str,
        input: Mapping[str, Any],
        *,
        units: Number | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """A video-effects template under budget; see :meth:`BudgetEnforcedClient.effects`."""
        body = compact(
            effect_scene=effect_scene,
            input=dict(input),
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.submit(Endpoint.VIDEO_EFFECTS, body, units=units)

    async def virtual_try_on(
        self,
        human_image: str,
        cloth_image: str,
        *,
        model: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> AsyncJob:
        """Virtual try-on under budget; see :meth:`BudgetEnforcedClient.virtual_try_on`."""
        body = compact(
            model_name=model,
            human_image=human_image,
            cloth_image=cloth_image,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.submit(Endpoint.VIRTUAL_TRY_ON, body)
