"""Simulated tasks: their record, their schedule of due transitions, and how Kling's envelopes show them.

A task moves ``submitted`` -> ``processing`` -> ``succeed`` | ``failed`` (a failure before generation goes
straight from ``submitted`` to ``failed``); :class:`Timeline` orders the due transitions. :func:`task_data`
renders a legacy task as the ``data`` of a query response or callback, :func:`task_item` a 2026-design one
as an item of ``GET /tasks`` or a callback. Pure: the :class:`~.state.Simulator` holds the lock and drives
the transitions.
"""

from __future__ import annotations

import heapq
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kling_budget.money import format_units
from kling_budget.simulator.config import SimulatorConfig
from kling_budget.simulator.creation import Facts
from kling_budget.simulator.funding import CASH, Funding, billing_rows, money_text
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
    "created_data",
    "make_outputs",
    "new_status",
    "render",
    "task_data",
    "task_info",
    "task_item",
    "task_view",
]

SUBMITTED, PROCESSING, SUCCEED, FAILED = "submitted", "processing", "succeed", "failed"
TERMINAL = (SUCCEED, FAILED)


@dataclass(frozen=True, slots=True)
class TaskView:
    """A read-only snapshot of one task, for tests and inspection.

    ``status`` uses the legacy words (``succeed``) for both designs; amounts are exact decimal strings.
    ``priced`` is false when the pricing module had no price and ``unpriced_units`` was charged instead.
    ``charge_type`` says what pays for the task (``unit``: packs, ``cash``: ``cash_type`` in ``currency``);
    ``charged_units`` and ``cash_charged`` are what was taken once it succeeded (``"0"`` for a coupon).
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
    legacy: bool = True
    api_key_name: str = ""
    charge_type: str = "unit"
    cash_type: str | None = None
    cash_charged: str = "0"
    currency: str | None = None


@dataclass(slots=True)
class Task:
    """One task's mutable record (units in milli-units, cash as ``Decimal``, times in Unix ms).

    ``path`` is its create path (``/v1/videos/text2video`` or ``/text-to-video/kling-3.0``); ``legacy`` tells
    the two designs apart. ``fail_message`` set means it will fail (before generation with ``fail_early``);
    a ``coupon`` task succeeds and pays nothing.
    """

    task_id: str
    account: str
    legacy: bool
    path: str
    result: str
    function: str
    model: str
    external_task_id: str | None
    callback_url: str | None
    pack_type: PackType
    quote_milli: int
    priced: bool
    charge_milli: int
    slots: int
    fail_message: str | None
    fail_early: bool
    coupon: bool
    funding: Funding
    facts: Facts
    api_key_name: str
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
    cash_charged: Decimal = Decimal(0)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """Whether the task succeeded or failed."""
        return self.status in TERMINAL


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
    if task.result == "images":
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
        path=task.path,
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
        legacy=task.legacy,
        api_key_name=task.api_key_name,
        charge_type=task.funding.charge_type,
        cash_type=task.funding.cash_type,
        cash_charged=money_text(task.cash_charged),
        currency=task.funding.currency,
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
    """A legacy task as Kling shows it: the ``data`` of a query response, and the body of a callback.

    A task paid in cash reports ``final_unit_deduction`` ``"0"`` and, once it succeeded,
    ``final_balance_deduction`` (``quota``: the discounted amount, ``list_price``).
    """
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": _status_word(task.status, config),
        "task_status_msg": (task.fail_message or "") if task.status == FAILED else "",
        "task_info": task_info(task),
    }
    if task.status == SUCCEED:
        data["task_result"] = {task.result: [dict(o) for o in task.outputs]}
    if task.pack_type is not PackType.TRY_ON:
        data["watermark_info"] = {"enabled": task.watermark}
    if task.ended:
        data["final_unit_deduction"] = format_units(task.charged_milli)
    elif config.pending_deduction is not None:
        data["final_unit_deduction"] = config.pending_deduction
    if task.status == SUCCEED and task.funding.charge_type == CASH:
        data["final_balance_deduction"] = {
            "quota": money_text(task.cash_charged),
            "list_price": money_text(task.funding.list_price),
        }
    billing = billing_rows(task)
    if config.report_billing and billing is not None:
        data["billing"] = billing
    data["created_at"] = task.created_ms
    data["updated_at"] = task.updated_ms
    return data


_NEW_STATUS = {SUBMITTED: "submitted", PROCESSING: "processing", SUCCEED: "succeeded", FAILED: "failed"}


def new_status(task: Task) -> str:
    """The task's status in the 2026 design's words (``succeeded``)."""
    return _NEW_STATUS[task.status]


def task_item(task: Task) -> dict[str, Any]:
    """A 2026-design task as Kling shows it: an item of ``GET /tasks`` / ``POST /tasks``, a callback body.

    ``billing`` is absent while the task runs; ``outputs`` is empty until it succeeds.
    """
    item: dict[str, Any] = {
        "id": task.task_id,
        "status": new_status(task),
        "message": (task.fail_message or "") if task.status == FAILED else "",
        "create_time": task.created_ms,
        "update_time": task.updated_ms,
        "external_id": task.external_task_id or "",
        "outputs": [{"type": "video", "url": o["url"], "duration": o["duration"]} for o in task.outputs]
        if task.status == SUCCEED
        else [],
    }
    billing = billing_rows(task)
    if billing is not None:
        item["billing"] = billing
    return item


def render(task: Task, config: SimulatorConfig) -> dict[str, Any]:
    """The task in its own design's shape (a query answer or callback body)."""
    return task_data(task, config) if task.legacy else task_item(task)


def created_data(task: Task) -> dict[str, Any]:
    """The ``data`` of the create answer, in the task's design."""
    if task.legacy:
        return {
            "task_id": task.task_id,
            "task_status": SUBMITTED,
            "task_info": task_info(task),
            "created_at": task.created_ms,
            "updated_at": task.updated_ms,
        }
    return {
        "id": task.task_id,
        "status": "submitted",
        "create_time": task.created_ms,
        "update_time": task.updated_ms,
        "external_id": task.external_task_id or "",
    }
