"""One pure body builder per Kling create endpoint: the only place that knows each endpoint's fields.

Both API designs are here: the ``/v1`` builders (``model_name`` in the body) and the 2026 ones
(:func:`video_from_text`, :func:`video_from_image`, :func:`omni_video`, :func:`motion_control`: the model in
the path, ``contents``/``settings``/``options`` in the body).

A builder takes Kling's field names as keyword arguments and returns a :class:`Create` (the path and the JSON
body, fields left at ``None`` omitted). Every client method is made from its builder: ``create_<name>`` on
:class:`~kling_budget.kling.KlingClient` and :class:`~kling_budget.kling.AsyncKlingClient`, and on the
budget-enforced clients, so adding a Kling field or endpoint is one edit here. Further fields Kling adds
before this module knows them pass through ``**extra`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from kling_budget.designs import model_path
from kling_budget.kling._core import Endpoint

__all__ = [
    "Create",
    "VideoOptions",
    "compact",
    "duration_text",
    "image_generation",
    "image_to_video",
    "lip_sync",
    "motion_control",
    "multi_image_to_video",
    "omni_video",
    "text_to_video",
    "video_effects",
    "video_extend",
    "video_from_image",
    "video_from_text",
    "virtual_try_on",
]

JSON = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Create:
    """A create request: the path to ``POST`` and its JSON body."""

    path: str
    body: dict[str, Any]


def compact(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left at ``None``."""
    return {k: v for k, v in fields.items() if v is not None}


def duration_text(duration: int | str | None) -> str | None:
    """Kling's ``/v1`` design sends durations as strings (``"5"``)."""
    return None if duration is None else str(duration)


