"""The Kling protocol core: configuration, credentials and every flow, with no I/O.

Each operation is a flow (see :mod:`kling_budget.kling._flow`): one exchange interpreted into Kling's envelope
(:meth:`_KlingCore._attempt`), an idempotent request with bounded retries (:meth:`_KlingCore._call`), a create
that never creates twice (:meth:`_KlingCore._create_flow`, the state machine described in
:mod:`kling_budget.kling.client`), queries, lists, waits and account reads. The clients
(:mod:`kling_budget.kling.client`), the budget-enforced clients and the gateway's upstream all run these same
flows, so a fix to any of them reaches every caller.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any
from urllib.parse import quote

from kling_budget.designs import create_option, is_model_in_path, with_create_option
from kling_budget.errors import (
    ConfigurationError,
    InvalidInputError,
    KlingAmbiguousCreateError,
    KlingAPIError,
    KlingConnectError,
    KlingParameterError,
    KlingTaskNotFoundError,
    KlingTransportError,
    KlingWaitTimeoutError,
)
from kling_budget.kling._codes import GATEWAY_HEADER, error_for_code, one_line
from kling_budget.kling._flow import Flow, Notify, ProgressCallback, Reply, Send, Sleep
from kling_budget.kling.auth import ENV_API_BASE, Auth
from kling_budget.kling.billing import BillingRecord, parse_billing_record
from kling_budget.kling.retry import Disposition, classify, delay_for, should_retry
from kling_budget.kling.tasks import ResourcePack, Task, parse_resource_pack, parse_task

__all__ = [
    "REGIONS",
    "BillingPage",
    "Created",
    "Endpoint",
    "Outcome",
    "TaskPage",
    "resolve_base_url",
]

logger = logging.getLogger("kling_budget.kling")

REGIONS: dict[str, str] = {
    "global": "https://api-singapore.klingai.com",
    "china": "https://api-beijing.klingai.com",
    "legacy": "https://api.klingai.com",
}
DEFAULT_REGION = "global"


class Endpoint(StrEnum):
    """Create paths of the ``/v1`` design; each also serves ``GET <path>/<id>`` and the paged list."""

    TEXT_TO_VIDEO = "/v1/videos/text2video"
    IMAGE_TO_VIDEO = "/v1/videos/image2video"
    MULTI_IMAGE_TO_VIDEO = "/v1/videos/multi-image2video"
    VIDEO_EXTEND = "/v1/videos/video-extend"
    LIP_SYNC = "/v1/videos/lip-sync"
    VIDEO_EFFECTS = "/v1/videos/effects"
    IMAGE_GENERATION = "/v1/images/generations"
    VIRTUAL_TRY_ON = "/v1/images/kolors-virtual-try-on"


ACCOUNT_COSTS_PATH = "/account/costs"
BILLING_PACKAGE_PATH = "/account/billing/package"
BILLING_BALANCE_PATH = "/account/billing/balance"
TASKS_PATH = "/tasks"
_MAX_TASK_IDS = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _not_found(what: str) -> KlingTaskNotFoundError:
    error = error_for_code(1203, f"{what} does not exist", http_status=404, request_id=None, task_query=True)
    assert isinstance(error, KlingTaskNotFoundError)
    return error


def _ids(values: str | Sequence[str] | None, what: str) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(item, str) and item and "," not in item for item in items):
        raise InvalidInputError(f"{what} must be non-empty strings without commas")
    if len(items) > _MAX_TASK_IDS:
        raise InvalidInputError(f"at most {_MAX_TASK_IDS} {what} per query, got {len(items)}")
    return items


@dataclass(frozen=True, slots=True)
class Ok:
    """A successful envelope (``code == 0``): its ``data``, ``request_id`` and ``message``."""

    data: Any
    request_id: str | None
    message: str = "SUCCEED"


Outcome = Ok | KlingAPIError
"""What one exchange meant: Kling's success envelope, or the (unraised) error it stands for."""


