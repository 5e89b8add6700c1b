"""``CostTracker``: the Python API, shaped like the widely copied "Kling AI cost controls" recipe.

The recipe's methods keep their names (``set_budget``, ``can_generate``, ``record_usage``, ``get_usage``,
``check_budget``, ``calculate_credits``, ``calculate_cost``) but run on the crash-safe ledger instead of a
JSON file. ``can_generate`` followed by ``record_usage`` is a race by nature (two workers can both be told
"allowed"); the documented path is :meth:`CostTracker.reserve`, which holds the exact price against every
matching budget atomically before the job is sent::

    tracker = CostTracker()                       # SQLite ledger in the user data directory
    tracker.set_budget("marketing", project_id="marketing", period="monthly", limit_units=1000)
    with tracker.reserve(model="kling-v2-6", mode="pro", duration=10, project_id="marketing") as hold:
        hold.mark_submitted()                      # from here on only Kling's answer resolves it
        task = submit_to_kling(external_task_id=hold.id)
        hold.commit(units=task.final_unit_deduction)   # or hold.release() when Kling fails the task

Or let :class:`~kling_budget.kling.BudgetEnforcedClient` do all of it, including Kling's charge.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any

from kling_budget.alerts import AlertDispatcher, AlertSink, LogSink
from kling_budget.budgets import DEFAULT_THRESHOLDS, Budget, BudgetStatus, Scope, check_admission
from kling_budget.errors import BudgetExceededError, ConfigurationError, InvalidInputError
from kling_budget.ledger import (
    Connection,
    Ledger,
    Pack,
    ReservationInfo,
    ReservationState,
    UsageRow,
    VerifyReport,
    open_backend,
)
from kling_budget.money import Number, milli_to_units, nano_to_usd, units_to_milli, usd_to_nano
from kling_budget.pricing import PriceTable
from kling_budget.pricing.overlay import OVERLAY_ENV
from kling_budget.types import Attribution, Denial, PackType, Quote
from kling_budget.windows import Period, report_range, window_at

__all__ = ["BudgetPeriod", "CostTracker", "Reservation", "UsageRecord"]

BudgetPeriod = Period
"""The recipe's name for a budget period: ``BudgetPeriod.DAILY``, ``WEEKLY``, ``MONTHLY``, ``TOTAL``."""

PRICES_ENV = "KLING_BUDGET_PRICES"
logger = logging.getLogger("kling_budget")


