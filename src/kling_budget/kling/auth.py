"""Credentials for the Kling API: access key + secret key signed into a short JWT, or a plain API key.

Secrets stay inside these objects: their ``repr`` shows at most the access key id, and :meth:`redact` scrubs
any secret or issued token out of text (Kling's error messages) before it reaches a log line or an exception.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from kling_budget.errors import ConfigurationError
from kling_budget.kling.jwt import DEFAULT_LIFETIME_SECONDS, DEFAULT_NOT_BEFORE_SKEW_SECONDS, encode_token

__all__ = [
    "ENV_ACCESS_KEY",
    "ENV_API_BASE",
    "ENV_API_KEY",
    "ENV_SECRET_KEY",
    "APIKeyAuth",
    "Auth",
    "JWTAuth",
    "resolve_auth",
]

ENV_ACCESS_KEY = "KLING_ACCESS_KEY"
ENV_SECRET_KEY = "KLING_SECRET_KEY"
ENV_API_KEY = "KLING_API_KEY"
ENV_API_BASE = "KLING_API_BASE"

RENEW_MARGIN_SECONDS = 60
_REDACTED = "[REDACTED]"


class Auth(Protocol):
    """How a request is authorised."""

    def authorization(self, now: float) -> str:
        """The ``Authorization`` header value at Unix time ``now``."""
        ...

    def renew(self) -> bool:
        """Drop any cached token; ``True`` if the next :meth:`authorization` will be freshly signed."""
        ...

    def redact(self, text: str) -> str:
        """``text`` with every secret and issued token replaced by ``[REDACTED]``."""
        ...

    def describe(self) -> str:
        """A safe description for ``repr`` (never a secret)."""
        ...


class JWTAuth:
    """Access key + secret key, signed into an HS256 JWT that is cached and renewed before it expires.

    Args:
        access_key: the access key id (the JWT ``iss``); not a secret.
        secret_key: the signing secret.
        lifetime: token lifetime in seconds (Kling's sample uses 1800).
        margin: renew this many seconds before expiry.
    """

    __slots__ = ("_expires_at", "_secret_key", "_tokens", "access_key", "lifetime", "margin")

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        lifetime: int = DEFAULT_LIFETIME_SECONDS,
        margin: int = RENEW_MARGIN_SECONDS,
    ) -> None:
        self.access_key = access_key
        self._secret_key = secret_key
        self.lifetime = lifetime
        self.margin = margin
        self._tokens: list[str] = []
        self._expires_at = 0

    def authorization(self, now: float) -> str:
        """``Bearer <jwt>``, re-signed when the cached token is within ``margin`` of expiry."""
        seconds = int(now)
        if not self._tokens or seconds >= self._expires_at - self.margin:
            token = encode_token(
                self.access_key,
                self._secret_key,
                now=seconds,
                lifetime=self.lifetime,
                skew=DEFAULT_NOT_BEFORE_SKEW_SECONDS,
            )
            # Keep the last few tokens only so that redact() still recognises a token of an in-flight request.
            self._tokens = [*self._tokens[-2:], token]
            self._expires_at = seconds + self.lifetime
        return f"Bearer {self._tokens[-1]}"

    def renew(self) -> bool:
        """Force the next :meth:`authorization` to sign a new token."""
        self._expires_at = 0
        return True

    def redact(self, text: str) -> str:
        """Scrub the secret key and issued tokens from ``text``."""
        for secret in (self._secret_key, *self._tokens):
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def describe(self) -> str:
        """``access_key='...'``."""
        return f"access_key={self.access_key!r}"

    def __repr__(self) -> str:
        return f"JWTAuth({self.describe()})"


class APIKeyAuth:
    """A console API key sent as ``Authorization: Bearer <key>``.

    Args:
        api_key: the key (a secret).
    """

    __slots__ = ("_api_key",)

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def authorization(self, now: float) -> str:
        """``Bearer <api key>``."""
        return f"Bearer {self._api_key}"

    def renew(self) -> bool:
        """An API key cannot be renewed."""
        return False

    def redact(self, text: str) -> str:
        """Scrub the API key from ``text``."""
        return text.replace(self._api_key, _REDACTED) if self._api_key else text

    def describe(self) -> str:
        """``auth='api_key'``."""
        return "auth='api_key'"

    def __repr__(self) -> str:
        return "APIKeyAuth(api_key=[REDACTED])"


def _given(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def resolve_auth(
    access_key: str | None,
    secret_key: str | None,
    api_key: str | None,
    environ: Mapping[str, str] | None = None,
) -> Auth:
    """Choose credentials: explicit arguments first, then the environment.

    With arguments, ``api_key`` and ``access_key``/``secret_key`` are mutually exclusive. From the
    environment, ``KLING_ACCESS_KEY`` + ``KLING_SECRET_KEY`` win over ``KLING_API_KEY`` because the ``/v1``
    endpoints are the AK/SK design.

    Args:
        access_key: access key id, or ``None``.
        secret_key: secret key, or ``None``.
        api_key: API key, or ``None``.
        environ: where to read ``KLING_*`` variables (``os.environ`` by default).

    Returns:
        A :class:`JWTAuth` or :class:`APIKeyAuth`.

    Raises:
        ConfigurationError: no credentials, only half of an AK/SK pair, or both kinds given as arguments.
    """
    env = os.environ if environ is None else environ
    ak, sk, key = _given(access_key), _given(secret_key), _given(api_key)
    if key and (ak or sk):
        raise ConfigurationError("give either api_key or access_key/secret_key, not both")
    if key:
        return APIKeyAuth(key)
    if not (ak or sk):
        ak, sk = _given(env.get(ENV_ACCESS_KEY)), _given(env.get(ENV_SECRET_KEY))
        if not (ak or sk):
            env_key = _given(env.get(ENV_API_KEY))
            if env_key:
                return APIKeyAuth(env_key)
            raise ConfigurationError(
                "no Kling credentials: pass access_key and secret_key (or api_key), or set "
                f"{ENV_ACCESS_KEY} and {ENV_SECRET_KEY} (or {ENV_API_KEY})"
            )
    if not ak:
        raise ConfigurationError(
            f"Kling secret key given without an access key: pass access_key or set {ENV_ACCESS_KEY}"
        )
    if not sk:
        raise ConfigurationError(
            f"Kling access key given without a secret key: pass secret_key or set {ENV_SECRET_KEY}"
        )
    return JWTAuth(ak, sk)
