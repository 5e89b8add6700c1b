"""Helpers for job-lifecycle tests: a simulator on a manual clock, clients that share it, ledger inspection.

The simulator's ManualClock is also the Kling client's clock, and the client's sleep advances it, so
polling, backoff and task progress take no wall time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kling_budget import CostTracker
from kling_budget.cli import main
from kling_budget.enforced import CallbackResult
from kling_budget.kling import AsyncKlingClient, KlingClient
from kling_budget.simulator import (
    FaultKind,
    FaultRule,
    ManualClock,
    RunningSimulator,
    SimulatorConfig,
    running_simulator,
)

T2V = "/v1/videos/text2video"


class SimTime:
    """The client's clock and sleep, both on the simulator's manual clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def __call__(self) -> float:
        return self.clock.now_ms() / 1000

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)


@contextmanager
def manual_sim(config: SimulatorConfig | None = None) -> Iterator[RunningSimulator]:
    """A simulator on a manual clock (default: one account, default packs, 0.2 s queued + 0.5 s running)."""
    with running_simulator(config or SimulatorConfig.single(), clock=ManualClock()) as kling:
        yield kling


def sim_time(kling: RunningSimulator) -> SimTime:
    """The simulator's manual clock, as a client clock."""
    clock = kling.sim.clock
    assert isinstance(clock, ManualClock)
    return SimTime(clock)


def client_for(kling: RunningSimulator, **options: Any) -> KlingClient:
    """A blocking Kling client on the simulator; on a manual clock its time is the simulator's."""
    settings: dict[str, Any] = {"base_url": kling.base_url, "jitter": lambda: 0.5, "timeout": 10}
    if isinstance(kling.sim.clock, ManualClock):
        time = sim_time(kling)
        settings.update(clock=time, sleep=time.sleep)
    settings.update(options)
    secret = settings.pop("secret_key", kling.secret_key)
    return KlingClient(kling.access_key, secret, **settings)


def async_client_for(kling: RunningSimulator, **options: Any) -> AsyncKlingClient:
    """The async twin of :func:`client_for`."""
    time = sim_time(kling)
    return AsyncKlingClient(
        kling.access_key,
        kling.secret_key,
        base_url=kling.base_url,
        clock=time,
        sleep=time.async_sleep,
        jitter=lambda: 0.5,
        timeout=10,
        **options,
    )


def tracker_at(tmp_path: Path, name: str = "ledger.db") -> CostTracker:
    """A tracker on a fresh SQLite ledger file, alerts to the log only."""
    return CostTracker(f"sqlite:///{tmp_path / name}")


def create_sentinel(kling: RunningSimulator, path: str = T2V) -> FaultRule:
    """A rule that fires on every create POST reaching the simulator: ``fired == 0`` proves none arrived."""
    return kling.sim.faults.inject(FaultKind.ERROR_5000, path=path, method="POST", count=None)


def entry_kinds(tracker: CostTracker, reservation_id: str) -> list[str]:
    """The ledger's append-only entries of one reservation, oldest first (``reserve``, ``commit`` ...)."""
    rows = tracker.ledger.backend.run(
        lambda conn: conn.fetchall("SELECT kind FROM entries WHERE reservation_id = ? ORDER BY seq", (reservation_id,)),
        write=False,
    )
    return [str(r[0]) for r in rows]


def alert_kinds(tracker: CostTracker) -> list[str]:
    """Kinds of every alert in the ledger's outbox, oldest first."""
    return [a.kind.value for a in reversed(tracker.ledger.recent_alerts(limit=1000))]


def held_units_milli(tracker: CostTracker, budget: str) -> int:
    """Units a budget currently holds for open reservations."""
    return tracker.budget_status(budget).counters.held_milli


@contextmanager
def callback_endpoint(handle: Callable[[bytes, dict[str, str]], CallbackResult]) -> Iterator[str]:
    """A loopback HTTP endpoint that feeds each POST to ``handle`` and answers with its result; yields the URL."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            result = handle(body, dict(self.headers.items()))
            payload = result.body.encode()
            self.send_response(result.status_code)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/kling/callback"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class CliResult:
    """What a user of ``kling-budget`` sees: exit code, stdout and stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run ``kling-budget ARGS...`` in-process through the console entry point."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    assert "Traceback" not in out + err
    return CliResult(0 if code is None else int(code), out, err)


def use_sim_credentials(monkeypatch: pytest.MonkeyPatch, kling: RunningSimulator) -> None:
    """Point ``KLING_*`` variables at the simulator, as a user of ``kling-budget simulate`` would."""
    assert kling.access_key is not None and kling.secret_key is not None
    monkeypatch.setenv("KLING_ACCESS_KEY", kling.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", kling.secret_key)
    monkeypatch.setenv("KLING_API_BASE", kling.base_url)
