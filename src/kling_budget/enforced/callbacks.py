"""Kling callbacks, framework-neutral: raw body + headers in, status code + short body out.

Kling POSTs the task to ``callback_url`` on every status change, possibly more than once and out of order.
A callback is only a *hint*: the handler finds the reservation the task belongs to, queries the task from
Kling, and settles from that answer with :class:`~kling_budget.enforced.settle.JobSettler`, never from the callback
body. Correctness under duplicates, reordering and races with polling comes from the ledger (a
reservation resolves once; a replay is a no-op); remembering ``webhook-id`` values only saves queries.

When a webhook secret (``whsec_...``) is configured, every delivery must carry a valid Standard Webhooks
signature (``webhook-id``, ``webhook-timestamp`` within 5 minutes, ``webhook-signature``), else it is
refused with 401 before anything else happens.

Wiring it into a web framework takes three lines, e.g. Starlette::

    handler = CallbackHandler(tracker, KlingClient(), webhook_secret=os.environ["KLING_WEBHOOK_SECRET"])

    async def kling_callback(request):
        result = await anyio.to_thread.run_sync(handler.handle, await request.body(), dict(request.headers))
        return PlainTextResponse(result.body, status_code=result.status_code)

Status codes: 200 handled (settled, still running, already settled, a conflict that was reported, or a task
no reservation belongs to); 400 unreadable body; 401 bad or missing signature; 404 Kling does not know the
task (yet); 503 Kling or the ledger could not be reached (a retry may succeed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from kling_budget.enforced.lookup import lookup_flow
from kling_budget.enforced.settle import JobSettler, SettleOutcome
from kling_budget.errors import (
    ConfigurationError,
    InvalidInputError,
    KlingAPIError,
    KlingTaskNotFoundError,
    LedgerError,
)
from kling_budget.kling._core import _KlingCore
from kling_budget.kling._flow import AsyncDriver, Blocking, Flow, SyncDriver, operation
from kling_budget.kling.client import AsyncKlingClient, KlingClient
from kling_budget.kling.tasks import Task, parse_task
from kling_budget.kling.webhooks import WebhookVerificationError, sign_webhook, verify_webhook
from kling_budget.ledger import Ledger, ReservationInfo

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["AsyncCallbackHandler", "CallbackHandler", "CallbackResult"]

T = TypeVar("T")
_Found = tuple[ReservationInfo | None, "CallbackResult | None"]

logger = logging.getLogger("kling_budget.kling")

_SEEN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What to answer Kling, and what happened.

    Attributes:
        status_code: the HTTP status to send back.
        body: a short plain-text body (never a secret).
        outcome: how the job was settled, when it got that far.
        webhook_id: the delivery's ``webhook-id`` header, when present.
        duplicate: the delivery repeats one already handled to the end (nothing was queried or changed).
    """

    status_code: int
    body: str
    outcome: SettleOutcome | None = None
    webhook_id: str | None = None
    duplicate: bool = False


class _Handled:
    """``webhook-id`` values already settled to a final answer (bounded, thread-safe)."""

    def __init__(self, limit: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __contains__(self, webhook_id: object) -> bool:
        with self._lock:
            return webhook_id in self._ids

    def add(self, webhook_id: str) -> None:
        with self._lock:
            self._ids[webhook_id] = None
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)


