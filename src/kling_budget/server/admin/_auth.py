"""The admin token: ``Authorization: Bearer <token>`` compared in constant time, and the one 401 answer that
says nothing about the token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from kling_budget.server.admin._base import error_response
from kling_budget.server.state import GatewayState

_UNAUTHORIZED = "the admin API needs a valid admin token: send Authorization: Bearer <token>"


def authorized(request: Request, state: GatewayState) -> bool:
    """Whether the request carries the admin token (constant-time comparison; no token: never)."""
    token = state.config.admin_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return token is not None and scheme.lower() == "bearer" and token.matches(given.strip())


def unauthorized() -> JSONResponse:
    """The answer to a missing, malformed or wrong token (the same for all three)."""
    return error_response(401, "unauthorized", _UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="admin"'})
