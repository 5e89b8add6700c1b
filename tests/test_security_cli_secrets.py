"""Secrets never come from the command line: real ``kling-budget`` processes refuse them as arguments (one
``error:`` line, exit 2, the accepted ways named), read them from the environment, a file or a hidden prompt,
and never read a prompt from a pipe."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_budget.ledger import open_backend
from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator

SLACK = "https://hooks.slack.com/services/T000/B000/cliSECRETtoken"


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """``python -m kling_budget ARGS`` with only the given KLING_* variables and stdin not a terminal."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_", "PGPASSWORD"))}
    clean |= {"KLING_BUDGET_HOME": str(tmp_path / "home"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kling_budget", *args],
        env=clean,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sink_rows(db: str) -> list[str]:
    backend = open_backend(db)
    try:
        return [str(r[0]) for r in backend.run(lambda c: c.fetchall("SELECT config FROM alert_sinks"), write=False)]
    finally:
        backend.close()


REFUSED = [
    pytest.param(
        ["alerts", "add", "slack", SLACK],
        SLACK,
        ("KLING_BUDGET_SLACK_URL", "--url-file PATH", "prompt"),
        id="slack-url-argument",
    ),
    pytest.param(
        ["alerts", "add", "webhook", "https://ops.example.com/hooks/abcTOKEN", "--kinds", "threshold"],
        "abcTOKEN",
        ("KLING_BUDGET_ALERT_URL", "--url-file PATH", "prompt"),
        id="webhook-url-argument",
    ),
    pytest.param(
        ["alerts", "add", "webhook", "--url", "https://ops.example.com/hooks/abcTOKEN"],
        "abcTOKEN",
        ("KLING_BUDGET_ALERT_URL", "--url-file PATH"),
        id="webhook-url-option",
    ),
    pytest.param(
        ["alerts", "add", "email", "--host", "smtp.example.com", "--username", "u", "--password", "hunter2"],
        "hunter2",
        ("KLING_BUDGET_SMTP_PASSWORD", "--password-file PATH", "prompt"),
        id="smtp-password-option",
    ),
    pytest.param(
        ["generate", "video", "a fox", "--access-key", "ak_public", "--secret-key", "sk-very-secret"],
        "sk-very-secret",
        ("KLING_SECRET_KEY", "--secret-key-file PATH"),
        id="kling-secret-key-option",
    ),
    pytest.param(
        ["reconcile", "--kling-api-key=api-very-secret"],
        "api-very-secret",
        ("KLING_API_KEY", "--kling-api-key-file PATH"),
        id="kling-api-key-option",
    ),
    pytest.param(
        ["--db", "postgresql://app:pw-very-secret@127.0.0.1:9/kb", "budget", "list"],
        "pw-very-secret",
        ("KLING_BUDGET_DB", "PGPASSWORD", "~/.pgpass"),
        id="db-url-password",
    ),
    pytest.param(
        ["db", "copy", "old.db", "postgresql://app@127.0.0.1:9/kb?password=pw-very-secret"],
        "pw-very-secret",
        ("KLING_BUDGET_DB", "PGPASSWORD"),
        id="db-copy-url-password",
    ),
]


@pytest.mark.parametrize(("args", "secret", "ways"), REFUSED)
def test_a_secret_given_as_an_argument_is_refused(
    tmp_path: Path, args: list[str], secret: str, ways: tuple[str, ...]
) -> None:
    """The command stops before doing anything: exit 2, one ``error:`` line that names the accepted ways and
    does not repeat the secret; no sink is stored."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    argv = args if args[0] == "--db" else ["--db", db, *args]
    result = run_cli(tmp_path, *argv)
    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "not accepted" in line and "process list" in line
    for way in ways:
        assert way in line
    assert secret not in line
    if Path(tmp_path / "ledger.db").exists():
        assert sink_rows(db) == []


def test_no_prompt_is_read_from_a_pipe(tmp_path: Path) -> None:
    """Without the variable or a file, a command whose stdin is not a terminal is refused (exit 2, the ways
    named) instead of reading the secret from whatever is piped in."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "kling_budget", "--db", db, "alerts", "add", "slack"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KLING_")}, "KLING_BUDGET_HOME": str(tmp_path)},
        input=SLACK + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        "error: the Slack webhook URL is missing: set KLING_BUDGET_SLACK_URL, give --url-file PATH, or type it at "
        "the prompt (hidden) (stdin is not a terminal, so there is no prompt)"
    )
    assert sink_rows(db) == []


