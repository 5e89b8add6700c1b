"""PostgreSQL: reservations in one round trip, and concurrent reservations of a process in one transaction.

The ledger prepares a reservation completely on the client (its rows, its usage roll-up delta, and for
every matching budget the window, the amounts, the limit it must fit in and the used amounts at which an
alert fires) and :class:`OneTrip` sends it to ``kling_budget_reserve()`` (migration 6) as one statement
in autocommit: BEGIN, the writes, the conditional window updates and COMMIT in one round trip, the
account-wide row locked only while the server runs it. Reservations that threads submit while a batch
is in flight are sent together as the next batch (:mod:`kling_budget.ledger.group_commit`): the window
moves are summed per window and applied in lock order, the usage roll-up rows in key order, so a batch
takes its locks in the same order as every other transaction (no deadlocks), and one COMMIT serves them
all.

The function writes nothing and answers why when a reservation needs the ledger's general path (the
configuration changed, a key exists, a window has no room or no row yet, an alert would fire); every
reservation of that batch is then reserved alone by :meth:`Ledger.reserve`'s general path, which gives
each its exact answer. The same happens when the connection is lost during the statement (the outcome is
unknown): the general path, keyed by the reservation id, finds the reservation if it committed (a
replay) or makes it, waiting for the lost transaction if the server is still finishing it. Reservations
that bring their own statements (``also``) send them after the function, with COMMIT, in one round trip
when they are given as data (:class:`~kling_budget.ledger.backend.Statements`); other hooks run first,
then the function and COMMIT go in one round trip. A declined batch, or a caller's statement that must
find a row and finds none, stops that COMMIT (:meth:`Connection.fetch_each` with ``required``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kling_budget.errors import LedgerUnavailableError
from kling_budget.ledger.backend import Connection, RowMissing, Statements
from kling_budget.ledger.group_commit import Call, GroupCommit

if TYPE_CHECKING:
    from kling_budget.ledger.postgres import PostgresBackend

__all__ = ["OneTrip", "Prepared", "WindowMove"]

log = logging.getLogger(__name__)

_CALL = "SELECT kling_budget_reserve(?, ?::jsonb, ?::jsonb, ?::jsonb)"
_APPLIED = "SELECT code FROM kling_budget_reserve(?, ?::jsonb, ?::jsonb, ?::jsonb) AS result(code) WHERE code = 0"
_RESERVATION_FIELDS = (
    "id",
    None,  # kind: always 'reserve'
    "state",
    "request_hash",
    "project",
    "user_id",
    "api_key",
    "model",
    "tags",
    "product",
    "pack_type",
    "units_milli",
    "usd_nano",
    None,  # actual_milli
    None,  # actual_nano
    None,  # over_budget
    "reserved_at",
    None,  # resolved_at
    "expires_at",
    "detail",
)
_BUCKET_FIELDS = (
    "bucket",
    "project",
    "user_id",
    "api_key",
    "model",
    "pack_type",
    None,  # committed_milli
    "held_milli",
    None,  # committed_nano
    "held_nano",
    None,  # jobs
)


@dataclass(frozen=True, slots=True)
class WindowMove:
    """One budget window a reservation holds its price in."""

    lock_key: tuple[int, int]
    budget_id: int
    window_start: int
    held_milli: int
    held_nano: int
    limit_milli: int | None
    limit_nano: int | None
    points_milli: tuple[int, ...]
    points_nano: tuple[int, ...]


@dataclass(slots=True)
class Prepared:
    """A reservation ready to be applied: the reservation row and usage roll-up row as the ledger writes
    them (parameters of its INSERTs), the window moves, the configuration version they were derived
    from, and the caller's own statements for the same transaction."""

    version: str
    reservation: Sequence[Any]
    bucket: Sequence[Any]
    windows: Sequence[WindowMove]
    also: Callable[[Connection], None] | None = None


class Declined(Exception):
    """The batch was not applied (or its outcome is unknown): reserve each of its reservations alone."""


