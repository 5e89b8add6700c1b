"""``kling-budget report``: a PNG chart and a self-contained HTML report."""

from __future__ import annotations

import click

from kling_budget.cli._common import AppContext, json_option, pass_app, print_json
from kling_budget.errors import InvalidInputError


@click.command("report")
@click.option("--period", type=click.Choice(["day", "week", "month"]), default="month", show_default=True)
@click.option("--by", type=click.Choice(["project", "model"]), default="project", show_default=True)
@click.option(
    "--unit", type=click.Choice(["usd", "units"]), default="usd", show_default=True, help="Dollars or video units."
)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the period and the chart.")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False), help="Directory.")
@json_option
@pass_app
def report(app: AppContext, period: str, by: str, unit: str, timezone: str, out_dir: str, as_json: bool) -> None:
    """Write a chart (PNG) and a report (HTML) of this period's spend per project or model, against the
    budget limits, with the forecast to the end of the period.

    \b
    Example:
      kling-budget report --period month --by project --out reports/
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidInputError("the report needs matplotlib: pip install 'kling-budget[report]'") from None
    from kling_budget.report import build_report, write_report

    data = build_report(app.tracker().ledger, period=period, by=by, unit=unit, timezone=timezone)
    paths = write_report(data, out_dir)
    if as_json:
        print_json({**paths, "title": data.title(), "total": data.fmt(data.total)})
    else:
        click.echo(f"{data.title()}: {data.fmt(data.total)} so far")
        click.echo(f"chart:  {paths['png']}")
        click.echo(f"report: {paths['html']}")


COMMANDS = [report]
