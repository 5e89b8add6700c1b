"""Virtual keys at rest and the ``kling-budget keys`` / ``serve`` commands."""

from __future__ import annotations

import json
import os
import stat

import pytest

from kling_budget.cli import main
from kling_budget.errors import ConfigurationError
from kling_budget.ledger import open_backend
from kling_budget.server.keys import (
    MASTER_KEY_ENV,
    CredentialError,
    KeyDecryptionError,
    KeyStore,
    SecretBox,
    load_master_key,
)


@pytest.fixture
def store(sqlite_url, tmp_path):
    backend = open_backend(sqlite_url)
    yield KeyStore(backend, load_master_key(environ={}, home=tmp_path / "home"))
    backend.close()


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_secrets_are_hashed_or_encrypted_at_rest(store, sqlite_url):
    """The database holds a SHA-256 of the API key and ciphertext of the secret key, never plaintext."""
    issued = store.create("web", project="p", user="u", tags=["a", "b"], kind="both")
    row = store.backend.run(
        lambda c: c.fetchone("SELECT api_key_hash, secret_enc, webhook_secret_enc FROM gateway_keys"), write=False
    )
    dump = json.dumps(row)
    for secret in (issued.api_key, issued.secret_key, issued.webhook_secret):
        assert secret and secret not in dump
    assert len(row[0]) == 64
    assert issued.api_key not in repr(issued) and issued.secret_key not in repr(issued)
    assert issued.key.tags == ("a", "b") and issued.key.user == "u"


def test_master_key_file_is_created_private_and_reused(tmp_path):
    """Without KLING_BUDGET_MASTER_KEY a master.key with mode 0600 is created once and reused."""
    home = tmp_path / "home"
    first = load_master_key(environ={}, home=home)
    path = home / "master.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = first.encrypt("hello")
    assert load_master_key(environ={}, home=home).decrypt(token) == "hello"
    assert "REDACTED" in repr(first)


def test_wrong_master_key_cannot_decrypt_and_bad_one_is_refused(tmp_path):
    """A different master key cannot read stored secrets; a malformed one is a configuration error."""
    token = SecretBox(SecretBox.generate()).encrypt("s3cret")
    with pytest.raises(KeyDecryptionError):
        SecretBox(SecretBox.generate()).decrypt(token)
    with pytest.raises(ConfigurationError):
        load_master_key(environ={MASTER_KEY_ENV: "not-a-key"}, home=tmp_path)


def test_authenticate_revoke_and_rotate(store):
    """API key works until revoked; rotate replaces credentials; unknown and revoked keys are 1000."""
    issued = store.create("svc", project="p", kind="api")
    assert store.authenticate(f"Bearer {issued.api_key}").name == "svc"
    fresh = store.rotate("svc")
    with pytest.raises(CredentialError) as old:
        store.authenticate(f"Bearer {issued.api_key}")
    assert old.value.code == 1000
    assert store.authenticate(f"Bearer {fresh.api_key}").id == issued.key.id
    store.revoke("svc")
    with pytest.raises(CredentialError) as revoked:
        store.authenticate(f"Bearer {fresh.api_key}")
    assert revoked.value.code == 1000 and "revoked" in str(revoked.value)
    with pytest.raises(ConfigurationError):
        store.create("svc", project="p")
    with pytest.raises(ConfigurationError):
        store.rotate("svc")


def test_keys_cli_create_list_rotate_revoke(capsys, sqlite_url):
    """keys create prints secrets once; list never shows them; rotate and revoke work on the same database."""
    code, out, _ = _run(
        capsys,
        "--db",
        sqlite_url,
        "keys",
        "create",
        "--name",
        "cli",
        "--project",
        "p",
        "--user",
        "bob",
        "--tags",
        "x,y",
        "--kind",
        "both",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    assert created["secret_key"] and created["api_key"] and created["access_key"]
    code, listed, _ = _run(capsys, "--db", sqlite_url, "keys", "list", "--json")
    assert code == 0
    for secret in (created["secret_key"], created["api_key"], created["webhook_secret"]):
        assert secret not in listed
    assert json.loads(listed)[0]["name"] == "cli"
    code, rotated, _ = _run(capsys, "--db", sqlite_url, "keys", "rotate", "cli", "--json")
    assert code == 0 and json.loads(rotated)["api_key"] != created["api_key"]
    code, out, _ = _run(capsys, "--db", sqlite_url, "keys", "revoke", "cli")
    assert code == 0 and "Revoked" in out
    code, table, _ = _run(capsys, "--db", sqlite_url, "keys", "list")
    assert "revoked" in table and created["api_key"] not in table
    code, _, err = _run(capsys, "--db", sqlite_url, "keys", "create", "--name", "cli", "--project", "p")
    assert code == 2 and "already exists" in err


def test_serve_needs_kling_credentials(capsys, sqlite_url):
    """serve without KLING_ACCESS_KEY/KLING_SECRET_KEY or KLING_API_KEY says so in one line (exit 2)."""
    code, _, err = _run(capsys, "--db", sqlite_url, "serve", "--port", "0")
    assert code == 2 and "KLING_ACCESS_KEY" in err and "\n" not in err.strip()


def test_a_different_master_key_cannot_add_or_rotate_keys(capsys, sqlite_url, tmp_path, monkeypatch):
    """keys create/rotate with a master key that cannot read the ledger's secrets fail in one line and store
    nothing; the right key still works."""
    monkeypatch.setenv(MASTER_KEY_ENV, SecretBox.generate())
    code, _, _ = _run(capsys, "--db", sqlite_url, "keys", "create", "--name", "first", "--project", "p")
    assert code == 0
    right = os.environ[MASTER_KEY_ENV]
    monkeypatch.setenv(MASTER_KEY_ENV, SecretBox.generate())
    code, _, err = _run(capsys, "--db", sqlite_url, "keys", "create", "--name", "second", "--project", "p")
    assert code != 0 and "another master key" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--db", sqlite_url, "keys", "rotate", "first")
    assert code != 0 and "another master key" in err
    monkeypatch.setenv(MASTER_KEY_ENV, right)
    code, listed, _ = _run(capsys, "--db", sqlite_url, "keys", "list", "--json")
    assert [k["name"] for k in json.loads(listed)] == ["first"]
    assert json.loads(listed)[0]["rotated_at"] is None
    code, _, _ = _run(capsys, "--db", sqlite_url, "keys", "rotate", "first")
    assert code == 0
