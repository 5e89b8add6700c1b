"""Callback notifications the simulator owes: the outbox the dispatcher drains, and the deliveries it made.

The HTTP side (:mod:`.app`) sends the events and records each attempt; this module only queues them, applies
the ``reorder`` switch and wakes the callback scheduler when something changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["CallbackControl", "CallbackEvent", "Delivery", "Outbox"]


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One status-change notification to deliver to a task's ``callback_url``."""

    msg_id: str
    task_id: str
    url: str
    status: str
    terminal: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt of a callback, as the simulator saw it.

    ``http_status`` is the receiver's answer, or ``None`` with ``error`` set when no answer came.
    """

    msg_id: str
    task_id: str
    url: str
    status: str
    attempt: int
    headers: Mapping[str, str]
    body: bytes
    http_status: int | None
    error: str | None


@dataclass(slots=True)
class CallbackControl:
    """Switches for callback delivery, flipped by tests at run time.

    Attributes:
        duplicate: send every notification twice (same ``webhook-id``), like an at-least-once retry.
        reorder: hold a task's notifications until it ends, then send them newest first.
    """

    duplicate: bool = False
    reorder: bool = False


class Outbox:
    """Pending notifications and finished delivery attempts, guarded by the simulator's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._delivered = threading.Condition(lock)
        self._outbox: list[CallbackEvent] = []
        self._held: dict[str, list[CallbackEvent]] = {}
        self._deliveries: list[Delivery] = []
        self._waker: Callable[[], None] | None = None

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Register the function that wakes the callback scheduler."""
        with self._lock:
            self._waker = waker

    def wake(self) -> None:
        """Wake the callback scheduler, if one is registered."""
        waker = self._waker
        if waker is not None:
            waker()

    def push(self, event: CallbackEvent) -> None:
        """Queue a notification and wake the scheduler."""
        self._outbox.append(event)
        self.wake()

    def take(self, reorder: bool) -> list[CallbackEvent]:
        """Notifications ready to send, in sending order.

        With ``reorder``, a task's notifications are held until its terminal one, then released newest first.
        """
        with self._lock:
            events, self._outbox = self._outbox, []
            if not reorder:
                held = [e for queue in self._held.values() for e in queue]
                self._held.clear()
                return held + events
            ready: list[CallbackEvent] = []
            for event in events:
                self._held.setdefault(event.task_id, []).append(event)
                if event.terminal:
                    ready.extend(reversed(self._held.pop(event.task_id)))
            return ready

    def record(self, delivery: Delivery) -> None:
        """Remember a delivery attempt and wake :meth:`wait_for` callers."""
        with self._delivered:
            self._deliveries.append(delivery)
            self._delivered.notify_all()

    @property
    def deliveries(self) -> list[Delivery]:
        """Every delivery attempt so far, in the order they finished."""
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, timeout: float) -> list[Delivery]:
        """Block until at least ``count`` delivery attempts finished; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self._deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self._deliveries)} of {count} callback deliveries after {timeout} s")
            return list(self._deliveries)
