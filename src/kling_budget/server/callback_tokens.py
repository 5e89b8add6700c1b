"""Per-reservation callback URLs: ``<public-url>/callbacks/kling/<reservation id>/<token>``.

The token is HMAC-SHA256 of the reservation id under a random key created once and kept in the ledger's
``meta`` table, encrypted with the master key: every instance sharing the database (and the master key)
issues and accepts the same tokens, and nothing but the gateway and Kling ever sees one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import quote as url_quote

from kling_budget.ledger.backend import Backend, Connection
from kling_budget.master_key import SecretBox

__all__ = ["CallbackTokens"]

_KEY_META = "gateway_callback_key"
_TOKEN_BYTES = 24


class CallbackTokens:
    """Per-reservation callback tokens: HMAC-SHA256 of the reservation id under a key shared through the ledger.

    Args:
        key: the raw HMAC key (see :meth:`load`).
        base_url: ``<public-url>/callbacks/kling``.
    """

    __slots__ = ("_key", "base_url")

    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"CallbackTokens({self.base_url!r}, key=[REDACTED])"

    @classmethod
    def load(cls, backend: Backend, box: SecretBox, base_url: str) -> CallbackTokens:
        """The key kept in the ledger's ``meta`` table (encrypted with the master key), created on first use."""
        fresh = box.encrypt(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"))

        def tx(conn: Connection) -> str:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (_KEY_META, fresh))
            row = conn.fetchone("SELECT value FROM meta WHERE key = ?", (_KEY_META,))
            assert row is not None
            return str(row[0])

        stored = backend.run(tx)
        return cls(base64.urlsafe_b64decode(box.decrypt(stored)), base_url)

    def token(self, reservation_id: str) -> str:
        """The token of one reservation (192 bits, url-safe)."""
        digest = hmac.new(self._key, b"kling-callback\x00" + reservation_id.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_TOKEN_BYTES]).decode("ascii")

    def url_for(self, reservation_id: str) -> str:
        """The callback URL Kling gets for this reservation."""
        return f"{self.base_url}/{url_quote(reservation_id, safe='')}/{self.token(reservation_id)}"

    def verify(self, reservation_id: str, token: str) -> bool:
        """Constant-time check of a token from a callback URL."""
        if len(token) > 64 or len(reservation_id) > 200 or not token.isascii():
            return False
        return hmac.compare_digest(self.token(reservation_id).encode("ascii"), token.encode("ascii"))
