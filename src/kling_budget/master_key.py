"""The master key: encrypts every secret stored in the ledger (virtual keys' secrets, alert sink secrets).

It comes from ``KLING_BUDGET_MASTER_KEY`` or, when that is unset, from ``master.key`` in the data directory,
created 0600 (in a 0700 directory) on first use. Every process and host sharing a ledger must use the same
master key: set ``KLING_BUDGET_MASTER_KEY`` on each of them, or copy ``master.key``. Secrets are encrypted
with Fernet (AES-128-CBC + HMAC-SHA256); a wrong key is detected, never silently used.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from kling_budget.errors import ConfigurationError, KeyDecryptionError
from kling_budget.private_files import PRIVATE_FILE_MODE, data_dir, prepare_private_file

__all__ = ["MASTER_KEY_ENV", "MASTER_KEY_FILE", "KeyDecryptionError", "SecretBox", "load_master_key"]

MASTER_KEY_ENV = "KLING_BUDGET_MASTER_KEY"
MASTER_KEY_FILE = "master.key"


class SecretBox:
    """Encrypts and decrypts secrets with the master key (Fernet). The key never shows in ``repr``."""

    __slots__ = ("_fernet",)

    def __init__(self, master_key: str | bytes) -> None:
        from cryptography.fernet import Fernet

        try:
            self._fernet = Fernet(master_key)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"{MASTER_KEY_ENV} must be 32 url-safe base64-encoded bytes (generate one with "
                "'python -c \"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"')"
            ) from None

    @staticmethod
    def generate() -> str:
        """A new random master key (url-safe base64 of 32 bytes)."""
        return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")

    def encrypt(self, plaintext: str) -> str:
        """The encrypted form of ``plaintext``, as text."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of ``token`` (:class:`KeyDecryptionError` with a wrong master key)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise KeyDecryptionError(
                f"a stored secret cannot be decrypted: {MASTER_KEY_ENV} (or master.key) is not the key it was "
                "encrypted with; use the same master key on every instance"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(master_key=[REDACTED])"


def load_master_key(
    environ: Mapping[str, str] | None = None, home: Path | None = None, *, create: bool = True
) -> SecretBox:
    """The master key from ``KLING_BUDGET_MASTER_KEY``, else ``<home>/master.key``.

    Args:
        environ: where to read the variable (``os.environ`` by default).
        home: the data directory (default :func:`~kling_budget.private_files.data_dir`).
        create: create ``master.key`` (0600) when it is missing; ``False`` raises
            :class:`ConfigurationError` instead (reading secrets needs the key that encrypted them).
    """
    env = os.environ if environ is None else environ
    given = env.get(MASTER_KEY_ENV, "").strip()
    if given:
        return SecretBox(given)
    path = (home or data_dir()) / MASTER_KEY_FILE
    prepare_private_file(path)
    try:
        return SecretBox(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        if not create:
            raise ConfigurationError(
                f"no master key to decrypt the stored secrets: set {MASTER_KEY_ENV} or put the master.key that "
                f"encrypted them in {path.parent}"
            ) from None
    key = SecretBox.generate()
    # Written to a private temporary file, then linked into place: another process never reads a half-written
    # key, and when two create it at once the first link wins and both use that key.
    temporary = path.with_name(f".{MASTER_KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return SecretBox(path.read_text(encoding="ascii").strip())
    finally:
        temporary.unlink(missing_ok=True)
    return SecretBox(key)
