"""Pricing: the packaged table against the reference numbers, aliases, errors and user price files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from kling_budget.errors import (
    InvalidInputError,
    PriceTableError,
    PricingError,
    UnknownModelError,
    UnsupportedOptionError,
)
from kling_budget.pricing import PriceTable
from kling_budget.types import PackType


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


def usd(quote) -> Decimal:
    return quote.usd


# --- reference §5.2: legacy model_name video models ---------------------------------------------------

LEGACY_VIDEO = [
    # model, mode, duration, sound, voice_control, units, usd
    ("kling-v1", "std", 5, False, False, "1", "0.14"),
    ("kling-v1", "std", 10, False, False, "2", "0.28"),
    ("kling-v1", "pro", 5, False, False, "3.5", "0.49"),
    ("kling-v1", "pro", 10, False, False, "7", "0.98"),
    ("kling-v1-5", "std", 5, False, False, "2", "0.28"),
    ("kling-v1-5", "pro", 10, False, False, "7", "0.98"),
    ("kling-v1-6", "std", 10, False, False, "4", "0.56"),
    ("kling-v1-6", "pro", 5, False, False, "3.5", "0.49"),
    ("kling-v2-1", "std", 5, False, False, "2", "0.28"),
    ("kling-v2-1", "pro", 5, False, False, "3.5", "0.49"),
    ("kling-v2-master", None, 5, False, False, "10", "1.40"),
    ("kling-v2-master", "pro", 10, False, False, "20", "2.80"),
    ("kling-v2-1-master", None, 5, False, False, "10", "1.40"),
    ("kling-v2-1-master", "std", 10, False, False, "20", "2.80"),
    ("kling-v2-5-turbo", "std", 5, False, False, "1.5", "0.21"),
    ("kling-v2-5-turbo", "std", 10, False, False, "3", "0.42"),
    ("kling-v2-5-turbo", "pro", 5, False, False, "2.5", "0.35"),
    ("kling-v2-5-turbo", "pro", 10, False, False, "5", "0.70"),
    ("kling-v2-6", "std", 5, False, False, "1.5", "0.21"),
    ("kling-v2-6", "std", 10, False, False, "3", "0.42"),
    ("kling-v2-6", "pro", 5, False, False, "2.5", "0.35"),
    ("kling-v2-6", "pro", 10, False, False, "5", "0.70"),
    ("kling-v2-6", "pro", 5, True, False, "5", "0.70"),
    ("kling-v2-6", "pro", 10, "on", False, "10", "1.40"),
    ("kling-v2-6", "pro", 5, "native", True, "6", "0.84"),
    ("kling-v2-6", "pro", 10, True, True, "12", "1.68"),
]


@pytest.mark.parametrize(("model", "mode", "duration", "sound", "voice", "units", "dollars"), LEGACY_VIDEO)
def test_legacy_video_prices_match_reference(table, model, mode, duration, sound, voice, units, dollars):
    """Every legacy video row prices to the units and dollars of reference §5.2."""
    quote = table.quote(model, mode=mode, duration=duration, sound=sound, voice_control=voice)
    assert quote.units == Decimal(units)
    assert quote.usd == Decimal(dollars)
    assert quote.pack_type is PackType.VIDEO


OTHER_LEGACY = [
    # product, model, mode, duration, units, usd
    ("multi-image-video", "kling-v1-6", "std", 5, "2", "0.28"),
    ("multi-image-video", "kling-v1-6", "std", 10, "4", "0.56"),
    ("multi-image-video", "kling-v1-6", "pro", 5, "3.5", "0.49"),
    ("multi-image-video", "kling-v1-6", "pro", 10, "7", "0.98"),
    ("multi-elements", "kling-v1-6", "std", 5, "3", "0.42"),
    ("multi-elements", "kling-v1-6", "std", 10, "6", "0.84"),
    ("multi-elements", "kling-v1-6", "pro", 5, "5", "0.70"),
    ("multi-elements", "kling-v1-6", "pro", 10, "10", "1.40"),
    ("video-extend", "kling-v1", "std", None, "2", "0.28"),
    ("video-extend", "kling-v1", "pro", None, "3.5", "0.49"),
    ("video-extend", "kling-v1-5", "std", None, "2", "0.28"),
    ("video-extend", "kling-v1-6", "pro", None, "3.5", "0.49"),
    ("motion-control", "kling-v2-6", "std", 10, "5", "0.70"),
    ("motion-control", "kling-v2-6", "pro", 10, "8", "1.12"),
    ("motion-control", "kling-v3", "std", 5, "4.5", "0.63"),
    ("motion-control", "kling-v3", "pro", 5, "6", "0.84"),
]


@pytest.mark.parametrize(("product", "model", "mode", "duration", "units", "dollars"), OTHER_LEGACY)
def test_other_video_products_match_reference(table, product, model, mode, duration, units, dollars):
    """Multi-image, multi-element, extension and motion-control prices match reference §5.2."""
    quote = table.quote(model, product=product, mode=mode, duration=duration)
    assert (quote.units, quote.usd) == (Decimal(units), Decimal(dollars))


# --- reference §5.3: per-second 3.x / Omni models -----------------------------------------------------

PER_SECOND = [
    # model, resolution, sound, video_input, units per second
    ("kling-v3", "720p", False, False, "0.6"),
    ("kling-v3", "1080p", False, False, "0.8"),
    ("kling-v3", "4k", False, False, "3.0"),
    ("kling-v3", "720p", True, False, "0.9"),
    ("kling-v3", "1080p", True, False, "1.2"),
    ("kling-v3", "4k", True, False, "3.0"),
    ("kling-3.0-turbo", "720p", True, False, "0.8"),
    ("kling-3.0-turbo", "1080p", True, False, "1.0"),
    ("kling-v3-omni", "720p", False, False, "0.6"),
    ("kling-v3-omni", "1080p", False, False, "0.8"),
    ("kling-v3-omni", "4k", False, False, "3.0"),
    ("kling-v3-omni", "720p", True, False, "0.8"),
    ("kling-v3-omni", "1080p", True, False, "1.0"),
    ("kling-v3-omni", "4k", True, False, "3.0"),
    ("kling-v3-omni", "720p", False, True, "0.9"),
    ("kling-v3-omni", "1080p", False, True, "1.2"),
    ("kling-v3-omni", "4k", False, True, "3.0"),
    ("kling-video-o1", "720p", False, False, "0.6"),
    ("kling-video-o1", "1080p", False, False, "0.8"),
    ("kling-video-o1", "720p", False, True, "0.9"),
    ("kling-video-o1", "1080p", False, True, "1.2"),
]


@pytest.mark.parametrize("seconds", [3, 5, 10, 15])
@pytest.mark.parametrize(("model", "resolution", "sound", "video", "rate"), PER_SECOND)
def test_per_second_models_match_reference(table, model, resolution, sound, video, rate, seconds):
    """3.x and Omni models cost the §5.3 rate times whole seconds, at $0.14 per unit, for 3-15 s."""
    quote = table.quote(model, resolution=resolution, sound=sound, video_input=video, duration=seconds)
    assert quote.units == Decimal(rate) * seconds
    assert quote.usd == Decimal(rate) * seconds * Decimal("0.14")


def test_reference_headline_examples(table):
    """The brief's headline numbers: v3 4K 10 s, v3 1080p + audio 5 s, image v2 n=3, try-on."""
    assert (
        table.quote("kling-v3", resolution="4k", duration=10).units_milli,
        table.quote("kling-v3", resolution="4k", duration=10).usd,
    ) == (30_000, Decimal("4.20"))
    audio = table.quote("kling-v3", resolution="1080p", sound=True, duration=5)
    assert (audio.units_milli, audio.usd) == (6000, Decimal("0.84"))
    image = table.quote("kling-v2", product="image", n=3)
    assert (image.units_milli, image.usd, image.pack_type) == (12_000, Decimal("0.042"), PackType.IMAGE)
    try_on = table.quote("kolors-virtual-try-on-v1", product="try-on")
    assert (try_on.units_milli, try_on.usd, try_on.pack_type) == (1000, Decimal("0.07"), PackType.TRY_ON)


