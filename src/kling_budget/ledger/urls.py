"""Ledger URLs: ``sqlite:///path/to/file.db`` (default: a file in the user's data directory), a plain file
path, or ``postgresql://user@host/db``. ``--db`` and ``KLING_BUDGET_DB`` choose one."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from kling_budget.errors import ConfigurationError
from kling_budget.ledger.backend import Backend
from kling_budget.ledger.core import Ledger
from kling_budget.private_files import data_dir
from kling_budget.types import PackType

__all__ = [
    "DB_ENV",
    "default_db_path",
    "ledger_exists",
    "open_backend",
    "open_ledger",
    "resolve_db_url",
    "sqlite_path",
    "sqlite_url",
]

DB_ENV = "KLING_BUDGET_DB"


def default_db_path() -> Path:
    """``$KLING_BUDGET_HOME/ledger.db``, else ``ledger.db`` in the platform's user data directory."""
    return data_dir() / "ledger.db"


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The URL of a SQLite ledger file: ``sqlite://`` and its absolute path, ``sqlite:///home/me/ledger.db``."""
    return "sqlite:///" + Path(path).expanduser().absolute().as_posix().lstrip("/")


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL names: ``sqlite:///abs/path.db`` (``sqlite:////abs/path.db`` too) or
    ``sqlite://relative/path.db``."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path if parts.netloc else parts.path
    if not path.strip("/"):
        raise ConfigurationError("a sqlite URL needs a file path, e.g. sqlite:///home/me/ledger.db")
    if path.startswith("//"):  # sqlite:////abs/path.db, as SQLAlchemy writes it
        path = "/" + path.lstrip("/")
    _check_path_length(path)
    return Path(path).expanduser()


def resolve_db_url(url: str | os.PathLike[str] | None) -> str:
    """The ledger URL to use: the argument, else ``$KLING_BUDGET_DB``, else the default SQLite file."""
    if url is None or str(url) == "":
        url = os.environ.get(DB_ENV) or ""
    text = str(url)
    if not text:
        return sqlite_url(default_db_path())
    if "://" not in text:
        return sqlite_url(text)
    return text


def ledger_exists(url: str | os.PathLike[str] | None = None) -> bool:
    """Whether the ledger named by ``url`` exists already (a file or database with the schema); creates nothing."""
    resolved = resolve_db_url(url)
    parts = urlsplit(resolved)
    if parts.scheme == "sqlite" and not sqlite_path(resolved).is_file():
        return False
    backend = open_backend(resolved, migrate=False)
    try:
        return backend.schema_version() > 0
    finally:
        backend.close()


def open_backend(url: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> Backend:
    """Open (and migrate, if empty or behind, unless ``migrate`` is false) the ledger database named by ``url``."""
    resolved = resolve_db_url(url)
    parts = urlsplit(resolved)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "sqlite":
        from kling_budget.ledger.sqlite import SQLiteBackend

        timeout = _float_option(options, "timeout", 10.0)
        return SQLiteBackend(
            sqlite_path(resolved),
            busy_timeout=timeout,
            synchronous=options.get("synchronous", "FULL"),
            migrate=migrate,
        )
    if parts.scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        try:
            from kling_budget.ledger.postgres import PostgresBackend  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigurationError(
                "PostgreSQL needs the postgres extra: pip install 'kling-budget[postgres]'"
                f" ({exc.name or exc} is missing)"
            ) from None
        backend: Backend = PostgresBackend(resolved, migrate=migrate)
        return backend
    raise ConfigurationError(
        f"unsupported ledger URL scheme {parts.scheme!r}; accepted: sqlite:///path/to/ledger.db, "
        "a file path, or postgresql://user@host/dbname"
    )


_MAX_PATH_BYTES = 4095
_MAX_NAME_BYTES = 255


def _check_path_length(path: str) -> None:
    """A path the filesystem cannot hold is the caller's mistake, not an unavailable ledger."""
    encoded = os.fsencode(path)
    if len(encoded) > _MAX_PATH_BYTES or any(len(part) > _MAX_NAME_BYTES for part in encoded.split(b"/")):
        shown = path if len(path) <= 60 else path[:59] + "…"
        raise ConfigurationError(
            f"the ledger path {shown!r} is too long (at most {_MAX_NAME_BYTES} bytes per name, "
            f"{_MAX_PATH_BYTES} in all)"
        )


def open_ledger(
    url: str | os.PathLike[str] | None = None,
    *,
    list_prices: Mapping[PackType, int] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Ledger:
    """Open the ledger named by ``url`` (see :func:`resolve_db_url`)."""
    return Ledger(open_backend(url), list_prices=list_prices, clock=clock)


def _float_option(options: Mapping[str, str], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        raise ConfigurationError(f"ledger URL option {name}={options[name]!r} is not a number") from None
    if value <= 0:
        raise ConfigurationError(f"ledger URL option {name} must be positive")
    return value
