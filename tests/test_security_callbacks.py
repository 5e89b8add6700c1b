"""Callbacks against a real ``serve`` process: no loops, no forged or noisy callbacks, no SSRF.

The simulator plays Kling and calls the gateway back on every status change; a loopback receiver plays the
client's own server (allowed explicitly with ``--allow-callback-host 127.0.0.1`` where a test needs it).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget.ledger import ReservationState, open_ledger
from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.gatewayutil import wait_until
from tests.serveproc import BODY, T2V, ServeProcess, prepare_ledger, running_serve, timed
from tests.simfixtures import CallbackReceiver, callback_receiver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def kling() -> Iterator[RunningSimulator]:
    """The simulator as Kling: a task is submitted 0.05 s, processing 0.3 s, then succeeds; callbacks on."""
    with running_simulator(SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=0.3)) as sim:
        yield sim


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """The client's own callback server, on loopback."""
    with callback_receiver() as received:
        yield received


def _public_serve(kling: RunningSimulator, tmp_path: Path, *args: str, port: int | None = None) -> Any:
    port = port or _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    home = tmp_path / "home"
    key = prepare_ledger(db, home) if not (tmp_path / "ledger.db").exists() else None
    if key is None:
        from kling_budget.ledger import open_backend
        from kling_budget.server.keys import KeyStore, load_master_key

        backend = open_backend(db)
        try:
            key = KeyStore(backend, load_master_key(home=home)).rotate("tenant")
        finally:
            backend.close()
    url = f"http://127.0.0.1:{port}"
    return running_serve(kling, db, home, "--port", str(port), "--public-url", url, *args, key=key)


def _metric(gateway: ServeProcess, name: str) -> float:
    with gateway.client(None) as client:
        text = client.get("/metrics").text
    return sum(float(m) for m in re.findall(rf"^{re.escape(name)} (\S+)$", text, flags=re.M))


def test_a_callback_url_at_the_gateway_itself_is_refused(kling: RunningSimulator, tmp_path: Path) -> None:
    """Pointing callback_url at the gateway's own /callbacks/kling is a 400, even with loopback allowed."""
    with _public_serve(kling, tmp_path, "--allow-callback-host", "127.0.0.1") as gateway, gateway.client() as client:
        for url in (
            f"{gateway.base_url}/callbacks/kling",
            f"{gateway.base_url}/callbacks/kling/gw-1/token",
            f"http://localhost:{gateway.port}/callbacks/kling",
        ):
            answer = client.post(T2V, json={**BODY, "callback_url": url})
            assert answer.status_code == 400 and answer.json()["code"] == 1201, answer.text
            assert "this gateway itself" in answer.json()["message"]
    assert kling.sim.tasks() == []


