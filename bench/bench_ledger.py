"""SQLite ledger benchmark: reserve+commit throughput against raw sqlite3 and the recipe's JSON tracker.

Everything is measured in the same run on the same disk, and printed as ratios:

* raw: one-row ``INSERT`` transactions with the ledger's settings (WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE``) — the ceiling for any durable write;
* ledger: ``reserve`` + ``commit`` pairs (two durable transactions each: the unit counted is the pair,
  i.e. one job) on a three-budget hierarchy, with 1k and with 1M prior entries, in 1 and 4 processes,
  and in 16 and 64 threads of one process (their writes group-committed);
* recipe: the widely copied JSON-file ``CostTracker`` (rewrites the whole file per record) at 10k records;
* reads at 1M entries: one budget's status, and usage by project × model × day over the month.

Every row prints the 1-minute load average when it was measured (other work on the machine slows the
CPU-bound ledger more than the disk-bound raw baseline). Run: ``.venv/bin/python bench/bench_ledger.py``
(``--quick`` for 100k prior entries).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
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


def raw_worker(path: str, count: int, own_sync: bool, go: object) -> float:
    """One-row insert transactions, each durable: SQLite's ``synchronous=FULL`` (the baseline), or with
    ``own_sync`` the way the ledger syncs (``NORMAL``, then ``fdatasync`` of the WAL after COMMIT)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'NORMAL' if own_sync else 'FULL'}")
    go.wait()  # type: ignore[attr-defined]
    wal = -1
    start = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (k, v, at) VALUES (?, ?, ?)", (uuid.uuid4().hex, i, time.time_ns()))
        conn.execute("COMMIT")
        if own_sync:
            wal = wal if wal >= 0 else os.open(f"{path}-wal", os.O_RDONLY)
            os.fdatasync(wal)
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


def bench_threads(url: str, threads: int, per_thread: int) -> float:
    """Pairs/s of ``threads`` threads sharing one ledger in this process (writes group-committed)."""
    ledger = open_ledger(url, clock=lambda: NOW)
    go = threading.Event()

    def work(worker: int) -> None:
        attribution = Attribution(project="project-0", user=f"user-{worker % 4}", model="kling-v2-6")
        go.wait()
        for _ in range(per_thread):
            key = uuid.uuid4().hex
            ledger.reserve(key, units_milli=2500, pack_type=PackType.VIDEO, attribution=attribution)
            ledger.commit(key)

    workers = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    start, cpu = time.perf_counter(), time.process_time()
    go.set()
    for worker in workers:
        worker.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    group = ledger.backend.group  # type: ignore[attr-defined]
    print(
        f"    {threads} threads: {group.calls / max(1, group.batches):.1f} transactions per commit on average, "
        f"{cpu / (threads * per_thread) * 1e6:.0f} µs of CPU per pair (this process, all threads)"
    )
    ledger.close()
    return threads * per_thread / elapsed


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


def bench_raw(directory: Path, processes: int, per_process: int, own_sync: bool = False) -> float:
    path = directory / f"raw-{processes}{'-own-sync' if own_sync else ''}.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE, v INTEGER, at INTEGER)")
    conn.close()
    elapsed = run_parallel(raw_worker, [(str(path), per_process, own_sync) for _ in range(processes)])
    return processes * per_process / elapsed


