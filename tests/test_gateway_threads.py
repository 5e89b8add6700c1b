"""The gateway's worker-thread pool for blocking calls (server/threads.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kling_budget.server.threads import BlockingPool


def test_a_started_call_finishes_before_the_cancellation_is_delivered() -> None:
    """Cancelling the awaiting task does not abandon a running call: the task sees the cancellation only after
    the call has returned."""
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        finished.set()
        return "done"

    async def scenario() -> bool:
        pool = BlockingPool(2)
        task = asyncio.ensure_future(pool.run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = finished.is_set()
        pool.close()
        return seen

    assert asyncio.run(scenario()) is True


def test_results_errors_and_keyword_arguments_come_back() -> None:
    """A call's return value, its exception and its keyword arguments cross the thread hop unchanged."""

    def divide(a: int, *, by: int) -> float:
        return a / by

    async def scenario() -> None:
        pool = BlockingPool(4)
        assert await pool.run(divide, 6, by=3) == 2
        with pytest.raises(ZeroDivisionError):
            await pool.run(divide, 1, by=0)
        assert sorted(await asyncio.gather(*(pool.run(divide, n, by=1) for n in range(8)))) == list(range(8))
        pool.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="at least 1"):
        BlockingPool(0)