def _amount_milli(value: Number, what: str) -> int:
    """Units as exact milli-units; negative amounts are refused with a message in units."""
    milli = units_to_milli(value, what)
    if milli < 0:
        raise InvalidInputError(f"{what} cannot be negative, got {value!r}")
    return milli


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One job's usage, with the recipe's fields: ``credits_used`` are Kling units (exact ``Decimal``)."""

    timestamp: datetime
    job_id: str
    credits_used: Decimal
    cost_usd: Decimal
    model: str
    duration: int | None = None
    user_id: str | None = None
    project_id: str | None = None
    status: str = "committed"
    mode: str | None = None
    over_budget: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def credits(self) -> Decimal:
        """Same as ``credits_used``."""
        return self.credits_used

    @classmethod
    def from_info(cls, info: ReservationInfo) -> UsageRecord:
        """Build from a ledger reservation."""
        committed = info.state is ReservationState.COMMITTED
        units = info.actual_milli if committed and info.actual_milli is not None else info.units_milli
        usd = info.actual_nano if committed and info.actual_nano is not None else info.usd_nano
        params = info.detail.get("params", {}) if isinstance(info.detail.get("params"), dict) else {}
        duration = params.get("duration")
        return cls(
            timestamp=info.reserved_at,
            job_id=info.id,
            credits_used=milli_to_units(units),
            cost_usd=nano_to_usd(usd),
            model=info.attribution.model,
            duration=int(duration) if isinstance(duration, int | str) and str(duration).isdigit() else None,
            user_id=info.attribution.user or None,
            project_id=info.attribution.project or None,
            status=info.state.value,
            mode=params.get("mode") if isinstance(params.get("mode"), str) else None,
            over_budget=info.over_budget,
            details=info.detail,
        )


class Reservation:
    """A hold on budget for one job. Resolve it exactly once: :meth:`commit` or :meth:`release`.

    As a context manager it commits the held amount when the block succeeds and releases the hold when the
    block raises — unless the reservation was marked submitted (the job may have reached Kling), in which
    case it is left open for ``kling-budget reconcile`` to settle from Kling's own answer.
    """

    def __init__(self, tracker: CostTracker, info: ReservationInfo, quote: Quote | None) -> None:
        self._tracker = tracker
        self.info = info
        self.quote = quote

    @property
    def id(self) -> str:
        """The reservation id: the idempotency key, and the ``external_task_id`` to send to Kling."""
        return self.info.id

    @property
    def units(self) -> Decimal:
        """Units held."""
        return milli_to_units(self.info.units_milli)

    @property
    def usd(self) -> Decimal:
        """Dollars held (at the rate of the packs the units are drawn from)."""
        return nano_to_usd(self.info.usd_nano)

    @property
    def state(self) -> ReservationState:
        """Current state as last seen."""
        return self.info.state

    def mark_submitted(self, task_id: str | None = None) -> Reservation:
        """Record that the job is being (or was) sent to Kling; from now on only Kling's answer resolves it."""
        self.info = self._tracker.ledger.mark_submitted(self.id, task_id=task_id)
        return self

    def commit(self, units: Number | None = None) -> UsageRecord:
        """Settle with what Kling charged (default: the held amount); above the hold is overage."""
        milli = None if units is None else _amount_milli(units, "charged units")
        self.info = self._tracker._dispatched(self._tracker.ledger.commit(self.id, units_milli=milli))
        return UsageRecord.from_info(self.info)

    def release(self, reason: str = "") -> None:
        """Return the hold to the budgets (the job failed or was never sent)."""
        self.info = self._tracker.ledger.release(self.id, reason=reason)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        current = self._tracker.ledger.get_reservation(self.id)
        if not current.state.is_open:
            self.info = current
            return
        if exc_type is None:
            self.commit()
        elif current.state is ReservationState.HELD:
            self.release(reason=f"{exc_type.__name__} before submission")
        else:
            logger.warning(
                "reservation %s was submitted and the block raised %s; left open for reconcile",
                self.id,
                exc_type.__name__,
            )

    def __repr__(self) -> str:
        return f"Reservation(id={self.id!r}, units={self.units}, usd={self.usd}, state={self.state.value!r})"


def _price_detail(quote: Quote) -> dict[str, Any]:
    """What a reservation records about how it was priced."""
    detail: dict[str, Any] = {"params": dict(quote.params), "price_version": quote.price_version}
    if quote.price_overlay:
        detail["price_overlay"] = quote.price_overlay
    return detail


def _price_table(
    prices: PriceTable | str | os.PathLike[str] | None, overlay: str | os.PathLike[str] | None
) -> PriceTable:
    """The table a tracker prices with: ``prices`` (or the environment's), with the overlay on top."""
    if isinstance(prices, PriceTable):
        table = prices
    else:
        path = prices if prices is not None else os.environ.get(PRICES_ENV)
        table = PriceTable.load(path) if path else PriceTable.default()
        if overlay is None:
            overlay = os.environ.get(OVERLAY_ENV) or None
    return table if overlay is None else table.with_overlay(overlay)


