"""KlingClient / AsyncKlingClient against httpx.MockTransport: errors, retries, auth, parsing, safe create."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_budget.errors import (
    ConfigurationError,
    InvalidInputError,
    KlingAccountError,
    KlingAmbiguousCreateError,
    KlingAPIError,
    KlingAuthError,
    KlingConnectError,
    KlingPackExhaustedError,
    KlingParameterError,
    KlingPolicyError,
    KlingRateLimitError,
    KlingServerError,
    KlingTaskNotFoundError,
    KlingTransportError,
    KlingWaitTimeoutError,
)
from kling_budget.kling import (
    REGIONS,
    AsyncKlingClient,
    ChargeType,
    Endpoint,
    KlingClient,
    Task,
    TaskStatus,
    parse_task,
)
from kling_budget.kling.jwt import decode_token
from kling_budget.kling.retry import (
    MAX_DELAY,
    RATE_LIMIT_MIN_DELAY,
    Disposition,
    backoff,
    classify,
    delay_for,
    should_retry,
)

ACCESS_KEY = "AK-test-id"
SECRET_KEY = "sk-very-secret-4f2c9a"
API_KEY = "kling-api-key-b81e77"
NOW = 1_790_000_000.0
T2V = "/v1/videos/text2video"


# -- helpers ---------------------------------------------------------------------------------------------


class FakeClock:
    """Unix seconds that only move when sleep() is called or a test advances them."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Kling:
    """A scripted MockTransport handler: answers requests in order and records them."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def ok(data: Any, request_id: str = "req-ok") -> httpx.Response:
    return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data})


def err(code: int, status: int = 400, message: str = "nope", request_id: str = "req-err") -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "request_id": request_id, "data": None})


def task_data(
    status: str = "submitted", task_id: str = "860001", external: str | None = "ext-1", **more: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": task_id,
        "task_status": status,
        "task_info": {"external_task_id": external} if external else {},
        "created_at": 1774805076166,
        "updated_at": 1774805076166,
    }
    data.update(more)
    return data


def make_client(kling: Kling, clock: FakeClock | None = None, **options: Any) -> KlingClient:
    clock = clock or FakeClock()
    options.setdefault("jitter", lambda: 0.5)
    return KlingClient(
        ACCESS_KEY,
        SECRET_KEY,
        base_url="https://kling.test",
        transport=httpx.MockTransport(kling),
        clock=clock,
        sleep=clock.sleep,
        **options,
    )


def created(kling: Kling, path: str = T2V) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in kling.requests if r.method == "POST" and r.url.path == path]


# -- error mapping --------------------------------------------------------------------------------------

CODES = [
    (1000, 401, KlingAuthError),
    (1001, 401, KlingAuthError),
    (1002, 401, KlingAuthError),
    (1003, 401, KlingAuthError),
    (1100, 429, KlingAccountError),
    (1101, 429, KlingAccountError),
    (1102, 429, KlingPackExhaustedError),
    (1103, 403, KlingAccountError),
    (1200, 400, KlingParameterError),
    (1201, 400, KlingParameterError),
    (1202, 404, KlingParameterError),
    (1203, 404, KlingParameterError),
    (1300, 400, KlingPolicyError),
    (1301, 400, KlingPolicyError),
    (1304, 429, KlingPolicyError),
]


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
def test_definite_codes_map_to_their_class_without_retry(code: int, status: int, cls: type[KlingAPIError]) -> None:
    """Each non-retryable business code raises its class at once, keeping code, status and request id."""
    kling = Kling(err(code, status, "Kling says no", "rid-7"))
    with make_client(kling) as client, pytest.raises(cls) as info:
        client.list_tasks()
    exc = info.value
    assert type(exc) is cls
    assert (exc.code, exc.http_status, exc.request_id) == (code, status, "rid-7")
    assert str(exc).startswith(f"Kling error {code} (")
    assert str(exc).endswith("): Kling says no [request_id=rid-7]")
    assert len(kling.requests) == 1


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        (1302, 429, KlingRateLimitError),
        (1303, 429, KlingRateLimitError),
        (5000, 500, KlingServerError),
        (5001, 503, KlingServerError),
        (5002, 504, KlingServerError),
    ],
)
def test_retryable_codes_are_retried_then_raised(code: int, status: int, cls: type[KlingAPIError]) -> None:
    """Throttling and server codes on a query are retried max_retries times, then raised."""
    kling = Kling(*[err(code, status) for _ in range(4)])
    clock = FakeClock()
    with make_client(kling, clock) as client, pytest.raises(cls) as info:
        client.list_tasks()
    assert info.value.code == code
    assert len(kling.requests) == 4
    assert len(clock.sleeps) == 3


def test_pack_exhausted_message_is_one_line() -> None:
    """The 1102 message follows the documented one-line format."""
    kling = Kling(err(1102, 429, "Resource pack depleted or expired\n(prepaid scenario)", "abc"))
    with make_client(kling) as client, pytest.raises(KlingPackExhaustedError) as info:
        client.create_text_to_video(prompt="fox")
    assert str(info.value) == (
        "Kling error 1102 (resource pack depleted or expired): "
        "Resource pack depleted or expired (prepaid scenario) [request_id=abc]"
    )


def test_http_429_is_told_apart_by_code() -> None:
    """HTTP 429 alone decides nothing: 1102 is an account error, 1303 a rate limit."""
    kling = Kling(err(1102, 429), err(1303, 429), ok([]))
    with make_client(kling) as client:
        with pytest.raises(KlingPackExhaustedError):
            client.list_tasks()
        assert client.list_tasks() == []


@pytest.mark.parametrize(
    ("code", "cls"),
    [(1050, KlingAuthError), (1150, KlingAccountError), (1299, KlingParameterError), (9999, KlingAPIError)],
)
def test_unknown_codes_fall_back_by_range(code: int, cls: type[KlingAPIError]) -> None:
    """Undocumented codes map by their range, or to the base class."""
    with make_client(Kling(err(code))) as client, pytest.raises(cls) as info:
        client.list_tasks()
    assert type(info.value) is cls
    assert "unknown error code" in str(info.value)


def test_task_query_1203_is_task_not_found() -> None:
    """1203 on a single-task query raises KlingTaskNotFoundError (a KlingParameterError)."""
    with make_client(Kling(err(1203, 404))) as client, pytest.raises(KlingTaskNotFoundError) as info:
        client.get_task("42")
    assert isinstance(info.value, KlingParameterError)


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, content=b'{"code":0,"message":"SUCCEED","data":{"task_id":"8'),
        httpx.Response(200, json={"message": "no code here"}),
        httpx.Response(200, content=b""),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("connection reset"),
    ],
    ids=["html-502", "truncated-json", "no-code", "empty", "read-timeout", "truncated-stream", "reset"],
)
def test_unusable_answers_are_transport_errors(reply: Reply) -> None:
    """Non-JSON, truncated, codeless and lost answers raise KlingTransportError after the retries."""
    kling = Kling(*[reply] * 4)
    with make_client(kling) as client, pytest.raises(KlingTransportError) as info:
        client.get_task("1")
    assert info.value.code is None
    assert len(kling.requests) == 4
    assert "\n" not in str(info.value)


def test_connect_failure_is_a_connect_error() -> None:
    """A refused connection raises KlingConnectError (never sent)."""
    kling = Kling(*[httpx.ConnectError("refused")] * 4)
    with make_client(kling) as client, pytest.raises(KlingConnectError):
        client.get_task("1")


def test_transport_error_then_success_on_query() -> None:
    """A query that times out once succeeds on the retry."""
    kling = Kling(httpx.ReadTimeout("slow"), ok(task_data("processing")))
    with make_client(kling) as client:
        assert client.get_task("860001").status is TaskStatus.PROCESSING
    assert len(kling.requests) == 2


# -- retry policy (pure) ----------------------------------------------------------------------------------


def _e(cls: type[KlingAPIError], code: int | None = None) -> KlingAPIError:
    return cls("x", code=code)


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (_e(KlingRateLimitError, 1302), True, Disposition.RETRY),
        (_e(KlingRateLimitError, 1303), False, Disposition.RETRY),
        (_e(KlingServerError, 5000), True, Disposition.RETRY),
        (_e(KlingServerError, 5001), True, Disposition.RETRY),
        (_e(KlingServerError, 5002), True, Disposition.RETRY),
        (_e(KlingServerError, 5000), False, Disposition.AMBIGUOUS),
        (_e(KlingServerError, 5002), False, Disposition.AMBIGUOUS),
        (_e(KlingTransportError), True, Disposition.RETRY),
        (_e(KlingTransportError), False, Disposition.AMBIGUOUS),
        (_e(KlingConnectError), False, Disposition.RETRY),
        (_e(KlingPackExhaustedError, 1102), False, Disposition.FAIL),
        (_e(KlingParameterError, 1201), True, Disposition.FAIL),
        (_e(KlingPolicyError, 1301), False, Disposition.FAIL),
        (_e(KlingAuthError, 1004), True, Disposition.FAIL),
    ],
)
def test_classify_case_by_case(error: KlingAPIError, idempotent: bool, expected: Disposition) -> None:
    """Each failure kind has one disposition for queries and one for creates."""
    assert classify(error, idempotent=idempotent) is expected


@pytest.mark.parametrize(
    ("error", "attempt", "max_retries", "idempotent", "expected"),
    [
        (_e(KlingServerError, 5000), 1, 3, True, True),
        (_e(KlingServerError, 5000), 3, 3, True, True),
        (_e(KlingServerError, 5000), 4, 3, True, False),
        (_e(KlingServerError, 5000), 1, 0, True, False),
        (_e(KlingServerError, 5002), 1, 3, False, False),
        (_e(KlingTransportError), 1, 3, False, False),
        (_e(KlingRateLimitError, 1303), 1, 3, False, True),
        (_e(KlingPackExhaustedError, 1102), 1, 3, True, False),
    ],
)
def test_should_retry_case_by_case(
    error: KlingAPIError, attempt: int, max_retries: int, idempotent: bool, expected: bool
) -> None:
    """should_retry is bounded by max_retries and never resends an ambiguous create."""
    assert should_retry(error, attempt=attempt, max_retries=max_retries, idempotent=idempotent) is expected


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    """With jitter pinned at 1 the ceiling doubles per attempt and stops at the cap."""
    assert [backoff(a, jitter=lambda: 1.0) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff(3, jitter=lambda: 0.0) == 0.0


@given(attempt=st.integers(min_value=1, max_value=60), draw=st.floats(min_value=0, max_value=0.999999))
def test_backoff_stays_within_bounds(attempt: int, draw: float) -> None:
    """Full jitter keeps every delay in [0, cap], and throttling delays at or above one second."""
    delay = backoff(attempt, jitter=lambda: draw)
    assert 0.0 <= delay <= MAX_DELAY
    throttled = delay_for(KlingRateLimitError("x", code=1303), attempt, jitter=lambda: draw)
    assert RATE_LIMIT_MIN_DELAY <= throttled <= MAX_DELAY


def test_rate_limited_query_backs_off_at_least_a_second() -> None:
    """A 1303 on a query sleeps >= 1 s before retrying (Kling's concurrency guide)."""
    clock = FakeClock()
    kling = Kling(err(1303, 429), err(1303, 429), ok([]))
    with make_client(kling, clock, jitter=lambda: 0.0) as client:
        client.list_tasks()
    assert clock.sleeps == [1.0, 1.0]


def test_max_retries_zero_means_one_attempt() -> None:
    """max_retries=0 sends a failing query once."""
    kling = Kling(err(5000, 500))
    with make_client(kling, max_retries=0) as client, pytest.raises(KlingServerError):
        client.list_tasks()
    assert len(kling.requests) == 1


# -- authentication ------------------------------------------------------------------------------------


def _token(request: httpx.Request) -> str:
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def test_jwt_claims_and_header() -> None:
    """Requests carry Bearer HS256 JWTs with iss, exp=now+1800 and nbf=now-5."""
    kling = Kling(ok([]))
    with make_client(kling) as client:
        client.list_tasks()
    claims = decode_token(_token(kling.requests[0]), SECRET_KEY, now=int(NOW))
    assert (claims.issuer, claims.expires_at, claims.not_before) == (
        ACCESS_KEY,
        int(NOW) + 1800,
        int(NOW) - 5,
    )


def test_jwt_is_cached_and_renewed_before_expiry() -> None:
    """The token is reused until 60 s before it expires, then re-signed."""
    clock = FakeClock()
    kling = Kling(ok([]), ok([]), ok([]))
    with make_client(kling, clock) as client:
        client.list_tasks()
        clock.now += 1800 - 61
        client.list_tasks()
        clock.now += 1
        client.list_tasks()
    first, second, third = (_token(r) for r in kling.requests)
    assert first == second
    assert third != second
    assert decode_token(third, SECRET_KEY, now=int(clock.now)).expires_at == int(clock.now) + 1800


def test_expired_token_is_resigned_and_retried_once() -> None:
    """Code 1004 re-signs the JWT and resends once; the retry carries a fresh token."""
    clock = FakeClock()
    kling = Kling(ok([]), err(1004, 401), ok([task_data()]))
    with make_client(kling, clock) as client:
        client.list_tasks()
        clock.now += 100
        tasks = client.list_tasks()
    assert len(tasks) == 1
    assert _token(kling.requests[1]) == _token(kling.requests[0])
    assert _token(kling.requests[2]) != _token(kling.requests[1])
    assert clock.sleeps == []


def test_second_expired_answer_raises() -> None:
    """A second 1004 in a row raises KlingAuthError (re-sign happens once)."""
    kling = Kling(err(1004, 401), err(1004, 401))
    with make_client(kling) as client, pytest.raises(KlingAuthError) as info:
        client.list_tasks()
    assert info.value.code == 1004
    assert len(kling.requests) == 2


def test_api_key_is_sent_as_bearer_and_not_resigned() -> None:
    """An API key goes out as-is; a 1004 with it is raised without a retry."""
    kling = Kling(ok([]), err(1004, 401))
    with KlingClient(api_key=API_KEY, base_url="https://kling.test", transport=httpx.MockTransport(kling)) as c:
        c.list_tasks()
        with pytest.raises(KlingAuthError):
            c.list_tasks()
    assert kling.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert len(kling.requests) == 2


# -- secrets --------------------------------------------------------------------------------------------


def test_secrets_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    """Secret key, API key and tokens are absent from logs, errors and reprs, even when Kling echoes them."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []

    def echo(code: int) -> Callable[[httpx.Request], httpx.Response]:
        def reply(request: httpx.Request) -> httpx.Response:
            tokens.append(_token(request))
            return err(code, 401, f"bad header {request.headers['Authorization']} for {SECRET_KEY}")

        return reply

    kling = Kling(
        echo(1002),
        echo(1004),
        echo(1004),
        httpx.ConnectError(f"refused {SECRET_KEY}"),
        *[err(5002, 504)] * 8,
        ok(task_data()),
    )
    texts: list[str] = []
    clock = FakeClock()
    with make_client(kling, clock) as client:
        texts += [repr(client), str(client), repr(client._auth)]
        for call in (
            client.list_tasks,
            client.list_tasks,
            lambda: client.create_text_to_video(prompt="fox"),
        ):
            with pytest.raises(KlingAPIError) as info:
                call()
            texts += [str(info.value), repr(info.value)]
            cause = info.value.__cause__
            texts += [str(cause), repr(cause)]
        texts.append(repr(client.get_task("1")))
    with KlingClient(api_key=API_KEY, transport=httpx.MockTransport(Kling())) as keyed:
        texts += [repr(keyed), repr(keyed._auth)]
    everything = "\n".join([caplog.text, *texts])
    assert tokens
    for secret in [SECRET_KEY, API_KEY, *tokens]:
        assert secret not in everything
    assert ACCESS_KEY in repr(client)
    assert "[REDACTED]" in everything


# -- configuration --------------------------------------------------------------------------------------


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KLING_ACCESS_KEY/KLING_SECRET_KEY and KLING_API_BASE configure the client."""
    monkeypatch.setenv("KLING_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("KLING_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("KLING_API_BASE", "https://proxy.example/kling/")
    kling = Kling(ok([]))
    with KlingClient(transport=httpx.MockTransport(kling)) as client:
        assert client.base_url == "https://proxy.example/kling"
        client.list_tasks()
    assert str(kling.requests[0].url).startswith("https://proxy.example/kling/v1/videos/text2video")
    assert decode_token(_token(kling.requests[0]), SECRET_KEY, now=int(datetime.now(UTC).timestamp()))


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KLING_API_KEY alone selects API-key auth."""
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    kling = Kling(ok([]))
    with KlingClient(transport=httpx.MockTransport(kling)) as client:
        client.list_tasks()
    assert kling.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_missing_credentials_name_the_env_vars() -> None:
    """Without credentials the error names every environment variable to set."""
    with pytest.raises(ConfigurationError) as info:
        KlingClient()
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_API_KEY"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "env", "needle"),
    [
        ({"access_key": ACCESS_KEY}, {}, "KLING_SECRET_KEY"),
        ({}, {"KLING_SECRET_KEY": SECRET_KEY}, "KLING_ACCESS_KEY"),
        ({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "api_key": API_KEY}, {}, "not both"),
        ({"api_key": API_KEY, "region": "mars"}, {}, "china, global, legacy"),
        ({"api_key": API_KEY, "region": "china", "base_url": "https://x"}, {}, "not both"),
        ({"api_key": API_KEY, "base_url": "ftp://x"}, {}, "http"),
        ({"api_key": API_KEY, "max_retries": -1}, {}, "max_retries"),
    ],
)
def test_bad_configuration_is_refused(
    kwargs: dict[str, Any], env: dict[str, str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half an AK/SK pair, two kinds of credentials, bad regions and URLs raise ConfigurationError."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        KlingClient(**kwargs)
    assert needle in str(info.value)
    assert SECRET_KEY not in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(("region", "host"), sorted(REGIONS.items()))
def test_regions_pick_their_host(region: str, host: str) -> None:
    """Each region name selects its documented host; global is the default."""
    with KlingClient(api_key=API_KEY, region=region) as client:
        assert client.base_url == host
    with KlingClient(api_key=API_KEY) as client:
        assert client.base_url == "https://api-singapore.klingai.com"


def test_close_and_context_manager() -> None:
    """Leaving the with block closes the connection pool."""
    client = KlingClient(api_key=API_KEY)
    with client:
        pass
    assert client._http.is_closed


def test_importing_the_package_does_not_import_httpx() -> None:
    """`import kling_budget` stays light; `import kling_budget.kling` brings httpx."""
    code = (
        "import sys, kling_budget, kling_budget.errors; assert 'httpx' not in sys.modules, 'httpx'; "
        "import kling_budget.kling; assert 'httpx' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- task parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("submitted", TaskStatus.SUBMITTED),
        ("processing", TaskStatus.PROCESSING),
        ("succeed", TaskStatus.SUCCEEDED),
        ("succeeded", TaskStatus.SUCCEEDED),
        ("failed", TaskStatus.FAILED),
        ("queued-for-later", TaskStatus.PROCESSING),
    ],
)
def test_both_status_vocabularies(word: str, status: TaskStatus) -> None:
    """Legacy `succeed` and new `succeeded` both mean SUCCEEDED; unknown words count as still running."""
    assert parse_task(task_data(word)).status is status
    assert parse_task({"id": "1", "status": word}).status is status


def test_legacy_task_is_parsed_fully() -> None:
    """A legacy query answer yields ids, message, times, outputs and the exact unit charge."""
    task = parse_task(
        task_data(
            "succeed",
            task_status_msg="",
            task_result={
                "videos": [{"id": "v1", "url": "https://cdn/v1.mp4", "duration": "5.1", "watermark_url": "w"}]
            },
            final_unit_deduction="1.5",
        ),
        endpoint=Endpoint.TEXT_TO_VIDEO,
    )
    assert (task.task_id, task.external_task_id, task.endpoint) == ("860001", "ext-1", T2V)
    assert task.created_at == datetime(2026, 3, 29, 17, 24, 36, 166000, tzinfo=UTC)
    assert task.video_urls == ("https://cdn/v1.mp4",)
    assert task.outputs[0].duration == "5.1"
    assert task.charged_units_milli == 1500
    assert task.charged_units == Decimal("1.5")
    assert task.charges[0].charge_type is ChargeType.UNIT
    assert task.is_terminal


@pytest.mark.parametrize(
    ("fields", "status", "expected"),
    [
        ({"final_unit_deduction": "2"}, "succeed", 2000),
        ({"final_unit_deduction": "0.05"}, "succeed", 50),
        ({"final_unit_deduction": Decimal("3.5")}, "succeed", 3500),
        ({"final_unit_deduction": 7}, "succeed", 7000),
        ({"final_unit_deduction": ""}, "processing", None),
        ({"final_unit_deduction": "0"}, "processing", None),
        ({"final_unit_deduction": "0"}, "submitted", None),
        ({}, "processing", None),
        ({}, "succeed", None),
        ({}, "failed", 0),
        ({"final_unit_deduction": "0"}, "failed", 0),
        ({"billing": [{"charge_type": "unit", "amount": "6", "package_type": "video"}]}, "succeed", 6000),
        ({"billing": [{"charge_type": "cash", "amount": "0.84", "currency": "USD"}]}, "succeed", 0),
        ({"billing": []}, "processing", None),
    ],
)
def test_charge_shapes(fields: dict[str, Any], status: str, expected: int | None) -> None:
    """final_unit_deduction (string, number, empty, missing) and billing[] give exact milli-units."""
    assert parse_task(task_data(status, **fields)).charged_units_milli == expected


def test_billing_keeps_unit_and_cash_items() -> None:
    """Both billing kinds are kept with their package type, currency and list price."""
    task = parse_task(
        {
            "id": "9",
            "status": "succeeded",
            "billing": [
                {"charge_type": "unit", "amount": "2.5", "package_type": "video"},
                {
                    "charge_type": "cash",
                    "cash_type": "balance",
                    "amount": "0.7",
                    "currency": "CNY",
                    "list_price": "1.00",
                },
            ],
        }
    )
    unit, cash = task.charges
    assert (unit.charge_type, unit.amount, unit.package_type, unit.units_milli) == (
        ChargeType.UNIT,
        Decimal("2.5"),
        "video",
        2500,
    )
    assert (cash.charge_type, cash.amount, cash.currency, cash.cash_type, cash.list_price) == (
        ChargeType.CASH,
        Decimal("0.7"),
        "CNY",
        "balance",
        Decimal("1.00"),
    )
    assert cash.units_milli is None
    assert task.charged_units_milli == 2500


def test_legacy_cash_deduction_is_kept() -> None:
    """The CN legacy final_balance_deduction becomes a cash charge."""
    task = parse_task(task_data("succeed", final_balance_deduction={"quota": "0.35", "list_price": "0.5"}))
    assert task.charges[0].charge_type is ChargeType.CASH
    assert task.charges[0].amount == Decimal("0.35")
    assert task.charged_units_milli == 0


def test_new_design_callback_body_parses_from_bytes() -> None:
    """A new-design callback (bytes) yields ids, outputs, times and billing, with no float on the way."""
    body = (
        b'{"id":"77","status":"succeeded","message":"","create_time":1774805076166,'
        b'"update_time":1774805096166,"external_id":"ext-77",'
        b'"outputs":[{"type":"video","url":"https://cdn/a.mp4"},{"type":"image","url":"https://cdn/b.png"}],'
        b'"billing":[{"charge_type":"unit","amount":1.25,"package_type":"video"}]}'
    )
    task = parse_task(body)
    assert (task.task_id, task.external_task_id, task.status) == ("77", "ext-77", TaskStatus.SUCCEEDED)
    assert task.video_urls == ("https://cdn/a.mp4",) and task.image_urls == ("https://cdn/b.png",)
    assert task.updated_at == datetime(2026, 3, 29, 17, 24, 56, 166000, tzinfo=UTC)
    assert task.charged_units_milli == 1250
    assert task.raw["id"] == "77"


def test_legacy_callback_body_parses_from_text() -> None:
    """A legacy callback body (text) parses like a query answer."""
    body = json.dumps(task_data("failed", task_status_msg="content moderation", final_unit_deduction="0"))
    task = parse_task(body)
    assert task.status is TaskStatus.FAILED
    assert task.status_message == "content moderation"
    assert task.charged_units_milli == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"task_status": "succeed"},
        {"task_id": "1", "task_status": 3},
        task_data("succeed", final_unit_deduction=1.5),
        task_data("succeed", final_unit_deduction="0.0001"),
        task_data("succeed", final_unit_deduction="lots"),
        {"id": "1", "status": "succeeded", "billing": [{"charge_type": "coupon", "amount": "1"}]},
        b"[1, 2]",
        b"{not json",
    ],
)
def test_malformed_payloads_are_refused(payload: Any) -> None:
    """No id, bad status, floats, sub-milli or unknown charges raise InvalidInputError."""
    with pytest.raises(InvalidInputError):
        parse_task(payload)


def test_account_costs_are_exact() -> None:
    """Pack quantities arrive as exact Decimals and times as aware datetimes; params are milliseconds."""
    body = (
        b'{"code":0,"message":"SUCCEED","request_id":"r","data":{"code":0,"msg":"success",'
        b'"resource_pack_subscribe_infos":[{"resource_pack_name":"Video Generation - 10,000 entries",'
        b'"resource_pack_id":"p1","resource_pack_type":"decreasing_total","total_quantity":10000.0,'
        b'"remaining_quantity":118.35,"purchase_time":1726124664368,"effective_time":1726124664368,'
        b'"invalid_time":1728716664368,"status":"online"}]}}'
    )
    kling = Kling(httpx.Response(200, content=body))
    with make_client(kling) as client:
        packs = client.get_account_costs(
            datetime(2026, 1, 1, tzinfo=UTC), 1_790_000_000_000, resource_pack_name="Video Generation"
        )
    pack = packs[0]
    assert pack.total_quantity == Decimal("10000.0") and pack.remaining_quantity == Decimal("118.35")
    assert isinstance(pack.remaining_quantity, Decimal)
    assert pack.invalid_time == datetime(2024, 10, 12, 7, 4, 24, 368000, tzinfo=UTC)
    assert (pack.name, pack.pack_id, pack.status) == ("Video Generation - 10,000 entries", "p1", "online")
    params = kling.requests[0].url.params
    assert kling.requests[0].url.path == "/account/costs"
    assert (params["start_time"], params["end_time"]) == ("1767225600000", "1790000000000")
    assert params["resource_pack_name"] == "Video Generation"


def test_account_costs_refuse_naive_datetimes() -> None:
    """A datetime without a timezone is refused before any request."""
    with make_client(Kling()) as client, pytest.raises(InvalidInputError):
        client.get_account_costs(datetime(2026, 1, 1), datetime(2026, 2, 1))


def test_list_tasks_pages() -> None:
    """list_tasks sends pageNum/pageSize and parses every item; out-of-range pages are refused."""
    kling = Kling(ok([task_data("succeed", "1"), task_data("failed", "2")]))
    with make_client(kling) as client:
        tasks = client.list_tasks(Endpoint.IMAGE_GENERATION, page_num=2, page_size=50)
        with pytest.raises(InvalidInputError):
            client.list_tasks(page_size=501)
    assert [t.task_id for t in tasks] == ["1", "2"]
    assert kling.requests[0].url.path == "/v1/images/generations"
    assert dict(kling.requests[0].url.params) == {"pageNum": "2", "pageSize": "50"}


def test_get_task_by_external_id_uses_the_path() -> None:
    """A query by external_task_id puts the (escaped) id in the path, as Kling's /v1 design does."""
    kling = Kling(ok(task_data()))
    with make_client(kling) as client:
        client.get_task(external_task_id="order 7/a", endpoint=Endpoint.LIP_SYNC)
        with pytest.raises(InvalidInputError):
            client.get_task("1", external_task_id="2")
    assert kling.requests[0].url.raw_path == b"/v1/videos/lip-sync/order%207%2Fa"


# -- creating tasks -------------------------------------------------------------------------------------

CREATE_CASES = [
    (
        "create_text_to_video",
        {"prompt": "fox", "model_name": "kling-v2-6", "duration": 10, "mode": "pro", "sound": "on"},
        "/v1/videos/text2video",
        {"prompt": "fox", "model_name": "kling-v2-6", "duration": "10", "mode": "pro", "sound": "on"},
    ),
    (
        "create_image_to_video",
        {"image": "https://i/1.png", "image_tail": "https://i/2.png", "duration": "5"},
        "/v1/videos/image2video",
        {"image": "https://i/1.png", "image_tail": "https://i/2.png", "duration": "5"},
    ),
    (
        "create_multi_image_to_video",
        {"image_list": ["a", {"image": "b"}], "prompt": "p", "model_name": "kling-v1-6"},
        "/v1/videos/multi-image2video",
        {"image_list": [{"image": "a"}, {"image": "b"}], "prompt": "p", "model_name": "kling-v1-6"},
    ),
    (
        "create_video_extend",
        {"video_id": "v-1", "prompt": "more"},
        "/v1/videos/video-extend",
        {"video_id": "v-1"},
    ),
    (
        "create_lip_sync",
        {"mode": "text2video", "video_id": "v-1", "text": "hi", "voice_id": "girl"},
        "/v1/videos/lip-sync",
        {"input": {"mode": "text2video", "video_id": "v-1", "text": "hi", "voice_id": "girl"}},
    ),
    (
        "create_video_effects",
        {"effect_scene": "hug_pro", "input": {"images": ["a", "b"], "duration": "5"}},
        "/v1/videos/effects",
        {"effect_scene": "hug_pro", "input": {"images": ["a", "b"], "duration": "5"}},
    ),
    (
        "create_image_generation",
        {"prompt": "cat", "model_name": "kling-v2-1", "n": 4, "resolution": "2k"},
        "/v1/images/generations",
        {"prompt": "cat", "model_name": "kling-v2-1", "n": 4, "resolution": "2k"},
    ),
    (
        "create_virtual_try_on",
        {"human_image": "h", "cloth_image": "c"},
        "/v1/images/kolors-virtual-try-on",
        {"human_image": "h", "cloth_image": "c"},
    ),
]


@pytest.mark.parametrize(("method", "kwargs", "path", "expected"), CREATE_CASES)
def test_create_methods_build_their_bodies(
    method: str, kwargs: dict[str, Any], path: str, expected: dict[str, Any]
) -> None:
    """Every create_* posts to its endpoint with its fields, extras and a generated external_task_id."""
    kling = Kling(ok(task_data()))
    with make_client(kling) as client:
        task = getattr(client, method)(**kwargs, callback_url="https://me/cb", custom_flag=True)
    assert kling.calls() == [("POST", path)]
    body = kling.bodies()[0]
    assert {k: body[k] for k in expected} == expected
    assert body["callback_url"] == "https://me/cb" and body["custom_flag"] is True
    assert len(body["external_task_id"]) == 32 and int(body["external_task_id"], 16) >= 0
    assert kling.requests[0].headers["Content-Type"] == "application/json"
    assert task.endpoint == path


def test_caller_external_id_is_kept() -> None:
    """A caller's external_task_id is sent unchanged; None-valued fields are left out."""
    kling = Kling(ok(task_data()))
    with make_client(kling) as client:
        client.create_task(T2V, {"prompt": "x", "external_task_id": "mine-1"})
        kling.replies.append(ok(task_data()))
        client.create_text_to_video(prompt="x", external_task_id="mine-2", negative_prompt=None)
    assert [b["external_task_id"] for b in kling.bodies()] == ["mine-1", "mine-2"]
    assert "negative_prompt" not in kling.bodies()[1]


@pytest.mark.parametrize(
    "failure",
    [
        err(5002, 504),
        err(5000, 500),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.Response(200, content=b'{"code":0,"message":"SUCCEED","data":{"task_id":"86'),
        ok({"task_status": "submitted"}),
    ],
    ids=["5002", "5000", "timeout", "dropped", "truncated", "unreadable"],
)
def test_ambiguous_create_found_by_external_id_is_not_resubmitted(failure: Reply) -> None:
    """After an ambiguous create the task is looked up by external id; found means no second create."""
    kling = Kling(failure, ok(task_data("processing", external="job-1")))
    with make_client(kling) as client:
        task = client.create_text_to_video(prompt="fox", external_task_id="job-1")
    assert task.status is TaskStatus.PROCESSING and task.external_task_id == "job-1"
    assert kling.calls() == [("POST", T2V), ("GET", f"{T2V}/job-1")]


def test_ambiguous_create_absent_is_resubmitted_once_with_the_same_id() -> None:
    """Kling saying "no such task" after a 5002 leads to exactly one resubmission, same external id."""
    kling = Kling(err(5002, 504), err(1203, 404), ok(task_data()))
    with make_client(kling) as client:
        task = client.create_text_to_video(prompt="fox")
    assert task.task_id == "860001"
    posts = kling.bodies()
    assert len(posts) == 2 and posts[0] == posts[1]
    assert kling.calls()[1] == ("GET", f"{T2V}/{posts[0]['external_task_id']}")


def test_ambiguous_create_unknown_raises_with_the_external_id() -> None:
    """When lookups keep failing the client raises KlingAmbiguousCreateError and never resubmits."""
    kling = Kling(httpx.ReadTimeout("slow"), *[err(5000, 500)] * 4)
    with make_client(kling) as client, pytest.raises(KlingAmbiguousCreateError) as info:
        client.create_text_to_video(prompt="fox", external_task_id="job-9")
    exc = info.value
    assert exc.external_task_id == "job-9"
    assert isinstance(exc, KlingTransportError) and not exc.should_retry
    assert "job-9" in str(exc) and "lookup failed" in str(exc)
    assert [m for m, _ in kling.calls()].count("POST") == 1
    assert len(kling.requests) == 5


def test_ambiguous_create_lookup_auth_failure_is_unknown() -> None:
    """A lookup that fails definitively (auth) leaves the create unknown rather than absent."""
    kling = Kling(err(5002, 504), err(1000, 401))
    with make_client(kling) as client, pytest.raises(KlingAmbiguousCreateError):
        client.create_text_to_video(prompt="fox")
    assert len(kling.bodies()) == 1


def test_ambiguous_resubmissions_are_bounded() -> None:
    """Ambiguous-then-absent repeats at most max_retries+1 submissions, then stays ambiguous."""
    kling = Kling(*[err(5002, 504), err(1203, 404)] * 3)
    with make_client(kling, max_retries=2) as client, pytest.raises(KlingAmbiguousCreateError) as info:
        client.create_text_to_video(prompt="fox")
    assert len(kling.bodies()) == 3
    assert "task not found" in str(info.value)
    assert not kling.replies


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        (1102, 429, KlingPackExhaustedError),
        (1201, 400, KlingParameterError),
        (1301, 400, KlingPolicyError),
        (1000, 401, KlingAuthError),
    ],
)
def test_definite_create_rejection_raises_at_once(code: int, status: int, cls: type[KlingAPIError]) -> None:
    """A definite rejection on create is raised immediately: no lookup, no retry."""
    kling = Kling(err(code, status))
    clock = FakeClock()
    with make_client(kling, clock) as client, pytest.raises(cls):
        client.create_text_to_video(prompt="fox")
    assert len(kling.requests) == 1 and clock.sleeps == []


