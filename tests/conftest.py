"""Shared fixtures: an isolated environment per test and ledgers on every backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kling_budget.ledger import Ledger, open_ledger

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default ledger at a temporary directory and clear kling-budget/Kling settings."""
    for name in list(os.environ):
        if name.startswith(("KLING_BUDGET_", "KLING_ACCESS", "KLING_SECRET", "KLING_API")) and not name.startswith(
            "KLING_BUDGET_TEST_"
        ):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("KLING_BUDGET_HOME", str(home))
    return home


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty ledger database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    from tests.pgutil import fresh_postgres_url

    with fresh_postgres_url() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a fresh SQLite ledger file."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    """A fixed clock at 2026-03-10 12:00 UTC."""
    return FixedClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def ledger(ledger_url: str, clock: FixedClock) -> Iterator[Ledger]:
    """A fresh ledger on each backend, with the fixed clock."""
    opened = open_ledger(ledger_url, clock=clock)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def quick_kling() -> Iterator[Any]:
    """The Kling simulator for a module, its tasks finished within a fraction of a second."""
    from kling_budget.simulator import SimulatorConfig, running_simulator

    with running_simulator(SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=0.1)) as sim:
        yield sim
