"""Virtual credentials: the keys the gateway issues per project/user instead of the real Kling keys.

A virtual key is either (or both) of what Kling itself hands out:

* an **access key + secret key** pair: the client signs its own HS256 JWT exactly as with Kling
  (``{"iss": access_key, "exp": ..., "nbf": ...}``; integer or fractional seconds) and the gateway verifies
  it, allowing :data:`JWT_LEEWAY_SECONDS` of clock skew on ``nbf`` and ``exp``;
* an **API key**, sent as ``Authorization: Bearer <key>``.

Either goes in ``Authorization: Bearer <token>``; the scheme is matched case-insensitively (``bearer``).

At rest (table ``gateway_keys``): an API key is stored only as its SHA-256 (it has 256 bits of entropy, so
a plain hash is enough); a secret key — which HS256 verification needs in plaintext — and the per-key
webhook secret are encrypted with the master key (:mod:`kling_budget.master_key`: ``KLING_BUDGET_MASTER_KEY``
or ``master.key`` in the data directory). Every instance sharing a database must use the same master key.

Secrets are returned once, by :meth:`KeyStore.create` and :meth:`KeyStore.rotate` (an :class:`IssuedKey`),
and never appear in a ``repr``, a listing or an error. Authentication results are cached for
``cache_seconds`` (1 s by default), so a revocation takes effect at once on the instance that made it and
within that time on every other instance.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kling_budget.alerts._secrets import check_master_key
from kling_budget.errors import ConfigurationError, KeyDecryptionError, KlingBudgetError
from kling_budget.kling.jwt import TokenError, decode_token, peek_issuer
from kling_budget.ledger.backend import Backend, Connection, Row
from kling_budget.master_key import MASTER_KEY_ENV, MASTER_KEY_FILE, SecretBox, load_master_key
from kling_budget.private_files import data_dir
from kling_budget.windows import from_micros, to_micros

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE",
    "MAX_TOKEN_LIFETIME_SECONDS",
    "CredentialError",
    "IssuedKey",
    "KeyDecryptionError",
    "KeyStore",
    "SecretBox",
    "VirtualKey",
    "data_dir",
    "load_master_key",
]

MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
"""Longest JWT lifetime (``exp - nbf``, or ``exp - now`` without ``nbf``) the gateway accepts."""
KINDS = ("jwt", "api", "both")
DEFAULT_CACHE_SECONDS = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TOKEN_CODES = {"malformed": 1002, "signature": 1000, "not_yet_valid": 1003, "expired": 1004}
JWT_LEEWAY_SECONDS = 10
"""Clock-skew tolerance on a virtual JWT's ``nbf`` and ``exp``: a client clock this far off still works."""
_KEY_COLUMNS = (
    "id, name, kind, project, user_id, tags, access_key, api_key_prefix, webhook_secret_enc IS NOT NULL, "
    "created_at, rotated_at, revoked_at"
)


class CredentialError(KlingBudgetError):
    """A request's credentials were refused; ``code`` is Kling's (1000-1004), ``http_status`` 401."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = 401


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A virtual key as stored, without any secret.

    Attributes:
        id: the database id (stable across rotations; tasks belong to it).
        name: unique name; budgets match it as ``api_key`` and usage is attributed to it.
        kind: ``jwt`` (access + secret key), ``api`` (API key) or ``both``.
        project / user / tags: attribution of every job made with the key.
        access_key: the public access key id (the JWT ``iss``), for ``jwt``/``both`` keys.
        api_key_prefix: the first characters of the API key, to recognise it.
        has_webhook_secret: forwarded callbacks are signed with the key's webhook secret.
        created_at / rotated_at / revoked_at: lifecycle times (UTC).
    """

    id: int
    name: str
    kind: str
    project: str
    user: str
    tags: tuple[str, ...]
    access_key: str | None
    api_key_prefix: str
    has_webhook_secret: bool
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked."""
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; contains no secret."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "project": self.project,
            "user": self.user,
            "tags": list(self.tags),
            "access_key": self.access_key,
            "api_key_prefix": self.api_key_prefix or None,
            "has_webhook_secret": self.has_webhook_secret,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key with its secrets, as returned once by create/rotate. Secrets are hidden from ``repr``."""

    key: VirtualKey
    secret_key: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The key's fields plus ``secret_key``, ``api_key`` and ``webhook_secret`` (show them once)."""
        return {
            **self.key.to_dict(),
            "secret_key": self.secret_key,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
        }


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    key: VirtualKey
    secret: str | None


