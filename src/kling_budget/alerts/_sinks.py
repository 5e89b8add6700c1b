"""Built-in alert sinks: log, generic webhook, Slack incoming webhook and email over SMTP.

Each sink is a callable taking an :class:`~kling_budget.types.AlertEvent` that raises
:class:`AlertDeliveryError` when the event was not accepted. Timeouts and retries with backoff are the
sink's own (:class:`RetryPolicy`); the dispatcher runs sinks off the enforcement path. Error messages and
``repr`` never contain a secret: URLs are shown as ``scheme://host/…last4`` and passwords not at all.
httpx and smtplib are imported only when a sink sends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kling_budget.alerts._secrets import mask_url, redact, secrets_of, unseal
from kling_budget.errors import ConfigurationError, KlingBudgetError
from kling_budget.master_key import SecretBox
from kling_budget.types import AlertEvent, AlertKind

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AlertDeliveryError",
    "EmailSink",
    "LogSink",
    "RetryPolicy",
    "SlackSink",
    "WebhookSink",
    "build_sink",
    "describe_target",
    "mask_url",
    "redact",
    "secrets_of",
]

logger = logging.getLogger("kling_budget.alerts")

USER_AGENT = "kling-budget-alerts"


class AlertDeliveryError(KlingBudgetError):
    """A sink did not accept an event. The message is one line and never contains a secret.

    ``retryable`` is ``False`` for answers that will not change on a retry (e.g. HTTP 400, bad SMTP
    credentials); the dispatcher still retries those in later rounds, in case the receiver is fixed.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeout and bounded retries of one sink call.

    Attributes:
        attempts: tries per delivery round (at least 1).
        timeout: seconds for each network operation (connect, read, SMTP command).
        backoff: seconds before the second try; doubled for each further try.
        max_backoff: cap of one wait.
    """

    attempts: int = 3
    timeout: float = 5.0
    backoff: float = 0.5
    max_backoff: float = 5.0

    def delays(self) -> list[float]:
        """The waits between tries, before jitter (``attempts - 1`` of them)."""
        return [min(self.backoff * 2**i, self.max_backoff) for i in range(max(0, self.attempts - 1))]

    def worst_case_seconds(self) -> float:
        """An upper bound of one round: every try timing out (twice: connect and read) plus every wait."""
        return self.attempts * 2 * self.timeout + sum(self.delays()) * 1.1


def _jitter(delay: float) -> float:
    """Up to 10% extra so retries from many processes spread out; isolated for tests."""
    return delay * (1 + random.uniform(0, 0.1))


def with_retries(send: Callable[[], None], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Call ``send`` up to ``policy.attempts`` times, waiting between tries; re-raise the last error.

    Only :class:`AlertDeliveryError` with ``retryable`` set is retried.
    """
    delays = policy.delays()
    for attempt in range(max(1, policy.attempts)):
        try:
            send()
            return
        except AlertDeliveryError as exc:
            if not exc.retryable or attempt >= len(delays):
                raise
            sleep(_jitter(delays[attempt]))


