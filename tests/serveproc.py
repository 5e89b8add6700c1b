"""A real ``kling-budget serve`` process on loopback, for the security tests: attacks go over real sockets.

The ledger (SQLite or a PostgreSQL URL) and one virtual key are created before the process starts, as an
operator would; the upstream is the Kling simulator running in the test process (its default key pair stands
for the real Kling credentials). The process is stopped with SIGTERM (killed if it does not stop) and its
JSON log lines on stderr are kept for assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kling_budget.ledger import open_backend
from kling_budget.server.keys import IssuedKey, KeyStore, load_master_key
from kling_budget.simulator import RunningSimulator

SIM_ACCESS_KEY = "sim-access-key"
SIM_SECRET_KEY = "sim-secret-key"
T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a heron at dawn"}


@dataclass
class ServeProcess:
    """One running ``serve``: its URL, its key, its ledger and its log."""

    process: subprocess.Popen[bytes]
    base_url: str
    db: str
    home: Path
    key: IssuedKey
    _log: list[str] = field(default_factory=list)
    _log_lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, authorization: str | None = "key", **kwargs: Any) -> httpx.Client:
        """An httpx client on the gateway; by default with the key's API key as bearer."""
        headers = {}
        if authorization == "key":
            headers["Authorization"] = f"Bearer {self.key.api_key}"
        elif authorization:
            headers["Authorization"] = authorization
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, verify=False, **kwargs)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    def log_lines(self) -> list[str]:
        """The process's stderr lines so far."""
        with self._log_lock:
            return list(self._log)

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log records so far (other lines are skipped)."""
        records = []
        for line in self.log_lines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records


def gateway_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``serve`` process: simulator credentials, an isolated home, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_BUDGET_", "KLING_ACCESS", "KLING_SECRET"))}
    env.update(
        KLING_ACCESS_KEY=SIM_ACCESS_KEY,
        KLING_SECRET_KEY=SIM_SECRET_KEY,
        KLING_BUDGET_HOME=str(home),
        **extra,
    )
    return env


def prepare_ledger(db: str, home: Path, *, project: str = "p1", name: str = "tenant") -> IssuedKey:
    """Create the ledger (as ``serve --init`` would) and one virtual key of kind ``both``."""
    backend = open_backend(db)
    try:
        return KeyStore(backend, load_master_key(home=home)).create(name, project=project, user="alice", kind="both")
    finally:
        backend.close()


@contextlib.contextmanager
def running_serve(
    kling: RunningSimulator,
    db: str,
    home: Path,
    *args: str,
    key: IssuedKey | None = None,
    env: dict[str, str] | None = None,
    preexec: Any = None,
) -> Iterator[ServeProcess]:
    """Run ``kling-budget --db <db> serve --upstream <simulator> --port 0 <args>`` until the block ends."""
    issued = key if key is not None else prepare_ledger(db, home)
    command = [
        sys.executable,
        "-m",
        "kling_budget",
        "--db",
        db,
        "serve",
        "--upstream",
        kling.base_url,
        "--port",
        "0",
        "--settle-interval",
        "0",
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else gateway_env(home),
        preexec_fn=preexec,
    )
    assert process.stdout is not None and process.stderr is not None
    served = ServeProcess(process, "", db, home, issued)

    def pump(stream: Any) -> None:
        for raw in stream:
            with served._log_lock:
                served._log.append(raw.decode("utf-8", "replace").rstrip("\n"))

    pumps = [threading.Thread(target=pump, args=(process.stderr,), daemon=True)]
    pumps[0].start()
    try:
        line = process.stdout.readline().decode()
        if "kling-budget gateway on" not in line:
            process.wait(timeout=10)
            raise AssertionError(f"serve did not start: {line!r} {served.log_lines()}")
        served.base_url = line.split(" on ", 1)[1].split(" ", 1)[0]
        pumps.append(threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True))
        pumps[1].start()
        yield served
    finally:
        stop(process)
        for thread in pumps:
            thread.join(timeout=10)
        process.stdout.close()
        process.stderr.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def timed(fn: Any) -> tuple[Any, float]:
    """(``fn()``, seconds it took)."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started
