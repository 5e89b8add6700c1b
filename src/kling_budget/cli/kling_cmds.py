"""Kling commands: ``generate video|image`` under budget, and ``reconcile`` the ledger with Kling.

Credentials come from ``KLING_ACCESS_KEY`` + ``KLING_SECRET_KEY`` (or ``KLING_API_KEY``) and ``KLING_API_BASE``;
the secret key and the API key can also come from a file, never from an option's value (options are visible
in the process list). Nothing here prints a secret, in text or in ``--json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from kling_budget.cli._common import AppContext, json_option, print_json, print_table, split_csv
from kling_budget.cli._secrets import SecretSource, read_secret, refused_option
from kling_budget.errors import InvalidInputError
from kling_budget.money import format_units, format_usd, units_to_milli

if TYPE_CHECKING:
    from kling_budget.enforced import Job
    from kling_budget.kling import KlingClient, Task
    from kling_budget.reconcile import ReconcileItem, ReconcileReport

__all__ = ["COMMANDS", "generate", "reconcile"]

_AGE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def _age(value: str | None, option: str) -> timedelta | None:
    """``0s``, ``90s``, ``15m``, ``24h``, ``7d`` → timedelta (zero allowed)."""
    if value is None:
        return None
    match = _AGE.match(value)
    if not match:
        raise InvalidInputError(f"{option} must look like 90s, 15m, 24h or 7d, got {value!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(seconds=amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


_SECRET_KEY = SecretSource("the Kling secret key", "KLING_SECRET_KEY", "--secret-key-file")
_API_KEY = SecretSource("the Kling API key", "KLING_API_KEY", "--kling-api-key-file", prompt=False)


def _kling_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--access-key", metavar="KEY", help="Kling access key [default: env KLING_ACCESS_KEY]."),
            click.option(
                "--secret-key-file",
                metavar="PATH",
                help="File holding the Kling secret key [default: env KLING_SECRET_KEY, else a hidden prompt].",
            ),
            refused_option("--secret-key", source=_SECRET_KEY),
            click.option(
                "--kling-api-key-file",
                metavar="PATH",
                help="File holding a Kling console API key instead of the key pair [default: env KLING_API_KEY].",
            ),
            refused_option("--kling-api-key", source=_API_KEY),
            click.option(
                "--api-base",
                metavar="URL",
                help="Kling API host, e.g. http://127.0.0.1:8750 for 'kling-budget simulate' "
                "[default: env KLING_API_BASE, else the global host].",
            ),
            click.option("--region", type=click.Choice(["global", "china", "legacy"]), help="Kling region host."),
        ]
    ):
        fn = option(fn)
    return fn


def _client(options: dict[str, Any]) -> KlingClient:
    """A Kling client from the options (credentials are checked here, before anything is reserved).

    Without options the library reads KLING_ACCESS_KEY + KLING_SECRET_KEY or KLING_API_KEY; with
    ``--access-key`` the secret key comes from ``--secret-key-file``, KLING_SECRET_KEY or a hidden prompt.
    """
    from kling_budget.kling import KlingClient

    access = options.pop("access_key")
    secret_file, api_key_file = options.pop("secret_key_file"), options.pop("kling_api_key_file")
    api_key = read_secret(_API_KEY, api_key_file) if api_key_file else None
    secret = read_secret(_SECRET_KEY, secret_file) if secret_file or (access and not api_key) else None
    return KlingClient(
        access,
        secret,
        api_key=api_key,
        base_url=options.pop("api_base"),
        region=options.pop("region"),
    )


def _attribution_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--project", help="Project the job is charged to."),
            click.option("--user", help="User the job is charged to."),
            click.option("--api-key-name", help="Name of the API key the job is charged to (not the key itself)."),
            click.option("--tags", help="Comma-separated tags."),
        ]
    ):
        fn = option(fn)
    return fn


def _wait_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait."),
            click.option(
                "--poll-interval", type=float, default=5.0, show_default=True, help="First poll interval (s)."
            ),
            click.option("--no-wait", is_flag=True, help="Submit and return; settle later ('kling-budget reconcile')."),
            click.option("--callback-url", help="Kling posts status changes here."),
            click.option(
                "--external-task-id",
                help="Your id for the job; it is also the reservation key, so rerunning with it resumes the job.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[Task], None]]:
    """A rich progress bar on stderr (stdout stays clean for --json); silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    ) as progress:
        bar = progress.add_task("Kling task submitted", total=None)

        def update(task: Task) -> None:
            progress.update(bar, description=f"Kling task {task.task_id}: {task.status.value}")
            if task.is_terminal:
                progress.update(bar, total=1, completed=1)

        yield update