def test_without_public_url_the_gateway_is_still_not_a_callback_target(kling: RunningSimulator, tmp_path: Path) -> None:
    """Without --public-url (the client's URL goes to Kling, which would call the gateway in a loop) a URL at the
    gateway's own /callbacks/kling is refused, by default and with loopback allowed."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    key = prepare_ledger(db, tmp_path / "home")
    for flags in ((), ("--allow-callback-host", "127.0.0.1")):
        with running_serve(kling, db, tmp_path / "home", *flags, key=key) as gateway, gateway.client() as client:
            answer = client.post(T2V, json={**BODY, "callback_url": f"{gateway.base_url}/callbacks/kling"})
        assert answer.status_code == 400 and answer.json()["code"] == 1201, answer.text
        if flags:
            assert "this gateway itself" in answer.json()["message"]
    assert kling.sim.tasks() == []


def test_each_status_reaches_the_client_once_however_often_kling_calls(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    """30 replays of Kling's callback while the task runs cost at most a few Kling queries (one per second per
    task), and the client gets each status once; replays after the end query nothing."""
    slow = SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=1.5)
    with (
        running_simulator(slow) as kling,
        _public_serve(kling, tmp_path, "--allow-callback-host", "127.0.0.1") as gateway,
    ):
        with gateway.client() as client:
            created = client.post(T2V, json={**BODY, "callback_url": receiver.url, "external_task_id": "mine-1"})
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["task_id"]
        kling_url = kling.sim.task(task_id).callback_url
        assert kling_url and kling_url.startswith(f"{gateway.base_url}/callbacks/kling/gw-")
        poll = 'kling_gateway_upstream_seconds_count{operation="poll"}'
        with httpx.Client(timeout=10) as as_kling:
            started = time.monotonic()
            answers = [
                as_kling.post(kling_url, json={"task_id": task_id, "task_status": "processing"}) for _ in range(30)
            ]
            burst = time.monotonic() - started
            assert {(a.status_code, a.text) for a in answers} == {(200, "ok\n")}
            time.sleep(1.1)  # the folded re-query runs at the end of the interval
            assert _metric(gateway, poll) <= 2 + burst, _metric(gateway, poll)
            wait_until(lambda: any(b'"succeed"' in r.body for r in receiver.received), 10)
            settled_polls = _metric(gateway, poll)
            for _ in range(10):
                assert as_kling.post(kling_url, json={"task_id": task_id}).status_code == 200
            time.sleep(0.3)
        assert _metric(gateway, poll) == settled_polls  # a settled task is not queried again
    statuses = Counter(_status(r.body) for r in receiver.received)
    assert statuses["succeed"] == 1 and all(count == 1 for count in statuses.values()), statuses
    assert all(b'"mine-1"' in r.body for r in receiver.received)


def _status(body: bytes) -> str:
    import json

    return str(json.loads(body)["task_status"])


def test_callbacks_need_the_reservation_token_and_say_nothing(tmp_path: Path) -> None:
    """Without the token (or a signature) a callback is 401 with the constant body; nothing is queried or
    revealed; a callback without a body arrives at the check before any body is read."""
    quiet = SimulatorConfig.single(queued_seconds=60, callback_on_submit=False)  # Kling itself stays silent
    with running_simulator(quiet) as kling, _public_serve(kling, tmp_path) as gateway:
        with gateway.client() as client:
            task_id = client.post(T2V, json=BODY).json()["data"]["task_id"]
        ledger = open_ledger(gateway.db)
        reservation = ledger.find_by_task(task_id)
        ledger.close()
        assert reservation is not None
        polls_before = _metric(gateway, 'kling_gateway_upstream_seconds_count{operation="poll"}')
        forged = {"task_id": task_id, "task_status": "succeed", "task_info": {"external_task_id": reservation.id}}
        with httpx.Client(base_url=gateway.base_url, timeout=10) as anyone:
            answers = [
                anyone.post("/callbacks/kling", json=forged),
                anyone.post("/callbacks/kling", json={"task_id": "no-such-task"}),
                anyone.post(f"/callbacks/kling/{reservation.id}/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", json=forged),
                anyone.post("/callbacks/kling/gw-unknown/AAAA", json=forged),
            ]
        assert [(a.status_code, a.text) for a in answers] == [(401, "ok\n")] * 4
        assert _metric(gateway, 'kling_gateway_upstream_seconds_count{operation="poll"}') == polls_before

        # The token is checked before the body is read: a request announcing 60 KB but sending none is answered.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw:
            raw.sendall(
                f"POST /callbacks/kling/{reservation.id}/wrong HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n".encode()
            )
            answer, seconds = timed(lambda: raw.recv(4096))
        assert answer.startswith(b"HTTP/1.1 401") and seconds < 2.0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0:9/hook",
        "http://100.64.0.1/hook",
        "ftp://example.com/hook",
        "http://example.com/a b",
        "http://example.com/a\r\nX-Injected: 1",
        "http://example.com/\x00",
        "http://user:pass@example.com/hook",
        "http:///nohost",
        "http://" + "a" * 3000 + ".com/",
    ],
)
def test_callback_urls_to_private_addresses_or_malformed_are_refused(
    kling: RunningSimulator, tmp_path: Path, url: str, ssrf_gateway: ServeProcess
) -> None:
    """Loopback, private, link-local, shared and unspecified targets, bad schemes and CR/LF/NUL/space are 400s."""
    with ssrf_gateway.client() as client:
        answer = client.post(T2V, json={**BODY, "callback_url": url})
    assert answer.status_code == 400 and answer.json()["code"] == 1201, answer.text
    assert "callback_url" in answer.json()["message"]


@pytest.fixture(scope="module")
def ssrf_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A gateway with default callback settings (public addresses only)."""
    base = tmp_path_factory.mktemp("ssrf")
    with (
        running_simulator(SimulatorConfig.single()) as sim,
        running_serve(sim, f"sqlite:///{base / 'ledger.db'}", base / "home") as gateway,
    ):
        yield gateway


