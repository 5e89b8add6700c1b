"""The blocking budget-enforced client, :class:`BudgetEnforcedClient`, and its :class:`Job`.

The lifecycle is described in :mod:`kling_budget.enforced` (import the classes from there or from
:mod:`kling_budget.kling`); the decisions in it live in :mod:`kling_budget.enforced._core`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from kling_budget.enforced._core import (
    DEFAULT_RESERVATION_TTL,
    DEFAULT_VIDEO_MODEL,
    _absent_on_kling,
    _attribution_args,
    _ClientBase,
    _Enforcer,
    _JobBase,
    _Prepared,
    _resumable,
    _resumed_path,
    _video_body,
)
from kling_budget.enforced.lookup import lookup_task
from kling_budget.errors import KlingTaskNotFoundError, KlingWaitTimeoutError
from kling_budget.kling._base import Endpoint, ProgressCallback, compact
from kling_budget.kling.client_sync import KlingClient
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo
from kling_budget.money import Number
from kling_budget.types import Quote

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["BudgetEnforcedClient", "Job"]


class Job(_JobBase):
    """A Kling job submitted under a budget hold.

    Attributes:
        reservation_id: the ledger reservation, also the ``external_task_id`` sent to Kling.
        task_id: Kling's task id.
        quote: the exact price that was held (``None`` for a job resumed from the ledger).
        path: the create path (``/v1/videos/text2video`` ...).
        task: Kling's task as last seen.
        outcome: how the job was settled, once ``wait()`` or ``refresh()`` saw it finish.
    """

    _REPR_NAME = "Job"

    def __init__(self, owner: BudgetEnforcedClient, path: str, reservation_id: str, quote: Quote | None, task: Task):
        self._owner = owner
        super().__init__(path, reservation_id, quote, task)

    @property
    def reservation(self) -> ReservationInfo:
        """The reservation as stored now."""
        return self._owner.tracker.ledger.get_reservation(self.reservation_id)

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
        return self._settled(task, self._owner.settler.settle(task, reservation_id=self.reservation_id))


class BudgetEnforcedClient(_ClientBase[KlingClient]):
    """A blocking Kling client that reserves every job's exact price before sending it.

    Args:
        tracker: the :class:`~kling_budget.tracker.CostTracker` whose budgets and ledger are enforced.
        client: the :class:`~kling_budget.kling.KlingClient` to send with; by default one is built from
            ``client_options`` (credentials from arguments or ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY`` /
            ``KLING_API_KEY`` / ``KLING_API_BASE``) and closed with this object.
        project_id / user_id / api_key_name / tags: what every job is attributed to (budgets match on them).
        callback_url: sent as ``callback_url`` on every create that has none (see
            :class:`~kling_budget.enforced.callbacks.CallbackHandler`).
        reservation_ttl: a hold never marked submitted (the process died before sending) is released after
            this long by ``kling-budget reconcile``; ``None`` keeps it until released by hand.
        **client_options: passed to :class:`~kling_budget.kling.KlingClient` when ``client`` is not given.

    Raises:
        ConfigurationError: missing or conflicting credentials (before anything is reserved).
    """

    _REPR_NAME = "BudgetEnforcedClient"

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
        self._attach(client, client_options, KlingClient)
        self._enforcer = _Enforcer(
            tracker,
            **_attribution_args(project_id, user_id, api_key_name, tags),
            callback_url=callback_url,
            reservation_ttl=reservation_ttl,
        )

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
            _absent_on_kling(prepared)
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
        job = Job(self, _resumed_path(task, info), info.id, None, task)
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
