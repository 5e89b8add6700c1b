"""quote_kling_request: Kling /v1 create requests (path + JSON body) priced through the price table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_budget.errors import UnknownModelError, UnsupportedOptionError
from kling_budget.pricing import SUPPORTED_PATHS, PriceTable, quote_kling_request
from kling_budget.types import PackType


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


REQUESTS = [
    # path, body, product, model, units, usd
    ("/v1/videos/text2video", {"prompt": "a cat"}, "video", "kling-v1", "1", "0.14"),
    (
        "/v1/videos/text2video",
        {"model_name": "kling-v2-6", "mode": "pro", "duration": "10", "sound": "on"},
        "video",
        "kling-v2-6",
        "10",
        "1.40",
    ),
    (
        "/v1/videos/text2video",
        {"model_name": "kling-v2-5-turbo", "mode": "std", "duration": "5", "cfg_scale": 0.5},
        "video",
        "kling-v2-5-turbo",
        "1.5",
        "0.21",
    ),
    (
        "/v1/videos/text2video",
        {"model_name": "kling-v3", "mode": "pro", "duration": "5", "sound": "on"},
        "video",
        "kling-v3",
        "6",
        "0.84",
    ),
    (
        "/v1/videos/image2video",
        {"model_name": "kling-v2-6", "mode": "pro", "sound": "on", "voice_list": [{"voice_id": "v"}]},
        "video",
        "kling-v2-6",
        "6",
        "0.84",
    ),
    (
        "/v1/videos/image2video",
        {"model_name": "kling-v2-1-master", "image": "https://x/y.png", "duration": 10},
        "video",
        "kling-v2-1-master",
        "20",
        "2.80",
    ),
    ("/v1/videos/multi-image2video", {"mode": "pro", "duration": "10"}, "multi-image-video", "kling-v1-6", "7", "0.98"),
    ("/v1/videos/multi-elements", {"session_id": "s", "mode": "pro"}, "multi-elements", "kling-v1-6", "5", "0.70"),
    (
        "/v1/videos/omni-video",
        {"model_name": "kling-video-o1", "prompt": "p", "duration": "7"},
        "video",
        "kling-video-o1",
        "5.6",
        "0.784",
    ),
    (
        "/v1/videos/omni-video",
        {"model_name": "kling-video-o1", "mode": "std", "video_list": [{"video_url": "u", "refer_type": "feature"}]},
        "video",
        "kling-video-o1",
        "4.5",
        "0.63",
    ),
    (
        "/v1/videos/omni-video",
        {"model_name": "kling-v3-omni", "mode": "pro", "duration": "10", "sound": "on"},
        "video",
        "kling-v3-omni",
        "10",
        "1.40",
    ),
    (
        "/v1/videos/video-extend",
        {"video_id": "v", "model_name": "kling-v1", "mode": "std"},
        "video-extend",
        "kling-v1",
        "2",
        "0.28",
    ),
    (
        "/v1/videos/motion-control",
        {"mode": "pro", "character_orientation": "video"},
        "motion-control",
        "kling-v2-6",
        "24",
        "3.36",
    ),
    ("/v1/videos/lip-sync", {"input": {"video_id": "v"}}, "lip-sync", "kling-lip-sync", "1", "0.14"),
    ("/v1/videos/avatar/image2video", {"image": "i"}, "avatar", "kling-avatar", "120", "16.80"),
    ("/v1/videos/identify-face", {"video_id": "v"}, "identify-face", "kling-identify-face", "0.05", "0.007"),
    ("/v1/videos/image-recognize", {"image": "i"}, "image-recognize", "kling-image-recognize", "0.1", "0.014"),
    ("/v1/images/generations", {"prompt": "p"}, "image", "kling-v1", "1", "0.0035"),
    ("/v1/images/generations", {"model_name": "kling-v2", "n": 3}, "image", "kling-v2", "12", "0.042"),
    ("/v1/images/generations", {"model_name": "kling-v2", "image": "u", "n": 2}, "image", "kling-v2", "16", "0.056"),
    (
        "/v1/images/generations",
        {"model_name": "kling-v2-1", "resolution": "2k", "image": "", "n": "2"},
        "image",
        "kling-v2-1",
        "8",
        "0.028",
    ),
    ("/v1/images/omni-image", {"prompt": "p", "n": 2}, "image", "kling-image-o1", "16", "0.056"),
    (
        "/v1/images/omni-image",
        {"model_name": "kling-image-v3-omni", "resolution": "4k", "image_list": [{"image": "u"}]},
        "image",
        "kling-v3-omni",
        "16",
        "0.056",
    ),
    (
        "/v1/images/multi-image2image",
        {"subject_image_list": [], "n": 4},
        "multi-image-image",
        "kling-v2",
        "64",
        "0.224",
    ),
    ("/v1/images/editing/expand", {"image": "u", "n": 3}, "image-expand", "kling-image-expand", "24", "0.084"),
    ("/v1/general/ai-multi-shot", {"element_frontal_image": "u"}, "ai-multi-shot", "kling-ai-multi-shot", "20", "0.07"),
    ("/v1/images/kolors-virtual-try-on", {"human_image": "h"}, "try-on", "kolors-virtual-try-on-v1", "1", "0.07"),
    (
        "/v1/images/kolors-virtual-try-on",
        {"model_name": "kolors-virtual-try-on-v1-5"},
        "try-on",
        "kolors-virtual-try-on-v1-5",
        "1",
        "0.07",
    ),
    ("/v1/audio/tts", {"text": "hi", "voice_id": "v", "voice_speed": 1.0}, "tts", "kling-tts", "0.05", "0.007"),
    (
        "/v1/audio/text-to-audio",
        {"prompt": "rain", "duration": 5.5},
        "text-to-audio",
        "kling-text-to-audio",
        "0.25",
        "0.035",
    ),
    ("/v1/audio/video-to-audio", {"video_id": "v"}, "video-to-audio", "kling-video-to-audio", "0.25", "0.035"),
    ("/v1/general/custom-voices", {"voice_name": "me"}, "custom-voice", "kling-custom-voice", "0.05", "0.007"),
]


@pytest.mark.parametrize(("path", "body", "product", "model", "units", "dollars"), REQUESTS)
def test_kling_requests_price_like_the_reference(table, path, body, product, model, units, dollars):
    """Each supported /v1 create request prices to the reference's units and dollars."""
    quote = quote_kling_request(table, path, body)
    assert (quote.product, quote.model) == (product, model)
    assert (quote.units, quote.usd) == (Decimal(units), Decimal(dollars))