@dataclass(frozen=True, slots=True)
class Created:
    """Kling's answer to a create: the task (``None`` for a synchronous endpoint, which answers with its result
    at once), the answer's ``data`` and ``request_id``."""

    task: Task | None
    data: Any
    request_id: str | None

    @property
    def created_task(self) -> Task:
        """The task (a create on a task endpoint always has one)."""
        assert self.task is not None, "a synchronous answer has no task"
        return self.task


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of ``POST /tasks``: the tasks, and the cursor of the next page (``None`` at the end)."""

    tasks: tuple[Task, ...]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True, slots=True)
class BillingPage:
    """One page of a per-task billing ledger (``/account/billing/package`` or ``/balance``)."""

    records: tuple[BillingRecord, ...]
    next_cursor: str | None
    has_more: bool


def _cursor(data: Mapping[str, Any]) -> str | None:
    cursor = data.get("next_cursor")
    return str(cursor) if cursor not in (None, "") and data.get("has_more") else None


class _Lookup(Enum):
    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"


def _transport_error(reply: Reply, send: Send, reason: str) -> KlingTransportError:
    where = f"{send.method} {send.path}"
    if not reply.sent:
        return KlingConnectError(f"Kling transport error: could not connect ({reason}) [{where}]")
    return KlingTransportError(f"Kling transport error: {reason} [{where}]", http_status=reply.status)


def _names_duplicate(error: KlingAPIError) -> bool:
    """A parameter rejection about ``external_task_id``: proof that a task with that id already exists."""
    return isinstance(error, KlingParameterError) and "external_task_id" in str(error)


def resolve_base_url(base_url: str | None, region: str | None, environ: Mapping[str, str]) -> str:
    """The API host: ``base_url``, else ``region``, else ``KLING_API_BASE``, else the global host.

    Raises:
        ConfigurationError: both ``base_url`` and ``region`` given, an unknown region, or a non-http(s) URL.
    """
    if base_url and region:
        raise ConfigurationError("give either base_url or region, not both")
    if region is not None:
        try:
            url = REGIONS[region]
        except KeyError:
            raise ConfigurationError(
                f"unknown Kling region {region!r}; accepted: {', '.join(sorted(REGIONS))}"
            ) from None
    else:
        url = base_url or environ.get(ENV_API_BASE, "").strip() or REGIONS[DEFAULT_REGION]
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"Kling base URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _ms(value: datetime | int, what: str) -> int:
    """Unix milliseconds from an aware datetime or an int."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError(f"{what} must be an aware datetime (with a timezone) or Unix milliseconds")
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an aware datetime or Unix milliseconds (int)")
    return value


