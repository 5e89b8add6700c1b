"""Kling compatibility at the gateway's edge: the marker header on every answer and tolerant paths.

* Every answer carries ``X-Kling-Budget-Gateway: 1`` (:data:`~kling_budget.kling._codes.GATEWAY_HEADER`), so a
  client can tell it talks to a kling-budget gateway and leave budgeting to it instead of booking each job a
  second time (the Python clients and ``kling-budget generate`` do: an unauthenticated ``HEAD /`` is enough).
* A Kling API path with one trailing slash (``POST /v1/videos/text2video/``) is served as the same path without
  it: some clients join their base URL and path with a ``/`` of their own. It is rewritten, never redirected
  (a 307 makes some clients drop the body of a POST). The admin API and the dashboard keep their own paths.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_budget.kling._codes import GATEWAY_HEADER

__all__ = ["KlingEdge"]

_MARK = (GATEWAY_HEADER.lower().encode("ascii"), b"1")
_OWN_PATHS = ("/admin/", "/dashboard")


def _trim_trailing_slash(scope: Scope) -> None:
    """Drop one trailing ``/`` of a Kling API path, in place (outer layers then see the route it matched)."""
    path: str = scope["path"]
    if len(path) <= 1 or not path.endswith("/") or path.startswith(_OWN_PATHS):
        return
    scope["path"] = path[:-1]
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw.endswith(b"/"):
        scope["raw_path"] = raw[:-1]


class KlingEdge:
    """ASGI middleware: the gateway's marker header on every answer; one trailing slash on Kling paths ignored."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), _MARK]
            await send(message)

        _trim_trailing_slash(scope)
        await self.app(scope, receive, marked)