def _run_job(
    ctx: click.Context,
    submit: Callable[[], Job],
    *,
    as_json: bool,
    no_wait: bool,
    timeout: float,
    poll_interval: float,
) -> None:
    from kling_budget.enforced._core import keeps_hold
    from kling_budget.errors import BudgetExceededError, KlingAPIError, KlingWaitTimeoutError

    try:
        job = submit()
    except BudgetExceededError:
        raise  # a local or a gateway's denial: "denied: ...", exit 1
    except KlingAPIError as exc:
        if keeps_hold(exc):
            raise click.ClickException(
                f"{exc}; Kling may have the task, so the budget hold is kept until its answer is known: "
                "run 'kling-budget reconcile' later"
            ) from None
        raise click.ClickException(f"{exc}; the budget hold was released") from None
    if not as_json:
        quote = job.quote
        held = f"{quote.describe()}" if quote is not None else "job"
        if job.gateway_held:
            click.echo(f"sent {held} through the kling-budget gateway, which holds its budget (no local hold)")
        else:
            click.echo(f"reserved {held} [reservation {job.reservation_id}]")
        click.echo(f"submitted Kling task {job.task_id}")
    if no_wait:
        if as_json:
            print_json(_job_dict(job))
        return
    try:
        with _progress(not as_json) as update:
            job.wait(
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max(30.0, poll_interval),
                on_progress=update,
            )
    except KlingWaitTimeoutError as exc:
        raise click.ClickException(
            f"{exc}; the budget hold {job.reservation_id} is kept: run 'kling-budget reconcile' later"
        ) from None
    if as_json:
        print_json(_job_dict(job))
    else:
        _print_job(job)
    if job.task.status.value != "succeeded" or (job.outcome is not None and job.outcome.conflict):
        ctx.exit(1)


def _job_dict(job: Job) -> dict[str, Any]:
    info = job.reservation
    quote = job.quote
    return {
        "reservation_id": job.reservation_id,
        "task_id": job.task_id,
        "status": job.task.status.value,
        "status_message": job.task.status_message,
        "urls": [o.url for o in job.task.outputs],
        "quote": None
        if quote is None
        else {"model": quote.model, "product": quote.product, "units": str(quote.units), "usd": str(quote.usd)},
        "settlement": None if job.outcome is None else job.outcome.to_dict(),
        "reservation": None if info is None else info.to_dict(),
        "gateway_held": job.gateway_held,
    }


def _print_job(job: Job) -> None:
    task = job.task
    click.echo(
        f"Kling task {task.task_id}: {task.status.value}" + (f" ({task.status_message})" if task.status_message else "")
    )
    for output in task.outputs:
        click.echo(f"  {output.url}")
    info = job.reservation
    if info is None:
        charged = task.charged_units_milli
        shown = "" if charged is None else f"Kling charged {format_units(charged)} units; "
        click.echo(f"{shown}the gateway settles its own hold")
    elif info.state.value == "committed" and info.actual_milli is not None:
        over = f", {format_units(info.overage_milli)} above the hold" if info.overage_milli else ""
        click.echo(f"charged {format_units(info.actual_milli)} units ({format_usd(info.actual_nano or 0)}){over}")
    elif info.state.value == "released":
        click.echo(f"not charged: the hold of {format_units(info.units_milli)} units was released")
    if job.outcome is not None and (job.outcome.conflict or job.outcome.assumed_charge):
        click.echo(f"note: {job.outcome.message}", err=True)


@click.group()
def generate() -> None:
    """Generate a video or images on Kling under your budgets: quote, reserve, submit, wait, settle.

    \b
    Example:
      export KLING_ACCESS_KEY=... KLING_SECRET_KEY=...
      kling-budget generate video "a red fox in the snow" --model kling-v2-6 --duration 5 --project ads
    """