def should_retry_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 425, 429 and every 5xx."""
    return status in (408, 425, 429) or status >= 500


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _validate_http_url(url: str, what: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an http:// or https:// URL")
    return url


class LogSink:
    """Writes each alert as one line to the ``kling_budget.alerts`` logger (the default sink).

    WARNING, except a denial: the caller already got it as :class:`BudgetExceededError`, so it is INFO.
    It cannot hang, so the dispatcher calls it in the caller's thread as the event happens.
    """

    name = "log"
    key = "local:log"
    inline = True

    def __call__(self, event: AlertEvent) -> None:
        prefix = "TEST ALERT" if event.dedupe_key.startswith("test:") else "ALERT"
        level = logging.INFO if event.kind is AlertKind.DENIED else logging.WARNING
        logger.log(level, "%s %s: %s", prefix, event.kind.value, event.message)

    def __repr__(self) -> str:
        return "LogSink()"


def event_payload(event: AlertEvent) -> dict[str, Any]:
    """The JSON body of a webhook: :meth:`AlertEvent.to_dict` (plus ``"test": true`` for test events)."""
    payload = event.to_dict()
    if event.dedupe_key.startswith("test:"):
        payload["test"] = True
    return payload


class _HTTPSink:
    """POSTs JSON with httpx; 2xx is success, 408/425/429/5xx and network errors are retried.

    With a ``signing_secret`` (``whsec_`` + base64) every delivery is signed the Standard Webhooks way, as
    Kling signs its callbacks: ``webhook-id`` (the dedupe key), ``webhook-timestamp`` and ``webhook-signature``.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        key: str | None = None,
        signing_secret: str = "",
    ) -> None:
        self._url = _validate_http_url(url, f"the {self.name} URL")
        self.retry = retry or RetryPolicy()
        self._headers = dict(headers or {})
        self._transport = transport
        self.key = key or f"local:{self.name}:{hashlib.sha256(url.encode()).hexdigest()[:12]}"
        if signing_secret:
            from kling_budget.kling.webhooks import WebhookVerificationError, sign_webhook

            try:
                sign_webhook(signing_secret, "check", 0, b"")
            except WebhookVerificationError:
                raise ConfigurationError(
                    "a webhook signing secret must be 'whsec_' followed by base64 (or use --sign to make one)"
                ) from None
        self._signing_secret = signing_secret

    @property
    def target(self) -> str:
        """The URL, masked."""
        return mask_url(self._url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}{', signed' if self._signing_secret else ''})"

    def body(self, event: AlertEvent) -> dict[str, Any]:
        """The JSON document sent for ``event``."""
        raise NotImplementedError

    def signature_headers(self, event: AlertEvent, content: bytes) -> dict[str, str]:
        """Standard Webhooks headers signing ``content`` when the sink has a signing secret."""
        if not self._signing_secret:
            return {}
        from kling_budget.kling.webhooks import sign_webhook

        timestamp = int(time.time())
        signature = sign_webhook(self._signing_secret, event.dedupe_key, timestamp, content)
        return {"webhook-id": event.dedupe_key, "webhook-timestamp": str(timestamp), "webhook-signature": signature}

    def __call__(self, event: AlertEvent) -> None:
        import httpx

        content = json.dumps(self.body(event), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": event.dedupe_key,
            "X-Kling-Budget-Event": event.kind.value,
            **self._headers,
            **self.signature_headers(event, content),
        }
        host = _host(self._url)
        timeout = httpx.Timeout(self.retry.timeout)

        def send() -> None:
            try:
                with httpx.Client(timeout=timeout, transport=self._transport, follow_redirects=False) as client:
                    response = client.post(self._url, content=content, headers=headers)
            except httpx.TimeoutException:
                raise AlertDeliveryError(f"{self.name} to {host}: timed out after {self.retry.timeout:g} s") from None
            except httpx.HTTPError as exc:
                detail = redact(str(exc), [self._url]) or type(exc).__name__
                raise AlertDeliveryError(f"{self.name} to {host}: {detail}") from None
            if not 200 <= response.status_code < 300:
                raise AlertDeliveryError(
                    f"{self.name} to {host}: HTTP {response.status_code}",
                    retryable=should_retry_status(response.status_code),
                )

        with_retries(send, self.retry)


class WebhookSink(_HTTPSink):
    """POSTs :meth:`AlertEvent.to_dict` as JSON to a URL.

    Headers: ``Idempotency-Key`` (the event's ``dedupe_key``, also in the body) so a receiver can drop
    the rare duplicate of at-least-once delivery, and ``X-Kling-Budget-Event`` (the kind); signed when given
    a ``signing_secret``.
    """

    name = "webhook"

    def body(self, event: AlertEvent) -> dict[str, Any]:
        """The event as JSON."""
        return event_payload(event)


_TITLES = {
    "threshold": "Budget threshold reached",
    "exhausted": "Budget exhausted",
    "denied": "Request denied by a budget",
    "overage": "Job charged above its hold",
    "over_budget_record": "Recorded usage went over budget",
    "forecast": "Budget forecast to be exceeded",
    "pack_low": "Resource pack running low",
    "pack_expiring": "Resource pack expiring with units unused",
    "upstream_pack_exhausted": "Kling reports the resource pack exhausted (1102)",
    "reconcile_drift": "Ledger and Kling balance disagree",
}


def title(event: AlertEvent) -> str:
    """A short human title for ``event``: ``Budget threshold reached: marketing 80%``."""
    text = _TITLES.get(event.kind.value, event.kind.value)
    if event.budget:
        text += f": {event.budget}"
    if event.threshold is not None:
        text += f" {event.threshold}%"
    if event.dedupe_key.startswith("test:"):
        text = "[test] " + text
    return text


def _amount(event: AlertEvent, value: str) -> str:
    if not value:
        return "-"
    return f"${value}" if event.limit_kind == "usd" else f"{value} units"


