"""The ledger cannot silently vanish under a real ``serve`` process.

A SQLite file deleted, replaced, corrupted or on a full disk makes the gateway fail closed (503/5001, nothing
sent to Kling) and ``/healthz`` say unavailable; ``serve`` never creates a ledger it was not asked to; with
PostgreSQL down ``/healthz`` still answers within a second.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.serveproc import BODY, T2V, ServeProcess, gateway_env, prepare_ledger, running_serve, timed


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """The simulator as Kling."""
    with running_simulator(SimulatorConfig.single(concurrency=1000)) as sim:
        yield sim


def _unavailable_quickly(gateway: ServeProcess) -> None:
    with gateway.client(None) as client:
        answer, seconds = timed(lambda: client.get("/healthz"))
    assert answer.status_code == 503 and seconds < 2.0, (answer.text, seconds)  # 1 s probe + a loaded host
    assert answer.json()["status"] == "unavailable" and answer.json()["ledger"].startswith("unavailable")


def _creates_fail_closed(gateway: ServeProcess, kling: RunningSimulator) -> None:
    tasks = len(kling.sim.tasks())
    with gateway.client() as client:
        answers = [client.post(T2V, json=BODY) for _ in range(5)]
    assert {(a.status_code, a.json()["code"]) for a in answers} == {(503, 5001)}, [a.text for a in answers]
    assert len(kling.sim.tasks()) == tasks  # nothing reached Kling


def test_a_deleted_ledger_file_fails_closed_and_is_never_recreated(kling: RunningSimulator, tmp_path: Path) -> None:
    """Deleting the SQLite file under the gateway: creates 503/5001, /healthz 503; a restart without --init
    refuses to start (exit 2) instead of creating an empty ledger with no keys or budgets."""
    path = tmp_path / "ledger.db"
    db = f"sqlite:///{path}"
    with running_serve(kling, db, tmp_path / "home") as gateway:
        with gateway.client() as client:
            assert client.post(T2V, json=BODY).status_code == 200
        path.unlink()
        _unavailable_quickly(gateway)
        _creates_fail_closed(gateway, kling)
    assert not path.exists()
    env = gateway_env(tmp_path / "home")
    command = [sys.executable, "-m", "kling_budget", "--db", db, "serve", "--upstream", kling.base_url, "--port", "0"]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 2, started
    assert started.stderr.startswith("error: no ledger at") and "--init" in started.stderr
    assert len(started.stderr.strip().splitlines()) == 1
    assert not path.exists()


def test_a_replaced_ledger_file_fails_closed(kling: RunningSimulator, tmp_path: Path) -> None:
    """A file moved over the ledger (another inode) is not written to: 503 and /healthz unavailable."""
    path = tmp_path / "ledger.db"
    with running_serve(kling, f"sqlite:///{path}", tmp_path / "home") as gateway:
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)
        os.replace(copy, path)
        _unavailable_quickly(gateway)
        _creates_fail_closed(gateway, kling)


def test_a_corrupted_ledger_file_is_reported_unavailable(kling: RunningSimulator, tmp_path: Path) -> None:
    """Garbage written over the file's header in place: /healthz says unavailable."""
    path = tmp_path / "ledger.db"
    with running_serve(kling, f"sqlite:///{path}", tmp_path / "home") as gateway:
        with gateway.client(None) as client:
            assert client.get("/healthz").status_code == 200
        with path.open("r+b") as handle:
            handle.write(b"this is not a SQLite database at all " * 3)
        _unavailable_quickly(gateway)


def test_a_full_disk_fails_closed(kling: RunningSimulator, tmp_path: Path) -> None:
    """With no more room to write (the process's file-size limit set to 0), /healthz says unavailable and every
    create is refused before anything is sent to Kling."""
    with running_serve(kling, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "home") as gateway:
        with gateway.client() as client:
            assert client.post(T2V, json=BODY).status_code == 200
        pid = gateway.process.pid
        saved = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, saved[1]))
        try:
            _unavailable_quickly(gateway)
            _creates_fail_closed(gateway, kling)
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, saved)


def test_serve_creates_a_ledger_only_when_asked(kling: RunningSimulator, tmp_path: Path) -> None:
    """`serve --init` creates a missing ledger; without it nothing is created."""
    path = tmp_path / "fresh.db"
    home = tmp_path / "home"
    env = gateway_env(home)
    command = [sys.executable, "-m", "kling_budget", "--db", f"sqlite:///{path}", "serve", "--upstream", kling.base_url]
    refused = subprocess.run([*command, "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and not path.exists()
    key = prepare_ledger(f"sqlite:///{tmp_path / 'other.db'}", home)
    path.unlink(missing_ok=True)
    with (
        running_serve(kling, f"sqlite:///{path}", home, "--init", key=key) as gateway,
        gateway.client(None) as client,
    ):
        assert client.get("/healthz").status_code == 200
    assert path.exists()


def test_healthz_answers_within_a_second_when_postgresql_is_down(kling: RunningSimulator, tmp_path: Path) -> None:
    """PostgreSQL unreachable (connections cut, new ones refused): /healthz says unavailable within a second,
    again and again."""
    from tests.pgproxy import CuttingProxy
    from tests.pgutil import base_url, fresh_postgres_url, require_postgres

    require_postgres()
    with fresh_postgres_url() as url:
        from urllib.parse import urlsplit, urlunsplit

        server = urlsplit(base_url())
        proxy = CuttingProxy(server.hostname or "127.0.0.1", server.port or 5432)
        parts = urlsplit(url)
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
        proxied = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        try:
            with running_serve(kling, proxied, tmp_path / "home") as gateway:
                with gateway.client(None) as client:
                    assert client.get("/healthz").status_code == 200
                proxy.refuse_new = True
                proxy.close()
                for _ in range(3):
                    _unavailable_quickly(gateway)
        finally:
            proxy.close()
