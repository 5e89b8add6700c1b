"""A hard budget holds whatever the body says, against a real ``serve`` process.

Products Kling bills by an input's length are held at the longest accepted input (a body ``duration`` is not a
Kling field there and is refused); a video extension is held at its source video's model and mode, which the
gateway knows for the videos it made for the same key, and at the highest extension price otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_budget.ledger import ReservationState, open_ledger
from kling_budget.server.keys import KeyStore, load_master_key
from kling_budget.simulator import RunningSimulator
from kling_budget.tracker import CostTracker
from tests.gatewayutil import wait_until
from tests.serveproc import ServeProcess, prepare_ledger, running_serve

AVATAR = "/v1/videos/avatar/image2video"
MOTION = "/v1/videos/motion-control"
LIP_SYNC = "/v1/videos/lip-sync"
ADVANCED = "/v1/videos/advanced-lip-sync"
EXTEND = "/v1/videos/video-extend"
T2V = "/v1/videos/text2video"


@pytest.fixture(scope="module")
def gateway(quick_kling: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A gateway whose tenant (project p1) has a 100-unit daily budget; a second key in project p2."""
    base = tmp_path_factory.mktemp("budget")
    db = f"sqlite:///{base / 'ledger.db'}"
    key = prepare_ledger(db, base / "home")
    with CostTracker(db, alert_sinks=[]) as tracker:
        tracker.set_budget("p1-daily", project_id="p1", period="daily", limit_units=100)
    with running_serve(quick_kling, db, base / "home", key=key) as served:
        yield served


def _held(gateway: ServeProcess, answer: Any) -> int:
    """Milli-units held for the create that got ``answer`` (released since, if Kling refused it)."""
    ledger = open_ledger(gateway.db)
    try:
        data = answer.json()["data"]
        if data is not None:
            info = ledger.find_by_task(data["task_id"])
        else:  # Kling refused the create: the newest reservation, released
            info = max(ledger.list_reservations(limit=100_000), key=lambda r: r.reserved_at)
            assert info.state is ReservationState.RELEASED
        assert info is not None
        return info.units_milli
    finally:
        ledger.close()


def test_avatar_is_held_at_the_longest_audio_and_a_body_duration_cannot_shrink_it(gateway: ServeProcess) -> None:
    """Avatar pro is 240 units at the longest audio: denied by a 100-unit budget; `duration: "2"` is refused."""
    with gateway.client() as client:
        denied = client.post(AVATAR, json={"image": "https://x/face.png", "sound_file": "s", "mode": "pro"})
        shrunk = client.post(
            AVATAR, json={"image": "https://x/face.png", "sound_file": "s", "mode": "pro", "duration": "2"}
        )
    assert denied.status_code == 429 and denied.json()["code"] == 1190
    assert "price 240 units" in denied.json()["message"]
    assert shrunk.status_code == 400 and shrunk.json()["code"] == 1201
    assert "'duration' is not accepted" in shrunk.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "worst_milli"),
    [
        (MOTION, {"image_url": "i", "video_url": "v", "character_orientation": "video", "mode": "std"}, 15_000),
        (MOTION, {"image_url": "i", "video_url": "v", "character_orientation": "image", "mode": "std"}, 5_000),
        (LIP_SYNC, {"input": {"mode": "text2video", "video_url": "v", "text": "hi", "voice_id": "x"}}, 1_000),
    ],
)
def test_length_priced_products_hold_the_worst_case(
    gateway: ServeProcess, path: str, body: dict[str, Any], worst_milli: int
) -> None:
    """Motion control and lip sync hold the longest accepted input; with a body `duration` they are refused."""
    with gateway.client() as client:
        created = client.post(path, json=body)
        shrunk = client.post(path, json={**body, "duration": "3"})  # a length Kling accepts, far below the worst
    assert created.status_code == 200, created.text
    assert _held(gateway, created) == worst_milli
    assert shrunk.status_code == 400 and "'duration' is not accepted" in shrunk.json()["message"]


def test_advanced_lip_sync_holds_the_longest_video(gateway: ServeProcess) -> None:
    """Advanced lip sync (a 60 s video at most) is held at 6 units, whatever the body says (the simulator does not
    serve it, so Kling's refusal then releases the hold)."""
    body = {"session_id": "s", "face_choose": [{"face_id": "f", "sound_file": "a", "sound_start_time": 0}]}
    with gateway.client() as client:
        client.post(ADVANCED, json=body)
        shrunk = client.post(ADVANCED, json={**body, "duration": "1"})
    assert shrunk.status_code == 400
    ledger = open_ledger(gateway.db)
    try:
        held = [r for r in ledger.list_reservations(limit=1000) if r.attribution.model == "kling-advanced-lip-sync"]
    finally:
        ledger.close()
    assert [r.units_milli for r in held] == [6_000]


def _finished_video(gateway: ServeProcess, client: Any, body: dict[str, Any]) -> str:
    """Create a text-to-video task through the gateway, query it until it succeeds; its video id."""
    task_id = client.post(T2V, json=body).json()["data"]["task_id"]

    def video() -> str | None:
        data = client.get(f"{T2V}/{task_id}").json()["data"]
        return data["task_result"]["videos"][0]["id"] if data["task_status"] == "succeed" else None

    return str(wait_until(video, 10))


def test_video_extend_is_priced_from_the_source_task_not_the_body(gateway: ServeProcess, tmp_path: Path) -> None:
    """Extending a std video the gateway made holds 2 units; model/mode in the body are refused; another key's
    video or an unknown one holds the highest extension price (3.5 units)."""
    with gateway.client() as client:
        std_video = _finished_video(gateway, client, {"model_name": "kling-v1-6", "mode": "std", "prompt": "p"})
        pro_video = _finished_video(gateway, client, {"model_name": "kling-v1-6", "mode": "pro", "prompt": "p"})
        from_std = client.post(EXTEND, json={"video_id": std_video, "prompt": "more"})
        from_pro = client.post(EXTEND, json={"video_id": pro_video})
        unknown = client.post(EXTEND, json={"video_id": "not-a-video-of-ours"})
        unknown_held = _held(gateway, unknown)  # the simulator refuses a video it never made: released
        lying = client.post(EXTEND, json={"video_id": pro_video, "model_name": "kling-v1", "mode": "std"})
    assert _held(gateway, from_std) == 2_000
    assert _held(gateway, from_pro) == 3_500
    assert unknown_held == 3_500
    assert lying.status_code == 400 and "'model_name' is not accepted" in lying.json()["message"]

    backend_url = gateway.db
    from kling_budget.ledger import open_backend

    backend = open_backend(backend_url)
    try:
        other = KeyStore(backend, load_master_key(home=gateway.home)).create("other", project="p2", kind="api")
    finally:
        backend.close()
    with gateway.client(f"Bearer {other.api_key}") as client:
        foreign = client.post(EXTEND, json={"video_id": std_video})
    assert _held(gateway, foreign) == 3_500  # another key's video is as unknown as a foreign one

    ledger = open_ledger(gateway.db)
    try:
        info = ledger.find_by_task(from_std.json()["data"]["task_id"])
        assert info is not None and info.state in (ReservationState.SUBMITTED, ReservationState.COMMITTED)
    finally:
        ledger.close()
