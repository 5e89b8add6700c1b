"""The async budget-enforced client, :class:`AsyncBudgetEnforcedClient`, and its :class:`AsyncJob`.

The same lifecycle and decisions as the blocking client (:mod:`kling_budget.enforced`,
:mod:`kling_budget.enforced._core`); Kling is awaited on :class:`~kling_budget.kling.AsyncKlingClient` and the
blocking ledger calls run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.to_thread

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
from kling_budget.enforced.lookup import alookup_task
from kling_budget.errors import KlingTaskNotFoundError, KlingWaitTimeoutError
from kling_budget.kling._base import Endpoint, ProgressCallback, compact
from kling_budget.kling.client_async import AsyncKlingClient
from kling_budget.kling.tasks import Task
from kling_budget.money import Number
from kling_budget.types import Quote

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["AsyncBudgetEnforcedClient", "AsyncJob"]

T = TypeVar("T")


async def _blocking(fn: Callable[[], T]) -> T:
    """Ledger work is blocking I/O: keep it off the event loop."""
    return await anyio.to_thread.run_sync(fn)


class AsyncJob(_JobBase):
    """The async twin of :class:`Job` (same attributes; ``refresh`` and ``wait`` are awaitable)."""

    _REPR_NAME = "AsyncJob"

    def __init__(
        self, owner: AsyncBudgetEnforcedClient, path: str, reservation_id: str, quote: Quote | None, task: Task
    ) -> None:
        self._owner = owner
        super().__init__(path, reservation_id, quote, task)

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
        return self._settled(task, outcome)


class AsyncBudgetEnforcedClient(_ClientBase[AsyncKlingClient]):
    """The async twin of :class:`BudgetEnforcedClient`: same arguments, awaitable methods, on
    :class:`~kling_budget.kling.AsyncKlingClient`. Ledger calls run in a worker thread."""

    _REPR_NAME = "AsyncBudgetEnforcedClient"

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
        self._attach(client, client_options, AsyncKlingClient)
        self._enforcer = _Enforcer(
            tracker,
            **_attribution_args(project_id, user_id, api_key_name, tags),
            callback_url=callback_url,
            reservation_ttl=reservation_ttl,
        )

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
            _absent_on_kling(prepared)
            return None
        job = AsyncJob(self, prepared.path, prepared.key, prepared.quote, task)
        await job._settle(task)
        return job

    async def resume(self, reservation_id: str) -> AsyncJob:
        """An :class:`AsyncJob` for a reservation submitted earlier; see :meth:`BudgetEnforcedClient.resume`."""
        info = await _blocking(lambda: self.tracker.ledger.get_reservation(reservation_id))
        task = await alookup_task(self.client, info)
        job = AsyncJob(self, _resumed_path(task, info), info.id, None, task)
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
    ) -> AsyncJob:
        """Lip sync under budget; see :meth:`BudgetEnforcedClient.lip_sync` (same arguments, same body)."""
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
