"""Security of the admin API and the dashboard: the admin token, what answers and logs may contain."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_budget.server import GatewayState
from kling_budget.server.dashboard import SECURITY_HEADERS
from kling_budget.server.openapi import openapi_document
from tests.admin_support import (
    ADMIN_TOKEN,
    UPSTREAM_ACCESS_KEY,
    UPSTREAM_SECRET_KEY,
    SyncClient,
    auth,
    make_app,
    make_state,
    seed,
)

OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi_document()["paths"].items()
    for method, operation in item.items()
    if method != "parameters" and operation.get("security") != []
]
BODIES = {
    "/budgets": {"name": "sneaky", "limit_usd": "1"},
    "/budgets/{name}": {"limit_usd": "1"},
    "/keys": {"name": "sneaky", "project": "p"},
    "/quote": {"model": "kling-v2-6"},
}
WRONG = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    f"Basic {ADMIN_TOKEN}",
    f"Token {ADMIN_TOKEN}",
    f"Bearer {ADMIN_TOKEN}x",
    f"Bearer {ADMIN_TOKEN[:-1]}",
    f"Bearer {ADMIN_TOKEN.upper()}",
    f"Bearer {ADMIN_TOKEN} {ADMIN_TOKEN}",
    ADMIN_TOKEN,
]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[GatewayState]:
    """A seeded gateway state."""
    st = make_state(tmp_path)
    seed(st)
    yield st
    st.tracker.close()


@pytest.fixture
def client(state: GatewayState) -> Iterator[SyncClient]:
    """An in-process client of the whole gateway app."""
    c = SyncClient(make_app(state))
    yield c
    c.close()


def concrete(path: str) -> str:
    return "/admin/api" + path.replace("{name}", "account").replace("{reservation_id}", "x").replace(
        "{product}", "video"
    )


def assert_refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "the admin API needs a valid admin token: send Authorization: Bearer <token>",
        }
    }
    assert response.headers["www-authenticate"] == 'Bearer realm="admin"'
    assert ADMIN_TOKEN not in response.text and ADMIN_TOKEN not in str(response.headers)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_admin_route_refuses_a_missing_or_wrong_token(
    client: SyncClient, state: GatewayState, method: str, path: str
) -> None:
    """Each documented route answers the same 401 to every wrong token, and changes nothing."""
    budgets_before = [b.name for b in state.tracker.list_budgets()]
    for authorization in WRONG:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = client.request(method, concrete(path), headers=headers, json=BODIES.get(path))
        assert_refused(response)
    assert [b.name for b in state.tracker.list_budgets()] == budgets_before
    assert state.keys.list() == []


def test_the_openapi_document_is_public_and_holds_no_secret(client: SyncClient) -> None:
    """The API description needs no token and contains none."""
    response = client.get("/admin/api/openapi.json")
    assert response.status_code == 200 and response.json()["openapi"].startswith("3.")
    assert ADMIN_TOKEN not in response.text


def test_unknown_admin_paths_reveal_nothing_without_the_token(client: SyncClient) -> None:
    """Without the token an unknown path is the same 401 as a real one: no route discovery."""
    for path in ("/admin/api", "/admin/api/", "/admin/api/secrets", "/admin/api/budgets/x/y"):
        assert_refused(client.get(path))
        assert client.get(path, headers=auth()).status_code == 404


def test_no_admin_token_configured_disables_the_admin_api(tmp_path: Path) -> None:
    """A gateway without an admin token refuses every admin request, even one with an empty bearer."""
    state = make_state(tmp_path, token=None)
    client = SyncClient(make_app(state))
    try:
        for authorization in (None, "Bearer ", "Bearer None", "Bearer null", f"Bearer {ADMIN_TOKEN}"):
            headers = {} if authorization is None else {"Authorization": authorization}
            assert client.get("/admin/api/budgets", headers=headers).status_code == 401
    finally:
        client.close()
        state.tracker.close()


def test_the_token_is_compared_in_constant_time(
    client: SyncClient, state: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check goes through ``hmac.compare_digest`` on the whole token."""
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get("/admin/api/status", headers=auth("guess")).status_code == 401
    assert client.get("/admin/api/status", headers=auth()).status_code == 200
    assert calls and all(ADMIN_TOKEN.encode() in pair for pair in calls)


