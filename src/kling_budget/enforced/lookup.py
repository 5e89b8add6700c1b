"""Finding the Kling task of a reservation: by its recorded ``task_id``, else by ``external_task_id``.

Kling answers a task query only on the create path the task was made on, so each candidate path of the
reservation (see :func:`kling_budget.enforced.settle.task_paths`) is tried in turn.
"""

from __future__ import annotations

from kling_budget.enforced.settle import task_paths
from kling_budget.errors import KlingTaskNotFoundError
from kling_budget.kling._core import _KlingCore
from kling_budget.kling._flow import Flow
from kling_budget.kling.client import KlingClient
from kling_budget.kling.tasks import Task
from kling_budget.ledger import ReservationInfo

__all__ = ["lookup_flow", "lookup_task"]


def lookup_flow(client: _KlingCore, info: ReservationInfo) -> Flow[Task]:
    """The flow that queries the task of ``info`` on Kling (by ``task_id`` if recorded, else the reservation id
    as ``external_task_id``), on every candidate path.

    Raises:
        KlingTaskNotFoundError: Kling has no such task on any candidate path.
        KlingAPIError: Kling could not be asked (after the client's retries).
    """
    paths = task_paths(info)
    if not paths:
        raise KlingTaskNotFoundError(
            f"reservation {info.id} has no Kling create path and product {info.product!r} has no known endpoint"
        )
    task_id, external = (info.task_id, None) if info.task_id else (None, info.id)
    missing: KlingTaskNotFoundError | None = None
    for path in paths:
        try:
            return (yield from client._get_task_flow(path, task_id, external))
        except KlingTaskNotFoundError as exc:
            missing = exc
    assert missing is not None
    raise missing


def lookup_task(client: KlingClient, info: ReservationInfo) -> Task:
    """Query the task of ``info`` on Kling with a blocking client (see :func:`lookup_flow`)."""
    return client._drive(lookup_flow(client, info))
