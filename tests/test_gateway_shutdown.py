"""Graceful shutdown of a real ``kling-budget serve`` process: SIGTERM mid-load leaves no hold unaccounted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from kling_budget.ledger import ReservationState, open_backend, open_ledger
from kling_budget.server.keys import KeyStore, load_master_key
from kling_budget.simulator import FaultKind, SimulatorConfig, running_simulator

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a heron at dawn"}


def _serve(db: str, home: Path, upstream: str, log: Any) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "KLING_ACCESS_KEY": "sim-access-key",
        "KLING_SECRET_KEY": "sim-secret-key",
        "KLING_BUDGET_HOME": str(home),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kling_budget",
            "--db",
            db,
            "serve",
            "--upstream",
            upstream,
            "--port",
            "0",
            "--log-level",
            "warning",
            "--settle-interval",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "kling-budget gateway on" in line, line
    return process, line.split(" on ", 1)[1].split(" ", 1)[0]


def test_sigterm_mid_load_leaves_every_hold_submitted_and_recorded_or_released(tmp_path):
    """SIGTERM during 16 concurrent clients' creates: each hold ends with a Kling task id or released."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    home = tmp_path / "home"
    backend = open_backend(db)
    issued = KeyStore(backend, load_master_key(home=home)).create("load", project="p", kind="api")
    backend.close()
    config = SimulatorConfig.single(packs={"video": 100000}, concurrency=10000)
    with contextlib.ExitStack() as stack:
        kling = stack.enter_context(running_simulator(config))
        # Slow creates, so that many are between reservation and Kling's answer when SIGTERM arrives.
        kling.sim.faults.inject(FaultKind.SLOW, path=T2V, method="POST", count=None, delay=0.3)
        log = stack.enter_context((tmp_path / "gateway.log").open("w"))
        process, url = _serve(db, home, kling.base_url, log)
        answers: list[tuple[int, dict]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {issued.api_key}"}, timeout=30) as c:
                while not stop.is_set():
                    try:
                        answer = c.post(T2V, json=BODY)
                    except httpx.HTTPError:
                        return  # the gateway stopped accepting
                    with lock:
                        answers.append((answer.status_code, answer.json()))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # two rounds answered; the next 16 creates are on their way
            with lock:
                before = len(answers)
            if before >= 32:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None
        process.stdout.close()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    ledger = open_ledger(db)
    reservations = ledger.list_reservations(limit=100_000)
    ok_tasks = {body["data"]["task_id"] for status, body in answers if status == 200}
    assert len(ok_tasks) > before >= 32, "creates in flight at SIGTERM must finish too"
    unaccounted = [
        r.id for r in reservations if r.state in (ReservationState.HELD, ReservationState.SUBMITTED) and not r.task_id
    ]
    assert unaccounted == []
    recorded = {r.task_id for r in reservations if r.task_id}
    assert ok_tasks <= recorded  # every task a client was told about is recorded against its hold
    assert ledger.verify().ok
    ledger.close()