def test_throttled_create_is_retried_without_lookup() -> None:
    """1303 on create means no task was made: back off >= 1 s and resubmit, no lookup."""
    clock = FakeClock()
    kling = Kling(err(1303, 429), err(1302, 429), ok(task_data()))
    with make_client(kling, clock) as client:
        client.create_text_to_video(prompt="fox")
    assert [m for m, _ in kling.calls()] == ["POST", "POST", "POST"]
    assert all(s >= 1.0 for s in clock.sleeps) and len(clock.sleeps) == 2


def test_throttled_create_gives_up_after_max_retries() -> None:
    """Persistent 1303 on create raises KlingRateLimitError after max_retries resubmissions."""
    kling = Kling(*[err(1303, 429)] * 4)
    with make_client(kling) as client, pytest.raises(KlingRateLimitError):
        client.create_text_to_video(prompt="fox")
    assert len(kling.requests) == 4


def test_connect_failure_on_create_is_retried_without_lookup() -> None:
    """A create that never connected is simply resent."""
    kling = Kling(httpx.ConnectError("refused"), ok(task_data()))
    with make_client(kling) as client:
        client.create_text_to_video(prompt="fox")
    assert kling.calls() == [("POST", T2V), ("POST", T2V)]


def test_expired_token_on_create_is_resigned() -> None:
    """A 1004 on create is definite (nothing created): re-sign and resend once."""
    kling = Kling(err(1004, 401), ok(task_data()))
    with make_client(kling) as client:
        client.create_text_to_video(prompt="fox")
    assert len(kling.bodies()) == 2