@generate.command("video")
@click.argument("prompt")
@click.option("--model", "-m", default="kling-v2-6", show_default=True, help="Model (aliases accepted).")
@click.option("--mode", type=click.Choice(["std", "pro"]), help="std (720p) or pro (1080p).")
@click.option("--duration", "-d", default="5", show_default=True, help="Seconds (5 or 10; 3-15 for kling-v3).")
@click.option("--aspect-ratio", type=click.Choice(["16:9", "9:16", "1:1"]))
@click.option("--sound", type=click.Choice(["on", "off"]), help="Native audio (kling-v2-6 pro and later).")
@click.option("--negative-prompt", help="What to avoid.")
@click.option("--image", help="First frame (URL or base64): image-to-video instead of text-to-video.")
@_attribution_options
@_wait_options
@json_option
@_kling_options
@click.pass_context
def generate_video(
    ctx: click.Context,
    /,
    prompt: str,
    model: str,
    mode: str | None,
    duration: str,
    aspect_ratio: str | None,
    sound: str | None,
    negative_prompt: str | None,
    image: str | None,
    project: str | None,
    user: str | None,
    api_key_name: str | None,
    tags: str | None,
    timeout: float,
    poll_interval: float,
    no_wait: bool,
    callback_url: str | None,
    external_task_id: str | None,
    as_json: bool,
    **kling: Any,
) -> None:
    """Generate a video: exit 0 when it succeeded, 1 when denied, rejected, failed or still running.

    \b
    Example:
      kling-budget generate video "a red fox in the snow" -m kling-v2-6 --mode pro -d 5 --project ads --json
      kling-budget generate video "the fox turns" --image https://example.com/fox.png -m kling-v2-1
    """
    from kling_budget.enforced import BudgetEnforcedClient

    app: AppContext = ctx.obj
    client = _client(kling)
    given = {"mode": mode, "aspect_ratio": aspect_ratio, "sound": sound, "negative_prompt": negative_prompt}
    fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    with (
        BudgetEnforcedClient(
            app.tracker(),
            client=client,
            project_id=project,
            user_id=user,
            api_key_name=api_key_name,
            tags=split_csv(tags),
        ) as kling_client,
        client,
    ):

        def submit() -> Job:
            if image is not None:
                fields.pop("aspect_ratio", None)
                return kling_client.image_to_video(
                    image,
                    prompt,
                    duration,
                    model,
                    callback_url=callback_url,
                    external_task_id=external_task_id,
                    **fields,
                )
            return kling_client.generate_video(
                prompt, duration, model, callback_url=callback_url, external_task_id=external_task_id, **fields
            )

        _run_job(ctx, submit, as_json=as_json, no_wait=no_wait, timeout=timeout, poll_interval=poll_interval)


@generate.command("image")
@click.argument("prompt")
@click.option("--model", "-m", default="kling-v1", show_default=True, help="Model (aliases accepted).")
@click.option("-n", "n", type=click.IntRange(1, 9), default=1, show_default=True, help="Images (each is charged).")
@click.option("--resolution", type=click.Choice(["1k", "2k"]), help="Output resolution.")
@click.option("--aspect-ratio", help="e.g. 16:9, 1:1, 9:16.")
@click.option("--negative-prompt", help="What to avoid.")
@click.option("--image", help="Reference image (URL or base64): image-to-image.")
@_attribution_options
@_wait_options
@json_option
@_kling_options
@click.pass_context
def generate_image(
    ctx: click.Context,
    /,
    prompt: str,
    model: str,
    n: int,
    resolution: str | None,
    aspect_ratio: str | None,
    negative_prompt: str | None,
    image: str | None,
    project: str | None,
    user: str | None,
    api_key_name: str | None,
    tags: str | None,
    timeout: float,
    poll_interval: float,
    no_wait: bool,
    callback_url: str | None,
    external_task_id: str | None,
    as_json: bool,
    **kling: Any,
) -> None:
    """Generate images: exit 0 when they succeeded, 1 when denied, rejected, failed or still running.

    \b
    Example:
      kling-budget generate image "a lighthouse at dusk, oil painting" -m kling-v2 -n 4 --project ads
    """
    from kling_budget.enforced import BudgetEnforcedClient

    app: AppContext = ctx.obj
    client = _client(kling)
    with (
        BudgetEnforcedClient(
            app.tracker(),
            client=client,
            project_id=project,
            user_id=user,
            api_key_name=api_key_name,
            tags=split_csv(tags),
        ) as kling_client,
        client,
    ):

        def submit() -> Job:
            return kling_client.generate_image(
                prompt,
                model=model,
                n=n,
                resolution=resolution,
                aspect_ratio=aspect_ratio,
                negative_prompt=negative_prompt,
                image=image,
                callback_url=callback_url,
                external_task_id=external_task_id,
            )

        _run_job(ctx, submit, as_json=as_json, no_wait=no_wait, timeout=timeout, poll_interval=poll_interval)


