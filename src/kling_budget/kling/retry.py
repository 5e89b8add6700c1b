"""The retry policy as small pure functions: what a failure means, whether to retry, how long to wait.

Randomness is isolated in the ``jitter`` argument (a callable returning a float in ``[0, 1)``) so that
tests can pin it; nothing here sleeps.

A failed attempt has one of three :class:`Disposition` values:

* ``RETRY``: sending the same request again is safe: throttling (1302, 1303; no task was created), a
  connection that was never established, and, for idempotent requests (queries), server errors
  (5000-5002) and lost/timed-out/truncated answers;
* ``AMBIGUOUS``: a *create* whose outcome is unknown (5000-5002, a timeout, a dropped connection or a
  truncated answer after the request was sent): the task may exist, so it must be looked up by
  ``external_task_id`` before anything is resubmitted;
* ``FAIL``: a definite rejection (auth, account, pack exhausted, parameters, content policy ...).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from kling_budget.errors import (
    KlingAPIError,
    KlingConnectError,
    KlingRateLimitError,
    KlingServerError,
    KlingTransportError,
)

__all__ = [
    "BASE_DELAY",
    "DEFAULT_MAX_RETRIES",
    "MAX_DELAY",
    "RATE_LIMIT_MIN_DELAY",
    "Disposition",
    "backoff",
    "classify",
    "delay_for",
    "should_retry",
]

DEFAULT_MAX_RETRIES = 3
BASE_DELAY = 0.5
MAX_DELAY = 8.0
# Kling's concurrency guide asks for exponential backoff starting at one second on 1303.
RATE_LIMIT_MIN_DELAY = 1.0


class Disposition(Enum):
    """What a failed attempt means for the next step."""

    RETRY = "retry"
    AMBIGUOUS = "ambiguous"
    FAIL = "fail"


def classify(error: KlingAPIError, *, idempotent: bool) -> Disposition:
    """Classify a failed attempt.

    Args:
        error: the error the attempt produced (not raised yet).
        idempotent: whether repeating the request cannot create anything (queries) or can (creates).

    Returns:
        ``RETRY``, ``AMBIGUOUS`` (only when ``idempotent`` is false) or ``FAIL``.
    """
    if isinstance(error, KlingConnectError | KlingRateLimitError):
        return Disposition.RETRY
    if isinstance(error, KlingServerError | KlingTransportError):
        return Disposition.RETRY if idempotent else Disposition.AMBIGUOUS
    return Disposition.FAIL


def should_retry(error: KlingAPIError, *, attempt: int, max_retries: int, idempotent: bool) -> bool:
    """Whether to send the same request again.

    Args:
        error: the failure of attempt number ``attempt``.
        attempt: how many attempts were made so far (1 after the first).
        max_retries: how many retries are allowed after the first attempt.
        idempotent: whether the request is a query (see :func:`classify`).

    Returns:
        ``True`` only for a ``RETRY`` failure while retries remain.
    """
    return attempt <= max_retries and classify(error, idempotent=idempotent) is Disposition.RETRY


def backoff(
    attempt: int,
    *,
    jitter: Callable[[], float],
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    floor: float = 0.0,
) -> float:
    """Seconds to wait after attempt number ``attempt``: exponential with full jitter.

    The delay is uniform in ``[floor, max(floor, min(cap, base * 2 ** (attempt - 1)))]``.

    Args:
        attempt: how many attempts were made so far (1 after the first).
        jitter: returns a float in ``[0, 1)``; ``random.random`` in production.
        base: the ceiling after the first attempt.
        cap: the largest ceiling.
        floor: the smallest delay (Kling asks for at least 1 s after 1303).

    Returns:
        The delay in seconds, never negative and never above ``max(floor, cap)``.
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    span = max(0.0, ceiling - floor)
    draw = float(jitter())
    return floor + min(1.0, max(0.0, draw)) * span


def delay_for(error: KlingAPIError | None, attempt: int, *, jitter: Callable[[], float]) -> float:
    """The backoff after ``error`` (throttling waits longer, as Kling asks)."""
    if isinstance(error, KlingRateLimitError):
        return backoff(attempt, jitter=jitter, base=2 * RATE_LIMIT_MIN_DELAY, floor=RATE_LIMIT_MIN_DELAY)
    return backoff(attempt, jitter=jitter)