def test_resolving_a_callback_host_never_stalls_the_server(ssrf_gateway: ServeProcess) -> None:
    """A host that does not resolve (or resolves slowly) costs that request a bounded wait; /healthz stays fast."""
    results: list[tuple[Any, float]] = []

    def attack() -> None:
        with ssrf_gateway.client() as client:
            results.append(
                timed(lambda: client.post(T2V, json={**BODY, "callback_url": "http://hooks.example.invalid/cb"}))
            )

    thread = threading.Thread(target=attack)
    thread.start()
    slowest = 0.0
    with ssrf_gateway.client(None) as probe:
        while thread.is_alive():
            answer, seconds = timed(lambda: probe.get("/healthz"))
            assert answer.status_code == 200
            slowest = max(slowest, seconds)
            time.sleep(0.05)
    thread.join()
    (answer, seconds) = results[0]
    assert answer.status_code == 400 and "resolve" in answer.json()["message"]
    assert seconds < 5.0 and slowest < 2.0


def test_an_allowed_private_host_works_and_is_checked_again_at_delivery(
    kling: RunningSimulator, tmp_path: Path, receiver: CallbackReceiver
) -> None:
    """--allow-callback-host lets a loopback receiver in; a gateway started without it refuses to deliver to the
    same URL later (the address is checked again at every delivery)."""
    port = _free_port()
    slow = SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=1.0)
    with running_simulator(slow) as sim:
        with _public_serve(sim, tmp_path, "--allow-callback-host", "127.0.0.1", port=port) as gateway:
            with gateway.client() as client:
                created = client.post(T2V, json={**BODY, "callback_url": receiver.url})
            assert created.status_code == 200, created.text
            task_id = created.json()["data"]["task_id"]
            wait_until(lambda: receiver.received, 5)  # submitted / processing reach the client
        delivered = len(receiver.received)
        wait_until(lambda: sim.sim.task(task_id).status == "succeed", 10)
        kling_url = sim.sim.task(task_id).callback_url
        assert kling_url is not None
        with _public_serve(sim, tmp_path, port=port) as strict:
            with httpx.Client(timeout=10) as as_kling:
                assert as_kling.post(kling_url, json={"task_id": task_id, "task_status": "succeed"}).status_code == 200
            ledger = open_ledger(strict.db)
            wait_until(lambda: ledger.find_by_task(task_id).state is ReservationState.COMMITTED, 10)
            ledger.close()
            wait_until(lambda: any("callback not delivered" in line for line in strict.log_lines()), 5)
        assert len(receiver.received) == delivered


def test_each_status_is_claimed_once_and_sources_are_per_key_on_every_backend(ledger_url: str) -> None:
    """The once-per-status claim and the source-video lookup behave alike on SQLite and PostgreSQL."""
    from kling_budget.ledger import open_backend
    from kling_budget.server.task_store import MODE_DETAIL_KEY, TaskStore

    backend = open_backend(ledger_url)
    try:
        backend.run(
            lambda c: c.execute(
                "INSERT INTO gateway_keys (name, kind, project, created_at) VALUES ('k', 'api', 'p', 1), "
                "('other', 'api', 'p2', 1)"
            )
        )
        keys = dict(backend.run(lambda c: c.fetchall("SELECT name, id FROM gateway_keys"), write=False))
        backend.run(
            lambda c: c.execute(
                "INSERT INTO reservations (id, kind, state, request_hash, model, pack_type, units_milli, usd_nano, "
                "reserved_at, detail) VALUES ('r1', 'reserve', 'submitted', 'h', 'kling-v1-6', 'video', 1, 1, 1, ?)",
                (f'{{"{MODE_DETAIL_KEY}": "std"}}',),
            )
        )
        tasks = TaskStore(backend)
        backend.run(
            tasks.insert_hook(
                "r1", key_id=keys["k"], endpoint=T2V, client_external_id=None, callback_url=None, check_at=0
            )
        )
        assert [tasks.mark_forwarded("r1", s) for s in ("processing", "processing", "succeed")] == [True, False, True]
        tasks.update("r1", status="succeed", data={"task_id": "t", "task_result": {"videos": [{"id": "v-1"}]}})
        assert tasks.source_video(keys["k"], "v-1") == ("kling-v1-6", "std")
        assert tasks.source_video(keys["other"], "v-1") is None
        assert tasks.source_video(keys["k"], "v-2") is None
    finally:
        backend.close()
