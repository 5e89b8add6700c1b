"""PostgreSQL under many processes and crashes (slow; CI runs them).

* 16 worker processes on two "hosts" (two process groups, each process with its own pool) exhaust one
  account-wide budget under a three-level hierarchy: exactly ⌊limit / price⌋ admitted.
* ``kill -9`` of a whole host mid-run, twice: every acknowledged operation is in the ledger, verify passes.
* ``pg_ctl stop -m immediate`` of a throwaway cluster mid-run (the machine's shared server is never
  touched), restart: every acknowledged operation survived, verify passes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_budget.ledger import ReservationState, open_ledger
from tests import ledger_workers
from tests.ledger_workers import PRICE_MILLI
from tests.pgutil import fresh_postgres_url, fresh_schema

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("KLING_BUDGET_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Hosts:
    """Worker processes grouped into "hosts", each host one process group."""

    def __init__(self) -> None:
        self.groups: dict[int, list[subprocess.Popen[bytes]]] = {}

    def start(self, host: int, *args: str) -> subprocess.Popen[bytes]:
        members = self.groups.setdefault(host, [])
        group = members[0].pid if members else 0
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.pg_workers", *args],
            cwd=ROOT,
            process_group=group,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        members.append(process)
        return process

    def kill(self, host: int) -> None:
        """SIGKILL every process of ``host`` at once (a machine losing power, as far as clients go)."""
        members = self.groups.pop(host, [])
        if members:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(members[0].pid, signal.SIGKILL)
        for process in members:
            process.wait(timeout=30)
            if process.stderr:
                process.stderr.close()

    def kill_all(self) -> None:
        for host in list(self.groups):
            self.kill(host)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    started = Hosts()
    yield started
    started.kill_all()


def check_acks(url: str, logs: list[Path]) -> int:
    """Every acknowledged step in the logs is reflected in the ledger; return how many were checked."""
    ledger = open_ledger(url)
    checked = 0
    allowed = {
        "denied": {ReservationState.DENIED},
        "reserved": {
            ReservationState.HELD,
            ReservationState.SUBMITTED,
            ReservationState.COMMITTED,
            ReservationState.RELEASED,
        },
        "submitted": {ReservationState.SUBMITTED, ReservationState.COMMITTED, ReservationState.RELEASED},
        "committed": {ReservationState.COMMITTED},
        "released": {ReservationState.RELEASED},
    }
    try:
        for log in logs:
            if not log.exists():
                continue
            for line in log.read_text(encoding="utf-8").splitlines():
                action, _, key = line.partition(" ")
                if not key:
                    continue  # a line cut by the kill
                assert ledger.get_reservation(key).state in allowed[action], line
                checked += 1
        report = ledger.verify()
        assert report.ok, report.problems[:5]
        # Budget windows re-derived too: every reservation counts against the account, project and a user.
        assert report.checked_windows >= 3 or report.checked_reservations == 0
    finally:
        ledger.close()
    return checked


def test_sixteen_processes_on_two_hosts_exhaust_the_budget_exactly(hosts: Hosts, tmp_path: Path) -> None:
    """16 processes, two process groups, separate pools: exactly ⌊limit / price⌋ jobs admitted."""
    with fresh_postgres_url() as url:
        ledger_workers.setup_hierarchy(url, account_units=450, project_units=1000, user_units=1000)
        go = tmp_path / "go"
        outs = [tmp_path / f"w{w}.out" for w in range(16)]
        for w, out in enumerate(outs):
            hosts.start(w % 2, "exhaust", url, str(w), str(go), str(out))
        time.sleep(2.0)  # every worker imports and opens its pool, then waits for the go file
        go.touch()
        for members in hosts.groups.values():
            for process in members:
                _, stderr = process.communicate(timeout=120)
                assert process.returncode == 0, stderr.decode()[-2000:]
        keys = [k for out in outs for k in out.read_text(encoding="utf-8").split()]
        assert len(keys) == len(set(keys)) == 450_000 // PRICE_MILLI
        ledger = open_ledger(url)
        try:
            assert ledger.budget_status("account").counters.used_milli == 300 * PRICE_MILLI
            assert sum(ledger.budget_status(f"user-{u}").counters.used_milli for u in range(4)) == 300 * PRICE_MILLI
            report = ledger.verify()
            assert report.ok, report.problems[:5]
        finally:
            ledger.close()


def _lines(logs: list[Path]) -> int:
    return sum(log.read_text(encoding="utf-8").count("\n") for log in logs if log.exists())


def _wait_for_lines(logs: list[Path], at_least: int, timeout: float = 120.0) -> None:
    """Wait until the workers writing ``logs`` have acknowledged ``at_least`` operations between them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lines(logs) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the workers acknowledged fewer than {at_least} operations in {timeout:g} s")


def test_kill_9_of_hosts_with_batching_threads_loses_no_acknowledged_operation(hosts: Hosts, tmp_path: Path) -> None:
    """Two hosts of 2 workers × 4 threads (reservations batched in one transaction), each SIGKILLed."""
    with fresh_postgres_url() as url:
        ledger_workers.setup_hierarchy(url, account_units=10**7, project_units=10**7, user_units=10**7)
        logs: list[Path] = []
        for w in range(4):
            log = tmp_path / f"w{w}.log"
            logs += [Path(f"{log}.{t}") for t in range(4)]
            hosts.start(w % 2, "churn-threads", url, str(w), str(log))
        _wait_for_lines(logs, 100)
        hosts.kill(0)
        _wait_for_lines(logs, _lines(logs) + 50)  # host 1 goes on alone for a while
        hosts.kill(1)
        assert check_acks(url, logs) > 60, "the workers did not get far enough to make the test meaningful"


