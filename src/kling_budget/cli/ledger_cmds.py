"""Ledger commands: reserve, commit, release, record, reservations, usage, verify, packs, import."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from kling_budget.cli._common import (
    AppContext,
    json_option,
    parse_date,
    parse_ttl,
    pass_app,
    print_json,
    print_table,
    split_csv,
)
from kling_budget.cli.pricing_cmds import build_quote, quote_options
from kling_budget.errors import InvalidInputError
from kling_budget.exports import usage_export
from kling_budget.ledger import ReservationInfo
from kling_budget.ledger.queries import GROUPS
from kling_budget.money import format_units, format_usd
from kling_budget.types import PackType
from kling_budget.windows import report_range


def _attribution_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--project", help="Project the job is for."),
            click.option("--user", help="User the job is for."),
            click.option("--api-key", help="API key name the job uses."),
            click.option("--tags", help="Comma-separated tags."),
        ]
    ):
        fn = option(fn)
    return fn


def _print_reservation(info: ReservationInfo, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(info.to_dict())
        return
    amount = info.actual_milli if info.actual_milli is not None else info.units_milli
    usd = info.actual_nano if info.actual_nano is not None else info.usd_nano
    replay = " (replayed: this key was already used for the same request)" if info.replayed else ""
    click.echo(f"{verb} {info.id}: {format_units(amount)} units, {format_usd(usd)} [{info.state.value}]{replay}")
    if info.overage_milli:
        click.echo(f"overage: {format_units(info.overage_milli)} units above the hold")


@click.command()
@quote_options
@_attribution_options
@click.option("--key", help="Idempotency key (default: a new UUID). Send it to Kling as external_task_id.")
@click.option("--ttl", help="Release automatically if not marked submitted within this time (90s, 10m, 2h).")
@json_option
@pass_app
def reserve(
    app: AppContext,
    /,
    project: str | None,
    user: str | None,
    api_key: str | None,
    tags: str | None,
    key: str | None,
    ttl: str | None,
    as_json: bool,
    **params: object,
) -> None:
    """Hold the exact price of a job against every matching budget. Exit 1 if a hard budget denies it.

    \b
    Example:
      kling-budget reserve --model kling-v2-6 --mode pro --duration 10 --project marketing --json
    """
    ttl_delta = parse_ttl(ttl)
    quote = build_quote(app, **params)
    hold = app.tracker().reserve_quote(
        quote, project_id=project, user_id=user, api_key=api_key, tags=split_csv(tags), key=key, ttl=ttl_delta
    )
    _print_reservation(hold.info, as_json, "reserved")


@click.command()
@click.argument("reservation_id")
@click.option("--units", help="Units Kling actually charged (default: the amount held).")
@json_option
@pass_app
def commit(app: AppContext, reservation_id: str, units: str | None, as_json: bool) -> None:
    """Settle a reservation with what Kling charged.

    \b
    Example:
      kling-budget commit 5f0c... --units 5
    """
    record = app.tracker().reservation(reservation_id).commit(units)
    _print_reservation(app.tracker().ledger.get_reservation(record.job_id), as_json, "committed")


@click.command()
@click.argument("reservation_id")
@click.option("--reason", default="", help="Why (kept in the ledger).")
@json_option
@pass_app
def release(app: AppContext, reservation_id: str, reason: str, as_json: bool) -> None:
    """Return a reservation's hold to its budgets (the job failed or was never sent).

    \b
    Example:
      kling-budget release 5f0c... --reason "Kling returned 1301"
    """
    hold = app.tracker().reservation(reservation_id)
    hold.release(reason)
    _print_reservation(hold.info, as_json, "released")


@click.command()
@quote_options
@_attribution_options
@click.option("--job-id", required=True, help="Idempotency key of the job (e.g. Kling's task_id).")
@click.option("--units", help="Units Kling actually charged (default: the table price).")
@json_option
@click.pass_context
def record(
    ctx: click.Context,
    /,
    project: str | None,
    user: str | None,
    api_key: str | None,
    tags: str | None,
    job_id: str,
    units: str | None,
    as_json: bool,
    **params: object,
) -> None:
    """Record a job that already ran elsewhere. Always recorded; exit 1 if it went over a budget.

    \b
    Example:
      kling-budget record --job-id 8672837 --model kling-v2-6 --mode pro --duration 5 --project ads
    """
    app: AppContext = ctx.obj
    quote = build_quote(app, **params)
    info = app.tracker().record_quote(
        quote, job_id, project_id=project, user_id=user, api_key=api_key, tags=split_csv(tags), credits=units
    )
    _print_reservation(info, as_json, "recorded")
    if info.over_budget:
        click.echo(f"over budget: {job_id} took a budget past its limit", err=True)
        ctx.exit(1)


@click.command()
@click.option("--open", "only_open", is_flag=True, help="Only reservations still holding budget.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@json_option
@pass_app
def reservations(app: AppContext, only_open: bool, limit: int, as_json: bool) -> None:
    """List recent reservations (newest first), or only the open holds.

    \b
    Example:
      kling-budget reservations --open
    """
    states = ("held", "submitted") if only_open else ()
    items = app.tracker().ledger.list_reservations(states=states, limit=limit)
    if as_json:
        print_json([i.to_dict() for i in items])
        return
    print_table(
        "Open holds" if only_open else "Reservations",
        ["id", "state", "project", "user", "model", "units", "usd", "reserved at", "task"],
        [
            [
                i.id,
                i.state.value,
                i.attribution.project,
                i.attribution.user,
                i.attribution.model,
                format_units(i.actual_milli if i.actual_milli is not None else i.units_milli),
                format_usd(i.actual_nano if i.actual_nano is not None else i.usd_nano),
                i.reserved_at.isoformat(timespec="seconds"),
                i.task_id or "",
            ]
            for i in items
        ],
    )


@click.command()
@click.option("--by", "group_by", default="project", show_default=True, help=f"Group by: {', '.join(GROUPS)}.")
@click.option("--period", default="month", show_default=True, help="today, week, month or last-Nd (e.g. last-7d).")
@click.option("--from", "date_from", help="Start date (YYYY-MM-DD, inclusive); overrides --period.")
@click.option("--to", "date_to", help="End date (YYYY-MM-DD, inclusive).")
@click.option("--project", help="Only this project.")
@click.option("--user", help="Only this user.")
@click.option("--model", help="Only this model.")
@click.option("--tag", help="Only jobs with this tag.")
@click.option("--timezone", default="UTC", show_default=True, help="Zone in which days, weeks and months are cut.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@pass_app
def usage(
    app: AppContext,
    group_by: str,
    period: str,
    date_from: str | None,
    date_to: str | None,
    project: str | None,
    user: str | None,
    model: str | None,
    tag: str | None,
    timezone: str,
    fmt: str,
    as_json: bool,
) -> None:
    """Spend grouped by project, user, model, day ... over a period or a date range.

    CSV and JSON give the units of each pack type in their own columns (video and image units are never
    added up), plain decimals with a fixed scale (3 places for units, 9 for USD), the currency in the
    column names and ISO 8601 timestamps; CSV cells that could run as a spreadsheet formula start with '.

    \b
    Example:
      kling-budget usage --by project,model,day --period last-7d
      kling-budget usage --by user --from 2026-11-01 --to 2026-11-30 --format csv
    """
    tracker = app.tracker()
    groups = split_csv(group_by)
    now = tracker.ledger.now()
    if date_from or date_to:
        if not (date_from and date_to):
            raise InvalidInputError("--from and --to go together (e.g. --from 2026-11-01 --to 2026-11-30)")
        start = parse_date(date_from, "--from", timezone)
        end = parse_date(date_to, "--to", timezone)
        if len(date_to) == 10:
            end = end + timedelta(days=1)
    else:
        start, end = report_range(period, now, timezone)
    filters = {
        k: v
        for k, v in (
            ("project", project),
            ("user", user),
            ("model", tracker.prices.canonical_model(model) if model else None),
            ("tag", tag),
        )
        if v
    }
    export = usage_export(tracker.ledger, start=start, end=end, group_by=groups, timezone=timezone, filters=filters)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        print_json(export.to_json())
    elif fmt == "csv":
        click.echo(export.to_csv(), nl=False)
    else:
        packs = [p for p in PackType if any(sum(line.units.get(p, (0, 0))) for line in export.lines)]
        columns = [
            *groups,
            *(f"{p.value} {kind} units" for p in packs for kind in ("committed", "held")),
            "committed USD",
            "held USD",
            "jobs",
        ]
        table = [
            [
                *(line.group.get(g) or "-" for g in groups),
                *(format_units(amount) for p in packs for amount in line.units.get(p, (0, 0))),
                format_usd(line.committed_nano),
                format_usd(line.held_nano),
                line.jobs,
            ]
            for line in export.lines
        ]
        print_table(f"Usage {start.date()} .. {end.date()} ({timezone})", columns, table)


@click.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Re-derive every counter from the append-only entries; exit 1 on any mismatch.

    \b
    Example:
      kling-budget verify --json
    """
    app: AppContext = ctx.obj
    report = app.tracker().verify()
    if as_json:
        print_json(report.to_dict())
    else:
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(
            f"verify: {status} ({report.checked_reservations} reservations, {report.checked_entries} entries, "
            f"{report.checked_windows} budget windows)"
        )
        for problem in report.problems:
            click.echo(f"  {problem}")
    if not report.ok:
        ctx.exit(1)


