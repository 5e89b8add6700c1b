"""Kling's 2026 design in the protocol core and the price table: model in the path, /tasks, billing ledgers."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_budget.errors import (
    InvalidInputError,
    KlingAmbiguousCreateError,
    KlingTaskNotFoundError,
    UnknownModelError,
    UnsupportedOptionError,
)
from kling_budget.kling import KlingClient, TaskStatus, bodies, parse_task
from kling_budget.kling.tasks import ChargeType
from kling_budget.pricing import PriceTable, quote_kling_request

T2V = "/text-to-video/kling-3.0"


def envelope(data: Any, code: int = 0, status: int = 200) -> httpx.Response:
    """Kling's envelope around ``data``."""
    return httpx.Response(
        status, json={"code": code, "message": "SUCCEED" if code == 0 else "x", "request_id": "r", "data": data}
    )


def client(handler: Any) -> KlingClient:
    """A client on a mock transport with instant backoff."""
    return KlingClient(
        api_key="key", base_url="http://kling.test", transport=httpx.MockTransport(handler), sleep=lambda _s: None
    )


def item(task_id: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    """A task item of the 2026 design."""
    return {"id": task_id, "status": status, "create_time": 1, "update_time": 2, **extra}


def test_create_sends_options_and_reads_the_new_shape() -> None:
    """A 2026 create puts external_task_id under options and returns the task from {id, status}."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope({"id": "t1", "status": "submitted", "external_id": "mine"})

    with client(answer) as kling:
        task = kling.create_video_from_text("kling-3.0", "a fox", duration=5, external_task_id="mine")
    body = json.loads(seen[0].content)
    assert seen[0].url.path == T2V and seen[0].headers["authorization"] == "Bearer key"
    assert body == {
        "contents": [{"type": "prompt", "text": "a fox"}],
        "settings": {"duration": 5},
        "options": {"external_task_id": "mine"},
    }
    assert (task.task_id, task.status, task.external_task_id, task.endpoint) == (
        "t1",
        TaskStatus.SUBMITTED,
        "mine",
        T2V,
    )


def test_get_task_on_a_2026_path_queries_tasks() -> None:
    """A task made on a 2026 path is queried with GET /tasks?task_ids= (a list answer); absent → not found."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.params.get("task_ids") == "t1":
            return envelope([item("t1", billing=[{"charge_type": "unit", "amount": "3", "package_type": "video"}])])
        return envelope([])

    with client(answer) as kling:
        task = kling.get_task("t1", endpoint=T2V)
        assert task.charged_units_milli == 3000 and task.endpoint == T2V
        with pytest.raises(KlingTaskNotFoundError):
            kling.get_task(external_task_id="nope", endpoint=T2V)
    assert asked == ["http://kling.test/tasks?task_ids=t1", "http://kling.test/tasks?external_task_ids=nope"]


def test_an_ambiguous_2026_create_is_found_by_external_id_on_tasks() -> None:
    """5002 on a 2026 create: the task is looked up on /tasks by external id before anything is resent."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return envelope(None, code=5002, status=504)
        return envelope([item("t9", status="submitted", external_id=request.url.params["external_task_ids"])])

    with client(answer) as kling:
        task = kling.create_video_from_image("kling-2.6", "https://x.invalid/a.png", external_task_id="once")
    assert task.task_id == "t9" and calls == ["POST /image-to-video/kling-2.6", "GET /tasks"]


def test_an_ambiguous_2026_create_kling_never_saw_is_resent_with_the_same_id() -> None:
    """Not found after 5002 → resubmitted with the same external id; never found → ambiguous, id kept."""
    posts: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(json.loads(request.content))
            return envelope(None, code=5002, status=504)
        return envelope([])

    with client(answer) as kling, pytest.raises(KlingAmbiguousCreateError) as caught:
        kling.create_omni_video("kling-3.0-omni", [{"type": "prompt", "text": "x"}], external_task_id="same")
    assert {p["options"]["external_task_id"] for p in posts} == {"same"} and len(posts) == 4
    assert caught.value.external_task_id == "same"


def test_get_tasks_and_find_tasks() -> None:
    """get_tasks batches one kind of id; find_tasks posts the range, filters and cursor and pages."""
    bodies_seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            ids = request.url.params["task_ids"].split(",")
            return envelope([item(i) for i in ids])
        bodies_seen.append(json.loads(request.content))
        more = "cursor" not in bodies_seen[-1]
        return envelope(
            {"result": [item("a"), item("b")], "count": 2, "next_cursor": "c2" if more else "", "has_more": more}
        )

    with client(answer) as kling:
        assert [t.task_id for t in kling.get_tasks(["x", "y"])] == ["x", "y"]
        with pytest.raises(InvalidInputError):
            kling.get_tasks(["x"], external_task_ids=["y"])
        with pytest.raises(InvalidInputError, match="at most 50"):
            kling.get_tasks([str(i) for i in range(51)])
        first = kling.find_tasks(start_time=1000, end_time=2000, status="succeeded", product_type=["video"], limit=2)
        second = kling.find_tasks(cursor=first.next_cursor)
        with pytest.raises(InvalidInputError, match="limit"):
            kling.find_tasks(limit=501)
    assert first.next_cursor == "c2" and first.has_more and second.next_cursor is None
    assert bodies_seen[0] == {
        "limit": 2,
        "start_time": 1000,
        "end_time": 2000,
        "filters": [{"key": "status", "values": ["succeeded"]}, {"key": "product_type", "values": ["video"]}],
    }
    assert bodies_seen[1] == {"cursor": "c2", "limit": 100}


def test_billing_ledgers_are_parsed_exactly() -> None:
    """Package rows are unit deductions, balance rows cash with their currency; amounts stay exact."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/package"):
            row = {"task_id": "t1", "package_id": "p", "product_type": "video", "deduction_amount": "2.5",
                   "unit_after_deduction": "7.5", "deduction_time": 1700000000000}  # fmt: skip
        else:
            row = {"task_id": "t2", "cash_type": "balance", "deduction_amount": "0.56", "currency": "USD",
                   "list_price": "0.84", "balance_before_deduction": "5"}  # fmt: skip
        return envelope({"result": [row], "count": 1, "next_cursor": "", "has_more": False})

    with client(answer) as kling:
        units = kling.get_billing_package(0, 10).records[0]
        cash = kling.get_billing_balance(0, 10).records[0]
        with pytest.raises(InvalidInputError, match="start_time and end_time"):
            kling.get_billing_package()
    assert (units.task_id, units.charge_type, units.amount, units.product_type) == (
        "t1",
        ChargeType.UNIT,
        Decimal("2.5"),
        "video",
    )
    assert (cash.charge_type, cash.amount, cash.currency, cash.list_price) == (
        ChargeType.CASH,
        Decimal("0.56"),
        "USD",
        Decimal("0.84"),
    )