@contextmanager
def _reconcile_progress(enabled: bool) -> Iterator[Callable[[ReconcileItem, int, int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("reconciling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    ) as progress:
        bar = progress.add_task("", total=None)

        def update(item: ReconcileItem, done: int, total: int) -> None:
            progress.update(bar, total=total, completed=done, description=f"{item.reservation_id}: {item.action.value}")

        yield update


@click.command()
@click.option(
    "--held-grace",
    default="15m",
    show_default=True,
    help="Also look up held (not marked submitted) reservations older than this.",
)
@click.option(
    "--release-missing-older-than",
    metavar="AGE",
    help="Release submitted reservations Kling has no task for once this old (e.g. 24h); default: report only.",
)
@click.option(
    "--drift-threshold",
    default="1",
    show_default=True,
    help="Units of difference per pack type tolerated before it counts as drift.",
)
@click.option("--lookback", default="90d", show_default=True, help="Compare packs valid within this long.")
@click.option("--no-costs", is_flag=True, help="Skip the comparison with Kling's /account/costs.")
@json_option
@_kling_options
@click.pass_context
def reconcile(
    ctx: click.Context,
    /,
    held_grace: str,
    release_missing_older_than: str | None,
    drift_threshold: str,
    lookback: str,
    no_costs: bool,
    as_json: bool,
    **kling: Any,
) -> None:
    """Settle jobs that reached Kling but were never settled, then compare spend with Kling's pack figures.

    Submitted reservations are looked up on Kling: finished ones are committed with Kling's units or
    released, running ones are left alone, and ones Kling does not know are reported (never released on
    time alone unless --release-missing-older-than says so). Holds never submitted are released once
    their TTL passes. Kling's /account/costs lags up to 12 h, which the drift check allows for.
    Exit 1 if anything needs attention or drifts.

    \b
    Example:
      kling-budget reconcile
      kling-budget reconcile --release-missing-older-than 24h --json
    """
    from kling_budget.reconcile import reconcile as run

    app: AppContext = ctx.obj
    grace = _age(held_grace, "--held-grace")
    missing = _age(release_missing_older_than, "--release-missing-older-than")
    window = _age(lookback, "--lookback")
    assert grace is not None and window is not None
    threshold = units_to_milli(drift_threshold, "--drift-threshold")
    if threshold < 0:
        raise InvalidInputError(f"--drift-threshold cannot be negative, got {drift_threshold!r}")
    client = _client(kling)
    with client, _reconcile_progress(not as_json) as update:
        report = run(
            app.tracker(),
            client,
            held_grace=grace,
            release_missing_older_than=missing,
            check_costs=not no_costs,
            lookback=window,
            drift_threshold_milli=threshold,
            on_progress=update,
        )
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        ctx.exit(1)


def _print_report(report: ReconcileReport) -> None:
    if report.items:
        print_table(
            "Reservations",
            ["reservation", "was", "action", "task", "held units", "charged units", "message"],
            [
                [
                    i.reservation_id,
                    i.state_before,
                    i.action.value,
                    i.task_id or "",
                    format_units(i.held_milli),
                    "" if i.charged_milli is None else format_units(i.charged_milli),
                    i.message,
                ]
                for i in report.items
            ],
        )
    else:
        click.echo("no open reservations to reconcile")
    if report.tasks_checked is not None:
        if report.task_drift:
            print_table(
                "Ledger vs Kling's per-task billing",
                ["task", "reservation", "Kling units", "Kling USD", "ledger units", "message"],
                [
                    [
                        d.task_id,
                        d.reservation_id or "-",
                        format_units(d.kling_units_milli),
                        format_usd(d.kling_usd_nano) if d.kling_usd_nano else "",
                        "-" if d.ledger_units_milli is None else format_units(d.ledger_units_milli),
                        d.message,
                    ]
                    for d in report.task_drift
                ],
            )
        else:
            click.echo(f"per-task billing: {report.tasks_checked} task(s) billed by Kling match the ledger")
    if report.costs_error:
        click.echo(f"costs: {report.costs_error}")
    elif report.costs_checked:
        print_table(
            "Ledger vs Kling /account/costs",
            ["pack", "Kling consumed units", "ledger committed units", "in lag window units", "drift units", ""],
            [
                [
                    d.pack_type,
                    format_units(d.kling_consumed_milli) if d.compared else "-",
                    format_units(d.ledger_committed_milli),
                    format_units(d.ledger_recent_milli),
                    format_units(d.drift_milli),
                    "DRIFT" if d.drifting else ("not compared" if not d.compared else "ok"),
                ]
                for d in report.drift
            ],
        )
        click.echo(
            "note: Kling's /account/costs lags up to 12 h; units committed in that window may not show there yet."
        )
    counts = ", ".join(f"{n} {action}" for action, n in sorted(report.counts().items())) or "nothing to do"
    problems = len(report.unresolved) + len(report.drifting) + (1 if report.costs_error else 0)
    click.echo(f"{counts}; " + ("all settled" if report.ok else f"{problems} need attention"))


COMMANDS = [generate, reconcile]
