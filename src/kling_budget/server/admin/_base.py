"""What every admin module shares: operations and their registry, the error type, the two answer shapes
(success and ``{"error": ...}``) and how amounts are written (exact decimal strings)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kling_budget.server.state import GatewayState

API_PREFIX = "/admin/api"

Handler = Callable[[Request, GatewayState], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One admin route: method, path (relative to :data:`API_PREFIX`) and handler."""

    method: str
    path: str
    handler: Handler
    public: bool = False


class Operations:
    """The operations one module declares, in declaration order: ``@op("GET", "/path")`` above a handler."""

    def __init__(self) -> None:
        self.declared: list[Operation] = []

    def __call__(self, method: str, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.declared.append(Operation(method, path, handler, public))
            return handler

        return register


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad(message: str) -> NoReturn:
    raise ApiError(400, "invalid_input", message)


def not_found(message: str) -> NoReturn:
    raise ApiError(404, "not_found", message)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The admin API's error shape."""
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def ok(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store"})