def facts(event: AlertEvent) -> list[tuple[str, str]]:
    """The labelled fields shown by Slack and email: budget, scope, window, limit, used, held, percent."""
    window = event.window_start + (f" → {event.window_end}" if event.window_end else "")
    rows = [
        ("Budget", event.budget or "-"),
        ("Scope", event.scope or "-"),
        ("Period", event.period or "-"),
        ("Window", window or "-"),
        ("Limit", _amount(event, event.limit)),
        ("Used (committed + held)", _amount(event, event.used)),
        ("Held by running jobs", _amount(event, event.held)),
        ("Percent", f"{event.percent}%" if event.percent else "-"),
    ]
    return [(k, v) for k, v in rows if v != "-" or k in ("Budget", "Used (committed + held)")]


class SlackSink(_HTTPSink):
    """Posts to a Slack incoming webhook: a ``text`` fallback plus Block Kit blocks."""

    name = "slack"

    def body(self, event: AlertEvent) -> dict[str, Any]:
        """Slack's ``{"text", "blocks"}`` message."""
        fields = [{"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]} for label, value in facts(event)]
        return {
            "text": f"{title(event)} — {event.message}"[:3000],
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title(event)[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": event.message[:3000]}},
                {"type": "section", "fields": fields[:10]},
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": f"kling-budget · `{event.dedupe_key}` · {event.created_at}"[:2000]}
                    ],
                },
            ],
        }


class EmailSink:
    """Sends each alert as a plain-text email over SMTP (STARTTLS by default, optional login).

    Args:
        host, port: the SMTP server (587 for STARTTLS submission, 465 with ``ssl=True``).
        sender: the From address; ``recipients``: one or more To addresses.
        username, password: SMTP login (``password_env`` names an environment variable to read instead).
        starttls: upgrade the connection with STARTTLS (refuses to log in over plain text without it).
        ssl: connect with implicit TLS (port 465) instead.
        cafile: a CA bundle to trust (e.g. a private or self-signed server certificate).
    """

    name = "email"
    inline = False

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        recipients: Sequence[str],
        username: str = "",
        password: str = "",
        password_env: str = "",
        starttls: bool = True,
        ssl: bool = False,
        cafile: str = "",
        retry: RetryPolicy | None = None,
        key: str | None = None,
    ) -> None:
        if not host:
            raise ConfigurationError("an email sink needs --host")
        if not sender or "@" not in sender:
            raise ConfigurationError("an email sink needs a --from address like alerts@example.com")
        if not recipients or any("@" not in r for r in recipients):
            raise ConfigurationError("an email sink needs --to addresses like ops@example.com")
        if not 0 < int(port) < 65536:
            raise ConfigurationError(f"SMTP port must be 1-65535, got {port}")
        self.host, self.port = host, int(port)
        self.sender, self.recipients = sender, list(recipients)
        self.username = username
        self._password = password
        self.password_env = password_env
        self.starttls, self.ssl, self.cafile = starttls, ssl, cafile
        self.retry = retry or RetryPolicy()
        self.key = key or f"local:email:{host}:{port}:{','.join(self.recipients)}"

    @property
    def target(self) -> str:
        """``user@smtp.example.com:587 → ops@example.com`` (no password)."""
        who = f"{self.username}@" if self.username else ""
        return f"{who}{self.host}:{self.port} → {', '.join(self.recipients)}"

    def __repr__(self) -> str:
        return f"EmailSink({self.target!r})"

    def _secret(self) -> str:
        if self.password_env:
            return os.environ.get(self.password_env, "")
        return self._password

    def message(self, event: AlertEvent) -> EmailMessage:
        """The email for ``event``; its Message-ID is derived from the dedupe key, so a duplicate send
        threads with (and can be dropped as) the first."""
        msg = EmailMessage()
        msg["Subject"] = f"[kling-budget] {title(event)}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        digest = hashlib.sha256(event.dedupe_key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}@kling-budget>"
        msg["X-Kling-Budget-Dedupe-Key"] = event.dedupe_key
        msg["X-Kling-Budget-Event"] = event.kind.value
        width = max(len(label) for label, _ in facts(event))
        lines = [event.message, ""]
        lines += [f"{label.ljust(width)}  {value}" for label, value in facts(event)]
        lines += ["", f"kind: {event.kind.value}", f"dedupe key: {event.dedupe_key}", f"created: {event.created_at}"]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def __call__(self, event: AlertEvent) -> None:
        import smtplib
        import ssl as ssl_module

        msg = self.message(event)
        password = self._secret()
        if self.username and not password:
            raise AlertDeliveryError(
                f"email via {self.host}: no SMTP password"
                + (f" (environment variable {self.password_env} is empty)" if self.password_env else ""),
                retryable=False,
            )
        context = ssl_module.create_default_context(cafile=self.cafile or None)
        where = f"email via {self.host}:{self.port}"

        def send() -> None:
            try:
                smtp: smtplib.SMTP
                if self.ssl:
                    smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.retry.timeout, context=context)
                else:
                    smtp = smtplib.SMTP(self.host, self.port, timeout=self.retry.timeout)
                with smtp:
                    smtp.ehlo()
                    if self.starttls and not self.ssl:
                        smtp.starttls(context=context)
                        smtp.ehlo()
                    if self.username:
                        smtp.login(self.username, password)
                    smtp.send_message(msg)
            except smtplib.SMTPAuthenticationError as exc:
                raise AlertDeliveryError(f"{where}: login refused ({exc.smtp_code})", retryable=False) from None
            except smtplib.SMTPNotSupportedError:
                raise AlertDeliveryError(f"{where}: the server does not offer STARTTLS", retryable=False) from None
            except smtplib.SMTPRecipientsRefused:
                raise AlertDeliveryError(f"{where}: every recipient was refused", retryable=False) from None
            except smtplib.SMTPResponseException as exc:
                retry = exc.smtp_code >= 400 and exc.smtp_code < 500
                raise AlertDeliveryError(f"{where}: SMTP {exc.smtp_code}", retryable=retry) from None
            except TimeoutError:
                raise AlertDeliveryError(f"{where}: timed out after {self.retry.timeout:g} s") from None
            except ssl_module.SSLError as exc:
                raise AlertDeliveryError(f"{where}: TLS failed ({exc.reason or type(exc).__name__})") from None
            except (OSError, smtplib.SMTPException) as exc:
                detail = redact(str(exc), [password]) or type(exc).__name__
                raise AlertDeliveryError(f"{where}: {detail}") from None

        with_retries(send, self.retry)


