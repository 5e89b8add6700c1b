"""Kling's two API designs, told apart by the path; pure.

* The legacy ``/v1`` design: ``POST /v1/videos/text2video`` with ``model_name`` in the body, create options
  (``external_task_id``, ``callback_url``, ``watermark_info``) at the top of the body, one query path per
  create path.
* The 2026 design: the model is in the path (``POST /text-to-video/kling-3.0``), the body holds typed
  ``contents``, ``settings`` and ``options`` (where the create options live), and every task is queried on
  ``/tasks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kling_budget.errors import InvalidInputError

__all__ = [
    "MODEL_IN_PATH_PRODUCTS",
    "create_option",
    "is_model_in_path",
    "model_path",
    "split_model_path",
    "with_create_option",
]

MODEL_IN_PATH_PRODUCTS = ("text-to-video", "image-to-video", "omni-video", "motion-control")
"""Products of the 2026 design: their create paths are ``/<product>/<model>``."""
_MODEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def split_model_path(path: str) -> tuple[str, str] | None:
    """``(product, model)`` of a 2026-design create path (``/text-to-video/kling-3.0``), else ``None``."""
    product, _, model = path.strip("/").partition("/")
    if product not in MODEL_IN_PATH_PRODUCTS or not model or len(model) > 64 or not set(model) <= _MODEL_CHARS:
        return None
    return product, model


def is_model_in_path(path: str) -> bool:
    """Whether ``path`` is a create path of the 2026 design."""
    return split_model_path(path) is not None


def model_path(product: str, model: str) -> str:
    """The 2026-design create path of ``model`` for ``product`` (``/text-to-video/kling-3.0``).

    Raises:
        InvalidInputError: an unknown product, or a model name that is not one path segment.
    """
    if product not in MODEL_IN_PATH_PRODUCTS:
        raise InvalidInputError(f"unknown product {product!r}; accepted: {', '.join(MODEL_IN_PATH_PRODUCTS)}")
    path = f"/{product}/{model}"
    if not isinstance(model, str) or split_model_path(path) is None:
        raise InvalidInputError(f"model must be a name like kling-3.0 (letters, digits, . - _), got {model!r}")
    return path


def create_option(path: str, body: Mapping[str, Any], name: str) -> Any:
    """A create option (``external_task_id``, ``callback_url``, ``watermark_info``) wherever the design keeps it:
    top-level on ``/v1``, under ``options`` on the 2026 design."""
    if is_model_in_path(path):
        options = body.get("options")
        return options.get(name) if isinstance(options, Mapping) else None
    return body.get(name)


def with_create_option(path: str, body: Mapping[str, Any], name: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with create option ``name`` set to ``value`` where the design keeps it."""
    updated = dict(body)
    if is_model_in_path(path):
        options = updated.get("options")
        updated["options"] = {**(options if isinstance(options, Mapping) else {}), name: value}
    else:
        updated[name] = value
    return updated