def _hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _tags_column(tags: Iterable[str]) -> str:
    items = sorted({t.strip() for t in tags if t.strip()})
    return f",{','.join(items)}," if items else ""


def _key_from_row(row: Row) -> VirtualKey:
    return VirtualKey(
        id=int(row[0]),
        name=row[1],
        kind=row[2],
        project=row[3],
        user=row[4],
        tags=tuple(t for t in row[5].split(",") if t),
        access_key=row[6],
        api_key_prefix=row[7],
        has_webhook_secret=bool(row[8]),
        created_at=from_micros(row[9]),
        rotated_at=None if row[10] is None else from_micros(row[10]),
        revoked_at=None if row[11] is None else from_micros(row[11]),
    )


def _new_secrets(kind: str) -> tuple[str | None, str | None, str | None, str]:
    """(access key, secret key, API key, webhook secret) for a key of ``kind``."""
    access = secret = api = None
    if kind in ("jwt", "both"):
        access = "ak_" + secrets.token_hex(16)
        secret = secrets.token_urlsafe(32)
    if kind in ("api", "both"):
        api = "kbk_" + secrets.token_urlsafe(32)
    webhook = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    return access, secret, api, webhook


def split_bearer(authorization: str | None) -> str:
    """The token of ``Bearer <token>``; :class:`CredentialError` 1001 when empty, 1002 when malformed."""
    if authorization is None or not authorization.strip():
        raise CredentialError(1001, "Authorization is empty")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    bearer = scheme.lower() == "bearer"  # RFC 9110: the scheme is case-insensitive
    if bearer and not token:
        raise CredentialError(1001, "Authorization is empty: no token after 'Bearer'")
    if not bearer or " " in token:
        raise CredentialError(1002, "Authorization is invalid: expected 'Bearer <token>'")
    return token


