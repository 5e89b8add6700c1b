"""``kling-budget demo``: the whole idea in a few seconds, on a throwaway ledger."""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click

from kling_budget.cli._common import print_table
from kling_budget.errors import BudgetExceededError, InvalidInputError
from kling_budget.ledger.urls import sqlite_url
from kling_budget.money import format_units, format_usd, units_to_milli

_PRICE_MIX = [
    ("kling-v2-5-turbo", "std", 5, False),
    ("kling-v2-6", "pro", 10, True),
    ("kling-v2-1-master", None, 5, False),
    ("kling-v3", "pro", 8, True),
]


def _worker(db: str, project: str, worker: int, go: Any, results: Any) -> None:
    """Reserve 1.5-unit jobs against the shared budget until denied; commit each one."""
    from kling_budget.tracker import CostTracker

    admitted = 0
    with CostTracker(db, alert_sinks=[]) as tracker:
        go.wait()
        while True:
            try:
                hold = tracker.reserve(
                    model="kling-v2-5-turbo",
                    mode="std",
                    duration=5,
                    project_id=project,
                    user_id=f"worker-{worker}",
                )
            except BudgetExceededError as exc:
                results.put((worker, admitted, str(exc)))
                return
            hold.commit()
            admitted += 1


@click.command()
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True, help="Worker processes.")
@click.option("--limit-units", default="300", show_default=True, help="Daily budget the workers race for.")
@click.option("--keep", is_flag=True, help="Keep the demo ledger and print its path.")
@click.pass_context
def demo(ctx: click.Context, workers: int, limit_units: str, keep: bool) -> None:
    """Run a short scripted session on a throwaway ledger.

    Sets budgets, prices a mix of jobs, lets several worker processes race to reserve 1.5-unit jobs against
    one budget until it is exactly exhausted, shows the denial and the usage table.

    \b
    Example:
      kling-budget demo --workers 8

    Exit code 1 if the workers were not admitted exactly floor(limit / 1.5) jobs or verify fails.
    """
    from kling_budget.tracker import CostTracker

    price = 1500
    limit_milli = units_to_milli(limit_units, "--limit-units")
    if limit_milli < price:
        raise InvalidInputError(f"--limit-units must be at least 1.5 (one job), got {limit_units!r}")
    expected = limit_milli // price
    ok = True
    directory = Path(tempfile.mkdtemp(prefix="kling-budget-demo-"))
    db = sqlite_url(directory / "demo.db")
    try:
        with CostTracker(db, alert_sinks=[]) as tracker:
            click.echo(f"Demo ledger: {db}  (price table {tracker.prices.version})\n")
            click.echo("1. Prices are exact, before anything is sent:")
            rows = []
            for model, mode, duration, sound in _PRICE_MIX:
                quote = tracker.quote(model, mode=mode, duration=duration, sound=sound)
                rows.append(
                    [
                        quote.model,
                        mode or "-",
                        f"{duration} s",
                        "on" if sound else "off",
                        format_units(quote.units_milli),
                        format_usd(quote.list_usd_nano),
                    ]
                )
            image = tracker.quote("kling-v2", product="image", n=4)
            rows.append(
                [
                    image.model,
                    "image x4",
                    "-",
                    "-",
                    f"{format_units(image.units_milli)} (image)",
                    format_usd(image.list_usd_nano),
                ]
            )
            print_table(None, ["model", "mode", "duration", "sound", "units", "list price"], rows)

            tracker.set_budget("studio-daily", project_id="demo-studio", period="daily", limit_units=limit_units)
            tracker.set_budget("account-monthly", period="monthly", limit_usd="500", alert_at="50,80,100")
            click.echo(
                f"\n2. Budgets: 'studio-daily' allows {limit_units} units a day for project demo-studio; "
                "'account-monthly' allows $500 a month for everything."
            )

        click.echo(
            f"\n3. {workers} worker processes race to reserve 1.5-unit jobs (kling-v2-5-turbo std 5 s) "
            f"against 'studio-daily' at the same time..."
        )
        context = multiprocessing.get_context("spawn")
        go, queue = context.Event(), context.Queue()
        processes = [context.Process(target=_worker, args=(db, "demo-studio", w, go, queue)) for w in range(workers)]
        for process in processes:
            process.start()
        time.sleep(0.5)  # let every worker open the ledger, then start them together
        started = time.perf_counter()
        go.set()
        results = [queue.get(timeout=120) for _ in processes]
        elapsed = time.perf_counter() - started
        for process in processes:
            process.join()
        admitted = sum(count for _, count, _ in results)
        ok = admitted == expected
        click.echo(
            f"   admitted {admitted} jobs in {elapsed:.1f} s; floor({limit_units} / 1.5) = {expected}: "
            + ("exactly exhausted, no overspend." if ok else "MISMATCH")
        )
        for worker, count, _ in sorted(results):
            click.echo(f"   worker-{worker}: {count} jobs")
        click.echo(f"\n4. The next request is denied, with everything needed to back off:\n   {results[0][2]}")

        with CostTracker(db, alert_sinks=[]) as tracker:
            try:
                tracker.reserve(
                    model="kling-v2-5-turbo",
                    mode="std",
                    duration=5,
                    project_id="demo-studio",
                    key=uuid.uuid4().hex,
                )
            except BudgetExceededError as exc:
                assert exc.denial is not None
                click.echo(f"   (reset at {exc.denial.reset_at.isoformat() if exc.denial.reset_at else 'never'})")
            tracker.record_usage("imported-job-1", duration=10, model="kling-v2-6", project_id="ads", mode="pro")
            click.echo("\n5. Usage by project and user (committed spend, exact):")
            rows = [
                [
                    r.group.get("project") or "-",
                    r.group.get("user") or "-",
                    format_units(r.committed_milli),
                    format_usd(r.committed_nano),
                    str(r.jobs),
                ]
                for r in tracker.usage(group_by=("project", "user"), period="month")
            ]
            print_table(None, ["project", "user", "committed units", "committed usd", "jobs"], rows)
            report = tracker.verify()
            ok = ok and report.ok
            click.echo(
                f"\n6. verify: {'ok' if report.ok else 'PROBLEMS'} — every counter re-derived from "
                f"{report.checked_entries} append-only entries."
            )
        if keep:
            click.echo(f"\nKept: {db}\nTry: kling-budget --db {db} usage --by project,model,day")
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    if not ok:
        ctx.exit(1)


COMMANDS = [demo]
