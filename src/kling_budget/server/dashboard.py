"""The live spend dashboard: one static page at ``/dashboard`` that reads the admin API.

The page, its script and its style ship in ``server/static/`` and load nothing from elsewhere (the gateway
may be offline), so a strict Content-Security-Policy holds: no inline script or style, no other origin.
The page holds no data itself: it asks for the admin token once (kept in the tab's ``sessionStorage``)
and draws everything from ``/admin/api`` with it, so the numbers it shows are the API's exact strings.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["DASHBOARD_PATH", "SECURITY_HEADERS", "dashboard_routes"]

DASHBOARD_PATH = "/dashboard"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@lru_cache(maxsize=8)
def _asset(name: str) -> bytes:
    return resources.files("kling_budget.server").joinpath("static", name).read_bytes()


def dashboard_routes(state: Any = None) -> list[BaseRoute]:
    """``/`` (redirects to the dashboard), ``/dashboard`` and its static files.

    ``state`` is accepted for symmetry with :func:`~kling_budget.server.admin.admin_routes`; the page
    reads everything through the admin API.
    """

    async def root(request: Request) -> Response:
        return RedirectResponse(DASHBOARD_PATH, status_code=307)

    async def page(request: Request) -> Response:
        return Response(_asset("dashboard.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return await not_found(request)
        return Response(_asset(name), media_type=_ASSETS[name], headers=SECURITY_HEADERS)

    async def not_found(request: Request) -> Response:
        return Response("not found\n", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)

    return [
        Route("/", root, methods=["GET"]),
        Route(DASHBOARD_PATH, page, methods=["GET"]),
        Route(DASHBOARD_PATH + "/", root, methods=["GET"]),
        Route(DASHBOARD_PATH + "/static/{name}", asset, methods=["GET"]),
        # The dashboard's namespace is its own: anything else under it is its 404, not the Kling fallback.
        Route(DASHBOARD_PATH + "/{rest:path}", not_found, methods=["GET"]),
    ]
