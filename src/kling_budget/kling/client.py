"""Kling API clients on httpx: :class:`KlingClient` (blocking) and :class:`AsyncKlingClient`.

Both run the same I/O-free flows from :mod:`kling_budget.kling._base`; only transport and sleep differ.
The classes live in :mod:`~kling_budget.kling.client_sync` and :mod:`~kling_budget.kling.client_async`;
import them from here or from :mod:`kling_budget.kling`.

Errors come from Kling's business ``code`` (see :mod:`kling_budget.errors`); anything without a usable
Kling answer (timeout, reset, truncated or non-JSON body) is a
:class:`~kling_budget.errors.KlingTransportError`. Queries retry throttling (1302, 1303), server errors
(5000-5002) and transport failures with exponential backoff and full jitter, at most ``max_retries`` times.
An expired token (1004) is re-signed and the request re-sent once.

Creating a task, never twice
----------------------------
Every create carries an ``external_task_id`` (the caller's, else a fresh ``uuid4().hex``), reused unchanged on
every resubmission, so the task can be found again and Kling's per-account uniqueness of that id backs us up.
One create runs this state machine (``max_retries`` bounds submissions *and* lookups)::

    SUBMIT ──ok──────────────────────────────────────────────────────────▶ return task
      │ definite rejection (1102, 1201, 1301, auth ...) and nothing
      │   was ambiguous before ───────────────────────────────────────────▶ raise it (no task exists)
      │ throttled (1302/1303) or never connected, submissions left ──────▶ backoff, SUBMIT again
      │ ambiguous: 5000-5002, timeout, dropped connection, truncated or
      │   unreadable answer ─────────────────────────────────────────────▶ LOOKUP
      ▼
    LOOKUP by external_task_id (bounded attempts, backoff before each)
      ├─ found ──────────────────────────────────────────────────────────▶ return it (no second create)
      ├─ Kling says "no such task" (1203):
      │     last submission ambiguous, submissions left ──────────────────▶ backoff, SUBMIT again (same id)
      │     last submission definitely rejected ──────────────────────────▶ raise that rejection
      │     last submission ambiguous, no submissions left ───────────────▶ raise KlingAmbiguousCreateError
      └─ still unknown (lookups failed) ─────────────────────────────────▶ raise KlingAmbiguousCreateError

A definite rejection or exhausted throttling *after* an earlier ambiguous submission also goes through
LOOKUP first, since the earlier submission may have created the task (a resubmission rejected as a
duplicate is the typical case). :class:`~kling_budget.errors.KlingAmbiguousCreateError` carries
``external_task_id``: the caller must keep its budget hold and settle it later by querying that id, never
release it on the spot.
"""

from kling_budget.kling.client_async import AsyncKlingClient
from kling_budget.kling.client_sync import KlingClient

__all__ = ["AsyncKlingClient", "KlingClient"]