def test_v3_mode_maps_to_resolution(table):
    """For resolution-priced models, mode std means 720p, pro 1080p, and the quote records both."""
    quote = table.quote("kling-v3", mode="pro", duration=5, sound="on")
    assert quote.units_milli == 6000
    assert quote.params["mode"] == "pro"
    assert quote.params["resolution"] == "1080p"
    assert table.quote("kling-v3", mode="std", duration=5).units_milli == 3000


def test_legacy_model_accepts_resolution_as_mode(table):
    """A legacy mode-priced model accepts 720p/1080p as std/pro (billing rows carry resolution)."""
    assert table.quote("kling-v2-6", resolution="1080p", duration=5).params["mode"] == "pro"
    assert table.quote("kling-v2-6", resolution="720P").units_milli == 1500


# --- reference §5.4: other products -------------------------------------------------------------------

OTHER_PRODUCTS = [
    # product, model, kwargs, units, usd
    ("avatar", "kling-avatar", {"mode": "std", "duration": 10}, "4", "0.56"),
    ("avatar", "kling-avatar", {"mode": "pro", "duration": 2}, "1.6", "0.224"),
    ("lip-sync", "kling-lip-sync", {"duration": 5}, "0.5", "0.07"),
    ("identify-face", "kling-identify-face", {}, "0.05", "0.007"),
    ("tts", "kling-tts", {}, "0.05", "0.007"),
    ("text-to-audio", "kling-text-to-audio", {}, "0.25", "0.035"),
    ("video-to-audio", "kling-video-to-audio", {}, "0.25", "0.035"),
    ("custom-voice", "kling-custom-voice", {}, "0.05", "0.007"),
    ("image-recognize", "kling-image-recognize", {}, "0.1", "0.014"),
    ("image", "kling-v1", {}, "1", "0.0035"),
    ("image", "kling-v1", {"image_input": True}, "1", "0.0035"),
    ("image", "kling-v1-5", {}, "4", "0.014"),
    ("image", "kling-v1-5", {"image_input": True}, "8", "0.028"),
    ("image", "kling-v2", {"resolution": "2k"}, "4", "0.014"),
    ("image", "kling-v2", {"image_input": True}, "8", "0.028"),
    ("image", "kling-v2-new", {"image_input": True}, "8", "0.028"),
    ("image", "kling-v2-1", {}, "4", "0.014"),
    ("image", "kling-v2-1", {"image_input": True, "resolution": "2k"}, "8", "0.028"),
    ("image", "kling-image-o1", {}, "8", "0.028"),
    ("image", "kling-image-o1", {"image_input": True, "resolution": "2k"}, "8", "0.028"),
    ("image", "kling-v3", {"resolution": "2k"}, "8", "0.028"),
    ("image", "kling-v3-omni", {"resolution": "1k"}, "8", "0.028"),
    ("image", "kling-v3-omni", {"resolution": "4k"}, "16", "0.056"),
    ("multi-image-image", "kling-v2", {}, "16", "0.056"),
    ("multi-image-image", "kling-v2-1", {"resolution": "2k"}, "16", "0.056"),
    ("image-expand", "kling-image-expand", {}, "8", "0.028"),
    ("ai-multi-shot", "kling-ai-multi-shot", {}, "20", "0.07"),
    ("try-on", "kolors-virtual-try-on-v1", {}, "1", "0.07"),
    ("try-on", "kolors-virtual-try-on-v1-5", {}, "1", "0.07"),
]


