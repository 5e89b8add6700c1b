"""Every create path the gateway serves, on both API designs, over real HTTP: priced, held and forwarded; what
Kling (here the simulator) does not serve is released with Kling's own answer passed through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_budget.ledger import ReservationState
from kling_budget.pricing import SUPPORTED_PATHS, PriceTable, quote_kling_request
from kling_budget.simulator import ENDPOINTS, SimulatorConfig, running_simulator
from tests.gatewayutil import RunningGateway, running_gateway, wait_until

IMG, VID, MP3 = "https://x.invalid/a.png", "https://x.invalid/m.mp4", "https://x.invalid/a.mp3"
PARENT = "<parent video>"  # replaced by a video the same key generated first
CASES: dict[str, dict[str, Any]] = {
    "/v1/videos/text2video": {
        "model_name": "kling-v2-6",
        "prompt": "a fox",
        "mode": "pro",
        "duration": "5",
        "cfg_scale": 0.5,
    },
    "/v1/videos/image2video": {"model_name": "kling-v2-1", "image": IMG, "mode": "std", "duration": "10"},
    "/v1/videos/multi-image2video": {
        "model_name": "kling-v1-6",
        "image_list": [{"image": IMG}],
        "prompt": "x",
        "mode": "std",
    },
    "/v1/videos/multi-elements": {"model_name": "kling-v1-6", "prompt": "x", "mode": "std", "duration": "5"},
    "/v1/videos/omni-video": {"model_name": "kling-video-o1", "prompt": "x", "mode": "pro", "duration": "5"},
    "/v1/videos/video-extend": {"video_id": PARENT, "prompt": "and then"},
    "/v1/videos/motion-control": {
        "model_name": "kling-v2-6",
        "image_url": IMG,
        "video_url": VID,
        "character_orientation": "image",
        "mode": "std",
    },
    "/v1/videos/lip-sync": {
        "input": {"mode": "text2video", "video_id": PARENT, "text": "hi", "voice_id": "v", "voice_language": "en"}
    },
    "/v1/videos/advanced-lip-sync": {"session_id": "s1", "face_choose": [{"face_id": "0", "sound_file": MP3}]},
    "/v1/videos/avatar/image2video": {"image": IMG, "sound_file": MP3, "mode": "std"},
    "/v1/videos/effects": {"effect_scene": "hug", "input": {"images": [IMG, IMG], "duration": "5"}},
    "/v1/videos/identify-face": {"video_url": VID},
    "/v1/videos/image-recognize": {"image": IMG},
    "/v1/images/generations": {"model_name": "kling-v2", "prompt": "a lighthouse", "n": 2},
    "/v1/images/omni-image": {"model_name": "kling-image-o1", "prompt": "x", "image_list": [{"image": IMG}]},
    "/v1/images/multi-image2image": {
        "model_name": "kling-v2",
        "prompt": "x",
        "subject_image_list": [{"subject_image": IMG}],
    },
    "/v1/images/editing/expand": {
        "image": IMG,
        "up_expansion_ratio": 0.1,
        "down_expansion_ratio": 0.1,
        "left_expansion_ratio": 0.1,
        "right_expansion_ratio": 0.1,
    },
    "/v1/general/ai-multi-shot": {"element_frontal_image": IMG},
    "/v1/images/kolors-virtual-try-on": {
        "model_name": "kolors-virtual-try-on-v1",
        "human_image": IMG,
        "cloth_image": IMG,
    },
    "/v1/audio/tts": {"text": "hi", "voice_id": "v", "voice_language": "en"},
    "/v1/audio/text-to-audio": {"prompt": "rain", "duration": 5},
    "/v1/audio/video-to-audio": {"video_id": "v"},
    "/v1/general/custom-voices": {"voice_name": "me", "voice_url": MP3},
    "/text-to-video/kling-3.0": {
        "contents": [{"type": "prompt", "text": "a fox"}],
        "settings": {"resolution": "1080p", "duration": 5, "audio": "native"},
    },
    "/image-to-video/kling-2.6": {
        "contents": [{"type": "first_frame", "url": IMG}],
        "settings": {"resolution": "720p", "duration": 5},
    },
    "/omni-video/kling-3.0-omni": {
        "contents": [{"type": "prompt", "text": "a fox"}],
        "settings": {"resolution": "720p", "duration": 5, "aspect_ratio": "16:9"},
    },
    "/motion-control/kling-3.0": {
        "contents": [{"type": "image", "url": IMG}, {"type": "video", "url": VID}],
        "settings": {"resolution": "720p"},
    },
}
UNPRICED = {"/v1/videos/effects"}  # Kling prices effects per template; the packaged table lists none


def test_every_create_path_is_here() -> None:
    """Every /v1 create path the gateway prices, and every 2026 product, is exercised below."""
    assert {path for path in CASES if path.startswith("/v1/")} == set(SUPPORTED_PATHS)
    products = {path.split("/")[1] for path in CASES if not path.startswith("/v1/")}
    assert products == {"text-to-video", "image-to-video", "omni-video", "motion-control"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway (both kinds of Kling credentials) on a fast simulator with room for every product."""
    tmp: Path = tmp_path_factory.mktemp("every-path")
    config = SimulatorConfig.single(
        packs={"video": 10**6, "image": 10**6, "try_on": 10**6},
        concurrency=1000,
        queued_seconds=0.01,
        running_seconds=0.05,
    )
    db = f"sqlite:///{tmp / 'l.db'}"
    with running_simulator(config) as kling, running_gateway(kling, db, tmp / "home", credentials="both") as gw:
        yield gw


