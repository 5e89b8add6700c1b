"""The storage seam: what a ledger backend (SQLite, PostgreSQL) provides to the ledger logic.

The ledger's SQL is written once with ``?`` placeholders and runs on every backend; a backend supplies
connections, transactions with the right locking and retry policy, and applies migrations.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Backend", "Connection", "Row", "RowMissing", "Statements", "T"]

T = TypeVar("T")
Row = tuple[Any, ...]


class Connection(Protocol):
    """A connection inside a transaction. SQL uses ``?`` placeholders on every backend."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query and return its first row, or ``None``."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return all its rows."""

    def fetch_each(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, last: bool = False, required: Collection[int] = ()
    ) -> list[Row | None]:
        """Run ``statements`` in order and return each one's first row (``None`` when it returns none);
        on a networked backend in one round trip. If one fails, the transaction is aborted.

        ``required``: indexes of statements that must return a row; when one returns none,
        :class:`RowMissing` is raised and nothing of the transaction is kept. ``last``: these are the
        transaction's final statements (the caller runs no more): a networked backend sends COMMIT in the
        same round trip, so row locks are released without waiting for the client.
        """


class RowMissing(Exception):
    """A statement :meth:`Connection.fetch_each` required to return a row returned none: the transaction
    must not commit (the caller rolls back, or the backend already has)."""


@dataclass(frozen=True, slots=True)
class Statements:
    """A caller's own statements for a ledger transaction (an ``also=`` hook), given as data so that the
    ledger may send them in the same round trip as its own (PostgreSQL). Called like any hook, it runs them
    in order; a statement marked required must return a row (``RETURNING``), else ``error()`` is raised.

    Args:
        items: ``(sql, params, required)`` in order.
        error: the exception for a required statement that returned no row (default :class:`RowMissing`).
    """

    items: tuple[tuple[str, tuple[Any, ...], bool], ...]
    error: Callable[[], Exception] | None = None

    def __call__(self, conn: Connection) -> None:
        for sql, params, required in self.items:
            if not required:
                conn.execute(sql, params)
            elif conn.fetchone(sql, params) is None:
                raise self.error() if self.error is not None else RowMissing()


class Backend(Protocol):
    """A ledger database.

    ``run(fn, write=True)`` calls ``fn(connection)`` inside one transaction and commits it; if the
    transaction fails for a transient reason (lock timeout, serialization failure, deadlock) the backend
    rolls back and calls ``fn`` again, a bounded number of times, so ``fn`` must only touch the database.
    When the database cannot be reached or locked in time it raises ``LedgerUnavailableError``.
    """

    dialect: str
    display_url: str

    def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction (retried on transient failures) and return its result."""

    def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""

    def upgrade(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""

    def close(self) -> None:
        """Release connections."""
