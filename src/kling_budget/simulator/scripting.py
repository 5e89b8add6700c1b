"""Outcome control for the simulator: scripted outcomes (:class:`Script`) and prompt markers.

A task's :class:`Plan` (fail, charge, coupon, timing) comes from its prompt's ``[sim:...]`` markers first,
then the :class:`Script` queues, then ``failure_probability``. Markers work in the prompt of either design
(a 2026 request's top-level ``prompt`` or its ``prompt`` content). Pure apart from the script's own lock.
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from kling_budget.errors import InvalidInputError
from kling_budget.money import units_to_milli
from kling_budget.simulator.protocol import CODE_MESSAGE, SimError

__all__ = ["DEFAULT_FAILURE", "Plan", "Script", "plan_task", "read_markers"]

DEFAULT_FAILURE = "simulated failure"
_MARKER = re.compile(r"\[sim:(fail_early|fail|charge|coupon|queued|running|reject)(?:=([^\]]*))?\]")


@dataclass(frozen=True, slots=True)
class Plan:
    """What is decided about a task before it is created (``None``: the configured default).

    ``fail_early`` makes a failing task fail before generation (straight from ``submitted``); ``coupon``
    makes a successful task free.
    """

    fail: str | None = None
    charge_milli: int | None = None
    queued_ms: int | None = None
    running_ms: int | None = None
    fail_early: bool = False
    coupon: bool = False


class Script:
    """Deterministic outcomes for the next created tasks (in creation order, across accounts).

    Each queue is consumed by the next task that is accepted (a request refused with an error code consumes
    nothing). Queues are independent: ``fail_next`` and ``charge_next`` both apply to the next task.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail: deque[tuple[str, bool]] = deque()
        self._charge: deque[int] = deque()
        self._coupon: deque[bool] = deque()
        self._timing: deque[tuple[int | None, int | None]] = deque()

    def fail_next(self, n: int = 1, message: str = DEFAULT_FAILURE) -> None:
        """Make the next ``n`` tasks end ``failed`` with ``task_status_msg`` = ``message`` (charged "0")."""
        with self._lock:
            self._fail.extend([(message, False)] * n)

    def fail_early_next(self, n: int = 1, message: str = DEFAULT_FAILURE) -> None:
        """Make the next ``n`` tasks fail before generation: ``submitted`` -> ``failed``, never charged."""
        with self._lock:
            self._fail.extend([(message, True)] * n)

    def coupon_next(self, n: int = 1) -> None:
        """Make the next ``n`` successful tasks free (a coupon): billing amount ``"0"``, nothing deducted."""
        with self._lock:
            self._coupon.extend([True] * n)

    def charge_next(self, units: Decimal | int | str, n: int = 1) -> None:
        """Charge the next ``n`` successful tasks ``units`` instead of their quote (price drift)."""
        milli = units_to_milli(units, "charge")
        with self._lock:
            self._charge.extend([milli] * n)

    def time_next(self, *, queued: float | None = None, running: float | None = None, n: int = 1) -> None:
        """Give the next ``n`` tasks their own ``submitted`` / ``processing`` durations in seconds."""
        timing = (
            None if queued is None else round(queued * 1000),
            None if running is None else round(running * 1000),
        )
        with self._lock:
            self._timing.extend([timing] * n)

    def clear(self) -> None:
        """Forget everything scripted."""
        with self._lock:
            self._fail.clear()
            self._charge.clear()
            self._coupon.clear()
            self._timing.clear()

    @property
    def pending(self) -> int:
        """How many scripted entries are still waiting (all queues together)."""
        with self._lock:
            return len(self._fail) + len(self._charge) + len(self._coupon) + len(self._timing)

    def _peek(self) -> Plan:
        with self._lock:
            queued, running = self._timing[0] if self._timing else (None, None)
            fail, early = self._fail[0] if self._fail else (None, False)
            return Plan(
                fail=fail,
                charge_milli=self._charge[0] if self._charge else None,
                queued_ms=queued,
                running_ms=running,
                fail_early=early,
                coupon=bool(self._coupon and self._coupon[0]),
            )

    def _consume(self) -> None:
        with self._lock:
            for queue in (self._fail, self._charge, self._coupon, self._timing):
                if queue:
                    queue.popleft()


def read_markers(prompt: str | None, *, enabled: bool) -> Plan:
    """The plan the prompt's ``[sim:...]`` markers ask for (empty when markers are off or absent).

    Raises:
        SimError: 1201 for a marker that needs a number or names no documented code; the code itself for
            ``[sim:reject=<code>]``.
    """
    if not enabled or prompt is None or "[sim:" not in prompt:
        return Plan()
    fail: str | None = None
    early = coupon = False
    charge = queued = running = rejection = None
    for name, value in _MARKER.findall(prompt):
        try:
            if name in ("fail", "fail_early"):
                fail = value or DEFAULT_FAILURE
                early = name == "fail_early"
            elif name == "coupon":
                coupon = True
            elif name == "charge":
                charge = units_to_milli(value, "[sim:charge=...]")
            elif name == "queued":
                queued = round(float(value) * 1000)
            elif name == "reject":
                rejection = int(value)
            else:
                running = round(float(value) * 1000)
        except (InvalidInputError, ValueError):
            raise SimError(1201, f"prompt marker [sim:{name}={value}] needs a number") from None
    if rejection is not None:
        if rejection not in CODE_MESSAGE or rejection == 0:
            raise SimError(1201, f"prompt marker [sim:reject={rejection}] needs a documented Kling error code")
        raise SimError(rejection)
    return Plan(fail, charge, queued, running, early, coupon)


def plan_task(markers: Plan, script: Script, failure_probability: float, rng: random.Random) -> Plan:
    """Combine prompt markers, the script's next entries (not consumed) and random failure, in that order."""
    scripted = script._peek()
    fail, early = (
        (markers.fail, markers.fail_early) if markers.fail is not None else (scripted.fail, scripted.fail_early)
    )
    if fail is None and failure_probability > 0 and rng.random() < failure_probability:
        fail = DEFAULT_FAILURE
    return Plan(
        fail=fail,
        charge_milli=markers.charge_milli if markers.charge_milli is not None else scripted.charge_milli,
        queued_ms=markers.queued_ms if markers.queued_ms is not None else scripted.queued_ms,
        running_ms=markers.running_ms if markers.running_ms is not None else scripted.running_ms,
        fail_early=early,
        coupon=markers.coupon or scripted.coupon,
    )
