"""A small HTTP/1.1 keep-alive client on asyncio streams, for the gateway's hot path to Kling.

The gateway makes one request to Kling per create and per query; httpx spends about 1.5 ms of CPU on each
(most of it in its connection pool), which was most of the gateway's own cost. This client does only what
that path needs: one host, keep-alive connections reused newest first, ``Content-Length`` and chunked
bodies, a whole-exchange timeout, TLS for ``https://``. Errors say whether the request can have reached the
server: :class:`NotSentError` (connecting failed) or :class:`ExchangeError` (it may have).

An idle connection is reused only if the server has not closed it and it has been idle for less than
``max_idle`` seconds (below the usual 5 s keep-alive timeout of servers), so a request rarely meets a
connection the server is closing at that very moment.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

__all__ = ["ExchangeError", "HTTP1Pool", "NotSentError", "Response"]

_MAX_HEAD = 64 * 1024


class NotSentError(Exception):
    """The connection could not be made: the request never left."""


class ExchangeError(Exception):
    """The request may have reached the server, but no complete answer came back."""


@dataclass(frozen=True, slots=True)
class Response:
    """Status and body of one answer."""

    status: int
    body: bytes


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float


class HTTP1Pool:
    """Keep-alive connections to one ``http(s)://host[:port]``.

    Args:
        base_url: scheme, host and port (a path is ignored).
        timeout: seconds for one whole exchange (connect + send + receive).
        max_idle: an idle connection older than this is closed instead of reused.
        max_pooled: idle connections kept at most.
    """

    def __init__(self, base_url: str, *, timeout: float, max_idle: float = 2.0, max_pooled: int = 256) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self._host_header = self.host if default_port else f"{self.host}:{self.port}"
        self._timeout = timeout
        self._max_idle = max_idle
        self._max_pooled = max_pooled
        self._idle: deque[_Conn] = deque()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and read the whole answer.

        Raises:
            NotSentError: no connection could be made.
            ExchangeError: anything else (timeout, reset, malformed or truncated answer).
        """
        target = path + ("?" + urlencode(params) if params else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        conn = self._take()
        try:
            async with asyncio.timeout(self._timeout):
                if conn is None:
                    conn = await self._connect()
                conn.writer.write(payload)
                response, keep = await self._read(conn.reader, method)
        except NotSentError:
            raise
        except (
            OSError,
            EOFError,
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            if conn is not None:
                conn.writer.close()
            raise ExchangeError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        except BaseException:
            if conn is not None:
                conn.writer.close()
            raise
        if keep and len(self._idle) < self._max_pooled:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.writer.close()
        return response

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self._max_idle and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return None

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None, limit=_MAX_HEAD
            )
        except (OSError, TimeoutError) as exc:
            raise NotSentError(f"{type(exc).__name__}: {exc}") from None
        return _Conn(reader, writer, time.monotonic())

    @staticmethod
    async def _read(reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        status = int(rest[:3])
        fields: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        keep = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, b""), keep
        if "chunked" in fields.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return Response(status, b"".join(chunks)), keep
        if "content-length" in fields:
            return Response(status, await reader.readexactly(int(fields["content-length"]))), keep
        return Response(status, await reader.read()), False

    async def aclose(self) -> None:
        """Close every idle connection."""
        while self._idle:
            conn = self._idle.pop()
            conn.writer.close()
