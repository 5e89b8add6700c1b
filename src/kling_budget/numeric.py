"""Short plain decimals: how a number from untrusted text (a request body, a callback, a CLI argument) becomes exact.

The number is checked *before* it is converted: as text (digits, at most one point, a bounded length, no
exponent), or by its digit count and exponent when it is already an ``int`` or a ``Decimal``. So no input
can make a conversion run for seconds (``int(Decimal("1e1000000"))`` builds a million-digit integer),
overflow the decimal context (``Decimal("1e999999") * 1000``) or echo thousands of digits in an error
message. Pure: no I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal

from kling_budget.errors import InvalidInputError

__all__ = ["MAX_FRACTION_DIGITS", "MAX_INTEGER_DIGITS", "plain_decimal", "shown"]

MAX_INTEGER_DIGITS = 20
"""Digits before the point accepted by default (amounts up to 10^20)."""
MAX_FRACTION_DIGITS = 20
"""Digits after the point accepted by default."""

_PLAIN = re.compile(r"[+-]?([0-9]+)(?:\.([0-9]+))?")
_SHOWN_CHARACTERS = 40
_MAX_TEXT = 200  # checked before the pattern: no regex or conversion ever runs over a long argument


def shown(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters, for error messages about untrusted input."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 1] + "…"


def plain_decimal(
    value: object,
    what: str,
    *,
    integer_digits: int = MAX_INTEGER_DIGITS,
    fraction_digits: int = MAX_FRACTION_DIGITS,
) -> Decimal:
    """``value`` (an ``int``, a ``Decimal`` or text like ``"1.5"``) as an exact ``Decimal``, within bounds.

    Text must be a plain decimal: an optional sign, digits, optionally a point and more digits; no exponent,
    no ``NaN``/``Infinity``, surrounding spaces allowed. At most ``integer_digits`` digits before the point
    and ``fraction_digits`` after it (for a ``Decimal``: its magnitude and exponent). Floats are refused
    (they are not exact).

    Raises:
        InvalidInputError: anything else; the message names ``what``, what is accepted, and a shortened copy
            of the value.
    """
    if isinstance(value, bool | float):
        raise InvalidInputError(
            f"{what} must be an exact number (an integer, a Decimal or text like '1.5'), not {type(value).__name__}"
        )
    if isinstance(value, int):
        if abs(value) >= 10**integer_digits:  # compares magnitudes; never formats a huge integer
            raise InvalidInputError(f"{what} is too large: at most {integer_digits} digits")
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _not_plain(what, value, integer_digits, fraction_digits)
        exponent = value.as_tuple().exponent
        if value and value.adjusted() >= integer_digits:
            raise InvalidInputError(f"{what} is too large: at most {integer_digits} digits")
        if isinstance(exponent, int) and -exponent > fraction_digits:
            raise _not_plain(what, value, integer_digits, fraction_digits)
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT:
            raise InvalidInputError(f"{what} is too long: at most {integer_digits} digits before the point")
        match = _PLAIN.fullmatch(text)
        if match is None:
            raise _not_plain(what, value, integer_digits, fraction_digits)
        if len(match.group(1)) > integer_digits:
            raise InvalidInputError(
                f"{what} is too large: at most {integer_digits} digits before the point, got {shown(value)}"
            )
        if len(match.group(2) or "") > fraction_digits:
            raise InvalidInputError(
                f"{what} has more than {fraction_digits} digits after the point, got {shown(value)}"
            )
        return Decimal(text)
    raise InvalidInputError(f"{what} must be a number, got {type(value).__name__}")


def _not_plain(what: str, value: object, integer_digits: int, fraction_digits: int) -> InvalidInputError:
    # Built only when needed: formatting it on every call was a measurable share of parsing a task.
    return InvalidInputError(
        f"{what} must be a plain decimal number like 1.5 or 10 (no exponent, at most {integer_digits} digits before "
        f"the point and {fraction_digits} after it), got {shown(value)}"
    )
