"""Bounded resources for the gateway's HTTP server: body and header caps, timeouts and a connection limit.

Two layers, both cheap on the hot path:

* :class:`BodyLimit`, an ASGI middleware: a request body larger than its route's cap is refused with 413
  before it is read (by ``Content-Length``) or as soon as a streamed (chunked) body passes the cap; the
  connection is then closed, so the rest is never read. Caps: ``/v1`` creates
  :attr:`ServerLimits.max_body_bytes` (default 10 MiB: Kling takes images as URLs or base64 of at most
  10 MB each), ``/callbacks`` :data:`CALLBACK_MAX_BODY_BYTES`, everything else
  :data:`OTHER_MAX_BODY_BYTES` (the admin API caps its JSON bodies lower still).
* :func:`guarded_protocol`, uvicorn's httptools protocol with what it lacks: a connection limit (a
  connection past :attr:`ServerLimits.max_connections` gets 503 and is closed at once), a header cap
  (431 when the request line and headers pass :attr:`ServerLimits.max_header_bytes`), a header timeout (a
  connection that does not complete its request headers within :attr:`ServerLimits.header_timeout` seconds
  — idle, or sending a byte at a time — is closed) and a body idle timeout (no body bytes for
  :attr:`ServerLimits.body_timeout` seconds closes the connection). uvicorn's own keep-alive timeout closes
  idle connections between requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "CALLBACK_MAX_BODY_BYTES",
    "OTHER_MAX_BODY_BYTES",
    "BodyLimit",
    "BodyTooLargeError",
    "ServerLimits",
    "guarded_protocol",
]

CALLBACK_MAX_BODY_BYTES = 64 * 1024
"""Kling's callback bodies are one task's JSON: a few kilobytes."""
OTHER_MAX_BODY_BYTES = 1024 * 1024
"""Admin API and everything else (the admin API refuses JSON bodies over 64 KiB itself)."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Resource limits of one gateway process.

    Attributes:
        max_body_bytes: largest ``/v1`` request body (413 beyond it).
        max_header_bytes: largest request line + headers (431 beyond it).
        header_timeout: seconds a connection may take to send a request's headers.
        body_timeout: seconds a request body may pause between bytes.
        keep_alive_timeout: seconds an idle connection is kept between requests.
        max_connections: open connections at once; more are answered 503 and closed.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000

    def body_cap(self, path: str) -> int:
        """The body cap of a request path."""
        if path.startswith("/v1/"):
            return self.max_body_bytes
        if path.startswith("/callbacks/"):
            return CALLBACK_MAX_BODY_BYTES
        return OTHER_MAX_BODY_BYTES


class BodyTooLargeError(Exception):
    """Raised from ``receive`` when a streamed body passes its cap; :class:`BodyLimit` answers 413."""


Responder = Callable[[Scope, int], tuple[bytes, bytes]]
"""(path scope, cap) -> (content type, body) of the 413 answer."""


class BodyLimit:
    """ASGI middleware refusing request bodies over their route's cap (see the module docstring).

    Args:
        app: the application.
        limits: the caps.
        answer: builds the 413 body for a request (Kling's envelope on ``/v1``, the callback's constant body).
    """

    def __init__(self, app: ASGIApp, *, limits: ServerLimits, answer: Responder) -> None:
        self.app = app
        self.limits = limits
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.body_cap(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await self._too_large(scope, send, cap)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLargeError
            return message

        async def observed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, observed_send)
        except BodyTooLargeError:
            if not started:
                await self._too_large(scope, send, cap)

    async def _too_large(self, scope: Scope, send: Send, cap: int) -> None:
        content_type, body = self.answer(scope, cap)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"connection", b"close"),  # the rest of the body is never read
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            # httptools already refuses a malformed length; the bound keeps int() trivially cheap.
            return int(text) if text.isdigit() and len(text) <= 18 else 1 << 62
    return None


def _plain_response(status: int, reason: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + str(status).encode("ascii") + b" " + reason + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a connection limit, a header cap and header/body timeouts.

    Pass it as ``uvicorn.Config(http=guarded_protocol(limits))``.
    """

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _in_headers = True
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(_plain_response(503, b"Service Unavailable"))
                transport.close()
                return
            self._start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > limits.max_header_bytes and not self.transport.is_closing():
                self.transport.write(_plain_response(431, b"Request Header Fields Too Large"))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            self._header_bytes = 0
            if self._header_timer is None:
                self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._cancel(self._header_timer)
            self._header_timer = None
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body:
                self._body_timer = self.loop.call_later(limits.body_timeout, self._timed_out)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = self.loop.call_later(limits.body_timeout, self._timed_out)

        def on_message_complete(self) -> None:
            self._cancel(self._body_timer)
            self._body_timer = None
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next request's headers are due within the header timeout too (keep-alive aside); not
            # while a pipelined request, whose headers already arrived, is still being answered.
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing() and self._header_timer is None:
                self._start_header_timer()

        def _start_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(limits.header_timeout, self._timed_out)

        def _timed_out(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def _cancel_timers(self) -> None:
            self._cancel(self._header_timer)
            self._cancel(self._body_timer)
            self._header_timer = self._body_timer = None

        @staticmethod
        def _cancel(timer: Any) -> None:
            if timer is not None:
                timer.cancel()

    return GuardedHttpToolsProtocol
