"""Checks of request fields shared by the simulator's create routes of both designs.

Each raises :class:`~.protocol.SimError` 1201 with a message naming the field; ``prefix`` names where a
nested field sits (``string(settings, "resolution", prefix="settings.")`` -> ``"settings.resolution must
be a string"``). Pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kling_budget.simulator.protocol import SimError

__all__ = ["Body", "bad", "enum", "fraction", "integer", "items", "obj", "present", "string"]

Body = Mapping[str, Any]


def bad(field: str, problem: str) -> SimError:
    """1201 naming ``field``: ``"<field> <problem>"``."""
    return SimError(1201, f"{field} {problem}")


def present(body: Body, field: str) -> bool:
    """Whether ``field`` is given with a value other than ``null`` or ``""``."""
    value = body.get(field)
    return value is not None and value != ""


def string(
    body: Body, field: str, *, required: bool = False, max_len: int | None = None, prefix: str = ""
) -> str | None:
    """An optional (or ``required``) string of at most ``max_len`` characters; ``""`` counts as absent."""
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise bad(prefix + field, "is required")
        return None
    if not isinstance(value, str):
        raise bad(prefix + field, "must be a string")
    if max_len is not None and len(value) > max_len:
        raise bad(prefix + field, f"must not exceed {max_len} characters")
    return value


def enum(body: Body, field: str, allowed: tuple[str, ...], *, required: bool = False, prefix: str = "") -> str | None:
    """An optional (or ``required``) string that must be one of ``allowed``."""
    value = string(body, field, required=required, prefix=prefix)
    if value is not None and value not in allowed:
        raise bad(prefix + field, f"must be one of {', '.join(allowed)}; got {value!r}")
    return value


def fraction(body: Body, field: str, low: int = 0, high: int = 1) -> None:
    """An optional JSON number in ``[low, high]``."""
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad(field, f"must be a number in [{low}, {high}]")


def integer(body: Body, field: str, low: int, high: int, *, prefix: str = "") -> int | None:
    """An optional JSON integer (not a string, not a boolean) in ``[low, high]``."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(prefix + field, f"must be an integer in [{low}, {high}]")
    return value


def obj(body: Body, field: str, *, required: bool = False, prefix: str = "") -> Mapping[str, Any] | None:
    """An optional (or ``required``) JSON object."""
    value = body.get(field)
    if value is None:
        if required:
            raise bad(prefix + field, "is required")
        return None
    if not isinstance(value, dict):
        raise bad(prefix + field, "must be an object")
    return value


def items(
    body: Body, field: str, *, required: bool = False, low: int = 0, high: int = 1000, prefix: str = ""
) -> list[Any] | None:
    """An optional (or ``required``) JSON list of ``low`` to ``high`` items."""
    value = body.get(field)
    if value is None:
        if required:
            raise bad(prefix + field, "is required")
        return None
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise bad(prefix + field, f"must be a list of {low} to {high} items")
    return value
