"""Budget enforcement around Kling: clients that hold every job before any HTTP call, settlement, callbacks.

This package sits above :mod:`kling_budget.tracker` (the ledger) and :mod:`kling_budget.kling` (the protocol):
:mod:`.settle` settles a job from Kling's answer, :mod:`.callbacks` turns Kling's callbacks into settlements,
:mod:`.lookup` finds a reservation's task, and :mod:`.sync` / :mod:`.aio` are the enforced clients.

One job runs this lifecycle::

    quote (exact, from the price table)
      → reserve the quote against every matching budget      denied → BudgetExceededError, no HTTP at all
      → mark submitted (from now on no timer may release it)
      → POST the create with external_task_id = reservation id
           definite rejection (1102, 1201, 1301, auth ...)  → release the hold (1102 also alerts)
           KlingAmbiguousCreateError (task may exist)        → keep the hold; settle later (reconcile)
           anything else unexpected                          → keep the hold; settle later (reconcile)
      → record Kling's task_id
      → Job.wait(): poll with backoff, then settle with JobSettler
           succeeded → commit Kling's units (above the hold: overage + alert); failed → release

The reservation id *is* the ``external_task_id`` sent to Kling: a caller that passes its own
``external_task_id`` gets it used as the reservation key, so retrying a call with the same id resumes the
same job instead of paying twice.

Example::

    from kling_budget import CostTracker
    from kling_budget.enforced import BudgetEnforcedClient

    tracker = CostTracker()
    tracker.set_budget("marketing", project_id="marketing", period="monthly", limit_units=1000)
    with BudgetEnforcedClient(tracker, project_id="marketing") as kling:   # keys from KLING_* variables
        job = kling.generate_video("a red fox in the snow", duration=5, model="kling-v2-6")
        task = job.wait(timeout=900)
        print(task.video_urls, job.charged_units)
"""

from kling_budget.enforced._core import DEFAULT_RESERVATION_TTL, Submission
from kling_budget.enforced._core import DEFAULT_VIDEO_MODEL as DEFAULT_VIDEO_MODEL
from kling_budget.enforced.callbacks import AsyncCallbackHandler, CallbackHandler, CallbackResult
from kling_budget.enforced.client import AsyncBudgetEnforcedClient, AsyncJob, BudgetEnforcedClient, Job
from kling_budget.enforced.settle import JobSettler, SettleAction, SettleOutcome

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "AsyncBudgetEnforcedClient",
    "AsyncCallbackHandler",
    "AsyncJob",
    "BudgetEnforcedClient",
    "CallbackHandler",
    "CallbackResult",
    "Job",
    "JobSettler",
    "SettleAction",
    "SettleOutcome",
    "Submission",
]
