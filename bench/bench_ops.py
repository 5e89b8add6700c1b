"""One job's ledger operations, one at a time: latency and client CPU of each, next to a raw transaction.

Usage: .venv/bin/python bench/bench_ops.py [--url URL] [--jobs N]

One thread runs N jobs as the gateway does (``reserve`` with ``submitted=True``, ``mark_submitted`` with
Kling's task id, ``commit``) against a two-budget hierarchy (a daily project budget and a monthly
account-wide one), on the SQLite ledger in a temporary file and on PostgreSQL (``--url``, default
$KLING_BUDGET_TEST_PG_URL or postgresql://postgres@127.0.0.1:5432/test; a throwaway schema in it). The
baseline, measured in the same run on the same backend, is a raw single-row write transaction (SQLite: an
INSERT synced as the ledger syncs; PostgreSQL: ``BEGIN; UPDATE … RETURNING; COMMIT`` with psycopg). For
each operation it prints the median wall time, the client CPU per call (``time.process_time``: this
process only, not the database server) and the ratio of its median to the raw transaction's. The unit is
one call of the operation; a job is the three of them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from kling_budget.budgets import Budget
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.types import Attribution, PackType

DEFAULT_URL = os.environ.get("KLING_BUDGET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ATTRIBUTION = Attribution(project="bench", user="loadgen", api_key="bench-key", model="kling-v2-6")


def timed(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """(median wall ms, mean client CPU µs) over ``calls``."""
    walls = []
    cpu_start = time.process_time()
    for call in calls:
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / len(calls)
    return statistics.median(walls) * 1000, cpu * 1e6


def ledger_ops(ledger: Ledger, jobs: int) -> dict[str, tuple[float, float]]:
    ledger.set_budget(Budget.create("bench-daily", project="bench", period="daily", limit_units=10**9))
    ledger.set_budget(Budget.create("account-monthly", period="monthly", limit_units=10**9))
    keys = [uuid.uuid4().hex for _ in range(jobs + 20)]
    for key in keys[:20]:  # warm: configuration cached, windows created, statements prepared
        ledger.reserve(key, units_milli=1500, pack_type=PackType.VIDEO, attribution=ATTRIBUTION, submitted=True)
        ledger.mark_submitted(key, task_id=f"t-{key}")
        ledger.commit(key)
    keys = keys[20:]
    return {
        "reserve": timed(
            [
                lambda key=key: ledger.reserve(
                    key, units_milli=1500, pack_type=PackType.VIDEO, attribution=ATTRIBUTION, submitted=True
                )
                for key in keys
            ]
        ),
        "mark_submitted": timed([lambda key=key: ledger.mark_submitted(key, task_id=f"t-{key}") for key in keys]),
        "commit": timed([lambda key=key: ledger.commit(key) for key in keys]),
    }


def raw_sqlite(path: Path, count: int) -> tuple[float, float]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v INTEGER)")
    wal = os.open(f"{path}-wal", os.O_RDONLY)

    def one() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO raw (v) VALUES (1)")
        conn.execute("COMMIT")
        os.fdatasync(wal)  # synced as the ledger syncs

    try:
        return timed([one] * count)
    finally:
        os.close(wal)
        conn.close()


def raw_postgres(url: str, count: int) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, held BIGINT NOT NULL, lim BIGINT NOT NULL)")
        conn.execute("INSERT INTO raw VALUES (1, 0, 1000000000000)")

        def one() -> None:
            with conn.transaction():
                conn.execute("UPDATE raw SET held = held + 1 WHERE id = 1 AND held + 1 <= lim RETURNING held")

        return timed([one] * count)


def report(label: str, raw: tuple[float, float], ops: dict[str, tuple[float, float]]) -> None:
    print(f"\n{label}")
    print(f"  {'operation':<16} {'median ms':>10} {'client CPU µs':>14} {'vs raw tx':>10}")
    print(f"  {'raw write tx':<16} {raw[0]:>10.2f} {raw[1]:>14.0f} {'1.00':>10}")
    for name, (wall, cpu) in ops.items():
        print(f"  {name:<16} {wall:>10.2f} {cpu:>14.0f} {wall / raw[0]:>9.2f}×")
    print(f"  one job (3 calls) {sum(w for w, _ in ops.values()):>8.2f} ms, load {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL server to measure on (a throwaway schema).")
    parser.add_argument("--jobs", type=int, default=400, help="Jobs per backend.")
    parser.add_argument("--no-postgres", action="store_true", help="Measure SQLite only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        raw = raw_sqlite(Path(directory) / "raw.db", args.jobs)
        ledger = open_ledger(f"sqlite:///{Path(directory) / 'ledger.db'}")
        try:
            report("SQLite", raw, ledger_ops(ledger, args.jobs))
        finally:
            ledger.close()
    if args.no_postgres:
        return
    schema = f"kb_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}options=-csearch_path%3D{schema}"
    try:
        raw = raw_postgres(url, args.jobs)
        ledger = open_ledger(url)
        try:
            report("PostgreSQL", raw, ledger_ops(ledger, args.jobs))
        finally:
            ledger.close()
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
