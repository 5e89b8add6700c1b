"""The 2026 design's list routes over an account's records: ``POST /tasks`` and the billing ledgers.

``POST /tasks`` lists the account's 2026-design tasks by ``create_time`` (filters ``status``,
``product_type``; default window the last 30 days, ``limit`` 100). ``POST /account/billing/package`` lists
pack deductions (filters ``api_key_name``, ``product_type``, ``package_name`` or ``package_id``) and
``POST /account/billing/balance`` cash deductions (filter ``api_key_name``), by ``deduction_time``, tasks of
both designs, ``limit`` 500, window required. Pure: the :class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kling_budget.simulator.funding import LedgerEntry
from kling_budget.simulator.paging import Entry, Listing, page, read_query
from kling_budget.simulator.task_model import new_status, task_item

if TYPE_CHECKING:
    from kling_budget.simulator.accounts import Account

__all__ = ["BALANCE", "PACKAGE", "TASKS", "list_ledger", "list_tasks"]

_PRODUCT_TYPES = ("video", "image", "try_on")

TASKS = Listing(
    "tasks",
    {"status": ("submitted", "processing", "succeeded", "failed"), "product_type": _PRODUCT_TYPES},
    default_limit=100,
)
PACKAGE = Listing(
    "package",
    {"api_key_name": None, "product_type": _PRODUCT_TYPES, "package_name": None, "package_id": None},
    default_limit=500,
    window_required=True,
    exclusive=("package_name", "package_id"),
    aliases={"try-on": "try_on"},
)
BALANCE = Listing("balance", {"api_key_name": None}, default_limit=500, window_required=True)


def list_tasks(acct: Account, body: Any, now: int) -> dict[str, Any]:
    """The ``data`` of ``POST /tasks`` for one account."""
    query = read_query(TASKS, body, now)
    return page(TASKS, query, _task_entries(acct), render=task_item)


def list_ledger(listing: Listing, ledger: Sequence[LedgerEntry], body: Any, now: int) -> dict[str, Any]:
    """The ``data`` of a billing-ledger route (``listing`` is :data:`PACKAGE` or :data:`BALANCE`)."""
    query = read_query(listing, body, now)
    entries = ((e.time, e.seq, e.keys, e) for e in reversed(ledger))
    return page(listing, query, entries, render=LedgerEntry.render)


def _task_entries(acct: Account) -> Iterator[Entry]:
    for task_id in reversed(acct.model_in_path):
        task = acct.tasks[task_id]
        keys = {"status": new_status(task), "product_type": str(task.pack_type)}
        yield task.created_ms, int(task.task_id), keys, task