@pytest.mark.parametrize(("product", "model", "kwargs", "units", "dollars"), OTHER_PRODUCTS)
def test_other_products_match_reference(table, product, model, kwargs, units, dollars):
    """Avatar, lip-sync, audio, recognition, image and try-on prices match reference §5.4."""
    quote = table.quote(model, product=product, **kwargs)
    assert (quote.units, quote.usd) == (Decimal(units), Decimal(dollars))


@pytest.mark.parametrize(("n", "units"), [(1, 4000), (3, 12_000), (9, 36_000)])
def test_images_multiply_by_n(table, n, units):
    """Image prices are per output image, times n."""
    assert table.quote("kling-v2-1", product="image", n=n).units_milli == units


@pytest.mark.parametrize(
    ("duration", "blocks"),
    [(1, 1), (2, 1), (5, 1), ("5.1", 2), (Decimal("9.99"), 2), (10, 2), (11, 3), (60, 12)],
)
def test_lip_sync_charges_per_started_five_seconds(table, duration, blocks):
    """Lip sync costs 0.5 U per started 5 s, with a minimum of one block."""
    quote = table.quote("kling-lip-sync", product="lip-sync", duration=duration)
    assert quote.units_milli == 500 * blocks


@pytest.mark.parametrize("pack", list(PackType))
def test_list_usd_per_unit(table, pack):
    """Each pack type has its list USD price per unit."""
    expected = {"video": "0.14", "image": "0.0035", "try_on": "0.07"}[pack.value]
    assert table.list_usd_per_unit(pack) == Decimal(expected)
    assert table.list_usd_per_unit(pack.value) == Decimal(expected)


def test_list_usd_per_unit_unknown_pack(table):
    """An unknown pack type names the accepted ones."""
    with pytest.raises(UnsupportedOptionError, match="accepted: video, image, try_on"):
        table.list_usd_per_unit("audio")


# --- quote shape --------------------------------------------------------------------------------------


