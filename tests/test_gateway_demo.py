"""``kling-budget serve --demo``: works with no Kling credentials, and its printed curl example works."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.gatewayutil import wait_until


def _env(tmp_path: Path) -> dict[str, str]:
    """The environment without Kling credentials, with a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_ACCESS", "KLING_SECRET", "KLING_API"))}
    env["KLING_BUDGET_HOME"] = str(tmp_path / "home")
    return env


@contextlib.contextmanager
def _demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``serve --demo`` in a process with no Kling credentials: the process and its banner (stopped after)."""
    env = _env(tmp_path)
    with (tmp_path / "demo.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kling_budget", "serve", "--demo", "--port", "0", "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            lines: list[str] = []
            for line in process.stdout:
                lines.append(line)
                if "Ctrl-C" in line:
                    break
            yield process, "".join(lines)
        finally:
            if process.poll() is None:  # a failed assertion must not leave the server running
                process.kill()
                process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


def test_serve_demo_prints_a_working_key_and_enforces_the_daily_budget(tmp_path):
    """The demo's API key creates tasks until the 50-unit daily budget denies with code 1190."""
    with _demo(tmp_path) as (process, banner):
        base = re.search(r"gateway\s+(http://\S+)", banner).group(1)
        api_key = re.search(r"API key\s+(kbk_\S+)", banner).group(1)
        assert "/dashboard" in banner and "admin token" in banner and "curl -s" in banner
        ledger_url = re.search(r"ledger\s+(\S+)", banner).group(1)
        assert re.fullmatch(r"sqlite:///[^/]\S*/ledger\.db", ledger_url), ledger_url  # sqlite:// + absolute path
        body = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox in the snow"}
        codes = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
            for _ in range(40):
                codes.append(client.post("/v1/videos/text2video", json=body).json()["code"])
            task_id = client.get("/v1/videos/text2video").json()["data"][0]["task_id"]
            wait_until(
                lambda: client.get(f"/v1/videos/text2video/{task_id}").json()["data"]["task_status"] == "succeed"
            )
        assert codes.count(0) == 33 and codes[33:] == [1190] * 7  # 33 x 1.5 = 49.5 of 50 units
        usage = subprocess.run(
            [sys.executable, "-m", "kling_budget", "--db", ledger_url, "usage", "--json"],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=60,
        )
        assert usage.returncode == 0, usage.stderr
        assert sum(int(row["jobs"]) for row in json.loads(usage.stdout)["rows"]) >= 1  # the URL opens that ledger
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_serve_demo_serves_the_2026_design_and_the_account_view(tmp_path):
    """The demo's printed 2026 curl works: create, query on /tasks, then /account/costs shows the key's budget;
    a made-up key is 401 on the account route."""
    with _demo(tmp_path) as (process, banner):
        base = re.search(r"gateway\s+(http://\S+)", banner).group(1)
        api_key = re.search(r"API key\s+(kbk_\S+)", banner).group(1)
        body = json.loads(re.search(r"-d '(\{\"prompt\".*\})'", banner).group(1))
        assert f"{base}/text-to-video/kling-3.0" in banner
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
            created = client.post("/text-to-video/kling-3.0", json=body).json()
            assert created["code"] == 0, created
            task_id = created["data"]["id"]
            wait_until(
                lambda: client.get("/tasks", params={"task_ids": task_id}).json()["data"][0]["status"] == "succeeded"
            )
            costs = client.get("/account/costs").json()["data"]["resource_pack_subscribe_infos"]
        assert [(p["resource_pack_name"], p["remaining_quantity"]) for p in costs] == [("demo-daily", 47)]
        made_up = httpx.get(f"{base}/account/costs", headers={"Authorization": "Bearer kbk_made-up"}, timeout=30)
        assert made_up.status_code == 401 and made_up.json()["code"] == 1000
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
