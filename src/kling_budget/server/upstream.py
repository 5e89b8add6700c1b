"""The gateway's one connection to the real Kling API: real credentials in, Kling's envelopes out.

:class:`Upstream` sends a request with the gateway's own credentials (JWT signed with ``KLING_SECRET_KEY``,
or ``KLING_API_KEY``) and returns an :class:`UpstreamReply` — never raising for Kling's business errors —
so the proxy can pass Kling's answer through unchanged. Nothing here logs or returns a credential: the
``Authorization`` header is built per request and every error text goes through the auth's ``redact``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kling_budget.errors import KlingAPIError, KlingConnectError, KlingTransportError
from kling_budget.kling._codes import error_for_code, one_line
from kling_budget.kling.auth import Auth
from kling_budget.server.http1 import ExchangeError, HTTP1Pool, NotSentError
from kling_budget.server.metrics import Metrics

__all__ = ["Upstream", "UpstreamReply"]

USER_AGENT = "kling-budget-gateway/0.1"


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """Kling's answer to one request.

    Attributes:
        http_status: the HTTP status, ``None`` without a response.
        envelope: the decoded ``{"code","message","request_id","data"}`` object, ``None`` if unusable.
        error: ``None`` for ``code == 0``; otherwise the error this answer means (a Kling code, or a
            transport error: :class:`~kling_budget.errors.KlingConnectError` when nothing was sent).
    """

    http_status: int | None
    envelope: dict[str, Any] | None
    error: KlingAPIError | None

    @property
    def ok(self) -> bool:
        """``code == 0``."""
        return self.error is None

    @property
    def code(self) -> int | None:
        """Kling's business code, when an envelope arrived."""
        return None if self.envelope is None else self.envelope.get("code")

    @property
    def data(self) -> Any:
        """The envelope's ``data``."""
        return None if self.envelope is None else self.envelope.get("data")

    @property
    def request_id(self) -> str | None:
        """Kling's ``request_id``."""
        rid = None if self.envelope is None else self.envelope.get("request_id")
        return None if rid in (None, "") else str(rid)


class Upstream:
    """Async access to Kling with the gateway's credentials.

    Args:
        base_url: Kling's host (``https://api-singapore.klingai.com``, or the simulator).
        auth: the real credentials; kept private (``repr`` shows the access key id at most).
        timeout: seconds for a whole request.
        metrics: where latency and error codes are counted.
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        *,
        timeout: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self._metrics = metrics
        self._pool = HTTP1Pool(self.base_url, timeout=timeout)

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r}, {self._auth.describe()})"

    def redact(self, text: str) -> str:
        """``text`` with the real credentials and issued tokens scrubbed."""
        return self._auth.redact(text)

    async def aclose(self) -> None:
        """Close the idle connections."""
        await self._pool.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        operation: str = "query",
        task_query: bool = False,
    ) -> UpstreamReply:
        """Send one request and interpret the answer; never raises for Kling's errors or the network."""
        headers = {"User-Agent": USER_AGENT, "Authorization": self._auth.authorization(time.time())}
        content = None
        if body is not None:
            from kling_budget.server.task_store import dumps

            content = dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = await self._pool.request(method, path, headers=headers, body=content, params=params)
        except (NotSentError, ExchangeError) as exc:
            elapsed = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.upstream(operation, elapsed, None, transport_error=True)
            reason = one_line(self._auth.redact(str(exc)))
            error: KlingAPIError
            if isinstance(exc, NotSentError):
                error = KlingConnectError(f"Kling transport error: could not connect ({reason}) [{method} {path}]")
            else:
                error = KlingTransportError(f"Kling transport error: {reason} [{method} {path}]")
            return UpstreamReply(None, None, error)
        elapsed = time.perf_counter() - started
        try:
            envelope = json.loads(response.body, parse_float=Decimal)
        except ValueError:
            envelope = None
        code = envelope.get("code") if isinstance(envelope, dict) else None
        if not isinstance(envelope, dict) or not isinstance(code, int) or isinstance(code, bool):
            if self._metrics is not None:
                self._metrics.upstream(operation, elapsed, None, transport_error=True)
            return UpstreamReply(
                response.status,
                None,
                KlingTransportError(
                    f"Kling transport error: HTTP {response.status} without a Kling envelope [{method} {path}]",
                    http_status=response.status,
                ),
            )
        if self._metrics is not None:
            self._metrics.upstream(operation, elapsed, code)
        if code == 0:
            return UpstreamReply(response.status, envelope, None)
        message = self._auth.redact(str(envelope.get("message") or ""))
        envelope["message"] = message
        rid = envelope.get("request_id")
        return UpstreamReply(
            response.status,
            envelope,
            error_for_code(
                code,
                message,
                http_status=response.status,
                request_id=None if rid in (None, "") else str(rid),
                task_query=task_query,
            ),
        )
