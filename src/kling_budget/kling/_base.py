"""The I/O-free core shared by :class:`KlingClient` and :class:`AsyncKlingClient`.

Every operation is written once as a generator ("flow") that *yields* what it needs done and *receives*
the result: :class:`_Send` (an HTTP exchange; the driver answers with a :class:`_Reply`), :class:`_Sleep`
(the driver answers ``None``) and :class:`_Notify` (call the progress callback). The sync client drives
flows with ``httpx.Client`` and a blocking sleep, the async client with ``httpx.AsyncClient`` and an
awaitable sleep, so the retry, re-signing and ambiguous-create logic below exists exactly once. See
:mod:`kling_budget.kling.client` for the create state machine; the drivers are
:mod:`~kling_budget.kling.client_sync` and :mod:`~kling_budget.kling.client_async`.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

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
from kling_budget.kling._codes import error_for_code, one_line
from kling_budget.kling.auth import ENV_API_BASE, Auth, resolve_auth
from kling_budget.kling.retry import Disposition, classify, delay_for, should_retry
from kling_budget.kling.tasks import ResourcePack, Task, parse_resource_pack, parse_task

__all__ = [
    "DEFAULT_TIMEOUT",
    "REGIONS",
    "Endpoint",
    "ProgressCallback",
]

logger = logging.getLogger("kling_budget.kling")

T = TypeVar("T")

REGIONS: dict[str, str] = {
    "global": "https://api-singapore.klingai.com",
    "china": "https://api-beijing.klingai.com",
    "legacy": "https://api.klingai.com",
}
DEFAULT_REGION = "global"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
USER_AGENT = "kling-budget/0.1"

ProgressCallback = Callable[[Task], object]
"""Called with every polled :class:`Task` in ``wait()``; the async client also awaits an awaitable result."""


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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Send:
    method: str
    path: str
    params: Mapping[str, str] | None
    body: bytes | None
    authorization: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int | None
    content: bytes
    error: httpx.RequestError | None
    elapsed: float


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Notify:
    callback: ProgressCallback
    task: Task


_Action = _Send | _Sleep | _Notify
Flow = Generator[_Action, Any, T]


@dataclass(frozen=True, slots=True)
class _Ok:
    data: Any
    request_id: str | None


class _Lookup(Enum):
    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _transport_error(reply: _Reply, send: _Send, reason: str) -> KlingTransportError:
    where = f"{send.method} {send.path}"
    if reply.error is not None and isinstance(reply.error, _NOT_SENT):
        return KlingConnectError(f"Kling transport error: could not connect ({reason}) [{where}]")
    return KlingTransportError(f"Kling transport error: {reason} [{where}]", http_status=reply.status)


def _headers(send: _Send) -> dict[str, str]:
    """The per-request headers of one exchange (both drivers add them to the pool's ``User-Agent``)."""
    headers = {"Authorization": send.authorization}
    if send.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


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


def compact(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left at ``None``."""
    return {k: v for k, v in fields.items() if v is not None}


def duration_text(duration: int | str | None) -> str | None:
    """Kling's ``/v1`` design sends durations as strings (``"5"``)."""
    return None if duration is None else str(duration)


def _images(image_list: Sequence[str | Mapping[str, Any]]) -> list[Any]:
    """Multi-image references: a bare string becomes ``{"image": ...}``."""
    return [{"image": item} if isinstance(item, str) else dict(item) for item in image_list]


def _ms(value: datetime | int, what: str) -> int:
    """Unix milliseconds from an aware datetime or an int."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError(f"{what} must be an aware datetime (with a timezone) or Unix milliseconds")
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an aware datetime or Unix milliseconds (int)")
    return value


class _KlingCore:
    """Configuration, credentials and every flow; no I/O."""

    def __init__(
        self,
        access_key: str | None,
        secret_key: str | None,
        *,
        api_key: str | None,
        base_url: str | None,
        region: str | None,
        max_retries: int,
        clock: Callable[[], float] | None,
        jitter: Callable[[], float] | None,
        environ: Mapping[str, str],
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self._auth: Auth = resolve_auth(access_key, secret_key, api_key, environ)
        self._base_url = resolve_base_url(base_url, region, environ)
        self._max_retries = max_retries
        self._clock = clock or time.time
        self._jitter = jitter or random.random

    @property
    def base_url(self) -> str:
        """The API host requests go to."""
        return self._base_url

    @property
    def max_retries(self) -> int:
        """Retries allowed after a failed attempt (and the bound on create resubmissions)."""
        return self._max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._auth.describe()}, base_url={self._base_url!r})"

    # -- one exchange ---------------------------------------------------------------------------------

    def _interpret(self, send: _Send, reply: _Reply, *, task_query: bool) -> _Ok | KlingAPIError:
        """Turn one HTTP exchange into the envelope's ``data`` or an (unraised) error; log it."""
        outcome: _Ok | KlingAPIError
        code: int | None = None
        request_id: str | None = None
        if reply.error is not None:
            reason = one_line(self._auth.redact(f"{type(reply.error).__name__}: {reply.error}"))
            outcome = _transport_error(reply, send, reason)
        else:
            try:
                envelope = json.loads(reply.content, parse_float=Decimal)
            except ValueError:
                envelope = None
            raw_code = envelope.get("code") if isinstance(envelope, dict) else None
            if isinstance(raw_code, str) and raw_code.strip().lstrip("-").isdigit():
                raw_code = int(raw_code)
            if not isinstance(raw_code, int) or isinstance(raw_code, bool):
                what = "a body that is not a Kling JSON envelope" if envelope is None else "no business code"
                outcome = _transport_error(reply, send, f"HTTP {reply.status} with {what}")
            else:
                assert isinstance(envelope, dict)
                code = raw_code
                rid = envelope.get("request_id")
                request_id = str(rid) if rid not in (None, "") else None
                if code == 0:
                    outcome = _Ok(envelope.get("data"), request_id)
                else:
                    message = envelope.get("message", envelope.get("msg", ""))
                    outcome = error_for_code(
                        code,
                        self._auth.redact(str(message or "")),
                        http_status=reply.status,
                        request_id=request_id,
                        task_query=task_query,
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
    ) -> Flow[_Ok | KlingAPIError]:
        """One logical attempt: send, and on 1004 (token expired) re-sign and send once more."""
        resigned = False
        while True:
            send = _Send(method, path, params, body, self._auth.authorization(self._clock()))
            reply: _Reply = yield send
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
        task_query: bool = False,
    ) -> Flow[_Ok]:
        """An idempotent request with bounded retries; returns the success envelope or raises."""
        attempt = 0
        while True:
            attempt += 1
            outcome = yield from self._attempt(method, path, params=params, task_query=task_query)
            if isinstance(outcome, _Ok):
                return outcome
            if not should_retry(outcome, attempt=attempt, max_retries=self._max_retries, idempotent=True):
                raise outcome
            delay = delay_for(outcome, attempt, jitter=self._jitter)
            logger.warning("kling %s %s failed (%s); retry %d in %.2fs", method, path, outcome, attempt, delay)
            yield _Sleep(delay)

    # -- tasks ------------------------------------------------------------------------------------------

    @staticmethod
    def _task_query(endpoint: str, task_id: str | None, external_task_id: str | None) -> str:
        """The query path: Kling's ``/v1`` design takes either id in the path (``GET <endpoint>/<id>``)."""
        if (task_id is None) == (external_task_id is None):
            raise InvalidInputError("give exactly one of task_id or external_task_id")
        ref = task_id if task_id is not None else external_task_id
        assert ref is not None
        if not ref:
            raise InvalidInputError("a task id must not be empty")
        return f"{str(endpoint).rstrip('/')}/{quote(ref, safe='')}"

    @staticmethod
    def _parse_task_data(data: Any, endpoint: str, send_what: str) -> Task:
        try:
            return parse_task(data if isinstance(data, Mapping) else {}, endpoint=endpoint)
        except InvalidInputError as exc:
            raise KlingTransportError(f"Kling answered {send_what} with an unusable task: {exc}") from None

    def _get_task_flow(self, endpoint: str, task_id: str | None, external_task_id: str | None) -> Flow[Task]:
        path = self._task_query(endpoint, task_id, external_task_id)
        ok = yield from self._call("GET", path, task_query=True)
        return self._parse_task_data(ok.data, str(endpoint), f"GET {path}")

    def _list_tasks_flow(self, endpoint: str, page_num: int, page_size: int) -> Flow[list[Task]]:
        if not 1 <= page_num <= 1000:
            raise InvalidInputError(f"page_num must be between 1 and 1000, got {page_num}")
        if not 1 <= page_size <= 500:
            raise InvalidInputError(f"page_size must be between 1 and 500, got {page_size}")
        path = str(endpoint).rstrip("/")
        ok = yield from self._call("GET", path, params={"pageNum": str(page_num), "pageSize": str(page_size)})
        items = ok.data if isinstance(ok.data, list) else []
        return [self._parse_task_data(item, path, f"GET {path}") for item in items]

    def _prepare_create(self, path: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if not path.startswith("/"):
            raise InvalidInputError(f"create path must start with '/', got {path!r}")
        prepared = dict(body)
        external = prepared.get("external_task_id")
        if external is None or external == "":
            external = uuid.uuid4().hex
        elif not isinstance(external, str):
            raise InvalidInputError(f"external_task_id must be a string, got {type(external).__name__}")
        prepared["external_task_id"] = external
        return external, prepared

    def _create_flow(self, path: str, body: Mapping[str, Any]) -> Flow[Task]:
        """Create a task without ever creating it twice (the state machine in :mod:`.client`)."""
        external, prepared = self._prepare_create(path, body)
        try:
            payload = json.dumps(prepared, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"create body is not JSON-serialisable: {exc}") from None
        submissions = 0
        uncertain: KlingAPIError | None = None
        while True:
            submissions += 1
            outcome = yield from self._attempt("POST", path, body=payload)
            if isinstance(outcome, _Ok):
                try:
                    return parse_task(outcome.data if isinstance(outcome.data, Mapping) else {}, endpoint=path)
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
            may_resubmit = submissions <= self._max_retries
            if kind is Disposition.RETRY and may_resubmit:
                yield _Sleep(delay_for(outcome, submissions, jitter=self._jitter))
                continue
            if uncertain is None:
                raise outcome
            state, task = yield from self._find_created(path, external)
            if state is _Lookup.FOUND:
                assert task is not None
                return task
            if state is _Lookup.ABSENT and kind is Disposition.AMBIGUOUS and may_resubmit:
                logger.warning("kling create %s external_task_id=%s not found; resubmitting", path, external)
                yield _Sleep(delay_for(outcome, submissions, jitter=self._jitter))
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

    def _find_created(self, path: str, external: str) -> Flow[tuple[_Lookup, Task | None]]:
        """Look a maybe-created task up by ``external_task_id`` with bounded attempts and backoff."""
        query_path = self._task_query(path, None, external)
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            yield _Sleep(delay_for(None, attempt, jitter=self._jitter))
            outcome = yield from self._attempt("GET", query_path, task_query=True)
            if isinstance(outcome, _Ok):
                try:
                    task = parse_task(outcome.data if isinstance(outcome.data, Mapping) else {}, endpoint=path)
                except InvalidInputError:
                    continue
                if task.external_task_id not in (None, external):
                    logger.error(
                        "kling lookup of external_task_id=%s returned task %s with external_task_id=%s",
                        external,
                        task.task_id,
                        task.external_task_id,
                    )
                    return _Lookup.UNKNOWN, None
                return _Lookup.FOUND, task
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
                    yield _Notify(on_progress, task)
                if task.is_terminal:
                    return task
            remaining = deadline - self._clock()
            if remaining <= 0:
                which = task_id if task_id is not None else f"external_task_id={external_task_id}"
                state = last.status.value if last else "unknown"
                raise KlingWaitTimeoutError(f"Kling task {which} still {state} after waiting {timeout:g}s", task=last)
            yield _Sleep(min(interval, remaining))
            interval = min(max_poll_interval, interval * 1.5)

    @staticmethod
    def _wait_target(
        task: Task | str | None, external_task_id: str | None, endpoint: str | None
    ) -> tuple[str, str | None, str | None]:
        if isinstance(task, Task):
            return endpoint or task.endpoint or Endpoint.TEXT_TO_VIDEO, task.task_id, None
        return endpoint or Endpoint.TEXT_TO_VIDEO, task, external_task_id

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
