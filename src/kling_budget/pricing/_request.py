"""Price a Kling ``/v1`` create request (path + JSON body) by mapping it onto :meth:`PriceTable.quote`.

Kling's documented defaults are applied for omitted fields (model per endpoint, ``mode`` std, ``duration``
5, ``n`` 1, image resolution 1k); nothing else is guessed. Where the price depends on the length of an
input the request does not measure (lip-sync video, avatar audio, motion-control reference video, an
omni edit video), the longest input Kling accepts is priced and the breakdown says so, unless the caller
passes ``input_duration``. A ``duration`` in the body never shortens such a price: Kling has no such field
there. A video extension is priced with the source video's model and mode, which Kling uses whatever the
body says: the caller passes them as ``source`` when it knows them, else the highest extension price is held.

:func:`~kling_budget.pricing.check_body_fields` (the per-endpoint allow-list) refuses fields this module does
not read but that could change Kling's charge; a caller pricing untrusted bodies runs it first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from kling_budget.designs import split_model_path
from kling_budget.errors import UnsupportedOptionError
from kling_budget.numeric import shown
from kling_budget.pricing._model_in_path import quote_model_in_path
from kling_budget.pricing._table import PriceTable
from kling_budget.types import Quote, QuoteLine

__all__ = ["SUPPORTED_PATHS", "SourceVideo", "quote_kling_request"]

Duration = int | str | Decimal | None


@dataclass(frozen=True, slots=True)
class SourceVideo:
    """The video a video extension continues: Kling extends it with this model and mode.

    Attributes:
        model: the source task's model (``"kling-v1-6"``).
        mode: its mode (``"std"``/``"pro"``), or ``None`` when not known (the higher price is held).
    """

    model: str
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class _Known:
    """What the caller knows beyond the body: an input's length, a video extension's source."""

    input_duration: Duration = None
    source: SourceVideo | None = None


_Handler = Callable[[PriceTable, Mapping[str, Any], _Known], Quote]

# Reference video limit for motion control with character_orientation "image" (Kling's motion-control documentation).
_ORIENTATION_IMAGE_MAX_SECONDS = 10


def quote_kling_request(
    table: PriceTable,
    path: str,
    body: Mapping[str, Any],
    *,
    input_duration: int | str | Decimal | None = None,
    source: SourceVideo | None = None,
) -> Quote:
    """Price a Kling create request exactly as it would be sent, on either API design.

    ``/v1`` paths are mapped field by field (below); 2026-design paths (``/text-to-video/kling-3.0`` ...)
    by :mod:`kling_budget.pricing._model_in_path`, which refuses any field it does not price.

    Args:
        table: the price table to use.
        path: the request path (``"/v1/videos/text2video"``); a full URL or a query string is accepted.
        body: the decoded JSON body.
        input_duration: seconds of the input whose length sets the output length (lip-sync video,
            avatar audio, motion-control reference video, omni edit video), when the caller knows it.
        source: for a video extension, the model and mode of the video it extends, when the caller knows
            them (they win over ``model_name``/``mode`` in the body).

    Raises:
        UnsupportedOptionError: unknown path (the message lists the supported ones) or a body field that
            cannot be priced.
        UnknownModelError: ``model_name`` (or ``effect_scene``) is not priced.
    """
    endpoint = _endpoint(path)
    if split_model_path(endpoint) is not None:
        if not isinstance(body, Mapping):
            raise UnsupportedOptionError(f"the body of {endpoint} must be a JSON object, got {type(body).__name__}")
        return quote_model_in_path(table, endpoint, body, input_duration=input_duration)
    handler = _HANDLERS.get(endpoint)
    if handler is None:
        raise UnsupportedOptionError(f"cannot price {path!r}; supported paths: {', '.join(SUPPORTED_PATHS)}")
    if not isinstance(body, Mapping):
        raise UnsupportedOptionError(f"the body of {endpoint} must be a JSON object, got {type(body).__name__}")
    return handler(table, body, _Known(input_duration, source))


def _endpoint(path: str) -> str:
    if not isinstance(path, str):
        raise UnsupportedOptionError(f"path must be a string, got {type(path).__name__}")
    text = urlsplit(path.strip()).path.rstrip("/")
    return text if text.startswith("/") else "/" + text


# --- body fields --------------------------------------------------------------------------------------


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnsupportedOptionError(f"{key} must be a string, got {type(value).__name__}")
    return value.strip() or None


def _model(body: Mapping[str, Any], default: str) -> str:
    return _text(body, "model_name") or default


def _duration(body: Mapping[str, Any], key: str = "duration") -> Duration:
    value = body.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnsupportedOptionError(f'{key} must be a string like "5", got {type(value).__name__} {value!r}')
    return value


def _n(body: Mapping[str, Any]) -> int:
    value = body.get("n")
    if value is None:
        return 1
    # Checked before converting: a count has at most two digits (Kling accepts 1-9).
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 100:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 2:
        return int(value)
    raise UnsupportedOptionError(f"n must be an integer 1-9, got {shown(value)}")


def _sound(body: Mapping[str, Any]) -> bool | str:
    value = body.get("sound")
    if value is None:
        return False
    if not isinstance(value, bool | str):
        raise UnsupportedOptionError(f'sound must be "on" or "off", got {value!r}')
    return value


def _items(body: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UnsupportedOptionError(f"{key} must be a list, got {type(value).__name__}")
    return value


def _given(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _with_note(quote: Quote, note: str, **params: str | int | bool) -> Quote:
    return dataclasses.replace(
        quote,
        breakdown=(*quote.breakdown, QuoteLine(note, 0)),
        params={**quote.params, **params},
    )


# --- handlers -----------------------------------------------------------------------------------------


def _video_handler(product: str, default_model: str, *, audio: bool) -> _Handler:
    def handle(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
        return table.quote(
            _model(body, default_model),
            product=product,
            mode=_text(body, "mode"),
            duration=_duration(body),
            resolution=_text(body, "resolution"),
            sound=_sound(body) if audio else False,
            voice_control=bool(_items(body, "voice_list")) if audio else False,
        )

    return handle


def _omni_video(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    videos = _items(body, "video_list")
    # An edited ("base") video sets the output length; Kling ignores `duration` then.
    edit = any(isinstance(v, Mapping) and v.get("refer_type") == "base" for v in videos)
    duration = _duration(body)
    if edit:
        duration = known.input_duration
    return table._quote(
        _model(body, "kling-video-o1"),
        "video",
        _text(body, "mode"),
        duration,
        _text(body, "resolution"),
        _sound(body),
        False,
        bool(videos),
        1,
        False,
        length_from_input=edit,
    )


def _video_extend(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    # Kling extends with the source video's model and mode, which the request does not carry; a caller that
    # knows the source passes it (a body's model_name/mode are pricing hints of the library's own clients).
    model: str | None
    mode: str | None
    if known.source is not None:
        model, mode = known.source.model, known.source.mode
    else:
        model, mode = _text(body, "model_name"), _text(body, "mode")
    if model is not None and mode is not None:
        return table.quote(model, product="video-extend", mode=mode)
    wanted = table.canonical_model(model, "video-extend") if model is not None else None
    candidates = [
        table.quote(row.model, product="video-extend", mode=row.mode or None)
        for row in table.rows("video-extend")
        if (wanted is None or row.model == wanted) and (mode is None or row.mode in ("", mode.lower()))
    ]
    if not candidates:
        return table.quote(model or "", product="video-extend", mode=mode)
    top = max(candidates, key=lambda q: q.units_milli)
    return _with_note(
        top,
        "the source video's model/mode are not known: priced the highest extension price",
        worst_case=True,
    )


def _motion_control(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    duration = known.input_duration
    note = None
    if duration is None and body.get("character_orientation") == "image":
        duration = _ORIENTATION_IMAGE_MAX_SECONDS
        note = (
            "length follows the reference video, which is not in the request: priced the longest accepted "
            f"with character_orientation image, {duration} s"
        )
    return table._quote(
        _model(body, "kling-v2-6"),
        "motion-control",
        _text(body, "mode"),
        duration,
        _text(body, "resolution"),
        False,
        False,
        False,
        1,
        False,
        length_from_input=True,
        assumed_note=note,
    )


def _by_length(product: str, model: str, *, mode: bool) -> _Handler:
    def handle(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
        return table._quote(
            model,
            product,
            _text(body, "mode") if mode else None,
            known.input_duration,
            None,
            False,
            False,
            False,
            1,
            False,
            length_from_input=True,
        )

    return handle


def _per_call(product: str, model: str) -> _Handler:
    def handle(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
        return table.quote(model, product=product)

    return handle


def _effects(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    scene = _text(body, "effect_scene")
    if scene is None:
        raise UnsupportedOptionError("an effects request needs effect_scene")
    model = table.canonical_model(scene, "effects")
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    # The mode matters only if the table prices this effect by mode; Kling reads it from input.mode.
    axis = table.pricing_axis(model, product="effects")
    mode = _text(inputs, "mode") or _text(body, "mode")
    return table.quote(
        model,
        product="effects",
        mode=mode if axis == "mode" else None,
        duration=_duration(inputs),
    )


def _images(product: str, default_model: str, *, image_key: str | None) -> _Handler:
    def handle(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
        return table.quote(
            _model(body, default_model),
            product=product,
            resolution=_text(body, "resolution"),
            n=_n(body),
            image_input=_given(body.get(image_key)) if image_key else False,
        )

    return handle


def _expand(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    return table.quote("kling-image-expand", product="image-expand", n=_n(body))


def _try_on(table: PriceTable, body: Mapping[str, Any], known: _Known) -> Quote:
    return table.quote(_model(body, "kolors-virtual-try-on-v1"), product="try-on")


_HANDLERS: dict[str, _Handler] = {
    "/v1/videos/text2video": _video_handler("video", "kling-v1", audio=True),
    "/v1/videos/image2video": _video_handler("video", "kling-v1", audio=True),
    "/v1/videos/multi-image2video": _video_handler("multi-image-video", "kling-v1-6", audio=False),
    "/v1/videos/multi-elements": _video_handler("multi-elements", "kling-v1-6", audio=False),
    "/v1/videos/omni-video": _omni_video,
    "/v1/videos/video-extend": _video_extend,
    "/v1/videos/motion-control": _motion_control,
    "/v1/videos/lip-sync": _by_length("lip-sync", "kling-lip-sync", mode=False),
    "/v1/videos/advanced-lip-sync": _by_length("lip-sync", "kling-advanced-lip-sync", mode=False),
    "/v1/videos/avatar/image2video": _by_length("avatar", "kling-avatar", mode=True),
    "/v1/videos/effects": _effects,
    "/v1/videos/identify-face": _per_call("identify-face", "kling-identify-face"),
    "/v1/videos/image-recognize": _per_call("image-recognize", "kling-image-recognize"),
    "/v1/images/generations": _images("image", "kling-v1", image_key="image"),
    "/v1/images/omni-image": _images("image", "kling-image-o1", image_key="image_list"),
    "/v1/images/multi-image2image": _images("multi-image-image", "kling-v2", image_key=None),
    "/v1/images/editing/expand": _expand,
    "/v1/general/ai-multi-shot": _per_call("ai-multi-shot", "kling-ai-multi-shot"),
    "/v1/images/kolors-virtual-try-on": _try_on,
    "/v1/audio/tts": _per_call("tts", "kling-tts"),
    "/v1/audio/text-to-audio": _per_call("text-to-audio", "kling-text-to-audio"),
    "/v1/audio/video-to-audio": _per_call("video-to-audio", "kling-video-to-audio"),
    "/v1/general/custom-voices": _per_call("custom-voice", "kling-custom-voice"),
}

SUPPORTED_PATHS: tuple[str, ...] = tuple(_HANDLERS)
"""The Kling ``/v1`` create paths :func:`quote_kling_request` can price."""
