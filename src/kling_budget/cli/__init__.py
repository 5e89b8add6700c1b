"""The ``kling-budget`` command line: a thin layer that parses, calls the library and formats.

Exit codes: 0 ok; 1 denied, over budget, or a check failed; 2 bad input (one line on stderr, nothing
changed). Set ``KLING_BUDGET_DEBUG=1`` to see tracebacks of unexpected errors. Secrets are never taken as
arguments (see :mod:`kling_budget.cli._secrets`).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import NoReturn

import click

from kling_budget.cli._common import EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, AppContext
from kling_budget.cli._secrets import refuse_url_password
from kling_budget.errors import (
    BudgetExceededError,
    IdempotencyConflictError,
    InvalidInputError,
    KlingBudgetError,
    ReservationNotFoundError,
)

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    envvar="KLING_BUDGET_DB",
    metavar="URL",
    help="Ledger: sqlite:///path.db, a file path, or postgresql://user@host/db "
    "[env KLING_BUDGET_DB; default: ledger.db in the user data directory].",
)
@click.option(
    "--prices",
    envvar="KLING_BUDGET_PRICES",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Your own price table (TOML) instead of the packaged one [env KLING_BUDGET_PRICES].",
)
@click.option(
    "--prices-overlay",
    envvar="KLING_BUDGET_PRICES_OVERLAY",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="A price overlay (TOML, same format) that adds or overrides models on top of the price table, e.g. "
    "a model Kling has not priced yet [env KLING_BUDGET_PRICES_OVERLAY].",
)
@click.version_option(package_name="kling-budget")
@click.pass_context
def cli(ctx: click.Context, db: str | None, prices: str | None, prices_overlay: str | None) -> None:
    """Exact prices, a crash-safe spend ledger and enforced budgets for the Kling AI API.

    \b
    Example:
      kling-budget price --model kling-v2-6 --mode pro --duration 10 --sound on
      kling-budget budget set marketing --project marketing --period monthly --limit-units 1000
      kling-budget reserve --model kling-v2-6 --mode pro --duration 5 --project marketing
    """
    if ctx.get_parameter_source("db") is click.core.ParameterSource.COMMANDLINE:
        refuse_url_password(db, "--db")
    app = AppContext(db=db, prices=prices, prices_overlay=prices_overlay)
    ctx.obj = app
    ctx.call_on_close(app.close)
    _configure_logging(ctx)


def _configure_logging(ctx: click.Context) -> None:
    """Alerts and warnings from the library go to stderr, one line each, while the command runs.

    The previous logging set-up is restored when the command ends, so calling :func:`main` in-process
    (tests, embedding) neither leaks a handler bound to an old ``sys.stderr`` nor hides later records.
    """
    log = logging.getLogger("kling_budget")
    if log.handlers:  # the embedding application configured logging itself
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved_level, saved_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False

    def restore() -> None:
        log.removeHandler(handler)
        log.setLevel(saved_level)
        log.propagate = saved_propagate

    ctx.call_on_close(restore)


def _register() -> None:
    from kling_budget.cli import (
        alerts_cmds,
        budget_cmds,
        db_cmds,
        demo,
        kling_cmds,
        ledger_cmds,
        pricing_cmds,
        report_cmds,
        serve_cmds,
        simulate_cmds,
    )

    modules = (
        pricing_cmds,
        budget_cmds,
        ledger_cmds,
        kling_cmds,
        alerts_cmds,
        report_cmds,
        demo,
        serve_cmds,
        simulate_cmds,
        db_cmds,
    )
    for module in modules:
        for command in module.COMMANDS:
            cli.add_command(command)


# The optional dependencies a command may need, and the extra that installs each.
_EXTRAS = {
    "starlette": "server",
    "uvicorn": "server",
    "httptools": "server",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "matplotlib": "report",
}


_register()


_MAX_ERROR_CHARACTERS = 500
# A file argument that cannot be used is bad input (exit 2); other operating-system errors are not.
_BAD_PATH_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EINVAL,
        errno.ELOOP,
    }
)


def _fail(message: str, code: int) -> NoReturn:
    # One line, and short: a message may quote input (a 5,000-character file name, a huge number).
    line = " ".join(message.split())
    if len(line) > _MAX_ERROR_CHARACTERS:
        line = line[: _MAX_ERROR_CHARACTERS - 1] + "…"
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


def _os_error(exc: OSError) -> NoReturn:
    name = exc.filename if isinstance(exc.filename, str) else ""
    shown = name if len(name) <= 80 else name[:79] + "…"
    reason = exc.strerror or type(exc).__name__
    code = EXIT_BAD_INPUT if exc.errno in _BAD_PATH_ERRNOS else EXIT_DENIED
    _fail(f"{reason}: {shown}" if shown else reason, code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``kling-budget`` console script; always ends with ``sys.exit(code)``."""
    try:
        # Without standalone mode click returns the code of ``ctx.exit(code)`` instead of exiting.
        result = cli.main(args=argv, prog_name="kling-budget", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, EXIT_BAD_INPUT)
    except click.exceptions.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except BudgetExceededError as exc:
        _fail(f"denied: {exc}", EXIT_DENIED)
    except (InvalidInputError, ReservationNotFoundError, IdempotencyConflictError) as exc:
        # An unknown reservation id, or a key that belongs to another request, is bad input: nothing changed.
        _fail(str(exc), EXIT_BAD_INPUT)
    except KlingBudgetError as exc:
        _fail(str(exc), EXIT_DENIED)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        if os.environ.get("KLING_BUDGET_DEBUG"):
            raise
        _os_error(exc)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in _EXTRAS or os.environ.get("KLING_BUDGET_DEBUG"):
            raise
        _fail(f"this command needs {top}: pip install 'kling-budget[{_EXTRAS[top]}]'", EXIT_DENIED)
    except Exception as exc:
        if os.environ.get("KLING_BUDGET_DEBUG"):
            raise
        _fail(f"internal error ({type(exc).__name__}): {exc}; set KLING_BUDGET_DEBUG=1 for details", EXIT_DENIED)
    sys.exit(result if isinstance(result, int) else EXIT_OK)
