"""Standard Webhooks signatures, the scheme Kling documents for signed callbacks.

Signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``; the signature is
``v1,`` + base64(HMAC-SHA256(base64decode(secret without "whsec_"), content)). Several space-separated
signatures may be sent during a secret rotation; any one matching is enough. Pure: ``now`` is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["WebhookVerificationError", "sign_webhook", "verify_webhook"]

TOLERANCE_SECONDS = 5 * 60


class WebhookVerificationError(Exception):
    """The callback's signature headers are missing, stale or do not match."""


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise WebhookVerificationError("webhook secret must be 'whsec_' followed by base64") from None


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``) for one delivery."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, *, now: int) -> str:
    """Verify a delivery; return its ``webhook-id`` or raise :class:`WebhookVerificationError`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not timestamp_text or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise WebhookVerificationError("webhook-timestamp is more than 5 minutes away from now")
    expected = sign_webhook(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        # compare_digest refuses non-ASCII text (TypeError): a forged header must be a refusal, not a crash.
        if version == "v1" and value.isascii() and hmac.compare_digest(value, expected):
            return msg_id
    raise WebhookVerificationError("no webhook signature matches")
