"""Clocks for the simulator: the wall clock, and a manual clock tests advance by hand.

Task progress, token validity, pack validity and the account-report lag are all read from one
:class:`Clock`, in integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Anything that tells the current time in Unix milliseconds."""

    def now_ms(self) -> int:
        """The current time, in milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """The current wall-clock time, in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to; starts at the wall-clock time unless ``start_ms`` is given.

    Listeners registered with :meth:`add_listener` run after every change (the simulator uses this to wake
    its callback scheduler), so advancing the clock fires due callbacks without any sleeping.
    """

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = SystemClock().now_ms() if start_ms is None else start_ms
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        """The clock's current time, in milliseconds since the Unix epoch."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> int:
        """Move the clock forward by ``seconds`` (may be fractional); return the new time in ms."""
        if seconds < 0:
            raise ValueError("a clock can only be advanced forward")
        return self._move(round(seconds * 1000))

    def advance_ms(self, milliseconds: int) -> int:
        """Move the clock forward by whole milliseconds; return the new time in ms."""
        if milliseconds < 0:
            raise ValueError("a clock can only be advanced forward")
        return self._move(milliseconds)

    def _move(self, delta_ms: int) -> int:
        with self._lock:
            self._now += delta_ms
            now = self._now
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return now

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of the time."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
