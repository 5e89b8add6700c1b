"""HS256 JSON Web Tokens as Kling uses them (access key as ``iss``, signed with the secret key).

Kling's documented sample signs ``{"iss": access_key, "exp": now + 1800, "nbf": now - 5}`` with header
``{"alg": "HS256", "typ": "JWT"}``. ``exp`` and ``nbf`` are RFC 7519 NumericDates: integer or fractional
seconds (PyJWT passes a float through as it is), both accepted. This module is stdlib only and pure: the
caller passes ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenClaims", "TokenError", "decode_token", "encode_token"]

_HEADER = {"alg": "HS256", "typ": "JWT"}
DEFAULT_LIFETIME_SECONDS = 1800
DEFAULT_NOT_BEFORE_SKEW_SECONDS = 5


class TokenError(Exception):
    """A token that is malformed, badly signed, not yet valid or expired.

    ``reason`` is one of ``"malformed"``, ``"signature"``, ``"not_yet_valid"``, ``"expired"``; it maps onto
    Kling's codes 1002, 1000, 1003 and 1004.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The claims Kling cares about."""

    issuer: str
    expires_at: float
    not_before: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _sign(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()


def encode_token(
    access_key: str,
    secret_key: str,
    *,
    now: int,
    lifetime: int = DEFAULT_LIFETIME_SECONDS,
    skew: int = DEFAULT_NOT_BEFORE_SKEW_SECONDS,
) -> str:
    """Sign a Kling JWT for ``access_key`` valid from ``now - skew`` to ``now + lifetime`` (Unix seconds)."""
    payload = {"iss": access_key, "exp": now + lifetime, "nbf": now - skew}
    header_b64 = _b64url(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload_b64 = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return f"{header_b64}.{payload_b64}.{_b64url(_sign(signing_input, secret_key))}"


def peek_issuer(token: str) -> str:
    """The unverified ``iss`` claim, used to look up which secret verifies the token."""
    try:
        payload: Any = json.loads(_b64url_decode(token.split(".")[1]))
        issuer = payload["iss"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise TokenError("malformed", "token is not a JWT with an 'iss' claim") from None
    if not isinstance(issuer, str):
        raise TokenError("malformed", "token 'iss' claim is not a string")
    return issuer


def _numeric_date(value: Any, name: str) -> float:
    """An RFC 7519 NumericDate: an int or a finite float (never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError("malformed", f"token needs a numeric '{name}' claim (seconds since the epoch)")
    return value


def decode_token(token: str, secret_key: str, *, now: float, leeway: float = 0) -> TokenClaims:
    """Verify an HS256 token's signature and time claims; return its claims or raise :class:`TokenError`.

    ``exp`` and ``nbf`` may be integer or fractional seconds; both are checked with ``leeway`` seconds of
    tolerance for clock skew (a token is valid from ``nbf - leeway`` until ``exp + leeway``).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed", "token must have three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header: Any = json.loads(_b64url_decode(header_b64))
        payload: Any = json.loads(_b64url_decode(payload_b64))
        signature = _b64url_decode(signature_b64)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed", "token parts are not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("malformed", "token algorithm must be HS256")
    expected = _sign(f"{header_b64}.{payload_b64}".encode("ascii"), secret_key)
    if not hmac.compare_digest(expected, signature):
        raise TokenError("signature", "token signature does not match")
    if not isinstance(payload, dict):
        raise TokenError("malformed", "token payload is not an object")
    issuer = payload.get("iss")
    if not isinstance(issuer, str):
        raise TokenError("malformed", "token needs a string 'iss' claim")
    exp = _numeric_date(payload.get("exp"), "exp")
    nbf = _numeric_date(payload.get("nbf", 0), "nbf")
    if now + leeway < nbf:
        raise TokenError("not_yet_valid", "token is not yet valid (nbf)")
    if now - leeway >= exp:
        raise TokenError("expired", "token has expired")
    return TokenClaims(issuer=issuer, expires_at=exp, not_before=nbf)
