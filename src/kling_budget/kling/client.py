"""Kling API clients on httpx: :class:`KlingClient` (blocking) and :class:`AsyncKlingClient`.

Every method is defined once, in :class:`_KlingMethods`, as a flow of the protocol core
(:mod:`kling_budget.kling._core`); each create method is made from its body builder in
:mod:`kling_budget.kling.bodies`. The two classes only differ in how a flow is driven (:mod:`._flow`):
``httpx.Client`` and a blocking sleep, or ``httpx.AsyncClient`` and an awaitable sleep.

Errors come from Kling's business ``code`` (see :mod:`kling_budget.errors`); anything without a usable
Kling answer (timeout, reset, truncated or non-JSON body) is a
:class:`~kling_budget.errors.KlingTransportError`. Queries retry throttling (1302, 1303), server errors
(5000-5002) and transport failures with exponential backoff and full jitter, at most ``max_retries`` times.
An expired token (1004) is re-signed and the request re-sent once.

Creating a task, never twice
----------------------------
Every create carries an ``external_task_id`` (the caller's, else a fresh ``uuid4().hex``), reused unchanged on
every resubmission, so the task can be found again and Kling's per-account uniqueness of that id backs us up.
One create runs this state machine (``max_retries`` bounds submissions *and* lookups)::

    SUBMIT ──ok──────────────────────────────────────────────────────────▶ return task
      │ definite rejection (1102, 1201, 1301, auth ...) and nothing
      │   was ambiguous before ───────────────────────────────────────────▶ raise it (no task exists)
      │ throttled (1302/1303) or never connected, submissions left ──────▶ backoff, SUBMIT again
      │ ambiguous: 5000-5002, timeout, dropped connection, truncated or
      │   unreadable answer ─────────────────────────────────────────────▶ LOOKUP
      ▼
    LOOKUP by external_task_id (bounded attempts, backoff before each)
      ├─ found ──────────────────────────────────────────────────────────▶ return it (no second create)
      ├─ Kling says "no such task" (1203):
      │     last submission ambiguous, submissions left ──────────────────▶ backoff, SUBMIT again (same id)
      │     last submission definitely rejected ──────────────────────────▶ raise that rejection
      │     last submission ambiguous, no submissions left ───────────────▶ raise KlingAmbiguousCreateError
      └─ still unknown (lookups failed) ─────────────────────────────────▶ raise KlingAmbiguousCreateError

A definite rejection or exhausted throttling *after* an earlier ambiguous submission also goes through
LOOKUP first, since the earlier submission may have created the task (a resubmission rejected as a
duplicate is the typical case). :class:`~kling_budget.errors.KlingAmbiguousCreateError` carries
``external_task_id``: the caller must keep its budget hold and settle it later by querying that id, never
release it on the spot.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self

import anyio
import httpx

from kling_budget.errors import ConfigurationError, InvalidInputError
from kling_budget.kling import bodies
from kling_budget.kling._core import (
    BILLING_BALANCE_PATH,
    BILLING_PACKAGE_PATH,
    BillingPage,
    Endpoint,
    TaskPage,
    _ids,
    _KlingCore,
    _ms,
    resolve_base_url,
)
from kling_budget.kling._flow import AsyncDriver, Flow, ProgressCallback, Reply, Send, SyncDriver, operation
from kling_budget.kling.auth import Auth, resolve_auth
from kling_budget.kling.retry import DEFAULT_MAX_RETRIES
from kling_budget.kling.tasks import ResourcePack, Task

__all__ = ["DEFAULT_TIMEOUT", "AsyncKlingClient", "KlingClient"]

P = ParamSpec("P")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
USER_AGENT = "kling-budget/0.1"

# httpx errors raised before a single byte of the request can have left.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

_CREATE_RETURNS = """
    Returns:
        The created task (normally ``submitted``).

    Raises:
        KlingAPIError: a definite rejection, e.g. :class:`~kling_budget.errors.KlingPackExhaustedError`
            (no task exists).
        KlingAmbiguousCreateError: the task may exist; look it up by the error's ``external_task_id``.
