"""The delivery side of the alert outbox: leases on events, per-sink progress, bounded retries, and sinks.

The ledger writes each alert event exactly once (``alert_events``, unique ``dedupe_key``) inside the
transaction that caused it. This module hands those events to deliverers, possibly in many processes:

* **Claim.** A deliverer takes a lease on one event (``claimed_by``/``claimed_until``) with a conditional
  ``UPDATE``; an event is claimable when it is neither delivered nor given up, its lease (if any) has
  expired, and its next attempt is due. Two deliverers never hold the same event at once; a crashed one's
  lease simply runs out. On PostgreSQL the candidate rows are picked ``FOR UPDATE SKIP LOCKED``.
* **Progress.** ``delivered_to`` lists the sinks that accepted the event, so a retry only goes to the sinks
  that failed. Delivery is at-least-once: a deliverer whose lease ran out mid-send can overlap with the
  next one, which is why every payload carries the event's ``dedupe_key``.
* **Retries.** A failed round increments ``attempts`` and sets ``next_attempt_at``; after the last allowed
  round the event is marked ``failed_at`` and stays visible until someone retries it explicitly.

Times here are wall-clock microseconds of the delivery machinery, not the ledger's business clock.

Sink configuration lives in ``alert_sinks`` so every process and gateway instance delivers to the same
places. The secrets of a sink (webhook and Slack URLs, signing secrets, SMTP passwords) are stored
encrypted with the master key (:mod:`kling_budget.alerts._secrets`); the rest of ``config`` is plain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend, Connection, Row
from kling_budget.ledger.events import event_from_payload
from kling_budget.ledger.locks import skip_locked
from kling_budget.master_key import SecretBox, load_master_key
from kling_budget.types import AlertEvent
from kling_budget.windows import from_micros, to_micros

__all__ = ["ClaimedEvent", "Outbox", "OutboxEntry", "SinkConfig", "SinkStatus"]

SINK_KINDS = ("log", "webhook", "slack", "email")
_MAX_ERROR = 300
_CLAIMABLE = (
    "delivered_at IS NULL AND failed_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?) "
    "AND next_attempt_at <= ?"
)
_SINK_COLUMNS = (
    "id, kind, budget, kinds, config, enabled, created_at, sent, failures, consecutive_failures, "
    "last_ok_at, last_error_at, last_error"
)


def _keys(text: str) -> frozenset[str]:
    return frozenset(k for k in text.split(",") if k)


def _keys_text(keys: Sequence[str] | frozenset[str]) -> str:
    items = sorted(set(keys))
    return f",{','.join(items)}," if items else ""


def _micros(instant: datetime | None) -> int:
    return to_micros(instant or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event this deliverer holds the lease on, with the sinks that already accepted it."""

    event: AlertEvent
    attempts: int
    delivered_to: frozenset[str]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox event with its delivery state: ``delivered``, ``pending``, ``retrying``, ``claimed`` or
    ``failed`` (given up after the last allowed attempt)."""

    event: AlertEvent
    status: str
    attempts: int
    delivered_to: frozenset[str]
    last_error: str
    delivered_at: datetime | None
    next_attempt_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the event plus its delivery state."""
        return {
            **self.event.to_dict(),
            "status": self.status,
            "attempts": self.attempts,
            "delivered_to": sorted(self.delivered_to),
            "last_error": self.last_error,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """How a configured sink has been doing: counts and the last (secret-free) error."""

    sent: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_ok_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str = ""

    @property
    def healthy(self) -> bool:
        """Whether the last attempt (if any) succeeded."""
        return self.consecutive_failures == 0


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """A sink stored in the ledger. ``config`` may hold secrets and is left out of ``repr``.

    Attributes:
        id: the sink's id (``kling-budget alerts remove ID``).
        kind: ``log``, ``webhook``, ``slack`` or ``email``.
        budget: only events of this budget ("" = every event).
        kinds: only these alert kinds (empty = every kind).
        config: kind-specific settings (URL, SMTP host, credentials ...).
    """

    id: int
    kind: str
    budget: str
    kinds: tuple[str, ...]
    config: Mapping[str, Any] = field(repr=False)
    enabled: bool = True
    created_at: datetime | None = None
    status: SinkStatus = field(default_factory=SinkStatus)

    @property
    def key(self) -> str:
        """The name under which delivery progress is recorded (``sink:<id>``)."""
        return f"sink:{self.id}"

    def matches(self, event: AlertEvent) -> bool:
        """Whether this sink wants ``event`` (its budget and kind filters)."""
        if self.budget and event.budget != self.budget:
            return False
        return not self.kinds or event.kind.value in self.kinds


def _sink_from_row(row: Row) -> SinkConfig:
    return SinkConfig(
        id=int(row[0]),
        kind=row[1],
        budget=row[2],
        kinds=tuple(k for k in row[3].split(",") if k),
        config=json.loads(row[4]),
        enabled=bool(row[5]),
        created_at=from_micros(int(row[6])),
        status=SinkStatus(
            sent=int(row[7]),
            failures=int(row[8]),
            consecutive_failures=int(row[9]),
            last_ok_at=None if row[10] is None else from_micros(int(row[10])),
            last_error_at=None if row[11] is None else from_micros(int(row[11])),
            last_error=row[12],
        ),
    )


class Outbox:
    """Claims, progress and retries of the alert outbox, and the configured sinks, over a ledger backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # ----------------------------------------------------------------- claiming and delivery state

    def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        ids: Sequence[int] | None = None,
        due_only: bool = True,
        after_id: int = 0,
        limit: int = 1,
        now: datetime | None = None,
    ) -> list[ClaimedEvent]:
        """Take the lease on up to ``limit`` claimable events (oldest first, ids above ``after_id``), or on
        those of ``ids`` that are claimable.

        ``due_only=False`` ignores ``next_attempt_at`` (an operator asked to deliver now); leases held by
        others are always respected.
        """
        at = _micros(now)
        until = at + int(lease_seconds * 1_000_000)
        due = at if due_only else 2**62
        where = _CLAIMABLE + " AND id > ?"
        params: list[Any] = [at, due, after_id]
        if ids is not None:
            if not ids:
                return []
            where += f" AND id IN ({', '.join('?' for _ in ids)})"
            params += list(ids)

        def tx(conn: Connection) -> list[Row]:
            pick = f"SELECT id FROM alert_events WHERE {where} ORDER BY id LIMIT ?{skip_locked(conn)}"
            return conn.fetchall(
                f"UPDATE alert_events SET claimed_by = ?, claimed_until = ? WHERE id IN ({pick}) AND {_CLAIMABLE} "
                "RETURNING id, payload, attempts, delivered_to",
                [owner, until, *params, limit, at, due],
            )

        rows = self.backend.run(tx)
        claimed = [ClaimedEvent(event_from_payload(int(r[0]), r[1]), int(r[2]), _keys(r[3])) for r in rows]
        return sorted(claimed, key=lambda c: c.event.id or 0)

    def pending_ids(self, *, limit: int = 1000, now: datetime | None = None) -> list[int]:
        """Ids of up to ``limit`` events (oldest first) that are claimable now: not delivered, not given up,
        not leased by a live deliverer, next attempt due. One read over the outbox's partial index."""
        at = _micros(now)
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                f"SELECT id FROM alert_events WHERE {_CLAIMABLE} ORDER BY id LIMIT ?", (at, at, limit)
            ),
            write=False,
        )
        return [int(r[0]) for r in rows]

    def complete(
        self, owner: str, event_id: int, delivered_to: Sequence[str] | frozenset[str], *, now: datetime | None = None
    ) -> bool:
        """Mark an event delivered (every sink that wanted it accepted it); ``False`` if already delivered."""
        at = _micros(now)

        def tx(conn: Connection) -> int:
            return conn.execute(
                "UPDATE alert_events SET delivered_at = ?, delivered_to = ?, last_error = '', "
                "claimed_by = NULL, claimed_until = NULL WHERE id = ? AND delivered_at IS NULL",
                (at, _keys_text(delivered_to), event_id),
            )

        return bool(self.backend.run(tx))

    def defer(
        self,
        owner: str,
        event_id: int,
        delivered_to: Sequence[str] | frozenset[str],
        *,
        error: str,
        retry_at: datetime,
        count_attempt: bool = True,
        give_up: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Release the lease after a failed round: remember the sinks that did accept the event, count the
        attempt, and schedule the next one at ``retry_at`` (or give up and mark it failed)."""
        at = _micros(now)

        def tx(conn: Connection) -> None:
            # Progress is recorded even if our lease ran out: those sinks did receive the event.
            conn.execute(
                "UPDATE alert_events SET delivered_to = ? WHERE id = ? AND delivered_at IS NULL",
                (_keys_text(delivered_to), event_id),
            )
            conn.execute(
                "UPDATE alert_events SET attempts = attempts + ?, next_attempt_at = ?, last_error = ?, "
                "failed_at = ?, claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ? AND claimed_by = ? AND delivered_at IS NULL",
                (
                    int(count_attempt),
                    to_micros(retry_at),
                    error[:_MAX_ERROR],
                    at if give_up else None,
                    event_id,
                    owner,
                ),
            )

        self.backend.run(tx)

    def retry_failed(self, *, now: datetime | None = None) -> int:
        """Make given-up events deliverable again (attempts reset); return how many."""
        at = _micros(now)
        return self.backend.run(
            lambda conn: conn.execute(
                "UPDATE alert_events SET failed_at = NULL, attempts = 0, next_attempt_at = ? "
                "WHERE failed_at IS NOT NULL AND delivered_at IS NULL",
                (at,),
            )
        )

    def entries(self, *, limit: int = 50, now: datetime | None = None) -> list[OutboxEntry]:
        """The newest events with their delivery state."""
        at = _micros(now)
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                "SELECT id, payload, delivered_at, failed_at, claimed_until, attempts, delivered_to, last_error, "
                "next_attempt_at FROM alert_events ORDER BY id DESC LIMIT ?",
                (limit,),
            ),
            write=False,
        )
        result = []
        for event_id, payload, delivered, failed, claimed_until, attempts, delivered_to, error, next_at in rows:
            if delivered is not None:
                status = "delivered"
            elif failed is not None:
                status = "failed"
            elif claimed_until is not None and claimed_until > at:
                status = "claimed"
            elif attempts:
                status = "retrying"
            else:
                status = "pending"
            result.append(
                OutboxEntry(
                    event=event_from_payload(int(event_id), payload),
                    status=status,
                    attempts=int(attempts),
                    delivered_to=_keys(delivered_to),
                    last_error=error,
                    delivered_at=None if delivered is None else from_micros(int(delivered)),
                    next_attempt_at=from_micros(int(next_at)) if status == "retrying" else None,
                )
            )
        return result

    def counts(self) -> dict[str, int]:
        """How many events are ``delivered``, ``pending`` (incl. retrying or claimed) and ``failed``."""
        row = self.backend.run(
            lambda conn: conn.fetchone(
                "SELECT "
                "COALESCE(SUM(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN delivered_at IS NULL AND failed_at IS NOT NULL THEN 1 ELSE 0 END), 0) "
                "FROM alert_events"
            ),
            write=False,
        )
        assert row is not None
        return {"delivered": int(row[0]), "pending": int(row[1]), "failed": int(row[2])}

    # ----------------------------------------------------------------- sinks

    def add_sink(
        self,
        kind: str,
        config: Mapping[str, Any],
        *,
        budget: str = "",
        kinds: Sequence[str] = (),
        now: datetime | None = None,
        box: SecretBox | None = None,
    ) -> SinkConfig:
        """Store a sink; returns it with its id.

        Its secrets (URL, signing secret, SMTP password) are stored encrypted with the master key (``box``,
        default: this process's), which must be the key the ledger's other secrets are encrypted with.
        """
        from kling_budget.alerts._secrets import check_master_key, is_sealed, seal

        if kind not in SINK_KINDS:
            raise ConfigurationError(f"unknown sink kind {kind!r}; accepted: {', '.join(SINK_KINDS)}")
        at = _micros(now)
        if not is_sealed(config) and box is None:
            box = load_master_key()

        def tx(conn: Connection) -> SinkConfig:
            stored = dict(config)
            if box is not None and not is_sealed(config):
                check_master_key(conn, box)
                stored = seal(config, box)
            row = conn.fetchone(
                "INSERT INTO alert_sinks (kind, budget, kinds, config, enabled, created_at) "
                f"VALUES (?, ?, ?, ?, 1, ?) RETURNING {_SINK_COLUMNS}",
                (kind, budget, ",".join(kinds), json.dumps(stored, sort_keys=True), at),
            )
            assert row is not None
            return _sink_from_row(row)

        return self.backend.run(tx)

    def sinks(self, *, enabled_only: bool = False) -> list[SinkConfig]:
        """The configured sinks, by id."""
        where = " WHERE enabled = 1" if enabled_only else ""
        rows = self.backend.run(
            lambda conn: conn.fetchall(f"SELECT {_SINK_COLUMNS} FROM alert_sinks{where} ORDER BY id"), write=False
        )
        return [_sink_from_row(r) for r in rows]

    def get_sink(self, sink_id: int) -> SinkConfig:
        """One sink by id; :class:`ConfigurationError` names the existing ids if absent."""
        for sink in self.sinks():
            if sink.id == sink_id:
                return sink
        ids = ", ".join(str(s.id) for s in self.sinks()) or "none"
        raise ConfigurationError(f"no alert sink with id {sink_id}; existing: {ids}")

    def remove_sink(self, sink_id: int) -> None:
        """Delete a sink."""
        changed = self.backend.run(lambda conn: conn.execute("DELETE FROM alert_sinks WHERE id = ?", (sink_id,)))
        if not changed:
            self.get_sink(sink_id)  # raises with the list of ids

    def record_sink_result(self, sink_id: int, *, ok: bool, error: str = "", now: datetime | None = None) -> None:
        """Count one delivery (or failure) of a configured sink; ``error`` must already be secret-free."""
        at = _micros(now)
        sql: tuple[str, tuple[Any, ...]]
        if ok:
            sql = (
                "UPDATE alert_sinks SET sent = sent + 1, consecutive_failures = 0, last_ok_at = ? WHERE id = ?",
                (at, sink_id),
            )
        else:
            sql = (
                "UPDATE alert_sinks SET failures = failures + 1, consecutive_failures = consecutive_failures + 1, "
                "last_error_at = ?, last_error = ? WHERE id = ?",
                (at, error[:_MAX_ERROR], sink_id),
            )
        self.backend.run(lambda conn: conn.execute(*sql))