def test_quote_carries_exact_amounts_breakdown_and_provenance(table):
    """A quote has integer milli-units, nano-dollars, a readable breakdown and where the price comes from."""
    quote = table.quote("kling-v2-6", mode="pro", duration=5, sound=True)
    assert quote.units_milli == 5000 and quote.list_usd_nano == 700_000_000
    assert [line.label for line in quote.breakdown] == ["kling-v2-6 pro + native audio: 1.0 U/s × 5 s"]
    assert sum(line.units_milli for line in quote.breakdown) == quote.units_milli
    assert quote.price_version == table.version == "2026-11-27"
    assert "PRICE-V" in quote.source and quote.effective == "2026-11-27"
    assert quote.model == "kling-v2-6" and quote.product == "video"


def test_quote_params_are_normalised_and_json_serialisable(table):
    """params holds the normalised request as JSON-ready str/int/bool values."""
    quote = table.quote("Kling-V2.6", mode=" PRO ", duration="10", sound="on", voice_control=True)
    assert dict(quote.params) == {
        "mode": "pro",
        "duration": 10,
        "sound": "native",
        "voice_control": True,
        "video_input": False,
        "image_input": False,
        "n": 1,
    }
    json.dumps(dict(quote.params))
    assert all(isinstance(v, str | int | bool) for v in quote.params.values())


def test_no_float_in_quote(table):
    """Nothing in a quote is a float."""
    quote = table.quote("kling-v3", resolution="720p", duration="4.5")
    values = [quote.units_milli, quote.list_usd_nano, *quote.params.values()]
    values += [line.units_milli for line in quote.breakdown]
    assert not any(isinstance(v, float) for v in values)


@pytest.mark.parametrize("row", PriceTable.default().rows(), ids=lambda r: f"{r.product}-{r.label}")
def test_every_row_quotes_with_exact_usd(table, row):
    """Every packaged row can be quoted, and its USD is units × the pack's list price, exactly."""
    duration = None
    if row.per in ("second", "clip", "block"):
        duration = row.durations[0] if row.durations else (row.min_duration or 5)
    quote = table.quote(
        row.model,
        product=row.product,
        mode=row.mode or None,
        resolution=row.resolution or None,
        duration=duration,
        sound=row.sound,
        voice_control=row.voice_control,
        video_input=row.video_input,
        image_input=row.image_input,
    )
    assert quote.units_milli > 0
    price = table.list_usd_per_unit(quote.pack_type)
    assert quote.usd == quote.units * price


# --- defaults and durations ---------------------------------------------------------------------------


def test_kling_defaults_apply_and_are_shown(table):
    """Omitted mode and duration take Kling's documented defaults (std, 5 s) and the breakdown says so."""
    quote = table.quote("kling-v2-6")
    assert quote.units_milli == 1500
    assert quote.params["mode"] == "std" and quote.params["duration"] == 5
    assert quote.breakdown[0].label.endswith("(default duration)")


def test_omni_default_mode_is_pro(table):
    """kling-video-o1 and kling-v3-omni default to pro (1080p), as Kling's omni-video endpoint does."""
    assert table.quote("kling-video-o1").params["resolution"] == "1080p"
    assert table.quote("kling-v3-omni", duration=5).units_milli == 4000


def test_image_default_resolution_is_1k(table):
    """Images default to resolution 1k."""
    assert table.quote("kling-v3-omni", product="image").params["resolution"] == "1k"


@pytest.mark.parametrize("duration", [5, "5", " 5 ", "5.0", Decimal("5"), Decimal("5.000")])
def test_duration_spellings(table, duration):
    """Durations may be given as int, string or Decimal when they are whole seconds."""
    assert table.quote("kling-v2-6", duration=duration).params["duration"] == 5


def test_non_integer_seconds_round_up(table):
    """Per-second models round a fractional duration up to whole seconds and say so."""
    quote = table.quote("kling-v3", resolution="720p", duration="5.04")
    assert quote.units_milli == 600 * 6
    assert quote.params["duration"] == 6 and quote.params["duration_requested"] == "5.04"
    assert "5.04 s rounded up" in quote.breakdown[0].label


def test_length_from_input_prices_longest_accepted_input(table):
    """Without a duration, products whose length follows an input price the longest accepted input."""
    quote = table.quote("kling-lip-sync", product="lip-sync")
    assert quote.units_milli == 1000
    assert quote.params["duration_assumed"] is True
    assert quote.breakdown[1].units_milli == 0 and "longest accepted input, 10 s" in quote.breakdown[1].label
    assert table.quote("kling-avatar", product="avatar", mode="pro").units_milli == 240_000