class _CallbackCore:
    """Verification, parsing, the handling flow and its answers, for both handlers."""

    client: _KlingCore

    def __init__(
        self,
        tracker_or_ledger: CostTracker | Ledger,
        *,
        webhook_secret: str | None,
        clock: Callable[[], float] | None,
    ) -> None:
        if webhook_secret is not None:
            try:
                sign_webhook(webhook_secret, "probe", 0, b"")
            except WebhookVerificationError as exc:
                raise ConfigurationError(str(exc)) from None
        self._secret = webhook_secret
        self._clock = clock or time.time
        self.settler = JobSettler(tracker_or_ledger)
        self._handled = _Handled(_SEEN_LIMIT)

    def __repr__(self) -> str:
        signed = "signed" if self._secret else "unsigned"
        return f"{type(self).__name__}({signed}, ledger={self.settler.ledger!r})"

    def _handle(self, raw_body: bytes, headers: Mapping[str, str]) -> Flow[CallbackResult]:
        """Handle one delivery: verify, find the reservation, query Kling, settle. Never raises for bad input.

        Args:
            raw_body: the request body exactly as received (the signature covers these bytes).
            headers: the request headers (any case).
        """
        hint, answer = self._admit(raw_body, headers)
        if answer is not None:
            return answer
        assert hint is not None
        webhook_id = {k.lower(): v for k, v in headers.items()}.get("webhook-id") or None
        found: _Found = yield Blocking(lambda: self._find(hint, webhook_id))
        info, answer = found
        if answer is not None:
            return answer
        assert info is not None
        try:
            fresh = yield from lookup_flow(self.client, info)
        except KlingAPIError as exc:
            return self._query_failed(exc, info, webhook_id)
        result: CallbackResult = yield Blocking(lambda: self._settle(fresh, info, webhook_id))
        return result

    handle = operation(_handle)

    def _admit(self, raw_body: bytes, headers: Mapping[str, str]) -> tuple[Task | None, CallbackResult | None]:
        """Verify and parse; return the hinted task, or the answer when the delivery stops here."""
        lowered = {k.lower(): v for k, v in headers.items()}
        webhook_id = lowered.get("webhook-id") or None
        if self._secret is not None:
            try:
                verify_webhook(self._secret, lowered, raw_body, now=int(self._clock()))
            except WebhookVerificationError as exc:
                logger.warning("kling callback refused: %s", exc)
                return None, CallbackResult(401, f"invalid signature: {exc}", webhook_id=webhook_id)
        if webhook_id is not None and webhook_id in self._handled:
            return None, CallbackResult(200, "duplicate delivery", webhook_id=webhook_id, duplicate=True)
        try:
            hint = parse_task(raw_body)
        except InvalidInputError as exc:
            return None, CallbackResult(400, f"unreadable callback body: {exc}", webhook_id=webhook_id)
        return hint, None

    def _find(self, hint: Task, webhook_id: str | None) -> tuple[ReservationInfo | None, CallbackResult | None]:
        try:
            info = self.settler.find(hint)
        except LedgerError as exc:
            return None, CallbackResult(503, f"ledger unavailable: {exc}", webhook_id=webhook_id)
        if info is None:
            logger.info("kling callback for task %s: no reservation belongs to it; ignored", hint.task_id)
            return None, CallbackResult(200, f"ignored: no reservation for task {hint.task_id}", webhook_id=webhook_id)
        return info, None

    @staticmethod
    def _query_failed(exc: KlingAPIError, info: ReservationInfo, webhook_id: str | None) -> CallbackResult:
        if isinstance(exc, KlingTaskNotFoundError):
            return CallbackResult(404, f"Kling has no task for reservation {info.id} (yet)", webhook_id=webhook_id)
        return CallbackResult(503, f"could not confirm with Kling: {exc}", webhook_id=webhook_id)

    def _settle(self, fresh: Task, info: ReservationInfo, webhook_id: str | None) -> CallbackResult:
        try:
            outcome = self.settler.settle(fresh, reservation_id=info.id)
        except LedgerError as exc:
            return CallbackResult(503, f"ledger unavailable: {exc}", webhook_id=webhook_id)
        if webhook_id is not None and fresh.is_terminal and (outcome.settled or outcome.conflict):
            self._handled.add(webhook_id)
        return CallbackResult(200, f"{outcome.action.value}: {outcome.message}", outcome=outcome, webhook_id=webhook_id)


class CallbackHandler(_CallbackCore, SyncDriver):
    """Handles Kling callbacks with a blocking :class:`~kling_budget.kling.KlingClient`: ``handle(raw_body,
    headers)`` returns a :class:`CallbackResult`.

    Args:
        tracker_or_ledger: the tracker (its alert sinks get overage and conflict alerts) or a bare ledger.
        client: used to query each task before settling it.
        webhook_secret: the ``whsec_...`` secret from Kling's console; when given, unsigned or badly signed
            deliveries are refused with 401.
        clock: Unix seconds (``time.time``), for the signature's timestamp check.

    Raises:
        ConfigurationError: the webhook secret is not ``whsec_`` followed by base64.
    """

    def __init__(
        self,
        tracker_or_ledger: CostTracker | Ledger,
        client: KlingClient,
        *,
        webhook_secret: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(tracker_or_ledger, webhook_secret=webhook_secret, clock=clock)
        self.client: KlingClient = client

    def _drive(self, flow: Flow[T]) -> T:
        return self.client._drive(flow)


class AsyncCallbackHandler(_CallbackCore, AsyncDriver):
    """The async twin of :class:`CallbackHandler` (``await handle(...)``), on
    :class:`~kling_budget.kling.AsyncKlingClient`; ledger work runs in a worker thread."""

    def __init__(
        self,
        tracker_or_ledger: CostTracker | Ledger,
        client: AsyncKlingClient,
        *,
        webhook_secret: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(tracker_or_ledger, webhook_secret=webhook_secret, clock=clock)
        self.client: AsyncKlingClient = client

    async def _drive(self, flow: Flow[T]) -> T:
        return await self.client._drive(flow)