class _Recorder:
    """Stands in for the ledger's sqlite3 connection and records every statement it runs."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw
        self.statements: list[tuple[str, tuple[object, ...]]] = []

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        self.statements.append((sql, tuple(params)))
        return self.raw.execute(sql, params)

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)


def bench_statements(url: str, path: Path, count: int) -> float:
    """The floor: the very statements the ledger runs for one reserve + commit (BEGIN IMMEDIATE … COMMIT,
    twice), replayed through raw sqlite3 and synced as the ledger syncs (``fdatasync`` of the WAL after each
    COMMIT), a new key each time: no ledger Python at all. Pairs/s."""
    ledger = open_ledger(url, clock=lambda: NOW)
    attribution = Attribution(project="project-0", user="user-0", model="kling-v2-6")
    ledger.reserve("floor-warm", units_milli=2500, pack_type=PackType.VIDEO, attribution=attribution)
    connection = ledger.backend._conn  # type: ignore[attr-defined]
    recorder = _Recorder(connection.raw)
    connection.raw = recorder
    ledger.reserve("floor-probe", units_milli=2500, pack_type=PackType.VIDEO, attribution=attribution)
    ledger.commit("floor-probe")
    connection.raw = recorder.raw
    ledger.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    wal = os.open(f"{path}-wal", os.O_RDONLY)
    start = time.perf_counter()
    for _ in range(count):
        key = uuid.uuid4().hex
        for sql, params in recorder.statements:
            conn.execute(sql, tuple(key if value == "floor-probe" else value for value in params))
            if sql == "COMMIT":
                os.fdatasync(wal)  # synced as the ledger syncs
    elapsed = time.perf_counter() - start
    os.close(wal)
    conn.close()
    return count / elapsed


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
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the load's WAL goes into the file before anything is timed
    conn.close()


def warm(url: str) -> None:
    """One job in every budget's current window, so that the windows exist before anything is timed (the
    first job of a window folds the window's history once; measured cells show the steady state)."""
    ledger = open_ledger(url, clock=lambda: NOW)
    for worker in range(4):
        attribution = Attribution(project="project-0", user=f"user-{worker}", model="kling-v2-6")
        ledger.reserve(f"warm-{worker}", units_milli=2500, pack_type=PackType.VIDEO, attribution=attribution)
        ledger.commit(f"warm-{worker}")
    ledger.close()


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
    parser.add_argument("--dir", help="directory for the databases (default: a temp dir on this disk, removed after)")
    args = parser.parse_args()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        run(Path(args.dir), args.quick)
        return
    directory = Path(tempfile.mkdtemp(prefix="kb-bench-", dir=os.getcwd()))
    try:
        run(directory, args.quick)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(directory: Path, quick: bool) -> None:
    """Every measurement, with the databases in ``directory``."""
    prior_reservations = 50_000 if quick else 500_000
    print(
        f"kling-budget ledger benchmark — {sys.platform}, {os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}, "
        f"WAL + synchronous=FULL, dir {directory}"
    )

    rows: list[tuple[str, float, str, float | None, float]] = []

    def measure(label: str, unit: str, base: float | None, fn: object) -> float:
        value = float(fn())  # type: ignore[operator]
        rows.append((label, value, unit, base, os.getloadavg()[0]))
        print(f"  measured: {label}: {value:,.0f} {unit} (load {rows[-1][4]:.1f})", flush=True)
        return value

    raw1 = measure("raw sqlite3 1-row INSERT tx, 1 process", "tx/s", None, lambda: bench_raw(directory, 1, 3000))
    raw4 = measure("raw sqlite3 1-row INSERT tx, 4 processes", "tx/s", None, lambda: bench_raw(directory, 4, 1000))
    measure(
        "  the same, synced as the ledger syncs, 1 process", "tx/s", raw1, lambda: bench_raw(directory, 1, 3000, True)
    )

    small = make_ledger(directory / "ledger-1k.db")
    bulk_history(directory / "ledger-1k.db", 500)
    warm(small)
    small1 = measure("ledger pairs, 1 process, 1k entries", "pairs/s", raw1, lambda: bench_ledger(small, 1, 1500))
    floor1 = measure(
        "  its statements alone (no ledger Python), 1k entries",
        "pairs/s",
        raw1,
        lambda: bench_statements(small, directory / "ledger-1k.db", 1500),
    )
    small4 = measure("ledger pairs, 4 processes, 1k entries", "pairs/s", raw4, lambda: bench_ledger(small, 4, 500))
    t16 = measure("ledger pairs, 16 threads, 1k entries", "pairs/s", raw1, lambda: bench_threads(small, 16, 200))
    t64 = measure("ledger pairs, 64 threads, 1k entries", "pairs/s", raw1, lambda: bench_threads(small, 64, 50))

    big_path = directory / "ledger-1m.db"
    big = make_ledger(big_path)
    started = time.perf_counter()
    bulk_history(big_path, prior_reservations)
    load_seconds = time.perf_counter() - started
    warm(big)
    size = f"{prior_reservations * 2 // 1000}k entries"
    big1 = measure(f"ledger pairs, 1 process, {size}", "pairs/s", raw1, lambda: bench_ledger(big, 1, 1500))
    big4 = measure(f"ledger pairs, 4 processes, {size}", "pairs/s", raw4, lambda: bench_ledger(big, 4, 500))
    big64 = measure(f"ledger pairs, 64 threads, {size}", "pairs/s", raw1, lambda: bench_threads(big, 64, 50))

    ledger = open_ledger(big, clock=lambda: NOW)
    ledger.budget_status("project-0")
    status_ms = timed(lambda: ledger.budget_status("project-0"), 200) * 1000
    month = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    usage_rows: list[object] = []
    usage_s = timed(
        lambda: usage_rows.append(ledger.usage(start=month[0], end=month[1], group_by=("project", "model", "day"))),
        3,
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

    (directory / "r1k").mkdir()
    (directory / "r10k").mkdir()
    measure(
        "recipe JSON tracker record_usage at 1k records",
        "rec/s",
        None,
        lambda: bench_recipe(directory / "r1k", 1_000, 100),
    )
    recipe10k = measure(
        "recipe JSON tracker record_usage at 10k records",
        "rec/s",
        None,
        lambda: bench_recipe(directory / "r10k", 10_000, 30),
    )

    print(
        f"\nWrites (one durable transaction = one WAL sync, shared by a batch); history: {entries[0]:,} entries "
        f"(bulk-loaded in {load_seconds:.0f} s). Ratios per pair (one job = reserve + commit) against raw tx/s."
    )
    for label, value, unit, base, load in rows:
        ratio = f"{value / base:5.2f}× raw" if base else " " * 10
        print(f"  {label:<52} {value:>9,.0f} {unit:<8} {ratio}   load {load:4.1f}")
    best = max(t16, t64, big64)
    print("\nGoals (per pair, same run):")
    print(
        f"  1 process: {small1 / raw1:.2f}× / {big1 / raw1:.2f}× (1k / {size}) of raw 1-process tx/s (goal ≥ 0.35); "
        f"the same statements without the ledger's Python: {floor1 / raw1:.2f}× (the floor on this disk)"
    )
    print(
        f"  16 / 64 threads: {t16 / raw1:.2f}× / {t64 / raw1:.2f}× of raw 1-process tx/s; 4 processes: "
        f"{small4 / raw4:.2f}× of raw 4-process tx/s, {small4 / raw1:.2f}× of raw 1-process (goal ≥ 1.0)"
    )
    print(
        f"  ledger vs recipe JSON at 10k records: {best / recipe10k:,.0f}× (best concurrent), {big1 / recipe10k:,.0f}× "
        "(1 process) jobs per second (goal ≥ 1,000×)"
    )
    print(
        f"  per-operation cost at {size} vs 1k entries: 1 process {small1 / big1:.2f}×, "
        f"4 processes {small4 / big4:.2f}× (goal ≤ 1.3×)"
    )
    print(f"\nReads at {entries[0] // 1000}k entries")
    print(f"  budget status (median of 200)                               {status_ms:8.2f} ms    (goal ≤ 5 ms)")
    print(
        f"  usage by project × model × day over the month (median of 3)  {usage_s * 1000:8.0f} ms    "
        f"(goal ≤ 1000 ms; {len(usage_rows[0]):,} rows)"  # type: ignore[arg-type]
    )
    print(
        f"  same, 29 days cut inside quarter hours (exact edges)          {inside_s * 1000:8.0f} ms    "
        f"{inside_s / aligned_s:.2f}× the same span cut on quarter hours ({aligned_s * 1000:.0f} ms, median of 5)"
    )


if __name__ == "__main__":
    main()
