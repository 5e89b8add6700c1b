"""The budget-enforced clients and their jobs: :class:`BudgetEnforcedClient` / :class:`Job` (blocking) and
:class:`AsyncBudgetEnforcedClient` / :class:`AsyncJob`.

Every method is defined once in :mod:`kling_budget.enforced._core` (the lifecycle) and here in
:class:`_Products` (one line per product); these classes only pick the driver: the blocking client runs the
ledger calls inline, the async one in a worker thread while Kling is awaited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from kling_budget.enforced import products
from kling_budget.enforced._core import (
    DEFAULT_RESERVATION_TTL,
    _EnforcedMethods,
    _Enforcer,
    _JobBase,
    _submitting,
    job_operation,
)
from kling_budget.kling import bodies
from kling_budget.kling._core import _KlingCore
from kling_budget.kling._flow import AsyncDriver, Flow, SyncDriver
from kling_budget.kling.client import AsyncKlingClient, KlingClient
from kling_budget.kling.tasks import Task
from kling_budget.types import Quote

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["AsyncBudgetEnforcedClient", "AsyncJob", "BudgetEnforcedClient", "Job"]

C = TypeVar("C", bound=_KlingCore)
T = TypeVar("T")


class Job(_JobBase, SyncDriver):
    """A Kling job submitted under a budget hold.

    Attributes:
        reservation_id: the ledger reservation, also the ``external_task_id`` sent to Kling.
        task_id: Kling's task id.
        quote: the exact price that was held (``None`` for a job resumed from the ledger).
        path: the create path (``/v1/videos/text2video`` ...).
        task: Kling's task as last seen.
        outcome: how the job was settled, once ``wait()`` or ``refresh()`` saw it finish.
        gateway_held: the job went through a kling-budget gateway, which holds and settles its budget; nothing
            of it is in the local ledger (``reservation_id`` is then the ``external_task_id`` sent, ``reservation``
            and ``outcome`` stay ``None``).
    """

    _REPR_NAME = "Job"
    _owner: BudgetEnforcedClient

    def _drive(self, flow: Flow[T]) -> T:
        return self._owner._drive(flow)


class AsyncJob(_JobBase, AsyncDriver):
    """The async twin of :class:`Job` (same attributes; ``refresh`` and ``wait`` are awaitable)."""

    _REPR_NAME = "AsyncJob"
    _owner: AsyncBudgetEnforcedClient

    async def _drive(self, flow: Flow[T]) -> T:
        return await self._owner._drive(flow)


class _Products(_EnforcedMethods[C]):
    """The product methods, each made once from its body builder or recipe adapter."""

    # The recipe's calls, with its argument names (``model``, positional prompt and duration).
    generate_video = job_operation(_submitting(products.generate_video))
    image_to_video = job_operation(_submitting(products.image_to_video))
    generate_image = job_operation(_submitting(products.generate_image))
    extend_video = job_operation(_submitting(products.extend_video))
    lip_sync = job_operation(_submitting(products.lip_sync))
    effects = job_operation(_submitting(products.effects))
    virtual_try_on = job_operation(_submitting(products.virtual_try_on))
    # Every create endpoint with Kling's field names, exactly as on KlingClient.
    create_text_to_video = job_operation(_submitting(bodies.text_to_video))
    create_image_to_video = job_operation(_submitting(bodies.image_to_video))
    create_multi_image_to_video = job_operation(_submitting(bodies.multi_image_to_video))
    create_video_extend = job_operation(_submitting(bodies.video_extend))
    create_lip_sync = job_operation(_submitting(bodies.lip_sync))
    create_video_effects = job_operation(_submitting(bodies.video_effects))
    create_image_generation = job_operation(_submitting(bodies.image_generation))
    create_virtual_try_on = job_operation(_submitting(bodies.virtual_try_on))
    create_video_from_text = job_operation(_submitting(bodies.video_from_text))
    create_video_from_image = job_operation(_submitting(bodies.video_from_image))
    create_omni_video = job_operation(_submitting(bodies.omni_video))
    create_motion_control = job_operation(_submitting(bodies.motion_control))

    _client_class: ClassVar[Callable[..., Any]]

    def __init__(
        self,
        tracker: CostTracker,
        *,
        client: C | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key_name: str | None = None,
        tags: Iterable[str] = (),
        callback_url: str | None = None,
        reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL,
        gateway: bool | None = None,
        **client_options: Any,
    ) -> None:
        self._attach(client, client_options, self._client_class)
        self._gateway = gateway
        self._enforcer = _Enforcer(
            tracker,
            project_id=project_id,
            user_id=user_id,
            api_key_name=api_key_name,
            tags=tags,
            callback_url=callback_url,
            reservation_ttl=reservation_ttl,
        )


class BudgetEnforcedClient(_Products[KlingClient], SyncDriver):
    """A blocking Kling client that reserves every job's exact price before sending it.

    Args:
        tracker: the :class:`~kling_budget.tracker.CostTracker` whose budgets and ledger are enforced.
        client: the :class:`~kling_budget.kling.KlingClient` to send with; by default one is built from
            ``client_options`` (credentials from arguments or ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY`` /
            ``KLING_API_KEY`` / ``KLING_API_BASE``) and closed with this object.
        project_id / user_id / api_key_name / tags: what every job is attributed to (budgets match on them).
        callback_url: sent as ``callback_url`` on every create that has none (see
            :class:`~kling_budget.enforced.CallbackHandler`).
        reservation_ttl: a hold never marked submitted (the process died before sending) is released after
            this long by ``kling-budget reconcile``; ``None`` keeps it until released by hand.
        gateway: whether the base URL is a kling-budget gateway that budgets the jobs itself. ``None`` (the
            default) asks once, before the first job, with an unauthenticated ``HEAD /`` (a gateway marks
            every answer with ``X-Kling-Budget-Gateway``); ``True`` never holds locally; ``False`` always does.
            Behind a gateway a job is sent without a local hold (the gateway prices, holds, settles and denies
            with :class:`~kling_budget.errors.GatewayBudgetExceededError`), so no job is booked twice.
        **client_options: passed to :class:`~kling_budget.kling.KlingClient` when ``client`` is not given.

    Methods: the recipe's ``generate_video``, ``image_to_video``, ``generate_image``, ``extend_video``,
    ``lip_sync``, ``effects``, ``virtual_try_on``; every ``create_*`` of :class:`~kling_budget.kling.KlingClient`
    with the same arguments, plus the pricing facts ``input_duration``, ``units`` and ``pricing_hints`` (see
    :meth:`submit`; never sent); ``submit`` for any create path; ``resume``. Each returns a :class:`Job`.

    Raises:
        ConfigurationError: missing or conflicting credentials (before anything is reserved).
    """

    _REPR_NAME = "BudgetEnforcedClient"
    _client_class = KlingClient

    def _drive(self, flow: Flow[T]) -> T:
        return self.client._drive(flow)

    def _new_job(
        self, path: str, reservation_id: str, quote: Quote | None, task: Task, gateway_held: bool = False
    ) -> Job:
        return Job(self, path, reservation_id, quote, task, gateway_held)

    def close(self) -> None:
        """Close the Kling client if this object created it."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncBudgetEnforcedClient(_Products[AsyncKlingClient], AsyncDriver):
    """The async twin of :class:`BudgetEnforcedClient`: same arguments and methods, awaitable, on
    :class:`~kling_budget.kling.AsyncKlingClient`; each returns an :class:`AsyncJob`. Ledger calls run in a
    worker thread."""

    _REPR_NAME = "AsyncBudgetEnforcedClient"
    _client_class = AsyncKlingClient

    async def _drive(self, flow: Flow[T]) -> T:
        return await self.client._drive(flow)

    def _new_job(
        self, path: str, reservation_id: str, quote: Quote | None, task: Task, gateway_held: bool = False
    ) -> AsyncJob:
        return AsyncJob(self, path, reservation_id, quote, task, gateway_held)

    async def aclose(self) -> None:
        """Close the Kling client if this object created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