class OneTrip:
    """Applies prepared reservations through ``kling_budget_reserve()``, batching concurrent callers.

    Args:
        backend: the PostgreSQL backend.
        max_batch: most reservations in one transaction.
        max_leaders: batches in flight at once (one waits for the hot row while another commits).
    """

    def __init__(self, backend: PostgresBackend, *, max_batch: int = 32, max_leaders: int = 2) -> None:
        self.backend = backend
        self.group: GroupCommit[Prepared] = GroupCommit(self._apply, max_batch=max_batch, max_leaders=max_leaders)
        self.enabled = True

    def reserve(self, prepared: Prepared) -> bool:
        """Apply ``prepared``; ``True`` once it is committed, ``False`` when the caller must take the
        general path (nothing of it was applied, or its outcome is unknown).

        Raises:
            LedgerUnavailableError: no connection or a lock past the timeout; nothing was applied.
        """
        if not self.enabled:
            return False
        try:
            self.group.submit(prepared)
        except Declined:
            return False
        return True

    def _apply(self, batch: Sequence[Call[Prepared]]) -> None:
        version = batch[0].payload.version
        items = [call.payload for call in batch if call.payload.version == version]
        for call in batch:
            if call.payload.version != version:
                call.fail(Declined())  # prepared under another configuration: the general path decides
        args = _arguments(version, items)
        hooks = [item.also for item in items if item.also is not None]
        try:
            if hooks:
                self.backend.run(lambda conn: _apply_with_hooks(conn, args, hooks))
            else:
                row = self.backend.run_single(_CALL, args)
                if row is None or row[0] != 0:
                    raise Declined
        except (Declined, LedgerUnavailableError):
            raise
        except Exception as exc:
            from kling_budget.ledger.postgres import StatementLost

            if not isinstance(exc, StatementLost) and getattr(exc, "sqlstate", None) == "42883":
                log.warning("kling_budget_reserve() is missing (schema not upgraded); reserving the long way")
                self.enabled = False
            raise Declined from exc


def _apply_with_hooks(conn: Connection, args: Sequence[Any], hooks: Sequence[Callable[[Connection], None]]) -> None:
    # A declined batch returns no row, and so does a caller's required statement that finds none: either
    # stops the COMMIT queued behind them (the transaction is rolled back) and every reservation of the
    # batch goes the general path, which gives each caller its own answer.
    statements: list[tuple[str, Sequence[Any]]] = [(_APPLIED, args)]
    required = [0]
    given = [hook for hook in hooks if isinstance(hook, Statements)]
    if len(given) == len(hooks):
        # Hooks given as statements go with the function and COMMIT: the whole batch in one round trip.
        for statements_hook in given:
            for sql, params, must_find in statements_hook.items:
                if must_find:
                    required.append(len(statements))
                statements.append((sql, params))
    else:
        # The hooks' rows first (their foreign keys are checked at COMMIT, migration 8), then the function
        # and COMMIT in one round trip: the hot rows the function locks are released without waiting for
        # this client.
        for hook in hooks:
            hook(conn)
    try:
        conn.fetch_each(statements, required=required, last=True)
    except RowMissing:
        raise Declined from None


def _arguments(version: str, items: Sequence[Prepared]) -> list[Any]:
    """The function's arguments for ``items``: the reservations, the usage roll-up deltas summed per row
    (one upsert per row), and the window moves summed per window, in lock order."""
    reservations = [
        {name: value for name, value in zip(_RESERVATION_FIELDS, item.reservation, strict=True) if name}
        for item in items
    ]
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for item in items:
        values = dict(zip(_BUCKET_FIELDS, item.bucket, strict=True))
        key = tuple(values[name] for name in _BUCKET_FIELDS[:6])
        total = buckets.setdefault(key, [0, 0])
        total[0] += values["held_milli"]
        total[1] += values["held_nano"]
    windows: dict[tuple[int, int], list[Any]] = {}
    order: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}
    for item in items:
        for move in item.windows:
            key = (move.budget_id, move.window_start)
            if key not in windows:
                windows[key] = [0, 0, move.limit_milli, move.limit_nano, move.points_milli, move.points_nano]
                order[key] = (move.lock_key, move.window_start)
            windows[key][0] += move.held_milli
            windows[key][1] += move.held_nano
    return [
        version,
        json.dumps(reservations),
        json.dumps([dict(zip(_BUCKET_FIELDS[:6], key, strict=True)) | _held(*total) for key, total in buckets.items()]),
        json.dumps(
            [
                {
                    "budget_id": key[0],
                    "window_start": key[1],
                    "held_milli": held_milli,
                    "held_nano": held_nano,
                    "limit_milli": limit_milli,
                    "limit_nano": limit_nano,
                    "points_milli": list(points_milli),
                    "points_nano": list(points_nano),
                }
                for key, (held_milli, held_nano, limit_milli, limit_nano, points_milli, points_nano) in sorted(
                    windows.items(), key=lambda entry: order[entry[0]]
                )
            ]
        ),
    ]


def _held(milli: int, nano: int) -> dict[str, int]:
    return {"held_milli": milli, "held_nano": nano}