def test_kill_9_of_client_hosts_loses_no_acknowledged_operation(hosts: Hosts, tmp_path: Path) -> None:
    """Two hosts of 4 churning workers; one host SIGKILLed, then the other, twice over."""
    with fresh_postgres_url() as url:
        ledger_workers.setup_hierarchy(url, account_units=10**7, project_units=10**7, user_units=10**7)
        logs: list[Path] = []
        for cycle in range(2):
            for w in range(8):
                log = tmp_path / f"c{cycle}-w{w}.log"
                logs.append(log)
                hosts.start(w % 2, "churn", url, str(w), str(log))
            _wait_for_lines(logs[-8:], 40)  # both hosts are churning (however loaded the machine is)
            hosts.kill(0)
            _wait_for_lines(logs[-8:], 50)
            hosts.kill(1)
            assert check_acks(url, logs) > 0
        assert check_acks(url, logs) > 60, "the workers did not get far enough to make the test meaningful"


# ----------------------------------------------------------------- a throwaway cluster to crash


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL cluster of our own in a temporary directory, run as the ``postgres`` user when we
    are root (initdb refuses root)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="kb-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root without runuser: cannot start a throwaway cluster")
            shutil.chown(self.base, "postgres", "postgres")
            self._as = [runuser, "-u", "postgres", "--"]
        self.base.chmod(0o755)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self, extra: str = "") -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 {extra}"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start"
        )

    def stop(self, mode: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        message = f"no PostgreSQL server binaries at {PG_BIN} (set KLING_BUDGET_TEST_PG_BIN)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {message}", pytrace=False)
        pytest.skip(message)
    own = Cluster()
    try:
        own.start()
        yield own
    finally:
        own.remove()


@pytest.mark.parametrize("threads", [False, True], ids=["one-thread-per-worker", "batching-threads"])
def test_immediate_shutdown_of_the_server_loses_no_acknowledged_operation(
    hosts: Hosts, cluster: Cluster, tmp_path: Path, threads: bool
) -> None:
    """``pg_ctl stop -m immediate`` (crash, WAL recovery on start) twice while 6 workers churn; the same
    with 4 threads per worker, whose reservations are batched."""
    with fresh_schema(cluster.url) as url:
        ledger_workers.setup_hierarchy(url, account_units=10**7, project_units=10**7, user_units=10**7)
        logs = [tmp_path / f"w{w}.log" for w in range(6)]
        for w, log in enumerate(logs):
            hosts.start(w % 2, "churn-threads" if threads else "churn", url, str(w), str(log))
        if threads:
            logs = [Path(f"{log}.{t}") for log in logs for t in range(4)]
        for _ in range(2):
            time.sleep(2.0)
            cluster.stop("immediate")
            time.sleep(0.5)
            cluster.start()
        time.sleep(2.0)  # the workers reconnect and go on
        hosts.kill_all()
        acked = check_acks(url, logs)
        assert acked > 30, "the workers did not get far enough to make the test meaningful"
    server_log = (cluster.base / "log").read_text(encoding="utf-8", errors="replace")
    assert server_log.count("automatic recovery in progress") == 2  # two real crash recoveries


def test_an_in_doubt_commit_across_a_crash_is_never_taken_for_committed(cluster: Cluster, tmp_path: Path) -> None:
    """COMMIT lost on the way, then the server crashes before the transaction's WAL reached the disk: after
    recovery its transaction id is handed out again, and pg_xact_status reports the *new* transaction as
    committed. The backend must not believe it: the call fails closed and a retry with the same key runs it."""
    import psycopg

    from kling_budget.errors import LedgerUnavailableError
    from kling_budget.ledger import Ledger, ReservationState
    from kling_budget.ledger.postgres import PostgresBackend
    from kling_budget.types import Attribution, PackType
    from tests.pgproxy import CuttingProxy
    from tests.pgutil import with_host

    cluster.stop("fast")
    cluster.start("-c wal_writer_delay=10000 -c wal_writer_flush_after=0")  # WAL is flushed only by commits
    truth = Ledger(PostgresBackend(cluster.url))
    proxy = CuttingProxy("127.0.0.1", cluster.port)
    via = Ledger(PostgresBackend(with_host(cluster.url, "127.0.0.1", proxy.port), timeout=30, pool_max=1))
    job = {"units_milli": 1500, "pack_type": PackType.VIDEO, "attribution": Attribution(project="p")}
    outcome: list[object] = []

    def reserve() -> None:
        try:
            outcome.append(via.reserve("in-doubt", **job))  # type: ignore[arg-type]
        except LedgerUnavailableError as exc:
            outcome.append(exc)

    proxy.arm(b"COMMIT\x00", "hold")  # COMMIT never reaches the server, which then dies
    worker = threading.Thread(target=reserve)
    worker.start()
    deadline = time.monotonic() + 30
    while proxy.cuts == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    cluster.stop("immediate")  # the transaction's WAL is still in memory: its id was never durable
    cluster.start()
    with psycopg.connect(cluster.url, autocommit=True) as other:
        for _ in range(3):  # new transactions take the ids after the last durable one, ours among them
            other.execute("BEGIN")
            other.execute("SELECT pg_current_xact_id()")
            other.execute("COMMIT")
    worker.join(timeout=60)
    proxy.close()
    assert not worker.is_alive()
    assert isinstance(outcome[0], LedgerUnavailableError), outcome  # unknown, never "committed"
    assert truth.list_reservations(limit=10) == []  # it really did not commit
    again = via.reserve("in-doubt", **job)  # type: ignore[arg-type]
    assert again.state is ReservationState.HELD and not again.replayed
    assert truth.verify().ok
    via.close()
    truth.close()
