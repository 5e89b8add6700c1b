"""Copy a whole ledger between backends (SQLite → PostgreSQL, or any pair) with its history.

Every table of the schema is copied row for row, keeping ids and the ``entries`` sequence numbers (so
the log's total order is the same), into an *empty* destination at the same schema version; then the
destination's identity sequences are moved past the copied ids and :func:`verify` re-derives every
counter there. The source is read in one transaction (one consistent snapshot) and the destination is
written in one transaction: a failed copy leaves the destination empty. Stop the writers of the source
for the copy; anything they write after the snapshot is not copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend, Connection, Row
from kling_budget.ledger.records import VerifyReport
from kling_budget.ledger.verify import verify

__all__ = ["CopyReport", "copy_ledger"]

# The order of the first schema; tables later migrations add follow, parents before children.
_ORDER = (
    "meta",
    "budgets",
    "packs",
    "reservations",
    "entries",
    "allocations",
    "budget_windows",
    "usage_buckets",
    "alert_events",
)
_SKIP = frozenset({"schema_migrations", "sqlite_sequence"})
_BATCH_ROWS = 500
_MAX_PARAMS = 30_000  # below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy_ledger` did: rows copied per table and the destination's verify report."""

    source: str
    destination: str
    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)
    verify: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        """Whether the copy verified."""
        return self.verify is not None and self.verify.ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "destination": self.destination,
            "schema_version": self.schema_version,
            "rows": dict(self.rows),
            "ok": self.ok,
            "problems": list(self.verify.problems) if self.verify else [],
        }


def copy_ledger(source: Backend, destination: Backend) -> CopyReport:
    """Copy every row of ``source`` into the empty ``destination`` and verify the result.

    The destination is migrated to the latest schema first; the source must be at that version too
    (``kling-budget db upgrade`` on it). Raises :class:`ConfigurationError` when the destination is not
    empty, is the source itself, or the schema versions differ.
    """
    if source.display_url == destination.display_url:
        raise ConfigurationError("the copy's source and destination are the same ledger")
    destination.upgrade()
    version = destination.schema_version()
    if source.schema_version() != version:
        raise ConfigurationError(
            f"the source ledger is at schema version {source.schema_version()}, the destination at {version}; "
            "run 'kling-budget db upgrade' on the source first"
        )

    def read(src: Connection) -> dict[str, int]:
        return destination.run(lambda dst: _copy_all(src, dst))

    rows = source.run(read, write=False)
    return CopyReport(
        source=source.display_url,
        destination=destination.display_url,
        schema_version=version,
        rows=rows,
        verify=verify(destination),
    )


def _copy_all(src: Connection, dst: Connection) -> dict[str, int]:
    tables = _tables(src)
    missing = sorted(set(tables) - set(_tables(dst)))
    if missing:
        raise ConfigurationError(f"the destination has no table {', '.join(missing)}; its schema differs")
    _require_empty(dst, tables)
    dst.execute("DELETE FROM meta")  # the fresh schema's config_version; the source's replaces it
    copied: dict[str, int] = {}
    for table in tables:
        columns = _columns(src, table)
        if set(_columns(dst, table)) != set(columns):
            raise ConfigurationError(f"table {table} has different columns in source and destination")
        copied[table] = _copy_table(src, dst, table, columns, _primary_key(src, table) or columns)
    if dst.dialect == "postgresql":  # SQLite's rowids and AUTOINCREMENT follow explicit ids by themselves
        for table, column in identity_columns(dst):
            dst.fetchone(
                f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false) FROM {table}",
                (table, column),
            )
    return copied


def _copy_table(src: Connection, dst: Connection, table: str, columns: Sequence[str], key: Sequence[str]) -> int:
    column_list = ", ".join(columns)
    key_list = ", ".join(key)
    positions = [columns.index(k) for k in key]
    batch = max(1, min(_BATCH_ROWS, _MAX_PARAMS // len(columns)))
    placeholders = "(" + ", ".join("?" for _ in columns) + ")"
    total = 0
    last: Row | None = None
    while True:
        # Keyset pagination in primary-key order: each page is one indexed range scan, and ``entries``
        # are inserted in ``seq`` order.
        where, params = "", []
        if last is not None:
            where = f"WHERE ({key_list}) > ({', '.join('?' for _ in key)})"
            params = [last[p] for p in positions]
        rows = src.fetchall(f"SELECT {column_list} FROM {table} {where} ORDER BY {key_list} LIMIT ?", [*params, batch])
        if not rows:
            return total
        dst.execute(
            f"INSERT INTO {table} ({column_list}) VALUES {', '.join(placeholders for _ in rows)}",
            [value for row in rows for value in row],
        )
        total += len(rows)
        last = rows[-1]


def _require_empty(dst: Connection, tables: Sequence[str]) -> None:
    for table in tables:
        if table == "meta":
            extra = dst.fetchone("SELECT COUNT(*) FROM meta WHERE key <> 'config_version'")
            nonempty = bool(extra and extra[0])
        else:
            nonempty = dst.fetchone(f"SELECT 1 FROM {table} LIMIT 1") is not None
        if nonempty:
            raise ConfigurationError(
                f"the destination ledger is not empty (table {table} has rows); copy into a new database"
            )


def _tables(conn: Connection) -> list[str]:
    if conn.dialect == "sqlite":
        rows = conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = conn.fetchall(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    names = {str(r[0]) for r in rows} - _SKIP
    ordered = [t for t in _ORDER if t in names]
    rest = sorted(names - set(ordered))
    parents = {t: _parents(conn, t) & names for t in rest}
    while rest:  # parents first; a table whose parents cannot all come first goes last as it is
        ready = [t for t in rest if parents[t] <= set(ordered) | {t}] or rest[:1]
        ordered.append(ready[0])
        rest.remove(ready[0])
    return ordered


def _parents(conn: Connection, table: str) -> set[str]:
    if conn.dialect == "sqlite":
        rows = conn.fetchall('SELECT "table" FROM pragma_foreign_key_list(?)', (table,))
    else:
        rows = conn.fetchall(
            "SELECT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid "
            "WHERE k.conrelid = to_regclass(?) AND k.contype = 'f'",
            (table,),
        )
    return {str(r[0]) for r in rows}


def identity_columns(conn: Connection) -> list[tuple[str, str]]:
    """(table, column) of every identity or serial column of a PostgreSQL ledger schema."""
    rows = conn.fetchall(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND (is_identity = 'YES' OR column_default LIKE 'nextval(%') ORDER BY table_name"
    )
    return [(str(r[0]), str(r[1])) for r in rows]


def _columns(conn: Connection, table: str) -> list[str]:
    if conn.dialect == "sqlite":
        rows = conn.fetchall("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
    else:
        rows = conn.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
    return [str(r[0]) for r in rows]


def _primary_key(conn: Connection, table: str) -> list[str]:
    if conn.dialect == "sqlite":
        rows = conn.fetchall("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,))
    else:
        rows = conn.fetchall(
            "SELECT a.attname FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass(?) AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (table,),
        )
    return [str(r[0]) for r in rows]