def test_duplicate_after_ambiguity_finds_the_first_task() -> None:
    """A resubmission rejected as a duplicate external id triggers a lookup that returns the first task."""
    duplicate = err(1201, 400, "external_task_id 'x' already exists for this account")
    kling = Kling(err(5002, 504), err(1203, 404), duplicate, ok(task_data("processing", external="x")))
    with make_client(kling) as client:
        task = client.create_text_to_video(prompt="fox", external_task_id="x")
    assert task.status is TaskStatus.PROCESSING
    assert len(kling.bodies()) == 2


def test_duplicate_after_ambiguity_that_cannot_be_read_stays_ambiguous() -> None:
    """A duplicate rejection proves the task exists, so an unreadable lookup is ambiguous, not a release."""
    duplicate = err(1201, 400, "external_task_id 'x' already exists for this account")
    kling = Kling(err(5002, 504), err(1203, 404), duplicate, err(1203, 404))
    with make_client(kling) as client, pytest.raises(KlingAmbiguousCreateError) as info:
        client.create_text_to_video(prompt="fox", external_task_id="x")
    assert "taken" in str(info.value)


def test_definite_rejection_after_confirmed_absence_is_raised() -> None:
    """5002 -> absent -> resubmit -> 1102 -> still absent: the 1102 is definite and raised."""
    kling = Kling(err(5002, 504), err(1203, 404), err(1102, 429), err(1203, 404))
    with make_client(kling) as client, pytest.raises(KlingPackExhaustedError):
        client.create_text_to_video(prompt="fox")
    assert len(kling.bodies()) == 2


