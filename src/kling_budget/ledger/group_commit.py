"""Group commit: the write transactions of concurrent callers in one process share one commit and one sync.

A caller hands its transaction function to :meth:`GroupCommit.submit` and blocks until its answer is
durable. The first caller to find no batch in progress becomes the *leader*: it takes every waiting call
(up to ``max_batch``), runs them through the backend's ``commit`` phase (one database transaction, one
COMMIT), passes the leadership to the next waiting caller, then runs the ``sync`` phase (the flush that
makes the batch durable) and only then answers every caller of its batch. So while one batch waits for
the disk, the next one already runs: the disk and the CPU work at the same time, and a lone caller pays
nothing but an uncontended mutex (it leads a batch of one).

Answers are exact: a caller whose function raised gets its own exception (the backend rolled back only
its part); when the commit or the sync of a batch fails, every caller of that batch gets the failure, and
nothing of the batch was acknowledged. No thread is started; leadership moves between callers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Call", "GroupCommit"]

P = TypeVar("P")


class Call(Generic[P]):
    """One caller's work (``payload``) waiting in, or running in, a batch."""

    __slots__ = ("batch", "error", "payload", "result", "wake")

    def __init__(self, payload: P) -> None:
        self.payload = payload
        self.result: Any = None
        self.error: BaseException | None = None
        self.batch: list[Call[P]] | None = None  # set when this caller is made the leader of a batch
        self.wake: threading.Lock | None = None  # held while the caller waits; released to wake it

    def wait(self) -> None:
        """Block until :meth:`notify` (the wake lock was taken when the caller chose to wait)."""
        assert self.wake is not None
        self.wake.acquire()

    def notify(self) -> None:
        """Wake the caller if it waits (a call that led its own batch never waited)."""
        if self.wake is not None:
            self.wake.release()

    def fail(self, error: BaseException) -> None:
        """Answer this call with ``error`` (its result, if any, was not made durable)."""
        self.result, self.error = None, error


class GroupCommit(Generic[P]):
    """Batches concurrent transactions of one process.

    Args:
        commit: runs a batch: every call's work in one transaction, setting each call's ``result`` or
            ``error``; raises if the transaction as a whole failed (then every call gets that error).
            Returns a token for ``sync``.
        sync: makes the committed batch durable (given the token); raises if it cannot.
        max_batch: most calls in one batch.
        max_leaders: batches in progress at once (1 on a single connection; more lets a backend with a
            connection pool run the next batch while one waits on a row lock or the network).
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Call[P]]], Any],
        sync: Callable[[Any], None] = lambda token: None,
        *,
        max_batch: int = 64,
        max_leaders: int = 1,
    ) -> None:
        if max_batch < 1 or max_leaders < 1:
            raise ValueError("max_batch and max_leaders must be at least 1")
        self._commit = commit
        self._sync = sync
        self.max_batch = max_batch
        self._max_leaders = max_leaders
        self._mutex = threading.Lock()
        self._waiting: list[Call[P]] = []
        self._leaders = 0
        self._local = threading.local()
        #: Batches committed and calls in them so far (for benchmarks and tests).
        self.batches = 0
        self.calls = 0

    def leading(self) -> bool:
        """True in a thread that is running a batch (a nested call must not wait for itself)."""
        return bool(getattr(self._local, "leading", False))

    def submit(self, payload: P) -> Any:
        """Run ``payload`` in the next batch; return its result once the batch is durable, or raise its error."""
        call: Call[P] = Call(payload)
        with self._mutex:
            self._waiting.append(call)
            batch = None
            if self._leaders < self._max_leaders:  # then nobody else was waiting: this call leads
                self._leaders += 1
                batch = self._take()
            else:
                call.wake = threading.Lock()
                call.wake.acquire()
        if batch is None:
            call.wait()
            if call.batch is None:
                return _answer(call)
            batch = call.batch
        self._lead(batch)
        return _answer(call)

    def _take(self) -> list[Call[P]]:
        batch = self._waiting[: self.max_batch]
        del self._waiting[: self.max_batch]
        return batch

    def _lead(self, batch: list[Call[P]]) -> None:
        self._local.leading = True
        token: Any = None
        failed: BaseException | None = None
        try:
            token = self._commit(batch)
        except BaseException as exc:
            failed = exc
        finally:
            self._local.leading = False
            self._hand_over()
        if failed is None:
            try:
                self._sync(token)
            except BaseException as exc:
                failed = exc
        if failed is not None:
            for call in batch:
                call.fail(failed)
        self.batches += 1
        self.calls += len(batch)
        for call in batch:
            call.batch = None
            call.notify()

    def _hand_over(self) -> None:
        """Give the waiting calls to the oldest of them as its batch to lead, or step down."""
        with self._mutex:
            if self._waiting:
                following = self._waiting[0]
                following.batch = self._take()
                following.notify()
            else:
                self._leaders -= 1


def _answer(call: Call[Any]) -> Any:
    if call.error is not None:
        raise call.error
    return call.result