def test_per_call_products_ignore_duration(table):
    """Per-call products are priced the same whatever duration is given."""
    assert table.quote("kling-text-to-audio", product="text-to-audio", duration=10).units_milli == 250


# --- aliases ------------------------------------------------------------------------------------------

ALIASES = [
    ("kling-v1.5", "video", "kling-v1-5"),
    ("kling-1.6", "video", "kling-v1-6"),
    ("kling-v2.1-master", "video", "kling-v2-1-master"),
    ("kling-2.0-master", "video", "kling-v2-master"),
    ("kling-v2.5-turbo", "video", "kling-v2-5-turbo"),
    ("kling-v2.6", "video", "kling-v2-6"),
    ("kling-2.6", "motion-control", "kling-v2-6"),
    ("kling-v3.0", "video", "kling-v3"),
    ("kling-3.0", "motion-control", "kling-v3"),
    ("kling-v3-turbo", "video", "kling-3.0-turbo"),
    ("kling-3.0-omni", "video", "kling-v3-omni"),
    ("kling-o1", "video", "kling-video-o1"),
    ("kling-o1", "image", "kling-image-o1"),
    ("kling-image-v3", "image", "kling-v3"),
    ("kling-image-v2-1", "multi-image-image", "kling-v2-1"),
    ("  KLING-V2.6\t", "video", "kling-v2-6"),
    ("Kling-V2-6", "video", "kling-v2-6"),
    ("kolors-virtual-try-on-v1.5", "try-on", "kolors-virtual-try-on-v1-5"),
]


@pytest.mark.parametrize(("alias", "product", "canonical"), ALIASES)
def test_aliases_resolve(table, alias, product, canonical):
    """Common spellings resolve to canonical names, case-insensitively and ignoring whitespace."""
    assert table.canonical_model(alias, product) == canonical
    assert table.quote(alias, product=product, mode="pro" if product == "motion-control" else None).model == (canonical)


def test_alias_without_product(table):
    """Without a product, unambiguous names resolve and ambiguous ones name the candidates."""
    assert table.canonical_model("kling-v2.6") == "kling-v2-6"
    with pytest.raises(UnknownModelError, match=r"'kling-o1' is ambiguous: kling-video-o1 \(video\)"):
        table.canonical_model("kling-o1")
    with pytest.raises(UnknownModelError, match="unknown model 'nope'; accepted: kling-v1, "):
        table.canonical_model("nope")


def test_image_alias_does_not_leak_into_video(table):
    """kling-image-v3 is an image alias only; as a video model it is unknown."""
    with pytest.raises(UnknownModelError, match="accepted for video"):
        table.canonical_model("kling-image-v3", "video")


def test_kling_v2_5_is_not_an_alias(table):
    """kling-v2-5 is ambiguous (Kling lists a separate kling-v2-5), so it is refused, naming the turbo model."""
    with pytest.raises(UnknownModelError, match="kling-v2-5-turbo"):
        table.quote("kling-v2-5")


def test_models_and_products(table):
    """models() lists canonical names in file order; products() lists declared products."""
    assert table.models("video")[:3] == ["kling-v1", "kling-v1-5", "kling-v1-6"]
    assert "kling-video-o1" in table.models("video")
    assert table.models("effects") == []
    assert "kling-tts" in table.models()
    assert table.products()[0] == "video"
    assert {"lip-sync", "image", "try-on", "effects"} <= set(table.products())


# --- errors -------------------------------------------------------------------------------------------