def test_create_body_must_be_json() -> None:
    """A body that cannot be serialised is refused before any request."""
    with make_client(Kling()) as client, pytest.raises(InvalidInputError):
        client.create_task(T2V, {"prompt": object()})


# -- waiting --------------------------------------------------------------------------------------------


def test_wait_polls_until_terminal_with_progress() -> None:
    """wait() polls with growing intervals, reports every poll and returns the finished task."""
    clock = FakeClock()
    kling = Kling(
        ok(task_data("submitted")),
        ok(task_data("processing")),
        err(5000, 500),
        ok(task_data("processing")),
        ok(task_data("succeed", final_unit_deduction="5")),
    )
    seen: list[TaskStatus] = []
    with make_client(kling, clock) as client:
        start = Task(task_id="860001", status=TaskStatus.SUBMITTED, endpoint=Endpoint.IMAGE_TO_VIDEO)
        done = client.wait(start, poll_interval=2, max_poll_interval=3, on_progress=lambda t: seen.append(t.status))
    assert done.status is TaskStatus.SUCCEEDED and done.charged_units_milli == 5000
    assert seen == [TaskStatus.SUBMITTED, TaskStatus.PROCESSING, TaskStatus.PROCESSING, TaskStatus.SUCCEEDED]
    polls = [s for s in clock.sleeps if s >= 2]
    assert polls == [2, 3, 3]
    assert {p for _, p in kling.calls()} == {"/v1/videos/image2video/860001"}


