"""Model-based test: the real SQLite ledger against a plain reference model, checking invariants I1–I7
and I13 of the ledger design after every step (Hypothesis stateful testing)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError, IdempotencyConflictError, ReservationResolvedError
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.types import Attribution, PackType

ATTRIBUTIONS = [
    Attribution(project="p1", user="alice", model="kling-v2-6"),
    Attribution(project="p1", user="bob", model="kling-v1", tags=("t",)),
    Attribution(project="p2", user="alice", model="kling-v2-6", tags=("t",)),
    Attribution(),
]
PRICES = [500, 1500, 2500, 3500, 10000]


@dataclass
class ModelReservation:
    key: str
    attribution: Attribution
    units: int
    at: datetime
    kind: str
    state: str  # held, submitted, committed, released, denied
    actual: int | None = None


class LedgerMachine(RuleBasedStateMachine):
    """Drives the real ledger and a reference model with the same operations."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="kb-stateful-"))
        self.now = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
        self.ledger: Ledger = open_ledger(f"sqlite:///{self.directory / 'l.db'}", clock=lambda: self.now)
        self.model: dict[str, ModelReservation] = {}
        self.budgets: dict[str, Budget] = {}
        self.entries: list[tuple[object, ...]] = []
        self.counter = 0

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @initialize(
        p1_limit=st.integers(1, 40),
        account_limit=st.integers(1, 60),
        daily_limit=st.integers(1, 30),
        tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    )
    def create_budgets(self, p1_limit: int, account_limit: int, daily_limit: int, tz: str) -> None:
        for budget in (
            Budget.create("p1-monthly", project="p1", limit_units=p1_limit, period="monthly", timezone=tz),
            Budget.create("account-total", limit_units=account_limit, period="total"),
            Budget.create("alice-daily", user="alice", limit_units=daily_limit, period="daily", timezone=tz),
            Budget.create("tag-soft", tag="t", limit_units=5, hard=False, period="weekly", week_start=6),
        ):
            self.budgets[budget.name] = budget
            self.ledger.set_budget(budget)

    # ---------------------------------------------------------------- model helpers

    def _fold(self, budget: Budget, at: datetime) -> tuple[int, int]:
        window = budget.window(at)
        committed = held = 0
        for r in self.model.values():
            if r.state == "denied" or not budget.scope.matches(r.attribution) or not window.contains(r.at):
                continue
            if r.state in ("held", "submitted"):
                held += r.units
            elif r.state == "committed":
                committed += r.actual or 0
        return committed, held

    def _admits(self, attribution: Attribution, units: int) -> bool:
        for budget in self.budgets.values():
            if not budget.hard or not budget.scope.matches(attribution) or units == 0:
                continue
            committed, held = self._fold(budget, self.now)
            assert budget.limit_units_milli is not None
            if committed + held + units > budget.limit_units_milli:
                return False
        return True

    def _key(self) -> str:
        self.counter += 1
        return f"k{self.counter}"

    # ---------------------------------------------------------------- rules

    @rule(target=reservations, who=st.sampled_from(ATTRIBUTIONS), units=st.sampled_from(PRICES))
    def reserve(self, who: Attribution, units: int) -> str:
        key = self._key()
        expected = self._admits(who, units)
        try:
            info = self.ledger.reserve(key, units_milli=units, pack_type=PackType.VIDEO, attribution=who)
        except BudgetExceededError as exc:
            assert not expected, f"denied but the model admits: {exc}"
            self.model[key] = ModelReservation(key, who, units, self.now, "reserve", "denied")
            return key
        assert expected, "admitted but the model denies"
        assert info.units_milli == units
        self.model[key] = ModelReservation(key, who, units, self.now, "reserve", "held")
        return key

    @rule(key=reservations)
    def replay_same_request(self, key: str) -> None:
        r = self.model[key]
        if r.kind == "record":
            info = self.ledger.record(key, units_milli=r.units, pack_type="video", attribution=r.attribution)
            assert info.replayed
            return
        try:
            info = self.ledger.reserve(key, units_milli=r.units, pack_type="video", attribution=r.attribution)
        except BudgetExceededError:
            assert r.state == "denied"
            return
        assert r.state != "denied" and info.replayed and info.state.value == r.state

    @rule(key=reservations)
    def replay_different_request(self, key: str) -> None:
        r = self.model[key]
        try:
            self.ledger.reserve(key, units_milli=r.units + 1, pack_type="video", attribution=r.attribution)
        except IdempotencyConflictError:
            return
        raise AssertionError("a different request with a used key was accepted")

    @rule(key=reservations)
    def submit(self, key: str) -> None:
        r = self.model[key]
        try:
            self.ledger.mark_submitted(key, task_id=f"task-{key}")
        except ReservationResolvedError:
            assert r.state not in ("held", "submitted") and not (r.state == "committed" and r.kind == "reserve")
            return
        if r.state in ("held", "submitted"):
            r.state = "submitted"

    @rule(key=consumes(reservations), charged=st.one_of(st.none(), st.sampled_from([0, 500, 2500, 12000])))
    def commit(self, key: str, charged: int | None) -> None:
        r = self.model[key]
        try:
            info = self.ledger.commit(key, units_milli=charged)
        except ReservationResolvedError:
            assert r.state not in ("held", "submitted")
            return
        actual = r.units if charged is None else charged
        if r.state == "committed":
            assert info.replayed and r.actual == actual
            return
        assert r.state in ("held", "submitted")
        assert info.actual_milli == actual
        assert info.overage_milli == max(0, actual - r.units)  # I7
        r.state, r.actual = "committed", actual

    @rule(key=consumes(reservations))
    def release(self, key: str) -> None:
        r = self.model[key]
        try:
            self.ledger.release(key)
        except ReservationResolvedError:
            assert r.state not in ("held", "submitted", "released")
            return
        assert r.state in ("held", "submitted", "released")
        r.state = "released"

    @rule(target=reservations, who=st.sampled_from(ATTRIBUTIONS), units=st.sampled_from(PRICES))
    def record(self, who: Attribution, units: int) -> str:
        key = self._key()
        self.ledger.record(key, units_milli=units, pack_type="video", attribution=who)
        self.model[key] = ModelReservation(key, who, units, self.now, "record", "committed", actual=units)
        return key

    @rule(hours=st.integers(1, 24 * 40))
    def advance_clock(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(name=st.sampled_from(["p1-monthly", "account-total", "alice-daily"]), limit=st.integers(1, 60))
    def change_limit(self, name: str, limit: int) -> None:
        old = self.budgets[name]
        new = Budget.create(
            name,
            project=old.scope.project or None,
            user=old.scope.user or None,
            limit_units=limit,
            period=old.period,
            timezone=old.timezone,
        )
        self.budgets[name] = new
        self.ledger.set_budget(new)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def counters_match_the_model(self) -> None:
        """I1/I2/I3: every budget's current counters equal the model's fold; none is negative."""
        for budget in self.budgets.values():
            status = self.ledger.budget_status(budget.name, now=self.now)
            committed, held = self._fold(budget, self.now)
            assert (status.counters.committed_milli, status.counters.held_milli) == (committed, held), budget.name
            assert status.counters.held_milli >= 0 and status.counters.committed_milli >= 0

    @invariant()
    def reservation_states_match(self) -> None:
        """I4–I6: every reservation has the model's state (resolved at most once, all-or-nothing)."""
        stored = {r.id: r.state.value for r in self.ledger.list_reservations(limit=100_000)}
        assert stored == {k: r.state for k, r in self.model.items()}

    @invariant()
    def ledger_verifies(self) -> None:
        """I3: verify re-derives every counter from the entries with no mismatch."""
        report = self.ledger.verify()
        assert report.ok, report.problems

    @invariant()
    def entries_are_append_only(self) -> None:
        """I13: earlier entries never change and sequence numbers strictly increase."""
        rows = self.ledger.backend.run(
            lambda conn: conn.fetchall(
                "SELECT seq, reservation_id, kind, units_milli, usd_nano FROM entries ORDER BY seq"
            ),
            write=False,
        )
        assert rows[: len(self.entries)] == self.entries
        seqs = [r[0] for r in rows]
        assert seqs == sorted(set(seqs))
        self.entries = rows


TestLedgerStateMachine = LedgerMachine.TestCase
TestLedgerStateMachine.settings = settings(
    max_examples=40,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