ERRORS = [
    (dict(model="kling-v9"), UnknownModelError, "unknown model 'kling-v9'; accepted for video: kling-v1, kling-v1-5,"),
    (dict(model="kling-v2", product="video"), UnknownModelError, "'kling-v2' is priced for image"),
    (dict(model="kling-v1", product="music"), UnsupportedOptionError, "unknown product 'music'; accepted: video, "),
    (dict(model="kling-v2-6", mode="ultra"), UnsupportedOptionError, "priced for modes std, pro; got 'ultra'"),
    (
        dict(model="kling-v2-6", mode="std", sound=True),
        UnsupportedOptionError,
        "kling-v2-6 with native audio is priced only for mode pro; got std",
    ),
    (
        dict(model="kling-v2-6", sound="on"),
        UnsupportedOptionError,
        "priced only for mode pro; got std (the default)",
    ),
    (dict(model="kling-v2-6", duration=7), UnsupportedOptionError, "priced for durations 5, 10 s; got 7"),
    (dict(model="kling-v2-6", duration="5.5"), UnsupportedOptionError, "priced for durations 5, 10 s; got 5.5"),
    (dict(model="kling-v3", duration=20), UnsupportedOptionError, "priced for durations 3-15 s; got 20"),
    (dict(model="kling-v3", duration=2), UnsupportedOptionError, "priced for durations 3-15 s; got 2"),
    (dict(model="kling-v3", resolution="8k"), UnsupportedOptionError, "resolutions 720p, 1080p, 4k; got '8k'"),
    (dict(model="kling-v3", mode="turbo"), UnsupportedOptionError, "(modes std, pro, 4k); got mode 'turbo'"),
    (
        dict(model="kling-v3", mode="std", resolution="1080p"),
        UnsupportedOptionError,
        "mode 'std' (720p) contradicts resolution '1080p'",
    ),
    (dict(model="kling-v2-6", mode="std", resolution="1080p"), UnsupportedOptionError, "contradicts"),
    (dict(model="kling-v2-6", resolution="4k"), UnsupportedOptionError, "priced by mode (std, pro)"),
    (dict(model="kling-v1", sound=True), UnsupportedOptionError, "kling-v1 is not priced with native audio"),
    (dict(model="kling-v2-6", video_input=True), UnsupportedOptionError, "not priced with video input"),
    (
        dict(model="kling-v2-6", mode="pro", voice_control=True),
        UnsupportedOptionError,
        "kling-v2-6 with voice control is priced only with native audio",
    ),
    (
        dict(model="kling-v3-omni", sound=True, video_input=True),
        UnsupportedOptionError,
        "kling-v3-omni with video input is priced only without native audio",
    ),
    (
        dict(model="kling-v3", resolution="4k", sound=True, voice_control=True),
        UnsupportedOptionError,
        "with native audio + voice control is priced only for resolution 720p, 1080p; got 4k",
    ),
    (dict(model="kling-v2-6", sound="loud"), UnsupportedOptionError, "sound must be true, false, 'on', 'off'"),
    (dict(model="kling-v2-6", voice_control="yes"), UnsupportedOptionError, "voice_control must be true or false"),
    (dict(model="kling-v2-6", n=2), UnsupportedOptionError, "n applies only to per-image products"),
    (dict(model="kling-v2", product="image", n=10), UnsupportedOptionError, "priced for n 1-9 images; got n=10"),
    (dict(model="kling-v2", product="image", n=0), UnsupportedOptionError, "priced for n 1-9 images; got n=0"),
    (dict(model="kling-v2", product="image", n=True), UnsupportedOptionError, "n must be an integer"),
    (
        dict(model="kolors-virtual-try-on-v1", product="try-on", n=2),
        UnsupportedOptionError,
        "priced for n 1 images; got n=2",
    ),
    (dict(model="kling-v2-new", product="image"), UnsupportedOptionError, "not priced without image input"),
    (dict(model="kling-v3", product="image", resolution="4k"), UnsupportedOptionError, "1k, 2k; got '4k'"),
    (dict(model="kling-v1", product="image", resolution="2k"), UnsupportedOptionError, "resolutions 1k; got '2k'"),
    (dict(model="kling-tts", product="tts", mode="pro"), UnsupportedOptionError, "is not priced by mode"),
    (dict(model="kling-v2-6", product="motion-control"), UnsupportedOptionError, "needs a resolution: 720p, 1080p"),
    (dict(model="kling-v1", product="video-extend"), UnsupportedOptionError, "needs a mode: std, pro"),
    (dict(model="kling-v2-6", duration=5.0), UnsupportedOptionError, "never a float"),
    (dict(model="kling-v2-6", duration=True), UnsupportedOptionError, "duration must be an exact number"),
    (dict(model="kling-v2-6", duration="five"), UnsupportedOptionError, "duration must be a plain decimal number"),
    (dict(model="kling-v2-6", duration="1e1000000"), UnsupportedOptionError, "no exponent"),
    (dict(model="kling-v2-6", duration=Decimal("1e1000000")), UnsupportedOptionError, "too large"),
    (dict(model="kling-v2-6", duration=0), UnsupportedOptionError, "duration must be positive"),
    (dict(model="kling-v2-6", duration="-5"), UnsupportedOptionError, "duration must be positive"),
    (dict(model="kling-v2-6", duration="NaN"), UnsupportedOptionError, "plain decimal"),
    (dict(model="hug", product="effects"), UnknownModelError, "video effect 'hug' is not priced"),
    (dict(model=5), UnknownModelError, "model must be a string"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), ERRORS, ids=lambda v: v if isinstance(v, str) else None)