def test_every_supported_path_is_covered():
    """The table-driven cases above exercise every supported path except effects (tested separately)."""
    covered = {path for path, *_ in REQUESTS} | {
        "/v1/videos/effects",
        "/v1/videos/advanced-lip-sync",
    }
    assert covered == set(SUPPORTED_PATHS)


def test_try_on_draws_from_try_on_pack(table):
    """Try-on requests are charged to the try-on pack."""
    assert quote_kling_request(table, "/v1/images/kolors-virtual-try-on", {}).pack_type is PackType.TRY_ON


@pytest.mark.parametrize(
    "path",
    [
        "https://api-singapore.klingai.com/v1/videos/text2video",
        "/v1/videos/text2video/",
        "/v1/videos/text2video?trace=1",
        "v1/videos/text2video",
    ],
)
def test_path_spellings(table, path):
    """Full URLs, trailing slashes, query strings and a missing leading slash are accepted."""
    assert quote_kling_request(table, path, {}).model == "kling-v1"


def test_unknown_path_names_supported_paths(table):
    """An unsupported path raises UnsupportedOptionError listing the supported ones."""
    with pytest.raises(UnsupportedOptionError, match=r"cannot price '/v1/videos/upscale'; supported paths: /v1/"):
        quote_kling_request(table, "/v1/videos/upscale", {})


def test_body_must_be_an_object(table):
    """A body that is not a JSON object is refused."""
    with pytest.raises(UnsupportedOptionError, match="must be a JSON object"):
        quote_kling_request(table, "/v1/videos/text2video", [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model_name": 3}, "model_name must be a string"),
        ({"duration": 5.0}, 'duration must be a string like "5", got float 5.0'),
        ({"mode": ["pro"]}, "mode must be a string"),
        ({"sound": 1}, 'sound must be "on" or "off"'),
        ({"voice_list": "v"}, "voice_list must be a list"),
        ({"model_name": "kling-v1", "sound": "on"}, "kling-v1 is not priced with native audio"),
        ({"model_name": "kling-v2-6", "sound": "on"}, "priced only for mode pro; got std (the default)"),
        ({"model_name": "kling-v9"}, "unknown model 'kling-v9'; accepted for video:"),
        ({"duration": "7"}, "kling-v1 std is priced for durations 5, 10 s; got 7"),
    ],
)
def test_bad_text2video_bodies(table, body, message):
    """Body fields that cannot be priced raise one-line errors naming what is accepted."""
    with pytest.raises((UnsupportedOptionError, UnknownModelError)) as info:
        quote_kling_request(table, "/v1/videos/text2video", body)
    assert message in str(info.value)


