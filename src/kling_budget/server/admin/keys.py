"""``GET|POST /keys``, ``GET /keys/{name}``, ``POST /keys/{name}/revoke|rotate``: virtual keys. A secret
appears once, in the answer that created or rotated it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.server.admin._base import ApiError, Operations, bad, not_found, ok
from kling_budget.server.admin._params import Body, Query, json_object
from kling_budget.server.state import GatewayState

if TYPE_CHECKING:
    from kling_budget.server.keys import VirtualKey

op = Operations()


def _key_json(key: VirtualKey) -> dict[str, Any]:
    return key.to_dict()


def _require_key(state: GatewayState, name: str) -> VirtualKey:
    found = [k for k in state.keys.list() if k.name == name]
    if not found:
        not_found(f"no virtual key named {name[:100]!r}")
    return found[0]


@op("GET", "/keys")
async def _list_keys(request: Request, state: GatewayState) -> Response:
    query = Query(request, ("include_revoked", "project"))
    include_revoked = query.boolean("include_revoked", True)
    project = query.text("project")
    keys = await state.run_sync(lambda: state.keys.list(include_revoked=include_revoked))
    return ok({"keys": [_key_json(k) for k in keys if project is None or k.project == project]})


@op("POST", "/keys")
async def _create_key(request: Request, state: GatewayState) -> Response:
    body = Body(await json_object(request), ("name", "project", "user", "tags", "kind"), ("name", "project"))
    name = body.text("name", limit=100) or ""
    project = body.text("project") or ""
    user = body.text("user", "") or ""
    tags = body.string_list("tags")
    kind = body.text("kind", "jwt") or "jwt"
    if kind not in ("jwt", "api", "both"):
        bad(f"kind must be jwt, api or both, got {kind[:40]!r}")

    def work() -> dict[str, Any]:
        if any(k.name == name for k in state.keys.list()):
            raise ApiError(409, "conflict", f"a virtual key named {name!r} exists (names are never reused)")
        issued = state.keys.create(name, project=project, user=user, tags=tags, kind=kind)
        return issued.to_dict()

    return ok(await state.run_sync(work), 201)


@op("GET", "/keys/{name}")
async def _get_key(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    name = request.path_params["name"]
    return ok(_key_json(await state.run_sync(_require_key, state, name)))


@op("POST", "/keys/{name}/revoke")
async def _revoke_key(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    name = request.path_params["name"]

    def work() -> VirtualKey:
        _require_key(state, name)
        return state.keys.revoke(name)

    return ok(_key_json(await state.run_sync(work)))


@op("POST", "/keys/{name}/rotate")
async def _rotate_key(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    name = request.path_params["name"]

    def work() -> dict[str, Any]:
        if _require_key(state, name).revoked:
            raise ApiError(409, "conflict", f"virtual key {name!r} is revoked; create a new key instead")
        return state.keys.rotate(name).to_dict()

    return ok(await state.run_sync(work))
