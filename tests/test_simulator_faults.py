"""Kling simulator fault injection, observed by a raw httpx client over loopback."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import httpx
import pytest

from kling_budget.simulator import FaultKind, ManualClock, RunningSimulator, running_simulator
from tests.simfixtures import sim_client

T2V = "/v1/videos/text2video"
BODY = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a cat"}


@pytest.fixture
def kling() -> Iterator[tuple[RunningSimulator, ManualClock, httpx.Client]]:
    clock = ManualClock()
    with running_simulator(clock=clock) as sim, sim_client(sim) as client:
        yield sim, clock, client


def test_timeout_5002_after_create(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """5002 comes back as HTTP 504, yet the task exists, runs and is charged: the ambiguous case."""
    sim, clock, client = kling
    rule = sim.sim.faults.inject(FaultKind.TIMEOUT_5002, path=T2V, method="POST")
    answer = client.post(T2V, json={**BODY, "external_task_id": "ambiguous"})
    assert (answer.status_code, answer.json()["code"], answer.json()["data"]) == (504, 5002, None)
    assert rule.fired == 1
    clock.advance(1)
    task = client.get(f"{T2V}/ambiguous").json()["data"]
    assert task["task_status"] == "succeed" and task["final_unit_deduction"] != "0"
    assert sim.sim.remaining("video") < 1000


@pytest.mark.parametrize(("kind", "status", "code"), [("error_5000", 500, 5000), ("unavailable_5001", 503, 5001)])
def test_server_errors_do_nothing(
    kling: tuple[RunningSimulator, ManualClock, httpx.Client], kind: str, status: int, code: int
) -> None:
    """5000 and 5001 answer with their HTTP status and create nothing."""
    sim, _, client = kling
    sim.sim.faults.inject(kind, count=2)
    for _ in range(2):
        answer = client.post(T2V, json=BODY)
        assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert sim.sim.tasks() == []
    assert client.post(T2V, json=BODY).json()["code"] == 0


def test_plain_500_has_no_envelope(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A plain 500 is text, not JSON, like a failing proxy in front of Kling."""
    sim, _, client = kling
    sim.sim.faults.inject(FaultKind.PLAIN_500)
    answer = client.get(T2V)
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("text/plain")
    with pytest.raises(ValueError):
        answer.json()


def test_slow_response(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A slow fault delays the answer; a client timeout shorter than the delay fires, and the task still exists."""
    sim, _, client = kling
    sim.sim.faults.inject(FaultKind.SLOW, delay=0.3)
    started = time.monotonic()
    assert client.get(T2V).json()["code"] == 0
    assert time.monotonic() - started >= 0.3
    sim.sim.faults.inject(FaultKind.SLOW, delay=0.4, method="POST")
    with pytest.raises(httpx.ReadTimeout):
        client.post(T2V, json={**BODY, "external_task_id": "late"}, timeout=0.1)
    time.sleep(0.4)
    assert client.get(f"{T2V}/late").json()["code"] == 0


def test_truncated_response(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A truncated answer sends headers and part of the body, then closes; the create did happen."""
    sim, _, client = kling
    sim.sim.faults.inject(FaultKind.TRUNCATE, method="POST")
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        client.post(T2V, json={**BODY, "external_task_id": "cut"})
    assert client.get(f"{T2V}/cut").json()["data"]["task_status"] == "submitted"


def test_dropped_connection(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A drop closes the connection with no answer; by default before processing, or after with process=True."""
    sim, _, client = kling
    sim.sim.faults.inject(FaultKind.DROP, method="POST")
    # The kernel ends a closed connection with FIN or, when request bytes are still unread, with RST.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(T2V, json={**BODY, "external_task_id": "lost"})
    assert client.get(f"{T2V}/lost").json()["code"] == 1203
    sim.sim.faults.inject(FaultKind.DROP, method="POST", process=True)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(T2V, json={**BODY, "external_task_id": "lost-but-made"})
    assert client.get(f"{T2V}/lost-but-made").json()["code"] == 0


def test_faults_match_path_and_method(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A rule for POSTs on one endpoint leaves GETs and other endpoints alone, and stops after count uses."""
    sim, _, client = kling
    rule = sim.sim.faults.inject(FaultKind.ERROR_5000, path=T2V, method="POST", count=2)
    assert client.get(T2V).json()["code"] == 0
    assert client.post("/v1/images/generations", json={"prompt": "x"}).json()["code"] == 0
    assert [client.post(T2V, json=BODY).json()["code"] for _ in range(3)] == [5000, 5000, 0]
    assert rule.fired == 2 and sim.sim.faults.rules == []


def test_probabilistic_faults_are_seeded(kling: tuple[RunningSimulator, ManualClock, httpx.Client]) -> None:
    """A probability rule with a seed fires on exactly the requests its seeded generator picks."""
    sim, _, client = kling
    sim.sim.faults.inject(FaultKind.UNAVAILABLE_5001, count=None, probability=0.5, seed=7)
    rng = random.Random(7)
    expected = [5001 if rng.random() < 0.5 else 0 for _ in range(20)]
    assert [client.get(T2V).json()["code"] for _ in range(20)] == expected
    sim.sim.faults.clear()
    assert client.get(T2V).json()["code"] == 0
