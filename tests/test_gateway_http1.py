"""The gateway's small HTTP/1.1 client: framing, keep-alive, and which errors mean "never sent"."""

from __future__ import annotations

import asyncio

import pytest

from kling_budget.server.http1 import ExchangeError, HTTP1Pool, NotSentError


async def _serve(answers: list[bytes], seen: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await exchange(reader, writer)
        finally:
            writer.close()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")]
            seen.append(head + (await reader.readexactly(length[0]) if length else b""))
            answer = answers.pop(0)
            if answer == b"HANG":
                await asyncio.sleep(0.5)
                break
            writer.write(answer)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_content_length_chunked_and_keep_alive():
    """Both body framings are read, and one connection serves consecutive requests."""

    async def scenario() -> None:
        seen: list[bytes] = []
        answers = [
            b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"code":0}\n',
            b'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"co\r\n6\r\nde":1}\r\n0\r\n\r\n',
        ]
        server, port = await _serve(answers, seen)
        pool = HTTP1Pool(f"http://127.0.0.1:{port}", timeout=5)
        first = await pool.request("POST", "/v1/x", headers={"Authorization": "Bearer t"}, body=b"{}")
        second = await pool.request("GET", "/v1/x/1", headers={}, params={"a": "b c"})
        assert (first.status, first.body) == (200, b'{"code":0}\n')
        assert (second.status, second.body) == (404, b'{"code":1}')
        assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\n") and b"Content-Length: 2" in seen[0]
        assert seen[1].startswith(b"GET /v1/x/1?a=b+c HTTP/1.1\r\n")
        await pool.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_refused_connection_is_not_sent_and_a_timeout_may_have_been():
    """Connecting to a closed port is NotSentError; a server that never answers is ExchangeError."""

    async def scenario() -> None:
        server, port = await _serve([b"HANG"], [])
        with pytest.raises(ExchangeError):
            await HTTP1Pool(f"http://127.0.0.1:{port}", timeout=0.2).request("POST", "/", headers={}, body=b"x")
        await asyncio.sleep(0.6)
        server.close()
        await server.wait_closed()
        with pytest.raises(NotSentError):
            await HTTP1Pool(f"http://127.0.0.1:{port}", timeout=1).request("GET", "/", headers={})

    asyncio.run(scenario())
