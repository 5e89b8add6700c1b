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

C = TypeVar("C")


class Call(Generic[C]):
    """One caller's transaction waiting in (or running in) a batch."""

    __slots__ = ("done", "error", "fn", "leads", "result")

    def __init__(self, fn: Callable[[C], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.leads = False
        self.done = threading.Event()

    def fail(self, error: BaseException) -> None:
        """Answer this call with ``error`` (its result, if any, was not made durable)."""
        self.result, self.error = None, error


class GroupCommit(Generic[C]):
    """Batches concurrent transactions of one process.

    Args:
        commit: runs a batch: every call's ``fn`` in one transaction, setting each call's ``result`` or
            ``error``; raises if the transaction as a whole failed (then every call gets that error).
            Returns a token for ``sync``.
        sync: makes the committed batch durable (given the token); raises if it cannot.
        max_batch: most calls in one batch.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Call[C]]], Any],
        sync: Callable[[Any], None],
        *,
        max_batch: int = 64,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._sync = sync
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._waiting: list[Call[C]] = []
        self._busy = False
        self._local = threading.local()
        #: Batches committed and calls in them so far (for benchmarks and tests).
        self.batches = 0
        self.calls = 0

    def leading(self) -> bool:
        """True in a thread that is running a batch (a nested call must not wait for itself)."""
        return bool(getattr(self._local, "leading", False))

    def submit(self, fn: Callable[[C], Any]) -> Any:
        """Run ``fn`` in the next batch; return its result once the batch is durable, or raise its error."""
        call: Call[C] = Call(fn)
        with self._mutex:
            self._waiting.append(call)
            leads = not self._busy
            self._busy = True
        if not leads:
            call.done.wait()
            if not call.leads:
                return _answer(call)
        self._lead()
        return _answer(call)

    def _lead(self) -> None:
        with self._mutex:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
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
            call.done.set()

    def _hand_over(self) -> None:
        """Make the oldest waiting caller the next leader, or mark the group idle."""
        with self._mutex:
            if self._waiting:
                following = self._waiting[0]
                following.leads = True
                following.done.set()
            else:
                self._busy = False


def _answer(call: Call[Any]) -> Any:
    if call.error is not None:
        raise call.error
    return call.result