def _parent_video(gw: RunningGateway, bearer: str) -> str:
    """A kling-v1-6 std video generated first by the same key (extend and lip-sync work on one)."""
    source = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
    with gw.client(bearer) as client:
        task_id = client.post("/v1/videos/text2video", json=source).json()["data"]["task_id"]

        def done() -> str | None:
            data = client.get(f"/v1/videos/text2video/{task_id}").json()["data"]
            return data["task_result"]["videos"][0]["id"] if data["task_status"] == "succeed" else None

        video: str = wait_until(done)
    return video


@pytest.mark.parametrize("path", list(CASES))
def test_each_create_path_is_priced_held_and_forwarded(gateway: RunningGateway, path: str) -> None:
    """The hold is exactly the price; a path Kling serves is created, one it does not is released."""
    issued = gateway.state.keys.create(f"key-{list(CASES).index(path)}", project="every", kind="api")
    bearer = f"Bearer {issued.api_key}"
    body = CASES[path]
    if PARENT in str(body):
        video = _parent_video(gateway, bearer)
        body = dict(body)
        if "video_id" in body:
            body["video_id"] = video
        else:
            body["input"] = {**body["input"], "video_id": video}
    with gateway.client(bearer) as client:
        answer = client.post(path, json=body)
    mine = [r for r in gateway.state.ledger.list_reservations(limit=1000) if r.attribution.api_key == issued.key.name]
    job = [r for r in mine if r.detail.get("kling_path") == path]
    if path in UNPRICED:
        assert answer.status_code == 400 and answer.json()["code"] == 1201 and job == []
        return
    price = quote_kling_request(gateway.state.prices, path, body, source=None) if "extend" in path else None
    assert len(job) == 1 and job[0].units_milli > 0
    if price is None:
        assert job[0].units_milli == quote_kling_request(
            PriceTable.default(), path, body
        ).units_milli or path.startswith(
            ("/v1/videos/lip-sync", "/v1/videos/avatar", "/v1/videos/motion-control", "/v1/videos/advanced-lip-sync")
        )
    served = path.startswith("/v1/") is False or path in ENDPOINTS
    if served:
        assert answer.status_code == 200, answer.text
        assert answer.json()["code"] == 0 and job[0].state is not ReservationState.RELEASED
    else:
        assert answer.json()["code"] == 1202, answer.text  # Kling's own answer, passed through
        assert job[0].state is ReservationState.RELEASED
