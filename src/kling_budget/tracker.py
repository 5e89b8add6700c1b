"""``CostTracker``: the Python API, shaped like the widely copied "Kling AI cost controls" recipe.

The recipe's methods keep their names (``set_budget``, ``can_generate``, ``record_usage``, ``get_usage``,
``check_budget``, ``calculate_credits``, ``calculate_cost``) but run on the crash-safe ledger instead of a
JSON file. ``can_generate`` followed by ``record_usage`` is a race by nature (two workers can both be told
"allowed"); the documented path is :meth:`CostTracker.reserve`, which holds the exact price against every
matching budget atomically before the job is sent::

    tracker = CostTracker()                       # SQLite ledger in the user data directory
    tracker.set_budget("marketing", project_id="marketing", period="monthly", limit_units=1000)
    with tracker.reserve(model="kling-v2-6", mode="pro", duration=10, project_id="marketing") as hold:
        submit_to_kling(external_task_id=hold.id)  # commit on success, release on exception
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
from kling_budget.budgets import DEFAULT_THRESHOLDS, Budget, BudgetStatus, check_admission
from kling_budget.errors import ConfigurationError, InvalidInputError
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
from kling_budget.ledger.queries import period_bounds
from kling_budget.money import Number, milli_to_units, nano_to_usd, units_to_milli, usd_to_nano
from kling_budget.pricing import PriceTable
from kling_budget.types import Attribution, Denial, PackType, Quote
from kling_budget.windows import Period

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
    """One job's usage, as the recipe's ``UsageRecord`` (credits = Kling units)."""

    job_id: str
    project_id: str
    user_id: str
    model: str
    credits: Decimal
    cost_usd: Decimal
    timestamp: datetime
    status: str
    duration: int | None = None
    mode: str | None = None
    over_budget: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: ReservationInfo) -> UsageRecord:
        """Build from a ledger reservation."""
        committed = info.state is ReservationState.COMMITTED
        units = info.actual_milli if committed and info.actual_milli is not None else info.units_milli
        usd = info.actual_nano if committed and info.actual_nano is not None else info.usd_nano
        params = info.detail.get("params", {}) if isinstance(info.detail.get("params"), dict) else {}
        duration = params.get("duration")
        return cls(
            job_id=info.id,
            project_id=info.attribution.project,
            user_id=info.attribution.user,
            model=info.attribution.model,
            credits=milli_to_units(units),
            cost_usd=nano_to_usd(usd),
            timestamp=info.reserved_at,
            status=info.state.value,
            duration=int(duration) if isinstance(duration, int | str) and str(duration).isdigit() else None,
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


class CostTracker:
    """Prices, budgets and a spend ledger behind one object.

    Args:
        db: ledger URL or file path (``sqlite:///...``, ``postgresql://...``); default ``$KLING_BUDGET_DB``
            or a SQLite file in the user data directory.
        prices: a :class:`PriceTable` or a path to your own price file; default ``$KLING_BUDGET_PRICES``
            or the packaged table.
        clock: returns "now" (inject a fixed clock in tests).
        alert_sinks: where alerts go as they happen (default: the ``kling_budget.alerts`` logger).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        prices: PriceTable | str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        alert_sinks: Sequence[AlertSink] | None = None,
    ) -> None:
        if isinstance(prices, PriceTable):
            self.prices = prices
        else:
            path = prices if prices is not None else os.environ.get(PRICES_ENV)
            self.prices = PriceTable.load(path) if path else PriceTable.default()
        list_prices = {pt: usd_to_nano(self.prices.list_usd_per_unit(pt)) for pt in PackType}
        self._clock = clock or (lambda: datetime.now(UTC))
        self.ledger = Ledger(open_backend(db), list_prices=list_prices, clock=self._clock)
        self.alerts = AlertDispatcher(self.ledger, list(alert_sinks) if alert_sinks is not None else [LogSink()])

    def __enter__(self) -> CostTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the ledger."""
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
        self, model: str = "kling-v1", duration: int | str = 5, mode: str | None = None, **options: Any
    ) -> Decimal:
        """Units (credits) a request costs, exactly (``Decimal``)."""
        return self.quote(model, duration=duration, mode=mode, **options).units

    def calculate_cost(
        self, model: str = "kling-v1", duration: int | str = 5, mode: str | None = None, **options: Any
    ) -> Decimal:
        """Dollars a request costs at the list price of its pack type (``Decimal``)."""
        return self.quote(model, duration=duration, mode=mode, **options).usd

    # ------------------------------------------------------------------ budgets

    def set_budget(
        self,
        name: str | Budget,
        limit_units: Number | None = None,
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

        Example: ``tracker.set_budget("marketing", project_id="marketing", limit_units=1000, limit_usd=150)``.
        """
        if isinstance(name, Budget):
            return self.ledger.set_budget(name)
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

    def check_budget(self, name: str | None = None, *, project_id: str | None = None) -> dict[str, Any]:
        """Status as a dict: one budget by name, or every budget covering ``project_id``, or all.

        Returns ``{"budgets": [...], "over_budget": bool, "alerts": [...]}`` with exact decimal strings.
        """
        statuses = [self.ledger.budget_status(name)] if name else self.ledger.statuses()
        if project_id is not None and not name:
            statuses = [s for s in statuses if s.budget.scope.project == project_id]
        return {
            "budgets": [s.to_dict() for s in statuses],
            "over_budget": any(s.exhausted for s in statuses),
            "alerts": [
                f"{s.budget.name} at {s.percent}%"
                for s in statuses
                if s.budget.thresholds and s.percent >= min(s.budget.thresholds)
            ],
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
        """Would this request fit every hard budget right now? Advisory only: it reserves nothing.

        Returns ``{"allowed", "credits_needed", "credits_remaining", "cost_usd", "reason", "denial"}``.
        Between this check and the job another worker can spend the room; use :meth:`reserve` to be sure.
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
        for budget in self.ledger.matching_budgets(attribution):
            status = self.ledger.budget_status(budget.name, now=now)
            units_delta = budget.units_delta(quote.pack_type, quote.units_milli)
            denial = denial or check_admission(budget, status.window, status.counters, units_delta, quote.list_usd_nano)
            if status.remaining_units_milli is not None and budget.unit_pack is quote.pack_type:
                remaining = (
                    status.remaining_units_milli if remaining is None else min(remaining, status.remaining_units_milli)
                )
        return {
            "allowed": denial is None,
            "credits_needed": quote.units,
            "credits_remaining": None if remaining is None else milli_to_units(remaining),
            "cost_usd": quote.usd,
            "reason": denial.message() if denial else "",
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
        info = self.ledger.reserve(
            uuid.uuid4().hex if key is None else key,
            units_milli=milli,
            pack_type=quote.pack_type,
            attribution=attribution,
            product=quote.product,
            detail={"params": dict(quote.params), "price_version": quote.price_version, **(detail or {})},
            ttl=ttl,
            submitted=submitted,
            also=also,
        )
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
            detail={"params": dict(quote.params), "price_version": quote.price_version},
        )
        return self._dispatched(info)

    def get_usage(
        self,
        project_id: str | None = None,
        *,
        period: str = "month",
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: Sequence[str] = ("project",),
        user_id: str | None = None,
        model: str | None = None,
        timezone: str = "UTC",
    ) -> list[UsageRow]:
        """Committed and held spend over ``period`` (today, week, month, last-Nd) or ``[start, end)``."""
        now = self._clock()
        if start is None or end is None:
            low, high = period_bounds(period, now, timezone)
            start, end = start or low, end or high
        filters = {
            k: v
            for k, v in (
                ("project", project_id),
                ("user", user_id),
                ("model", self.prices.canonical_model(model) if model else None),
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
