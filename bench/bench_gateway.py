"""Gateway benchmark: create-task throughput and latency through the gateway vs. directly to the simulator.

Everything runs on loopback in the same run: the Kling simulator in its own process, the gateway
(``kling-budget serve``) in one process (SQLite) or two (PostgreSQL, clients alternate between them, no
load balancer), and the clients in this process. At 1, 16 and 64 concurrent clients, each client sends
``text2video`` creates back to back for ``--seconds`` (after a short warm-up); first straight to the
simulator, then through the gateway, which prices, reserves against two budgets (a daily project budget
and a monthly account budget), forwards and records every create. The settle worker runs as in
production.

The clients speak HTTP/1.1 over raw asyncio streams (keep-alive, one connection each) so that the load
generator costs little CPU on a 2-core machine; they check every answer is HTTP 200 with ``"code":0``.

Run: ``.venv/bin/python bench/bench_gateway.py`` (``--postgres URL`` adds the two-instance run;
``--seconds`` per level, default 4; ``--design 2026`` sends Kling's 2026-design creates,
``POST /text-to-video/kling-3.0`` — to the simulator with its API key — instead of ``/v1`` ``text2video``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KB = str(ROOT / ".venv" / "bin" / "kling-budget")
DESIGNS = {  # the create each client sends, on each of Kling's API designs
    "v1": (
        "/v1/videos/text2video",
        {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox in the snow"},
    ),
    "2026": (
        "/text-to-video/kling-3.0",
        {"prompt": "a red fox in the snow", "settings": {"duration": 5, "resolution": "720p"}},
    ),
}
LEVELS = (1, 16, 64)
SIM_CODE = """
import sys
from kling_budget.simulator import SimulatorConfig, run_simulator
config = SimulatorConfig.single(packs={"video": 100000000}, concurrency=1000000, retention_seconds=20,
                                callback_on_submit=False)
def ready(r):
    print(r.base_url, flush=True)
run_simulator(config, port=0, on_ready=ready, log_level="warning")
"""


@dataclass
class Result:
    """One load level against one target."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _client(
    host: str, port: int, auth: str, design: str, stop_at: float, warm_until: float, result: Result
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    path, fields = DESIGNS[design]
    body = json.dumps(fields).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            answer = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            ok = head.startswith(b"HTTP/1.1 200") and b'"code":0' in answer
            if started < warm_until:
                continue
            if ok:
                result.latencies.append(elapsed)
            else:
                result.errors += 1
                if result.errors <= 3:
                    status_line = head.split(b"\r\n", 1)[0].decode()
                    print(f"    error: {status_line} {answer[:200]!r}", file=sys.stderr)
    finally:
        writer.close()


async def _level(targets: list[tuple[str, int, str, str]], clients: int, seconds: float, warmup: float) -> Result:
    result = Result()
    now = time.perf_counter()
    warm_until = now + warmup
    stop_at = warm_until + seconds
    await asyncio.gather(*(_client(*targets[i % len(targets)], stop_at, warm_until, result) for i in range(clients)))
    result.seconds = seconds
    return result


