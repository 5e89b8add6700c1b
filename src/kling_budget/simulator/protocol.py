"""Kling's wire conventions as the simulator speaks them: business codes, HTTP statuses, the envelope.

Every answer is ``{"code", "message", "request_id", "data"}``; the HTTP status follows the business code as
in Kling's error table (so 1102 and 1303 are both HTTP 429 and only ``code`` tells them apart).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = [
    "CODE_HTTP_STATUS",
    "SimError",
    "dumps",
    "envelope",
    "http_status_for",
    "new_request_id",
]

#: HTTP status for each business code, from Kling's documented error table.
CODE_HTTP_STATUS: Mapping[int, int] = {
    0: 200,
    1000: 401,
    1001: 401,
    1002: 401,
    1003: 401,
    1004: 401,
    1100: 429,
    1101: 429,
    1102: 429,
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    1302: 429,
    1303: 429,
    1304: 429,
    5000: 500,
    5001: 503,
    5002: 504,
}

#: Kling's own wording for each code; the simulator appends a detail after a colon where it helps.
CODE_MESSAGE: Mapping[int, str] = {
    1000: "Authentication failed",
    1001: "Authorization is empty",
    1002: "Authorization is invalid",
    1003: "Authorization is not yet valid",
    1004: "Authorization has expired",
    1100: "Account exception",
    1101: "Account in arrears (postpaid scenario)",
    1102: "Resource pack depleted or expired (prepaid scenario)",
    1103: "Unauthorized access to requested resource",
    1200: "Invalid request parameters",
    1201: "Invalid parameters",
    1202: "Requested method is invalid",
    1203: "Requested resource does not exist",
    1300: "Trigger platform strategy",
    1301: "Content security policy triggered",
    1302: "API request too fast, exceeds platform rate limit",
    1303: "parallel task over resource pack limit",
    1304: "IP whitelisting policy",
    5000: "Server internal error",
    5001: "Server temporarily unavailable",
    5002: "Server internal timeout",
}


def http_status_for(code: int) -> int:
    """The HTTP status Kling pairs with a business code (500 for codes it does not document)."""
    return CODE_HTTP_STATUS.get(code, 500)


class SimError(Exception):
    """A request the simulator refuses with a Kling business code; ``str(err)`` is the envelope message."""

    def __init__(self, code: int, detail: str = "") -> None:
        base = CODE_MESSAGE.get(code, "Error")
        super().__init__(f"{base}: {detail}" if detail else base)
        self.code = code

    @property
    def http_status(self) -> int:
        """The HTTP status that goes with :attr:`code`."""
        return http_status_for(self.code)


def new_request_id() -> str:
    """A fresh request id in Kling's format (a UUID)."""
    return str(uuid.uuid4())


def envelope(code: int, message: str, request_id: str, data: Any) -> dict[str, Any]:
    """Kling's response envelope."""
    return {"code": code, "message": message, "request_id": request_id, "data": data}


def _exact(obj: Any) -> str:
    if isinstance(obj, Decimal):
        return _decimal_literal(obj)
    if isinstance(obj, Mapping):
        items = (f"{json.dumps(str(k))}:{_exact(v)}" for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return "[" + ",".join(_exact(v) for v in obj) + "]"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _decimal_literal(value: Decimal) -> str:
    # Kling reports pack quantities as JSON numbers like 200.0; write them from the exact Decimal.
    text = f"{value.normalize():f}"
    return text if "." in text else text + ".0"


def _refuse_decimal(obj: Any) -> Any:
    raise TypeError(type(obj).__name__)


def dumps(obj: Any) -> bytes:
    """JSON bytes; ``Decimal`` values become exact JSON numbers (``Decimal("118.5")`` -> ``118.5``)."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_refuse_decimal)
    except TypeError:
        text = _exact(obj)
    return text.encode("utf-8")