def test_an_internal_error_says_nothing_and_is_logged_without_secrets(
    client: SyncClient, state: GatewayState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected failure is a generic 500 (never its exception text); the log has the traceback only."""
    caplog.set_level(logging.DEBUG)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"database said: password={UPSTREAM_SECRET_KEY}")

    monkeypatch.setattr(state.tracker.ledger, "statuses", broken)
    response = client.get("/admin/api/budgets", headers=auth())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "password" not in response.text and UPSTREAM_SECRET_KEY not in response.text
    assert any("admin GET /budgets failed" in r.getMessage() for r in caplog.records)
    assert ADMIN_TOKEN not in caplog.text


def test_virtual_secrets_are_shown_once_and_never_logged(
    client: SyncClient, state: GatewayState, caplog: pytest.LogCaptureFixture
) -> None:
    """Key secrets appear in the create and rotate answers only; no answer, error or log line holds the admin
    token, a virtual secret, the real Kling secret or the master key."""
    caplog.set_level(logging.DEBUG)
    created = client.post("/admin/api/keys", headers=auth(), json={"name": "app", "project": "p1", "kind": "both"})
    rotated = client.post("/admin/api/keys/app/rotate", headers=auth())
    assert created.status_code == 201 and rotated.status_code == 200
    first, second = created.json(), rotated.json()
    secrets = [first[k] for k in ("secret_key", "api_key", "webhook_secret")]
    secrets += [second[k] for k in ("secret_key", "api_key", "webhook_secret")]
    assert all(secrets) and len(set(secrets)) == 6
    others = [
        client.get("/admin/api/keys", headers=auth()),
        client.get("/admin/api/keys/app", headers=auth()),
        client.post("/admin/api/keys/app/revoke", headers=auth()),
        client.post("/admin/api/keys/app/rotate", headers=auth()),
        client.post("/admin/api/keys", headers=auth(), json={"name": "app", "project": "p1"}),
        client.post("/admin/api/keys", headers=auth(), json={"name": "x", "project": "p", "secret_key": secrets[0]}),
        client.get("/admin/api/reservations", headers=auth()),
        client.get("/admin/api/alerts", headers=auth()),
        client.get("/admin/api/status", headers=auth()),
        client.get("/admin/api/budgets", headers=auth(secrets[0])),
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/dashboard"),
    ]
    master_key = (state.config.home / "master.key").read_text().strip()  # type: ignore[operator]
    texts = [r.text + str(r.headers) for r in others]
    texts += [repr(state), repr(state.config), repr(state.keys)]
    texts += [r.getMessage() + str(r.__dict__) for r in caplog.records]
    blob = "\n".join(texts)
    for secret in [*secrets, ADMIN_TOKEN, UPSTREAM_SECRET_KEY, master_key]:
        assert secret not in blob
    assert "unknown field 'secret_key'" in others[5].text
    assert UPSTREAM_ACCESS_KEY not in blob


def test_dashboard_is_served_with_a_strict_content_security_policy(client: SyncClient) -> None:
    """The page, its script and style forbid inline code, other origins and framing."""
    for path in ("/dashboard", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"):
        response = client.get(path)
        assert response.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
    page = client.get("/dashboard").text
    assert "<script>" not in page and "style=" not in page and "on" + "click" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "no external asset"
    script = client.get("/dashboard/static/dashboard.js").text
    assert "innerHTML" not in script and "eval(" not in script and "http://" not in script.replace(SVG_NS, "")
    assert "localStorage" not in script


SVG_NS = "http://www.w3.org/2000/svg"


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/../admin.py",
        "/dashboard/static/%2e%2e%2fadmin.py",
        "/dashboard/static/..%2F..%2Fpyproject.toml",
        "/dashboard/static/dashboard.html.bak",
        "/dashboard/static/",
        "/dashboard/static/__init__.py",
    ],
)
def test_static_files_are_an_allow_list(client: SyncClient, path: str) -> None:
    """Only the dashboard's own assets are served; no path reaches another file."""
    response = client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text
