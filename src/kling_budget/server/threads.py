"""Blocking calls off the event loop: a thread pool the gateway awaits without cancelling a call half-done.

Every ledger and key-store call of the gateway is blocking (SQLite, or a PostgreSQL round trip). A call
runs in a worker thread of a fixed-size pool and the coroutine awaits its result. The hop costs about half
the CPU of ``anyio.to_thread.run_sync`` under concurrency (no cancel scope or capacity limiter per call),
and a create makes four of them. Semantics are those of anyio's default: once started, a call finishes; a
cancellation of the awaiting task is delivered after the call returns, never while a ledger call is
half-way (so a create never loses track of whether its hold exists).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["BlockingPool"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """A pool of ``size`` worker threads for blocking calls awaited from the event loop.

    Args:
        size: most calls running at once (more queue for a thread).
        name: prefix of the worker threads' names.
    """

    def __init__(self, size: int, *, name: str = "kling-budget-blocking") -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"BlockingPool(size={self.size})"

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread and return its result (or raise its error)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=self._name)
        future = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be stopped: let the call finish, then deliver the cancellation.
            while not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    continue
                except Exception:
                    break
            raise

    def close(self) -> None:
        """Stop taking calls and wait for the running ones (so the ledger is not closed under one)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
