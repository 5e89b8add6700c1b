"""Secrets reach the CLI from the environment, a file or a hidden prompt, never as command-line arguments.

An argument is visible to every user of the machine in the process list (``ps``, ``/proc/<pid>/cmdline``)
and stays in the shell's history. So an option or argument that used to carry a secret (``--password``,
``--secret-key``, a webhook URL ...) is still recognised, only to be refused with one line naming the
accepted ways; it never reaches the library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click

from kling_budget.errors import InvalidInputError

__all__ = ["SecretSource", "read_secret", "refuse_arguments", "refuse_url_password", "refused_option"]

MAX_SECRET_FILE_BYTES = 64 * 1024
_WHY = "a secret on the command line is visible in the process list and kept in the shell history"


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where one secret may come from.

    Attributes:
        what: what it is, for messages ("the SMTP password").
        env: the environment variable that may hold it.
        file_option: the option naming a file that holds it (``--password-file``).
        prompt: whether an interactive user may type it (hidden) when neither is given.
    """

    what: str
    env: str
    file_option: str
    prompt: bool = True

    def ways(self) -> str:
        """The accepted ways, as a phrase."""
        last = ", or type it at the prompt (hidden)" if self.prompt else ""
        return f"set {self.env}, give {self.file_option} PATH{last}"


def _refuse(source: SecretSource, given: str) -> InvalidInputError:
    return InvalidInputError(f"{given} is not accepted: {_WHY}; for {source.what}, {source.ways()}")


def refused_option(*names: str, source: SecretSource) -> Callable[[Any], Any]:
    """A hidden option (``--password``) that only exists to refuse a secret given on the command line."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            raise _refuse(source, f"{names[0]} VALUE")

    return click.option(
        *names,
        hidden=True,
        expose_value=False,
        is_eager=True,
        callback=callback,
        help=f"Refused: {source.what} is taken from {source.env} or {source.file_option}.",
    )


def refuse_arguments(ctx: click.Context, source: SecretSource, what: str) -> None:
    """Refuse extra positional arguments of a command (``alerts add slack https://...``): they would be ``what``."""
    if ctx.args:
        raise _refuse(source, f"{what} as an argument")


def read_secret_file(path: str, option: str) -> str:
    """The content of a secret file, without its trailing newline (:class:`InvalidInputError` when unusable)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise InvalidInputError(f"{option} {path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{option} {path} is not UTF-8 text") from None
    if not text.strip():
        raise InvalidInputError(f"{option} {path} is empty")
    return text


def stdin_is_terminal() -> bool:
    """Whether a person can answer a prompt (isolated so tests can tell)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def read_secret(
    source: SecretSource,
    file: str | None,
    *,
    required: bool = True,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The secret from ``file`` (the value of ``source.file_option``), else ``source.env``, else a hidden
    prompt when stdin is a terminal.

    Returns ``None`` when it is not ``required`` and none of those has it; when it is required, raises
    :class:`InvalidInputError` naming the accepted ways (a prompt is never read from a pipe or a file).
    """
    if file:
        return read_secret_file(file, source.file_option)
    env = os.environ if environ is None else environ
    value = env.get(source.env, "").strip()
    if value:
        return value
    if not required:
        return None
    if source.prompt and stdin_is_terminal():
        typed = str(click.prompt(source.what[0].upper() + source.what[1:], hide_input=True, err=True)).strip()
        if typed:
            return typed
        raise InvalidInputError(f"{source.what} is empty")
    hint = " (stdin is not a terminal, so there is no prompt)" if source.prompt else ""
    raise InvalidInputError(f"{source.what} is missing: {source.ways()}{hint}")


def url_has_password(url: str) -> bool:
    """Whether a database URL carries a password (``user:pw@host`` or ``?password=``)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return True
    except ValueError:
        return False
    return any(key == "password" and value for key, value in parse_qsl(parts.query))


def refuse_url_password(url: str | None, where: str) -> None:
    """Refuse a ledger URL given on the command line with a password in it."""
    if url and "://" in url and url_has_password(url):
        raise InvalidInputError(
            f"{where} with a database password in it is not accepted: {_WHY}; put the URL in KLING_BUDGET_DB, "
            "or the password in PGPASSWORD or a ~/.pgpass file (libpq reads both)"
        )
