"""Price a create request of Kling's 2026 design (``POST /text-to-video/kling-3.0`` ...) exactly, or refuse it.

The body is read strictly: only the fields listed here are accepted, because anything else could change what
Kling charges and would then be forwarded unpriced. Where the request leaves the price open, the dearest
reading is held and the breakdown says so: no ``settings.resolution`` holds the highest resolution the model
is priced for; an edited ``base_video`` (omni) and motion control take their length from an input video the
request does not measure, so the longest accepted input is held unless the caller knows its length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kling_budget.designs import split_model_path
from kling_budget.errors import PricingError, UnsupportedOptionError
from kling_budget.pricing._table import PriceTable
from kling_budget.types import Quote, QuoteLine

__all__ = ["quote_model_in_path"]

TOP_LEVEL = frozenset({"prompt", "negative_prompt", "contents", "settings", "options"})
SETTINGS = frozenset(
    {
        "resolution",
        "duration",
        "aspect_ratio",
        "audio",
        "multi_shot",
        "shot_type",
        "multi_prompt",
        "character_orientation",
    }
)
OPTIONS = frozenset({"callback_url", "external_task_id", "watermark_info"})
CONTENT_TYPES = frozenset(
    {"prompt", "first_frame", "last_frame", "refer_image", "element", "feature_video", "base_video", "image", "video"}
)
_VIDEO_INPUTS = frozenset({"feature_video", "base_video", "video"})
_AUDIO: dict[str, str | bool] = {"native": "native", "off": False, "original": False}
_RESOLUTIONS = ("4k", "1080p", "720p")
_MAX_CONTENTS = 64
_MAX_SECONDS = 60


def _refuse_unknown(given: Mapping[str, Any], accepted: frozenset[str], where: str) -> None:
    unknown = sorted(str(k)[:40] for k in given if k not in accepted)
    if unknown:
        raise UnsupportedOptionError(
            f"{where} field {unknown[0]!r} is not priced and could change Kling's charge; "
            f"accepted: {', '.join(sorted(accepted))}"
        )


def _mapping(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UnsupportedOptionError(f"{key} must be a JSON object, got {type(value).__name__}")
    return value


def _contents(body: Mapping[str, Any]) -> list[str]:
    value = body.get("contents")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > _MAX_CONTENTS:
        raise UnsupportedOptionError(f"contents must be a list of at most {_MAX_CONTENTS} typed items")
    kinds = []
    for item in value:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind not in CONTENT_TYPES:
            shown = str(kind)[:40] if kind is not None else "none"
            raise UnsupportedOptionError(
                f"contents item type {shown!r} is not priced; accepted: {', '.join(sorted(CONTENT_TYPES))}"
            )
        kinds.append(str(kind))
    return kinds


def _seconds(settings: Mapping[str, Any]) -> int | None:
    value = settings.get("duration")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SECONDS:
        raise UnsupportedOptionError(
            f"settings.duration must be a whole number of seconds from 1 to {_MAX_SECONDS}, got {str(value)[:20]!r}"
        )
    return value


def _audio(settings: Mapping[str, Any]) -> str | bool:
    value = settings.get("audio", "off")
    if not isinstance(value, str) or value not in _AUDIO:
        raise UnsupportedOptionError(f"settings.audio must be one of native, original, off; got {str(value)[:20]!r}")
    return _AUDIO[value]


def _text_setting(settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 20:
        raise UnsupportedOptionError(f"settings.{key} must be a short string, got {str(value)[:20]!r}")
    return value.strip().lower()


def quote_model_in_path(
    table: PriceTable,
    path: str,
    body: Mapping[str, Any],
    *,
    input_duration: int | str | Decimal | None = None,
) -> Quote:
    """Price a 2026-design create request (see the module docstring).

    Raises:
        UnsupportedOptionError: not a 2026-design path, a field that is not priced, or a value out of range.
        UnknownModelError: the model in the path is not priced.
    """
    split = split_model_path(path)
    if split is None:
        raise UnsupportedOptionError(f"cannot price {path[:80]!r}: not a /<product>/<model> create path")
    product, model = split
    _refuse_unknown(body, TOP_LEVEL, "body")
    settings, options = _mapping(body, "settings"), _mapping(body, "options")
    _refuse_unknown(settings, SETTINGS, "settings")
    _refuse_unknown(options, OPTIONS, "options")
    kinds = _contents(body)
    motion = product == "motion-control"
    edit = "base_video" in kinds
    from_input = motion or edit
    duration: int | str | Decimal | None = input_duration if from_input else _seconds(settings)
    if from_input:
        _seconds(settings)  # still validated; Kling takes the length from the input video
    resolution = _text_setting(settings, "resolution")
    choices = [resolution] if resolution is not None else list(_RESOLUTIONS)
    quotes: list[Quote] = []
    last_error: PricingError | None = None
    for choice in choices:
        try:
            quotes.append(
                table._quote(
                    model,
                    "motion-control" if motion else "video",
                    None,
                    duration,
                    choice,
                    False if motion else _audio(settings),
                    False,
                    product == "omni-video" and bool(_VIDEO_INPUTS & set(kinds)),
                    1,
                    False,
                    length_from_input=from_input,
                )
            )
        except PricingError as exc:
            last_error = exc
    if not quotes:
        assert last_error is not None
        raise last_error
    quote = max(quotes, key=lambda q: q.units_milli)
    if resolution is None:
        highest = quote.params.get("resolution")
        note = f"settings.resolution not given: priced the highest this model is priced for ({highest})"
        quote = dataclasses.replace(
            quote, breakdown=(*quote.breakdown, QuoteLine(note, 0)), params={**quote.params, "worst_case": True}
        )
    return quote
