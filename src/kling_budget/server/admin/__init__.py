"""The admin API: JSON under ``/admin/api``, behind a bearer admin token, described by OpenAPI 3.

Every route but the OpenAPI document itself needs ``Authorization: Bearer <admin token>`` (compared in
constant time); a missing or wrong token gets a 401 that says nothing about the token. Errors are one JSON
shape, ``{"error": {"code": ..., "message": ...}}`` with a one-line message: bad input is a 400, an unknown
resource a 404, a conflict a 409, an unreachable ledger a 503; bad input never causes a 5xx.

Amounts are exact decimal strings, as everywhere in kling-budget. The routes (see :mod:`kling_budget.server.openapi`):

* ``GET /budgets``, ``POST /budgets``, ``GET|PUT|DELETE /budgets/{name}`` — budgets with their status
  (committed, held, remaining, reset time) and forecast;
* ``GET|POST /keys``, ``GET /keys/{key_id}``, ``POST /keys/{key_id}/revoke|rotate`` — virtual keys; a
  secret appears once, in the answer that created or rotated it;
* ``GET /usage`` (grouped), ``GET /usage/series`` (cumulative spend over time against budget lines);
* ``GET /reservations``, ``GET /reservations/{id}``, ``GET /holds`` — jobs and the open holds;
* ``GET /alerts`` — recent or pending alerts;
* ``GET /prices``, ``GET /prices/{product}``, ``POST /quote`` — the price table and a dry-run quote;
* ``POST /reconcile`` — settle open reservations from Kling's own answers.

One module per group of routes (:mod:`.budgets`, :mod:`.keys`, :mod:`.usage`, :mod:`.jobs`, :mod:`.alerts`,
:mod:`.prices`, :mod:`.reconcile`, and :mod:`.meta` for ``/openapi.json`` and ``/status``), each declaring its
operations with ``@op(method, path)``; :mod:`._params` reads and checks requests, :mod:`._base` holds the
answer shapes and :mod:`._auth` the token check. This module routes requests to them and turns errors into
answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kling_budget.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidInputError,
    LedgerUnavailableError,
    ReservationNotFoundError,
    ReservationResolvedError,
)
from kling_budget.server.admin import alerts, budgets, jobs, keys, meta, prices, reconcile, usage
from kling_budget.server.admin._auth import authorized, unauthorized
from kling_budget.server.admin._base import API_PREFIX, ApiError, Operation, error_response
from kling_budget.server.admin.budgets import budget_json
from kling_budget.server.admin.jobs import job_json
from kling_budget.server.state import GatewayState

__all__ = [
    "API_PREFIX",
    "ApiError",
    "Operation",
    "admin_routes",
    "budget_json",
    "error_response",
    "job_json",
    "operations",
]

logger = logging.getLogger("kling_budget.server.admin")

_OPERATIONS: list[Operation] = [
    *meta.op.declared,
    *budgets.op.declared,
    *keys.op.declared,
    *usage.op.declared,
    *jobs.op.declared,
    *alerts.op.declared,
    *prices.op.declared,
    *reconcile.op.declared,
]


def operations() -> list[Operation]:
    """Every admin route (the OpenAPI document is checked against this list in the tests)."""
    return list(_OPERATIONS)


def _dispatcher(state: GatewayState, handlers: Mapping[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    public = all(op.public for op in handlers.values())

    async def endpoint(request: Request) -> Response:
        if not public and not authorized(request, state):
            return unauthorized()
        method = "GET" if request.method == "HEAD" else request.method
        op = handlers.get(method)
        if op is None:
            allowed = ", ".join(sorted(handlers))
            return error_response(405, "method_not_allowed", f"use {allowed} on this path", {"Allow": allowed})
        try:
            return await op.handler(request, state)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except ReservationNotFoundError as exc:
            return error_response(404, "not_found", str(exc))
        except (IdempotencyConflictError, ReservationResolvedError) as exc:
            return error_response(409, "conflict", str(exc))
        except LedgerUnavailableError as exc:
            logger.error("admin %s %s: ledger unavailable: %s", request.method, op.path, exc)
            return error_response(503, "ledger_unavailable", "the ledger cannot be reached; try again shortly")
        except (InvalidInputError, ConfigurationError) as exc:
            return error_response(400, "invalid_input", str(exc))
        except Exception:
            logger.exception("admin %s %s failed", request.method, op.path)
            return error_response(500, "internal_error", "the admin API failed on this request; see the gateway log")

    return endpoint


async def _unknown(request: Request, state: GatewayState) -> Response:
    if not authorized(request, state):
        return unauthorized()
    return error_response(404, "not_found", "no admin API route at this path; see /admin/api/openapi.json")


def admin_routes(state: GatewayState) -> list[BaseRoute]:
    """The admin API's routes, to mount in the gateway app (``create_app`` does)."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in _OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = op
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes: list[BaseRoute] = [
        Route(API_PREFIX + path, _dispatcher(state, handlers), methods=methods) for path, handlers in by_path.items()
    ]

    async def unknown(request: Request) -> Response:
        return await _unknown(request, state)

    routes.append(Route(API_PREFIX + "/{rest:path}", unknown, methods=methods))
    routes.append(Route(API_PREFIX, unknown, methods=methods))
    return routes
