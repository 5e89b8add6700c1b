"""Simulated tasks: their record, their schedule of due transitions, and how Kling's envelopes show them.

A task moves ``submitted`` -> ``processing`` -> ``succeed`` | ``failed``; :class:`Timeline` orders the due
transitions. :func:`task_data` renders a task as the ``data`` of a query response or callback. Pure: the
:class:`~.state.Simulator` holds the lock and drives the transitions.
"""

from __future__ import annotations

import heapq
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from kling_budget.money import format_units
from kling_budget.simulator.config import SimulatorConfig
from kling_budget.simulator.endpoints import Endpoint
from kling_budget.types import PackType

__all__ = [
    "FAILED",
    "PROCESSING",
    "SUBMITTED",
    "SUCCEED",
    "TERMINAL",
    "Task",
    "TaskView",
    "Timeline",
    "make_outputs",
    "task_data",
    "task_info",
    "task_view",
]

SUBMITTED, PROCESSING, SUCCEED, FAILED = "submitted", "processing", "succeed", "failed"
TERMINAL = (SUCCEED, FAILED)


@dataclass(frozen=True, slots=True)
class TaskView:
    """A read-only snapshot of one task, for tests and inspection.

    ``status`` uses the legacy words (``succeed``); unit amounts are exact decimal strings. ``priced`` is
    false when the pricing module had no price and ``unpriced_units`` was charged instead.
    """

    task_id: str
    account: str
    path: str
    model: str
    status: str
    status_msg: str
    external_task_id: str | None
    callback_url: str | None
    pack_type: PackType
    quoted_units: str
    priced: bool
    planned_charge_units: str
    charged_units: str
    slots: int
    created_at: int
    updated_at: int


@dataclass(slots=True)
class Task:
    """One task's mutable record (amounts in milli-units, times in Unix ms)."""

    task_id: str
    account: str
    endpoint: Endpoint
    model: str
    external_task_id: str | None
    callback_url: str | None
    pack_type: PackType
    quote_milli: int
    priced: bool
    charge_milli: int
    slots: int
    fail_message: str | None
    created_ms: int
    processing_ms: int
    finish_ms: int
    watermark: bool
    duration: str
    count: int
    parent_video: dict[str, str] | None
    status: str = SUBMITTED
    updated_ms: int = 0
    charged_milli: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)


class Timeline:
    """The due transitions of unfinished tasks, in time order (ties: scheduling order).

    Transitions of tasks with a ``callback_url`` are also kept apart, so the callback scheduler can sleep
    until the next one that will produce a notification.
    """

    def __init__(self) -> None:
        self._seq = 0
        self._heap: list[tuple[int, int, str]] = []
        self._callback_heap: list[tuple[int, int]] = []

    def schedule(self, due: int, task: Task) -> bool:
        """Add the task's next transition at ``due``; true when it is now the first one with a callback."""
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, task.task_id))
        if task.callback_url:
            heapq.heappush(self._callback_heap, (due, self._seq))
            if self._callback_heap[0][1] == self._seq:
                return True
        return False

    def pop_due(self, now: int) -> tuple[int, str] | None:
        """Remove and return the earliest transition due by ``now`` as ``(due, task_id)``, if any."""
        if self._heap and self._heap[0][0] <= now:
            due, _, task_id = heapq.heappop(self._heap)
            return due, task_id
        return None

    def next_due(self) -> int | None:
        """When the next transition is due, or ``None``."""
        return self._heap[0][0] if self._heap else None

    def next_callback_due(self, now: int) -> int | None:
        """When the next transition of a task with a callback is due after ``now``, or ``None``."""
        while self._callback_heap and self._callback_heap[0][0] <= now:
            heapq.heappop(self._callback_heap)
        return self._callback_heap[0][0] if self._callback_heap else None


def make_outputs(
    task: Task, media_base_url: str, id_rng: random.Random, videos: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The result entries of a task that succeeded; a generated video is also recorded in ``videos``."""
    if task.endpoint.result == "images":
        return [{"index": i, "url": f"{media_base_url}/images/{task.task_id}-{i}.png"} for i in range(task.count)]
    video_id = str(uuid.UUID(int=id_rng.getrandbits(128), version=4))
    video = {"id": video_id, "url": f"{media_base_url}/videos/{video_id}.mp4", "duration": task.duration}
    videos[video_id] = dict(video)
    if task.watermark:
        video["watermark_url"] = f"{media_base_url}/videos/{video_id}-watermarked.mp4"
    return [video]


def task_view(task: Task) -> TaskView:
    """A read-only snapshot of ``task``."""
    return TaskView(
        task_id=task.task_id,
        account=task.account,
        path=task.endpoint.path,
        model=task.model,
        status=task.status,
        status_msg=(task.fail_message or "") if task.status == FAILED else "",
        external_task_id=task.external_task_id,
        callback_url=task.callback_url,
        pack_type=task.pack_type,
        quoted_units=format_units(task.quote_milli),
        priced=task.priced,
        planned_charge_units=format_units(task.charge_milli),
        charged_units=format_units(task.charged_milli),
        slots=task.slots,
        created_at=task.created_ms,
        updated_at=task.updated_ms,
    )


def task_info(task: Task) -> dict[str, Any]:
    """The ``task_info`` object: ``parent_video`` and ``external_task_id`` when the task has them."""
    info: dict[str, Any] = {}
    if task.parent_video is not None:
        info["parent_video"] = dict(task.parent_video)
    if task.external_task_id is not None:
        info["external_task_id"] = task.external_task_id
    return info


def _status_word(status: str, config: SimulatorConfig) -> str:
    return "succeeded" if status == SUCCEED and config.new_status_names else status


def task_data(task: Task, config: SimulatorConfig) -> dict[str, Any]:
    """The task as Kling shows it: the ``data`` of a query response, and the body of a callback."""
    ended = task.status in TERMINAL
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": _status_word(task.status, config),
        "task_status_msg": (task.fail_message or "") if task.status == FAILED else "",
        "task_info": task_info(task),
    }
    if task.status == SUCCEED:
        data["task_result"] = {task.endpoint.result: [dict(o) for o in task.outputs]}
    if task.endpoint.pack_type is not PackType.TRY_ON:
        data["watermark_info"] = {"enabled": task.watermark}
    if ended:
        data["final_unit_deduction"] = format_units(task.charged_milli)
    elif config.pending_deduction is not None:
        data["final_unit_deduction"] = config.pending_deduction
    if config.report_billing:
        data["billing"] = (
            [
                {
                    "charge_type": "unit",
                    "amount": format_units(task.charged_milli),
                    "package_type": str(task.pack_type),
                }
            ]
            if task.status == SUCCEED
            else []
        )
    data["created_at"] = task.created_ms
    data["updated_at"] = task.updated_ms
    return data
