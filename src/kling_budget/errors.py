"""The one exception tree of kling-budget.

Every error the library raises on purpose derives from :class:`KlingBudgetError`, so a caller can catch
"anything from kling-budget" with one ``except``::

    KlingBudgetError
    ├── InvalidInputError (also ValueError)      bad input; nothing was changed; CLI exit code 2
    │   ├── PricingError                         a request that cannot be priced
    │   │   ├── UnknownModelError
    │   │   └── UnsupportedOptionError           mode, duration, resolution, product, n ...
    │   ├── PriceTableError                      a price file that cannot be loaded
    │   └── ConfigurationError                   bad budget, pack, URL or option
    ├── KeyDecryptionError                       a stored secret does not decrypt with this master key
    ├── BudgetExceededError                      a hard budget denied the request; CLI exit code 1
    │   └── GatewayBudgetExceededError           code 1190: a kling-budget gateway's budget denied it (also a
    │                                            KlingAPIError)
    ├── LedgerError                              the ledger refused or could not do an operation
    │   ├── LedgerUnavailableError               cannot reach or lock the ledger: fail closed
    │   ├── IdempotencyConflictError             same key, different request
    │   ├── ReservationNotFoundError
    │   └── ReservationResolvedError             already committed or released
    └── KlingAPIError                            Kling answered with a business error code
        ├── KlingAuthError                       1000-1004
        ├── KlingAccountError                    1100-1103
        │   └── KlingPackExhaustedError          1102: resource pack depleted or expired
        ├── KlingParameterError                  1200-1203
        │   └── KlingTaskNotFoundError           1203 on a task query: no task has that id
        ├── KlingPolicyError                     1300, 1301, 1304
        ├── KlingRateLimitError                  1302, 1303 (retryable)
        ├── KlingServerError                     5000-5002
        ├── KlingTransportError                  no usable answer (timeout, connection lost)
        │   ├── KlingConnectError                could not connect: the request was never sent
        │   └── KlingAmbiguousCreateError        a create may have reached Kling: keep the hold
        └── KlingWaitTimeoutError                a task did not finish within wait()'s timeout

Messages are one line, name what was wrong and what is accepted, and never contain a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kling_budget.kling.tasks import Task
    from kling_budget.types import AlertEvent, Denial

__all__ = [
    "BudgetExceededError",
    "ConfigurationError",
    "GatewayBudgetExceededError",
    "IdempotencyConflictError",
    "InvalidInputError",
    "KeyDecryptionError",
    "KlingAPIError",
    "KlingAccountError",
    "KlingAmbiguousCreateError",
    "KlingAuthError",
    "KlingBudgetError",
    "KlingConnectError",
    "KlingPackExhaustedError",
    "KlingParameterError",
    "KlingPolicyError",
    "KlingRateLimitError",
    "KlingServerError",
    "KlingTaskNotFoundError",
    "KlingTransportError",
    "KlingWaitTimeoutError",
    "LedgerError",
    "LedgerUnavailableError",
    "PriceTableError",
    "PricingError",
    "ReservationNotFoundError",
    "ReservationResolvedError",
    "UnknownModelError",
    "UnsupportedOptionError",
]


class KlingBudgetError(Exception):
    """Base class of every error raised by kling-budget."""


class InvalidInputError(KlingBudgetError, ValueError):
    """The input was invalid; the message names the accepted values. Nothing was changed."""


class PricingError(InvalidInputError):
    """A request that cannot be priced exactly."""


class UnknownModelError(PricingError):
    """The model name is not in the price table."""


class UnsupportedOptionError(PricingError):
    """A mode, duration, resolution, product or count the model is not priced for."""


class PriceTableError(InvalidInputError):
    """A price file that is missing, malformed or inconsistent."""


class ConfigurationError(InvalidInputError):
    """A budget, pack, database URL or option that is not valid."""


class KeyDecryptionError(KlingBudgetError):
    """A stored secret cannot be decrypted: the master key differs from the one that encrypted it."""


class BudgetExceededError(KlingBudgetError):
    """A hard budget denied the request.

    ``denial`` (when the ledger raised it) names the budget, window, limit, committed, held, price and reset
    time. The recipe's ``raise BudgetExceededError("...")`` still works: ``denial`` is then ``None``.
    """

    def __init__(self, message: str, denial: Denial | None = None) -> None:
        super().__init__(message)
        self.denial = denial
        self.alerts: tuple[AlertEvent, ...] = ()


class LedgerError(KlingBudgetError):
    """The ledger refused or could not complete an operation."""


class LedgerUnavailableError(LedgerError):
    """The ledger cannot be reached or locked in time. Callers must not submit the job (fail closed)."""


class IdempotencyConflictError(LedgerError):
    """An operation reused a key that belongs to a different request."""


class ReservationNotFoundError(LedgerError):
    """No reservation has that id."""


class ReservationResolvedError(LedgerError):
    """The reservation was already resolved differently (committed, released or denied)."""


class KlingAPIError(KlingBudgetError):
    """Kling answered with a non-zero business ``code``.

    Attributes:
        code: Kling's business code (e.g. 1102), or ``None`` when no envelope was received.
        http_status: the HTTP status of the answer, when there was one.
        request_id: Kling's ``request_id`` for support tickets, when given.
        kling_message: Kling's own ``message``, free of secrets (empty when there was none).
        should_retry: whether the same request may be retried after a backoff.
    """

    should_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        kling_message: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.kling_message = kling_message


class GatewayBudgetExceededError(BudgetExceededError, KlingAPIError):
    """A kling-budget gateway refused the create: one of its hard budgets has no room (code 1190, HTTP 429).
    Nothing was sent to Kling and nothing is held.

    Attributes:
        denial: the budget, window, limit, committed, held, price and reset time, as the gateway reported
            them (``None`` if its answer did not carry them).
        retry_after: seconds until the denying budget's window resets, ``None`` for a ``total`` budget (it
            never resets) or when not given; holds released earlier may make room sooner.
    """

    def __init__(
        self,
        message: str,
        *,
        denial: Denial | None = None,
        retry_after: int | None = None,
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        kling_message: str = "",
    ) -> None:
        KlingAPIError.__init__(
            self, message, code=code, http_status=http_status, request_id=request_id, kling_message=kling_message
        )
        self.denial = denial
        self.alerts = ()
        self.retry_after = retry_after


class KlingAuthError(KlingAPIError):
    """Authentication failed (codes 1000-1004)."""


class KlingAccountError(KlingAPIError):
    """The account cannot be charged or may not use the resource (codes 1100-1103)."""


class KlingPackExhaustedError(KlingAccountError):
    """The resource pack is depleted or expired (code 1102)."""


class KlingParameterError(KlingAPIError):
    """Kling rejected the request's parameters (codes 1200-1203)."""