def test_image_n_must_be_integer(table):
    """Image n must be an integer."""
    with pytest.raises(UnsupportedOptionError, match="n must be an integer 1-9"):
        quote_kling_request(table, "/v1/images/generations", {"n": 2.0})
    with pytest.raises(UnsupportedOptionError, match="priced for n 1-9 images; got n=12"):
        quote_kling_request(table, "/v1/images/generations", {"n": 12})


def test_omni_edit_prices_longest_input_video(table):
    """An omni edit (refer_type base) has no duration: the longest accepted edit video is priced, and said so."""
    body = {"model_name": "kling-video-o1", "video_list": [{"video_url": "u", "refer_type": "base"}], "duration": "5"}
    quote = quote_kling_request(table, "/v1/videos/omni-video", body)
    assert quote.units_milli == 1200 * 10
    assert quote.params["duration_assumed"] is True
    assert "longest accepted input, 10 s" in quote.breakdown[-1].label
    hinted = quote_kling_request(table, "/v1/videos/omni-video", body, input_duration="4.2")
    assert hinted.units_milli == 1200 * 5 and "duration_assumed" not in hinted.params


def test_video_extend_without_source_model_prices_worst_case(table):
    """video-extend carries only video_id: the highest extension price is reserved and the breakdown says so."""
    quote = quote_kling_request(table, "/v1/videos/video-extend", {"video_id": "v"})
    assert quote.units_milli == 3500
    assert quote.params["worst_case"] is True
    assert "highest extension price" in quote.breakdown[-1].label
    assert sum(line.units_milli for line in quote.breakdown) == quote.units_milli
    std_only = quote_kling_request(table, "/v1/videos/video-extend", {"video_id": "v", "mode": "std"})
    assert std_only.units_milli == 2000
    v15 = quote_kling_request(table, "/v1/videos/video-extend", {"video_id": "v", "model_name": "kling-v1.5"})
    assert (v15.model, v15.units_milli) == ("kling-v1-5", 3500)


def test_video_extend_unknown_model(table):
    """A video-extend hint naming an unpriced model is refused."""
    with pytest.raises(UnknownModelError, match="accepted for video-extend: kling-v1, kling-v1-5, kling-v1-6"):
        quote_kling_request(table, "/v1/videos/video-extend", {"model_name": "kling-v2-6"})


@pytest.mark.parametrize(
    ("body", "hint", "units", "assumed"),
    [
        ({"mode": "std", "character_orientation": "image"}, None, 500 * 10, True),
        ({"mode": "std", "character_orientation": "video"}, None, 500 * 30, True),
        ({"mode": "pro"}, None, 800 * 30, True),
        ({"mode": "pro", "character_orientation": "video"}, 8, 800 * 8, False),
        ({"mode": "pro", "model_name": "kling-v3"}, "3.5", 1200 * 4, False),
    ],
)
def test_motion_control_length(table, body, hint, units, assumed):
    """Motion control prices the reference-video length: given, or the longest accepted for the orientation."""
    quote = quote_kling_request(table, "/v1/videos/motion-control", body, input_duration=hint)
    assert quote.units_milli == units
    assert quote.params.get("duration_assumed", False) is assumed


def test_motion_control_needs_mode(table):
    """Kling requires mode for motion control; without it the request is refused."""
    with pytest.raises(UnsupportedOptionError, match="needs a resolution: 720p, 1080p"):
        quote_kling_request(table, "/v1/videos/motion-control", {})


@pytest.mark.parametrize(
    ("path", "hint", "units", "assumed_seconds"),
    [
        ("/v1/videos/lip-sync", None, 1000, 10),
        ("/v1/videos/lip-sync", 3, 500, None),
        ("/v1/videos/advanced-lip-sync", None, 6000, 60),
        ("/v1/videos/advanced-lip-sync", Decimal("12.5"), 1500, None),
    ],
)
def test_lip_sync_length(table, path, hint, units, assumed_seconds):
    """Lip sync prices the input length when known, else the longest accepted input, per started 5 s."""
    quote = quote_kling_request(table, path, {"session_id": "s"}, input_duration=hint)
    assert quote.units_milli == units
    if assumed_seconds:
        assert f"longest accepted input, {assumed_seconds} s" in quote.breakdown[-1].label
    else:
        assert len(quote.breakdown) == 1


