"""SQLite ledger benchmark: reserve+commit throughput against raw sqlite3 and the recipe's JSON tracker.

Everything is measured in the same run on the same disk, and printed as ratios:

* raw: one-row ``INSERT`` transactions with the ledger's settings (WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE``) — the ceiling for any durable write;
* ledger: ``reserve`` + ``commit`` pairs (two durable transactions each) on a three-budget hierarchy,
  with 1k and with 1M prior entries, in 1 and 4 processes;
* recipe: the widely copied JSON-file ``CostTracker`` (rewrites the whole file per record) at 10k records;
* reads at 1M entries: one budget's status, and usage by project × model × day over the month.

Run: ``.venv/bin/python bench/bench_ledger.py`` (``--quick`` for 100k prior entries).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kling_budget.budgets import Budget
from kling_budget.ledger import open_ledger
from kling_budget.ledger.rows import BUCKET_MICROS
from kling_budget.types import Attribution, PackType
from kling_budget.windows import to_micros

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
PROJECTS = [f"project-{i}" for i in range(10)]
MODELS = ["kling-v2-6", "kling-v2-5-turbo", "kling-v3", "kling-v1-6", "kling-v2-1-master"]


def raw_worker(path: str, count: int, go: object) -> float:
    """One-row insert transactions with the ledger's durability settings."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    go.wait()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (k, v, at) VALUES (?, ?, ?)", (uuid.uuid4().hex, i, time.time_ns()))
        conn.execute("COMMIT")
    return time.perf_counter() - start


def ledger_worker(url: str, count: int, worker: int, go: object) -> float:
    """``count`` reserve + commit pairs against the hierarchy."""
    ledger = open_ledger(url, clock=lambda: NOW)
    attribution = Attribution(project="project-0", user=f"user-{worker}", model="kling-v2-6")
    go.wait()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(count):
        key = uuid.uuid4().hex
        ledger.reserve(key, units_milli=2500, pack_type=PackType.VIDEO, attribution=attribution)
        ledger.commit(key)
    elapsed = time.perf_counter() - start
    ledger.close()
    return elapsed


def run_parallel(target: object, args_for: list[tuple[object, ...]]) -> float:
    """Start workers together; return wall time of the slowest."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        go = manager.Event()
        with context.Pool(len(args_for)) as pool:
            results = [pool.apply_async(target, (*args, go)) for args in args_for]  # type: ignore[arg-type]
            time.sleep(1.0)
            go.set()
            return max(r.get(timeout=3600) for r in results)


def bench_raw(directory: Path, processes: int, per_process: int) -> float:
    path = directory / f"raw-{processes}.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE, v INTEGER, at INTEGER)")
    conn.close()
    elapsed = run_parallel(raw_worker, [(str(path), per_process) for _ in range(processes)])
    return processes * per_process / elapsed


def make_ledger(path: Path) -> str:
    url = f"sqlite:///{path}"
    ledger = open_ledger(url, clock=lambda: NOW)
    ledger.set_budget(Budget.create("account", limit_usd=10**9, period="monthly"))
    ledger.set_budget(Budget.create("project-0", project="project-0", limit_units=10**9, period="monthly"))
    for worker in range(4):
        ledger.set_budget(
            Budget.create(
                f"user-{worker}", project="project-0", user=f"user-{worker}", limit_units=10**9, period="daily"
            )
        )
    ledger.close()
    return url


def bulk_history(path: Path, reservations: int) -> None:
    """Write ``reservations`` committed jobs (2 entries each) over the past 30 days, directly in SQL.

    The rows are exactly what reserve + commit would write (reservation, entries, usage buckets); budget
    windows are folded lazily by the ledger from them. ``verify`` on the result is clean.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    start_us = to_micros(NOW - timedelta(days=30))
    span = to_micros(NOW) - start_us - 10**9
    buckets: dict[tuple[object, ...], list[int]] = {}
    batch_r, batch_e = [], []
    for i in range(reservations):
        at = start_us + span * i // reservations
        project = PROJECTS[i % len(PROJECTS)]
        model = MODELS[i % len(MODELS)]
        user = f"user-{i % 50}"
        key = f"hist-{i:08d}"
        units, usd = 2500, 350_000_000
        batch_r.append((key, project, user, model, units, usd, units, usd, at, at + 1))
        batch_e.append((key, "reserve", units, usd, at))
        batch_e.append((key, "commit", units, usd, at + 1))
        bucket_key = (at - at % BUCKET_MICROS, project, user, "", model, "video")
        total = buckets.setdefault(bucket_key, [0, 0, 0])
        total[0] += units
        total[1] += usd
        total[2] += 1
        if len(batch_r) >= 20000 or i == reservations - 1:
            conn.executemany(
                "INSERT INTO reservations (id, kind, state, request_hash, project, user_id, model, pack_type, "
                "units_milli, usd_nano, actual_milli, actual_nano, reserved_at, resolved_at) "
                "VALUES (?, 'reserve', 'committed', 'bulk', ?, ?, ?, 'video', ?, ?, ?, ?, ?, ?)",
                batch_r,
            )
            conn.executemany(
                "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES (?, ?, ?, ?, ?)", batch_e
            )
            batch_r, batch_e = [], []
    conn.executemany(
        "INSERT INTO usage_buckets (bucket, project, user_id, api_key, model, pack_type, committed_milli, "
        "committed_nano, jobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*k, *v) for k, v in buckets.items()],
    )
    conn.execute("COMMIT")
    conn.close()