def test_unpriced_requests_raise_with_accepted_values(table, kwargs, error, message):
    """Anything not priced raises a one-line pricing error that names what is accepted."""
    kwargs = dict(kwargs)
    model = kwargs.pop("model")
    with pytest.raises(error) as info:
        table.quote(model, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, PricingError) and isinstance(info.value, ValueError)


# --- price files --------------------------------------------------------------------------------------


def test_default_table_is_cached_and_packaged():
    """PriceTable.default() loads the packaged file once and reports its path as <packaged>."""
    first, second = PriceTable.default(), PriceTable.default()
    assert first is second
    assert first.path == "<packaged>" and first.currency == "USD"
    assert repr(first) == "PriceTable(version='2026-11-27', path='<packaged>')"


MINIMAL = """
version = "test-1"
currency = "USD"
effective = 2027-01-01

[pack_types]
video = "0.10"
image = 1

[products.video]
pack_type = "video"
default_mode = "std"
default_duration = 5

[products.image]
pack_type = "image"

[products.effects]
pack_type = "video"

[aliases.all]
"my-model-1.0" = "my-model"

[[prices]]
product = "video"
model = "my-model"
units_by_mode = { std = "1.25", pro = 2 }
per = "second"
durations = [5, 10]
source = "my contract"

[[prices]]
product = "video"
model = "my-model"
mode = "pro"
units = "20"
per = "clip"
durations = [15]
source = "my contract"
effective = "2027-02-01"
note = "long clips are cheaper per second"

[[prices]]
product = "image"
model = "pic"
units = 3
per = "image"
max_n = 4
source = "my contract"

[[prices]]
product = "effects"
model = "hug"
mode = ["std", "pro"]
units = "2"
per = "clip"
durations = [5]
source = "console"
"""


