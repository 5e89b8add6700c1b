"""Serving the simulator over real HTTP with uvicorn: in a background thread (tests) or blocking (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from kling_budget.kling.jwt import encode_token
from kling_budget.simulator.app import create_app
from kling_budget.simulator.clock import Clock
from kling_budget.simulator.config import SimulatorConfig
from kling_budget.simulator.state import Pricer, Simulator

__all__ = ["RunningSimulator", "run_simulator", "running_simulator"]


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator being served, and the credentials of its first account.

    Attributes:
        base_url: e.g. ``http://127.0.0.1:54321`` (no trailing slash).
        sim: the live state, for inspection, scripting (``sim.script``), faults (``sim.faults``) and
            switches (``sim.configure(...)``).
        access_key / secret_key: the first key pair of the first account (``None`` if it has only API keys).
        api_key: the first plain API key of the first account, if any.
        webhook_secret: the ``whsec_...`` callbacks are signed with, if any.
    """

    base_url: str
    sim: Simulator
    access_key: str | None
    secret_key: str | None
    api_key: str | None
    webhook_secret: str | None

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (``"/v1/videos/text2video"``)."""
        return self.base_url + path

    def token(self, *, now: int | None = None, lifetime: int = 1800, skew: int = 5) -> str:
        """A JWT for the first key pair, valid from ``now - skew`` for ``lifetime`` s (``now``: sim clock)."""
        if self.access_key is None or self.secret_key is None:
            raise RuntimeError("the first account has no access/secret key pair")
        issued = self.sim.clock.now_ms() // 1000 if now is None else now
        return encode_token(self.access_key, self.secret_key, now=issued, lifetime=lifetime, skew=skew)

    def headers(self) -> dict[str, str]:
        """``Authorization`` header with a fresh JWT (or the API key when there is no key pair)."""
        if self.access_key is None:
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"Authorization": f"Bearer {self.token()}"}

    def api_key_headers(self) -> dict[str, str]:
        """``Authorization`` header with the first API key (the 2026 design's routes take nothing else)."""
        if self.api_key is None:
            raise RuntimeError("the first account has no API key")
        return {"Authorization": f"Bearer {self.api_key}"}


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets that say so, and
    # without it Nagle's algorithm adds ~40 ms to every response uvicorn writes in two parts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _describe(sim: Simulator, sock: socket.socket, host: str) -> RunningSimulator:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    first = sim.config.accounts[0]
    pair = first.key_pairs[0] if first.key_pairs else (None, None)
    return RunningSimulator(
        base_url=f"http://{shown}:{port}",
        sim=sim,
        access_key=pair[0],
        secret_key=pair[1],
        api_key=first.api_keys[0] if first.api_keys else None,
        webhook_secret=sim.config.webhook_secret,
    )


class _ThreadedServer(uvicorn.Server):
    """uvicorn in a background thread, stoppable without waiting for its 0.1 s tick."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wakeup: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wakeup = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    def stop(self) -> None:
        """Ask the server to shut down (thread-safe)."""
        self.should_exit = True
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(wakeup.set)


def _config(sim: Simulator, *, log_level: str, access_log: bool, log_config: Any) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(sim),
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        log_config=log_config,
        timeout_graceful_shutdown=2,
        backlog=2048,
    )


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    pricer: Pricer | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
) -> Iterator[RunningSimulator]:
    """Serve a fresh simulator on ``host`` (a free port unless ``port`` is given) in a background thread.

    Example::

        with running_simulator(clock=ManualClock()) as kling:
            httpx.post(kling.url("/v1/videos/text2video"), headers=kling.headers(), json={"prompt": "a cat"})
            kling.sim.clock.advance(1)

    Args:
        config: accounts, packs and switches; defaults to :class:`SimulatorConfig` ().
        clock: the simulator's clock (a :class:`~.clock.ManualClock` lets tests step time).
        pricer: prices creates; defaults to :func:`kling_budget.pricing.quote_kling_request`.
        host / port: where to listen.
        log_level: uvicorn's log level.

    Yields:
        A :class:`RunningSimulator`; the server stops when the block exits.
    """
    sim = Simulator(config, clock=clock, pricer=pricer)
    sock = _bind(host, port)
    server = _ThreadedServer(_config(sim, log_level=log_level, access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="kling-simulator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Kling simulator did not start")
            time.sleep(0.005)
        yield _describe(sim, sock, host)
    finally:
        server.stop()
        thread.join(timeout=10)
        sock.close()


def run_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    clock: Clock | None = None,
    pricer: Pricer | None = None,
    on_ready: Callable[[RunningSimulator], None] | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve a simulator in the foreground until interrupted (Ctrl-C).

    ``on_ready`` is called with the address and credentials once the port is bound, before serving.
    """
    sim = Simulator(config, clock=clock, pricer=pricer)
    sock = _bind(host, port)
    try:
        if on_ready is not None:
            on_ready(_describe(sim, sock, host))
        logging_config = uvicorn.config.LOGGING_CONFIG
        server = uvicorn.Server(_config(sim, log_level=log_level, access_log=access_log, log_config=logging_config))
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal; that is a normal stop here.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        sock.close()
