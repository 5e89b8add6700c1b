"""Each Kling endpoint is one body builder and one method: every client sends the same bytes for the same call."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget import CostTracker
from kling_budget.enforced import AsyncBudgetEnforcedClient, BudgetEnforcedClient
from kling_budget.kling import AsyncKlingClient, KlingClient, bodies

BUILDERS = [
    name
    for name, fn in vars(bodies).items()
    if name in bodies.__all__ and inspect.isfunction(fn) and inspect.signature(fn).return_annotation == "Create"
]

# One call per builder, with every field it names (so a field dropped anywhere shows up as a diff).
CALLS: dict[str, dict[str, Any]] = {
    "text_to_video": {
        "prompt": "a fox",
        "model_name": "kling-v2-6",
        "negative_prompt": "rain",
        "mode": "pro",
        "duration": 5,
        "aspect_ratio": "16:9",
        "cfg_scale": 0.5,
        "sound": "on",
        "camera_control": {"type": "simple", "config": {"zoom": 2}},
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "image_to_video": {
        "image": "https://example.com/a.png",
        "image_tail": "https://example.com/b.png",
        "prompt": "turns",
        "model_name": "kling-v2-1",
        "negative_prompt": "rain",
        "mode": "pro",
        "duration": 10,
        "cfg_scale": 0.3,
        "sound": "off",
        "static_mask": "https://example.com/m.png",
        "dynamic_masks": [{"mask": "https://example.com/d.png", "trajectories": [{"x": 1, "y": 2}]}],
        "camera_control": {"type": "simple", "config": {"pan": 1}},
        "watermark_info": {"enabled": True},
        "callback_url": "https://example.com/cb",
    },
    "multi_image_to_video": {
        "image_list": ["https://example.com/a.png", {"image": "https://example.com/b.png"}],
        "prompt": "together",
        "model_name": "kling-v1-6",
        "negative_prompt": "rain",
        "mode": "std",
        "duration": 5,
        "aspect_ratio": "1:1",
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "video_extend": {
        "video_id": "v-1",
        "prompt": "and then",
        "negative_prompt": "rain",
        "cfg_scale": 0.5,
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "lip_sync": {
        "mode": "text2video",
        "video_id": "v-1",
        "text": "hello",
        "voice_id": "v",
        "voice_language": "en",
        "voice_speed": 1.0,
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "video_effects": {
        "effect_scene": "hug",
        "input": {"images": ["https://example.com/a.png", "https://example.com/b.png"], "duration": "5"},
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "image_generation": {
        "prompt": "a lighthouse",
        "model_name": "kling-v2",
        "negative_prompt": "fog",
        "image": "https://example.com/a.png",
        "image_reference": "subject",
        "image_fidelity": 0.5,
        "human_fidelity": 0.4,
        "resolution": "1k",
        "n": 2,
        "aspect_ratio": "16:9",
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "virtual_try_on": {
        "human_image": "https://example.com/h.png",
        "cloth_image": "https://example.com/c.png",
        "model_name": "kolors-virtual-try-on-v1",
        "callback_url": "https://example.com/cb",
    },
    "video_from_text": {
        "model": "kling-3.0",
        "prompt": "a fox",
        "resolution": "1080p",
        "duration": 5,
        "aspect_ratio": "16:9",
        "audio": "native",
        "multi_shot": False,
        "contents": [{"type": "element", "id": "hero"}],
        "settings": {"shot_type": "customize"},
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "video_from_image": {
        "model": "kling-2.6",
        "first_frame": "https://example.com/a.png",
        "prompt": "turns",
        "last_frame": "https://example.com/b.png",
        "resolution": "1080p",
        "duration": 10,
        "aspect_ratio": "9:16",
        "audio": "off",
        "multi_shot": False,
        "watermark_info": {"enabled": True},
        "callback_url": "https://example.com/cb",
    },
    "omni_video": {
        "model": "kling-3.0-omni",
        "contents": [{"type": "refer_image", "url": "https://example.com/r.png", "id": "image_1"}],
        "prompt": "in <<<image_1>>>",
        "resolution": "720p",
        "duration": 8,
        "aspect_ratio": "1:1",
        "audio": "native",
        "multi_shot": False,
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
    "motion_control": {
        "model": "kling-3.0",
        "image": "https://example.com/who.png",
        "video": "https://example.com/how.mp4",
        "prompt": "dance",
        "character_orientation": "video",
        "resolution": "1080p",
        "audio": "off",
        "watermark_info": {"enabled": False},
        "callback_url": "https://example.com/cb",
    },
}
# What the budget-enforced clients need beyond the body to hold an exact price.
PRICING = {"lip_sync": {"input_duration": 5}, "video_effects": {"units": 2}}


def test_every_builder_has_a_call_here() -> None:
    """The table above covers every body builder (a new endpoint must be added to it)."""
    assert sorted(BUILDERS) == sorted(CALLS)


class Recorder:
    """Answers every create with a new task and keeps each request body (the enforced clients' one gateway
    probe, ``HEAD /``, gets Kling's plain 404)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        body = json.loads(request.content)
        body.pop("external_task_id", None)  # generated per create: /v1 keeps it at the top,
        body.get("options", {}).pop("external_task_id", None)  # the 2026 design under options
        self.bodies.append(body)
        data = {"task_id": f"t{len(self.bodies)}", "task_status": "submitted", "created_at": 0, "updated_at": 0}
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[CostTracker]:
    """A tracker on a fresh SQLite ledger."""
    with CostTracker(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.anyio
async def test_all_four_clients_send_the_builders_body(name: str, tracker: CostTracker) -> None:
    """KlingClient, AsyncKlingClient and both budget-enforced clients send exactly the builder's body."""
    kwargs = CALLS[name]
    expected = getattr(bodies, name)(**kwargs).body
    recorder = Recorder()
    base = {"base_url": "http://kling.test", "max_retries": 0}
    method = f"create_{name}"
    with KlingClient("ak", "sk", transport=httpx.MockTransport(recorder), **base) as plain:
        getattr(plain, method)(**kwargs)
    async with AsyncKlingClient("ak", "sk", transport=httpx.MockTransport(recorder), **base) as aplain:
        await getattr(aplain, method)(**kwargs)
    sync_kling = KlingClient("ak", "sk", transport=httpx.MockTransport(recorder), **base)
    with BudgetEnforcedClient(tracker, client=sync_kling) as enforced:
        getattr(enforced, method)(**kwargs, **PRICING.get(name, {}))
    async_kling = AsyncKlingClient("ak", "sk", transport=httpx.MockTransport(recorder), **base)
    async with AsyncBudgetEnforcedClient(tracker, client=async_kling) as aenforced:
        await getattr(aenforced, method)(**kwargs, **PRICING.get(name, {}))
    assert len(recorder.bodies) == 4
    assert all(body == json.loads(json.dumps(expected)) for body in recorder.bodies), recorder.bodies


def test_methods_carry_the_builders_signature_and_docs() -> None:
    """A generated method shows its builder's parameters and docstring (help() and IDEs see the real API)."""
    for name in CALLS:
        builder = getattr(bodies, name)
        for cls in (KlingClient, AsyncKlingClient):
            method = getattr(cls(api_key="k", base_url="http://kling.test"), f"create_{name}")
            assert inspect.signature(method).parameters.keys() == inspect.signature(builder).parameters.keys()
            assert builder.__doc__.splitlines()[0] in (method.__doc__ or "")
