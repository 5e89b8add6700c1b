"""The settle worker: polls Kling for every open gateway task until its reservation is settled.

Every ``settle_interval`` seconds it *claims* up to ``batch`` unsettled ownership rows that are due: in one
transaction it pushes each row's ``next_check_at`` ahead by its backoff (5 s × 1.5^checks, at most 5 min),
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several gateway instances sharing a database never poll
the same task at once; settling itself is idempotent in the ledger, so even an overlap would be harmless.

For each claimed row:

* reservation already committed or released (by a query, a callback or reconcile) → the row is marked
  settled;
* Kling definitely rejected the create but the release did not happen (ledger was down) → release now;
* Kling's task id known → query it (on its design's query route) and hand the answer to
  :class:`~kling_budget.enforced.settle.JobSettler`;
* no task id (the create's answer was lost or never recorded) → look it up by external id (the reservation
  id) once the create request has certainly ended: found → record and settle; Kling does not know it →
  release the hold (the create never happened).

Clients' queries and Kling's callbacks settle tasks too; the worker is the backstop that leaves no hold
behind when nobody asks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from kling_budget.errors import KlingTaskNotFoundError
from kling_budget.server.state import GatewayState
from kling_budget.server.task_store import TaskRow, now_micros

if TYPE_CHECKING:
    from kling_budget.server.proxy import Proxy

__all__ = ["SettleWorker", "backoff_micros"]

logger = logging.getLogger("kling_budget.gateway.settle")

FIRST_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 300.0


def backoff_micros(checks: int) -> int:
    """Delay before the next check of a task already checked ``checks`` times."""
    return int(min(FIRST_DELAY_SECONDS * 1.5**checks, MAX_DELAY_SECONDS) * 1_000_000)


class SettleWorker:
    """Background settlement for one gateway process.

    Args:
        state: the gateway state.
        proxy: its proxy (the worker settles through the same path as clients' queries).
        batch: rows claimed per sweep.
        concurrency: Kling queries in flight at once.
    """

    def __init__(self, state: GatewayState, proxy: Proxy, *, batch: int = 100, concurrency: int = 16) -> None:
        self.state = state
        self.proxy = proxy
        self.batch = batch
        self._limiter = anyio.Semaphore(concurrency)
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._started = False

    async def run(self) -> None:
        """Sweep until :meth:`stop` is called."""
        interval = self.state.config.settle_interval
        self._started = True
        try:
            while not self._stop.is_set():
                checked = 0
                try:
                    checked = await self.sweep()
                except Exception as exc:
                    logger.error("settle sweep failed (%s); will retry", type(exc).__name__)
                if checked >= self.batch:
                    continue  # a backlog: keep going without waiting
                with anyio.move_on_after(interval):
                    await self._stop.wait()
        finally:
            self._stopped.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the sweep in progress (at most ``timeout`` seconds) and stop."""
        self._stop.set()
        if not self._started:
            return
        with anyio.move_on_after(timeout):
            await self._stopped.wait()

    async def sweep(self, *, now: int | None = None) -> int:
        """Claim and check the due rows once; return how many were checked."""
        at = now_micros() if now is None else now
        rows = await self.state.run_sync(self.state.tasks.claim_due, now=at, limit=self.batch, delay=backoff_micros)
        if not rows:
            return 0
        async with anyio.create_task_group() as group:
            for row in rows:
                group.start_soon(self._guarded, row)
        return len(rows)

    async def _guarded(self, row: TaskRow) -> None:
        async with self._limiter:
            try:
                await self.check(row)
            except Exception as exc:
                logger.error(
                    "could not check task (%s); will retry",
                    type(exc).__name__,
                    extra={"reservation_id": row.reservation_id},
                )

    async def check(self, row: TaskRow) -> None:
        """Bring one row's reservation up to date with Kling."""
        tasks = self.state.tasks
        if row.reservation_state in ("committed", "released", "denied"):
            await self.state.run_sync(tasks.update, row.reservation_id, settled=True)
            return
        if row.status == "rejected":
            await self.state.run_sync(self.state.ledger.release, row.reservation_id, reason="Kling rejected the create")
            await self.state.run_sync(tasks.update, row.reservation_id, settled=True)
            return
        reply = await self.proxy.settlement.query_upstream(row, operation="poll")
        if reply.ok:
            await self.proxy.settlement.observe(row, reply.data)
            return
        if isinstance(reply.error, KlingTaskNotFoundError) and row.task_id is None:
            # The create's outcome was never learned and Kling has no task with our external id: it was
            # never created. Only rows past the grace period are due here, so the request has ended.
            logger.info("create never reached Kling; releasing its hold", extra={"reservation_id": row.reservation_id})
            await self.state.run_sync(
                self.state.ledger.release, row.reservation_id, reason="Kling has no task for this create"
            )
            await self.state.run_sync(
                tasks.update, row.reservation_id, status="rejected", settled=True, free_external_id=True
            )
            return
        logger.info("poll failed (%s); will retry", reply.error, extra={"reservation_id": row.reservation_id})