"""


def _creating(builder: Callable[P, bodies.Create]) -> Callable[Concatenate[_KlingCore, P], Flow[Task]]:
    """The flow of a create method made from its body builder (same parameters, same docstring)."""

    def create(self: _KlingCore, /, *args: P.args, **kwargs: P.kwargs) -> Flow[Task]:
        request = builder(*args, **kwargs)
        created = yield from self._create_flow(request.path, request.body)
        return created.created_task

    signature = inspect.signature(builder)
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    create.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()], return_annotation=Task
    )
    create.__doc__ = (builder.__doc__ or "").rstrip() + "\n" + _CREATE_RETURNS
    create.__name__ = create.__qualname__ = builder.__name__
    return create


class _KlingMethods(_KlingCore):
    """Every Kling API method, written once; :class:`KlingClient` runs them blocking, :class:`AsyncKlingClient`
    awaits them."""

    # -- creating tasks -------------------------------------------------------------------------------------

    def _create_task(self, path: str, body: Mapping[str, Any]) -> Flow[Task]:
        """Create a task on any create endpoint, safely (see :mod:`kling_budget.kling.client`).

        Args:
            path: the create path, e.g. ``"/v1/videos/text2video"`` (an :class:`Endpoint`).
            body: the JSON body; ``external_task_id`` is added (uuid4 hex) when absent.

        Returns:
            The created task (normally ``submitted``), with ``endpoint`` set to ``path``.

        Raises:
            KlingAPIError: a definite rejection, e.g. :class:`~kling_budget.errors.KlingPackExhaustedError`
                (no task exists).
            KlingAmbiguousCreateError: the task may exist; look it up by the error's ``external_task_id``.
        """
        created = yield from self._create_flow(path, body)
        return created.created_task

    create_task = operation(_create_task)
    create_text_to_video = operation(_creating(bodies.text_to_video))
    create_image_to_video = operation(_creating(bodies.image_to_video))
    create_multi_image_to_video = operation(_creating(bodies.multi_image_to_video))
    create_video_extend = operation(_creating(bodies.video_extend))
    create_lip_sync = operation(_creating(bodies.lip_sync))
    create_video_effects = operation(_creating(bodies.video_effects))
    create_image_generation = operation(_creating(bodies.image_generation))
    create_virtual_try_on = operation(_creating(bodies.virtual_try_on))
    create_video_from_text = operation(_creating(bodies.video_from_text))
    create_video_from_image = operation(_creating(bodies.video_from_image))
    create_omni_video = operation(_creating(bodies.omni_video))
    create_motion_control = operation(_creating(bodies.motion_control))

    # -- querying -------------------------------------------------------------------------------------------

    def _get_task(
        self,
        task_id: str | None = None,
        *,
        external_task_id: str | None = None,
        endpoint: str = Endpoint.TEXT_TO_VIDEO,
    ) -> Flow[Task]:
        """Query one task by ``task_id`` or by ``external_task_id`` (exactly one).

        Args:
            task_id: Kling's id.
            external_task_id: the id sent on create.
            endpoint: the create path the task was made on (queries are per endpoint in the ``/v1`` design).

        Returns:
            The task as Kling reports it now.

        Raises:
            KlingTaskNotFoundError: Kling has no such task.
            KlingAPIError: any other failure, after retries.
            InvalidInputError: neither or both ids given.
        """
        return self._get_task_flow(endpoint, task_id, external_task_id)

    get_task = operation(_get_task)

    def _list_tasks(
        self, endpoint: str = Endpoint.TEXT_TO_VIDEO, *, page_num: int = 1, page_size: int = 30
    ) -> Flow[list[Task]]:
        """One page of an endpoint's tasks, newest first.

        Args:
            endpoint: the create path to list.
            page_num: page number in ``[1, 1000]``.
            page_size: tasks per page in ``[1, 500]``.

        Returns:
            The tasks on that page.

        Raises:
            KlingAPIError: after retries.
            InvalidInputError: page numbers out of range.
        """
        return self._list_tasks_flow(endpoint, page_num, page_size)

    list_tasks = operation(_list_tasks)

    def _wait(
        self,
        task: Task | str | None = None,
        *,
        external_task_id: str | None = None,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Flow[Task]:
        """Poll a task until it succeeds or fails; the poll interval grows 1.5x per poll up to a cap.

        Args:
            task: a :class:`Task` (its ``task_id`` and ``endpoint`` are used) or a ``task_id``.
            external_task_id: poll by the create-time id instead.
            endpoint: the create path (defaults to the task's, else text-to-video).
            timeout: seconds before giving up.
            poll_interval: first delay between polls, in seconds.
            max_poll_interval: largest delay between polls.
            on_progress: called with every polled task (awaited, if it returns an awaitable, by the async client).

        Returns:
            The task in a terminal status; ``charged_units_milli`` is then final.

        Raises:
            KlingWaitTimeoutError: still running at the deadline (``.task`` is the last state seen).
            KlingAPIError: a non-retryable failure (e.g. the task does not exist).
        """
        task_id: str | None
        if isinstance(task, Task):
            path, task_id, external = endpoint or task.endpoint or Endpoint.TEXT_TO_VIDEO, task.task_id, None
        else:
            path, task_id, external = endpoint or Endpoint.TEXT_TO_VIDEO, task, external_task_id
        return self._wait_flow(
            path,
            task_id,
            external,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            on_progress=on_progress,
        )

    wait = operation(_wait)

    def _get_tasks(
        self, task_ids: str | Sequence[str] | None = None, *, external_task_ids: str | Sequence[str] | None = None
    ) -> Flow[list[Task]]:
        """Query tasks of the 2026 design by id (``GET /tasks``): one kind of id, at most 50.

        Args:
            task_ids: Kling's ids, or
            external_task_ids: the ids sent on create.

        Returns:
            The tasks that exist, in the order asked (ids Kling does not know are left out).

        Raises:
            InvalidInputError: both kinds, neither, or more than 50 ids.
            KlingAPIError: after retries.
        """
        return self._tasks_flow(_ids(task_ids, "task_ids"), _ids(external_task_ids, "external_task_ids"))

    get_tasks = operation(_get_tasks)

    def _find_tasks(
        self,
        *,
        start_time: datetime | int | None = None,
        end_time: datetime | int | None = None,
        status: str | Sequence[str] | None = None,
        product_type: str | Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Flow[TaskPage]:
        """One page of the account's tasks of the 2026 design, newest first (``POST /tasks``).

        Args:
            start_time: range start (aware datetime or Unix ms; Kling's default is 30 days ago).
            end_time: range end (Kling's default is now).
            status: only these statuses (``submitted``, ``processing``, ``succeeded``, ``failed``).
            product_type: only these products (``video``, ``image``, ``try_on``).
            cursor: the ``next_cursor`` of the previous page (it overrides the other arguments).
            limit: tasks per page, 1-500.

        Returns:
            The page; ``next_cursor`` is ``None`` on the last one.

        Raises:
            InvalidInputError: a limit out of range.
            KlingAPIError: after retries.
        """
        return self._find_tasks_flow(
            _list_body(start_time, end_time, cursor, limit, 500, status=status, product_type=product_type)
        )

    find_tasks = operation(_find_tasks)

    # -- account --------------------------------------------------------------------------------------------

    def _get_account_costs(
        self,
        start_time: datetime | int,
        end_time: datetime | int,
        *,
        resource_pack_name: str | None = None,
    ) -> Flow[list[ResourcePack]]:
        """Resource packs and remaining quantities (``GET /account/costs``; free, but keep to 1 QPS).

        Kling's remaining quantities lag up to 12 hours: use this for reconciliation, never as a budget gate.

        Args:
            start_time: range start, an aware datetime or Unix milliseconds.
            end_time: range end.
            resource_pack_name: only this pack.

        Returns:
            The packs, quantities as exact ``Decimal``.

        Raises:
            KlingAPIError: after retries.
        """
        return self._account_costs_flow(start_time, end_time, resource_pack_name)

    get_account_costs = operation(_get_account_costs)

    def _get_billing_package(
        self,
        start_time: datetime | int | None = None,
        end_time: datetime | int | None = None,
        *,
        api_key_name: str | Sequence[str] | None = None,
        product_type: str | Sequence[str] | None = None,
        package_name: str | Sequence[str] | None = None,
        package_id: str | Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 500,
    ) -> Flow[BillingPage]:
        """One page of the per-task resource-pack ledger (``POST /account/billing/package``): every task's units.

        Args:
            start_time: range start (required unless ``cursor`` is given), aware datetime or Unix ms.
            end_time: range end (required unless ``cursor`` is given).
            api_key_name / product_type / package_name / package_id: only these (package name and id are
                exclusive).
            cursor: the ``next_cursor`` of the previous page.
            limit: rows per page, 1-500.

        Raises:
            InvalidInputError: no range and no cursor, a limit out of range, or both package filters.
            KlingAPIError: after retries.
        """
        if package_name is not None and package_id is not None:
            raise InvalidInputError("give package_name or package_id, not both")
        body = _list_body(
            start_time,
            end_time,
            cursor,
            limit,
            500,
            required=True,
            api_key_name=api_key_name,
            product_type=product_type,
            package_name=package_name,
            package_id=package_id,
        )
        return self._billing_flow(BILLING_PACKAGE_PATH, body)

    get_billing_package = operation(_get_billing_package)

    def _get_billing_balance(
        self,
        start_time: datetime | int | None = None,
        end_time: datetime | int | None = None,
        *,
        api_key_name: str | Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 500,
    ) -> Flow[BillingPage]:
        """One page of the per-task cash-balance ledger (``POST /account/billing/balance``): every task's money.

        Args:
            start_time: range start (required unless ``cursor`` is given), aware datetime or Unix ms.
            end_time: range end (required unless ``cursor`` is given).
            api_key_name: only tasks made with these console API keys.
            cursor: the ``next_cursor`` of the previous page.
            limit: rows per page, 1-500.

        Raises:
            InvalidInputError: no range and no cursor, or a limit out of range.
            KlingAPIError: after retries.
        """
        body = _list_body(start_time, end_time, cursor, limit, 500, required=True, api_key_name=api_key_name)
        return self._billing_flow(BILLING_BALANCE_PATH, body)

    get_billing_balance = operation(_get_billing_balance)

    # -- kling-budget gateway -------------------------------------------------------------------------------

    def _detect_gateway(self) -> Flow[bool | None]:
        """Whether ``base_url`` is a kling-budget gateway (it then holds the budgets; see ``behind_gateway``).

        Asks once with an unauthenticated ``HEAD /`` unless an earlier answer already told (a gateway marks
        every answer with ``X-Kling-Budget-Gateway: 1``).

        Returns:
            ``True`` or ``False``; ``None`` when no answer came (the next call asks again).
        """
        return self._detect_gateway_flow()

    detect_gateway = operation(_detect_gateway)


def _list_body(
    start_time: datetime | int | None,
    end_time: datetime | int | None,
    cursor: str | None,
    limit: int,
    max_limit: int,
    *,
    required: bool = False,
    **filters: str | Sequence[str] | None,
) -> dict[str, Any]:
    """The body of a cursor-paged list (``POST /tasks``, the billing ledgers)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_limit:
        raise InvalidInputError(f"limit must be an integer from 1 to {max_limit}, got {limit!r}")
    if cursor:
        return {"cursor": cursor, "limit": limit}
    if required and (start_time is None or end_time is None):
        raise InvalidInputError("give start_time and end_time (or the cursor of a previous page)")
    body: dict[str, Any] = {"limit": limit}
    if start_time is not None:
        body["start_time"] = _ms(start_time, "start_time")
    if end_time is not None:
        body["end_time"] = _ms(end_time, "end_time")
    chosen = [
        {"key": key, "values": [value] if isinstance(value, str) else list(value)}
        for key, value in filters.items()
        if value is not None
    ]
    if chosen:
        body["filters"] = chosen
    return body


def _settings(
    access_key: str | None,
    secret_key: str | None,
    api_key: str | None,
    auth: Auth | None,
    base_url: str | None,
    region: str | None,
) -> tuple[Auth, str]:
    if auth is not None and (access_key or secret_key or api_key):
        raise ConfigurationError("give either auth or access_key/secret_key/api_key, not several")
    resolved = auth if auth is not None else resolve_auth(access_key, secret_key, api_key, os.environ)
    return resolved, resolve_base_url(base_url, region, os.environ)


def _failed(exc: httpx.RequestError, started: float) -> Reply:
    return Reply(
        None, b"", f"{type(exc).__name__}: {exc}", sent=not isinstance(exc, _NOT_SENT), elapsed=_since(started)
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


class KlingClient(_KlingMethods, SyncDriver):
    """Blocking Kling API client.

    Args:
        access_key: access key id for JWT auth (else ``KLING_ACCESS_KEY``).
        secret_key: secret key for JWT auth (else ``KLING_SECRET_KEY``).
        api_key: a console API key sent as a Bearer token instead (else ``KLING_API_KEY``).
        auth: ready credentials (a :class:`~kling_budget.kling.JWTAuth` or
            :class:`~kling_budget.kling.APIKeyAuth`) instead of the three above.
        base_url: API host (else ``KLING_API_BASE``, else the region's host).
        region: ``"global"`` (``api-singapore``, the default), ``"china"`` (``api-beijing``) or ``"legacy"``
            (``api.klingai.com``); exclusive with ``base_url``.
        transport: an ``httpx.BaseTransport`` (e.g. ``httpx.MockTransport``) instead of the network.
        timeout: seconds or an ``httpx.Timeout``.
        max_retries: retries after a failed attempt; also bounds create resubmissions and lookups.
        clock: Unix time in seconds (``time.time``); signs tokens and bounds ``wait()``.
        sleep: blocking sleep (``time.sleep``); tests pass a fake.
        jitter: uniform ``[0, 1)`` source for backoff jitter (``random.random``).

    Raises:
        ConfigurationError: missing or conflicting credentials, an unknown region or a bad URL.

    Example::

        with KlingClient() as kling:
            task = kling.create_text_to_video(prompt="a red fox", model_name="kling-v2-6", duration=5)
            done = kling.wait(task, timeout=900)
            print(done.status, done.charged_units)
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        auth: Auth | None = None,
        base_url: str | None = None,
        region: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        resolved, url = _settings(access_key, secret_key, api_key, auth, base_url, region)
        super().__init__(resolved, url, max_retries=max_retries, clock=clock, jitter=jitter)
        self._sleeper = sleep or time.sleep
        self._http = httpx.Client(
            base_url=self.base_url, transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _exchange(self, send: Send) -> Reply:
        started = time.perf_counter()
        try:
            response = self._http.request(
                send.method, send.path, params=send.params, content=send.body, headers=send.headers()
            )
        except httpx.RequestError as exc:
            return _failed(exc, started)
        return Reply(response.status_code, response.content, elapsed=_since(started), headers=response.headers)

    def _sleep(self, seconds: float) -> None:
        self._sleeper(seconds)


class AsyncKlingClient(_KlingMethods, AsyncDriver):
    """Asynchronous Kling API client; the same methods as :class:`KlingClient`, awaitable.

    Args:
        access_key / secret_key / api_key / auth / base_url / region / timeout / max_retries / clock / jitter:
            as for :class:`KlingClient`.
        transport: an ``httpx.AsyncBaseTransport`` instead of the network.
        sleep: awaitable sleep (``anyio.sleep``); tests pass a fake.

    Raises:
        ConfigurationError: missing or conflicting credentials, an unknown region or a bad URL.
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        auth: Auth | None = None,
        base_url: str | None = None,
        region: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        resolved, url = _settings(access_key, secret_key, api_key, auth, base_url, region)
        super().__init__(resolved, url, max_retries=max_retries, clock=clock, jitter=jitter)
        self._sleeper = sleep or anyio.sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def close(self) -> None:
        """Close the connection pool (same as :meth:`aclose`)."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _exchange(self, send: Send) -> Reply:
        started = time.perf_counter()
        try:
            response = await self._http.request(
                send.method, send.path, params=send.params, content=send.body, headers=send.headers()
            )
        except httpx.RequestError as exc:
            return _failed(exc, started)
        return Reply(response.status_code, response.content, elapsed=_since(started), headers=response.headers)

    async def _sleep(self, seconds: float) -> None:
        await self._sleeper(seconds)
