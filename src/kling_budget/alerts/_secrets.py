"""Alert sink secrets: masked wherever they are shown, encrypted with the master key wherever they are stored.

The secrets of a sink are its URL (a Slack incoming webhook or a generic webhook URL, which usually carries
a token), the webhook's signing secret and the SMTP password. In the ledger (``alert_sinks.config``, JSON)
a sink keeps its other settings in the clear, plus

* ``target``: the URL masked (``https://hooks.slack.com/…1234``), so listing sinks needs no key, and
  ``signed`` when the webhook has a signing secret;
* ``sealed``: the secret fields as one JSON object encrypted with the master key
  (:class:`~kling_budget.master_key.SecretBox`, the key that also encrypts the gateway's virtual keys).

:func:`seal` produces that form, :func:`unseal` restores the secrets to deliver; ledger migration 4 seals the
sinks stored in plaintext by earlier versions (:func:`seal_stored_sinks`). Every process that delivers
alerts needs the same master key (``KLING_BUDGET_MASTER_KEY`` or ``master.key``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from kling_budget.errors import KeyDecryptionError
from kling_budget.ledger.backend import Connection
from kling_budget.master_key import SecretBox, load_master_key

__all__ = [
    "SECRET_FIELDS",
    "check_master_key",
    "mask_url",
    "redact",
    "seal",
    "seal_stored_sinks",
    "secrets_of",
    "unseal",
]

SECRET_FIELDS = ("url", "signing_secret", "password")
_SEALED = "sealed"
_TARGET = "target"


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/abcd1234`` → ``https://hooks.slack.com/…1234``.

    Scheme, host and port stay (not secret, needed to tell sinks apart); the path, query and any
    credentials are replaced by ``…`` and the last four characters.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "…"
    rest = url[len(f"{parts.scheme}://{parts.netloc}") :] if parts.netloc else url
    tail = rest[-4:] if len(rest) > 8 else ""
    return f"{parts.scheme}://{host}{port}/…{tail}"


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (and every URL among them, masked) removed; one line."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        replacement = mask_url(secret) if "://" in secret else "****"
        text = text.replace(secret, replacement)
    return " ".join(text.split())


def is_sealed(config: Mapping[str, Any]) -> bool:
    """Whether a stored configuration keeps its secrets encrypted (or has none)."""
    return not any(config.get(field) for field in SECRET_FIELDS)


def seal(config: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """The form of ``config`` to store: its secret fields encrypted in ``sealed``, the URL masked in ``target``."""
    secret = {field: str(config[field]) for field in SECRET_FIELDS if config.get(field)}
    public = {k: v for k, v in config.items() if k not in SECRET_FIELDS}
    if "url" in secret:
        public[_TARGET] = mask_url(secret["url"])
    if "signing_secret" in secret:
        public["signed"] = True
    if secret:
        public[_SEALED] = box.encrypt(json.dumps(secret, sort_keys=True))
    return public


def unseal(config: Mapping[str, Any], box: SecretBox | None = None) -> dict[str, Any]:
    """``config`` with its secrets decrypted (the master key is loaded when ``box`` is not given).

    Raises:
        KeyDecryptionError: the master key is not the one that sealed it.
        ConfigurationError: there is no master key at all.
    """
    sealed = config.get(_SEALED)
    if not sealed:
        return dict(config)
    opened = (box or load_master_key(create=False)).decrypt(str(sealed))
    public = {k: v for k, v in config.items() if k not in (_SEALED, _TARGET, "signed")}
    return {**public, **json.loads(opened)}


def secrets_of(config: Mapping[str, Any], box: SecretBox | None = None) -> list[str]:
    """The secret strings of a sink's configuration (sealed or not), to scrub from any message."""
    plain = unseal(config, box)
    return [str(plain[field]) for field in SECRET_FIELDS if plain.get(field)]


def check_master_key(conn: Connection, box: SecretBox) -> None:
    """Refuse to encrypt with a key that cannot read the ledger's existing secrets.

    A ledger holds secrets under one master key; a process with another key (a host without
    ``KLING_BUDGET_MASTER_KEY`` that made its own ``master.key``) must not add secrets nobody else can read.

    Raises:
        KeyDecryptionError: an existing virtual key or sink secret does not decrypt with ``box``.
    """
    row = conn.fetchone("SELECT webhook_secret_enc FROM gateway_keys WHERE webhook_secret_enc IS NOT NULL LIMIT 1")
    tokens = [str(row[0])] if row else []
    for (text,) in conn.fetchall("SELECT config FROM alert_sinks ORDER BY id"):
        sealed = json.loads(text).get(_SEALED)
        if sealed:
            tokens.append(str(sealed))
            break
    for token in tokens:
        try:
            box.decrypt(token)
        except KeyDecryptionError:
            raise KeyDecryptionError(
                "this ledger's secrets are encrypted with another master key: set KLING_BUDGET_MASTER_KEY "
                "(or copy master.key) to the key the gateway and the other hosts sharing this ledger use"
            ) from None


def seal_stored_sinks(conn: Connection, box: SecretBox | None = None) -> int:
    """Encrypt the secrets of every sink stored in plaintext; return how many (ledger migration 4).

    The master key is loaded (and ``master.key`` created) only when there is something to encrypt.
    """
    plain = [(int(r[0]), json.loads(r[1])) for r in conn.fetchall("SELECT id, config FROM alert_sinks ORDER BY id")]
    plain = [(sink_id, config) for sink_id, config in plain if not is_sealed(config)]
    if not plain:
        return 0
    box = box or load_master_key()
    check_master_key(conn, box)
    for sink_id, config in plain:
        merged = {**unseal(config, box), **{k: v for k, v in config.items() if k in SECRET_FIELDS}}
        conn.execute(
            "UPDATE alert_sinks SET config = ? WHERE id = ?", (json.dumps(seal(merged, box), sort_keys=True), sink_id)
        )
    return len(plain)
