"""Worker processes for the multi-process stress and crash tests (importable by spawned children)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError, LedgerUnavailableError
from kling_budget.ledger import open_ledger
from kling_budget.types import Attribution, PackType

PRICE_MILLI = 1500


def setup_hierarchy(url: str, *, account_units: int, project_units: int, user_units: int) -> None:
    """Three levels sharing one account-wide budget: account → project → user."""
    ledger = open_ledger(url)
    ledger.set_budget(Budget.create("account", limit_units=account_units, period="monthly"))
    ledger.set_budget(Budget.create("project", project="studio", limit_units=project_units, period="monthly"))
    for user in range(4):
        ledger.set_budget(
            Budget.create(f"user-{user}", project="studio", user=f"u{user}", limit_units=user_units, period="daily")
        )
    ledger.close()


def reserve_until_denied(url: str, worker: int, go: Any, naive: bool) -> list[str]:
    """Reserve (and commit every other) job until a budget denies; return the admitted keys.

    With ``naive`` it checks the budget status first and then records the job in a second transaction — the
    check-then-act race the recipe has — so the harness must catch its overspend.
    """
    ledger = open_ledger(url)
    attribution = Attribution(project="studio", user=f"u{worker % 4}", model="kling-v2-5-turbo")
    admitted: list[str] = []
    go.wait()
    while True:
        key = f"w{worker}-{uuid.uuid4().hex[:12]}"
        if naive:
            statuses = [ledger.budget_status(b.name) for b in ledger.matching_budgets(attribution)]
            if any(s.counters.used_milli + PRICE_MILLI > (s.budget.limit_units_milli or 0) for s in statuses):
                break
            time.sleep(0.0005)  # the gap between "check" and "act" that real code has (a network call)
            ledger.record(key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
            admitted.append(key)
            continue
        try:
            ledger.reserve(key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
        except BudgetExceededError:
            break
        admitted.append(key)
        if len(admitted) % 2 == 0:
            ledger.commit(key)
    ledger.close()
    return admitted


def churn_with_log(url: str, worker: int, log_path: str) -> None:
    """Reserve, submit, commit or release forever; append each acknowledged operation to ``log_path``.

    A line is written (and fsynced) only after the ledger acknowledged the operation, so after a SIGKILL
    every line in the log must be reflected in the ledger.
    """
    churn(open_ledger(url), worker, log_path)


def churn_threads_with_log(url: str, worker: int, log_path: str, threads: int = 4) -> None:
    """``churn_with_log`` in ``threads`` threads sharing one ledger (so their writes are group-committed
    in batches); thread ``t`` logs to ``<log_path>.<t>``."""
    ledger = open_ledger(url)
    for t in range(threads):
        threading.Thread(target=churn, args=(ledger, worker * 100 + t, f"{log_path}.{t}"), daemon=True).start()
    threading.Event().wait()


def churn(
    ledger: Any, worker: int, log_path: str, *, until_done: Callable[[Callable[[], Any]], Any] | None = None
) -> None:
    """The loop of ``churn_with_log`` on an open ledger. ``until_done(step)`` retries a step with the same
    key while the ledger is unavailable; without it a reservation that fails that way is skipped."""
    attribution = Attribution(project="studio", user=f"u{worker % 4}", model="kling-v2-6")
    run = until_done or (lambda step: step())
    with open(log_path, "a", encoding="utf-8") as log:

        def ack(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())

        counter = 0
        while True:
            counter += 1
            key = f"c{worker}-{os.getpid()}-{counter}"
            try:
                run(
                    lambda key=key: ledger.reserve(
                        key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution
                    )
                )
            except BudgetExceededError:
                ack(f"denied {key}")
                continue
            except LedgerUnavailableError:
                continue
            ack(f"reserved {key}")
            run(lambda key=key: ledger.mark_submitted(key, task_id=f"task-{key}"))
            ack(f"submitted {key}")
            if counter % 3 == 0:
                run(lambda key=key: ledger.release(key))
                ack(f"released {key}")
            else:
                charged = PRICE_MILLI + (500 if counter % 5 == 0 else 0)
                run(lambda key=key, charged=charged: ledger.commit(key, units_milli=charged))
                ack(f"committed {key}")


def reserve_until_denied_in_threads(url: str, worker: int, go: Any, threads: int = 4) -> list[str]:
    """``reserve_until_denied`` in ``threads`` threads sharing one ledger (batched writes); every
    admitted key."""
    ledger = open_ledger(url)
    admitted: list[str] = []
    lock = threading.Lock()

    def run(thread: int) -> None:
        attribution = Attribution(project="studio", user=f"u{(worker + thread) % 4}", model="kling-v2-5-turbo")
        count = 0
        while True:
            key = f"w{worker}t{thread}-{uuid.uuid4().hex[:12]}"
            try:
                ledger.reserve(key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
            except BudgetExceededError:
                return
            count += 1
            with lock:
                admitted.append(key)
            if count % 2 == 0:
                ledger.commit(key)

    go.wait()
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ledger.close()
    return admitted