def bench_ledger(url: str, processes: int, per_process: int) -> float:
    elapsed = run_parallel(ledger_worker, [(url, per_process, w) for w in range(processes)])
    return processes * per_process / elapsed


class RecipeJsonTracker:
    """The recipe's storage, faithfully: one JSON file, loaded once, rewritten whole on every record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, object] = {"budgets": {}, "usage": []}
        if path.exists():
            self.data = json.loads(path.read_text())

    def record_usage(self, job_id: str, duration: int, model: str, project_id: str) -> None:
        usage = self.data["usage"]
        assert isinstance(usage, list)
        usage.append(
            {
                "job_id": job_id,
                "timestamp": datetime.now().isoformat(),
                "duration": duration,
                "model": model,
                "project_id": project_id,
                "credits": 2.5,
                "cost_usd": 0.35,
            }
        )
        with open(self.path, "w") as handle:
            json.dump(self.data, handle, indent=2)


def bench_recipe(directory: Path, prior: int, count: int) -> float:
    tracker = RecipeJsonTracker(directory / "cost_tracking.json")
    for i in range(prior):
        tracker.data["usage"].append(
            {
                "job_id": f"p{i}",
                "timestamp": "2026-11-01T00:00:00",
                "duration": 5,  # type: ignore[union-attr]
                "model": "kling-v2-6",
                "project_id": "p",
                "credits": 2.5,
                "cost_usd": 0.35,
            }
        )
    start = time.perf_counter()
    for i in range(count):
        tracker.record_usage(f"j{i}", 5, "kling-v2-6", "p")
    return count / (time.perf_counter() - start)


def timed(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k prior entries instead of 1M")
    parser.add_argument("--dir", help="directory for the databases (default: a temp dir on this disk)")
    args = parser.parse_args()
    prior_reservations = 50_000 if args.quick else 500_000
    directory = Path(args.dir or tempfile.mkdtemp(prefix="kb-bench-", dir=os.getcwd()))
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"kling-budget ledger benchmark — {sys.platform}, {os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}, "
        f"WAL + synchronous=FULL, dir {directory}"
    )

    raw1 = bench_raw(directory, 1, 3000)
    raw4 = bench_raw(directory, 4, 1000)

    small = make_ledger(directory / "ledger-1k.db")
    bulk_history(directory / "ledger-1k.db", 500)
    small1 = bench_ledger(small, 1, 1500)
    small4 = bench_ledger(small, 4, 500)

    big_path = directory / "ledger-1m.db"
    big = make_ledger(big_path)
    started = time.perf_counter()
    bulk_history(big_path, prior_reservations)
    load_seconds = time.perf_counter() - started
    big1 = bench_ledger(big, 1, 1500)
    big4 = bench_ledger(big, 4, 500)

    ledger = open_ledger(big, clock=lambda: NOW)
    ledger.budget_status("project-0")
    status_ms = timed(lambda: ledger.budget_status("project-0"), 200) * 1000
    month = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    rows: list[object] = []
    usage_s = timed(
        lambda: rows.append(ledger.usage(start=month[0], end=month[1], group_by=("project", "model", "day"))), 3
    )
    # The same 29 days cut on whole quarter hours (roll-up only) and at instants inside quarter hours (the
    # partial quarter hour at each edge read from the reservations): what exact edges cost.
    aligned = (NOW - timedelta(days=29, minutes=15), NOW - timedelta(minutes=45))
    inside = (NOW - timedelta(days=29, minutes=7, seconds=31.123), NOW - timedelta(minutes=52, seconds=13.4))
    groups = ("project", "model", "day")
    aligned_s = timed(lambda: ledger.usage(start=aligned[0], end=aligned[1], group_by=groups), 5)
    inside_s = timed(lambda: ledger.usage(start=inside[0], end=inside[1], group_by=groups), 5)
    entries = ledger.backend.run(lambda c: c.fetchone("SELECT COUNT(*) FROM entries"), write=False)
    ledger.close()

    recipe1k = bench_recipe(directory / "r1k", 1_000, 100) if (directory / "r1k").mkdir() is None else 0.0
    recipe10k = bench_recipe(directory / "r10k", 10_000, 30) if (directory / "r10k").mkdir() is None else 0.0

    def line(label: str, value: float, unit: str, base: float | None = None) -> None:
        ratio = f"{value / base:6.2f}× raw" if base else ""
        print(f"  {label:<58} {value:>10,.0f} {unit:<8} {ratio}")

    print(
        f"\nWrites (one durable transaction = one fsync of the WAL); history: {entries[0]:,} entries "
        f"(bulk-loaded in {load_seconds:.0f} s)"
    )
    line("raw sqlite3 1-row INSERT tx, 1 process", raw1, "tx/s")
    line("raw sqlite3 1-row INSERT tx, 4 processes", raw4, "tx/s")
    line("ledger reserve+commit pairs, 1 process, 1k entries", small1, "pairs/s", raw1)
    line("ledger reserve+commit pairs, 4 processes, 1k entries", small4, "pairs/s", raw4)
    line(f"ledger reserve+commit pairs, 1 process, {entries[0] // 1000}k entries", big1, "pairs/s", raw1)
    line(f"ledger reserve+commit pairs, 4 processes, {entries[0] // 1000}k entries", big4, "pairs/s", raw4)
    line("recipe JSON tracker record_usage at 1k records", recipe1k, "rec/s", raw1)
    line("recipe JSON tracker record_usage at 10k records", recipe10k, "rec/s", raw1)
    print(
        f"\n  ledger operations/s vs raw tx/s (reserve and commit are one durable transaction each): "
        f"1 process {2 * big1 / raw1:.2f}×, 4 processes {2 * big4 / raw4:.2f}× (goal ≥ 0.3×); "
        f"counted in pairs: {big1 / raw1:.2f}× / {big4 / raw4:.2f}×"
    )
    print(
        f"  per-operation cost at {entries[0] // 1000}k vs 1k entries: 1 process {small1 / big1:.2f}×, "
        f"4 processes {small4 / big4:.2f}× (goal ≤ 1.3×)"
    )
    print(f"  ledger vs recipe JSON at 10k records: {big1 / recipe10k:,.0f}× faster per recorded job")
    print(f"\nReads at {entries[0] // 1000}k entries")
    print(f"  budget status (median of 200)                               {status_ms:8.2f} ms    (goal ≤ 5 ms)")
    print(
        f"  usage by project × model × day over the month (median of 3)  {usage_s * 1000:8.0f} ms    "
        f"(goal ≤ 1000 ms; {len(rows[0]):,} rows)"
    )  # type: ignore[arg-type]
    print(
        f"  same, 29 days cut inside quarter hours (exact edges)          {inside_s * 1000:8.0f} ms    "
        f"{inside_s / aligned_s:.2f}× the same span cut on quarter hours ({aligned_s * 1000:.0f} ms, median of 5)"
    )


if __name__ == "__main__":
    main()
