"""``kling-budget serve --demo``: works with no Kling credentials, and its printed curl example works."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx

from tests.gatewayutil import wait_until


def test_serve_demo_prints_a_working_key_and_enforces_the_daily_budget(tmp_path):
    """The demo's API key creates tasks until the 50-unit daily budget denies with code 1190."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_ACCESS", "KLING_SECRET", "KLING_API"))}
    env["KLING_BUDGET_HOME"] = str(tmp_path / "home")
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
            banner = "".join(lines)
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
                env=env,
                timeout=60,
            )
            assert usage.returncode == 0, usage.stderr
            assert sum(int(row["jobs"]) for row in json.loads(usage.stdout)["rows"]) >= 1  # the URL opens that ledger
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:  # a failed assertion above must not leave the server running
                process.kill()
                process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