class KlingPolicyError(KlingAPIError):
    """A platform, content-security or IP-whitelist policy was triggered (codes 1300, 1301, 1304)."""


class KlingRateLimitError(KlingAPIError):
    """Too many requests or concurrent tasks (codes 1302, 1303). Retryable."""

    should_retry = True


class KlingServerError(KlingAPIError):
    """Kling had an internal error (codes 5000-5002)."""

    should_retry = True


class KlingTransportError(KlingAPIError):
    """No usable answer arrived (timeout, connection reset, truncated body)."""

    should_retry = True


class KlingTaskNotFoundError(KlingParameterError):
    """Kling has no task with the queried ``task_id`` or ``external_task_id`` (code 1203 on a task query)."""


class KlingConnectError(KlingTransportError):
    """Could not connect, so the request was never sent; safe to retry, even a create."""


class KlingAmbiguousCreateError(KlingTransportError):
    """A create request may or may not have created a task, and Kling could not tell us which.

    The task may exist and be charged: keep any budget hold and resolve it later by looking the task up by
    ``external_task_id`` (the client looked it up a few times already before raising this).

    Attributes:
        external_task_id: the id the create was sent with; query it to learn the outcome.
    """

    should_retry = False

    def __init__(
        self,
        message: str,
        *,
        external_task_id: str,
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status, request_id=request_id)
        self.external_task_id = external_task_id


class KlingWaitTimeoutError(KlingAPIError):
    """A task did not finish before ``wait()``'s timeout; it may still finish (and be charged).

    Attributes:
        task: the last state seen, or ``None`` when no poll succeeded.
    """

    def __init__(self, message: str, *, task: Task | None = None) -> None:
        super().__init__(message)
        self.task = task
