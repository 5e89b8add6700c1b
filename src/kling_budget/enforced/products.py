"""The recipe's product calls (``generate_video(prompt, duration, model)`` ...) as pure adapters onto the body
builders of :mod:`kling_budget.kling.bodies`.

Each adapter takes the recipe's friendly arguments, passes every other keyword argument to its builder
unchanged (so every Kling field of that endpoint is accepted, and a field added to a builder reaches these
calls too), and adds the facts that price a request but are not sent. The budget-enforced clients expose them
as methods; they never send anything themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kling_budget.enforced._core import DEFAULT_VIDEO_MODEL, Submission
from kling_budget.kling import bodies
from kling_budget.kling.bodies import compact
from kling_budget.money import Number

__all__ = [
    "effects",
    "extend_video",
    "generate_image",
    "generate_video",
    "image_to_video",
    "lip_sync",
    "virtual_try_on",
]


def generate_video(prompt: str, duration: int | str = 5, model: str = DEFAULT_VIDEO_MODEL, **fields: Any) -> Submission:
    """Text to video (``/v1/videos/text2video``) under budget: the recipe's ``generate_video``.

    ``model`` accepts the recipe's spellings (``kling-v2.6``) and sends Kling's name. Other keyword arguments
    are those of :func:`kling_budget.kling.bodies.text_to_video` (``mode``, ``sound``, ``camera_control`` ...).
    """
    return Submission.of(bodies.text_to_video(prompt, duration=duration, model_name=model, **fields))


def image_to_video(
    image: str,
    prompt: str | None = None,
    duration: int | str = 5,
    model: str = DEFAULT_VIDEO_MODEL,
    **fields: Any,
) -> Submission:
    """Image to video (``/v1/videos/image2video``) under budget; ``image`` is a URL or raw base64.

    Other keyword arguments are those of :func:`kling_budget.kling.bodies.image_to_video` (``image_tail``,
    ``mode``, ``static_mask``, ``dynamic_masks``, ``camera_control`` ...).
    """
    return Submission.of(bodies.image_to_video(image, prompt=prompt, duration=duration, model_name=model, **fields))


def generate_image(prompt: str, *, model: str | None = None, n: int = 1, **fields: Any) -> Submission:
    """Image generation (``/v1/images/generations``) under budget; ``n`` images are held (and charged).

    Other keyword arguments are those of :func:`kling_budget.kling.bodies.image_generation`.
    """
    return Submission.of(bodies.image_generation(prompt, model_name=model, n=n, **fields))


def extend_video(
    video_id: str,
    prompt: str | None = None,
    *,
    source_model: str | None = None,
    source_mode: str | None = None,
    **fields: Any,
) -> Submission:
    """Extend a generated video (``/v1/videos/video-extend``) under budget.

    Kling extends with the source video's model and mode, which the request does not carry: give them as
    ``source_model`` / ``source_mode`` for an exact hold, otherwise the highest extension price is held (and
    the difference returned on commit). Other keyword arguments are those of
    :func:`kling_budget.kling.bodies.video_extend`.
    """
    hints = compact(model_name=source_model, mode=source_mode)
    return Submission.of(bodies.video_extend(video_id, prompt=prompt, **fields), pricing_hints=hints)


def lip_sync(*, mode: str, input_duration: Number | None = None, **fields: Any) -> Submission:
    """Lip sync (``/v1/videos/lip-sync``) under budget.

    The price follows the video's length, which the request does not carry: pass ``input_duration``
    (seconds) for an exact hold, otherwise the longest accepted video is held. Other keyword arguments are
    those of :func:`kling_budget.kling.bodies.lip_sync`.
    """
    return Submission.of(bodies.lip_sync(mode=mode, **fields), input_duration=input_duration)


def effects(effect_scene: str, input: Mapping[str, Any], *, units: Number | None = None, **fields: Any) -> Submission:
    """A video-effects template (``/v1/videos/effects``) under budget.

    Kling prices effects per template; pass ``units`` when your price table does not list the template.
    Other keyword arguments are those of :func:`kling_budget.kling.bodies.video_effects`.
    """
    return Submission.of(bodies.video_effects(effect_scene, input, **fields), units=units)


def virtual_try_on(human_image: str, cloth_image: str, *, model: str | None = None, **fields: Any) -> Submission:
    """Kolors virtual try-on (``/v1/images/kolors-virtual-try-on``) under budget (try-on pack units).

    Other keyword arguments are those of :func:`kling_budget.kling.bodies.virtual_try_on`.
    """
    return Submission.of(bodies.virtual_try_on(human_image, cloth_image, model_name=model, **fields))
