"""The ``simulate`` command: option parsing and a real foreground run stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from click.testing import CliRunner

from kling_budget.cli.simulate_cmds import simulate
from kling_budget.kling.jwt import encode_token
from tests.simfixtures import raw_get


def test_help_lists_the_options() -> None:
    """--help documents the address, credential and pack options."""
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--access-key", "--secret-key", "--api-key", "--webhook-secret", "--pack"):
        assert option in result.output


def test_bad_pack_is_a_usage_error() -> None:
    """A malformed or unknown --pack exits with code 2 and says why."""
    runner = CliRunner()
    assert runner.invoke(simulate, ["--pack", "video"]).exit_code == 2
    result = runner.invoke(simulate, ["--pack", "audio=5"])
    assert result.exit_code == 2 and "unknown pack type" in result.output
    assert runner.invoke(simulate, ["--pack", "video=1.0001"]).exit_code == 2


def test_cash_options_are_checked() -> None:
    """--no-packs with --pack, a negative balance or a discount of 1 or more exit with code 2 and say why."""
    runner = CliRunner()
    result = runner.invoke(simulate, ["--no-packs", "--pack", "video=5"])
    assert result.exit_code == 2 and "--no-packs" in result.output
    result = runner.invoke(simulate, ["--balance", "-1"])
    assert result.exit_code == 2 and "balance must not be negative" in result.output
    result = runner.invoke(simulate, ["--balance", "5", "--discount", "1"])
    assert result.exit_code == 2 and "discount" in result.output
    assert runner.invoke(simulate, ["--currency", "EUR"]).exit_code == 2


def test_runs_until_interrupted() -> None:
    """The command prints its URL and credentials, serves both of Kling's designs, and exits cleanly on SIGINT."""
    code = "from kling_budget.cli.simulate_cmds import simulate; simulate()"
    args = ["--port", "0", "--access-key", "ak-cli", "--secret-key", "sk-cli", "--pack", "video=7", "--pack", "image=9"]
    args += ["--balance", "2.5", "--currency", "CNY"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Kling simulator on http://127.0.0.1:"), first
        base_url = first.split(" on ")[1].strip()
        lines = [process.stdout.readline() for _ in range(6)]
        assert "ak-cli" in lines[0] and "sk-cli" in lines[1] and "sim-api-key" in lines[2]
        assert "7 units" in lines[3] and "2.5 CNY" in lines[5]
        token = encode_token("ak-cli", "sk-cli", now=int(time.time()))
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = raw_get(f"{base_url}/v1/videos/text2video", headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer.json()["code"] == 0
        new_design = raw_get(f"{base_url}/tasks?task_ids=1", headers={"Authorization": "Bearer sim-api-key"})
        assert new_design.json()["data"] == []
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