def test_avatar_without_length_reserves_longest_audio(table):
    """Avatar output follows the audio (up to 300 s): without a length the worst case is priced."""
    quote = quote_kling_request(table, "/v1/videos/avatar/image2video", {"image": "i", "mode": "pro"})
    assert (quote.units, quote.usd) == (Decimal("240"), Decimal("33.60"))
    assert quote.params["duration_assumed"] is True


@pytest.mark.parametrize(
    ("path", "body", "worst_milli"),
    [
        ("/v1/videos/avatar/image2video", {"image": "i", "mode": "pro", "duration": "2"}, 240_000),
        ("/v1/videos/lip-sync", {"input": {"video_id": "v"}, "duration": "1"}, 1000),
        ("/v1/videos/advanced-lip-sync", {"session_id": "s", "duration": "1"}, 6000),
        ("/v1/videos/motion-control", {"mode": "pro", "character_orientation": "video", "duration": "3"}, 24_000),
    ],
)
def test_a_body_duration_never_shortens_a_length_priced_product(table, path, body, worst_milli):
    """Products whose length follows an input ignore a body `duration`: the longest accepted input is priced."""
    quote = quote_kling_request(table, path, body)
    assert quote.units_milli == worst_milli
    assert quote.params["duration_assumed"] is True


def test_video_extend_prices_the_source_given_by_the_caller(table):
    """A known source video sets the extension's model and mode, whatever the body says."""
    from kling_budget.pricing import SourceVideo

    body = {"video_id": "v", "model_name": "kling-v1", "mode": "std"}
    pro = quote_kling_request(table, "/v1/videos/video-extend", body, source=SourceVideo("kling-v1-6", "pro"))
    assert (pro.model, pro.units_milli) == ("kling-v1-6", 3500)
    unknown_mode = quote_kling_request(
        table, "/v1/videos/video-extend", {"video_id": "v"}, source=SourceVideo("kling-v1")
    )
    assert unknown_mode.units_milli == 3500 and unknown_mode.params["worst_case"] is True


def test_effects_without_prices_name_the_gap(table):
    """Effects are priced per template; with none in the table the error says so and how to add one."""
    body = {"effect_scene": "hug_pro", "input": {"images": ["a", "b"], "duration": "5"}}
    with pytest.raises(UnknownModelError, match=r"video effect 'hug_pro' is not priced .* priced effects: none"):
        quote_kling_request(table, "/v1/videos/effects", body)


def test_effects_need_a_scene(table):
    """An effects request without effect_scene is refused."""
    with pytest.raises(UnsupportedOptionError, match="needs effect_scene"):
        quote_kling_request(table, "/v1/videos/effects", {"input": {}})


EFFECTS_TABLE = """
version = "fx"
currency = "USD"
effective = "2027-01-01"
[pack_types]
video = "0.14"
[products.effects]
pack_type = "video"
[[prices]]
product = "effects"
model = "hug"
units_by_mode = { std = "1", pro = "3.5" }
per = "clip"
durations = [5, 10]
source = "console"
[[prices]]
product = "effects"
model = "hug_pro"
units = "2"
per = "clip"
durations = [5]
source = "console"
"""


def test_effects_priced_from_a_user_table():
    """With effect rows in a user table, effects are priced by effect_scene, mode and input.duration."""
    table = PriceTable.loads(EFFECTS_TABLE)
    hug = quote_kling_request(
        table,
        "/v1/videos/effects",
        {"effect_scene": "hug", "model_name": "kling-v1-6", "mode": "pro", "input": {"duration": "10"}},
    )
    assert (hug.model, hug.units_milli) == ("hug", 3500)
    pro = quote_kling_request(
        table, "/v1/videos/effects", {"effect_scene": "hug_pro", "mode": "pro", "input": {"duration": "5"}}
    )
    assert pro.units_milli == 2000
    with pytest.raises(UnknownModelError, match="priced effects: hug, hug_pro"):
        quote_kling_request(table, "/v1/videos/effects", {"effect_scene": "kiss", "input": {"duration": "5"}})


def test_request_mapping_is_pure(table):
    """quote_kling_request does not modify the body."""
    body = {"model_name": "kling-v2-6", "mode": "pro", "voice_list": [{"voice_id": "v"}], "sound": "on"}
    snapshot = repr(body)
    quote_kling_request(table, "/v1/videos/image2video", body)
    assert repr(body) == snapshot
