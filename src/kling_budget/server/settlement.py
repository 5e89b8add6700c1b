"""Settling the gateway's tasks: Kling's answers about a task applied to its hold and its ownership row.

A client's query, Kling's callback and the settle worker all end here: :meth:`Settlement.query_upstream`
asks Kling about a task in its own design, :meth:`Settlement.observe` hands the answer to
:class:`~kling_budget.enforced.settle.JobSettler` and keeps the latest state in the ownership row. A task
that ends is committed (or released) and its row marked settled in one ledger transaction. The create path
uses the rest: a synchronous endpoint's charge, a definite rejection, an outcome Kling did not confirm.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kling_budget.errors import InvalidInputError, KlingAPIError
from kling_budget.kling._codes import error_for_code
from kling_budget.kling.tasks import Task, parse_task
from kling_budget.server.state import GatewayState
from kling_budget.server.task_store import TaskRow, now_micros
from kling_budget.server.upstream import UpstreamReply
from kling_budget.types import Quote

if TYPE_CHECKING:
    from kling_budget.enforced.settle import JobSettler, SettleOutcome

__all__ = ["NO_API_KEY_MESSAGE", "UNCONFIRMED_GRACE_SECONDS", "Settlement", "task_status"]

logger = logging.getLogger("kling_budget.gateway")

NO_API_KEY_MESSAGE = (
    "this gateway serves Kling's 2026 API design (/text-to-video/<model>, /image-to-video/<model>, "
    "/omni-video/<model>, /motion-control/<model>, /tasks) only with a Kling API key, which Kling requires there; "
    "its operator configured an access key/secret key pair only (set KLING_API_KEY); the /v1 routes work"
)
# A task the worker has not heard of for this long after its create was sent may be looked up by
# external id, and released if Kling does not know it: the create request has certainly ended by then.
UNCONFIRMED_GRACE_SECONDS = 10.0


def task_status(data: Any) -> str | None:
    """Kling's own status word in a task object of either design (``succeed`` on ``/v1``, ``succeeded`` on
    the 2026 design), ``None`` when it has none."""
    if not isinstance(data, dict):
        return None
    status = data.get("task_status", data.get("status"))
    return status if isinstance(status, str) and status else None


class Settlement:
    """Kling's answers applied to the gateway's holds and ownership rows, over one :class:`GatewayState`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._settler: JobSettler | None = None

    def settler(self) -> JobSettler:
        """The settler of this gateway's ledger (made on first use)."""
        if self._settler is None:
            from kling_budget.enforced.settle import JobSettler

            self._settler = JobSettler(self.state.tracker)
        return self._settler

    async def query_upstream(self, row: TaskRow, operation: str = "query") -> UpstreamReply:
        """Kling's answer about ``row``'s task, in its own design: by Kling's task id, else by the gateway's
        external id (the reservation id); a 2026-design task without an API key configured is 403/1103."""
        upstream = self.state.upstream_for(row.endpoint)
        if upstream is None:
            error = error_for_code(1103, NO_API_KEY_MESSAGE, http_status=403, request_id=None)
            return UpstreamReply.of(error)
        if row.task_id:
            return await upstream.query_task(row.endpoint, task_id=row.task_id, operation=operation)
        return await upstream.query_task(row.endpoint, external_task_id=row.reservation_id, operation=operation)

    async def observe(self, row: TaskRow, data: Any) -> Task | None:
        """Hand Kling's fresh answer about ``row``'s task to the settler and keep the latest state."""
        try:
            task = parse_task(data if isinstance(data, dict) else {}, endpoint=row.endpoint)
        except InvalidInputError:
            return None
        status = task_status(data) or task.status.value
        if row.settled and row.status == status:
            return task
        if not task.is_terminal and row.status == status and row.task_id == task.task_id:
            return task
        try:
            await self.state.run_sync(self._apply, row, task, data, status)
        except Exception as exc:
            logger.error(
                "could not settle task %s (%s); will retry",
                task.task_id,
                type(exc).__name__,
                extra={"reservation_id": row.reservation_id},
            )
        return task

    def _apply(self, row: TaskRow, task: Task, data: Any, status: str) -> None:
        tasks = self.state.tasks
        settled = False
        if task.is_terminal and not row.settled:
            # The row is marked settled in the ledger transaction that commits or releases the hold; that
            # transaction ran in this call exactly when the outcome is COMMITTED or RELEASED.
            hook = tasks.update_hook(row.reservation_id, status=status, data=data, settled=True, task_id=task.task_id)
            outcome = self.settler().settle(task, reservation_id=row.reservation_id, also=hook)
            self._count_settled(outcome)
            if outcome.action.value in ("committed", "released"):
                return
            settled = outcome.settled or outcome.conflict
        elif not row.task_id:
            self.settler().settle(task, reservation_id=row.reservation_id)  # records the task id
        tasks.update(
            row.reservation_id,
            status=status,
            data=data,
            settled=True if settled else None,
            task_id=task.task_id,
        )

    def _count_settled(self, outcome: SettleOutcome) -> None:
        info = outcome.reservation
        if outcome.action.value == "committed" and info is not None:
            self.state.metrics.units("committed", info.pack_type.value, info.actual_milli or 0)
        elif outcome.action.value == "released" and info is not None:
            self.state.metrics.units("released", info.pack_type.value, info.units_milli)

    async def settle_sync(self, reservation_id: str, quote: Quote, data: Any) -> None:
        try:
            row = self.state.tasks.update_hook(reservation_id, status="succeed", data=data, settled=True)
            await self.state.run_sync(self.state.ledger.commit, reservation_id, also=row)
            self.state.metrics.units("committed", quote.pack_type.value, quote.units_milli)
        except Exception as exc:
            logger.error(
                "could not commit a synchronous call (%s); left for the settle worker",
                type(exc).__name__,
                extra={"reservation_id": reservation_id},
            )

    async def rejected(self, reservation_id: str, quote: Quote, error: KlingAPIError) -> None:
        try:
            await self.state.run_sync(self.settler().reject, reservation_id, error, pack_type=quote.pack_type)
            await self.state.run_sync(
                self.state.tasks.update, reservation_id, status="rejected", settled=True, free_external_id=True
            )
            self.state.metrics.units("released", quote.pack_type.value, quote.units_milli)
        except Exception as exc:
            # Ownership row stays unsettled: the worker releases the hold once the ledger is back.
            logger.error(
                "could not release a rejected create (%s)", type(exc).__name__, extra={"reservation_id": reservation_id}
            )
            try:
                await self.state.run_sync(
                    self.state.tasks.update,
                    reservation_id,
                    status="rejected",
                    free_external_id=True,
                    check_at=now_micros(),
                )
            except Exception:
                logger.error("could not mark a rejected create", extra={"reservation_id": reservation_id})

    async def keep_unknown(self, reservation_id: str) -> None:
        try:
            await self.state.run_sync(
                self.state.tasks.update,
                reservation_id,
                status="unknown",
                check_at=now_micros() + int(UNCONFIRMED_GRACE_SECONDS * 1e6),
            )
        except Exception:
            logger.error("could not mark an unconfirmed create", extra={"reservation_id": reservation_id})