def build_sink(kind: str, config: Mapping[str, Any], *, key: str | None = None, box: SecretBox | None = None) -> Any:
    """A sink object from a configuration as stored (sealed: decrypted with ``box`` or the master key) or
    in plaintext.

    Raises:
        KeyDecryptionError: the master key is not the one that sealed the sink's secrets.
    """
    config = unseal(config, box)
    retry = RetryPolicy(
        attempts=int(config.get("attempts", 3)),
        timeout=float(config.get("timeout", 5.0)),
        backoff=float(config.get("backoff", 0.5)),
        max_backoff=float(config.get("max_backoff", 5.0)),
    )
    if kind == "webhook":
        signing = str(config.get("signing_secret", ""))
        return WebhookSink(str(config["url"]), retry=retry, key=key, signing_secret=signing)
    if kind == "slack":
        return SlackSink(str(config["url"]), retry=retry, key=key)
    if kind == "email":
        return EmailSink(
            str(config["host"]),
            int(config.get("port", 587)),
            sender=str(config["sender"]),
            recipients=list(config["recipients"]),
            username=str(config.get("username", "")),
            password=str(config.get("password", "")),
            password_env=str(config.get("password_env", "")),
            starttls=bool(config.get("starttls", True)),
            ssl=bool(config.get("ssl", False)),
            cafile=str(config.get("cafile", "")),
            retry=retry,
            key=key,
        )
    if kind == "log":
        return LogSink()
    raise ConfigurationError(f"unknown sink kind {kind!r}; accepted: log, webhook, slack, email")


def describe_target(kind: str, config: Mapping[str, Any]) -> str:
    """Where a sink delivers, with every secret masked; works on the stored (sealed) form without a key."""
    if kind in ("webhook", "slack"):
        target = str(config.get("target") or mask_url(str(config.get("url", ""))))
        signed = kind == "webhook" and (config.get("signing_secret") or config.get("signed"))
        return target + (" (signed)" if signed else "")
    if kind == "email":
        who = f"{config['username']}@" if config.get("username") else ""
        tls = "ssl" if config.get("ssl") else ("starttls" if config.get("starttls", True) else "plain")
        password = ""
        if config.get("password_env"):
            password = f", password from ${config['password_env']}"
        elif config.get("password") or config.get("sealed"):
            password = ", password ****"
        recipients = ", ".join(config.get("recipients", []))
        return f"{who}{config.get('host')}:{config.get('port', 587)} ({tls}{password}) → {recipients}"
    return "kling_budget.alerts logger"
