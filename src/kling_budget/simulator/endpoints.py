"""The legacy (``/v1/...``) task endpoints the simulator serves, with Kling's documented parameter rules.

Validation follows the official parameter tables (required fields, enums, ranges, model lists per
endpoint). A missing or illegal field is 1201 with a message naming the field; a ``model_name`` the endpoint
does not offer is 1203 ("requested resource does not exist, e.g. model"). Pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kling_budget.simulator.fields import Body
from kling_budget.simulator.fields import bad as _bad
from kling_budget.simulator.fields import enum as _enum
from kling_budget.simulator.fields import fraction as _fraction
from kling_budget.simulator.fields import integer as _int
from kling_budget.simulator.fields import items as _list
from kling_budget.simulator.fields import obj as _object
from kling_budget.simulator.fields import present as _present
from kling_budget.simulator.fields import string as _string
from kling_budget.simulator.protocol import SimError
from kling_budget.types import PackType

__all__ = ["ENDPOINTS", "Endpoint", "endpoint_for"]

_MAX_PROMPT = 2500
_VIDEO_ASPECTS = ("16:9", "9:16", "1:1")
_IMAGE_ASPECTS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
_DUAL_PERSON_EFFECTS = ("cheers_2026", "kiss_pro", "fight_pro", "hug_pro", "heart_gesture_pro")
_CLASSIC_DUAL_EFFECTS = ("hug", "kiss", "heart_gesture", "fight")


def _common(body: Body) -> None:
    _string(body, "callback_url")
    _string(body, "external_task_id", max_len=255)
    watermark = _object(body, "watermark_info")
    if watermark is not None and not isinstance(watermark.get("enabled", False), bool):
        raise _bad("watermark_info.enabled", "must be a boolean")


def _video_common(body: Body, model: str, durations: tuple[str, ...] = ("5", "10")) -> None:
    _string(body, "negative_prompt", max_len=_MAX_PROMPT)
    _enum(body, "mode", ("std", "pro"))
    _enum(body, "aspect_ratio", _VIDEO_ASPECTS)
    if _enum(body, "sound", ("on", "off")) == "on":
        if model not in ("kling-v2-6", "kling-v3"):
            raise _bad("sound", f"'on' needs kling-v2-6 or later, not {model}")
        if model == "kling-v2-6" and body.get("mode", "std") != "pro":
            raise _bad("sound", "'on' with kling-v2-6 needs mode pro")
    _fraction(body, "cfg_scale")
    if model == "kling-v3":
        durations = tuple(str(s) for s in range(3, 16))
    _enum(body, "duration", durations)
    camera = _object(body, "camera_control")
    if camera is not None:
        kinds = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
        _enum(camera, "type", kinds)
        if camera.get("type") == "simple" and _object(camera, "config") is None:
            raise _bad("camera_control.config", "is required when type is simple")


def _text2video(body: Body, model: str) -> None:
    _string(body, "prompt", required=True, max_len=_MAX_PROMPT)
    _video_common(body, model)


def _image2video(body: Body, model: str) -> None:
    _string(body, "image", required=True)
    _string(body, "image_tail")
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _list(body, "dynamic_masks", high=6)
    _list(body, "voice_list", high=2)
    _video_common(body, model)


def _multi_image2video(body: Body, model: str) -> None:
    images = _list(body, "image_list", required=True, low=1, high=4)
    for index, item in enumerate(images or ()):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not item["image"]:
            raise _bad(f"image_list[{index}].image", "is required")
    _string(body, "prompt", required=True, max_len=_MAX_PROMPT)
    _video_common(body, model)


def _video_extend(body: Body, model: str) -> None:
    _string(body, "video_id", required=True)
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _string(body, "negative_prompt", max_len=_MAX_PROMPT)
    _fraction(body, "cfg_scale")


def _lip_sync(body: Body, model: str) -> None:
    data = _object(body, "input", required=True)
    assert data is not None
    mode = _enum(data, "mode", ("text2video", "audio2video"), required=True)
    if not _present(data, "video_id") and not _present(data, "video_url"):
        raise _bad("input.video_id", "or input.video_url is required")
    if _present(data, "video_id") and _present(data, "video_url"):
        raise _bad("input.video_id", "and input.video_url are mutually exclusive")
    if mode == "text2video":
        _string(data, "text", required=True, max_len=120)
        _string(data, "voice_id", required=True)
        _enum(data, "voice_language", ("zh", "en"))
    else:
        audio_type = _enum(data, "audio_type", ("file", "url"), required=True)
        _string(data, "audio_file" if audio_type == "file" else "audio_url", required=True)


def _effects(body: Body, model: str) -> None:
    scene = _string(body, "effect_scene", required=True)
    data = _object(body, "input", required=True)
    assert data is not None
    if scene in _DUAL_PERSON_EFFECTS or scene in _CLASSIC_DUAL_EFFECTS:
        images = _list(data, "images", required=True, low=2, high=2)
        if not all(isinstance(i, str) and i for i in images or ()):
            raise _bad("input.images", "must be two images")
        allowed = ("5",) if scene in _DUAL_PERSON_EFFECTS else ("5", "10")
        _enum(data, "duration", allowed, required=True)
        if scene in _CLASSIC_DUAL_EFFECTS:
            models = ("kling-v1-6",) if scene == "fight" else _EFFECT_MODELS
            given = body.get("model_name") or models[0]
            if given not in models:
                raise SimError(1203, f"model_name {given!r} is not available for effect {scene}")
            _enum(data, "mode", ("std", "pro"))
    else:
        _string(data, "image", required=True)
        _enum(data, "duration", ("5", "10"), required=True)


def _image_generation(body: Body, model: str) -> None:
    _string(body, "prompt", required=True, max_len=_MAX_PROMPT)
    _string(body, "negative_prompt", max_len=_MAX_PROMPT)
    _string(body, "image")
    _enum(body, "image_reference", ("subject", "face"))
    _fraction(body, "image_fidelity")
    _fraction(body, "human_fidelity")
    _enum(body, "resolution", ("1k", "2k"))
    _int(body, "n", 1, 9)
    _enum(body, "aspect_ratio", _IMAGE_ASPECTS)


def _virtual_try_on(body: Body, model: str) -> None:
    _string(body, "human_image", required=True)
    _string(body, "cloth_image", required=True)


def _motion_control(body: Body, model: str) -> None:
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _string(body, "image_url", required=True)
    _string(body, "video_url", required=True)
    _enum(body, "character_orientation", ("image", "video"), required=True)
    _enum(body, "mode", ("std", "pro"), required=True)
    _enum(body, "keep_original_sound", ("yes", "no"))


def _omni_video(body: Body, model: str) -> None:
    _string(body, "prompt", required=True, max_len=_MAX_PROMPT)
    _list(body, "image_list", high=7)
    _list(body, "element_list", high=7)
    _list(body, "video_list", high=1)
    _enum(body, "mode", ("std", "pro"))
    _enum(body, "aspect_ratio", _VIDEO_ASPECTS)
    _enum(body, "duration", tuple(str(s) for s in range(3, 11)))


def _omni_image(body: Body, model: str) -> None:
    _string(body, "prompt", required=True, max_len=_MAX_PROMPT)
    _list(body, "image_list", high=10)
    _int(body, "n", 1, 9)
    _enum(body, "resolution", ("1k", "2k"))
    _enum(body, "aspect_ratio", (*_IMAGE_ASPECTS, "auto"))


def _avatar(body: Body, model: str) -> None:
    _string(body, "image", required=True)
    if _present(body, "audio_id") == _present(body, "sound_file"):
        raise _bad("audio_id", "or sound_file is required (exactly one of them)")
    _string(body, "audio_id")
    _string(body, "sound_file")
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _enum(body, "mode", ("std", "pro"))


def _multi_image2image(body: Body, model: str) -> None:
    subjects = _list(body, "subject_image_list", required=True, low=1, high=4)
    for index, item in enumerate(subjects or ()):
        if not isinstance(item, dict) or not isinstance(item.get("subject_image"), str) or not item["subject_image"]:
            raise _bad(f"subject_image_list[{index}].subject_image", "is required")
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _string(body, "scene_image")
    _string(body, "style_image")
    _int(body, "n", 1, 9)
    _enum(body, "aspect_ratio", _IMAGE_ASPECTS)


def _expand(body: Body, model: str) -> None:
    _string(body, "image", required=True)
    for side in ("up", "down", "left", "right"):
        field = f"{side}_expansion_ratio"
        if body.get(field) is None:
            raise _bad(field, "is required")
        _fraction(body, field, 0, 2)
    _string(body, "prompt", max_len=_MAX_PROMPT)
    _int(body, "n", 1, 9)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One legacy task endpoint.

    Attributes:
        path: the create/list path, e.g. ``/v1/videos/text2video``; ``{path}/{id}`` queries one task.
        result: ``"videos"`` or ``"images"``: what ``task_result`` holds.
        models: accepted ``model_name`` values (``None``: the endpoint has no ``model_name``).
        default_model: ``model_name`` when the request leaves it out.
        validate: raises :class:`SimError` (1201) for a missing or illegal parameter.
        video_ref: the body field that must name an existing video (video-extend, lip-sync), if any.
    """

    path: str
    result: str
    models: tuple[str, ...] | None
    default_model: str | None
    validate: Callable[[Body, str], None]
    video_ref: str | None = None

    @property
    def function(self) -> str:
        """What the billing ledgers call this endpoint's product (``product_function``: "Text to Video")."""
        return _FUNCTIONS[self.path]

    @property
    def pack_type(self) -> PackType:
        """The pack this endpoint's tasks draw from, by Kling's billing page (try-on, image or video)."""
        if self.path.endswith("kolors-virtual-try-on"):
            return PackType.TRY_ON
        return PackType.IMAGE if self.result == "images" else PackType.VIDEO

    def check(self, body: Body, extra_models: tuple[str, ...] = ()) -> str:
        """Validate ``body``; return the effective model name (``""`` when the endpoint has none).

        ``extra_models`` are accepted beyond the endpoint's own list (see ``SimulatorConfig.extra_models``).
        """
        model = ""
        if self.models is not None:
            given = body.get("model_name")
            if given is not None and not isinstance(given, str):
                raise _bad("model_name", "must be a string")
            model = given or self.default_model or ""
            if model not in self.models and model not in extra_models:
                raise SimError(1203, f"model_name {model!r} is not available on {self.path}")
        _common(body)
        self.validate(body, model)
        return model


