"""A tenant's JSON body, parsed with bounds: depth, number size, and text that every store and Kling accepts.

Everything here is pure and bounded by the body size the gateway admits (see :mod:`kling_budget.server.limits`):

* numbers are checked as text while parsing, before conversion: at most :data:`MAX_NUMBER_DIGITS` digits and
  a magnitude below 10^15, so ``1e999999`` or a 5,000-digit integer is refused instead of costing seconds
  (or a crash) when it is later converted or written; ``NaN`` and ``Infinity`` are refused;
* nesting deeper than :data:`MAX_DEPTH` is refused (Kling's bodies nest three or four levels);
* strings and keys may not hold NUL characters (PostgreSQL refuses them) or lone UTF-16 surrogates (they
  cannot be encoded as UTF-8, so neither stored nor forwarded).

A refusal is a :class:`BadJSONError` whose message says what is wrong and what is accepted.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from kling_budget.numeric import shown

__all__ = ["MAX_DEPTH", "MAX_NUMBER_DIGITS", "BadJSONError", "parse_object"]

MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 20
_MAX_MAGNITUDE_DIGITS = 15  # |x| < 10**15: far beyond any count, length or scale Kling accepts
_MAX_NUMBER_TEXT = 2 * MAX_NUMBER_DIGITS + 8


class BadJSONError(ValueError):
    """The body is not JSON the gateway accepts; ``not_json`` is true when it is not JSON at all."""

    def __init__(self, message: str, *, not_json: bool = False) -> None:
        super().__init__(message)
        self.not_json = not_json


def _number_error(text: str) -> BadJSONError:
    return BadJSONError(
        f"the request body has a number that is too long or too large: {shown(text)} (numbers may have at most "
        f"{MAX_NUMBER_DIGITS} digits and must be below 10^{_MAX_MAGNITUDE_DIGITS})"
    )


def _parse_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > _MAX_MAGNITUDE_DIGITS:
        raise _number_error(text)
    return int(text)


def _parse_float(text: str) -> Decimal:
    if len(text) > _MAX_NUMBER_TEXT:
        raise _number_error(text)
    value = Decimal(text)
    _sign, digits, _exponent = value.as_tuple()
    if len(digits) > MAX_NUMBER_DIGITS or (value and value.adjusted() >= _MAX_MAGNITUDE_DIGITS):
        raise _number_error(text)
    if value and value.adjusted() < -MAX_NUMBER_DIGITS:
        raise _number_error(text)
    return value


def _refuse_constant(text: str) -> Any:
    raise BadJSONError(f"the request body has {text}, which is not a JSON number; send a plain number")


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise BadJSONError(f"{where} contains a NUL character (\\u0000), which is not accepted")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSONError(
                f"{where} contains a lone UTF-16 surrogate (e.g. \\ud800 without its pair), which is not valid text"
            ) from None


def _walk(root: Any) -> None:
    """Check depth and text of every node, iteratively (no recursion whatever the depth)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise BadJSONError(f"the request body nests deeper than {MAX_DEPTH} levels")
            for key, value in node.items():
                _check_text(key, f"the field name {shown(key)}")
                if isinstance(value, str):
                    _check_text(value, f"field {shown(key)}")
                elif isinstance(value, dict | list):
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise BadJSONError(f"the request body nests deeper than {MAX_DEPTH} levels")
            for value in node:
                if isinstance(value, str):
                    _check_text(value, "a list item")
                elif isinstance(value, dict | list):
                    stack.append((value, depth + 1))


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (fractions as ``Decimal``), or :class:`BadJSONError`."""
    try:
        body = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except BadJSONError:
        raise
    except RecursionError:
        raise BadJSONError(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise BadJSONError("the request body is not valid JSON (UTF-8)", not_json=True) from None
    if not isinstance(body, dict):
        raise BadJSONError("the request body must be a JSON object", not_json=True)
    _walk(body)
    return body
