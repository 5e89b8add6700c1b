"""``kling-budget budget set|list|show|delete`` and ``check``."""

from __future__ import annotations

from datetime import datetime

import click

from kling_budget.budgets import BudgetStatus
from kling_budget.cli._common import AppContext, json_option, pass_app, print_json, print_table, split_csv
from kling_budget.cli.pricing_cmds import build_quote, quote_dict, quote_options
from kling_budget.money import format_units, format_usd
from kling_budget.windows import WEEKDAYS, zone


@click.group()
def budget() -> None:
    """Create, inspect and delete budgets.

    \b
    Example:
      kling-budget budget set marketing --project marketing --period monthly \\
          --limit-units 1000 --limit-usd 150 --alert-at 50,80,100 --timezone Europe/Berlin
    """


@budget.command("set")
@click.argument("name")
@click.option("--project", help="Only jobs of this project.")
@click.option("--user", help="Only jobs of this user.")
@click.option("--api-key", help="Only jobs made with this API key name.")
@click.option("--model", help="Only jobs of this model.")
@click.option("--tag", help="Only jobs carrying this tag.")
@click.option(
    "--period",
    type=click.Choice(["daily", "weekly", "monthly", "total"], case_sensitive=False),
    default="monthly",
    show_default=True,
)
@click.option("--limit-units", help="Limit in Kling units of --unit-pack (e.g. 1000 or 2.5).")
@click.option("--limit-usd", help="Limit in dollars over every job in scope (e.g. 150).")
@click.option("--alert-at", default="50,80,100", show_default=True, help="Alert thresholds in percent.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the calendar windows.")
@click.option(
    "--week-start",
    default="monday",
    show_default=True,
    help=f"First day of weekly windows ({', '.join(WEEKDAYS)}).",
)
@click.option("--soft", is_flag=True, help="Alert only, never block (default: hard, blocks when exceeded).")
@click.option(
    "--unit-pack",
    type=click.Choice(["video", "image", "try_on"]),
    default="video",
    show_default=True,
    help="Which pack's units --limit-units counts.",
)
@json_option
@pass_app
def budget_set(
    app: AppContext,
    name: str,
    project: str | None,
    user: str | None,
    api_key: str | None,
    model: str | None,
    tag: str | None,
    period: str,
    limit_units: str | None,
    limit_usd: str | None,
    alert_at: str,
    timezone: str,
    week_start: str,
    soft: bool,
    unit_pack: str,
    as_json: bool,
) -> None:
    """Create or replace the budget NAME (spend already in the current window counts).

    \b
    Example:
      kling-budget budget set marketing --project marketing --period monthly --limit-units 1000 --limit-usd 150
      kling-budget budget set team-week --period weekly --week-start sunday --limit-usd 50 --soft
    """
    tracker = app.tracker()
    tracker.set_budget(
        name,
        limit_units=limit_units,
        limit_usd=limit_usd,
        period=period,
        project_id=project,
        user_id=user,
        api_key=api_key,
        model=model,
        tag=tag,
        hard=not soft,
        alert_at=alert_at,
        timezone=timezone,
        week_start=week_start,
        unit_pack=unit_pack,
    )
    show_status(tracker.budget_status(name), as_json)


def _local(instant: datetime, timezone: str) -> str:
    return instant.astimezone(zone(timezone)).isoformat(timespec="minutes")


def _limit_text(status: BudgetStatus) -> str:
    return status.describe_limits()


def _used_text(status: BudgetStatus) -> tuple[str, str, str]:
    c, b = status.counters, status.budget
    parts_committed, parts_held, parts_remaining = [], [], []
    if b.limit_units_milli is not None or b.limit_usd_nano is None:
        parts_committed.append(format_units(c.committed_milli))
        parts_held.append(format_units(c.held_milli))
        if status.remaining_units_milli is not None:
            parts_remaining.append(format_units(status.remaining_units_milli))
    if b.limit_usd_nano is not None:
        parts_committed.append(format_usd(c.committed_nano))
        parts_held.append(format_usd(c.held_nano))
        if status.remaining_usd_nano is not None:
            parts_remaining.append(format_usd(status.remaining_usd_nano))
    return " / ".join(parts_committed), " / ".join(parts_held), " / ".join(parts_remaining)