_T2V_MODELS = (
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)
_I2V_MODELS = (
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)
_IMAGE_MODELS = ("kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1")
_EFFECT_MODELS = ("kling-v1", "kling-v1-5", "kling-v1-6")

_FUNCTIONS = {
    "/v1/videos/text2video": "Text to Video",
    "/v1/videos/image2video": "Image to Video",
    "/v1/videos/multi-image2video": "Multi-Image to Video",
    "/v1/videos/video-extend": "Video Extension",
    "/v1/videos/lip-sync": "Lip Sync",
    "/v1/videos/effects": "Video Effects",
    "/v1/videos/motion-control": "Motion Control",
    "/v1/videos/omni-video": "Omni Video",
    "/v1/videos/avatar/image2video": "Avatar",
    "/v1/images/generations": "Image Generation",
    "/v1/images/multi-image2image": "Multi-Image to Image",
    "/v1/images/editing/expand": "Image Expansion",
    "/v1/images/omni-image": "Omni Image",
    "/v1/images/kolors-virtual-try-on": "Virtual Try-On",
}

ENDPOINTS: Mapping[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/videos/text2video", "videos", _T2V_MODELS, "kling-v1", _text2video),
        Endpoint("/v1/videos/image2video", "videos", _I2V_MODELS, "kling-v1", _image2video),
        Endpoint("/v1/videos/multi-image2video", "videos", ("kling-v1-6",), "kling-v1-6", _multi_image2video),
        Endpoint("/v1/videos/video-extend", "videos", None, None, _video_extend, video_ref="video_id"),
        Endpoint("/v1/videos/lip-sync", "videos", None, None, _lip_sync, video_ref="input.video_id"),
        Endpoint("/v1/videos/effects", "videos", None, None, _effects),
        Endpoint("/v1/videos/motion-control", "videos", ("kling-v2-6", "kling-v3"), "kling-v2-6", _motion_control),
        Endpoint(
            "/v1/videos/omni-video",
            "videos",
            ("kling-video-o1", "kling-v3-omni"),
            "kling-video-o1",
            _omni_video,
        ),
        Endpoint("/v1/videos/avatar/image2video", "videos", None, None, _avatar),
        Endpoint("/v1/images/generations", "images", _IMAGE_MODELS, "kling-v1", _image_generation),
        Endpoint("/v1/images/multi-image2image", "images", ("kling-v2", "kling-v2-1"), "kling-v2", _multi_image2image),
        Endpoint("/v1/images/editing/expand", "images", None, None, _expand),
        Endpoint("/v1/images/omni-image", "images", ("kling-image-o1",), "kling-image-o1", _omni_image),
        Endpoint(
            "/v1/images/kolors-virtual-try-on",
            "images",
            ("kolors-virtual-try-on-v1", "kolors-virtual-try-on-v1-5"),
            "kolors-virtual-try-on-v1",
            _virtual_try_on,
        ),
    )
}


def endpoint_for(path: str) -> Endpoint | None:
    """The endpoint whose create path is ``path`` (trailing slash ignored), or ``None``."""
    return ENDPOINTS.get(path.rstrip("/"))