def _dicts(items: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    return None if items is None else [dict(item) for item in items]


def text_to_video(
    prompt: str,
    *,
    model_name: str | None = None,
    negative_prompt: str | None = None,
    mode: str | None = None,
    duration: int | str | None = None,
    aspect_ratio: str | None = None,
    cfg_scale: float | None = None,
    sound: str | None = None,
    camera_control: JSON | None = None,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Text to video (``POST /v1/videos/text2video``).

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
    """
    return Create(
        Endpoint.TEXT_TO_VIDEO,
        compact(
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
        ),
    )


def image_to_video(
    image: str | None = None,
    *,
    image_tail: str | None = None,
    prompt: str | None = None,
    model_name: str | None = None,
    negative_prompt: str | None = None,
    mode: str | None = None,
    duration: int | str | None = None,
    cfg_scale: float | None = None,
    sound: str | None = None,
    static_mask: str | None = None,
    dynamic_masks: Sequence[JSON] | None = None,
    camera_control: JSON | None = None,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Image to video (``POST /v1/videos/image2video``).

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
    """
    return Create(
        Endpoint.IMAGE_TO_VIDEO,
        compact(
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
            dynamic_masks=_dicts(dynamic_masks),
            camera_control=camera_control,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        ),
    )


def multi_image_to_video(
    image_list: Sequence[str | JSON],
    *,
    prompt: str,
    model_name: str | None = None,
    negative_prompt: str | None = None,
    mode: str | None = None,
    duration: int | str | None = None,
    aspect_ratio: str | None = None,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Multi-image to video (``POST /v1/videos/multi-image2video``).

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
    """
    images = [{"image": item} if isinstance(item, str) else dict(item) for item in image_list]
    return Create(
        Endpoint.MULTI_IMAGE_TO_VIDEO,
        compact(
            model_name=model_name,
            image_list=images,
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=mode,
            duration=duration_text(duration),
            aspect_ratio=aspect_ratio,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        ),
    )


def video_extend(
    video_id: str,
    *,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    cfg_scale: float | None = None,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Extend a generated video by 4-5 s (``POST /v1/videos/video-extend``), with the source's model and mode.

    Args:
        video_id: id of a Kling-generated video less than 30 days old.
        prompt: the positive prompt.
        negative_prompt: what to avoid.
        cfg_scale: prompt adherence in ``[0, 1]``.
        watermark_info: ``{"enabled": bool}``.
        callback_url: where Kling posts status changes.
        external_task_id: your unique id; generated when omitted.
        **extra: further body fields.
    """
    return Create(
        Endpoint.VIDEO_EXTEND,
        compact(
            video_id=video_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        ),
    )


def lip_sync(
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
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Lip sync (``POST /v1/videos/lip-sync``); the media fields go into ``input``.

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
    """
    return Create(
        Endpoint.LIP_SYNC,
        compact(
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
        ),
    )


def video_effects(
    effect_scene: str,
    input: JSON,
    *,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """A video-effects template (``POST /v1/videos/effects``).

    Args:
        effect_scene: the template, e.g. ``hug_pro``.
        input: the template's input, e.g. ``{"images": [a, b], "duration": "5"}``.
        watermark_info: ``{"enabled": bool}``.
        callback_url: where Kling posts status changes.
        external_task_id: your unique id; generated when omitted.
        **extra: further body fields.
    """
    return Create(
        Endpoint.VIDEO_EFFECTS,
        compact(
            effect_scene=effect_scene,
            input=dict(input),
            watermark_info=watermark_info,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        ),
    )


def image_generation(
    prompt: str,
    *,
    model_name: str | None = None,
    negative_prompt: str | None = None,
    image: str | None = None,
    image_reference: str | None = None,
    image_fidelity: float | None = None,
    human_fidelity: float | None = None,
    resolution: str | None = None,
    n: int | None = None,
    aspect_ratio: str | None = None,
    watermark_info: JSON | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Image generation (``POST /v1/images/generations``).

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
    """
    return Create(
        Endpoint.IMAGE_GENERATION,
        compact(
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
        ),
    )


def virtual_try_on(
    human_image: str,
    cloth_image: str,
    *,
    model_name: str | None = None,
    callback_url: str | None = None,
    external_task_id: str | None = None,
    **extra: Any,
) -> Create:
    """Kolors virtual try-on (``POST /v1/images/kolors-virtual-try-on``; try-on pack units).

    Args:
        human_image: the person.
        cloth_image: the garment.
        model_name: ``kolors-virtual-try-on-v1`` (default) or ``-v1-5``.
        callback_url: where Kling posts status changes.
        external_task_id: your unique id; generated when omitted.
        **extra: further body fields.
    """
    return Create(
        Endpoint.VIRTUAL_TRY_ON,
        compact(
            model_name=model_name,
            human_image=human_image,
            cloth_image=cloth_image,
            callback_url=callback_url,
            external_task_id=external_task_id,
            **extra,
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Kling's 2026 design: the model is in the path; inputs are typed ``contents``, generation choices are
# ``settings`` and the create's own options (callback, external id, watermark) are ``options``. Anything else
# in the body would go unpriced, so these builders take no further top-level fields.


class VideoOptions(TypedDict, total=False):
    """The choices every 2026-design video create takes (all optional).

    Attributes:
        resolution: ``720p``, ``1080p`` or ``4k`` (where the model has it).
        duration: whole seconds (5 or 10 on 2.x, 3-15 on 3.0 and omni; motion control follows its video).
        aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
        audio: ``native`` (generated sound), ``original`` (keep a reference video's) or ``off``.
        multi_shot: let Kling split the video into shots.
        character_orientation: motion control: ``image`` or ``video``.
        settings: further ``settings`` fields, sent as given.
        watermark_info: ``{"enabled": bool}``.
        callback_url: where Kling posts status changes.
        external_task_id: your unique id; generated when omitted.
    """

    resolution: str
    duration: int
    aspect_ratio: str
    audio: str
    multi_shot: bool
    character_orientation: str
    settings: JSON
    watermark_info: JSON
    callback_url: str
    external_task_id: str


_OPTION_KEYS = ("callback_url", "external_task_id", "watermark_info")


def _new_design(product: str, model: str, contents: list[dict[str, Any]], options: VideoOptions) -> Create:
    chosen: dict[str, Any] = dict(options)
    create_options = {k: chosen.pop(k) for k in _OPTION_KEYS if chosen.get(k) is not None}
    extra_settings = chosen.pop("settings", None) or {}
    settings = {**compact(**chosen), **extra_settings}
    body = compact(contents=contents or None, settings=settings or None, options=create_options or None)
    return Create(model_path(product, model), body)


def _content(kind: str, value: str | None, key: str = "url") -> list[dict[str, Any]]:
    return [] if value is None else [{"type": kind, key: value}]


def video_from_text(
    model: str, prompt: str, *, contents: Sequence[JSON] = (), **options: Unpack[VideoOptions]
) -> Create:
    """Text to video on Kling's 2026 design (``POST /text-to-video/<model>``).

    Args:
        model: ``kling-3.0``, ``kling-3.0-turbo``, ``kling-2.6``, ``kling-2.5-turbo`` ... (in the path).
        prompt: the prompt (sent as the first ``contents`` item).
        contents: further typed inputs (``{"type": "element", ...}``).
        **options: see :class:`VideoOptions` (``resolution``, ``duration``, ``audio`` ...).
    """
    return _new_design("text-to-video", model, [*_content("prompt", prompt, "text"), *map(dict, contents)], options)


def video_from_image(
    model: str,
    first_frame: str,
    *,
    prompt: str | None = None,
    last_frame: str | None = None,
    contents: Sequence[JSON] = (),
    **options: Unpack[VideoOptions],
) -> Create:
    """Image to video on Kling's 2026 design (``POST /image-to-video/<model>``).

    Args:
        model: ``kling-3.0``, ``kling-3.0-turbo``, ``kling-2.6``, ``kling-2.5-turbo`` ... (in the path).
        first_frame: the first frame (URL or raw base64).
        prompt: the prompt.
        last_frame: the last frame.
        contents: further typed inputs (``{"type": "element", ...}``).
        **options: see :class:`VideoOptions`.
    """
    inputs = [
        *_content("prompt", prompt, "text"),
        *_content("first_frame", first_frame),
        *_content("last_frame", last_frame),
        *map(dict, contents),
    ]
    return _new_design("image-to-video", model, inputs, options)


def omni_video(
    model: str, contents: Sequence[JSON], *, prompt: str | None = None, **options: Unpack[VideoOptions]
) -> Create:
    """Omni video on Kling's 2026 design (``POST /omni-video/<model>``): any mix of typed inputs.

    Args:
        model: ``kling-3.0-omni`` or ``kling-o1`` (in the path).
        contents: the typed inputs: ``prompt``, ``first_frame``, ``last_frame``, ``refer_image``, ``element``,
            ``feature_video`` (a reference video) or ``base_video`` (a video to edit; the output then has its
            length).
        prompt: a prompt, sent as the first ``contents`` item.
        **options: see :class:`VideoOptions` (``audio="original"`` keeps a reference video's sound).
    """
    return _new_design("omni-video", model, [*_content("prompt", prompt, "text"), *map(dict, contents)], options)


def motion_control(
    model: str,
    image: str,
    video: str,
    *,
    prompt: str | None = None,
    contents: Sequence[JSON] = (),
    **options: Unpack[VideoOptions],
) -> Create:
    """Motion control on Kling's 2026 design (``POST /motion-control/<model>``): the character of ``image``
    moves as in ``video``; the output is as long as the reference video (3-30 s).

    Args:
        model: ``kling-3.0`` or ``kling-2.6`` (in the path).
        image: the character's appearance (URL or base64).
        video: the motion reference video.
        prompt: a prompt.
        contents: further typed inputs (``{"type": "element", ...}``).
        **options: see :class:`VideoOptions` (``character_orientation``, ``resolution``, ``audio``).
    """
    inputs = [
        *_content("prompt", prompt, "text"),
        *_content("image", image),
        *_content("video", video),
        *map(dict, contents),
    ]
    return _new_design("motion-control", model, inputs, options)
