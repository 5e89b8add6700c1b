"""Kling's 2026 design ("model in the path"): the create routes ``POST /{product}/{model}`` and their rules.

Products: ``text-to-video``, ``image-to-video``, ``omni-video`` and ``motion-control``; the model is the last
path segment (``/text-to-video/kling-3.0``). The body carries a top-level ``prompt`` (the 2.6 docs' form) or
a ``prompt`` content, typed ``contents``, ``settings`` and ``options``. A missing or illegal field is 1201
naming it (``settings.duration``); a model the product does not offer is 1203. Pure: no I/O, no state.

Kling's rules (its docs): a prompt for text-to-video, a ``first_frame`` for image-to-video, an ``image`` and
a ``video`` for motion-control, which takes no ``duration``; an omni ``base_video`` (editing) sets the
length itself (a ``duration`` given is checked, then ignored); ``settings.duration`` an integer, 5 or 10 for
2.5-turbo and 2.6, 3-15 for the 3.0 family and omni; ``resolution`` 720p/1080p, 4k for kling-3.0 and
kling-3.0-omni; ``audio`` default ``off``, ``native`` on 2.6 only at 1080p, ``original`` only with a
reference video on omni. The simulator's own choices where the docs are silent are listed in
:mod:`kling_budget.simulator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kling_budget.designs import split_model_path
from kling_budget.simulator.fields import Body, bad, enum, integer, items, obj, string
from kling_budget.simulator.protocol import SimError
from kling_budget.types import PackType

__all__ = ["PRODUCTS", "Model", "Product", "Request", "parse_request", "route_for"]

_MAX_PROMPT = 2500
_MAX_URL = 10 * 1024 * 1024  # a base64 image of up to 10 MB, as Kling accepts for images
_MAX_CONTENTS = 32
_ASPECTS = ("16:9", "9:16", "1:1")
_AUDIO = ("native", "original", "off")
_CONTENT_TYPES = (
    "prompt",
    "first_frame",
    "last_frame",
    "refer_image",
    "element",
    "feature_video",
    "base_video",
    "image",
    "video",
)
_REFERENCE_VIDEOS = ("feature_video", "base_video", "video")


@dataclass(frozen=True, slots=True)
class Model:
    """One model a product offers, with the settings it accepts.

    Attributes:
        durations: accepted ``settings.duration`` values (seconds).
        resolutions: accepted ``settings.resolution`` values.
        native_audio: whether ``audio: native`` is offered.
        native_needs_1080p: ``native`` audio only at 1080p (kling-2.6).
        longest_input: seconds of the longest input video whose length sets the output (omni edits,
            motion-control references), assumed when the price table does not say.
    """

    durations: tuple[int, ...]
    resolutions: tuple[str, ...]
    native_audio: bool
    native_needs_1080p: bool = False
    longest_input: int | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """One create route family of the 2026 design.

    Attributes:
        name: the first path segment (``"text-to-video"``).
        function: what the billing ledgers call it (``product_function``: ``"Text to Video"``).
        models: the path models it offers.
        contents: content types accepted, with the most of each a request may carry.
        default_resolution: ``settings.resolution`` when the request leaves it out.
    """

    name: str
    function: str
    models: Mapping[str, Model]
    contents: Mapping[str, int]
    default_resolution: str = "720p"

    @property
    def pack_type(self) -> PackType:
        """Every 2026 product generates video and draws on the video pack."""
        return PackType.VIDEO


@dataclass(frozen=True, slots=True)
class Request:
    """A validated create request of the 2026 design.

    ``duration`` is ``None`` when the output length follows an input video (motion-control, omni edit);
    ``reference_video`` tells whether a video is among the inputs.
    """

    product: Product
    model: str
    prompt: str | None
    contents: tuple[str, ...]
    resolution: str
    duration: int | None
    audio: str
    reference_video: bool
    edit: bool
    orientation: str | None
    callback_url: str | None
    external_task_id: str | None
    watermark: bool

    @property
    def path(self) -> str:
        """The create path, e.g. ``/text-to-video/kling-3.0``."""
        return f"/{self.product.name}/{self.model}"

    def pricing_body(self) -> dict[str, Any]:
        """The request as Kling bills it: its content types and effective settings (defaults filled in)."""
        settings: dict[str, Any] = {"resolution": self.resolution, "audio": self.audio}
        if self.duration is not None:
            settings["duration"] = self.duration
        if self.orientation is not None:
            settings["character_orientation"] = self.orientation
        return {"contents": [{"type": kind} for kind in self.contents], "settings": settings}


_FIVE_OR_TEN = (5, 10)
_THREE_TO_FIFTEEN = tuple(range(3, 16))
_HD = ("720p", "1080p")
_UP_TO_4K = ("720p", "1080p", "4k")

_VIDEO_MODELS = {
    "kling-2.5-turbo": Model(_FIVE_OR_TEN, _HD, native_audio=False),
    "kling-2.6": Model(_FIVE_OR_TEN, _HD, native_audio=True, native_needs_1080p=True),
    "kling-3.0": Model(_THREE_TO_FIFTEEN, _UP_TO_4K, native_audio=True),
    "kling-3.0-turbo": Model(_THREE_TO_FIFTEEN, _HD, native_audio=True),
}
_OMNI_3 = Model(_THREE_TO_FIFTEEN, _UP_TO_4K, native_audio=True, longest_input=15)
_MOTION = Model((), _HD, native_audio=False, longest_input=30)

PRODUCTS: Mapping[str, Product] = {
    p.name: p
    for p in (
        Product("text-to-video", "Text to Video", _VIDEO_MODELS, {"prompt": 1, "refer_image": 7, "element": 7}),
        Product(
            "image-to-video",
            "Image to Video",
            _VIDEO_MODELS,
            {"prompt": 1, "first_frame": 1, "last_frame": 1, "refer_image": 7, "element": 7},
        ),
        Product(
            "omni-video",
            "Omni Video",
            {
                "kling-3.0-omni": _OMNI_3,
                "kling-v3-omni": _OMNI_3,
                "kling-o1": Model(_THREE_TO_FIFTEEN, _HD, native_audio=False, longest_input=10),
            },
            {
                "prompt": 1,
                "first_frame": 1,
                "last_frame": 1,
                "refer_image": 7,
                "element": 7,
                "feature_video": 1,
                "base_video": 1,
            },
            default_resolution="1080p",
        ),
        Product(
            "motion-control",
            "Motion Control",
            {"kling-2.6": _MOTION, "kling-3.0": _MOTION},
            {"prompt": 1, "image": 1, "video": 1},
        ),
    )
}


def route_for(path: str) -> tuple[Product, str] | None:
    """``(product, model)`` for a create path ``/{product}/{model}``, or ``None`` if no product is there.

    The model is not checked here (see :func:`parse_request`).
    """
    split = split_model_path(path)
    if split is None:
        return None
    return PRODUCTS[split[0]], split[1]


def parse_request(path: str, body: Any) -> Request:
    """Validate a create request of the 2026 design.

    Raises:
        SimError: 1202 no product at ``path``; 1200 ``body`` is not a JSON object; 1203 the product does not
            offer the model; 1201 naming the first missing or illegal field.
    """
    route = route_for(path)
    if route is None:
        raise SimError(1202, f"no task endpoint at {path}")
    product, model_name = route
    if not isinstance(body, dict):
        raise SimError(1200, "the request body must be a JSON object")
    model = product.models.get(model_name)
    if model is None:
        raise SimError(1203, f"model {model_name!r} does not exist for {product.name}")
    counts, prompt, kinds = _contents(product, body)
    string(body, "negative_prompt", max_len=_MAX_PROMPT)
    settings = obj(body, "settings") or {}
    options = obj(body, "options") or {}
    reference_video = any(counts.get(kind) for kind in _REFERENCE_VIDEOS)
    edit = bool(counts.get("base_video"))
    length_from_input = product.name == "motion-control" or edit
    duration = _duration(settings, model, length_from_input, product)
    resolution = enum(settings, "resolution", _UP_TO_4K, prefix="settings.") or product.default_resolution
    if resolution not in model.resolutions:
        raise bad("settings.resolution", f"must be one of {', '.join(model.resolutions)} for {model_name}")
    audio = _audio(settings, product, model, model_name, resolution, reference_video)
    enum(settings, "aspect_ratio", _ASPECTS, prefix="settings.")
    if "multi_shot" in settings and not isinstance(settings["multi_shot"], bool):
        raise bad("settings.multi_shot", "must be a boolean")
    orientation = enum(settings, "character_orientation", ("image", "video"), prefix="settings.")
    watermark = obj(options, "watermark_info", prefix="options.") or {}
    if not isinstance(watermark.get("enabled", False), bool):
        raise bad("options.watermark_info.enabled", "must be a boolean")
    return Request(
        product=product,
        model=model_name,
        prompt=prompt,
        contents=kinds,
        resolution=resolution,
        duration=duration,
        audio=audio,
        reference_video=reference_video,
        edit=edit,
        orientation=orientation,
        callback_url=string(options, "callback_url", max_len=2048, prefix="options."),
        external_task_id=string(options, "external_task_id", max_len=255, prefix="options."),
        watermark=bool(watermark.get("enabled", False)),
    )


def _contents(product: Product, body: Body) -> tuple[dict[str, int], str | None, tuple[str, ...]]:
    """Content types given and how often; the prompt text (top-level or a ``prompt`` content); the types."""
    prompt = string(body, "prompt", max_len=_MAX_PROMPT)
    counts: dict[str, int] = {}
    kinds: list[str] = []
    for index, item in enumerate(items(body, "contents", high=_MAX_CONTENTS) or ()):
        where = f"contents[{index}]."
        if not isinstance(item, dict):
            raise bad(f"contents[{index}]", "must be an object")
        kind = enum(item, "type", _CONTENT_TYPES, required=True, prefix=where)
        assert kind is not None
        if kind not in product.contents:
            raise bad(f"{where}type", f"{kind!r} is not accepted by {product.name}")
        counts[kind] = counts.get(kind, 0) + 1
        kinds.append(kind)
        if counts[kind] > product.contents[kind]:
            raise bad("contents", f"may hold at most {product.contents[kind]} {kind} item(s)")
        if kind == "prompt":
            if prompt is not None:
                raise bad("prompt", "is given twice (top-level and in contents); give it once")
            prompt = string(item, "text", required=True, max_len=_MAX_PROMPT, prefix=where)
        elif kind == "element":
            string(item, "id", required=True, max_len=255, prefix=where)
        else:
            string(item, "url", required=True, max_len=_MAX_URL, prefix=where)
            string(item, "id", max_len=255, prefix=where)
    if counts.get("feature_video") and counts.get("base_video"):
        raise bad("contents", "may hold a feature_video or a base_video, not both")
    if counts.get("last_frame") and not counts.get("first_frame"):
        raise bad("contents", "has a last_frame without a first_frame")
    required = {
        "text-to-video": ("prompt",),
        "image-to-video": ("first_frame",),
        "omni-video": ("prompt",),
        "motion-control": ("image", "video"),
    }[product.name]
    for kind in required:
        if kind == "prompt" and prompt is None:
            raise bad("prompt", f"is required for {product.name} (top-level or a prompt content)")
        if kind != "prompt" and not counts.get(kind):
            raise bad("contents", f"needs a {kind} item for {product.name}")
    return counts, prompt, tuple(kinds)


def _duration(settings: Body, model: Model, length_from_input: bool, product: Product) -> int | None:
    if product.name == "motion-control" and settings.get("duration") is not None:
        raise bad("settings.duration", "is not accepted: the output length follows the reference video")
    duration = integer(settings, "duration", 1, 3600, prefix="settings.")
    if duration is None:
        return None if length_from_input else 5
    if duration not in model.durations:
        accepted = ", ".join(str(d) for d in model.durations)
        if model.durations == _THREE_TO_FIFTEEN:
            accepted = "3 to 15"
        raise bad("settings.duration", f"must be {accepted} seconds for this model; got {duration}")
    return None if length_from_input else duration


def _audio(
    settings: Body, product: Product, model: Model, model_name: str, resolution: str, reference_video: bool
) -> str:
    audio = enum(settings, "audio", _AUDIO, prefix="settings.") or "off"
    if audio == "native":
        if not model.native_audio:
            raise bad("settings.audio", f"'native' is not offered by {model_name} on {product.name}")
        if model.native_needs_1080p and resolution != "1080p":
            raise bad("settings.audio", f"'native' with {model_name} needs resolution 1080p")
        if reference_video:
            raise bad("settings.audio", "'native' is not offered with a reference video; use original or off")
    if audio == "original" and not (product.name == "omni-video" and reference_video):
        raise bad("settings.audio", "'original' needs a reference video on omni-video")
    return audio
