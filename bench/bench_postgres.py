"""Reservations per second on the PostgreSQL ledger, next to raw conditional UPDATEs on the same server.

Usage: .venv/bin/python bench/bench_postgres.py [--url URL] [--seconds S] [--workers 1,8,32]

For each worker count and each layout, N processes (each with its own pool, as separate hosts would
have) run for S seconds:

* ledger/hot: ``Ledger.reserve`` with the three-level hierarchy of the issue: one account-wide budget
  every job counts against (the hot row), a budget per project (two projects) and one per user;
* ledger/spread: the same three levels, but each worker has its own project, so no row is shared;
* raw/hot, raw/spread: ``BEGIN; UPDATE hot SET held = held + 1 WHERE id = ? AND held + 1 <= lim
  RETURNING held; COMMIT`` with psycopg 3 on the same server, one shared row or one row per worker;
* ledger/hot, batched: the hot layout with the N workers as threads of one process sharing one ledger,
  whose concurrent reservations go to the server in one transaction (compared with raw/hot at N).
* ledger/hot, jobs: the same threads running whole jobs, a reservation then its commit at the held price
  (as the gateway's settle worker commits), against raw/hot at N counted as two transactions per job.

The unit counted is one reservation (one job admitted against every budget of its hierarchy); on the
"jobs" rows, one job reserved and committed. Each row prints the 1-minute load average at its end.

It prints tx/s for each, the ratio ledger/raw, p50/p99 latency, the deadlocks ``pg_stat_database``
counted in the database during the cell (database-wide: other users of the same database count too) and
the retries our processes made (a deadlock or serialization failure the ledger hit is retried and
counted there). URL default: $KLING_BUDGET_TEST_PG_URL or
postgresql://postgres@127.0.0.1:5432/test; the run uses a throwaway schema in it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from kling_budget.budgets import Budget
from kling_budget.ledger import Ledger
from kling_budget.ledger.postgres import PostgresBackend
from kling_budget.types import Attribution, PackType

DEFAULT_URL = os.environ.get("KLING_BUDGET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROJECTS = 2
PRICE_MILLI = 5_000  # a 5-unit job
LIMIT_UNITS = 10**12  # never reached: this measures throughput, not denials


@dataclass
class Result:
    count: int
    latencies: list[float]
    retries: int


def _schema_url(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def _attribution(layout: str, worker: int) -> Attribution:
    if layout == "hot":
        return Attribution(project=f"p{worker % PROJECTS}", user=f"u{worker}", model="kling-v2-6")
    return Attribution(project=f"w{worker}", user=f"u{worker}", model="kling-v2-6")


def setup_ledger(url: str, layout: str, workers: int) -> None:
    """Budgets of the three-level hierarchy for ``workers`` workers."""
    ledger = Ledger(PostgresBackend(url))
    try:
        if layout == "hot":
            ledger.set_budget(Budget.create("account", limit_units=LIMIT_UNITS))
            for p in range(PROJECTS):
                ledger.set_budget(Budget.create(f"project-p{p}", project=f"p{p}", limit_units=LIMIT_UNITS))
            for w in range(workers):
                a = _attribution(layout, w)
                ledger.set_budget(Budget.create(f"user-{w}", project=a.project, user=a.user, limit_units=LIMIT_UNITS))
        else:
            for w in range(workers):
                a = _attribution(layout, w)
                ledger.set_budget(Budget.create(f"project-{w}", project=a.project, limit_units=LIMIT_UNITS))
                ledger.set_budget(Budget.create(f"user-{w}", project=a.project, user=a.user, limit_units=LIMIT_UNITS))
                ledger.set_budget(
                    Budget.create(f"model-{w}", project=a.project, user=a.user, model=a.model, limit_units=LIMIT_UNITS)
                )
    finally:
        ledger.close()


def _ready(ready: Any) -> None:
    with ready.get_lock():
        ready.value += 1


def ledger_worker(url: str, layout: str, worker: int, ready: Any, start: Any, stop_at: Any, out: Any) -> None:
    """Reserve in a loop until ``stop_at``; report count, latencies and retries."""
    backend = PostgresBackend(url, pool_min=1, pool_max=1)
    ledger = Ledger(backend)
    attribution = _attribution(layout, worker)
    prefix = uuid.uuid4().hex[:8]
    for i in range(20):  # warm the config cache, window rows and prepared statements
        ledger.reserve(f"warm-{prefix}-{i}", units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
    backend.stats.clear()
    _ready(ready)
    start.wait()
    deadline = stop_at.value
    count = 0
    latencies: list[float] = []
    while True:
        t0 = time.perf_counter()
        if time.time() >= deadline:
            break
        ledger.reserve(f"{prefix}-{count}", units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
        latencies.append(time.perf_counter() - t0)
        count += 1
    out.put(Result(count, latencies[::10], sum(backend.stats.values())))
    ledger.close()


def ledger_jobs_worker(url: str, layout: str, workers: int, ready: Any, start: Any, stop_at: Any, out: Any) -> None:
    """``workers`` threads of this process running whole jobs (reserve, then commit) through one ledger."""
    ledger_threads_worker(url, layout, workers, ready, start, stop_at, out, commit=True)


def ledger_threads_worker(
    url: str, layout: str, workers: int, ready: Any, start: Any, stop_at: Any, out: Any, *, commit: bool = False
) -> None:
    """``workers`` threads of this process reserving through one shared ledger (batched); with ``commit``
    each reservation is then committed at its held price (a whole job)."""
    import threading

    backend = PostgresBackend(url, pool_min=1, pool_max=4)
    ledger = Ledger(backend)
    prefix = uuid.uuid4().hex[:8]
    for w in range(workers):
        for i in range(5):
            key = f"warm-{prefix}-{w}-{i}"
            ledger.reserve(key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=_attribution(layout, w))
    backend.stats.clear()
    results: list[Result] = []

    def loop(worker: int) -> None:
        attribution = _attribution(layout, worker)
        count = 0
        latencies: list[float] = []
        while True:
            t0 = time.perf_counter()
            if time.time() >= stop_at.value:
                break
            key = f"{prefix}-{worker}-{count}"
            ledger.reserve(key, units_milli=PRICE_MILLI, pack_type=PackType.VIDEO, attribution=attribution)
            if commit:
                ledger.commit(key)
            latencies.append(time.perf_counter() - t0)
            count += 1
        results.append(Result(count, latencies[::10], 0))

    for _ in range(workers):
        _ready(ready)
    start.wait()
    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results[1:]:
        results[0].count += result.count
        results[0].latencies += result.latencies
    results[0].retries = sum(backend.stats.values())
    out.put(results[0])
    ledger.close()


def raw_worker(url: str, layout: str, worker: int, ready: Any, start: Any, stop_at: Any, out: Any) -> None:
    """The same loop with one conditional single-row UPDATE per transaction."""
    conn = psycopg.connect(url)
    conn.execute("SET synchronous_commit = on")
    conn.commit()
    row_id = 1 if layout == "hot" else worker + 1
    sql = "UPDATE bench_raw SET held = held + %s WHERE id = %s AND held + %s <= lim RETURNING held"
    for _ in range(20):
        conn.execute(sql, (1, row_id, 1)).fetchone()
        conn.commit()
    _ready(ready)
    start.wait()
    deadline = stop_at.value
    count = 0
    latencies: list[float] = []
    retries = 0
    while True:
        t0 = time.perf_counter()
        if time.time() >= deadline:
            break
        try:
            row = conn.execute(sql, (1, row_id, 1)).fetchone()
            conn.commit()
        except psycopg.errors.DeadlockDetected:
            conn.rollback()
            retries += 1
            continue
        assert row is not None
        latencies.append(time.perf_counter() - t0)
        count += 1
    out.put(Result(count, latencies[::10], retries))
    conn.close()


def setup_raw(url: str, workers: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, held BIGINT NOT NULL, lim BIGINT NOT NULL)")
        conn.execute(
            "INSERT INTO bench_raw SELECT g, 0, 9223372036854775000 FROM generate_series(1, %s) g", (max(workers, 1),)
        )


def deadlocks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0


def run_cell(kind: str, url: str, layout: str, workers: int, seconds: float) -> tuple[float, float, float, int, int]:
    """(tx/s, p50 ms, p99 ms, deadlocks, retries) of one cell."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    ready = ctx.Value("i", 0)
    stop_at = ctx.Value("d", 0.0)
    out = ctx.Queue()
    if kind in ("ledger-threads", "ledger-jobs"):
        target = ledger_jobs_worker if kind == "ledger-jobs" else ledger_threads_worker
        procs = [ctx.Process(target=target, args=(url, layout, workers, ready, start, stop_at, out))]
    else:
        target = ledger_worker if kind == "ledger" else raw_worker
        procs = [ctx.Process(target=target, args=(url, layout, w, ready, start, stop_at, out)) for w in range(workers)]
    for p in procs:
        p.start()
    waited = time.monotonic() + 300
    while ready.value < workers:  # every worker connected and warmed up before the clock starts
        if time.monotonic() > waited or any(p.exitcode not in (None, 0) for p in procs):
            raise SystemExit(f"{kind} workers did not start ({ready.value} of {workers} ready)")
        time.sleep(0.05)
    before = deadlocks(url)
    stop_at.value = time.time() + seconds
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = seconds  # every worker counts only transactions started before stop_at
    for p in procs:
        p.join(timeout=30)
    total = sum(r.count for r in results)
    latencies = sorted(x for r in results for x in r.latencies)
    p50 = statistics.median(latencies) * 1000 if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    return total / elapsed, p50, p99, deadlocks(url) - before, sum(r.retries for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", default="1,8,32")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    base = args.url
    with psycopg.connect(base, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    server = version[0] if version else "?"
    print(f"PostgreSQL {server}, {os.cpu_count()} CPUs, synchronous_commit={sync[0] if sync else '?'}")
    print(f"{args.seconds:g} s per cell; reserve = 3 budget windows + reservation, entry, roll-up; unit: a reservation")
    header = (
        f"{'workers':>7} {'layout':>13} | {'ledger tx/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'raw tx/s':>9} {'p50 ms':>7} | {'ratio':>5} | {'deadlocks':>9} {'retries':>7} | {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for workers in counts:
        for layout in ("hot", "spread", "hot, batched", "hot, jobs"):
            if layout in ("hot, batched", "hot, jobs") and workers == 1:
                continue
            schema = f"kb_bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            url = _schema_url(base, schema)
            try:
                shape = "hot" if layout.startswith("hot") else layout
                setup_ledger(url, shape, workers)
                setup_raw(url, workers)
                kind = {"hot, batched": "ledger-threads", "hot, jobs": "ledger-jobs"}.get(layout, "ledger")
                ledger = run_cell(kind, url, shape, workers, args.seconds)
                raw = run_cell("raw", url, shape, workers, args.seconds)
                if layout == "hot, jobs":  # a raw job: two transactions (hold, then settle) on the hot row
                    raw = (raw[0] / 2, *raw[1:])
            finally:
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            ratio = ledger[0] / raw[0] if raw[0] else 0.0
            print(
                f"{workers:>7} {layout:>13} | {ledger[0]:>11.0f} {ledger[1]:>7.2f} {ledger[2]:>7.2f} | "
                f"{raw[0]:>9.0f} {raw[1]:>7.2f} | {ratio:>5.2f} | {ledger[3] + raw[3]:>9} {ledger[4] + raw[4]:>7} | "
                f"{os.getloadavg()[0]:>5.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
