"""Every command documents itself: help text, an `Example:` in it, and a working `--help`."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from kling_budget.cli import cli, main


def _walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(cli, ()))
IDS = [" ".join(path) or "kling-budget" for path, _ in COMMANDS]


def test_the_issue_s_commands_exist() -> None:
    """The CLI has every command the issue lists."""
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {"price", "budget set", "budget list", "budget show", "budget delete", "check", "reserve", "commit"}
    expected |= {"release", "record", "reservations", "usage", "verify", "packs add", "packs list", "packs remove"}
    expected |= {"import", "demo"}
    assert expected <= names


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=IDS)
def test_command_has_help_with_an_example(command: click.Command) -> None:
    """Each command and subcommand has help text that includes an `Example:`."""
    assert command.help
    assert command.help.strip()
    assert "Example:" in command.help


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_command_accepts_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """`kling-budget ... --help` prints usage and the example, and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0
    assert out.startswith(f"Usage: {' '.join(('kling-budget', *path))}")
    assert "Example:" in out
    assert err == ""


@pytest.mark.parametrize("option", [o for _, c in COMMANDS for o in c.params if isinstance(o, click.Option)], ids=repr)
def test_options_that_take_values_are_explained(option: click.Option) -> None:
    """Every option either has help text or offers a fixed set of choices."""
    assert option.help or isinstance(option.type, click.Choice | click.IntRange) or option.name == "version"
