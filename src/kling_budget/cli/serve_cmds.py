"""``kling-budget serve`` (the gateway) and ``kling-budget keys create|list|revoke|rotate`` (virtual keys)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from kling_budget.cli._common import AppContext, json_option, pass_app, print_json, print_table, split_csv

__all__ = ["COMMANDS"]

DEMO_PROJECT = "demo"
DEMO_KEY = "demo"
DEMO_PACKS = {"video": 100_000, "image": 1_000_000, "try_on": 10_000}


def _limit_default(name: str) -> Any:
    """A default of :class:`~kling_budget.server.limits.ServerLimits`, read only when ``serve`` runs."""

    def default() -> Any:
        from kling_budget.server.limits import ServerLimits

        return getattr(ServerLimits(), name)

    return default


def _configure_logging(level: str) -> None:
    """JSON lines on stderr for the gateway's loggers; uvicorn's own chatter only from warnings up.

    Everything is put back when the command ends, so running ``serve`` in-process (tests) leaks nothing.
    """
    from kling_budget.server.metrics import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("kling_budget")
    others = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx")]
    saved = (root.handlers[:], root.level, root.propagate, [log.level for log in others], sys.getswitchinterval())
    root.handlers = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for log in others:
        log.setLevel(logging.WARNING)
    # Ledger calls run in worker threads; with the default 5 ms GIL switch interval a busy event loop makes
    # each of them wait up to 5 ms for the GIL, which dominates create latency under load.
    sys.setswitchinterval(0.0005)

    def restore() -> None:
        root.handlers, root.level, root.propagate = saved[0], saved[1], saved[2]
        for log, old in zip(others, saved[3], strict=True):
            log.setLevel(old)
        sys.setswitchinterval(saved[4])

    click.get_current_context().call_on_close(restore)


def _bind(host: str, port: int) -> Any:
    from kling_budget.simulator.runner import _bind as bind_socket

    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url(host: str, port: int, *, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _tls(certfile: str | None, keyfile: str | None) -> bool:
    """Whether to serve HTTPS, after checking that the certificate and key load (one-line errors otherwise)."""
    if certfile is None and keyfile is None:
        return False
    if certfile is None or keyfile is None:
        raise click.UsageError("give both --ssl-certfile and --ssl-keyfile, or neither")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise click.UsageError(
            f"cannot use --ssl-certfile {certfile} with --ssl-keyfile {keyfile}: {reason} "
            "(expected a PEM certificate chain and its unencrypted PEM private key)"
        ) from None
    return True


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free).")
@click.option(
    "--upstream",
    metavar="URL",
    help="Kling API base URL [env KLING_API_BASE; default https://api-singapore.klingai.com].",
)
@click.option(
    "--public-url",
    metavar="URL",
    envvar="KLING_BUDGET_PUBLIC_URL",
    help="This gateway's public URL; Kling then calls back <URL>/callbacks/kling/... [env KLING_BUDGET_PUBLIC_URL].",
)
@click.option("--demo", is_flag=True, help="SQLite, the built-in simulator as upstream, a seeded key and budgets.")
@click.option(
    "--ssl-certfile",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this PEM certificate (chain); needs --ssl-keyfile.",
)
@click.option(
    "--ssl-keyfile",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="The PEM private key of --ssl-certfile (unencrypted).",
)
@click.option(
    "--init",
    "create_ledger",
    is_flag=True,
    help="Create the ledger if it does not exist (without it, serve refuses a missing ledger).",
)
@click.option(
    "--allow-callback-host",
    "allow_callback_hosts",
    multiple=True,
    metavar="HOST|CIDR",
    help="A host name, address or network a client's callback_url may point at although it is not public "
    "(loopback, private, link-local). Repeatable.",
)
@click.option(
    "--public-metrics", is_flag=True, help="Serve /metrics to any address without a token (default: loopback only)."
)
@click.option(
    "--max-connections",
    default=_limit_default("max_connections"),
    show_default="1000",
    type=click.IntRange(1, 1_000_000),
    help="Open connections at once; more get 503 and are closed.",
)
@click.option(
    "--header-timeout",
    default=_limit_default("header_timeout"),
    show_default="10",
    type=click.FloatRange(0.1, 3600),
    help="Seconds a connection may take to send a request's headers.",
)
@click.option(
    "--settle-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds between settle sweeps (0: off).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Level of the JSON log lines on stderr (info: one access line per request).",
)
@pass_app
def serve(
    app: AppContext,
    host: str,
    port: int,
    upstream: str | None,
    public_url: str | None,
    demo: bool,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    create_ledger: bool,
    allow_callback_hosts: tuple[str, ...],
    public_metrics: bool,
    max_connections: int,
    header_timeout: float,
    settle_interval: float,
    log_level: str,
) -> None:
    """Run the Kling API gateway: Kling's /v1 API on virtual keys, every create priced and reserved.

    The real Kling credentials come from KLING_ACCESS_KEY + KLING_SECRET_KEY (or KLING_API_KEY) and never
    leave the gateway. Clients use virtual keys (kling-budget keys create). KLING_WEBHOOK_SECRET verifies
    Kling's callbacks; KLING_BUDGET_ADMIN_TOKEN enables the admin API; KLING_BUDGET_METRICS_TOKEN protects
    /metrics; KLING_BUDGET_MASTER_KEY encrypts stored secrets (default: master.key in the data directory).
    The ledger must exist (--init creates it). SIGTERM stops gracefully.

    \b
    Example:
      kling-budget serve --demo
      KLING_ACCESS_KEY=... KLING_SECRET_KEY=... kling-budget --db postgresql://kb@db/kb serve --init \\
          --host 0.0.0.0 --public-url https://kling-gw.example.com
      kling-budget serve --ssl-certfile gw.pem --ssl-keyfile gw-key.pem --public-url https://gw.example.com:8787
    """
    import uvicorn

    from kling_budget.server import GatewayConfig, GatewayState, create_app
    from kling_budget.server.limits import ServerLimits, guarded_protocol

    tls = _tls(ssl_certfile, ssl_keyfile)
    _configure_logging(log_level)
    limits = ServerLimits(max_connections=max_connections, header_timeout=header_timeout)
    sock = _bind(host, port)
    listen_port = sock.getsockname()[1]
    base_url = _url(host, listen_port, tls=tls)
    options: dict[str, Any] = {
        "allow_callback_hosts": allow_callback_hosts,
        "listen_port": listen_port,
        "limits": limits,
        "public_metrics": public_metrics,
        "settle_interval": settle_interval,
    }
    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        if demo:
            config, state = _demo(stack, app, base_url, public_url, options)
        else:
            config = GatewayConfig.from_env(
                upstream_url=upstream,
                db=app.db,
                prices=app.prices,
                prices_overlay=app.prices_overlay,
                public_url=public_url,
                **options,
            )
            _require_ledger(app.db, create_ledger)
            state = GatewayState(config)
            click.echo(f"kling-budget gateway on {base_url} -> {config.upstream_url}")
            click.echo(f"ledger: {state.ledger.backend.display_url}")
            if config.model_in_path_auth is None:
                click.echo(
                    "Kling API designs: /v1 only (the 2026 design needs KLING_API_KEY: Kling refuses JWTs there)"
                )
            else:
                click.echo("Kling API designs: /v1 and 2026 (/<product>/<model>, /tasks)")
            if config.admin_token is None:
                click.echo("admin API: disabled (set KLING_BUDGET_ADMIN_TOKEN to enable it)")
            click.echo(f"dashboard: {base_url}/dashboard")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, state=state),
                http=guarded_protocol(limits),
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=int(config.shutdown_grace),
                timeout_keep_alive=int(limits.keep_alive_timeout),
                backlog=2048,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
            )
        )
        # uvicorn re-raises the stop signal after a graceful shutdown; a no-op SIGTERM handler makes that a
        # normal exit (status 0), and Ctrl-C's KeyboardInterrupt is a normal stop too.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])


def _require_ledger(db: str | None, create: bool) -> None:
    """``serve`` opens only a ledger that exists, unless asked to create it: a ledger file deleted under a
    gateway must not come back empty (no keys, no budgets) on the next start."""
    from kling_budget.errors import ConfigurationError
    from kling_budget.ledger.urls import ledger_exists, resolve_db_url

    if create or ledger_exists(db):
        return
    raise ConfigurationError(
        f"no ledger at {resolve_db_url(db)}; serve does not create one unless asked: pass --init to create it "
        "(or restore the ledger if it was removed)"
    )


def _demo(
    stack: contextlib.ExitStack, app: AppContext, base_url: str, public_url: str | None, options: dict[str, Any]
) -> tuple[Any, Any]:
    """Start the simulator, open a demo ledger, seed a project key and two budgets, print how to use them."""
    from kling_budget.kling.auth import APIKeyAuth, JWTAuth
    from kling_budget.ledger.urls import sqlite_url
    from kling_budget.server import GatewayConfig, GatewayState, Secret
    from kling_budget.server.keys import data_dir
    from kling_budget.simulator import SimulatorConfig, running_simulator

    if app.db:
        db, home = app.db, data_dir()
    else:
        home = Path(tempfile.mkdtemp(prefix="kling-budget-serve-demo-"))
        db = sqlite_url(home / "ledger.db")
    sim = stack.enter_context(
        running_simulator(SimulatorConfig.single(packs=DEMO_PACKS, concurrency=1000), log_level="error")
    )
    assert sim.access_key is not None and sim.secret_key is not None
    admin = Secret.generate()
    config = GatewayConfig(
        upstream_url=sim.base_url,
        upstream_auth=JWTAuth(sim.access_key, sim.secret_key),
        upstream_api_key_auth=APIKeyAuth(sim.api_key) if sim.api_key else None,
        db=db,
        prices=app.prices,
        prices_overlay=app.prices_overlay,
        home=home,
        public_url=public_url or base_url,
        admin_token=admin,
        **options,
    )
    state = GatewayState(config)
    tracker = state.tracker
    tracker.set_budget("demo-daily", project_id=DEMO_PROJECT, period="daily", limit_units=50)
    tracker.set_budget("account-monthly", period="monthly", limit_units=1000)
    try:
        issued = state.keys.create(DEMO_KEY, project=DEMO_PROJECT, user="alice", tags=["demo"], kind="both")
    except Exception:
        issued = state.keys.rotate(DEMO_KEY)
    echo = click.echo
    echo("kling-budget gateway — demo mode (no Kling credentials needed)\n")
    echo(f"  gateway     {base_url}   (Kling's /v1 and 2026 APIs; point any Kling client here)")
    echo(f"  upstream    the built-in Kling simulator at {sim.base_url}")
    echo(f"  ledger      {db}")
    echo(f"  dashboard   {base_url}/dashboard")
    echo(f"  admin token {admin.reveal()}   (Authorization: Bearer <token> on the admin API)")
    echo("\nBudgets: 'demo-daily' (project demo, 50 units/day) and 'account-monthly' (1000 units/month).")
    echo(f"Virtual key '{DEMO_KEY}' (project {DEMO_PROJECT}, user alice) — shown once, keep it:")
    echo(f"  access key  {issued.key.access_key}")
    echo(f"  secret key  {issued.secret_key}")
    echo(f"  API key     {issued.api_key}")
    echo("\nTry it (1.5 units against both budgets; repeat until the daily budget says no):\n")
    echo(f"  curl -s {base_url}/v1/videos/text2video \\")
    echo(f"    -H 'Authorization: Bearer {issued.api_key}' -H 'Content-Type: application/json' \\")
    echo("""    -d '{"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox in the snow"}'""")
    echo(f"\n  curl -s {base_url}/v1/videos/text2video/<task_id> -H 'Authorization: Bearer {issued.api_key}'")
    echo("\nKling's 2026 design (model in the path; 3 units):\n")
    echo(f"  curl -s {base_url}/text-to-video/kling-3.0 \\")
    echo(f"    -H 'Authorization: Bearer {issued.api_key}' -H 'Content-Type: application/json' \\")
    echo("""    -d '{"prompt": "a red fox in the snow", "settings": {"duration": 5, "resolution": "720p"}}'""")
    echo(f"\n  curl -s '{base_url}/tasks?task_ids=<id>' -H 'Authorization: Bearer {issued.api_key}'")
    echo(f"  curl -s {base_url}/account/costs -H 'Authorization: Bearer {issued.api_key}'")
    echo("\nCtrl-C stops it.\n")
    return config, state


@click.group()
def keys() -> None:
    """Virtual keys for the gateway: create, list, revoke, rotate (same database as 'serve').

    \b
    Example:
      kling-budget keys create --name web-app --project marketing --user alice --kind jwt
      kling-budget keys list
      kling-budget keys rotate web-app
      kling-budget keys revoke web-app
    """


def _store(app: AppContext, *, secrets: bool) -> Any:
    from kling_budget.ledger import open_backend
    from kling_budget.server.keys import KeyStore, load_master_key

    backend = open_backend(app.db)
    click.get_current_context().call_on_close(backend.close)
    return KeyStore(backend, load_master_key() if secrets else None)


def _print_issued(issued: Any, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(issued.to_dict())
        return
    key = issued.key
    click.echo(f"{verb} key '{key.name}' (project {key.project}{', user ' + key.user if key.user else ''}).")
    click.echo("The secrets below are shown once and never stored in plaintext:")
    if issued.secret_key:
        click.echo(f"  access key      {key.access_key}")
        click.echo(f"  secret key      {issued.secret_key}")
    if issued.api_key:
        click.echo(f"  API key         {issued.api_key}")
    click.echo(f"  webhook secret  {issued.webhook_secret}   (verifies callbacks the gateway forwards to you)")


@keys.command("create")
@click.option("--name", required=True, help="Unique key name (budgets match it as --api-key).")
@click.option("--project", required=True, help="Project every job made with the key is charged to.")
@click.option("--user", default="", help="User every job is attributed to.")
@click.option("--tags", default="", help="Comma-separated tags (budgets can match a tag).")
@click.option(
    "--kind",
    type=click.Choice(["jwt", "api", "both"]),
    default="jwt",
    show_default=True,
    help="jwt: access + secret key (sign your own JWT as with Kling); api: one API key; both.",
)
@json_option
@pass_app
def keys_create(app: AppContext, name: str, project: str, user: str, tags: str, kind: str, as_json: bool) -> None:
    """Issue a virtual key; its secrets are printed once.

    \b
    Example:
      kling-budget keys create --name web-app --project marketing --user alice --tags web,eu --kind api
    """
    issued = _store(app, secrets=True).create(name, project=project, user=user, tags=split_csv(tags), kind=kind)
    _print_issued(issued, as_json, "Created")


@keys.command("list")
@click.option("--active", is_flag=True, help="Only keys that are not revoked.")
@json_option
@pass_app
def keys_list(app: AppContext, active: bool, as_json: bool) -> None:
    """List virtual keys (never their secrets).

    \b
    Example:
      kling-budget keys list --json
    """
    listed = _store(app, secrets=False).list(include_revoked=not active)
    if as_json:
        print_json([k.to_dict() for k in listed])
        return
    rows = [
        (
            k.name,
            k.kind,
            k.project,
            k.user,
            ",".join(k.tags),
            k.access_key or "",
            (k.api_key_prefix + "…") if k.api_key_prefix else "",
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            "revoked" if k.revoked else "active",
        )
        for k in listed
    ]
    print_table(
        "Virtual keys",
        ["name", "kind", "project", "user", "tags", "access key", "API key", "created (UTC)", "state"],
        rows,
    )


@keys.command("revoke")
@click.argument("name")
@json_option
@pass_app
def keys_revoke(app: AppContext, name: str, as_json: bool) -> None:
    """Revoke a key: every gateway on this database refuses it within a second.

    \b
    Example:
      kling-budget keys revoke web-app
    """
    key = _store(app, secrets=False).revoke(name)
    if as_json:
        print_json(key.to_dict())
    else:
        click.echo(f"Revoked key '{key.name}'.")


@keys.command("rotate")
@click.argument("name")
@json_option
@pass_app
def keys_rotate(app: AppContext, name: str, as_json: bool) -> None:
    """Issue new credentials for a key (same name, attribution and tasks); the old ones stop working.

    \b
    Example:
      kling-budget keys rotate web-app
    """
    issued = _store(app, secrets=True).rotate(name)
    _print_issued(issued, as_json, "Rotated")


COMMANDS = [serve, keys]
