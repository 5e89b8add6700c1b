"""Exact money: Kling units as integer milli-units, dollars as integer nano-dollars or ``Decimal``.

Nothing here accepts or produces a float. Conversions that would lose precision raise
:class:`~kling_budget.errors.InvalidInputError` instead of rounding silently; the only rounding rule
(half-up to the nano-dollar) lives in :func:`usd_nano_for_units`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import overload

from kling_budget.errors import InvalidInputError
from kling_budget.numeric import plain_decimal

MILLI_PER_UNIT = 1000
NANO_PER_USD = 1_000_000_000

__all__ = [
    "MILLI_PER_UNIT",
    "NANO_PER_USD",
    "format_units",
    "format_usd",
    "milli_to_units",
    "nano_to_usd",
    "parse_decimal",
    "units_text",
    "units_to_milli",
    "usd_nano_for_units",
    "usd_text",
    "usd_to_nano",
]

Number = Decimal | int | str


def parse_decimal(value: Number, what: str) -> Decimal:
    """Parse an exact decimal from an int, a ``Decimal`` or a plain decimal string (``"1.5"``, no exponent);
    floats are refused, and so is anything with more than 20 digits before or after the point."""
    return plain_decimal(value, what)


MAX_MILLI = 10**15  # one trillion units
MAX_NANO = 10**18  # one billion dollars: sums of such amounts still fit the ledger's 64-bit counters


def _scaled(value: Number, scale: int, what: str, digits: int, maximum: int, human_max: str) -> int:
    exact = parse_decimal(value, what) * scale
    if exact != exact.to_integral_value():
        raise InvalidInputError(f"{what} has more than {digits} decimal places: {value!r}")
    if abs(exact) > maximum:
        raise InvalidInputError(f"{what} is too large: {value!r} (at most {human_max})")
    return int(exact)


def units_to_milli(value: Number, what: str = "units") -> int:
    """Convert units (``1.5``, ``"0.05"``, ``Decimal("2")``) to integer milli-units, exactly."""
    return _scaled(value, MILLI_PER_UNIT, what, 3, MAX_MILLI, "1,000,000,000,000 units")


def _plain(value: Decimal) -> Decimal:
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    return normalized.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normalized


def milli_to_units(milli: int) -> Decimal:
    """Integer milli-units as an exact ``Decimal`` number of units (``1500`` -> ``Decimal("1.5")``)."""
    return _plain(Decimal(milli) / MILLI_PER_UNIT) if milli else Decimal(0)


def usd_to_nano(value: Number, what: str = "USD amount") -> int:
    """Convert dollars to integer nano-dollars, exactly."""
    return _scaled(value, NANO_PER_USD, what, 9, MAX_NANO, "$1,000,000,000")


def nano_to_usd(nano: int) -> Decimal:
    """Integer nano-dollars as an exact ``Decimal`` (at least two decimal places)."""
    usd = Decimal(nano) / NANO_PER_USD
    normalized = usd.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        return usd.quantize(Decimal("0.01"))
    return normalized


def usd_nano_for_units(milli: int, price_nano: int, per_milli: int) -> int:
    """Dollars (nano) for ``milli`` units at ``price_nano`` per ``per_milli`` units, rounded half-up.

    This is the single rounding rule: e.g. a pack of 3 units bought for $100 prices 1 unit at
    ``usd_nano_for_units(1000, 100 * 10**9, 3000)`` = $33.333333333.
    """
    if per_milli <= 0:
        raise InvalidInputError("a price must be for a positive number of units")
    numerator = milli * price_nano
    if numerator >= 0:
        return (2 * numerator + per_milli) // (2 * per_milli)
    return -((-2 * numerator + per_milli) // (2 * per_milli))


def format_units(milli: int) -> str:
    """Human form of milli-units: ``1500`` -> ``"1.5"``, ``2000`` -> ``"2"``."""
    return f"{milli_to_units(milli):f}"


def format_usd(nano: int) -> str:
    """Human form of nano-dollars: ``210000000`` -> ``"$0.21"``, ``3500000`` -> ``"$0.0035"``."""
    usd = nano_to_usd(nano)
    sign = "-" if usd < 0 else ""
    return f"{sign}${abs(usd):f}"


@overload
def units_text(milli: int) -> str: ...
@overload
def units_text(milli: None) -> None: ...
def units_text(milli: int | None) -> str | None:
    """Milli-units as a plain decimal string for JSON (``"1.5"``; never exponent notation); ``None`` stays."""
    return None if milli is None else format(milli_to_units(milli), "f")


@overload
def usd_text(nano: int) -> str: ...
@overload
def usd_text(nano: None) -> None: ...
def usd_text(nano: int | None) -> str | None:
    """Nano-dollars as a plain decimal string for JSON (``"0.21"``, ``"0.00000033"``; never exponent notation,
    which ``str()`` of a ``Decimal`` below 1e-6 would use); ``None`` stays."""
    return None if nano is None else format(nano_to_usd(nano), "f")
