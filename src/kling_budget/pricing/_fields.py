"""Which body fields of each Kling ``/v1`` create request are accepted for pricing: an explicit allow-list.

A price is only as good as what it read. A field the pricer does not know might change what Kling charges (a
new ``resolution``, an output count, a length), so a request that carries one cannot be priced exactly and
must not be forwarded. :func:`check_body_fields` refuses any field not listed here for the endpoint, naming
it and the accepted ones. The lists are Kling's documented request fields (see ``docs/pricing.md``) that
either set the price (model, mode, duration, resolution, sound, voice list, ``n``, inputs whose presence is
priced) or cannot change it (prompts, images, aspect ratio, camera control, ids, callback and watermark
settings). Objects whose own keys matter (``input`` of lip sync and effects) are listed one level deep.

Deliberately absent: ``duration`` on avatar, lip sync and motion control (the output length follows an
input; Kling has no such field, and the price is the longest accepted input), ``model_name``/``mode`` on
video extension (Kling extends with the source video's model and mode), and the multi-shot fields of
``text2video`` (``multi_shot``, ``shot_type``, ``multi_prompt``: not priced yet). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_budget.errors import UnsupportedOptionError
from kling_budget.numeric import shown

__all__ = ["ACCEPTED_FIELDS", "BodyFields", "check_body_fields"]

_COMMON = ("callback_url", "external_task_id", "watermark_info")
_VIDEO = ("model_name", "prompt", "negative_prompt", "mode", "duration", "aspect_ratio")


@dataclass(frozen=True, slots=True)
class BodyFields:
    """The accepted fields of one create path.

    Attributes:
        top: top-level field names (the common ``callback_url``, ``external_task_id``, ``watermark_info``
            included).
        nested: for object-valued fields whose keys are checked too, their accepted keys.
    """

    top: frozenset[str]
    nested: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _fields(*names: str, **nested: tuple[str, ...]) -> BodyFields:
    return BodyFields(
        top=frozenset((*_COMMON, *names, *nested)),
        nested={name: frozenset(keys) for name, keys in nested.items()},
    )


ACCEPTED_FIELDS: Mapping[str, BodyFields] = {
    "/v1/videos/text2video": _fields(*_VIDEO, "cfg_scale", "camera_control", "sound", "resolution", "voice_list"),
    "/v1/videos/image2video": _fields(
        *_VIDEO,
        "cfg_scale",
        "camera_control",
        "sound",
        "resolution",
        "voice_list",
        "image",
        "image_tail",
        "static_mask",
        "dynamic_masks",
    ),
    "/v1/videos/multi-image2video": _fields(*_VIDEO, "image_list"),
    "/v1/videos/multi-elements": _fields(*_VIDEO, "session_id", "edit_mode", "image_list"),
    "/v1/videos/omni-video": _fields(*_VIDEO, "image_list", "element_list", "video_list", "sound", "resolution"),
    "/v1/videos/video-extend": _fields("video_id", "prompt", "negative_prompt", "cfg_scale"),
    "/v1/videos/motion-control": _fields(
        "model_name",
        "prompt",
        "image_url",
        "video_url",
        "character_orientation",
        "mode",
        "keep_original_sound",
        "resolution",
    ),
    "/v1/videos/lip-sync": _fields(
        input=(
            "mode",
            "video_id",
            "video_url",
            "text",
            "voice_id",
            "voice_language",
            "voice_speed",
            "audio_type",
            "audio_file",
            "audio_url",
        )
    ),
    "/v1/videos/advanced-lip-sync": _fields("session_id", "face_choose"),
    "/v1/videos/avatar/image2video": _fields("image", "audio_id", "sound_file", "prompt", "mode"),
    "/v1/videos/effects": _fields("effect_scene", input=("image", "images", "duration", "model_name", "mode")),
    "/v1/videos/identify-face": _fields("video_id", "video_url"),
    "/v1/videos/image-recognize": _fields("image"),
    "/v1/images/generations": _fields(
        "model_name",
        "prompt",
        "negative_prompt",
        "image",
        "image_reference",
        "image_fidelity",
        "human_fidelity",
        "resolution",
        "n",
        "aspect_ratio",
    ),
    "/v1/images/omni-image": _fields(
        "model_name", "prompt", "image_list", "element_list", "n", "resolution", "aspect_ratio"
    ),
    "/v1/images/multi-image2image": _fields(
        "model_name", "prompt", "subject_image_list", "scene_image", "style_image", "n", "aspect_ratio"
    ),
    "/v1/images/editing/expand": _fields(
        "image",
        "up_expansion_ratio",
        "down_expansion_ratio",
        "left_expansion_ratio",
        "right_expansion_ratio",
        "prompt",
        "n",
    ),
    "/v1/general/ai-multi-shot": _fields("element_frontal_image"),
    "/v1/images/kolors-virtual-try-on": _fields("model_name", "human_image", "cloth_image"),
    "/v1/audio/tts": _fields("text", "voice_id", "voice_language", "voice_speed"),
    "/v1/audio/text-to-audio": _fields("prompt", "duration"),
    "/v1/audio/video-to-audio": _fields("video_id", "video_url", "sound_effect_prompt", "bgm_prompt", "asmr_mode"),
    "/v1/general/custom-voices": _fields("voice_name", "voice_url", "video_id"),
}
"""Accepted body fields per create path (every path of :data:`~kling_budget.pricing.SUPPORTED_PATHS`)."""


def check_body_fields(endpoint: str, body: Mapping[str, Any]) -> None:
    """Refuse a body carrying a field the pricer does not understand for ``endpoint``.

    Raises:
        UnsupportedOptionError: an unknown path, or a field (or a key of a listed object) not accepted; the
            message names it and lists what is accepted.
    """
    accepted = ACCEPTED_FIELDS.get(endpoint)
    if accepted is None:
        raise UnsupportedOptionError(f"cannot price {shown(endpoint)}; supported paths: {', '.join(ACCEPTED_FIELDS)}")
    for name in body:
        if name not in accepted.top:
            raise UnsupportedOptionError(
                f"field {shown(name)} is not accepted on {endpoint} (it could change what Kling charges, and the "
                f"price table does not cover it); accepted: {', '.join(sorted(accepted.top))}"
            )
    for name, keys in accepted.nested.items():
        value = body.get(name)
        if not isinstance(value, Mapping):
            continue
        for key in value:
            if key not in keys:
                raise UnsupportedOptionError(
                    f"field {name}.{shown(key)} is not accepted on {endpoint}; accepted in {name}: "
                    + ", ".join(sorted(keys))
                )
