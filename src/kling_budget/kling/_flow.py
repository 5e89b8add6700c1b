"""Operations written once, run blocking or awaited: the sans-I/O flows and the two drivers that run them.

Every operation that talks to Kling (a query, a safe create, a wait, a budget-enforced job, a callback) is a
generator, a *flow*, that yields what it needs done and receives the result:

* :class:`Send`: one HTTP exchange; the driver answers with a :class:`Reply` (never raises for the network);
* :class:`Sleep`: wait that many seconds; :class:`Notify`: call a progress callback with a task;
* :class:`Blocking`: run blocking work (the ledger); ``shield`` runs it even when the caller is cancelled.

A *driver* performs the actions: :class:`SyncDriver` in the calling thread, :class:`AsyncDriver` on the event
loop (blocking work in a worker thread). An exception raised while performing an action is thrown into the
flow, so its ``try``/``except`` sees cancellation and interrupts where they happened.

:class:`operation` turns a flow function into a method of both kinds of class: blocking on a
:class:`SyncDriver`, a coroutine on an :class:`AsyncDriver`. A method is therefore defined once, in a mixin,
and both classes get it with its signature and docstring (httpx's ``auth_flow`` idea, applied to every method).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

import anyio
import anyio.to_thread

from kling_budget.kling.tasks import Task

__all__ = [
    "AsyncDriver",
    "Blocking",
    "Flow",
    "Notify",
    "Reply",
    "Send",
    "Sleep",
    "SyncDriver",
    "operation",
]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")

ProgressCallback = Callable[[Task], object]
"""Called with every polled :class:`Task` while waiting; an async driver also awaits an awaitable result."""


@dataclass(frozen=True, slots=True)
class Send:
    """One HTTP request to Kling (relative ``path``; ``authorization`` is never shown)."""

    method: str
    path: str
    params: Mapping[str, str] | None
    body: bytes | None
    authorization: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        """The per-request headers (a driver adds its own ``User-Agent``); no ``Authorization`` when empty."""
        headers = {"Authorization": self.authorization} if self.authorization else {}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return headers


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back from one :class:`Send`, independent of the HTTP library.

    Attributes:
        status: the HTTP status, ``None`` without a response.
        content: the body (empty without a response).
        failure: why no complete answer arrived (``None`` when one did), already free of secrets.
        sent: with a failure, whether the request may have reached Kling (``False``: it never left).
        elapsed: seconds the exchange took.
        headers: the response headers (case-insensitive when the driver's library makes them so; only
            looked at for a kling-budget gateway's marker).
    """

    status: int | None
    content: bytes
    failure: str | None = None
    sent: bool = True
    elapsed: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Notify:
    """Call ``callback(task)`` (awaited when it returns an awaitable, on an async driver)."""

    callback: ProgressCallback
    task: Task


@dataclass(frozen=True, slots=True)
class Blocking:
    """Run ``fn()``, blocking I/O such as a ledger transaction; ``shield``: even if the caller is cancelled."""

    fn: Callable[[], Any]
    shield: bool = False


Action = Send | Sleep | Notify | Blocking
Flow = Generator[Action, Any, T]


class SyncDriver:
    """Runs flows in the calling thread: subclasses provide :meth:`_exchange` and :meth:`_sleep`."""

    def _exchange(self, send: Send) -> Reply:
        raise NotImplementedError

    def _sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def _drive(self, flow: Flow[T]) -> T:
        """Run ``flow`` to its end and return its result (or raise what it raises)."""
        feedback: Any = None
        error: BaseException | None = None
        try:
            while True:
                action = flow.send(feedback) if error is None else flow.throw(error)
                feedback, error = None, None
                try:
                    if isinstance(action, Send):
                        feedback = self._exchange(action)
                    elif isinstance(action, Sleep):
                        self._sleep(action.seconds)
                    elif isinstance(action, Notify):
                        action.callback(action.task)
                    else:
                        feedback = action.fn()
                except BaseException as exc:
                    error = exc
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()


class AsyncDriver:
    """Runs flows on the event loop: subclasses provide :meth:`_exchange` and :meth:`_sleep`.

    Blocking work runs in a worker thread; shielded work also when the caller is cancelled.
    """

    async def _exchange(self, send: Send) -> Reply:
        raise NotImplementedError

    async def _sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def _drive(self, flow: Flow[T]) -> T:
        """Run ``flow`` to its end and return its result (or raise what it raises)."""
        feedback: Any = None
        error: BaseException | None = None
        try:
            while True:
                action = flow.send(feedback) if error is None else flow.throw(error)
                feedback, error = None, None
                try:
                    feedback = await self._perform(action)
                except BaseException as exc:
                    error = exc
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Send):
            return await self._exchange(action)
        if isinstance(action, Sleep):
            await self._sleep(action.seconds)
            return None
        if isinstance(action, Notify):
            result = action.callback(action.task)
            if inspect.isawaitable(result):
                await result
            return None
        if action.shield:
            with anyio.CancelScope(shield=True):
                return await anyio.to_thread.run_sync(action.fn)
        return await anyio.to_thread.run_sync(action.fn)


class operation(Generic[S, P, T]):
    """A method defined once by its flow function, blocking on a :class:`SyncDriver`, awaitable on an
    :class:`AsyncDriver`.

    ``get_task = operation(_get_task_flow)`` gives ``client.get_task(...)`` the flow's parameters (after
    ``self``) and docstring; it returns the flow's result, or a coroutine of it.
    """

    def __init__(self, flow: Callable[Concatenate[S, P], Flow[T]]) -> None:
        self._flow = flow
        self.__doc__ = flow.__doc__
        self.__wrapped__ = flow

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> operation[S, P, T]: ...

    @overload
    def __get__(self, obj: SyncDriver, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: AsyncDriver, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        flow = cast(Callable[..., Flow[T]], self._flow)
        if isinstance(obj, AsyncDriver):
            driver: AsyncDriver = obj

            async def run_async(*args: Any, **kwargs: Any) -> T:
                return await driver._drive(flow(driver, *args, **kwargs))

            method: Callable[..., Any] = run_async
        else:
            sync_driver = cast(SyncDriver, obj)

            def run_sync(*args: Any, **kwargs: Any) -> T:
                return sync_driver._drive(flow(sync_driver, *args, **kwargs))

            method = run_sync
        functools.update_wrapper(method, flow)
        method.__name__ = getattr(self, "_name", flow.__name__)
        method.__signature__ = _without_self(flow)  # type: ignore[attr-defined]
        return method


def _without_self(fn: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(fn)
    return signature.replace(parameters=list(signature.parameters.values())[1:])
