"""PostgreSQL for tests: a fresh schema per test on the server named by KLING_BUDGET_TEST_PG_URL.

Default: postgresql://postgres@127.0.0.1:5432/test (trust auth, as in CI). When CI is set and the server
is unreachable the tests fail loudly instead of skipping.

A schema per test (``options=-csearch_path=<schema>`` in the URL) costs about 8 ms to create and drop;
a database per test (``CREATE DATABASE … TEMPLATE template0``) about 160 ms (measured here), so schemas
it is. The ledger salts its advisory-lock keys with ``current_schema()``, so tests in different schemas
of one database never wait on each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

PG_URL_ENV = "KLING_BUDGET_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachable: bool | None = None
_unreachable_reason = ""


def base_url() -> str:
    """The test server's URL."""
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def require_postgres() -> None:
    """Skip the calling test if the test server is unreachable, or fail it loudly when ``CI`` is set."""
    global _reachable, _unreachable_reason
    if _reachable is None:
        try:
            import psycopg

            with psycopg.connect(base_url(), connect_timeout=5, autocommit=True) as conn:
                conn.execute("SELECT 1")
            _reachable = True
        except Exception as exc:  # ImportError included: no driver means no PostgreSQL tests
            _reachable = False
            _unreachable_reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    if not _reachable:
        message = (
            f"PostgreSQL test server unreachable at {_safe(base_url())} ({_unreachable_reason}); "
            f"set {PG_URL_ENV} to a reachable server"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {message}", pytrace=False)
        pytest.skip(message)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``options=-csearch_path=<schema>`` (replacing any ``options`` it had)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def with_host(url: str, host: str, port: int) -> str:
    """``url`` pointing at ``host:port`` (user, database and options kept)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    if parts.password:
        user = f"{parts.username}:{parts.password}@"
    return urlunsplit((parts.scheme, f"{user}{host}:{port}", parts.path, parts.query, ""))


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """Yield ``url`` with its search_path set to a new empty schema on that server (dropped afterwards)."""
    import psycopg

    schema = f"kb_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """Yield a URL whose search_path is a new empty schema (dropped afterwards)."""
    require_postgres()
    with fresh_schema(base_url()) as url:
        yield url


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
