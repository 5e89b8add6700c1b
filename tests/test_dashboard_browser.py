"""The dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright).

A gateway with a seeded month is served on loopback; the page must ask for the admin token, show the same
exact numbers as the admin API, follow the filters, pick up a new job by itself, load nothing from another
origin and never turn ledger text into markup. One browser serves the whole module.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_budget.server import GatewayState
from tests.admin_support import ADMIN_TOKEN, auth, make_app, make_state, seed, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def _require_browser() -> Any:
    """Playwright's sync API, or a skip — except in CI, where a missing browser fails loudly."""
    problem = None
    if not os.path.exists(CHROMIUM):
        problem = f"{CHROMIUM} is missing (bash scripts/test installs Debian's chromium when run as root)"
    try:
        from playwright import sync_api
    except ImportError:
        problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {problem}", pytrace=False)
        pytest.skip(problem)
    return sync_api


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GatewayState]]:
    """A seeded gateway on loopback: (base URL, state)."""
    state = make_state(Path(tmp_path_factory.mktemp("dashboard")))
    seed(state)
    with serve(make_app(state)) as base_url:
        yield base_url, state
    state.tracker.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, gateway: tuple[str, GatewayState]) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that records every request and script error."""
    base_url, _ = gateway
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, timezone_id="UTC", locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.requests = []
    tab.errors = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    assert tab.errors == []
    foreign = [url for url in tab.requests if not url.startswith(base_url)]
    assert foreign == [], "the dashboard loaded something from another origin"
    context.close()


def api(gateway: tuple[str, GatewayState], path: str, **params: str) -> Any:
    """The admin API's answer, for comparison with the page."""
    base_url, _ = gateway
    response = httpx.get(base_url + "/admin/api" + path, params=params, headers=auth(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(page: Any, base_url: str, query: str = "") -> None:
    """Open the dashboard and give it the admin token; wait for the first load."""
    page.goto(f"{base_url}/dashboard{query}")
    page.get_by_label("Token", exact=True).fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("body[data-loaded]")


def loaded_marker(page: Any) -> str:
    return str(page.get_attribute("body", "data-loaded"))


def wait_for(page: Any, expression: str, timeout: float = TIMEOUT_MS / 1000) -> Any:
    """Poll a JavaScript expression until it is truthy (``wait_for_function`` would need CSP's unsafe-eval)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {expression}")
        time.sleep(0.05)


def wait_reloaded(page: Any, before: str) -> None:
    """Wait until the page finished a refresh after the one marked ``before``."""
    wait_for(page, f"document.body.getAttribute('data-loaded') !== '{before}'")


def texts(page: Any, selector: str) -> list[str]:
    """Text of every element matching ``selector`` (SVG text too)."""
    return [str(t) for t in page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")]


def values(page: Any, selector: str, field: str) -> list[str]:
    """The exact amounts the page shows in ``field`` cells under ``selector``."""
    return [
        str(v)
        for v in page.eval_on_selector_all(f"{selector} [data-field='{field}']", "els => els.map(e => e.dataset.value)")
    ]


def test_asks_for_the_token_once_and_refuses_a_wrong_one(page: Any, gateway: tuple[str, GatewayState]) -> None:
    """A wrong token is refused with a message; the right one loads data and survives a reload."""
    base_url, _ = gateway
    page.goto(base_url + "/")
    assert page.url == base_url + "/dashboard"
    assert page.get_by_role("dialog").is_visible()
    page.get_by_label("Token", exact=True).fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in page.inner_text("#login-error")
    page.get_by_label("Token", exact=True).fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("body[data-loaded]")
    assert not page.get_by_role("dialog").is_visible()
    assert page.evaluate("sessionStorage.getItem('kling-budget.admin-token')") == ADMIN_TOKEN
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    page.wait_for_selector("body[data-loaded]")
    assert not page.get_by_role("dialog").is_visible()
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("dialog").is_visible()
    assert page.evaluate("sessionStorage.getItem('kling-budget.admin-token')") is None


def test_numbers_match_the_admin_api(page: Any, gateway: tuple[str, GatewayState], tmp_path: Path) -> None:
    """Budgets, tiles, jobs, holds and alerts show the API's exact strings; a screenshot is taken."""
    base_url, _ = gateway
    sign_in(page, base_url)
    budgets = api(gateway, "/budgets")["budgets"]
    assert page.eval_on_selector_all("#budgets tbody tr", "rows => rows.map(r => r.dataset.budget)") == [
        b["name"] for b in budgets
    ]
    for budget in budgets:
        row = f"#budgets tr[data-budget='{budget['name']}']"
        assert values(page, row, "percent") == [budget["percent"]]
        for kind in ("limit", "committed", "held", "remaining"):
            if budget["limit_usd"] is not None:
                assert values(page, row, f"{kind}_usd") == [budget[f"{kind}_usd"]], (budget["name"], kind)
            if budget["limit_units"] is not None:
                assert values(page, row, f"{kind}_units") == [budget[f"{kind}_units"]], (budget["name"], kind)
    account = page.locator("#budgets tr[data-budget='account']")
    assert "$4.34" in account.inner_text() and "$54.75" in account.inner_text()
    assert "$17.13 by window end" in account.inner_text()

    usage = api(gateway, "/usage", group_by="pack_type", period="month", timezone="UTC")
    assert values(page, "#t-committed", "committed_usd") == [usage["totals"]["committed_usd"]] == ["4.34"]
    assert values(page, "#t-held", "held_usd") == [usage["totals"]["held_usd"]]
    holds = api(gateway, "/holds", limit="50")
    assert values(page, "#t-holds", "holds_usd") == [holds["held_usd"]] == ["0.91"]
    assert values(page, "#holds", "held_usd") == [h["held_usd"] for h in holds["holds"]]

    jobs = api(gateway, "/reservations", limit="15")["reservations"]
    assert page.eval_on_selector_all("#jobs tbody tr", "rows => rows.map(r => r.dataset.job)") == [
        j["id"] for j in jobs
    ]
    assert values(page, "#jobs", "cost_usd") == [j["cost_usd"] for j in jobs]
    # Jobs lead with the Kling task id the client holds, the reservation id beside it.
    assert texts(page, "#jobs .job-ref") == [j["task_id"] or j["id"] for j in jobs]
    assert "task-sub-1" in texts(page, "#jobs .job-ref") and "task-sub-1" in texts(page, "#holds .job-ref")
    submitted = page.locator("#jobs tr", has=page.locator("[data-task='task-sub-1']"))
    (reservation,) = [j["id"] for j in jobs if j["task_id"] == "task-sub-1"]
    assert f"reservation {reservation}" in submitted.inner_text()
    assert values(page, "#jobs", "cost_units") == [j["cost_units"] for j in jobs]
    alerts = api(gateway, "/alerts", limit="15")["alerts"]
    assert page.locator("#alerts li").count() == len(alerts) >= 1
    assert "overage" in page.inner_text("#alerts")

    chart = page.locator("#chart svg")
    assert chart.get_attribute("role") == "img"
    assert texts(page, "#chart .limit-label") == ["account $60.00"]
    assert page.locator("#chart .area-committed").count() == 1
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_filters_change_what_is_shown(page: Any, gateway: tuple[str, GatewayState]) -> None:
    """Project, user, model and period filters narrow every panel and land in the URL."""
    base_url, _ = gateway
    sign_in(page, base_url)
    before = loaded_marker(page)
    page.get_by_label("Project", exact=True).select_option("research")
    wait_reloaded(page, before)
    assert "project=research" in page.url
    names = page.eval_on_selector_all("#budgets tbody tr", "rows => rows.map(r => r.dataset.budget)")
    assert names == [b["name"] for b in api(gateway, "/budgets", project="research")["budgets"]]
    assert "marketing" not in names and "research-total" in names
    projects = page.eval_on_selector_all(
        "#jobs tbody tr td:nth-child(3)", "cells => cells.map(c => c.firstChild.textContent)"
    )
    assert projects and set(projects) == {"research"}
    usage = api(gateway, "/usage", group_by="pack_type", period="month", timezone="UTC", project="research")
    assert values(page, "#t-committed", "committed_usd") == [usage["totals"]["committed_usd"]] == ["1.54"]

    before = loaded_marker(page)
    page.get_by_label("Period", exact=True).select_option("today")
    wait_reloaded(page, before)
    today = api(gateway, "/usage", group_by="pack_type", period="today", timezone="UTC", project="research")
    assert values(page, "#t-committed", "committed_usd") == [today["totals"]["committed_usd"]] == ["0.42"]
    assert "period=today" in page.url

    page.get_by_label("Project", exact=True).select_option("")
    page.get_by_label("User", exact=True).select_option("alice")
    expected = ",".join(b["name"] for b in api(gateway, "/budgets", user="alice")["budgets"])
    wait_for(
        page,
        "Array.from(document.querySelectorAll('#budgets tbody tr')).map(r => r.dataset.budget).join() === "
        f"'{expected}' && document.querySelectorAll('#chart .limit-label').length === 1",
    )
    assert texts(page, "#chart .limit-label") == ["alice-daily $3.00"]

    page.get_by_label("User", exact=True).select_option("")
    page.get_by_label("Model", exact=True).select_option("kling-v2-1")
    wait_for(
        page,
        "document.querySelectorAll('#jobs tbody tr').length > 0 && Array.from(document.querySelectorAll("
        "'#jobs tbody tr td:nth-child(4)')).every(c => c.textContent === 'kling-v2-1')",
    )
    page.reload()
    page.wait_for_selector("body[data-loaded]")
    assert page.get_by_label("Model", exact=True).input_value() == "kling-v2-1"
    assert page.get_by_label("Period", exact=True).input_value() == "today"


def test_auto_refresh_picks_up_a_new_job(page: Any, gateway: tuple[str, GatewayState]) -> None:
    """Within a couple of refresh periods a newly recorded job shows, with the new totals and a new time."""
    base_url, state = gateway
    sign_in(page, base_url, "?refresh=1")
    assert re.match(r"Updated at \d\d:\d\d:\d\d · every 1 s", page.inner_text("#updated"))
    first = loaded_marker(page)
    before_total = values(page, "#t-committed", "committed_usd")
    state.tracker.record_usage("fresh-job-1", 10, "kling-v2-6", "dave", "marketing", mode="pro")
    page.wait_for_selector("#jobs tr[data-job='fresh-job-1']", timeout=5_000)
    after = api(gateway, "/usage", group_by="pack_type", period="month", timezone="UTC")["totals"]["committed_usd"]
    assert after != before_total[0]
    wait_for(page, f"document.querySelector('#t-committed [data-field]').dataset.value === '{after}'", timeout=5_000)
    assert loaded_marker(page) != first
    page.get_by_role("button", name="Pause auto-refresh").click()
    assert "paused" in page.inner_text("#updated") or page.get_attribute("#pause", "aria-pressed") == "true"


def test_ledger_text_is_never_markup(page: Any, gateway: tuple[str, GatewayState]) -> None:
    """A project named like an HTML tag is shown as text; no script from it runs (and CSP forbids inline)."""
    base_url, state = gateway
    evil = '<img src=x onerror="window.__pwned=1">'
    state.tracker.record_usage("evil-job", 5, "kling-v2-1", "mallory", evil, mode="std")
    sign_in(page, base_url)
    row = page.locator("#jobs tr[data-job='evil-job']")
    assert evil in row.inner_text()
    assert page.locator("#jobs img").count() == 0
    assert page.evaluate("window.__pwned") is None
    response = page.request.get(base_url + "/dashboard")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
