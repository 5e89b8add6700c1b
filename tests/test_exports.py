"""The public surface of `kling_budget`: a sorted `__all__` whose names all import, and the recipe's names."""

from __future__ import annotations

import importlib

import pytest

import kling_budget


def test_all_is_sorted_and_unique() -> None:
    """`__all__` is sorted and has no duplicates."""
    assert kling_budget.__all__ == sorted(set(kling_budget.__all__))


@pytest.mark.parametrize("name", sorted(set(kling_budget.__all__)))
def test_every_exported_name_is_importable(name: str) -> None:
    """Each name in `__all__` can be imported from the package."""
    module = importlib.import_module("kling_budget")
    assert getattr(module, name) is not None


def test_recipe_names_import() -> None:
    """`from kling_budget import CostTracker, Budget, BudgetPeriod, UsageRecord, BudgetExceededError` works."""
    from kling_budget import Budget, BudgetExceededError, BudgetPeriod, CostTracker, UsageRecord

    assert issubclass(BudgetExceededError, Exception)
    assert BudgetPeriod.MONTHLY.value == "monthly"
    assert {CostTracker.__name__, Budget.__name__, UsageRecord.__name__} == {"CostTracker", "Budget", "UsageRecord"}


def test_version_is_the_installed_distribution_version() -> None:
    """`kling_budget.__version__` is the installed package's version."""
    from importlib.metadata import version

    assert kling_budget.__version__ == version("kling-budget")


def test_unknown_attribute_is_an_attribute_error() -> None:
    """Asking the package for a name it does not have raises `AttributeError`."""
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = kling_budget.Nope