class KeyStore:
    """Create, list, revoke, rotate and verify virtual keys in the ledger database.

    Args:
        backend: the ledger's backend (the ``gateway_keys`` table lives beside the ledger).
        box: encrypts secret keys and webhook secrets; needed to create, rotate and verify JWT keys
            (listing and revoking work without it).
        cache_seconds: how long a verified key is trusted without re-reading it.
        clock: Unix seconds (``time.time``); signs nothing, checks ``nbf``/``exp``.
    """

    def __init__(
        self,
        backend: Backend,
        box: SecretBox | None = None,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.backend = backend
        self._box = box
        self._cache_seconds = cache_seconds
        self._clock = clock or time.time
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStore({self.backend.display_url!r})"

    def _require_box(self) -> SecretBox:
        if self._box is None:
            raise ConfigurationError("this operation needs the master key (KLING_BUDGET_MASTER_KEY or master.key)")
        return self._box

    # ----------------------------------------------------------------- administration

    def create(
        self,
        name: str,
        *,
        project: str,
        user: str = "",
        tags: Iterable[str] = (),
        kind: str = "jwt",
    ) -> IssuedKey:
        """Issue a new key; its secrets are in the result and nowhere else.

        Raises:
            ConfigurationError: a bad name, project or kind, or a key with that name exists (even revoked).
            KeyDecryptionError: this process's master key cannot read the ledger's existing secrets.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"key name must be 1-100 characters of letters, digits, '.', '_', '@' or '-', got {name!r}"
            )
        if not isinstance(project, str) or not project.strip():
            raise ConfigurationError("a key needs a project (--project)")
        if kind not in KINDS:
            raise ConfigurationError(f"key kind must be one of {', '.join(KINDS)}, got {kind!r}")
        box = self._require_box()
        access, secret, api, webhook = _new_secrets(kind)
        now = to_micros(datetime.now(UTC))

        def tx(conn: Connection) -> VirtualKey:
            check_master_key(conn, box)  # never add a secret the other keys' readers cannot decrypt
            if conn.fetchone("SELECT 1 FROM gateway_keys WHERE name = ?", (name,)):
                raise ConfigurationError(f"a key named {name!r} already exists (names are never reused)")
            conn.execute(
                "INSERT INTO gateway_keys (name, kind, project, user_id, tags, access_key, secret_enc, "
                "api_key_hash, api_key_prefix, webhook_secret_enc, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    kind,
                    project.strip(),
                    (user or "").strip(),
                    _tags_column(tags),
                    access,
                    None if secret is None else box.encrypt(secret),
                    None if api is None else _hash_api_key(api),
                    "" if api is None else api[:10],
                    box.encrypt(webhook),
                    now,
                ),
            )
            return self._get(conn, name)

        key = self.backend.run(tx)
        return IssuedKey(key=key, secret_key=secret, api_key=api, webhook_secret=webhook)

    def rotate(self, name: str) -> IssuedKey:
        """Replace the key's credentials (new access/secret key and/or API key, new webhook secret).

        The old credentials stop working at once here and within ``cache_seconds`` elsewhere; the key keeps
        its id, name, attribution and tasks.

        Raises:
            ConfigurationError: no such key, or it is revoked.
            KeyDecryptionError: this process's master key cannot read the ledger's existing secrets.
        """
        box = self._require_box()
        now = to_micros(datetime.now(UTC))

        def tx(conn: Connection) -> tuple[VirtualKey, tuple[str | None, str | None, str | None, str]]:
            current = self._get(conn, name)
            if current.revoked:
                raise ConfigurationError(f"key {name!r} is revoked; create a new key instead")
            check_master_key(conn, box)
            fresh = _new_secrets(current.kind)
            access, secret, api, webhook = fresh
            conn.execute(
                "UPDATE gateway_keys SET access_key = ?, secret_enc = ?, api_key_hash = ?, api_key_prefix = ?, "
                "webhook_secret_enc = ?, rotated_at = ? WHERE id = ?",
                (
                    access,
                    None if secret is None else box.encrypt(secret),
                    None if api is None else _hash_api_key(api),
                    "" if api is None else api[:10],
                    box.encrypt(webhook),
                    now,
                    current.id,
                ),
            )
            return self._get(conn, name), fresh

        key, (_, secret, api, webhook) = self.backend.run(tx)
        self._forget(key.id)
        return IssuedKey(key=key, secret_key=secret, api_key=api, webhook_secret=webhook)

    def revoke(self, name: str) -> VirtualKey:
        """Revoke a key: its credentials are refused from now on (idempotent)."""
        now = to_micros(datetime.now(UTC))

        def tx(conn: Connection) -> VirtualKey:
            current = self._get(conn, name)
            if not current.revoked:
                conn.execute("UPDATE gateway_keys SET revoked_at = ? WHERE id = ?", (now, current.id))
            return self._get(conn, name)

        key = self.backend.run(tx)
        self._forget(key.id)
        return key

    def get(self, name: str) -> VirtualKey:
        """The key called ``name`` (:class:`ConfigurationError` if absent)."""
        return self.backend.run(lambda conn: self._get(conn, name), write=False)

    def get_by_id(self, key_id: int) -> VirtualKey | None:
        """The key with database id ``key_id``, if any."""
        row = self.backend.run(
            lambda conn: conn.fetchone(f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE id = ?", (key_id,)),
            write=False,
        )
        return None if row is None else _key_from_row(row)

    def list(self, *, include_revoked: bool = True) -> list[VirtualKey]:
        """Every key by name (no secrets)."""
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self.backend.run(
            lambda conn: conn.fetchall(f"SELECT {_KEY_COLUMNS} FROM gateway_keys {where} ORDER BY name"),
            write=False,
        )
        return [_key_from_row(r) for r in rows]

    def webhook_secret(self, key_id: int) -> str | None:
        """The key's webhook secret (plaintext), to sign callbacks forwarded to its client."""
        row = self.backend.run(
            lambda conn: conn.fetchone("SELECT webhook_secret_enc FROM gateway_keys WHERE id = ?", (key_id,)),
            write=False,
        )
        if row is None or row[0] is None or self._box is None:
            return None
        return self._box.decrypt(row[0])

    @staticmethod
    def _get(conn: Connection, name: str) -> VirtualKey:
        row = conn.fetchone(f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE name = ?", (name,))
        if row is None:
            raise ConfigurationError(f"no key named {name!r}")
        return _key_from_row(row)

    # ----------------------------------------------------------------- verification

    def is_cached(self, authorization: str | None) -> bool:
        """Whether :meth:`authenticate` can answer for this header without reading the database."""
        try:
            token = split_bearer(authorization)
        except CredentialError:
            return True
        ident = self._ident(token)
        if ident is None:
            return True
        entry = self._cache.get(ident)
        return entry is not None and entry.expires > time.monotonic()

    @staticmethod
    def _ident(token: str) -> str | None:
        """The cache/lookup key of a token: ``api:<sha256>`` or ``jwt:<access key>`` (None: malformed JWT)."""
        if "." not in token:
            return "api:" + _hash_api_key(token)
        try:
            return "jwt:" + peek_issuer(token)
        except TokenError:
            return None

    def authenticate(self, authorization: str | None) -> VirtualKey:
        """Verify an ``Authorization`` header; return the key or raise :class:`CredentialError`.

        Codes as Kling's: 1001 empty, 1002 not ``Bearer <token>`` or a malformed JWT, 1000 unknown or revoked
        key or bad signature, 1003 not yet valid (``nbf``), 1004 expired.

        Raises:
            KeyDecryptionError: the key's secret cannot be decrypted with this instance's master key.
        """
        token = split_bearer(authorization)
        ident = self._ident(token)
        if ident is None:
            raise CredentialError(1002, "Authorization is invalid: token is not a JWT with an 'iss' claim")
        entry = self._cache.get(ident)
        if entry is None or entry.expires <= time.monotonic():
            entry = self._load(ident)
        if entry.key.revoked:
            raise CredentialError(1000, "Authentication failed: this key was revoked")
        if ident.startswith("jwt:"):
            assert entry.secret is not None
            now = self._clock()
            try:
                claims = decode_token(token, entry.secret, now=now, leeway=JWT_LEEWAY_SECONDS)
            except TokenError as exc:
                code = _TOKEN_CODES.get(exc.reason, 1000)
                raise CredentialError(code, f"Authorization is invalid: {exc}") from None
            # A leaked long-lived token would be a standing credential; Kling's own sample signs 30 minutes.
            lifetime = claims.expires_at - (claims.not_before or now)
            if lifetime > MAX_TOKEN_LIFETIME_SECONDS:
                raise CredentialError(
                    1002,
                    f"Authorization is invalid: the token is valid for {lifetime:g} s (exp - nbf), more than the "
                    f"gateway's maximum of {MAX_TOKEN_LIFETIME_SECONDS} s (24 h); sign shorter-lived tokens",
                )
        return entry.key

    def _load(self, ident: str) -> _Cached:
        kind, _, value = ident.partition(":")
        column = "api_key_hash" if kind == "api" else "access_key"

        def tx(conn: Connection) -> tuple[Row, str | None] | None:
            row = conn.fetchone(f"SELECT {_KEY_COLUMNS}, secret_enc FROM gateway_keys WHERE {column} = ?", (value,))
            return None if row is None else (row[:-1], row[-1])

        found = self.backend.run(tx, write=False)
        if found is None:
            raise CredentialError(1000, "Authentication failed: unknown key")
        row, secret_enc = found
        key = _key_from_row(row)
        secret: str | None = None
        if kind == "jwt" and not key.revoked:
            if secret_enc is None:
                raise CredentialError(1000, "Authentication failed: unknown key")
            secret = self._require_box().decrypt(secret_enc)
        entry = _Cached(time.monotonic() + self._cache_seconds, key, secret)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[ident] = entry
        return entry

    def _forget(self, key_id: int) -> None:
        with self._lock:
            for ident in [i for i, e in self._cache.items() if e.key.id == key_id]:
                del self._cache[ident]