class CostTracker:
    """Prices, budgets and a spend ledger behind one object.

    Args:
        db: ledger URL or file path (``sqlite:///...``, ``postgresql://...``); default ``$KLING_BUDGET_DB``
            or a SQLite file in the user data directory.
        prices: a :class:`PriceTable` or a path to your own price file; default ``$KLING_BUDGET_PRICES``
            or the packaged table.
        prices_overlay: a price overlay file that adds or overrides models on top of ``prices`` (see
            :mod:`kling_budget.pricing.overlay`); default ``$KLING_BUDGET_PRICES_OVERLAY`` unless ``prices``
            is a ready :class:`PriceTable`.
        clock: returns "now" (inject a fixed clock in tests).
        alert_sinks: where alerts go as they happen (default: the ``kling_budget.alerts`` logger), besides
            the sinks configured in the ledger (``kling-budget alerts add``). An alert no sink wants goes
            to that logger at WARNING.
        deliver_pending_alerts: on opening, deliver in the background the alerts another process left
            undelivered (it crashed or exited first); one read of the outbox.

    Alerts are delivered off the enforcement path; :meth:`close` (or the ``with`` block's end) waits a few
    seconds for the ones still queued, and so does the exit of a script that never calls it (see
    :class:`~kling_budget.alerts.AlertDispatcher`).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        prices: PriceTable | str | os.PathLike[str] | None = None,
        prices_overlay: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        alert_sinks: Sequence[AlertSink] | None = None,
        deliver_pending_alerts: bool = True,
    ) -> None:
        self.prices = _price_table(prices, prices_overlay)
        list_prices = {pt: usd_to_nano(self.prices.list_usd_per_unit(pt)) for pt in PackType}
        self._clock = clock or (lambda: datetime.now(UTC))
        self.ledger = Ledger(open_backend(db), list_prices=list_prices, clock=self._clock)
        self.alerts = AlertDispatcher(self.ledger, list(alert_sinks) if alert_sinks is not None else [LogSink()])
        if deliver_pending_alerts:
            self.alerts.deliver_pending()

    def __enter__(self) -> CostTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish delivering queued alerts (bounded wait; the rest stay in the outbox) and close the ledger."""
        self.alerts.close()
        self.ledger.close()

    def __repr__(self) -> str:
        return f"CostTracker(db={self.ledger.backend.display_url!r}, prices={self.prices.version!r})"

    # ------------------------------------------------------------------ pricing

    def quote(
        self,
        model: str,
        *,
        product: str = "video",
        mode: str | None = None,
        duration: int | str | Decimal | None = None,
        resolution: str | None = None,
        sound: bool | str = False,
        voice_control: bool = False,
        video_input: bool = False,
        image_input: bool = False,
        n: int = 1,
    ) -> Quote:
        """The exact price of one request, at list price (see ``PriceTable.quote``)."""
        return self.prices.quote(
            model,
            product=product,
            mode=mode,
            duration=duration,
            resolution=resolution,
            sound=sound,
            voice_control=voice_control,
            video_input=video_input,
            image_input=image_input,
            n=n,
        )

    def calculate_credits(
        self, duration: int | str | None = 5, model: str = "kling-v1", mode: str | None = None, **options: Any
    ) -> Decimal:
        """Kling units (the recipe's "credits") one request costs, exactly: ``calculate_credits(10, "kling-v2-6",
        "pro", sound=True)`` → ``Decimal("10")``. The recipe's argument order: duration, then model."""
        return self.quote(model, duration=duration, mode=mode, **options).units

    def calculate_cost(
        self, credits: Number | float, tier_credits: int | None = None, *, pack_type: PackType | str = PackType.VIDEO
    ) -> Decimal:
        """Dollars that ``credits`` units cost if a job drew them now: exactly what a reservation would hold.

        With purchased packs registered (``add_pack``), units are drawn from the active packs, soonest expiry
        first, at the price you paid, and any rest at the list price; without packs, the list price of the
        pack type. ``tier_credits`` is accepted for the recipe's signature and ignored: its invented tiers are
        replaced by what you actually paid.
        """
        milli = _amount_milli(repr(credits) if isinstance(credits, float) else credits, "credits")
        return nano_to_usd(self.ledger.usd_nano_for(PackType(str(pack_type)), milli, now=self._clock()))

    # ------------------------------------------------------------------ budgets

    def set_budget(
        self,
        name: str | Budget,
        limit_units: Number | Budget | None = None,
        *,
        limit_usd: Number | None = None,
        limit_credits: Number | None = None,
        period: Period | str = Period.MONTHLY,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        hard: bool = True,
        alert_at: str | Sequence[int | str] = DEFAULT_THRESHOLDS,
        timezone: str = "UTC",
        week_start: str | int = 0,
        unit_pack: PackType | str = PackType.VIDEO,
    ) -> Budget:
        """Create or replace a budget. ``limit_credits`` is the recipe's name for ``limit_units``.

        Examples::

            tracker.set_budget("marketing", project_id="marketing", limit_units=1000, limit_usd=150)
            tracker.set_budget("marketing", Budget(period=BudgetPeriod.MONTHLY, limit_credits=10000,
                                                   limit_usd=600.00, alert_threshold=0.8))  # the recipe's form

        In the recipe's form the key names the budget and, when the budget has no scope, is the project it
        covers (as the recipe filtered usage by ``project_id == key``).
        """
        if isinstance(name, Budget):
            return self.ledger.set_budget(name)
        if isinstance(limit_units, Budget):
            spec = limit_units
            scope = spec.scope if spec.scope != Scope() else Scope(project=name)
            return self.ledger.set_budget(
                Budget.create(
                    name,
                    period=spec.period,
                    limit_units=None if spec.limit_units_milli is None else milli_to_units(spec.limit_units_milli),
                    limit_usd=None if spec.limit_usd_nano is None else nano_to_usd(spec.limit_usd_nano),
                    project=scope.project,
                    user=scope.user,
                    api_key=scope.api_key,
                    model=scope.model,
                    tag=scope.tag,
                    hard=spec.hard,
                    alert_at=spec.thresholds,
                    timezone=spec.timezone,
                    week_start=spec.week_start,
                    unit_pack=spec.unit_pack,
                )
            )
        units = limit_units if limit_units is not None else limit_credits
        if model:
            model = self.prices.canonical_model(model)
        budget = Budget.create(
            name,
            period=period,
            limit_units=units,
            limit_usd=limit_usd,
            project=project_id,
            user=user_id,
            api_key=api_key,
            model=model,
            tag=tag,
            hard=hard,
            alert_at=alert_at,
            timezone=timezone,
            week_start=week_start,
            unit_pack=unit_pack,
        )
        return self.ledger.set_budget(budget)

    def get_budget(self, name: str) -> Budget:
        """The budget called ``name``."""
        return self.ledger.get_budget(name)

    def list_budgets(self) -> list[Budget]:
        """Every budget."""
        return self.ledger.list_budgets()

    def delete_budget(self, name: str) -> None:
        """Delete a budget (history stays in the ledger)."""
        self.ledger.delete_budget(name)

    def budget_status(self, name: str) -> BudgetStatus:
        """Where one budget stands now."""
        return self.ledger.budget_status(name)

    def check_budget(self, key: str) -> dict[str, Any]:
        """The recipe's budget check for the budget named ``key``: ``{"has_budget": False}`` when there is none.

        Keys as in the recipe (``budget``, ``usage``, ``credits_remaining``, ``usd_remaining``,
        ``credits_percent``, ``cost_percent``, ``over_budget``, ``alert_triggered``), with exact ``Decimal``
        amounts, plus ``held_credits`` (reserved by running jobs, already counted as used), ``window_start``
        and ``resets_at``. ``usd_remaining`` and the percentages are ``None`` for a limit the budget lacks.
        """
        try:
            status = self.ledger.budget_status(key)
        except ConfigurationError:
            return {"has_budget": False}
        budget, counters = status.budget, status.counters
        used = milli_to_units(counters.used_milli)
        used_usd = nano_to_usd(counters.used_nano)

        def percent(value: int, limit: int | None) -> Decimal | None:
            return None if not limit else (Decimal(value) * 100 / Decimal(limit)).quantize(Decimal("0.1"))

        credits_percent = percent(counters.used_milli, budget.limit_units_milli)
        cost_percent = percent(counters.used_nano, budget.limit_usd_nano)
        first_threshold = min(budget.thresholds) if budget.thresholds else 100
        return {
            "has_budget": True,
            "budget": {
                "period": budget.period.value,
                "limit_credits": None if budget.limit_units_milli is None else milli_to_units(budget.limit_units_milli),
                "limit_usd": None if budget.limit_usd_nano is None else nano_to_usd(budget.limit_usd_nano),
                "scope": budget.scope.describe(),
                "hard": budget.hard,
            },
            "usage": {
                "period": budget.period.value,
                "start": status.window.start.isoformat(),
                "end": status.as_of.isoformat(),
                "total_credits": used,
                "total_cost_usd": used_usd,
                "held_credits": milli_to_units(counters.held_milli),
            },
            "credits_remaining": None
            if status.remaining_units_milli is None
            else milli_to_units(status.remaining_units_milli),
            "usd_remaining": None if status.remaining_usd_nano is None else nano_to_usd(status.remaining_usd_nano),
            "credits_percent": credits_percent,
            "cost_percent": cost_percent,
            "over_budget": status.exhausted,
            "alert_triggered": status.percent >= first_threshold,
            "window_start": status.window.start.isoformat(),
            "resets_at": status.window.end.isoformat() if status.window.end else None,
        }

    # ------------------------------------------------------------------ checking and reserving

    def can_generate(
        self,
        project_id: str | None = None,
        duration: int | str = 5,
        model: str = "kling-v1",
        *,
        mode: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
        **options: Any,
    ) -> dict[str, Any]:
        """Would this request fit every hard budget of project ``project_id`` (the recipe's key) right now?

        Advisory only: it reserves nothing, and between this check and the job another worker can spend the
        room — use :meth:`reserve` to be sure. Returns the recipe's keys (``allowed``, ``credits_needed``,
        ``credits_remaining``, ``cost_needed``, ``cost_remaining``, ``reason``) plus ``denial``.
        """
        quote = self.quote(model, duration=duration, mode=mode, **options)
        return self.check_quote(quote, project_id=project_id, user_id=user_id, api_key=api_key, tags=tags)

    def check_quote(
        self,
        quote: Quote,
        *,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """:meth:`can_generate` for an already computed quote."""
        attribution = Attribution(
            project=project_id or "",
            user=user_id or "",
            api_key=api_key or "",
            model=quote.model,
            tags=tuple(tags),
        )
        now = self._clock()
        denial: Denial | None = None
        remaining: int | None = None
        remaining_usd: int | None = None
        statuses = self.ledger.matching_statuses(attribution, now=now)
        # The dollars a reservation would hold: drawn from the packs you bought, not the list price.
        usd_nano = self.ledger.usd_nano_for(quote.pack_type, quote.units_milli, now=now)
        for status in statuses:
            budget = status.budget
            units_delta = budget.units_delta(quote.pack_type, quote.units_milli)
            denial = denial or check_admission(budget, status.window, status.counters, units_delta, usd_nano)
            if status.remaining_units_milli is not None and budget.unit_pack is quote.pack_type:
                remaining = min(status.remaining_units_milli, remaining if remaining is not None else 2**62)
            if status.remaining_usd_nano is not None:
                remaining_usd = min(status.remaining_usd_nano, remaining_usd if remaining_usd is not None else 2**62)
        reason = "No budget set" if not statuses else (denial.message() if denial else None)
        return {
            "allowed": denial is None,
            "credits_needed": quote.units,
            "credits_remaining": None if remaining is None else milli_to_units(remaining),
            "cost_needed": nano_to_usd(usd_nano),
            "cost_remaining": None if remaining_usd is None else nano_to_usd(remaining_usd),
            "reason": reason,
            "denial": denial.to_dict() if denial else None,
        }

    def reserve(
        self,
        model: str = "kling-v1",
        *,
        mode: str | None = None,
        duration: int | str | Decimal | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
        product: str = "video",
        resolution: str | None = None,
        sound: bool | str = False,
        voice_control: bool = False,
        video_input: bool = False,
        image_input: bool = False,
        n: int = 1,
        units: Number | None = None,
        key: str | None = None,
        ttl: timedelta | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Hold the exact price of a request against every matching budget, atomically.

        ``key`` (default: a new UUID) makes retries safe: the same key returns the same reservation or the
        same denial. ``units`` overrides the quote (e.g. a product priced outside the table).

        Raises:
            BudgetExceededError: a hard budget has no room; ``.denial`` says which, and when it resets.
            PricingError: the request cannot be priced (the message names the accepted values).
            LedgerUnavailableError: the ledger cannot be reached; do not send the job.
        """
        quote = self.quote(
            model,
            product=product,
            mode=mode,
            duration=duration,
            resolution=resolution,
            sound=sound,
            voice_control=voice_control,
            video_input=video_input,
            image_input=image_input,
            n=n,
        )
        return self.reserve_quote(
            quote,
            project_id=project_id,
            user_id=user_id,
            api_key=api_key,
            tags=tags,
            units=units,
            key=key,
            ttl=ttl,
            detail=detail,
        )

    def reserve_quote(
        self,
        quote: Quote,
        *,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
        units: Number | None = None,
        key: str | None = None,
        ttl: timedelta | None = None,
        detail: Mapping[str, Any] | None = None,
        submitted: bool = False,
        also: Callable[[Connection], None] | None = None,
    ) -> Reservation:
        """Reserve an already computed quote (used by the Kling client and the gateway).

        ``submitted`` and ``also`` are passed to :meth:`Ledger.reserve` (reserve and mark submitted in one
        transaction; extra writes in the same transaction)."""
        milli = quote.units_milli if units is None else _amount_milli(units, "units")
        attribution = Attribution(
            project=project_id or "",
            user=user_id or "",
            api_key=api_key or "",
            model=quote.model,
            tags=tuple(tags),
        )
        try:
            info = self.ledger.reserve(
                uuid.uuid4().hex if key is None else key,
                units_milli=milli,
                pack_type=quote.pack_type,
                attribution=attribution,
                product=quote.product,
                detail={**_price_detail(quote), **(detail or {})},
                ttl=ttl,
                submitted=submitted,
                also=also,
            )
        except BudgetExceededError as exc:
            if exc.alerts:
                self.alerts.deliver(exc.alerts)
            raise
        return Reservation(self, self._dispatched(info), quote)

    def reservation(self, key: str) -> Reservation:
        """An existing reservation by id (e.g. to commit it from another process)."""
        return Reservation(self, self.ledger.get_reservation(key), None)

    # ------------------------------------------------------------------ recording

    def record_usage(
        self,
        job_id: str,
        duration: int | str | None = 5,
        model: str = "kling-v1",
        user_id: str | None = None,
        project_id: str | None = None,
        *,
        mode: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
        credits: Number | None = None,
        product: str = "video",
        **options: Any,
    ) -> UsageRecord:
        """Record a job that already ran (idempotent on ``job_id``). Always recorded — the money is spent —
        and flagged ``over_budget`` (with an alert) when it pushed a budget past its limit.

        The positional order is the recipe's: ``record_usage(job_id, duration, model, user_id, project_id)``.
        ``credits`` overrides the price from the table with what Kling actually charged."""
        quote = self.quote(model, product=product, mode=mode, duration=duration, **options)
        info = self.record_quote(
            quote, job_id, project_id=project_id, user_id=user_id, api_key=api_key, tags=tags, credits=credits
        )
        return UsageRecord.from_info(info)

    def record_quote(
        self,
        quote: Quote,
        job_id: str,
        *,
        project_id: str | None = None,
        user_id: str | None = None,
        api_key: str | None = None,
        tags: Iterable[str] = (),
        credits: Number | None = None,
    ) -> ReservationInfo:
        """:meth:`record_usage` for an already computed quote (used by ``kling-budget record``).

        Returns the ledger's view of the job: ``.over_budget``, and ``.replayed`` when ``job_id`` was
        already recorded with the same request."""
        milli = quote.units_milli if credits is None else _amount_milli(credits, "charged units")
        info = self.ledger.record(
            job_id,
            units_milli=milli,
            pack_type=quote.pack_type,
            attribution=Attribution(
                project=project_id or "",
                user=user_id or "",
                api_key=api_key or "",
                model=quote.model,
                tags=tuple(tags),
            ),
            product=quote.product,
            detail=_price_detail(quote),
        )
        return self._dispatched(info)

    def get_usage(
        self,
        period: Period | str = Period.MONTHLY,
        key: str | None = None,
        key_type: str = "project",
        *,
        timezone: str = "UTC",
    ) -> dict[str, Any]:
        """The recipe's usage summary for the current day, week, month (or all time) of one project or user.

        Returns ``{"period", "start", "end", "total_credits", "total_cost_usd", "record_count"}`` with exact
        ``Decimal`` amounts, plus ``held_credits``/``held_usd`` for jobs still running. ``key_type`` is
        ``"project"`` or ``"user"``. For grouped reports use :meth:`usage`.
        """
        if key_type not in ("project", "user"):
            raise ConfigurationError(f"key_type must be 'project' or 'user', got {key_type!r}")
        kind = Period.parse(period)
        now = self._clock()
        window = window_at(kind, now, timezone)
        rows = self.ledger.usage(
            start=window.start,
            end=now + timedelta(microseconds=1),
            group_by=(),
            timezone=timezone,
            filters={key_type: key} if key else None,
        )
        total = rows[0] if rows else UsageRow({}, 0, 0, 0, 0, 0)
        return {
            "period": kind.value,
            "start": window.start.isoformat(),
            "end": now.isoformat(),
            "total_credits": milli_to_units(total.committed_milli + total.held_milli),
            "total_cost_usd": nano_to_usd(total.committed_nano + total.held_nano),
            "record_count": total.jobs,
            "held_credits": milli_to_units(total.held_milli),
            "held_usd": nano_to_usd(total.held_nano),
        }

    def usage(
        self,
        *,
        period: str = "month",
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: Sequence[str] = ("project",),
        project_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        timezone: str = "UTC",
    ) -> list[UsageRow]:
        """Committed and held spend grouped by project, user, api_key, model, pack_type, tag, hour, day, week
        or month, over ``period`` (today, week, month, last-Nd) or ``[start, end)``."""
        now = self._clock()
        if start is None or end is None:
            low, high = report_range(period, now, timezone)
            start, end = start or low, end or high
        filters = {
            k: v
            for k, v in (
                ("project", project_id),
                ("user", user_id),
                ("model", self.prices.canonical_model(model) if model else None),
                ("tag", tag),
            )
            if v
        }
        return self.ledger.usage(start=start, end=end, group_by=group_by, timezone=timezone, filters=filters)

    def usage_record(self, job_id: str) -> UsageRecord:
        """One job's usage by id."""
        return UsageRecord.from_info(self.ledger.get_reservation(job_id))

    # ------------------------------------------------------------------ packs and maintenance

    def add_pack(
        self,
        name: str,
        *,
        units: Number,
        price_usd: Number,
        pack_type: PackType | str = PackType.VIDEO,
        starts_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> Pack:
        """Register a purchased pack; jobs draw from packs soonest-expiring first, at the price you paid."""
        try:
            pack_kind = PackType(str(pack_type))
        except ValueError:
            accepted = ", ".join(p.value for p in PackType)
            raise ConfigurationError(f"unknown pack type {pack_type!r}; accepted: {accepted}") from None
        return self.ledger.add_pack(
            Pack(
                name=name,
                pack_type=pack_kind,
                units_milli=units_to_milli(units, "pack units"),
                price_nano=usd_to_nano(price_usd, "pack price"),
                starts_at=starts_at or self._clock(),
                expires_at=expires_at,
            )
        )

    def verify(self) -> VerifyReport:
        """Re-derive every counter from the ledger's entries."""
        return self.ledger.verify()

    def _dispatched(self, info: ReservationInfo) -> ReservationInfo:
        if info.alerts:
            self.alerts.deliver(info.alerts)
        return info