def test_environment_and_file_are_accepted(tmp_path: Path) -> None:
    """The same secrets from the environment or a file are stored (encrypted) and never echoed."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    from_env = run_cli(tmp_path, "--db", db, "alerts", "add", "slack", env={"KLING_BUDGET_SLACK_URL": SLACK})
    assert from_env.returncode == 0, from_env
    password = tmp_path / "smtp.pw"
    password.write_text("hunter2\n")
    from_file = run_cli(
        tmp_path, "--db", db, "alerts", "add", "email", "--host", "smtp.example.com", "--username", "alerts",
        "--password-file", str(password), "--from", "a@example.com", "--to", "ops@example.com",
    )  # fmt: skip
    assert from_file.returncode == 0, from_file
    output = from_env.stdout + from_env.stderr + from_file.stdout + from_file.stderr
    stored = json.dumps(sink_rows(db))
    for secret in ("cliSECRETtoken", "hunter2"):
        assert secret not in output and secret not in stored


def _read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_a_terminal_user_types_the_secret_at_a_hidden_prompt(tmp_path: Path) -> None:
    """On a terminal, ``alerts add slack`` prompts; what is typed is not echoed and is stored encrypted."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")} | {"KLING_BUDGET_HOME": str(tmp_path)}
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "kling_budget", "--db", db, "alerts", "add", "slack"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    try:
        prompt = _read_until(controller, b"The Slack webhook URL:")
        assert b"The Slack webhook URL:" in prompt, prompt
        os.write(controller, SLACK.encode() + b"\n")
        rest = _read_until(controller, b"added alert sink")
        rest += _read_until(controller, b"\n", timeout=5)
        assert process.wait(timeout=30) == 0, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert b"added alert sink #1: slack https://hooks.slack.com/\xe2\x80\xa6oken" in rest
    assert b"cliSECRETtoken" not in prompt + rest
    [stored] = sink_rows(db)
    assert "cliSECRETtoken" not in stored and "sealed" in stored


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig.single(queued_seconds=0.02, running_seconds=0.03)) as running:
        yield running


def test_generate_takes_the_kling_secret_key_from_a_file(tmp_path: Path, kling: RunningSimulator) -> None:
    """``generate --access-key AK --secret-key-file PATH`` signs with the key in the file (a real create on the
    simulator), and ``--access-key`` alone takes it from KLING_SECRET_KEY."""
    assert kling.access_key is not None and kling.secret_key is not None
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    key_file = tmp_path / "kling.sk"
    key_file.write_text(kling.secret_key + "\n")
    common = ["--db", db, "generate", "video", "a fox", "--access-key", kling.access_key, "--api-base", kling.base_url]
    fast = ["--poll-interval", "0.02", "--json"]
    from_file = run_cli(tmp_path, *common, "--secret-key-file", str(key_file), *fast)
    assert from_file.returncode == 0, from_file
    assert json.loads(from_file.stdout)["status"] == "succeeded"
    from_env = run_cli(tmp_path, *common, *fast, env={"KLING_SECRET_KEY": kling.secret_key})
    assert from_env.returncode == 0, from_env
    missing = run_cli(tmp_path, *common, *fast)
    assert missing.returncode == 2 and "KLING_SECRET_KEY" in missing.stderr and "--secret-key-file" in missing.stderr
    for result in (from_file, from_env, missing):
        assert kling.secret_key not in result.stdout + result.stderr
