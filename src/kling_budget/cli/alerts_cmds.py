"""``kling-budget alerts add|list|remove|test|deliver|recent|check`` and ``kling-budget forecast``."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from kling_budget.cli._common import AppContext, json_option, pass_app, print_json, print_table, split_csv
from kling_budget.cli._secrets import SecretSource, read_secret, refuse_arguments, refused_option
from kling_budget.errors import InvalidInputError
from kling_budget.types import AlertKind
from kling_budget.windows import zone

_KINDS = ", ".join(k.value for k in AlertKind)


def _when(instant: datetime | None, timezone: str = "UTC") -> str:
    return instant.astimezone(zone(timezone)).isoformat(timespec="minutes") if instant else "-"


def _tracker(app: AppContext) -> Any:
    """The tracker, without the background delivery of pending alerts on opening: these commands show and
    deliver the outbox themselves, in the foreground."""
    return app.tracker(deliver_pending_alerts=False)


def _outbox(app: AppContext) -> Any:
    from kling_budget.ledger.outbox import Outbox

    return Outbox(_tracker(app).ledger.backend)


def _dispatcher(app: AppContext) -> Any:
    """A dispatcher that delivers in this thread: a CLI command reports what happened before it exits."""
    from kling_budget.alerts import AlertDispatcher

    tracker = _tracker(app)
    return AlertDispatcher(tracker.ledger, tracker.alerts.sinks, background=False)


def _sink_row(sink: Any) -> dict[str, Any]:
    from kling_budget.alerts._sinks import describe_target

    status = sink.status
    return {
        "id": sink.id,
        "kind": sink.kind,
        "target": describe_target(sink.kind, sink.config),
        "budget": sink.budget or None,
        "kinds": list(sink.kinds),
        "enabled": sink.enabled,
        "sent": status.sent,
        "failures": status.failures,
        "consecutive_failures": status.consecutive_failures,
        "last_ok_at": status.last_ok_at.isoformat() if status.last_ok_at else None,
        "last_error_at": status.last_error_at.isoformat() if status.last_error_at else None,
        "last_error": status.last_error or None,
    }


@click.group()
def alerts() -> None:
    """Where alerts go (webhook, Slack, email), and what was sent.

    Alerts fire once per budget window and threshold; every process sharing the ledger delivers to the
    sinks stored in it. Without any sink, alerts go to the log (stderr).

    \b
    Example:
      kling-budget alerts add slack --budget marketing      # prompts for the webhook URL
      kling-budget alerts test
      kling-budget alerts recent
    """


def _filters(fn: Any) -> Any:
    fn = click.option("--budget", help="Only alerts of this budget (default: every alert).")(fn)
    fn = click.option("--kinds", help=f"Only these alert kinds, comma-separated ({_KINDS}).")(fn)
    fn = click.option("--timeout", default="5", show_default=True, help="Seconds per network operation.")(fn)
    fn = click.option("--retries", default=3, show_default=True, type=click.IntRange(1, 10), help="Tries per round.")(
        fn
    )
    return fn


def _add(
    app: AppContext,
    kind: str,
    config: dict[str, Any],
    budget: str | None,
    kinds: str | None,
    timeout: str,
    retries: int,
    read_secrets: Callable[[], dict[str, Any]] = dict,
) -> None:
    """Validate the settings, then read the secrets (a prompt comes last), then store the sink."""
    from kling_budget.alerts._sinks import build_sink, describe_target

    try:
        seconds = float(timeout)
    except ValueError:
        raise InvalidInputError(f"--timeout must be a number of seconds, got {timeout!r}") from None
    if not 0 < seconds <= 300:
        raise InvalidInputError(f"--timeout must be between 0 and 300 seconds, got {timeout!r}")
    wanted = split_csv(kinds)
    unknown = [k for k in wanted if k not in {a.value for a in AlertKind}]
    if unknown:
        raise InvalidInputError(f"unknown alert kind {unknown[0]!r}; accepted: {_KINDS}")
    if budget:
        _tracker(app).get_budget(budget)  # names the existing budgets if there is no such one
    config = {**config, **read_secrets(), "timeout": seconds, "attempts": retries}
    build_sink(kind, config)  # validates the URL or the addresses before anything is stored
    sink = _outbox(app).add_sink(kind, config, budget=budget or "", kinds=wanted)
    scope = f" for budget {budget}" if budget else ""
    click.echo(f"added alert sink #{sink.id}: {kind} {describe_target(kind, config)}{scope}")


_WEBHOOK_URL = SecretSource("the webhook URL", "KLING_BUDGET_ALERT_URL", "--url-file")
_SLACK_URL = SecretSource("the Slack webhook URL", "KLING_BUDGET_SLACK_URL", "--url-file")
_SIGNING_SECRET = SecretSource(
    "the webhook signing secret", "KLING_BUDGET_ALERT_SIGNING_SECRET", "--signing-secret-file", prompt=False
)
_SMTP_PASSWORD = SecretSource("the SMTP password", "KLING_BUDGET_SMTP_PASSWORD", "--password-file")
_TAKES_EXTRA = {"allow_extra_args": True}  # only to refuse a secret given as an argument


@alerts.group("add")
def alerts_add() -> None:
    """Add a sink: webhook, slack or email. Their secrets are never arguments.

    A webhook or Slack URL and an SMTP password come from the environment, a file, or a hidden prompt;
    they are stored encrypted with the master key (KLING_BUDGET_MASTER_KEY or master.key).

    \b
    Example:
      kling-budget alerts add webhook --kinds threshold,exhausted        # prompts for the URL
      KLING_BUDGET_SLACK_URL=https://hooks.slack.com/services/... kling-budget alerts add slack
      kling-budget alerts add email --host smtp.example.com --username alerts --password-file smtp.pw \\
          --from alerts@example.com --to ops@example.com
    """


def _url_option(source: SecretSource) -> Callable[[Any], Any]:
    return click.option(
        "--url-file",
        metavar="PATH",
        help=f"File holding the URL [else env {source.env}, else a hidden prompt].",
    )


@alerts_add.command("webhook", context_settings=_TAKES_EXTRA)
@_url_option(_WEBHOOK_URL)
@refused_option("--url", source=_WEBHOOK_URL)
@click.option(
    "--sign",
    is_flag=True,
    help="Sign each delivery (Standard Webhooks headers) with the secret from --signing-secret-file or "
    "KLING_BUDGET_ALERT_SIGNING_SECRET, else with a new one printed once.",
)
@click.option("--signing-secret-file", metavar="PATH", help="File holding a whsec_... signing secret (implies --sign).")
@_filters
@click.pass_context
def add_webhook(
    ctx: click.Context,
    /,
    url_file: str | None,
    sign: bool,
    signing_secret_file: str | None,
    budget: str | None,
    kinds: str | None,
    timeout: str,
    retries: int,
) -> None:
    """POST each alert as JSON to a URL (the event's fields; Idempotency-Key header = its dedupe key).

    The URL (it usually carries a token) comes from KLING_BUDGET_ALERT_URL, --url-file or a hidden prompt.

    \b
    Example:
      kling-budget alerts add webhook --budget marketing --sign
      KLING_BUDGET_ALERT_URL=https://ops.example.com/hooks/kling kling-budget alerts add webhook
    """
    refuse_arguments(ctx, _WEBHOOK_URL, "the webhook URL")
    generated = []

    def read() -> dict[str, Any]:
        config: dict[str, Any] = {"url": read_secret(_WEBHOOK_URL, url_file)}
        if sign or signing_secret_file:
            secret = read_secret(_SIGNING_SECRET, signing_secret_file, required=False)
            if secret is None:
                secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
                generated.append(secret)
            config["signing_secret"] = secret
        return config

    _add(ctx.obj, "webhook", {}, budget, kinds, timeout, retries, read)
    for secret in generated:
        click.echo(f"signing secret (shown once; verify the webhook-signature header with it): {secret}")


@alerts_add.command("slack", context_settings=_TAKES_EXTRA)
@_url_option(_SLACK_URL)
@refused_option("--url", source=_SLACK_URL)
@_filters
@click.pass_context
def add_slack(
    ctx: click.Context, /, url_file: str | None, budget: str | None, kinds: str | None, timeout: str, retries: int
) -> None:
    """Post each alert to a Slack incoming webhook (the URL is shown masked from now on).

    The URL comes from KLING_BUDGET_SLACK_URL, --url-file or a hidden prompt.

    \b
    Example:
      kling-budget alerts add slack --kinds threshold,exhausted      # prompts for the URL
    """
    refuse_arguments(ctx, _SLACK_URL, "the Slack webhook URL")
    _add(ctx.obj, "slack", {}, budget, kinds, timeout, retries, lambda: {"url": read_secret(_SLACK_URL, url_file)})


@alerts_add.command("email")
@click.option("--host", required=True, help="SMTP server.")
@click.option("--port", default=587, show_default=True, type=click.IntRange(1, 65535))
@click.option("--from", "sender", required=True, help="From address.")
@click.option("--to", "recipients", required=True, help="Comma-separated recipient addresses.")
@click.option("--username", default="", help="SMTP login (then a password is needed).")
@click.option(
    "--password-file",
    metavar="PATH",
    help="File holding the SMTP password, stored encrypted [else env KLING_BUDGET_SMTP_PASSWORD, else a prompt].",
)
@refused_option("--password", source=_SMTP_PASSWORD)
@click.option(
    "--password-env", default="", help="Instead: read the password from this environment variable when sending."
)
@click.option("--no-starttls", is_flag=True, help="Do not upgrade with STARTTLS (then no login is allowed).")
@click.option("--ssl", "use_ssl", is_flag=True, help="Implicit TLS (port 465) instead of STARTTLS.")
@click.option("--cafile", default="", help="CA bundle to trust (a private or self-signed server certificate).")
@_filters
@pass_app
def add_email(
    app: AppContext,
    host: str,
    port: int,
    sender: str,
    recipients: str,
    username: str,
    password_file: str | None,
    password_env: str,
    no_starttls: bool,
    use_ssl: bool,
    cafile: str,
    budget: str | None,
    kinds: str | None,
    timeout: str,
    retries: int,
) -> None:
    """Email each alert over SMTP (STARTTLS and login by default).

    With --username, the password comes from --password-file, KLING_BUDGET_SMTP_PASSWORD or a hidden prompt
    and is stored encrypted; or name a variable with --password-env to read it at each send instead.

    \b
    Example:
      kling-budget alerts add email --host smtp.example.com --username alerts --password-env SMTP_PASSWORD \\
          --from alerts@example.com --to ops@example.com,finance@example.com
    """
    if password_file and password_env:
        raise InvalidInputError("give --password-file or --password-env, not both")
    if (password_file or password_env) and not username:
        raise InvalidInputError("an SMTP password needs --username (the login it belongs to)")
    if username and no_starttls and not use_ssl:
        raise InvalidInputError("refusing to send an SMTP password without TLS: drop --no-starttls or use --ssl")
    config = {
        "host": host,
        "port": port,
        "sender": sender,
        "recipients": split_csv(recipients),
        "username": username,
        "starttls": not no_starttls,
        "ssl": use_ssl,
        "cafile": cafile,
    }
    if password_env:
        config["password_env"] = password_env

    def read() -> dict[str, Any]:
        return {"password": read_secret(_SMTP_PASSWORD, password_file)} if username and not password_env else {}

    _add(app, "email", config, budget, kinds, timeout, retries, read)


@alerts.command("list")
@json_option
@pass_app
def alerts_list(app: AppContext, as_json: bool) -> None:
    """List the sinks with their delivery counts and last error (secrets masked).

    \b
    Example:
      kling-budget alerts list --json
    """
    sinks = [_sink_row(s) for s in _outbox(app).sinks()]
    counts = _outbox(app).counts()
    if as_json:
        print_json({"sinks": sinks, "outbox": counts})
        return
    if not sinks:
        click.echo("no alert sinks: alerts go to the log (stderr); add one with 'kling-budget alerts add'")
    else:
        print_table(
            None,
            ["id", "kind", "target", "budget", "kinds", "sent", "failures", "last ok", "last error"],
            [
                [
                    s["id"],
                    s["kind"],
                    s["target"],
                    s["budget"] or "all",
                    ",".join(s["kinds"]) or "all",
                    s["sent"],
                    s["failures"],
                    (s["last_ok_at"] or "-")[:16],
                    s["last_error"] or "-",
                ]
                for s in sinks
            ],
        )
    click.echo(f"outbox: {counts['pending']} pending, {counts['failed']} failed, {counts['delivered']} delivered")


@alerts.command("remove")
@click.argument("sink_id", metavar="ID", type=int)
@pass_app
def alerts_remove(app: AppContext, sink_id: int) -> None:
    """Remove the sink ID (see 'alerts list').

    \b
    Example:
      kling-budget alerts remove 2
    """
    _outbox(app).remove_sink(sink_id)
    click.echo(f"removed alert sink #{sink_id}")


@alerts.command("test")
@click.argument("sink_id", metavar="[ID]", type=int, required=False)
@json_option
@click.pass_context
def alerts_test(ctx: click.Context, /, sink_id: int | None, as_json: bool) -> None:
    """Send a test alert now to the sink ID, or to every sink; exit 1 if one failed.

    \b
    Example:
      kling-budget alerts test 2
    """
    app: AppContext = ctx.obj
    results = _dispatcher(app).send_test(sink_id)
    if as_json:
        print_json([{"sink": r.sink, "ok": r.ok, "error": r.error or None} for r in results])
    else:
        for r in results:
            click.echo(f"{'ok    ' if r.ok else 'FAILED'} {r.sink}{'' if r.ok else ': ' + r.error}")
    if not all(r.ok for r in results):
        ctx.exit(1)


@alerts.command("deliver")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="Events at most.")
@click.option("--retry-failed", is_flag=True, help="Also retry events that were given up on.")
@json_option
@click.pass_context
def alerts_deliver(ctx: click.Context, /, limit: int, retry_failed: bool, as_json: bool) -> None:
    """Deliver pending alerts now (left by a failed sink or a stopped process); exit 1 if some failed.

    Safe to run from several machines at once: each event is leased to one deliverer.

    \b
    Example:
      kling-budget alerts deliver
    """
    app: AppContext = ctx.obj
    dispatcher = _dispatcher(app)
    revived = dispatcher.outbox.retry_failed() if retry_failed else 0
    result = dispatcher.flush(limit=limit, due_only=False)
    counts = dispatcher.outbox.counts()
    if as_json:
        print_json({**result.to_dict(), "revived": revived, "outbox": counts})
    else:
        click.echo(
            f"delivered {result.delivered}, retry later {result.deferred}, given up {result.failed}; "
            f"outbox: {counts['pending']} pending, {counts['failed']} failed"
        )
    if result.deferred or result.failed:
        ctx.exit(1)


@alerts.command("recent")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def alerts_recent(app: AppContext, limit: int, as_json: bool) -> None:
    """The latest alerts with their delivery state (delivered, pending, retrying, failed).

    \b
    Example:
      kling-budget alerts recent --limit 50
    """
    entries = _outbox(app).entries(limit=limit)
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        click.echo("no alerts yet")
        return
    print_table(
        None,
        ["id", "time", "kind", "budget", "status", "message"],
        [
            [
                e.event.id,
                e.event.created_at[:16],
                e.event.kind.value + (f" {e.event.threshold}%" if e.event.threshold is not None else ""),
                e.event.budget or "-",
                e.status + (f" ({e.attempts})" if e.attempts else ""),
                e.event.message,
            ]
            for e in entries
        ],
    )


def _duration(value: str) -> timedelta:
    from kling_budget.cli._common import parse_ttl

    parsed = parse_ttl(value)
    assert parsed is not None
    return parsed


@alerts.command("check")
@click.option("--pack-low", default=20, show_default=True, type=click.IntRange(1, 99), help="Warn at this % left.")
@click.option("--expiring-within", default="7d", show_default=True, help="Warn about packs expiring this soon.")
@json_option
@pass_app
def alerts_check(app: AppContext, pack_low: int, expiring_within: str, as_json: bool) -> None:
    """Raise forecast and pack alerts that are due, and deliver them (run it from cron or a timer).

    \b
    Example:
      kling-budget alerts check --expiring-within 3d
    """
    from kling_budget.alerts import evaluate_alerts

    try:
        within = _duration(expiring_within)
    except InvalidInputError:
        raise InvalidInputError(f"--expiring-within must look like 12h or 7d, got {expiring_within!r}") from None
    dispatcher = _dispatcher(app)
    events = evaluate_alerts(dispatcher.ledger, pack_low_percent=pack_low, expiring_within=within)
    dispatcher.deliver(events)
    if as_json:
        print_json([e.to_dict() for e in events])
    elif not events:
        click.echo("no new alerts")
    else:
        for event in events:
            click.echo(f"{event.kind.value}: {event.message}")


@click.command("forecast")
@click.argument("name", required=False)
@json_option
@pass_app
def forecast_cmd(app: AppContext, name: str | None, as_json: bool) -> None:
    """Where each budget is heading: burn rate, spend at the end of its window, when it runs out.

    The rate is committed + held spend over the real time elapsed in the budget's current window, in its
    time zone; a daily budget projects to its own midnight, not to the end of the month.

    \b
    Example:
      kling-budget forecast
      kling-budget forecast marketing --json
    """
    from kling_budget.forecast import forecast_budgets

    forecasts = forecast_budgets(app.tracker().ledger, [name] if name else [])
    if as_json:
        print_json([f.to_dict() for f in forecasts] if not name else forecasts[0].to_dict())
        return
    if not forecasts:
        click.echo("no budgets yet; create one with 'kling-budget budget set NAME --limit-units N'")
        return
    rows = []
    for fc in forecasts:
        for limit in fc.limits:
            rate = limit.to_dict()["rate_per_hour"]
            projected = (
                "-"
                if limit.projected is None
                else f"{limit.fmt_rough(limit.projected)} ({limit.percent(limit.projected)}%)"
            )
            runs_out = "exhausted" if limit.exhausted else _when(limit.exhaustion_at, fc.timezone)
            rows.append(
                [
                    fc.budget,
                    f"{fc.period} ({fc.timezone})",
                    limit.fmt(limit.limit),
                    f"{limit.fmt(limit.used)} ({limit.percent(limit.used)}%)",
                    "-" if rate is None else (f"${rate}" if limit.limit_kind == "usd" else rate),
                    projected,
                    runs_out,
                    _when(fc.window_end, fc.timezone) if fc.window_end else "never",
                    ("OVER" if limit.will_exceed else "ok") + ("" if fc.confident else " (early)"),
                ]
            )
    print_table(
        None,
        ["budget", "period", "limit", "used", "rate/h", "at window end", "runs out", "window ends", "forecast"],
        rows,
    )


COMMANDS = [alerts, forecast_cmd]