def write(tmp_path: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_price_file_loads_and_quotes(tmp_path):
    """A user price file is validated and used, with its own version, pack prices and rows."""
    path = write(tmp_path, MINIMAL)
    table = PriceTable.load(path)
    assert table.path == str(path) and table.version == "test-1"
    quote = table.quote("My-Model-1.0", duration=10)
    assert (quote.units_milli, quote.list_usd_nano) == (12_500, 1_250_000_000)
    assert quote.price_version == "test-1" and quote.effective == "2027-01-01"
    clip = table.quote("my-model", mode="pro", duration=15)
    assert clip.units_milli == 20_000 and clip.effective == "2027-02-01"
    assert clip.breakdown[0].label == "my-model pro: 20 U per 15 s clip"
    with pytest.raises(UnsupportedOptionError, match="durations 5, 10, 15 s; got 7"):
        table.quote("my-model", mode="pro", duration=7)
    assert table.quote("pic", product="image", n=4).list_usd_nano == 12 * 10**9
    assert table.quote("hug", product="effects", mode="pro", duration="5").units_milli == 2000


def test_loads_accepts_text():
    """PriceTable.loads validates TOML text and names it in messages."""
    assert PriceTable.loads(MINIMAL, name="inline").path == "inline"


BAD_FILES = [
    ('std = "1.25"', "std = 1.25", "entry 1 (video my-model): units_by_mode.std = 1.25 is a float"),
    (
        'video = "0.10"',
        "video = 0.10",
        'pack_types.video = 0.10 is a float; price files allow no floats, write amounts as strings ("0.10")',
    ),
    ("durations = [5, 10]", "durations = [5.0, 10]", "entry 1 (video my-model): durations[0] = 5.0 is a float"),
    ('version = "test-1"', "", "version is required"),
    ('currency = "USD"', 'currency = "EUR"', 'currency must be "USD"'),
    ('currency = "USD"', 'currency = "USD"\ncolour = "red"', "unknown top-level key(s) colour"),
    (
        'source = "my contract"\n\n[[prices]]',
        'source = "my contract"\nprice = 3\n\n[[prices]]',
        "entry 1 (video my-model): unknown key(s) price; accepted: block_seconds, default_duration,",
    ),
    (
        'product = "image"\nmodel = "pic"',
        'product = "music"\nmodel = "pic"',
        "entry 3 (music pic): product 'music' is not declared",
    ),
    ('per = "image"', 'per = "picture"', "entry 3 (image pic): per must be one of second, clip, block, call, image"),
    (
        "units = 3\n",
        "units = 3\nunits_by_mode = { std = 1 }\n",
        "give exactly one of units, units_by_mode, units_by_resolution",
    ),
    (
        "durations = [15]",
        "min_duration = 15",
        'per = "clip" needs durations = [...] or both min_duration and max_duration',
    ),
    (
        "durations = [15]",
        "durations = [10]",
        "entry 2 (my-model pro): duplicates the price of entry 1 for the same variant and duration",
    ),
    (
        'mode = "pro"\nunits = "20"',
        'resolution = "1080p"\nunits = "20"',
        "priced by resolution but entry 1 prices it by mode",
    ),
    ('"my-model-1.0" = "my-model"', '"my-model-1.0" = "other-model"', "alias 'my-model-1.0' points to 'other-model'"),
    ('"my-model-1.0" = "my-model"', '"pic" = "my-model"', "alias 'pic' shadows a priced model"),
    ("effective = 2027-01-01", "", "entry 1 (video my-model): effective is required"),
    ("effective = 2027-01-01", 'effective = "soon"', "effective must be a date like 2026-11-27"),
    ("units = 3\n", 'units = "-3"\n', "units must not be negative"),
    ("units = 3\n", 'units = "0.0001"\n', "units has more than 3 decimal places"),
    ("units = 3\n", "units = true\n", 'units must be a string like "0.5" or an integer'),
    ("[pack_types]", '[pack_types]\naudio = "1"', "unknown pack type 'audio'; accepted: video, image, try_on"),
    ('video = "0.10"', 'video = "0"', "video must be a positive price"),
    ('pack_type = "image"', 'pack_type = "photo"', "unknown pack_type 'photo'"),
    ("max_n = 4", "max_n = 0", "max_n must be a positive integer, got 0"),
    ('per = "clip"\ndurations = [5]', 'per = "call"\ndurations = [5]', 'per = "call" takes no durations'),
    ('model = "pic"\nunits = 3\nper = "image"', 'model = "pic"\nunits = 3\nper = "block"', "block_seconds is required"),
    ('mode = ["std", "pro"]', 'mode = "std"\nresolution = "720p"', "give mode or resolution, not both"),
    ('mode = ["std", "pro"]', 'mode = ["std", "std"]', "mode lists a value twice"),
    ('mode = "pro"\nunits = "20"', 'mode = "pro"\nsound = "loud"\nunits = "20"', 'sound must be "off" or "native"'),
    ('model = "pic"', "model = 7", "model must be a non-empty string or a list of them"),
    ('currency = "USD"', 'currency = "USD"\n[broken', "not valid TOML"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_FILES, ids=[m for _, _, m in BAD_FILES])
def test_invalid_price_files_are_refused_with_one_line(tmp_path, old, new, message):
    """An invalid price file raises PriceTableError naming the file, the entry and the problem, on one line."""
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(PriceTableError) as info:
        PriceTable.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text
    assert isinstance(info.value, InvalidInputError)


def test_missing_price_file(tmp_path):
    """A missing file is a PriceTableError naming it."""
    with pytest.raises(PriceTableError, match="no such price file"):
        PriceTable.load(tmp_path / "absent.toml")


def test_non_utf8_price_file(tmp_path):
    """A file that is not UTF-8 is refused."""
    path = tmp_path / "latin.toml"
    path.write_bytes(b'version = "\xe9"\n')
    with pytest.raises(PriceTableError, match="not UTF-8"):
        PriceTable.load(path)


def test_empty_price_list_is_refused(tmp_path):
    """A file without [[prices]] entries is refused."""
    text = MINIMAL.split("[[prices]]")[0]
    with pytest.raises(PriceTableError, match=r"needs at least one \[\[prices\]\] entry"):
        PriceTable.load(write(tmp_path, text))


def test_clashing_features_list_priced_variants():
    """When no single feature change helps, the error lists every priced variant."""
    text = MINIMAL.split("[[prices]]")[0] + (
        '[[prices]]\nproduct = "video"\nmodel = "m"\nsound = "native"\nvoice_control = true\n'
        'units = "1"\nper = "second"\ndurations = [5]\nsource = "s"\n'
        '[[prices]]\nproduct = "video"\nmodel = "m"\nvideo_input = true\nimage_input = true\n'
        'units = "1"\nper = "second"\ndurations = [5]\nsource = "s"\n'
    )
    text = text.replace('"my-model-1.0" = "my-model"', '"m-1" = "m"')
    table = PriceTable.loads(text)
    with pytest.raises(UnsupportedOptionError) as info:
        table.quote("m", sound=True, video_input=True)
    assert str(info.value) == (
        "m is not priced for native audio + video input; "
        "priced variants: native audio + voice control; video input + image input"
    )