def show_status(status: BudgetStatus, as_json: bool) -> None:
    """Print one budget's status."""
    if as_json:
        print_json(status.to_dict())
        return
    statuses_table([status], title=f"Budget {status.budget.name}")


def statuses_table(statuses: list[BudgetStatus], title: str | None = None) -> None:
    """A table of budget statuses."""
    rows = []
    for s in statuses:
        committed, held, remaining = _used_text(s)
        rows.append(
            [
                s.budget.name,
                s.budget.scope.describe(),
                f"{s.budget.period.value} ({s.budget.timezone})",
                ("hard " if s.budget.hard else "soft ") + _limit_text(s),
                committed,
                held,
                remaining,
                f"{s.percent}%",
                _local(s.window.start, s.budget.timezone) if s.budget.period.value != "total" else "-",
                _local(s.window.end, s.budget.timezone) if s.window.end else "never",
            ]
        )
    print_table(
        title,
        [
            "budget",
            "scope",
            "period",
            "limit",
            "committed",
            "held",
            "remaining",
            "used %",
            "window start",
            "resets at",
        ],
        rows,
    )


@budget.command("list")
@json_option
@pass_app
def budget_list(app: AppContext, as_json: bool) -> None:
    """List every budget with where it stands now.

    \b
    Example:
      kling-budget budget list --json
    """
    statuses = app.tracker().ledger.statuses()
    if as_json:
        print_json([s.to_dict() for s in statuses])
    elif not statuses:
        click.echo("no budgets yet; create one with 'kling-budget budget set NAME --limit-units N'")
    else:
        statuses_table(statuses)


@budget.command("show")
@click.argument("name")
@json_option
@pass_app
def budget_show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one budget: limit, committed, held, remaining, percent, window and reset time.

    \b
    Example:
      kling-budget budget show marketing
    """
    from kling_budget.forecast import forecast_budgets

    tracker = app.tracker()
    status = tracker.budget_status(name)
    outlook = forecast_budgets(tracker.ledger, [name], now=status.as_of)[0]
    if as_json:
        print_json({**status.to_dict(), "forecast": outlook.to_dict()})
        return
    show_status(status, as_json)
    click.echo(f"forecast: {outlook.describe()}")


@budget.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def budget_delete(app: AppContext, name: str, yes: bool) -> None:
    """Delete the budget NAME (its spend stays in the ledger).

    \b
    Example:
      kling-budget budget delete marketing --yes
    """
    tracker = app.tracker()
    tracker.get_budget(name)
    if not yes:
        click.confirm(f"Delete budget {name!r}?", abort=True)
    tracker.delete_budget(name)
    click.echo(f"deleted budget {name}")


@click.command()
@quote_options
@click.option("--project", help="Project the job is for.")
@click.option("--user", help="User the job is for.")
@click.option("--api-key", help="API key name the job uses.")
@click.option("--tags", help="Comma-separated tags.")
@json_option
@click.pass_context
def check(
    ctx: click.Context,
    /,
    project: str | None,
    user: str | None,
    api_key: str | None,
    tags: str | None,
    as_json: bool,
    **params: object,
) -> None:
    """Would this job fit every hard budget right now? Exit 1 if not. Reserves nothing.

    \b
    Example:
      kling-budget check --model kling-v2-6 --mode pro --duration 10 --project marketing
    """
    app: AppContext = ctx.obj
    quote = build_quote(app, **params)
    result = app.tracker().check_quote(quote, project_id=project, user_id=user, api_key=api_key, tags=split_csv(tags))
    if as_json:
        print_json({**result, "quote": quote_dict(quote)})
    elif result["allowed"]:
        click.echo(f"allowed: {quote.describe()}")
    else:
        click.echo(f"denied: {result['reason']}")
    if not result["allowed"]:
        ctx.exit(1)


COMMANDS = [budget, check]
