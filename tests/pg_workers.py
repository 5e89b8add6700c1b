"""Worker processes for the PostgreSQL stress and crash tests, run as ``python -m tests.pg_workers``.

Each worker is a separate OS process with its own ledger (its own connection pool), started in a
process group of its own "host" so that a whole host can be killed at once.

* ``exhaust URL WORKER GO OUT``: wait for the file GO, then reserve (committing every other job) until a
  budget denies; write the admitted keys to OUT.
* ``churn URL WORKER LOG``: reserve → submit → commit | release forever, riding out an unreachable
  server by retrying each step with the same key; append a line to LOG after each acknowledged step.
* ``churn-threads URL WORKER LOG``: the same in 4 threads sharing one ledger (batched reservations),
  thread ``t`` logging to ``LOG.t``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kling_budget.errors import LedgerUnavailableError
from kling_budget.ledger import open_ledger
from tests import ledger_workers
from tests.ledger_workers import reserve_until_denied

T = TypeVar("T")


class _Go:
    """``reserve_until_denied`` waits on an event; across unrelated processes it is a file appearing."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def wait(self) -> None:
        while not self.path.exists():
            time.sleep(0.005)


def exhaust(url: str, worker: int, go: str, out: str) -> None:
    """Reserve until denied; write the admitted keys, one a line."""
    keys = reserve_until_denied(url, worker, _Go(go), False)
    Path(out).write_text("\n".join(keys), encoding="utf-8")


def _until_done(step: Callable[[], T]) -> T:
    """Retry a ledger step with the same key while the ledger is unavailable (server restarting)."""
    while True:
        try:
            return step()
        except LedgerUnavailableError:
            time.sleep(0.1)


def churn(url: str, worker: int, log_path: str) -> None:
    """Reserve, submit, commit or release forever; log each acknowledged step (fsynced)."""
    ledger_workers.churn(_until_done(lambda: open_ledger(url)), worker, log_path, until_done=_until_done)


def churn_threads(url: str, worker: int, log_path: str, threads: int = 4) -> None:
    """``churn`` in ``threads`` threads sharing one ledger, so that their reservations are batched; thread
    ``t`` logs to ``<log_path>.<t>``."""
    ledger = _until_done(lambda: open_ledger(url))
    for t in range(threads):
        threading.Thread(
            target=ledger_workers.churn,
            args=(ledger, worker * 100 + t, f"{log_path}.{t}"),
            kwargs={"until_done": _until_done},
            daemon=True,
        ).start()
    threading.Event().wait()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "exhaust":
        exhaust(args[0], int(args[1]), args[2], args[3])
    elif command == "churn":
        churn(args[0], int(args[1]), args[2])
    elif command == "churn-threads":
        churn_threads(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown command {command!r}")
