"""``kling-budget simulate``: serve the Kling API simulator in the foreground."""

from __future__ import annotations

import click

from kling_budget.errors import InvalidInputError
from kling_budget.money import format_units

__all__ = ["COMMANDS", "simulate"]

_DEFAULT_PACKS = ("video=1000", "image=10000", "try_on=1000")


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, amount = value.partition("=")
        if not sep or not name.strip() or not amount.strip():
            raise click.UsageError(f"{option} takes TYPE=VALUE (e.g. video=1000), got {value!r}")
        pairs.append((name.strip(), amount.strip()))
    return pairs


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8750, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option(
    "--access-key",
    default="sim-access-key",
    show_default=True,
    envvar="KLING_SIM_ACCESS_KEY",
    help="Access key (JWT iss) the simulator accepts: a test credential, not a secret.",
)
@click.option(
    "--secret-key",
    default="sim-secret-key",
    show_default=True,
    envvar="KLING_SIM_SECRET_KEY",
    help="Secret key (JWT signing) the simulator accepts: a test credential, never a real Kling key.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="An API key ('Bearer <API key>', the only credential of the 2026 routes; a test credential); "
    "repeatable. Default: sim-api-key.",
)
@click.option(
    "--webhook-secret", default=None, help="whsec_... test secret; callbacks are then signed (Standard Webhooks)."
)
@click.option(
    "--pack",
    "packs",
    multiple=True,
    metavar="TYPE=UNITS",
    help="A resource pack: video, image or try_on with its units (repeatable). Default: "
    + ", ".join(_DEFAULT_PACKS)
    + ".",
)
@click.option("--no-packs", is_flag=True, help="No resource packs: every task is paid from the cash balance.")
@click.option("--balance", default=None, metavar="AMOUNT", help="Cash balance tasks are paid from when packs cannot.")
@click.option("--test-balance", default=None, metavar="AMOUNT", help="Test money, drawn before --balance.")
@click.option(
    "--currency", default="USD", show_default=True, type=click.Choice(["USD", "CNY"]), help="Currency of the balance."
)
@click.option(
    "--discount", default="0", show_default=True, help="Share of the list price taken off cash charges (0.25 = 25%)."
)
@click.option(
    "--concurrency",
    "concurrency",
    multiple=True,
    metavar="TYPE=N",
    help="Parallel-task quota of a pack type (repeatable; default 10).",
)
@click.option("--queued-seconds", default=0.2, show_default=True, type=float, help="Time a task stays submitted.")
@click.option("--running-seconds", default=0.5, show_default=True, type=float, help="Time a task stays processing.")
@click.option("--costs-lag", default=0.0, show_default=True, type=float, help="Seconds /account/costs lags behind.")
@click.option("--failure-rate", default=0.0, show_default=True, type=float, help="Share of tasks that fail (0..1).")
@click.option("--seed", default=None, type=int, help="Seed for random failures and ids.")
@click.option("--retention", default=None, type=float, help="Forget tasks this many seconds after they end.")
@click.option("--report-billing", is_flag=True, help="Add the new design's billing[] to task results and callbacks.")
@click.option("--new-status-names", is_flag=True, help="Report 'succeeded' instead of the legacy 'succeed'.")
@click.option("--access-log", is_flag=True, help="Log every request.")
def simulate(
    host: str,
    port: int,
    access_key: str,
    secret_key: str,
    api_keys: tuple[str, ...],
    webhook_secret: str | None,
    packs: tuple[str, ...],
    no_packs: bool,
    balance: str | None,
    test_balance: str | None,
    currency: str,
    discount: str,
    concurrency: tuple[str, ...],
    queued_seconds: float,
    running_seconds: float,
    costs_lag: float,
    failure_rate: float,
    seed: int | None,
    retention: float | None,
    report_billing: bool,
    new_status_names: bool,
    access_log: bool,
) -> None:
    """Run a local Kling API simulator until Ctrl-C.

    It speaks Kling's legacy /v1 API (JWT or API-key auth) and its 2026 design (/text-to-video/kling-3.0 ...,
    /tasks; API key only): task lifecycle, resource packs, a cash balance, concurrency limits, /account/costs,
    the billing ledgers, signed callbacks. The credentials it prints belong to the simulator only; its
    --secret-key, --api-key and --webhook-secret are test credentials that guard nothing, so unlike real
    secrets they may be options (never pass a real Kling key to it).

    Example:

        kling-budget simulate --port 8750 --pack video=500 --concurrency video=5 --balance 20
    """
    from kling_budget.simulator import (
        AccountConfig,
        PackConfig,
        RunningSimulator,
        SimulatorConfig,
        run_simulator,
    )
    from kling_budget.simulator.config import DEFAULT_API_KEY, parse_pack_type

    if no_packs and packs:
        raise click.UsageError("--no-packs and --pack cannot be combined")
    api_keys = api_keys or (DEFAULT_API_KEY,)
    try:
        quotas = {parse_pack_type(name): int(value) for name, value in _pairs(concurrency, "--concurrency")}
        pack_configs = tuple(
            PackConfig(kind, units, concurrency=quotas.get(kind, 10))
            for kind, units in ((parse_pack_type(n), u) for n, u in _pairs(packs or _DEFAULT_PACKS, "--pack"))
            if not no_packs
        )
        account = AccountConfig(
            key_pairs=((access_key, secret_key),),
            api_keys=api_keys,
            packs=pack_configs,
            balance=balance,
            test_balance=test_balance,
            currency=currency,
            discount=discount,
        )
        config = SimulatorConfig(
            accounts=(account,),
            webhook_secret=webhook_secret,
            queued_seconds=queued_seconds,
            running_seconds=running_seconds,
            costs_lag_seconds=costs_lag,
            failure_probability=failure_rate,
            seed=seed,
            retention_seconds=retention,
            report_billing=report_billing,
            new_status_names=new_status_names,
        )
    except (InvalidInputError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

    def announce(running: RunningSimulator) -> None:
        click.echo(f"Kling simulator on {running.base_url}")
        click.echo(f"  access key:     {access_key}")
        click.echo(f"  secret key:     {secret_key}")
        for key in api_keys:
            click.echo(f"  API key:        {key}")
        if webhook_secret:
            click.echo(f"  webhook secret: {webhook_secret}")
        for pack in pack_configs:
            click.echo(
                f"  pack:           {pack.display_name()} ({pack.pack_type}, "
                f"{format_units(pack.total_milli)} units, concurrency {pack.concurrency})"
            )
        for cash_type, amount in account.cash_balances().items():
            click.echo(f"  {cash_type + ':':<15} {amount} {currency}, discount {discount}")
        click.echo("Press Ctrl-C to stop.")

    try:
        run_simulator(config, host=host, port=port, on_ready=announce, access_log=access_log)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from None


COMMANDS = [simulate]
