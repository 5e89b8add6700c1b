"""The asynchronous Kling client, :class:`AsyncKlingClient`: an ``httpx.AsyncClient`` shell over the same core.

The flows (retries, re-signing, the safe create) are those of :mod:`kling_budget.kling._base`; only transport,
sleep and progress callbacks are awaited here. Import it from :mod:`kling_budget.kling`.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import anyio
import httpx

from kling_budget.kling._base import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    Endpoint,
    Flow,
    ProgressCallback,
    _headers,
    _images,
    _KlingCore,
    _Notify,
    _Reply,
    _Send,
    _Sleep,
    compact,
    duration_text,
)
from kling_budget.kling.retry import DEFAULT_MAX_RETRIES
from kling_budget.kling.tasks import ResourcePack, Task

__all__ = ["AsyncKlingClient"]

T = TypeVar("T")


class AsyncKlingClient(_KlingCore):
    """Asynchronous Kling API client; the same API as :class:`KlingClient` with awaitable methods.

    Args:
        access_key: access key id for JWT auth (else ``KLING_ACCESS_KEY``).
        secret_key: secret key for JWT auth (else ``KLING_SECRET_KEY``).
        api_key: a console API key instead (else ``KLING_API_KEY``).
        base_url: API host (else ``KLING_API_BASE``, else the region's host).
        region: ``"global"``, ``"china"`` or ``"legacy"``; exclusive with ``base_url``.
        transport: an ``httpx.AsyncBaseTransport`` instead of the network.
        timeout: seconds or an ``httpx.Timeout``.
        max_retries: retries after a failed attempt; also bounds create resubmissions and lookups.
        clock: Unix time in seconds (``time.time``).
        sleep: awaitable sleep (``anyio.sleep``); tests pass a fake.
        jitter: uniform ``[0, 1)`` source for backoff jitter.

    Raises:
        ConfigurationError: missing or conflicting credentials, an unknown region or a bad URL.
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        region: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            access_key,
            secret_key,
            api_key=api_key,
            base_url=base_url,
            region=region,
            max_retries=max_retries,
            clock=clock,
            jitter=jitter,
            environ=os.environ,
        )
        self._sleep = sleep or anyio.sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def close(self) -> None:
        """Close the connection pool (same as :meth:`aclose`)."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _execute(self, send: _Send) -> _Reply:
        start = time.perf_counter()
        try:
            response = await self._http.request(
                send.method, send.path, params=send.params, content=send.body, headers=_headers(send)
            )
        except httpx.RequestError as exc:
            return _Reply(None, b"", exc, time.perf_counter() - start)
        return _Reply(response.status_code, response.content, None, time.perf_counter() - start)

    async def _run(self, flow: Flow[T]) -> T:
        try:
            action = next(flow)
            while True:
                feedback: _Reply | None = None
                if isinstance(action, _Send):
                    feedback = await self._execute(action)
                elif isinstance(action, _Sleep):
                    await self._sleep(action.seconds)
                elif isinstance(action, _Notify):
                    result = action.callback(action.task)
                    if inspect.isawaitable(result):
                        await result
                action = flow.send(feedback)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()

    async def create_task(self, path: str, body: Mapping[str, Any]) -> Task:
        """Create a task on any create endpoint; see :meth:`KlingClient.create_task`."""
        return await self._run(self._create_flow(path, body))

    async def create_text_to_video(
        self,
        *,
        prompt: str,
        model_name: str | None = None,
        negative_prompt: str | None = None,
        mode: str | None = None,
        duration: int | str | None = None,
        aspect_ratio: str | None = None,
        cfg_scale: float | None = None,
        sound: str | None = None,
        camera_control: Mapping[str, Any] | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a text-to-video task; see :meth:`KlingClient.create_text_to_video`."""
        body = compact(
            model_name=model_name,
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=mode,
            duration=duration_text(duration),
            aspect_ratio=aspect_ratio,
            cfg_scale=cfg_scale,
            sound=sound,
            camera_control=camera_control,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.TEXT_TO_VIDEO, body)

    async def create_image_to_video(
        self,
        *,
        image: str | None = None,
        image_tail: str | None = None,
        prompt: str | None = None,
        model_name: str | None = None,
        negative_prompt: str | None = None,
        mode: str | None = None,
        duration: int | str | None = None,
        cfg_scale: float | None = None,
        sound: str | None = None,
        static_mask: str | None = None,
        dynamic_masks: Sequence[Mapping[str, Any]] | None = None,
        camera_control: Mapping[str, Any] | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create an image-to-video task; see :meth:`KlingClient.create_image_to_video`."""
        body = compact(
            model_name=model_name,
            image=image,
            image_tail=image_tail,
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=mode,
            duration=duration_text(duration),
            cfg_scale=cfg_scale,
            sound=sound,
            static_mask=static_mask,
            dynamic_masks=None if dynamic_masks is None else [dict(m) for m in dynamic_masks],
            camera_control=camera_control,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.IMAGE_TO_VIDEO, body)

    async def create_multi_image_to_video(
        self,
        *,
        image_list: Sequence[str | Mapping[str, Any]],
        prompt: str,
        model_name: str | None = None,
        negative_prompt: str | None = None,
        mode: str | None = None,
        duration: int | str | None = None,
        aspect_ratio: str | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a multi-image-to-video task; see :meth:`KlingClient.create_multi_image_to_video`."""
        body = compact(
            model_name=model_name,
            image_list=_images(image_list),
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=mode,
            duration=duration_text(duration),
            aspect_ratio=aspect_ratio,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.MULTI_IMAGE_TO_VIDEO, body)

    async def create_video_extend(
        self,
        *,
        video_id: str,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Extend a generated video; see :meth:`KlingClient.create_video_extend`."""
        body = compact(
            video_id=video_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.VIDEO_EXTEND, body)

    async def create_lip_sync(
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
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a lip-sync task; see :meth:`KlingClient.create_lip_sync`."""
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
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.LIP_SYNC, body)

    async def create_video_effects(
        self,
        *,
        effect_scene: str,
        input: Mapping[str, Any],
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a video-effects task; see :meth:`KlingClient.create_video_effects`."""
        body = compact(
            effect_scene=effect_scene,
            input=dict(input),
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.VIDEO_EFFECTS, body)

    async def create_image_generation(
        self,
        *,
        prompt: str,
        model_name: str | None = None,
        negative_prompt: str | None = None,
        image: str | None = None,
        image_reference: str | None = None,
        image_fidelity: float | None = None,
        human_fidelity: float | None = None,
        resolution: str | None = None,
        n: int | None = None,
        aspect_ratio: str | None = None,
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create an image-generation task; see :meth:`KlingClient.create_image_generation`."""
        body = compact(
            model_name=model_name,
            prompt=prompt,
            negative_prompt=negative_prompt,
            image=image,
            image_reference=image_reference,
            image_fidelity=image_fidelity,
            human_fidelity=human_fidelity,
            resolution=resolution,
            n=n,
            aspect_ratio=aspect_ratio,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.IMAGE_GENERATION, body)

    async def create_virtual_try_on(
        self,
        *,
        human_image: str,
        cloth_image: str,
        model_name: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a virtual try-on task; see :meth:`KlingClient.create_virtual_try_on`."""
        body = compact(
            model_name=model_name,
            human_image=human_image,
            cloth_image=cloth_image,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return await self.create_task(Endpoint.VIRTUAL_TRY_ON, body)

    async def get_task(
        self,
        task_id: str | None = None,
        *,
        external_task_id: str | None = None,
        endpoint: str = Endpoint.TEXT_TO_VIDEO,
    ) -> Task:
        """Query one task; see :meth:`KlingClient.get_task`."""
        return await self._run(self._get_task_flow(endpoint, task_id, external_task_id))

    async def list_tasks(
        self, endpoint: str = Endpoint.TEXT_TO_VIDEO, *, page_num: int = 1, page_size: int = 30
    ) -> list[Task]:
        """One page of an endpoint's tasks; see :meth:`KlingClient.list_tasks`."""
        return await self._run(self._list_tasks_flow(endpoint, page_num, page_size))

    async def wait(
        self,
        task: Task | str | None = None,
        *,
        external_task_id: str | None = None,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Poll until terminal; see :meth:`KlingClient.wait` (``on_progress`` may be a coroutine function)."""
        endpoint, task_id, external = self._wait_target(task, external_task_id, endpoint)
        return await self._run(
            self._wait_flow(
                endpoint,
                task_id,
                external,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                on_progress=on_progress,
            )
        )

    async def get_account_costs(
        self,
        start_time: datetime | int,
        end_time: datetime | int,
        *,
        resource_pack_name: str | None = None,
    ) -> list[ResourcePack]:
        """Resource packs and remaining quantities; see :meth:`KlingClient.get_account_costs`."""
        return await self._run(self._account_costs_flow(start_time, end_time, resource_pack_name))
