"""``kling-budget db``: schema version, migrations, and moving a ledger to another database.

Thin: it parses, calls :mod:`kling_budget.ledger` and formats. Errors from the library reach the main
CLI's handler (bad input → exit 2, other ledger errors → exit 1); URLs are shown without passwords.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click

from kling_budget.cli._common import AppContext, json_option, pass_app, print_json, print_table
from kling_budget.cli._secrets import refuse_url_password
from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend
from kling_budget.ledger.schema import LATEST_VERSION, MIGRATIONS
from kling_budget.ledger.urls import resolve_db_url, sqlite_path

__all__ = ["COMMANDS", "db"]


def open_unmigrated(url: str | os.PathLike[str] | None) -> Backend:
    """Open the ledger named by ``url`` (as ``--db`` does) without applying migrations."""
    resolved = resolve_db_url(url)
    parts = urlsplit(resolved)
    if parts.scheme == "sqlite":
        from kling_budget.ledger.sqlite import SQLiteBackend

        return SQLiteBackend(sqlite_path(resolved), migrate=False)
    if parts.scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        try:
            from kling_budget.ledger.postgres import PostgresBackend
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL needs the postgres extra: pip install 'kling-budget[postgres]'"
            ) from None
        return PostgresBackend(resolved, migrate=False)
    raise ConfigurationError(
        f"unsupported ledger URL scheme {parts.scheme!r}; accepted: sqlite:///path/to/ledger.db, "
        "a file path, or postgresql://user@host/dbname"
    )


def _status(backend: Backend) -> dict[str, object]:
    version = backend.schema_version()
    pending = [{"version": m.version, "name": m.name} for m in MIGRATIONS if m.version > version]
    return {
        "url": backend.display_url,
        "backend": backend.dialect,
        "schema_version": version,
        "latest_version": LATEST_VERSION,
        "pending": pending,
    }


@click.group()
def db() -> None:
    """The ledger database: schema version, migrations, copying to another database.

    \b
    Example:
      kling-budget db status
      kling-budget --db postgresql://app@db.internal/kling db upgrade
      kling-budget db copy ~/.local/share/kling-budget/ledger.db postgresql://app@db.internal/kling
    """


@db.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the ledger's URL (without password), schema version and pending migrations.

    \b
    Example:
      kling-budget db status --json
    """
    backend = open_unmigrated(app.db)
    try:
        info = _status(backend)
    finally:
        backend.close()
    if as_json:
        print_json(info)
        return
    pending = info["pending"]
    assert isinstance(pending, list)
    rows = [
        ("ledger", info["url"]),
        ("backend", info["backend"]),
        ("schema version", info["schema_version"]),
        ("latest version", info["latest_version"]),
        ("pending", ", ".join(f"{p['version']} ({p['name']})" for p in pending) or "none"),
    ]
    print_table(None, ("", "value"), rows)


@db.command()
@json_option
@pass_app
def upgrade(app: AppContext, as_json: bool) -> None:
    """Apply pending schema migrations (safe to run from several machines at once).

    A ledger is also migrated automatically the first time it is opened empty.

    \b
    Example:
      kling-budget --db postgresql://app@db.internal/kling db upgrade
    """
    backend = open_unmigrated(app.db)
    try:
        before = backend.schema_version()
        applied = backend.upgrade()
        after = backend.schema_version()
        url = backend.display_url
    finally:
        backend.close()
    if as_json:
        print_json({"url": url, "from_version": before, "to_version": after, "applied": applied})
        return
    if applied:
        click.echo(f"{url}: schema {before} → {after} (applied {', '.join(str(v) for v in applied)})")
    else:
        click.echo(f"{url}: schema {after} is up to date")


@db.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@json_option
def copy(source: str, destination: str, as_json: bool) -> None:
    """Copy the whole ledger SRC (history included) into the empty ledger DST, then verify DST.

    SRC and DST are ledger URLs or SQLite file paths (a database password goes in PGPASSWORD or ~/.pgpass,
    not in the URL). Stop the processes writing to SRC first; point them at DST afterwards (``--db`` or
    KLING_BUDGET_DB). Stored secrets are copied encrypted: use the same master key with DST. Exit code 1 if
    DST does not verify.

    \b
    Example:
      kling-budget db copy ledger.db postgresql://app@db.internal/kling
    """
    from kling_budget.ledger.copy import copy_ledger

    refuse_url_password(source, "SRC")
    refuse_url_password(destination, "DST")
    src = open_unmigrated(source)
    try:
        dst = open_unmigrated(destination)
        try:
            report = copy_ledger(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    if as_json:
        print_json(report.to_dict())
    else:
        print_table(
            f"{report.source} → {report.destination} (schema {report.schema_version})",
            ("table", "rows"),
            sorted(report.rows.items()),
        )
        click.echo("verify: ok" if report.ok else "verify: FAILED")
        if report.verify is not None:
            for problem in report.verify.problems[:20]:
                click.echo(f"  {problem}", err=True)
    if not report.ok:
        raise SystemExit(1)


COMMANDS = [db]