def _start(args: list[str], env: dict[str, str], marker: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line or line.startswith("http://"):
            return process, line.strip()
        if process.poll() is not None:
            raise RuntimeError(f"{args[:3]} exited with {process.returncode}")
    raise RuntimeError(f"{args[:3]} did not start")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _setup_ledger(db: str, home: Path) -> tuple[str, str]:
    """Budgets and one virtual JWT key in the gateway's database; returns (access key, secret key)."""
    os.environ["KLING_BUDGET_HOME"] = str(home)
    from kling_budget.ledger import open_backend
    from kling_budget.server.keys import KeyStore, load_master_key
    from kling_budget.tracker import CostTracker

    with CostTracker(db, alert_sinks=[]) as tracker:
        tracker.set_budget("bench-daily", project_id="bench", period="daily", limit_units=10**9)
        tracker.set_budget("account-monthly", period="monthly", limit_units=10**9)
    backend = open_backend(db)
    issued = KeyStore(backend, load_master_key(home=home)).create(
        f"bench-{uuid.uuid4().hex[:6]}", project="bench", user="loadgen", kind="jwt"
    )
    backend.close()
    assert issued.key.access_key and issued.secret_key
    return issued.key.access_key, issued.secret_key


def _gateways(db: str, home: Path, sim_url: str, count: int) -> list[tuple[subprocess.Popen[str], str]]:
    env = {
        **os.environ,
        "KLING_ACCESS_KEY": "sim-access-key",
        "KLING_SECRET_KEY": "sim-secret-key",
        "KLING_API_KEY": "sim-api-key",  # the 2026 design takes only an API key
        "KLING_BUDGET_HOME": str(home),
    }
    started = []
    for _ in range(count):
        process, line = _start(
            [KB, "--db", db, "serve", "--upstream", sim_url, "--port", "0", "--log-level", "warning"],
            env,
            "kling-budget gateway on",
        )
        started.append((process, line.split(" on ", 1)[1].split(" ", 1)[0]))
    return started


def _row(label: str, clients: int, direct: Result, gateway: Result, cpu: float, load: float) -> str:
    added = gateway.pct(0.5) - direct.pct(0.5)
    ratio = gateway.throughput / direct.throughput if direct.throughput else float("nan")
    per_create = cpu / max(1, len(gateway.latencies) + gateway.errors) * 1000
    return (
        f"| {label} | {clients} | {direct.throughput:7.0f} | {direct.pct(0.5):6.2f} | {direct.pct(0.99):6.2f} | "
        f"{gateway.throughput:7.0f} | {gateway.pct(0.5):6.2f} | {gateway.pct(0.99):6.2f} | {added:+6.2f} | "
        f"{ratio:4.2f} | {direct.errors}/{gateway.errors} | {per_create:5.2f} | {load:4.1f} |"
    )


def run(
    label: str, db: str, home: Path, sim_url: str, instances: int, seconds: float, warmup: float, design: str
) -> list[str]:
    from kling_budget.kling.jwt import encode_token

    access, secret = _setup_ledger(db, home)
    gateways = _gateways(db, home, sim_url, instances)
    try:
        now = int(time.time())
        sim_auth = "Bearer " + encode_token("sim-access-key", "sim-secret-key", now=now, lifetime=7200)
        if design == "2026":
            sim_auth = "Bearer sim-api-key"  # Kling takes no JWT on the 2026 design
        gw_auth = "Bearer " + encode_token(access, secret, now=now, lifetime=7200)
        sim_target = [(*_host_port(sim_url), sim_auth, design)]
        gw_targets = [(*_host_port(url), gw_auth, design) for _, url in gateways]
        rows = []
        pids = [process.pid for process, _ in gateways]
        for clients in LEVELS:
            direct = asyncio.run(_level(sim_target, clients, seconds, warmup))
            cpu_before = _cpu_seconds(pids)
            through = asyncio.run(_level(gw_targets, clients, seconds, 0.0))
            cpu = _cpu_seconds(pids) - cpu_before
            rows.append(_row(label, clients, direct, through, cpu, os.getloadavg()[0]))
            print(rows[-1], flush=True)
        return rows
    finally:
        for process, _ in gateways:
            _stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="Measured seconds per level and target.")
    parser.add_argument("--warmup", type=float, default=0.5, help="Unmeasured seconds before each run.")
    parser.add_argument("--postgres", metavar="URL", help="Also run two gateways on this PostgreSQL server.")
    parser.add_argument("--no-sqlite", action="store_true", help="Skip the SQLite run.")
    parser.add_argument("--design", choices=sorted(DESIGNS), default="v1", help="Which Kling API design to create on.")
    args = parser.parse_args()
    sim, sim_url = _start([sys.executable, "-c", SIM_CODE], dict(os.environ), "http://")
    header = (
        "| ledger | clients | direct/s | direct p50 ms | direct p99 ms | gateway/s | gateway p50 ms | "
        "gateway p99 ms | added p50 ms | throughput ratio | errors direct/gateway | gateway CPU ms/create | "
        "load avg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header, flush=True)
    rows: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="kb-bench-gw-") as tmp:
            home = Path(tmp) / "home"
            if not args.no_sqlite:
                sqlite = f"sqlite:///{tmp}/ledger.db"
                rows += run("SQLite, 1 gateway", sqlite, home, sim_url, 1, args.seconds, args.warmup, args.design)
            if args.postgres:
                rows += _postgres(args.postgres, home, sim_url, args.seconds, args.warmup, args.design)
    finally:
        _stop(sim)
    print("\n" + header)
    print("\n".join(rows))


def _postgres(url: str, home: Path, sim_url: str, seconds: float, warmup: float, design: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from tests.pgutil import fresh_schema

    with fresh_schema(url) as schema_url:
        return run("PostgreSQL, 2 gateways", schema_url, home, sim_url, 2, seconds, warmup, design)


if __name__ == "__main__":
    main()