def test_a_zero_billing_row_without_charge_type_is_no_charge() -> None:
    """Kling's [{"amount": "0"}] on a task that failed before generation parses as nothing charged."""
    task = parse_task(item("t", status="failed", billing=[{"amount": "0"}]))
    assert task.charged_units_milli == 0
    running = parse_task(item("t", status="processing"))
    assert running.charged_units_milli is None  # no billing yet is "not yet", not zero


# ------------------------------------------------------------------------------------------ pricing


@pytest.fixture(scope="module")
def table() -> PriceTable:
    """The packaged price table."""
    return PriceTable.default()


@pytest.mark.parametrize(
    ("create", "units"),
    [
        (bodies.video_from_text("kling-3.0", "x", resolution="1080p", duration=5, audio="native"), "6"),
        (bodies.video_from_text("kling-3.0", "x", resolution="720p", duration=15), "9"),
        (bodies.video_from_image("kling-2.6", "i", resolution="1080p", duration=10, audio="native"), "10"),
        (bodies.video_from_text("kling-2.5-turbo", "x", resolution="720p", duration=5), "1.5"),
        (
            bodies.omni_video(
                "kling-3.0-omni", [{"type": "feature_video", "url": "v"}], resolution="1080p", duration=5
            ),
            "6",
        ),
        (bodies.omni_video("kling-o1", [{"type": "prompt", "text": "x"}], resolution="720p", duration=10), "6"),
    ],
)
def test_2026_requests_are_priced_from_path_and_settings(table: PriceTable, create: bodies.Create, units: str) -> None:
    """The model comes from the path, resolution/duration/audio/video input from settings and contents."""
    assert quote_kling_request(table, create.path, create.body).units == Decimal(units)


def test_2026_requests_that_leave_the_price_open_hold_the_dearest_reading(table: PriceTable) -> None:
    """No resolution: the highest priced; a base video or motion control: the longest accepted input."""
    plain = bodies.video_from_text("kling-3.0", "x", duration=5)
    open_resolution = quote_kling_request(table, plain.path, plain.body)
    assert open_resolution.units == Decimal("15") and open_resolution.params["worst_case"] is True
    edit = bodies.omni_video("kling-3.0-omni", [{"type": "base_video", "url": "v"}], resolution="720p", duration=3)
    assert quote_kling_request(table, edit.path, edit.body).units == Decimal("13.5")  # 15 s × 0.9
    assert quote_kling_request(table, edit.path, edit.body, input_duration=4).units == Decimal("3.6")
    motion = bodies.motion_control("kling-3.0", "i", "v", resolution="1080p")
    assert quote_kling_request(table, motion.path, motion.body).units == Decimal("36")  # 30 s × 1.2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [{"type": "prompt", "text": "x"}], "settings": {"fps": 60}}, "settings field 'fps'"),
        ({"contents": [{"type": "prompt", "text": "x"}], "model_name": "kling-v1"}, "body field 'model_name'"),
        ({"contents": [{"type": "upscale", "url": "x"}]}, "contents item type 'upscale'"),
        ({"contents": [{"type": "prompt", "text": "x"}], "settings": {"duration": "1e999999"}}, "settings.duration"),
        ({"contents": [{"type": "prompt", "text": "x"}], "settings": {"duration": 9999}}, "settings.duration"),
        ({"contents": [{"type": "prompt", "text": "x"}], "settings": {"audio": "loud"}}, "settings.audio"),
        ({"contents": "x"}, "contents must be a list"),
        ({"options": {"priority": "high"}}, "options field 'priority'"),
    ],
)
def test_2026_fields_that_are_not_priced_are_refused(table: PriceTable, body: dict[str, Any], message: str) -> None:
    """Anything the price table does not understand is refused, never priced as if absent."""
    with pytest.raises(UnsupportedOptionError, match=message):
        quote_kling_request(table, T2V, body)


def test_an_unknown_model_in_the_path_is_refused(table: PriceTable) -> None:
    """A model the table does not price is an error naming the priced models."""
    with pytest.raises(UnknownModelError, match="kling-9"):
        quote_kling_request(table, "/text-to-video/kling-9", {"contents": [{"type": "prompt", "text": "x"}]})
