"""The gateway's answer to a create a hard budget refused: HTTP 429, code 1190, the denial, ``Retry-After``.

Every create route answers a denial with :func:`denial_response`, so every 1190 looks the same::

    HTTP/1.1 429 Too Many Requests
    Retry-After: 3600
    {"code": 1190, "message": "request denied: budget 'team-daily' (...) would be exceeded: ...; resets ...",
     "request_id": "...",
     "data": {"budget": "team-daily", "reset_at": "...", "retry_after": 3600, "denial": {"budget": ..., "limit": ...}}}

``Retry-After`` (and ``data.retry_after``) is the whole number of seconds, rounded up, until the denying
budget's window resets: the latest moment the same request can fit again (holds released before then make
room sooner). A ``total`` budget never resets, so its denial has no ``Retry-After`` and ``retry_after`` is
``null``: waiting does not help, raising the limit does. ``data.denial`` (limit, committed, held, price ...)
is only given for a budget the tenant's key owns (see :mod:`kling_budget.server.exposure`); for a wider one it
is ``null`` and the answer says only which budget refused and when it resets.
"""

from __future__ import annotations

import math
from datetime import datetime

from starlette.responses import Response

from kling_budget.kling._codes import DENIAL_CODE
from kling_budget.server.task_store import dumps
from kling_budget.types import Denial

__all__ = ["DENIAL_CODE", "DENIAL_HTTP_STATUS", "denial_response", "retry_after_seconds"]

DENIAL_HTTP_STATUS = 429


def retry_after_seconds(denial: Denial | None, now: datetime) -> int | None:
    """Whole seconds (at least 1) from ``now`` until the denying budget's window resets; ``None`` for a budget
    that never resets (``total``) or an unknown denial."""
    if denial is None or denial.reset_at is None:
        return None
    return max(1, math.ceil((denial.reset_at - now).total_seconds()))


def denial_response(denial: Denial | None, message: str, request_id: str, now: datetime, *, full: bool) -> Response:
    """The 429/1190 envelope: ``message``, ``Retry-After`` when the budget resets, and in ``data`` the budget's
    name and reset time, plus the whole denial when ``full`` (a budget the tenant owns)."""
    retry_after = retry_after_seconds(denial, now)
    data = {
        "budget": None if denial is None else denial.budget,
        "reset_at": None if denial is None or denial.reset_at is None else denial.reset_at.isoformat(),
        "retry_after": retry_after,
        "denial": denial.to_dict() if full and denial is not None else None,
    }
    body = {"code": DENIAL_CODE, "message": message, "request_id": request_id, "data": data}
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Response(dumps(body), status_code=DENIAL_HTTP_STATUS, media_type="application/json", headers=headers)
