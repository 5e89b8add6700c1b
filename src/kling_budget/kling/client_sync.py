"""The blocking Kling client, :class:`KlingClient`: an ``httpx.Client`` shell over :mod:`kling_budget.kling._base`.

Import it from :mod:`kling_budget.kling` (or :mod:`kling_budget.kling.client`, whose docstring describes how a
create is made safe); the async twin is in :mod:`kling_budget.kling.client_async`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

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

__all__ = ["KlingClient"]

T = TypeVar("T")


class KlingClient(_KlingCore):
    """Blocking Kling API client.

    Args:
        access_key: access key id for JWT auth (else ``KLING_ACCESS_KEY``).
        secret_key: secret key for JWT auth (else ``KLING_SECRET_KEY``).
        api_key: a console API key sent as a Bearer token instead (else ``KLING_API_KEY``).
        base_url: API host (else ``KLING_API_BASE``, else the region's host).
        region: ``"global"`` (``api-singapore``, the default), ``"china"`` (``api-beijing``) or ``"legacy"``
            (``api.klingai.com``); exclusive with ``base_url``.
        transport: an ``httpx.BaseTransport`` (e.g. ``httpx.MockTransport``) instead of the network.
        timeout: seconds or an ``httpx.Timeout``.
        max_retries: retries after a failed attempt; also bounds create resubmissions and lookups.
        clock: Unix time in seconds (``time.time``); signs tokens and bounds ``wait()``.
        sleep: blocking sleep (``time.sleep``); tests pass a fake.
        jitter: uniform ``[0, 1)`` source for backoff jitter (``random.random``).

    Raises:
        ConfigurationError: missing or conflicting credentials, an unknown region or a bad URL.

    Example::

        with KlingClient() as kling:
            task = kling.create_text_to_video(prompt="a red fox", model_name="kling-v2-6", duration=5)
            done = kling.wait(task, timeout=900)
            print(done.status, done.charged_units)
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        region: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
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
        self._sleep = sleep or time.sleep
        self._http = httpx.Client(
            base_url=self.base_url, transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- driver ---------------------------------------------------------------------------------------------

    def _execute(self, send: _Send) -> _Reply:
        start = time.perf_counter()
        try:
            response = self._http.request(
                send.method, send.path, params=send.params, content=send.body, headers=_headers(send)
            )
        except httpx.RequestError as exc:
            return _Reply(None, b"", exc, time.perf_counter() - start)
        return _Reply(response.status_code, response.content, None, time.perf_counter() - start)

    def _run(self, flow: Flow[T]) -> T:
        try:
            action = next(flow)
            while True:
                feedback: _Reply | None = None
                if isinstance(action, _Send):
                    feedback = self._execute(action)
                elif isinstance(action, _Sleep):
                    self._sleep(action.seconds)
                elif isinstance(action, _Notify):
                    action.callback(action.task)
                action = flow.send(feedback)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()

    # -- creating tasks -------------------------------------------------------------------------------------

    def create_task(self, path: str, body: Mapping[str, Any]) -> Task:
        """Create a task on any create endpoint, safely (see the module docstring).

        Args:
            path: the create path, e.g. ``"/v1/videos/text2video"`` (an :class:`Endpoint`).
            body: the JSON body; ``external_task_id`` is added (uuid4 hex) when absent.

        Returns:
            The created task (normally ``submitted``), with ``endpoint`` set to ``path``.

        Raises:
            KlingAPIError: a definite rejection, e.g. :class:`~kling_budget.errors.KlingPackExhaustedError`
                (no task exists).
            KlingAmbiguousCreateError: the task may exist; look it up by the error's ``external_task_id``.
        """
        return self._run(self._create_flow(path, body))

    def create_text_to_video(
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
        """Create a text-to-video task (``POST /v1/videos/text2video``).

        Args:
            prompt: the positive prompt (at most 2500 characters).
            model_name: e.g. ``kling-v2-6``; Kling defaults to ``kling-v1``.
            negative_prompt: what to avoid.
            mode: ``std`` or ``pro``.
            duration: seconds (sent as a string, e.g. ``"5"``).
            aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
            cfg_scale: prompt adherence in ``[0, 1]``.
            sound: ``on`` or ``off`` (v2.6 and later).
            camera_control: Kling's camera-control object.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields, sent as given.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
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
        return self.create_task(Endpoint.TEXT_TO_VIDEO, body)

    def create_image_to_video(
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
        """Create an image-to-video task (``POST /v1/videos/image2video``).

        Args:
            image: first frame (URL or raw base64).
            image_tail: last frame.
            prompt: the positive prompt.
            model_name: e.g. ``kling-v2-1``.
            negative_prompt: what to avoid.
            mode: ``std`` or ``pro``.
            duration: seconds.
            cfg_scale: prompt adherence in ``[0, 1]``.
            sound: ``on`` or ``off``.
            static_mask: static brush mask image.
            dynamic_masks: dynamic brush masks.
            camera_control: Kling's camera-control object.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
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
        return self.create_task(Endpoint.IMAGE_TO_VIDEO, body)

    def create_multi_image_to_video(
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
        """Create a multi-image-to-video task (``POST /v1/videos/multi-image2video``).

        Args:
            image_list: up to 4 reference images; strings become ``{"image": ...}``.
            prompt: the positive prompt.
            model_name: ``kling-v1-6``.
            negative_prompt: what to avoid.
            mode: ``std`` or ``pro``.
            duration: seconds.
            aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
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
        return self.create_task(Endpoint.MULTI_IMAGE_TO_VIDEO, body)

    def create_video_extend(
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
        """Extend a generated video by 4-5 s (``POST /v1/videos/video-extend``).

        Args:
            video_id: id of a Kling-generated video less than 30 days old.
            prompt: the positive prompt.
            negative_prompt: what to avoid.
            cfg_scale: prompt adherence in ``[0, 1]``.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
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
        return self.create_task(Endpoint.VIDEO_EXTEND, body)

    def create_lip_sync(
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
        """Create a lip-sync task (``POST /v1/videos/lip-sync``); the media fields go into ``input``.

        Args:
            mode: ``text2video`` (speak ``text`` with ``voice_id``) or ``audio2video``.
            video_id: a Kling-generated video, or
            video_url: any video.
            text: what to say (text2video, at most 120 characters).
            voice_id: the voice (text2video).
            voice_language: ``zh`` or ``en``.
            voice_speed: speech speed.
            audio_type: ``file`` or ``url`` (audio2video).
            audio_file: base64 audio.
            audio_url: audio URL.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further top-level body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
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
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.create_task(Endpoint.LIP_SYNC, body)

    def create_video_effects(
        self,
        *,
        effect_scene: str,
        input: Mapping[str, Any],
        watermark_info: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a video-effects task (``POST /v1/videos/effects``).

        Args:
            effect_scene: the template, e.g. ``hug_pro``.
            input: the template's input, e.g. ``{"images": [a, b], "duration": "5"}``.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
        body = compact(
            effect_scene=effect_scene,
            input=dict(input),
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.create_task(Endpoint.VIDEO_EFFECTS, body)

    def create_image_generation(
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
        """Create an image-generation task (``POST /v1/images/generations``).

        Args:
            prompt: the positive prompt.
            model_name: e.g. ``kling-v2-1``; Kling defaults to ``kling-v1``.
            negative_prompt: what to avoid.
            image: reference image for image-to-image.
            image_reference: ``subject`` or ``face``.
            image_fidelity: reference strength in ``[0, 1]``.
            human_fidelity: face reference strength in ``[0, 1]``.
            resolution: ``1k`` or ``2k``.
            n: number of images, 1-9 (each is charged).
            aspect_ratio: e.g. ``16:9``.
            watermark_info: ``{"enabled": bool}``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
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
        return self.create_task(Endpoint.IMAGE_GENERATION, body)

    def create_virtual_try_on(
        self,
        *,
        human_image: str,
        cloth_image: str,
        model_name: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **extra: Any,
    ) -> Task:
        """Create a virtual try-on task (``POST /v1/images/kolors-virtual-try-on``).

        Args:
            human_image: the person.
            cloth_image: the garment.
            model_name: ``kolors-virtual-try-on-v1`` (default) or ``-v1-5``.
            callback_url: where Kling posts status changes.
            external_task_id: your unique id; generated when omitted.
            **extra: further body fields.

        Returns:
            The created task.

        Raises:
            KlingAPIError: see :meth:`create_task`.
        """
        body = compact(
            model_name=model_name,
            human_image=human_image,
            cloth_image=cloth_image,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        )
        return self.create_task(Endpoint.VIRTUAL_TRY_ON, body)

    # -- querying -------------------------------------------------------------------------------------------

    def get_task(
        self,
        task_id: str | None = None,
        *,
        external_task_id: str | None = None,
        endpoint: str = Endpoint.TEXT_TO_VIDEO,
    ) -> Task:
        """Query one task by ``task_id`` or by ``external_task_id`` (exactly one).

        Args:
            task_id: Kling's id.
            external_task_id: the id sent on create.
            endpoint: the create path the task was made on (queries are per endpoint in the ``/v1`` design).

        Returns:
            The task as Kling reports it now.

        Raises:
            KlingTaskNotFoundError: Kling has no such task.
            KlingAPIError: any other failure, after retries.
            InvalidInputError: neither or both ids given.
        """
        return self._run(self._get_task_flow(endpoint, task_id, external_task_id))

    def list_tasks(
        self, endpoint: str = Endpoint.TEXT_TO_VIDEO, *, page_num: int = 1, page_size: int = 30
    ) -> list[Task]:
        """One page of an endpoint's tasks, newest first.

        Args:
            endpoint: the create path to list.
            page_num: page number in ``[1, 1000]``.
            page_size: tasks per page in ``[1, 500]``.

        Returns:
            The tasks on that page.

        Raises:
            KlingAPIError: after retries.
            InvalidInputError: page numbers out of range.
        """
        return self._run(self._list_tasks_flow(endpoint, page_num, page_size))

    def wait(
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
        """Poll a task until it succeeds or fails; the poll interval grows 1.5x per poll up to a cap.

        Args:
            task: a :class:`Task` (its ``task_id`` and ``endpoint`` are used) or a ``task_id``.
            external_task_id: poll by the create-time id instead.
            endpoint: the create path (defaults to the task's, else text-to-video).
            timeout: seconds before giving up.
            poll_interval: first delay between polls, in seconds.
            max_poll_interval: largest delay between polls.
            on_progress: called with every polled task.

        Returns:
            The task in a terminal status; ``charged_units_milli`` is then final.

        Raises:
            KlingWaitTimeoutError: still running at the deadline (``.task`` is the last state seen).
            KlingAPIError: a non-retryable failure (e.g. the task does not exist).
        """
        endpoint, task_id, external = self._wait_target(task, external_task_id, endpoint)
        return self._run(
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

    def get_account_costs(
        self,
        start_time: datetime | int,
        end_time: datetime | int,
        *,
        resource_pack_name: str | None = None,
    ) -> list[ResourcePack]:
        """Resource packs and remaining quantities (``GET /account/costs``; free, but keep to 1 QPS).

        Kling's remaining quantities lag up to 12 hours: use this for reconciliation, never as a budget gate.

        Args:
            start_time: range start, an aware datetime or Unix milliseconds.
            end_time: range end.
            resource_pack_name: only this pack.

        Returns:
            The packs, quantities as exact ``Decimal``.

        Raises:
            KlingAPIError: after retries.
        """
        return self._run(self._account_costs_flow(start_time, end_time, resource_pack_name))
