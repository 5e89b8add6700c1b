"""Finding the Kling task of a reservation: by its recorded ``task_id``, else by ``external_task_id``.

Kling answers a task query only on the create path the task was made on, so each candidate path of the
reservation (see :func:`kling_budget.enforced.settle.task_paths`) is tried in turn.
"""

from __future__ import annotations

from kling_budget.enforced.settle import task_paths
from kling_budget.errors import KlingTaskNotFoundError
from kling_budget.kling.client import AsyncKlingClient, KlingClient
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo

__all__ = ["alookup_task", "lookup_task"]


def _candidates(info: ReservationInfo) -> tuple[str, ...]:
    paths = task_paths(info)
    if not paths:
        raise KlingTaskNotFoundError(
            f"reservation {info.id} has no Kling create path and product {info.product!r} has no known endpoint"
        )
    return paths


def _ids(info: ReservationInfo) -> tuple[str | None, str | None]:
    return (info.task_id, None) if info.task_id else (None, info.id)


def lookup_task(client: KlingClient, info: ReservationInfo) -> Task:
    """Query the task of ``info`` on Kling (by ``task_id`` if recorded, else the reservation id as
    ``external_task_id``).

    Raises:
        KlingTaskNotFoundError: Kling has no such task on any candidate path.
        KlingAPIError: Kling could not be asked (after the client's retries).
    """
    task_id, external = _ids(info)
    missing: KlingTaskNotFoundError | None = None
    for path in _candidates(info):
        try:
            return client.get_task(task_id, external_task_id=external, endpoint=path)
        except KlingTaskNotFoundError as exc:
            missing = exc
    assert missing is not None
    raise missing


async def alookup_task(client: AsyncKlingClient, info: ReservationInfo) -> Task:
    """The async twin of :func:`lookup_task`."""
    task_id, external = _ids(info)
    missing: KlingTaskNotFoundError | None = None
    for path in _candidates(info):
        try:
            return await client.get_task(task_id, external_task_id=external, endpoint=path)
        except KlingTaskNotFoundError as exc:
            missing = exc
    assert missing is not None
    raise missing
