"""The gateway's one connection to the real Kling API: real credentials in, Kling's envelopes out.

:class:`Upstream` runs the Kling protocol core (:mod:`kling_budget.kling._core`: envelope parsing, token
re-signing, the never-create-twice create) on the gateway's own HTTP/1 client (:mod:`.http1`), so the gateway
and the Python clients share one implementation of Kling. It sends each request once (the client behind the
gateway decides about retrying) and returns an :class:`UpstreamReply`, never raising for Kling's business
errors or the network, so the proxy can pass Kling's answer through. Nothing here logs or returns a credential:
the ``Authorization`` header is built per request and every error text goes through the auth's ``redact``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from kling_budget.errors import KlingAPIError
from kling_budget.kling._core import Created, Ok, Outcome, _KlingCore
from kling_budget.kling._flow import AsyncDriver, Flow, Reply, Send
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
        envelope: the ``{"code","message","request_id","data"}`` object (message free of secrets), ``None``
            when no Kling envelope arrived.
        error: ``None`` for ``code == 0``; otherwise the error this answer means (a Kling code, or a
            transport error: :class:`~kling_budget.errors.KlingConnectError` when nothing was sent).
    """

    http_status: int | None
    envelope: dict[str, Any] | None
    error: KlingAPIError | None

    @classmethod
    def of(cls, outcome: Outcome, http_status: int | None = 200) -> UpstreamReply:
        """The reply for a core outcome."""
        if isinstance(outcome, Ok):
            envelope = {"code": 0, "message": outcome.message, "request_id": outcome.request_id, "data": outcome.data}
            return cls(http_status, envelope, None)
        if outcome.code is None:
            return cls(outcome.http_status, None, outcome)
        envelope = {"code": outcome.code, "message": outcome.kling_message, "request_id": outcome.request_id}
        return cls(outcome.http_status, {**envelope, "data": None}, outcome)

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


class Upstream(_KlingCore, AsyncDriver):
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
        # One submission per client request; an ambiguous create is still looked up once before answering.
        super().__init__(auth, base_url.rstrip("/"), max_retries=0)
        self._metrics = metrics
        self._pool = HTTP1Pool(self.base_url, timeout=timeout)

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r}, {self._auth.describe()})"

    async def aclose(self) -> None:
        """Close the idle connections."""
        await self._pool.aclose()

    async def _exchange(self, send: Send) -> Reply:
        headers = {"User-Agent": USER_AGENT, **send.headers()}
        started = time.perf_counter()
        try:
            response = await self._pool.request(
                send.method, send.path, headers=headers, body=send.body, params=send.params
            )
        except (NotSentError, ExchangeError) as exc:
            sent = not isinstance(exc, NotSentError)
            return Reply(None, b"", str(exc), sent=sent, elapsed=time.perf_counter() - started)
        return Reply(response.status, response.body, elapsed=time.perf_counter() - started)

    async def _sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def _measured(self, operation: str, flow: Flow[Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await self._drive(flow)
        except KlingAPIError as exc:
            self._record(operation, started, exc)
            raise
        self._record(operation, started, result)
        return result

    def _record(self, operation: str, started: float, outcome: object) -> None:
        if self._metrics is None:
            return
        code = outcome.code if isinstance(outcome, KlingAPIError) else 0
        self._metrics.upstream(operation, time.perf_counter() - started, code, transport_error=code is None)

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
        from kling_budget.server.task_store import dumps

        content = None if body is None else dumps(body).encode("utf-8")
        flow = self._attempt(method, path, params=params, body=content, task_query=task_query)
        outcome: Outcome = await self._measured(operation, flow)
        return UpstreamReply.of(outcome, getattr(outcome, "http_status", 200))

    async def create(self, path: str, body: dict[str, Any]) -> Created:
        """Create a task once, looking an ambiguous outcome up by ``external_task_id`` before answering.

        Raises:
            KlingAmbiguousCreateError: Kling may or may not have the task (keep the hold).
            KlingAPIError: a definite rejection, or a connection that was never made (nothing was created).
        """
        flow = self._create_flow(path, body, resubmit=False, synchronous=True)
        created: Created = await self._measured("create", flow)
        return created