@click.group()
def packs() -> None:
    """Purchased resource packs: what you paid, so costs follow the pack a job draws from.

    \b
    Example:
      kling-budget packs add video-2026-11 --units 10000 --price 1260 --expires 2027-02-01
      kling-budget packs list
    """


@packs.command("add")
@click.argument("name")
@click.option(
    "--type", "pack_type", type=click.Choice(["video", "image", "try_on"]), default="video", show_default=True
)
@click.option("--units", required=True, help="Units in the pack (e.g. 10000).")
@click.option("--price", "price_usd", required=True, help="What you paid in USD (e.g. 1260).")
@click.option("--starts", help="Start date (default: now).")
@click.option("--expires", help="Expiry date (YYYY-MM-DD); unused units are lost after it.")
@json_option
@pass_app
def packs_add(
    app: AppContext,
    name: str,
    pack_type: str,
    units: str,
    price_usd: str,
    starts: str | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Register a purchased pack.

    \b
    Example:
      kling-budget packs add video-2026-11 --units 10000 --price 1260 --expires 2027-02-01
    """
    pack = app.tracker().add_pack(
        name,
        units=units,
        price_usd=price_usd,
        pack_type=pack_type,
        starts_at=parse_date(starts, "--starts", "UTC") if starts else None,
        expires_at=parse_date(expires, "--expires", "UTC") if expires else None,
    )
    if as_json:
        print_json(pack.to_dict())
    else:
        click.echo(
            f"added pack {pack.name}: {format_units(pack.units_milli)} {pack.pack_type.value} units, "
            f"${pack.usd_per_unit}/unit"
        )


@packs.command("list")
@json_option
@pass_app
def packs_list(app: AppContext, as_json: bool) -> None:
    """List packs, soonest expiry first, with what was drawn from each.

    \b
    Example:
      kling-budget packs list --json
    """
    items = app.tracker().ledger.list_packs()
    if as_json:
        print_json([p.to_dict() for p in items])
        return
    print_table(
        "Packs",
        ["name", "type", "units", "usd/unit", "committed units", "held units", "remaining units", "expires"],
        [
            [
                p.name,
                p.pack_type.value,
                format_units(p.units_milli),
                f"${p.usd_per_unit}",
                format_units(p.committed_milli),
                format_units(p.held_milli),
                format_units(p.remaining_milli),
                p.expires_at.date().isoformat() if p.expires_at else "never",
            ]
            for p in items
        ],
    )


@packs.command("remove")
@click.argument("name")
@pass_app
def packs_remove(app: AppContext, name: str) -> None:
    """Remove a pack nothing was drawn from.

    \b
    Example:
      kling-budget packs remove video-2026-11
    """
    app.tracker().ledger.remove_pack(name)
    click.echo(f"removed pack {name}")


@click.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--credits",
    "credit_mode",
    type=click.Choice(["reprice", "as-units"]),
    default="reprice",
    show_default=True,
    help="reprice: the recipe's credits are not Kling units, price each job from the table; "
    "as-units: book the recorded credits (and credit limits) as Kling units.",
)
@click.option(
    "--model-map",
    multiple=True,
    metavar="NAME=MODEL[:MODE]",
    help="Price a model the table does not know as another, e.g. kling-pro=kling-v1-6:pro (repeatable).",
)
@json_option
@pass_app
def import_cmd(app: AppContext, path: Path, credit_mode: str, model_map: tuple[str, ...], as_json: bool) -> None:
    """Import the recipe's cost_tracking.json (budgets and usage history); safe to run twice.

    \b
    Example:
      kling-budget import ./cost_tracking.json --model-map kling-pro=kling-v1-6:pro
    """
    from kling_budget.importer import import_recipe_file

    mapping = {}
    for item in model_map:
        name, sep, target = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--model-map {item!r} must look like kling-pro=kling-v1-6:pro")
        mapping[name.strip()] = target.strip()
    result = import_recipe_file(app.tracker(), path, credits=credit_mode, model_map=mapping)
    if as_json:
        print_json(result.to_dict())
    else:
        click.echo(
            f"imported {result.records_imported} usage records ({result.records_skipped} already present), "
            f"{result.budgets_imported} budgets ({result.budgets_unchanged} unchanged) from {path}"
        )
        if result.credit_limits_dropped:
            click.echo(
                f"note: {result.credit_limits_dropped} budget credit limits were not imported: recipe credits are "
                "not Kling units (the dollar limits were); use --credits as-units if yours were real units"
            )


COMMANDS = [reserve, commit, release, record, reservations, usage, verify, packs, import_cmd]