def _json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_text(data: Any) -> str:
    """Compact JSON as Kling takes it. Decimals (bodies are read with ``parse_float=Decimal``) are written as
    JSON numbers: an integral one exactly, another in the shortest form that reads back as the same double
    (a cfg_scale of 0.5 stays 0.5)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_json_number)


def _parsed(data: Any, endpoint: str | None, what: str) -> Task:
    """Kling's ``data`` as a :class:`Task`; an unusable one is a transport error (Kling's answer is broken)."""
    try:
        return parse_task(data if isinstance(data, Mapping) else {}, endpoint=endpoint)
    except InvalidInputError as exc:
        raise KlingTransportError(f"Kling answered {what} with an unusable task: {exc}") from None


class _KlingCore:
    """Configuration, credentials and every flow; no I/O.

    Args:
        auth: the credentials requests are signed with.
        base_url: the API host (already resolved, see :func:`resolve_base_url`).
        max_retries: retries after a failed attempt; also bounds create resubmissions and lookups.
        clock: Unix time in seconds (``time.time``); signs tokens and bounds waits.
        jitter: uniform ``[0, 1)`` source for backoff jitter (``random.random``).
    """

    def __init__(
        self,
        auth: Auth,
        base_url: str,
        *,
        max_retries: int,
        clock: Callable[[], float] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self._auth = auth
        self._base_url = base_url
        self._max_retries = max_retries
        self._clock = clock or time.time
        self._jitter = jitter or random.random
        self.behind_gateway: bool | None = None
        """Whether the base URL is a kling-budget gateway (its answers carry ``X-Kling-Budget-Gateway``);
        ``None`` until an answer or :meth:`_detect_gateway_flow` tells."""

    @property
    def base_url(self) -> str:
        """The API host requests go to."""
        return self._base_url

    @property
    def max_retries(self) -> int:
        """Retries allowed after a failed attempt (and the bound on create resubmissions)."""
        return self._max_retries

    def redact(self, text: str) -> str:
        """``text`` with the credentials and any token issued from them scrubbed."""
        return self._auth.redact(text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._auth.describe()}, base_url={self._base_url!r})"

    # -- one exchange ---------------------------------------------------------------------------------

    def _interpret(self, send: Send, reply: Reply, *, task_query: bool) -> Outcome:
        """Turn one HTTP exchange into the envelope's ``data`` or an (unraised) error; log it."""
        outcome: Outcome
        code: int | None = None
        request_id: str | None = None
        if reply.failure is not None:
            outcome = _transport_error(reply, send, one_line(self._auth.redact(reply.failure)))
        else:
            try:
                envelope = json.loads(reply.content, parse_float=Decimal)
            except (ValueError, RecursionError):
                envelope = None
            raw_code = envelope.get("code") if isinstance(envelope, dict) else None
            if isinstance(raw_code, str) and raw_code.strip().lstrip("-").isdigit() and len(raw_code) < 12:
                raw_code = int(raw_code)
            if not isinstance(raw_code, int) or isinstance(raw_code, bool):
                what = "a body that is not a Kling JSON envelope" if envelope is None else "no business code"
                outcome = _transport_error(reply, send, f"HTTP {reply.status} with {what}")
            else:
                assert isinstance(envelope, dict)
                code = raw_code
                rid = envelope.get("request_id")
                request_id = str(rid) if rid not in (None, "") else None
                message = self._auth.redact(str(envelope.get("message", envelope.get("msg", "")) or ""))
                if code == 0:
                    outcome = Ok(envelope.get("data"), request_id, message or "SUCCEED")
                else:
                    outcome = error_for_code(
                        code,
                        message,
                        http_status=reply.status,
                        request_id=request_id,
                        task_query=task_query,
                        data=envelope.get("data"),
                    )
        logger.debug(
            "kling %s %s -> http=%s code=%s request_id=%s latency_ms=%d",
            send.method,
            send.path,
            reply.status,
            code,
            request_id,
            round(reply.elapsed * 1000),
            extra={
                "kling_method": send.method,
                "kling_path": send.path,
                "kling_http_status": reply.status,
                "kling_code": code,
                "kling_request_id": request_id,
                "kling_latency_ms": round(reply.elapsed * 1000),
            },
        )
        return outcome

    def _attempt(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        task_query: bool = False,
    ) -> Flow[Outcome]:
        """One logical attempt: send, and on 1004 (token expired) re-sign and send once more."""
        resigned = False
        while True:
            send = Send(method, path, params, body, self._auth.authorization(self._clock()))
            reply: Reply = yield send
            if reply.headers.get(GATEWAY_HEADER):
                self.behind_gateway = True
            outcome = self._interpret(send, reply, task_query=task_query)
            if isinstance(outcome, KlingAPIError) and outcome.code == 1004 and not resigned and self._auth.renew():
                resigned = True
                logger.info("kling token expired (1004); re-signing and retrying once")
                continue
            return outcome

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        task_query: bool = False,
    ) -> Flow[Ok]:
        """An idempotent request with bounded retries; returns the success envelope or raises."""
        attempt = 0
        while True:
            attempt += 1
            outcome = yield from self._attempt(method, path, params=params, body=body, task_query=task_query)
            if isinstance(outcome, Ok):
                return outcome
            if not should_retry(outcome, attempt=attempt, max_retries=self._max_retries, idempotent=True):
                raise outcome
            delay = delay_for(outcome, attempt, jitter=self._jitter)
            logger.warning("kling %s %s failed (%s); retry %d in %.2fs", method, path, outcome, attempt, delay)
            yield Sleep(delay)

    # -- kling-budget gateway ---------------------------------------------------------------------------

    def _detect_gateway_flow(self) -> Flow[bool | None]:
        """Whether the base URL is a kling-budget gateway: known from an earlier answer, else asked once with
        an unauthenticated ``HEAD /`` (a gateway marks every answer with ``X-Kling-Budget-Gateway``; Kling
        does not). ``None`` when no answer came (asked again next time)."""
        if self.behind_gateway is None:
            reply: Reply = yield Send("HEAD", "/", None, None, "")
            if reply.status is not None:
                self.behind_gateway = bool(reply.headers.get(GATEWAY_HEADER))
        return self.behind_gateway

    # -- tasks ------------------------------------------------------------------------------------------

    @staticmethod
    def _task_query(endpoint: str, task_id: str | None, external_task_id: str | None) -> tuple[str, dict[str, str]]:
        """Where one task is queried: ``GET <endpoint>/<id>`` on ``/v1`` (either id in the path), ``GET /tasks``
        with ``task_ids`` or ``external_task_ids`` on the 2026 design."""
        if (task_id is None) == (external_task_id is None):
            raise InvalidInputError("give exactly one of task_id or external_task_id")
        ref = task_id if task_id is not None else external_task_id
        assert ref is not None
        if not ref:
            raise InvalidInputError("a task id must not be empty")
        if is_model_in_path(str(endpoint)):
            return TASKS_PATH, {"task_ids" if task_id is not None else "external_task_ids": ref}
        return f"{str(endpoint).rstrip('/')}/{quote(ref, safe='')}", {}

    @staticmethod
    def _one_item(ok: Ok, endpoint: str, ref: str) -> Any:
        """The task object in a query answer: ``data`` itself on ``/v1``, the one item of the list on the 2026
        design (:class:`~kling_budget.errors.KlingTaskNotFoundError` when Kling left it out: no such task)."""
        if not is_model_in_path(endpoint):
            return ok.data
        items = ok.data if isinstance(ok.data, list) else []
        if not items:
            raise _not_found(f"task {ref!r}")
        return items[0]

    def _one_task(self, ok: Ok, endpoint: str, what: str, ref: str) -> Task:
        """The task in a query answer (see :meth:`_one_item`), parsed."""
        return _parsed(self._one_item(ok, endpoint, ref), endpoint, what)

    def _get_task_flow(self, endpoint: str, task_id: str | None, external_task_id: str | None) -> Flow[Task]:
        path, params = self._task_query(endpoint, task_id, external_task_id)
        ok = yield from self._call("GET", path, params=params or None, task_query=True)
        return self._one_task(ok, str(endpoint), f"GET {path}", str(task_id or external_task_id))

    def _list_tasks_flow(self, endpoint: str, page_num: int, page_size: int) -> Flow[list[Task]]:
        if not 1 <= page_num <= 1000:
            raise InvalidInputError(f"page_num must be between 1 and 1000, got {page_num}")
        if not 1 <= page_size <= 500:
            raise InvalidInputError(f"page_size must be between 1 and 500, got {page_size}")
        path = str(endpoint).rstrip("/")
        ok = yield from self._call("GET", path, params={"pageNum": str(page_num), "pageSize": str(page_size)})
        items = ok.data if isinstance(ok.data, list) else []
        return [_parsed(item, path, f"GET {path}") for item in items]

    def _tasks_flow(self, task_ids: Sequence[str], external_task_ids: Sequence[str]) -> Flow[list[Task]]:
        if bool(task_ids) == bool(external_task_ids):
            raise InvalidInputError("give task_ids or external_task_ids (one kind, at least one id)")
        key, ids = ("task_ids", task_ids) if task_ids else ("external_task_ids", external_task_ids)
        ok = yield from self._call("GET", TASKS_PATH, params={key: ",".join(ids)}, task_query=True)
        items = ok.data if isinstance(ok.data, list) else []
        return [_parsed(item, None, f"GET {TASKS_PATH}") for item in items]

    def _find_tasks_flow(self, body: Mapping[str, Any]) -> Flow[TaskPage]:
        payload = json_text(body).encode("utf-8")
        ok = yield from self._call("POST", TASKS_PATH, body=payload)
        data = ok.data if isinstance(ok.data, Mapping) else {}
        found = data.get("result")
        items = found if isinstance(found, list) else []
        tasks = tuple(_parsed(item, None, f"POST {TASKS_PATH}") for item in items)
        return TaskPage(tasks, _cursor(data), bool(data.get("has_more")))

    def _billing_flow(self, path: str, body: Mapping[str, Any]) -> Flow[BillingPage]:
        payload = json_text(body).encode("utf-8")
        ok = yield from self._call("POST", path, body=payload)
        data = ok.data if isinstance(ok.data, Mapping) else {}
        found = data.get("result")
        rows = found if isinstance(found, list) else []
        try:
            records = tuple(parse_billing_record(row) for row in rows)
        except InvalidInputError as exc:
            raise KlingTransportError(f"Kling answered POST {path} with an unusable record: {exc}") from None
        return BillingPage(records, _cursor(data), bool(data.get("has_more")))

    @staticmethod
    def _prepare_create(path: str, body: Mapping[str, Any]) -> tuple[str, bytes]:
        """The ``external_task_id`` a create is known by (the caller's, else a new uuid4 hex) and its body."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidInputError(f"create path must start with '/', got {path!r}")
        if not isinstance(body, Mapping):
            raise InvalidInputError(f"create body must be a mapping, got {type(body).__name__}")
        external = create_option(path, body, "external_task_id")
        if external is None or external == "":
            external = uuid.uuid4().hex
        elif not isinstance(external, str):
            raise InvalidInputError(f"external_task_id must be a string, got {type(external).__name__}")
        prepared = with_create_option(path, body, "external_task_id", external)
        try:
            payload = json_text(prepared).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"create body is not JSON-serialisable: {exc}") from None
        return external, payload

    def _create_flow(
        self, path: str, body: Mapping[str, Any], *, resubmit: bool = True, synchronous: bool = False
    ) -> Flow[Created]:
        """Create a task without ever creating it twice (the state machine in :mod:`.client`).

        ``resubmit=False`` sends the create once (a proxy leaves retries to its client) but still looks an
        ambiguous outcome up before answering. ``synchronous=True`` accepts a success without a task id as the
        finished result of a synchronous endpoint (``Created.task`` is then ``None``).
        """
        external, payload = self._prepare_create(path, body)
        submissions = 0
        uncertain: KlingAPIError | None = None
        while True:
            submissions += 1
            outcome = yield from self._attempt("POST", path, body=payload)
            if isinstance(outcome, Ok):
                data = outcome.data if isinstance(outcome.data, Mapping) else {}
                if synchronous and not data.get("task_id") and not data.get("id"):
                    return Created(None, outcome.data, outcome.request_id)
                try:
                    return Created(parse_task(data, endpoint=path), outcome.data, outcome.request_id)
                except InvalidInputError as exc:
                    # Code 0 but an unreadable task: it was probably created, so treat it as unknown.
                    outcome = KlingTransportError(
                        f"Kling answered POST {path} with an unusable task: {exc}",
                        request_id=outcome.request_id,
                    )
            kind = classify(outcome, idempotent=False)
            if kind is Disposition.AMBIGUOUS:
                uncertain = outcome
                logger.warning(
                    "kling create %s external_task_id=%s ambiguous (%s); looking it up",
                    path,
                    external,
                    outcome,
                )
            may_resubmit = resubmit and submissions <= self._max_retries
            if kind is Disposition.RETRY and may_resubmit:
                yield Sleep(delay_for(outcome, submissions, jitter=self._jitter))
                continue
            if uncertain is None:
                raise outcome
            state, found = yield from self._find_created(path, external)
            if state is _Lookup.FOUND:
                assert found is not None
                return found
            if state is _Lookup.ABSENT and kind is Disposition.AMBIGUOUS and may_resubmit:
                logger.warning("kling create %s external_task_id=%s not found; resubmitting", path, external)
                yield Sleep(delay_for(outcome, submissions, jitter=self._jitter))
                continue
            duplicate = _names_duplicate(outcome)
            if state is _Lookup.ABSENT and kind is not Disposition.AMBIGUOUS and not duplicate:
                raise outcome
            if duplicate:
                why = "Kling reports the external_task_id as taken but the task cannot be read"
            elif state is _Lookup.ABSENT:
                why = "task not found"
            else:
                why = "lookup failed"
            raise KlingAmbiguousCreateError(
                f"Kling create may or may not have succeeded after {submissions} submission(s) ({why}); "
                f"last error: {outcome} [external_task_id={external}]",
                external_task_id=external,
                code=outcome.code,
                http_status=outcome.http_status,
                request_id=outcome.request_id,
            ) from outcome

    def _find_created(self, path: str, external: str) -> Flow[tuple[_Lookup, Created | None]]:
        """Look a maybe-created task up by ``external_task_id`` with bounded attempts and backoff."""
        query_path, params = self._task_query(path, None, external)
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            yield Sleep(delay_for(None, attempt, jitter=self._jitter))
            outcome = yield from self._attempt("GET", query_path, params=params or None, task_query=True)
            if isinstance(outcome, Ok):
                try:
                    task = self._one_task(outcome, path, f"GET {query_path}", external)
                except KlingTaskNotFoundError:
                    return _Lookup.ABSENT, None
                except KlingTransportError:
                    continue
                if task.external_task_id not in (None, external):
                    logger.error(
                        "kling lookup of external_task_id=%s returned task %s with external_task_id=%s",
                        external,
                        task.task_id,
                        task.external_task_id,
                    )
                    return _Lookup.UNKNOWN, None
                return _Lookup.FOUND, Created(task, task.raw, outcome.request_id)
            if isinstance(outcome, KlingTaskNotFoundError):
                return _Lookup.ABSENT, None
            if classify(outcome, idempotent=True) is not Disposition.RETRY:
                return _Lookup.UNKNOWN, None
        return _Lookup.UNKNOWN, None

    def _wait_flow(
        self,
        endpoint: str,
        task_id: str | None,
        external_task_id: str | None,
        *,
        timeout: float,
        poll_interval: float,
        max_poll_interval: float,
        on_progress: ProgressCallback | None,
    ) -> Flow[Task]:
        if timeout < 0 or poll_interval <= 0 or max_poll_interval < poll_interval:
            raise InvalidInputError("wait() needs timeout >= 0 and 0 < poll_interval <= max_poll_interval")
        deadline = self._clock() + timeout
        interval = poll_interval
        last: Task | None = None
        while True:
            try:
                task: Task | None = yield from self._get_task_flow(endpoint, task_id, external_task_id)
            except KlingAPIError as exc:
                if not exc.should_retry:
                    raise
                logger.warning("kling wait: poll failed (%s); will poll again", exc)
                task = None
            if task is not None:
                last = task
                if on_progress is not None:
                    yield Notify(on_progress, task)
                if task.is_terminal:
                    return task
            remaining = deadline - self._clock()
            if remaining <= 0:
                which = task_id if task_id is not None else f"external_task_id={external_task_id}"
                state = last.status.value if last else "unknown"
                raise KlingWaitTimeoutError(f"Kling task {which} still {state} after waiting {timeout:g}s", task=last)
            yield Sleep(min(interval, remaining))
            interval = min(max_poll_interval, interval * 1.5)

    # -- account ----------------------------------------------------------------------------------------

    def _account_costs_flow(
        self, start_time: datetime | int, end_time: datetime | int, resource_pack_name: str | None
    ) -> Flow[list[ResourcePack]]:
        params = {
            "start_time": str(_ms(start_time, "start_time")),
            "end_time": str(_ms(end_time, "end_time")),
        }
        if resource_pack_name:
            params["resource_pack_name"] = resource_pack_name
        ok = yield from self._call("GET", ACCOUNT_COSTS_PATH, params=params)
        data = ok.data if isinstance(ok.data, Mapping) else {}
        inner = data.get("code", 0)
        if isinstance(inner, int) and not isinstance(inner, bool) and inner != 0:
            raise error_for_code(
                inner,
                self._auth.redact(str(data.get("msg") or data.get("message") or "")),
                http_status=None,
                request_id=ok.request_id,
            )
        infos = data.get("resource_pack_subscribe_infos")
        try:
            return [parse_resource_pack(item) for item in (infos if isinstance(infos, list) else [])]
        except InvalidInputError as exc:
            raise KlingTransportError(f"Kling answered GET {ACCOUNT_COSTS_PATH} with an unusable pack: {exc}") from None
