"""The admin API's OpenAPI document says exactly what the routes do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_budget.server import GatewayState
from kling_budget.server.admin import API_PREFIX, operations
from kling_budget.server.openapi import openapi_document
from tests.admin_support import SyncClient, auth, make_app, make_state, seed

DOCUMENT = openapi_document()
EXAMPLES = {
    "project": "marketing",
    "user": "alice",
    "api_key": "mkt-app",
    "model": "kling-v2-6",
    "tag": "promo",
    "pack_type": "video",
    "period": "month",
    "from": "2026-03-01",
    "to": "2026-03-05",
    "timezone": "Europe/Berlin",
    "group_by": "project,day",
    "week_start": "2",
    "bucket": "day",
    "state": "open",
    "limit": "5",
    "pending": "true",
    "include_revoked": "false",
    "task_id": "task-sub-1",
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[SyncClient]:
    """A client of a seeded gateway."""
    state: GatewayState = make_state(tmp_path)
    seed(state)
    c = SyncClient(make_app(state))
    yield c
    c.close()
    state.tracker.close()


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item if method != "parameters"
    }


def test_every_route_is_documented_and_nothing_else() -> None:
    """The document's (method, path) pairs are exactly the registered operations."""
    assert documented() == {(op.method, op.path) for op in operations()}
    assert DOCUMENT["servers"] == [{"url": API_PREFIX}]


def test_the_document_is_openapi_3_with_a_bearer_scheme_and_resolvable_refs() -> None:
    """OpenAPI 3.0, the bearer security scheme applied globally, and every $ref resolves."""
    assert DOCUMENT["openapi"].startswith("3.0")
    assert DOCUMENT["security"] == [{"adminToken": []}]
    assert DOCUMENT["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": DOCUMENT["components"]["securitySchemes"]["adminToken"]["description"],
    }
    schemas = DOCUMENT["components"]["schemas"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOCUMENT)
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["summary"] and operation["responses"], (method, path)
            if operation.get("security") != []:
                assert "401" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    ("method", "path"),
    sorted(op for op in documented() if op[0] == "GET"),
    ids=[f"{m} {p}" for m, p in sorted(op for op in documented() if op[0] == "GET")],
)
def test_every_documented_query_parameter_is_accepted(client: SyncClient, method: str, path: str) -> None:
    """Each documented query parameter is accepted (an undocumented one is a 400)."""
    item = DOCUMENT["paths"][path]
    params = [p for p in item.get("parameters", []) + item[method.lower()].get("parameters", []) if p["in"] == "query"]
    url = API_PREFIX + path.replace("{name}", "account").replace("{product}", "video")
    url = url.replace("{reservation_id}", "hist-m-2")
    for param in params:
        name = param["name"]
        query = {name: EXAMPLES[name]}
        if name in ("from", "to"):
            query = {"from": EXAMPLES["from"], "to": EXAMPLES["to"]}
        response = client.get(url, params=query, headers=auth())
        assert response.status_code == 200, (name, response.text)
    response = client.get(url, params={"undocumented": "1"}, headers=auth())
    assert response.status_code == 400 and "unknown query parameter" in response.text
