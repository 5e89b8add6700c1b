"""Bounded resources of a real ``serve`` process: body and header caps, header timeout, connection limit.

Raw sockets play the attacker: huge declared or streamed bodies, huge headers, idle and byte-at-a-time
connections. The gateway runs with ``--max-connections 20 --header-timeout 0.5`` so the limits show quickly.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from kling_budget.simulator import SimulatorConfig, running_simulator
from tests.serveproc import T2V, ServeProcess, running_serve, timed

MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real gateway with a small connection limit and a short header timeout."""
    base = tmp_path_factory.mktemp("limits")
    with (
        running_simulator(SimulatorConfig.single()) as sim,
        running_serve(
            sim,
            f"sqlite:///{base / 'ledger.db'}",
            base / "home",
            "--max-connections",
            str(MAX_CONNECTIONS),
            "--header-timeout",
            "0.5",
        ) as served,
    ):
        yield served


def _connect(gateway: ServeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=5)


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                if len(rest) >= length:
                    break
    return data


def _request_head(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: gateway", *headers]) + "\r\n\r\n").encode()


def test_a_huge_declared_body_is_refused_before_it_is_read(gateway: ServeProcess) -> None:
    """Content-Length 300 MB: 413 in Kling's envelope at once, without sending a byte of the body."""
    for path, auth in ((T2V, f"Authorization: Bearer {gateway.key.api_key}"), ("/callbacks/kling/gw-1/t", "X: y")):
        with _connect(gateway) as sock:
            sock.sendall(_request_head(path, auth, "Content-Type: application/json", "Content-Length: 314572800"))
            answer, seconds = timed(lambda sock=sock: _read_answer(sock))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert seconds < 2.0 and b"connection: close" in answer.lower()
        body = answer.partition(b"\r\n\r\n")[2]
        if path == T2V:
            envelope = json.loads(body)
            assert envelope["code"] == 1201 and "larger than 10485760 bytes" in envelope["message"]
        else:
            assert body == b"ok\n"


def test_a_streamed_body_past_the_cap_is_cut_off(gateway: ServeProcess) -> None:
    """A chunked body passing 10 MiB gets 413 and the connection closes; the rest is never read."""
    with _connect(gateway) as sock:
        sock.sendall(
            _request_head(
                T2V,
                f"Authorization: Bearer {gateway.key.api_key}",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        chunk = b"x" * 65536
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 64 * 1024 * 1024  # the server stopped reading long before the attacker stopped sending


def test_no_body_is_read_before_authentication(gateway: ServeProcess) -> None:
    """A create with bad credentials announcing 5 MB is answered 401 without the body being sent."""
    with _connect(gateway) as sock:
        sock.sendall(
            _request_head(
                T2V, "Authorization: Bearer kbk_wrong", "Content-Type: application/json", "Content-Length: 5000000"
            )
        )
        answer, seconds = timed(lambda: _read_answer(sock))
    assert answer.startswith(b"HTTP/1.1 401") and seconds < 2.0


def test_huge_headers_are_refused(gateway: ServeProcess) -> None:
    """Request headers past 64 KiB get 431 and the connection closes before the attacker is done sending."""
    with _connect(gateway) as sock:
        sent = 0
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 200 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        answer = _read_answer(sock)
    assert sent < 200 * 1024 * 1024
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_idle_and_slow_connections_are_closed_and_limited(gateway: ServeProcess) -> None:
    """Past the connection limit new connections get 503 at once; idle and byte-at-a-time ones are closed after
    the header timeout, after which the gateway serves normally."""
    idle = [_connect(gateway) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        with _connect(gateway) as extra:
            answer, seconds = timed(lambda: _read_answer(extra))
        assert answer.startswith(b"HTTP/1.1 503") and seconds < 2.0
        slow = idle[0]
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        closed = []
        for sock in idle:
            sock.settimeout(3)
            closed.append(sock.recv(1) == b"")
        assert all(closed) and time.monotonic() - started < 2.5
    finally:
        for sock in idle:
            sock.close()
    with gateway.client(None) as client:
        assert client.get("/healthz").status_code == 200


def test_a_byte_at_a_time_request_is_closed_after_the_header_timeout(gateway: ServeProcess) -> None:
    """Slowloris: request headers trickling in one byte every 0.1 s are cut off at the header timeout."""
    with _connect(gateway) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        assert time.monotonic() - started < 3.0
