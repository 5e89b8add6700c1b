"""A TCP proxy in front of PostgreSQL that cuts a connection at a chosen moment (T5 of the design).

Armed with a byte pattern of the client's traffic (``b"COMMIT\\x00"`` is the simple-protocol COMMIT the
backend sends), it cuts the connection that sends it, once:

* ``before``: drops the message and closes both sides: the server never sees it;
* ``after``: forwards it, swallows the server's answer and closes both sides after ``linger`` seconds:
  the server committed, the client never heard;
* ``hold``: drops it (and whatever follows) but keeps the connection open: the client waits until the server
  side goes away (a crash), as if the server died while the message was on its way.

``refuse_new`` closes every new connection at once (the server looks down).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class CuttingProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; see the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pattern: bytes | None = None
        self._mode = ""
        self.linger = 0.3
        self.refuse_new = False
        self.cuts = 0
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, pattern: bytes, mode: str) -> None:
        """Cut the next connection whose client sends ``pattern`` (``mode`` ``before`` or ``after``)."""
        assert mode in ("before", "after", "hold")
        with self._lock:
            self._pattern, self._mode = pattern, mode

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            _close(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse_new:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            self._sockets.update((client, server))
            state = {"swallow": False}
            threading.Thread(target=self._client_to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(server, client, state), daemon=True).start()

    def _take(self, data: bytes) -> str:
        with self._lock:
            if self._pattern is not None and self._pattern in data:
                mode, self._pattern = self._mode, None
                self.cuts += 1
                return mode
        return ""

    def _client_to_server(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        held = False
        try:
            while data := client.recv(65536):
                mode = self._take(data)
                held = held or mode == "hold"
                if held:
                    continue
                if mode == "before":
                    break
                if mode == "after":
                    state["swallow"] = True
                    server.sendall(data)
                    time.sleep(self.linger)  # the server commits and answers into the void
                    break
                server.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(server)

    def _server_to_client(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := server.recv(65536):
                if state["swallow"]:
                    continue
                client.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(server)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
