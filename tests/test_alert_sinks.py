"""Alert sinks against real servers on loopback: webhook, Slack, SMTP with STARTTLS and login."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kling_budget.alerts import (
    AlertDeliveryError,
    EmailSink,
    LogSink,
    RetryPolicy,
    SlackSink,
    WebhookSink,
    mask_url,
    redact,
)
from kling_budget.alerts._sinks import with_retries
from kling_budget.types import AlertEvent, AlertKind
from tests.alert_receivers import free_port, http_receiver, smtp_server

FAST = RetryPolicy(attempts=2, timeout=1.0, backoff=0.01, max_backoff=0.01)

EVENT = AlertEvent(
    kind=AlertKind.THRESHOLD,
    message="budget 'marketing' (project=marketing, monthly) reached 80%: 80 of 100 units used (80.00%)",
    dedupe_key="threshold:1:1772323200000000:80",
    budget="marketing",
    scope="project=marketing",
    period="monthly",
    window_start="2026-03-01T00:00:00+00:00",
    window_end="2026-04-01T00:00:00+00:00",
    limit_kind="units",
    limit="100",
    used="80",
    held="12.5",
    percent="80.00",
    threshold=80,
    reservation_id="r-42",
    created_at="2026-03-10T12:00:00+00:00",
    id=7,
)


def test_webhook_posts_the_event_as_json_with_its_dedupe_key() -> None:
    """The webhook body is AlertEvent.to_dict() and the Idempotency-Key header is the dedupe key."""
    with http_receiver() as receiver:
        WebhookSink(receiver.url, retry=FAST)(EVENT)
        [received] = receiver.received
    assert received.body == EVENT.to_dict()
    assert received.headers["Idempotency-Key"] == EVENT.dedupe_key
    assert received.headers["X-Kling-Budget-Event"] == "threshold"
    assert received.headers["Content-Type"] == "application/json"


def test_slack_message_has_text_and_blocks_with_every_fact() -> None:
    """Slack gets a text fallback plus header, message, fields (budget, window, limit, used, held, %)."""
    with http_receiver() as receiver:
        SlackSink(receiver.url, retry=FAST)(EVENT)
        [received] = receiver.received
    body = received.body
    assert body["text"].startswith("Budget threshold reached: marketing 80%")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    fields = "\n".join(f["text"] for f in body["blocks"][2]["fields"])
    for fact in ("*Budget*\nmarketing", "100 units", "80 units", "12.5 units", "80.00%", "2026-03-01"):
        assert fact in fields
    assert EVENT.dedupe_key in body["blocks"][3]["elements"][0]["text"]


def test_server_error_is_retried_then_reported_without_the_url() -> None:
    """A 500 is retried up to the policy's attempts; the error names the host, never the secret path."""
    with http_receiver(mode="fail") as receiver:
        sink = WebhookSink(receiver.url, retry=RetryPolicy(attempts=3, timeout=1.0, backoff=0.01))
        with pytest.raises(AlertDeliveryError) as caught:
            sink(EVENT)
        assert receiver.attempts == 3
    assert str(caught.value) == "webhook to 127.0.0.1: HTTP 500"
    assert "secret-token" not in repr(sink)


def test_client_error_is_not_retried_within_a_round() -> None:
    """A 4xx other than 408/425/429 fails at once (retrying cannot change the answer)."""
    calls: list[int] = []

    def send() -> None:
        calls.append(1)
        raise AlertDeliveryError("HTTP 400", retryable=False)

    with pytest.raises(AlertDeliveryError):
        with_retries(send, RetryPolicy(attempts=5, backoff=0.0), sleep=lambda _: None)
    assert calls == [1]


def test_connection_refused_is_an_alert_delivery_error() -> None:
    """Nothing listening is a retryable delivery error naming the host."""
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", retry=FAST)
    with pytest.raises(AlertDeliveryError, match=r"webhook to 127\.0\.0\.1") as caught:
        sink(EVENT)
    assert caught.value.retryable


