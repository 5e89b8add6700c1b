"""Fault injection: make the simulated Kling misbehave on purpose, for the next N requests or at random.

Kinds (:class:`FaultKind`) and what a client observes:

========================  =====================================================================
``TIMEOUT_5002``          the request is processed (a create makes a real task that runs and is
                          charged), then answered HTTP 504 / code 5002: the ambiguous case.
``ERROR_5000``            HTTP 500 / code 5000; nothing happens.
``UNAVAILABLE_5001``      HTTP 503 / code 5001; nothing happens.
``PLAIN_500``             HTTP 500 with a ``text/plain`` body and no envelope; nothing happens.
``SLOW``                  the answer comes ``delay`` seconds late (the work is done after the delay).
``TRUNCATE``              the request is processed, headers and part of the body are sent, then the
                          connection is closed.
``DROP``                  the connection is closed without any answer; by default before processing
                          (pass ``process=True`` to create the task first).
========================  =====================================================================

Rules are checked in the order they were added; the first one that matches the request and fires is used.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Fault", "FaultKind", "FaultRule", "Faults"]


class FaultKind(StrEnum):
    """What goes wrong."""

    TIMEOUT_5002 = "timeout_5002"
    ERROR_5000 = "error_5000"
    UNAVAILABLE_5001 = "unavailable_5001"
    PLAIN_500 = "plain_500"
    SLOW = "slow"
    TRUNCATE = "truncate"
    DROP = "drop"


_PROCESSED_BY_DEFAULT = {FaultKind.TIMEOUT_5002, FaultKind.SLOW, FaultKind.TRUNCATE}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to apply to one request.

    Attributes:
        kind: what goes wrong.
        delay: seconds to wait before answering (any kind may carry a delay).
        process: whether the request's effects happen (a create makes its task) despite the fault.
    """

    kind: FaultKind
    delay: float
    process: bool


@dataclass(slots=True)
class FaultRule:
    """A rule that turns matching requests into faults.

    Attributes:
        kind, delay, process: the :class:`Fault` to produce.
        path: match requests whose path is this or lies under it (``/v1/videos/text2video`` also matches
            ``/v1/videos/text2video/123``); ``None`` matches every path.
        method: match only this HTTP method; ``None`` matches all.
        remaining: how many more times the rule fires; ``None`` is unlimited.
        probability: chance that a matching request fires the rule (reproducible: drawn with ``seed``).
        fired: how many times it fired so far.
    """

    kind: FaultKind
    delay: float = 0.0
    process: bool = False
    path: str | None = None
    method: str | None = None
    remaining: int | None = 1
    probability: float = 1.0
    seed: int | None = None
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is covered by the rule."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return True
        base = self.path.rstrip("/")
        return path == base or path.startswith(base + "/")


class Faults:
    """The fault rules of one simulator. Thread-safe."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def inject(
        self,
        kind: FaultKind | str,
        *,
        path: str | None = None,
        method: str | None = None,
        count: int | None = 1,
        probability: float = 1.0,
        seed: int | None = None,
        delay: float | None = None,
        process: bool | None = None,
    ) -> FaultRule:
        """Add a rule: the next ``count`` matching requests (``None``: all) fail with ``kind``.

        Args:
            kind: a :class:`FaultKind` or its value (``"timeout_5002"``...).
            path: limit to one endpoint (and its query paths); ``None`` for every path.
            method: limit to one HTTP method, e.g. ``"POST"`` for creates only.
            count: how many times the rule fires; ``None`` for no limit.
            probability: chance per matching request, drawn reproducibly from ``seed``.
            delay: seconds to wait before answering; defaults to 1.0 for ``SLOW`` and 0 otherwise.
            process: whether the request is carried out despite the fault; the default depends on the kind
                (yes for 5002, slow and truncate; no for the others).

        Returns:
            The rule, whose ``fired`` counter tests can read.
        """
        fault_kind = FaultKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for no limit)")
        if not 0 < probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        rule = FaultRule(
            kind=fault_kind,
            delay=(1.0 if fault_kind is FaultKind.SLOW else 0.0) if delay is None else delay,
            process=(fault_kind in _PROCESSED_BY_DEFAULT) if process is None else process,
            path=path,
            method=method,
            remaining=count,
            probability=probability,
            seed=seed,
            _rng=random.Random(seed),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        """A copy of the current rules."""
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if a rule fires; consumes one use of that rule."""
        with self._lock:
            if not self._rules:
                return None
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.probability < 1 and rule._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return Fault(rule.kind, rule.delay, rule.process)
        return None
