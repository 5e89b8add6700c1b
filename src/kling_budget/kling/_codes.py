"""Kling's business ``code`` values and the exception each one raises. Pure.

The class is chosen from the business code, never from the HTTP status alone: Kling answers 429 both for
an exhausted pack (1102, a hard stop) and for throttling (1303, retry later).

A kling-budget gateway adds one code of its own, :data:`DENIAL_CODE` (1190, a budget denial, raised as
:class:`~kling_budget.errors.GatewayBudgetExceededError`), and marks every answer with :data:`GATEWAY_HEADER`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kling_budget.errors import (
    GatewayBudgetExceededError,
    KlingAccountError,
    KlingAPIError,
    KlingAuthError,
    KlingPackExhaustedError,
    KlingParameterError,
    KlingPolicyError,
    KlingRateLimitError,
    KlingServerError,
    KlingTaskNotFoundError,
)
from kling_budget.types import Denial

__all__ = ["CODE_MEANINGS", "DENIAL_CODE", "GATEWAY_HEADER", "error_class", "error_for_code", "one_line"]

DENIAL_CODE = 1190
"""A kling-budget gateway's budget denial (HTTP 429). Not one of Kling's codes (1000-1304, 5000-5002)."""
GATEWAY_HEADER = "X-Kling-Budget-Gateway"
"""Set (to ``1``) on every answer of a kling-budget gateway: a client behind one leaves budgeting to it."""

CODE_MEANINGS: dict[int, str] = {
    1000: "authentication failed",
    1001: "authorization is empty",
    1002: "authorization is invalid",
    1003: "authorization is not yet valid",
    1004: "authorization has expired",
    1100: "account exception",
    1101: "account in arrears",
    1102: "resource pack depleted or expired",
    1103: "unauthorized access to the requested resource or model",
    1200: "invalid request parameters",
    1201: "invalid parameters",
    1202: "requested method is invalid",
    1203: "requested resource does not exist",
    1300: "platform strategy triggered",
    1301: "content security policy triggered",
    1302: "request rate limit exceeded",
    1303: "concurrency or QPS exceeds the resource pack limit",
    1304: "IP whitelisting policy triggered",
    DENIAL_CODE: "denied by a budget of the kling-budget gateway",
    5000: "server internal error",
    5001: "server temporarily unavailable",
    5002: "server internal timeout",
}

_MAX_MESSAGE = 300


def error_class(code: int) -> type[KlingAPIError]:
    """The exception class for a non-zero business code (unknown codes fall back by range)."""
    if code == DENIAL_CODE:
        return GatewayBudgetExceededError
    if code == 1102:
        return KlingPackExhaustedError
    if code in (1302, 1303):
        return KlingRateLimitError
    if 1000 <= code < 1100:
        return KlingAuthError
    if 1100 <= code < 1200:
        return KlingAccountError
    if 1200 <= code < 1300:
        return KlingParameterError
    if 1300 <= code < 1400:
        return KlingPolicyError
    if 5000 <= code < 6000:
        return KlingServerError
    return KlingAPIError


def one_line(text: str) -> str:
    """Collapse whitespace and cap the length so a message stays one readable line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def error_for_code(
    code: int,
    message: str,
    *,
    http_status: int | None,
    request_id: str | None,
    task_query: bool = False,
    data: Any = None,
) -> KlingAPIError:
    """Build the exception for a business error.

    Args:
        code: Kling's non-zero ``code``.
        message: Kling's ``message`` (already redacted by the caller).
        http_status: the HTTP status of the answer.
        request_id: Kling's ``request_id``.
        task_query: the request queried one task, so 1203 means "no such task".
        data: the envelope's ``data`` (a gateway's 1190 carries the denial there).

    Returns:
        An instance (not raised) of the class for ``code``; its text is
        ``Kling error 1102 (resource pack depleted or expired): <message> [request_id=...]``.
    """
    cls = KlingTaskNotFoundError if task_query and code == 1203 else error_class(code)
    meaning = CODE_MEANINGS.get(code, "unknown error code")
    text = f"Kling error {code} ({meaning})"
    detail = one_line(message)
    if detail:
        text += f": {detail}"
    if request_id:
        text += f" [request_id={request_id}]"
    if cls is GatewayBudgetExceededError:
        return _gateway_denial(text, data, code=code, http_status=http_status, request_id=request_id, message=message)
    return cls(text, code=code, http_status=http_status, request_id=request_id, kling_message=message)


def _gateway_denial(
    text: str, data: Any, *, code: int, http_status: int | None, request_id: str | None, message: str
) -> GatewayBudgetExceededError:
    """A 1190 with the denial details the gateway's ``data`` carries (``{"denial": {...}, "retry_after": s}``)."""
    details = data if isinstance(data, Mapping) else {}
    denial = None
    if isinstance(details.get("denial"), Mapping):
        try:
            denial = Denial.from_dict(details["denial"])
        except (KeyError, TypeError, ValueError):
            denial = None  # an answer we cannot read still denies; the message says why
    retry = details.get("retry_after")
    retry_after = retry if isinstance(retry, int) and not isinstance(retry, bool) and retry >= 0 else None
    return GatewayBudgetExceededError(
        text,
        denial=denial,
        retry_after=retry_after,
        code=code,
        http_status=http_status,
        request_id=request_id,
        kling_message=message,
    )
