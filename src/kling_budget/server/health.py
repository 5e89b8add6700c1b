"""``/healthz``'s view of the ledger: can it *write*, and can it say so within a second.

A read (``SELECT 1``) succeeds on a full disk, on a SQLite file deleted under the gateway, and on some
corruption; what the gateway needs is a ledger that takes writes. So the probe writes: it stamps a row of the
ledger's ``meta`` table in a real transaction (SQLite also checks that its file is still the one it opened;
see :class:`~kling_budget.ledger.sqlite.SQLiteBackend`). It runs in its own worker thread, one at a time, and
is given ``health_timeout`` seconds: a ledger that does not answer by then (PostgreSQL down, a lock held) is
reported unavailable without waiting, and while that probe is still stuck every later check answers
unavailable at once instead of piling up threads.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import anyio.to_thread

from kling_budget.errors import LedgerUnavailableError
from kling_budget.ledger.backend import Backend, Connection

__all__ = ["LedgerHealth"]

_STAMP_KEY = "gateway_health_at"


def _read_header(path: Path) -> None:
    """Open the SQLite file afresh and read its schema: a header overwritten in place (the open connection's
    cache would not notice) or a missing file shows here. ``mode=rw`` never creates a file."""
    try:
        probe = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        raise LedgerUnavailableError(f"cannot open {path}: {exc}") from None
    try:
        probe.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise LedgerUnavailableError(f"{path} is not a readable ledger: {exc}") from None
    finally:
        probe.close()


class LedgerHealth:
    """Probes one ledger backend for writability, bounded in time (see the module docstring).

    Args:
        backend: the ledger backend.
        timeout: seconds to wait for the probe.
    """

    def __init__(self, backend: Backend, timeout: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self._running = threading.Event()  # set while a probe thread runs (it may outlive its request)

    def _probe(self) -> None:
        try:
            path = getattr(self.backend, "path", None)
            if self.backend.dialect == "sqlite" and isinstance(path, Path):
                _read_header(path)
            stamp = str(time.time_ns())

            def write(conn: Connection) -> None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_STAMP_KEY, stamp),
                )

            self.backend.run(write)
        finally:
            self._running.clear()

    async def check(self) -> str:
        """``"ok"``, or ``"unavailable (<reason>)"``."""
        if self._running.is_set():
            return "unavailable (the previous check is still waiting for the ledger)"
        self._running.set()
        try:
            with anyio.fail_after(self.timeout):
                await anyio.to_thread.run_sync(self._probe, abandon_on_cancel=True)
        except TimeoutError:
            return f"unavailable (no answer within {self.timeout:g} s)"
        except Exception as exc:
            return f"unavailable ({type(exc).__name__})"
        return "ok"
