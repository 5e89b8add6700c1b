"""Exact money: milli-units and nano-dollars, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_budget.errors import InvalidInputError
from kling_budget.money import (
    format_units,
    format_usd,
    milli_to_units,
    nano_to_usd,
    units_to_milli,
    usd_nano_for_units,
    usd_to_nano,
)


@pytest.mark.parametrize(("value", "milli"), [(1, 1000), ("1.5", 1500), (Decimal("0.05"), 50), ("10", 10000)])
def test_units_to_milli_is_exact(value: object, milli: int) -> None:
    """Units convert to integer milli-units exactly."""
    assert units_to_milli(value) == milli  # type: ignore[arg-type]


def test_floats_are_refused() -> None:
    """A float amount is refused with a message saying what is accepted."""
    with pytest.raises(InvalidInputError, match="exact number"):
        units_to_milli(1.5)  # type: ignore[arg-type]


def test_sub_milli_precision_is_refused() -> None:
    """More than three decimals of a unit cannot be represented and is refused, not rounded."""
    with pytest.raises(InvalidInputError, match="3 decimal places"):
        units_to_milli("0.0001")


@pytest.mark.parametrize("value", ["abc", "nan", "inf", ""])
def test_non_numbers_are_refused(value: str) -> None:
    """Text that is not a finite number is refused."""
    with pytest.raises(InvalidInputError):
        units_to_milli(value)


def test_display_forms() -> None:
    """Units and dollars print without exponents and with at least cents."""
    assert milli_to_units(10000) == Decimal("10")
    assert str(milli_to_units(10000)) == "10"
    assert format_units(1500) == "1.5"
    assert format_usd(210_000_000) == "$0.21"
    assert format_usd(3_500_000) == "$0.0035"
    assert str(nano_to_usd(10**10)) == "10.00"
    assert usd_to_nano("0.14") == 140_000_000


def test_pack_price_rounding_is_half_up_to_the_nano_dollar() -> None:
    """$100 for 3 units prices one unit at $33.333333333 (half-up on the nano-dollar)."""
    assert usd_nano_for_units(1000, 100 * 10**9, 3000) == 33_333_333_333
    assert usd_nano_for_units(2000, 100 * 10**9, 3000) == 66_666_666_667