def test_wait_times_out_with_the_last_state() -> None:
    """A task still running at the deadline raises KlingWaitTimeoutError carrying the last state."""
    clock = FakeClock()
    kling = Kling(*[ok(task_data("processing"))] * 10)
    with make_client(kling, clock) as client, pytest.raises(KlingWaitTimeoutError) as info:
        client.wait("860001", timeout=10, poll_interval=4)
    assert info.value.task is not None and info.value.task.status is TaskStatus.PROCESSING
    assert clock.now - NOW == pytest.approx(10)


def test_wait_by_external_id_and_missing_task() -> None:
    """wait() accepts an external id; a task Kling does not know raises at once."""
    kling = Kling(ok(task_data("failed")), err(1203, 404))
    with make_client(kling) as client:
        assert client.wait(external_task_id="ext-1").charged_units_milli == 0
        with pytest.raises(KlingTaskNotFoundError):
            client.wait("nope")
    assert kling.calls()[0] == ("GET", f"{T2V}/ext-1")


# -- async parity ---------------------------------------------------------------------------------------


def make_async(kling: Kling, clock: FakeClock | None = None, **options: Any) -> AsyncKlingClient:
    clock = clock or FakeClock()
    return AsyncKlingClient(
        ACCESS_KEY,
        SECRET_KEY,
        base_url="https://kling.test",
        transport=httpx.MockTransport(kling),
        clock=clock,
        sleep=clock.async_sleep,
        jitter=lambda: 0.5,
        **options,
    )


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_create_and_wait() -> None:
    """The async client creates, polls with an async progress callback and returns the charge."""
    kling = Kling(ok(task_data()), ok(task_data("processing")), ok(task_data("succeed", final_unit_deduction="2.5")))
    seen: list[TaskStatus] = []

    async def progress(task: Task) -> None:
        seen.append(task.status)

    async with make_async(kling) as client:
        task = await client.create_text_to_video(prompt="fox", duration=5)
        done = await client.wait(task, poll_interval=1, on_progress=progress)
    assert done.charged_units_milli == 2500
    assert seen == [TaskStatus.PROCESSING, TaskStatus.SUCCEEDED]
    assert kling.bodies()[0]["duration"] == "5"


@pytest.mark.anyio
async def test_async_ambiguous_create_and_errors() -> None:
    """The async client runs the same ambiguous-create machine and error mapping."""
    kling = Kling(httpx.ReadTimeout("slow"), ok(task_data(external="j")), err(1102, 429), err(1303, 429), ok([]))
    async with make_async(kling) as client:
        task = await client.create_task(T2V, {"prompt": "x", "external_task_id": "j"})
        assert task.external_task_id == "j"
        with pytest.raises(KlingPackExhaustedError):
            await client.create_text_to_video(prompt="y")
        assert await client.list_tasks() == []
    assert [m for m, _ in kling.calls()] == ["POST", "GET", "POST", "GET", "GET"]


@pytest.mark.anyio
async def test_async_unknown_create_raises_ambiguous() -> None:
    """The async client raises KlingAmbiguousCreateError when the outcome stays unknown."""
    kling = Kling(err(5002, 504), *[httpx.ReadTimeout("slow")] * 4)
    client = make_async(kling)
    with pytest.raises(KlingAmbiguousCreateError):
        await client.create_text_to_video(prompt="fox")
    await client.close()
    assert client._http.is_closed
