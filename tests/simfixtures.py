"""Helpers for tests that talk to the Kling simulator: signed httpx clients and a callback receiver.

Plain functions and context managers (not pytest fixtures), so any test module can import them.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from kling_budget.simulator import ManualClock, RunningSimulator, SimulatorConfig, running_simulator


class SimAuth(httpx.Auth):
    """Signs every request with a fresh JWT from the simulator's first key pair, on the simulator's clock."""

    def __init__(self, kling: RunningSimulator) -> None:
        self.kling = kling

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.kling.token()}"
        yield request


@contextmanager
def serve(config: SimulatorConfig | None = None, **options: Any) -> Iterator[tuple[RunningSimulator, ManualClock]]:
    """A simulator on a manual clock (``options`` as for :meth:`SimulatorConfig.single`), and its clock."""
    clock = ManualClock()
    with running_simulator(config or SimulatorConfig.single(**options), clock=clock) as kling:
        yield kling, clock


@contextmanager
def api_client(kling: RunningSimulator, key: str | None = None) -> Iterator[httpx.Client]:
    """An httpx client on the simulator sending an API key (the first account's by default)."""
    headers = {"Authorization": f"Bearer {key}"} if key else kling.api_key_headers()
    with httpx.Client(base_url=kling.base_url, headers=headers, timeout=10, verify=False) as client:
        yield client


def expect_error(answer: httpx.Response, http_status: int, code: int) -> str:
    """Assert a Kling error envelope with this HTTP status and business code; return its message."""
    payload = answer.json()
    assert (answer.status_code, payload["code"]) == (http_status, code), payload
    assert set(payload) == {"code", "message", "request_id", "data"} and payload["data"] is None
    return str(payload["message"])


@contextmanager
def sim_client(kling: RunningSimulator, **kwargs: object) -> Iterator[httpx.Client]:
    """An httpx client on the simulator's base URL that signs each request with a fresh JWT."""
    # verify=False: plain-HTTP loopback needs no CA bundle, and loading one costs ~20 ms per client.
    with httpx.Client(base_url=kling.base_url, auth=SimAuth(kling), timeout=10, verify=False, **kwargs) as client:  # type: ignore[arg-type]
        yield client


def raw_get(url: str, **kwargs: object) -> httpx.Response:
    """One unsigned GET (like ``httpx.get``, without loading a CA bundle)."""
    with httpx.Client(verify=False, timeout=10) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]


def raw_post(url: str, **kwargs: object) -> httpx.Response:
    """One unsigned POST (like ``httpx.post``, without loading a CA bundle)."""
    with httpx.Client(verify=False, timeout=10) as client:
        return client.post(url, **kwargs)  # type: ignore[arg-type]


@dataclass
class Received:
    """One callback POST as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackReceiver:
    """A loopback HTTP server recording callback POSTs; answers ``status`` (settable) to each."""

    url: str
    status: int = 200
    received: list[Received] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``count`` callbacks arrived; return them all (raise ``TimeoutError`` otherwise)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} callbacks arrived")
            return list(self.received)


@contextmanager
def callback_receiver() -> Iterator[CallbackReceiver]:
    """Run a :class:`CallbackReceiver` on a free loopback port for the duration of the block."""
    holder: list[CallbackReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            receiver = holder[0]
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver._cond:
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                receiver._cond.notify_all()
            self.send_response(receiver.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(CallbackReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/kling/callback"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