def test_hanging_receiver_times_out_within_the_policy() -> None:
    """A receiver that never answers costs at most about attempts x timeout, then fails."""
    import time

    with http_receiver(mode="hang") as receiver:
        receiver.hang_seconds = 5
        started = time.monotonic()
        with pytest.raises(AlertDeliveryError, match=r"timed out after 0\.3 s"):
            WebhookSink(receiver.url, retry=RetryPolicy(attempts=2, timeout=0.3, backoff=0.01))(EVENT)
        assert time.monotonic() - started < 2.0


def test_masking_never_shows_a_whole_url_or_password() -> None:
    """URLs keep scheme, host and port, lose path and query; redact() scrubs secrets from any text."""
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecretTOKEN"
    assert mask_url(url) == "https://hooks.slack.com/…OKEN"
    assert mask_url("http://user:pw@127.0.0.1:8080/hook?token=abc123456") == "http://127.0.0.1:8080/…3456"
    assert redact(f"failed for url '{url}' with hunter2\n", [url, "hunter2"]) == (
        "failed for url 'https://hooks.slack.com/…OKEN' with ****"
    )
    assert "hunter2" not in repr(EmailSink("h", sender="a@b.c", recipients=["d@e.f"], username="u", password="hunter2"))


def test_email_over_starttls_with_login(tmp_path: Path) -> None:
    """The email sink upgrades with STARTTLS, logs in and sends one message with the facts and dedupe key."""
    with smtp_server(tmp_path) as server:
        sink = EmailSink(
            server.host,
            server.port,
            sender="alerts@example.com",
            recipients=["ops@example.com", "finance@example.com"],
            username="alerts",
            password="s3cret-pass",
            cafile=str(server.cafile),
            retry=FAST,
        )
        sink(EVENT)
        [message] = server.messages
    assert server.logins == ["alerts"]
    assert message["Subject"] == "[kling-budget] Budget threshold reached: marketing 80%"
    assert message["To"] == "ops@example.com, finance@example.com"
    assert message["X-Kling-Budget-Dedupe-Key"] == EVENT.dedupe_key
    body = message.get_payload(decode=True).decode()
    assert EVENT.message in body
    assert "Held by running jobs" in body and "12.5 units" in body


def test_email_with_a_wrong_password_fails_without_showing_it(tmp_path: Path) -> None:
    """Refused credentials are a non-retryable error that names the server, not the password."""
    with smtp_server(tmp_path) as server:
        sink = EmailSink(
            server.host,
            server.port,
            sender="alerts@example.com",
            recipients=["ops@example.com"],
            username="alerts",
            password="wrong-password-123",
            cafile=str(server.cafile),
            retry=FAST,
        )
        with pytest.raises(AlertDeliveryError) as caught:
            sink(EVENT)
        assert server.messages == []
    assert not caught.value.retryable
    assert "login refused" in str(caught.value)
    assert "wrong-password-123" not in str(caught.value)


def test_email_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    """Without the server's CA the STARTTLS handshake fails: no password goes over an unverified link."""
    with smtp_server(tmp_path) as server:
        sink = EmailSink(
            server.host,
            server.port,
            sender="alerts@example.com",
            recipients=["ops@example.com"],
            username="alerts",
            password="s3cret-pass",
            retry=RetryPolicy(attempts=1, timeout=2.0),
        )
        with pytest.raises(AlertDeliveryError, match="TLS failed"):
            sink(EVENT)
        assert server.logins == []


def test_email_password_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env is read at send time, so the ledger never stores the password."""
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pass")
    with smtp_server(tmp_path) as server:
        EmailSink(
            server.host,
            server.port,
            sender="alerts@example.com",
            recipients=["ops@example.com"],
            username="alerts",
            password_env="TEST_SMTP_PASSWORD",
            cafile=str(server.cafile),
            retry=FAST,
        )(EVENT)
        assert len(server.messages) == 1


def test_log_sink_writes_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """The default sink logs ``ALERT <kind>: <message>`` at WARNING."""
    with caplog.at_level(logging.WARNING, logger="kling_budget.alerts"):
        LogSink()(EVENT)
    assert [r.getMessage() for r in caplog.records] == [f"ALERT threshold: {EVENT.message}"]
