"""Alert sink secrets at rest: ciphertext in real SQLite and PostgreSQL ledgers, migrated from plaintext, copied
by ``db copy``, and still delivering for real (aiosmtpd, a loopback webhook) after encryption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from kling_budget.cli.db_cmds import open_unmigrated
from kling_budget.ledger import open_backend
from kling_budget.ledger.schema import LATEST_VERSION, MIGRATIONS, statements_for
from kling_budget.server.keys import KeyStore, SecretBox, load_master_key
from tests.alert_receivers import HTTPReceiver, free_port, http_receiver, smtp_server
from tests.jobfixtures import run_cli

SMTP_PASSWORD = "s3cret-pass"  # the account tests.alert_receivers.smtp_server accepts


@pytest.fixture
def kb(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``kling-budget ARGS...`` in-process through the real entry point."""
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    with http_receiver() as running:
        yield running


def stored_configs(url: str, *, migrate: bool = True) -> list[tuple[str, str]]:
    """(kind, config column as stored) of every sink, read straight from the table (``migrate=False``: without
    upgrading the ledger first)."""
    backend = open_backend(url) if migrate else open_unmigrated(url)
    try:
        rows = backend.run(lambda c: c.fetchall("SELECT kind, config FROM alert_sinks ORDER BY id"), write=False)
    finally:
        backend.close()
    return [(str(kind), str(config)) for kind, config in rows]


def write_secret(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text + "\n", encoding="utf-8")
    return str(path)


def test_cli_added_sinks_are_ciphertext_in_the_table(
    kb: Any, ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    """Slack URL, webhook URL, signing secret and SMTP password are stored encrypted with the master key, on
    SQLite and PostgreSQL; the listing and its JSON show them masked and no master key is needed to list."""
    slack = f"http://127.0.0.1:{receiver.port}/services/T000/B000/slackTOKENxyz"
    signing = "whsec_" + "c2lnbmluZy1zZWNyZXQtZm9yLXRlc3Rz"
    monkeypatch.setenv("KLING_BUDGET_SLACK_URL", slack)
    assert kb("--db", ledger_url, "alerts", "add", "slack").code == 0
    monkeypatch.delenv("KLING_BUDGET_SLACK_URL")
    webhook = kb(
        "--db", ledger_url, "alerts", "add", "webhook", "--url-file", write_secret(tmp_path, "url", receiver.url),
        "--signing-secret-file", write_secret(tmp_path, "signing", signing),
    )  # fmt: skip
    assert webhook.code == 0 and webhook.out.strip().endswith("/…abcd (signed)")
    email = kb(
        "--db", ledger_url, "alerts", "add", "email", "--host", "smtp.example.com", "--username", "alerts",
        "--password-file", write_secret(tmp_path, "pw", SMTP_PASSWORD), "--from", "a@example.com",
        "--to", "ops@example.com",
    )  # fmt: skip
    assert email.code == 0

    stored = stored_configs(ledger_url)
    table = json.dumps(stored)
    for secret in ("slackTOKENxyz", "secret-token-abcd", signing, "c2lnbmluZy1zZWNyZXQtZm9yLXRlc3Rz", SMTP_PASSWORD):
        assert secret not in table
    box = load_master_key(create=False)
    opened = [json.loads(box.decrypt(json.loads(config)["sealed"])) for _, config in stored]
    assert opened == [{"url": slack}, {"url": receiver.url, "signing_secret": signing}, {"password": SMTP_PASSWORD}]

    monkeypatch.setenv("KLING_BUDGET_HOME", str(tmp_path / "a-host-without-the-key"))
    listed = kb("--db", ledger_url, "alerts", "list", "--json")
    text = kb("--db", ledger_url, "alerts", "list").out
    assert listed.code == 0
    assert [s["target"] for s in listed.json()["sinks"]] == [
        f"http://127.0.0.1:{receiver.port}/…Nxyz",
        f"http://127.0.0.1:{receiver.port}/…abcd (signed)",
        "alerts@smtp.example.com:587 (starttls, password ****) → ops@example.com",
    ]
    for secret in ("slackTOKENxyz", "secret-token-abcd", signing, SMTP_PASSWORD, "sealed", "gAAAA"):
        assert secret not in listed.out + text


def test_encrypted_sinks_deliver_smtp_and_a_signed_webhook(
    kb: Any, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    """After encryption a real SMTP server (STARTTLS + login) gets the mail with the stored password, and the
    webhook gets a delivery that the reference Standard Webhooks library verifies with the printed secret."""
    monkeypatch.setenv("KLING_BUDGET_ALERT_URL", receiver.url)
    added = kb("--db", sqlite_url, "alerts", "add", "webhook", "--sign")
    assert added.code == 0, added
    secret = added.out.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    assert secret.startswith("whsec_") and secret not in json.dumps(stored_configs(sqlite_url))
    with smtp_server(tmp_path) as server:
        monkeypatch.setenv("KLING_BUDGET_SMTP_PASSWORD", SMTP_PASSWORD)
        email = kb(
            "--db", sqlite_url, "alerts", "add", "email", "--host", server.host, "--port", str(server.port),
            "--username", "alerts", "--from", "alerts@example.com", "--to", "ops@example.com",
            "--cafile", str(server.cafile),
        )  # fmt: skip
        assert email.code == 0, email
        monkeypatch.delenv("KLING_BUDGET_SMTP_PASSWORD")
        sent = kb("--db", sqlite_url, "alerts", "test")
        assert sent.code == 0, sent
        assert server.logins == ["alerts"] and len(server.messages) == 1
    [delivery] = receiver.received
    assert Webhook(secret).verify(delivery.raw, delivery.headers)["test"] is True
    assert delivery.headers["webhook-id"] == delivery.body["dedupe_key"]
    assert SMTP_PASSWORD not in sent.out + sent.err and "secret-token" not in sent.out + sent.err


def _ledger_at_version_3(url: str) -> None:
    """A ledger exactly as the previous release left it: schema 3, no migration 4."""
    backend = open_unmigrated(url)
    try:
        for migration in MIGRATIONS[:3]:

            def apply(conn: Any, migration: Any = migration) -> None:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                )
                for sql in statements_for(migration, backend.dialect):
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
                    (migration.version, migration.name),
                )

            backend.run(apply)
    finally:
        backend.close()


def _store_plaintext_sinks(url: str, sinks: list[tuple[str, dict[str, Any]]]) -> None:
    """Insert sinks the way the previous release stored them: the whole config, secrets included, as JSON."""
    backend = open_unmigrated(url)
    try:
        for kind, config in sinks:
            backend.run(
                lambda c, kind=kind, config=config: c.execute(
                    "INSERT INTO alert_sinks (kind, budget, kinds, config, enabled, created_at) "
                    "VALUES (?, '', '', ?, 1, 0)",
                    (kind, json.dumps(config, sort_keys=True)),
                )
            )
    finally:
        backend.close()


def test_plaintext_sinks_of_an_older_ledger_are_encrypted_by_migration_and_still_deliver(
    kb: Any, ledger_url: str, tmp_path: Path, receiver: HTTPReceiver
) -> None:
    """Opening a schema-3 ledger applies migration 4: the plaintext webhook URL, Slack URL and SMTP password
    become ciphertext, and all three sinks deliver a real test alert afterwards (SQLite and PostgreSQL)."""
    slack = f"http://127.0.0.1:{receiver.port}/services/T1/B1/slackTOKENold"
    with smtp_server(tmp_path) as server:
        _ledger_at_version_3(ledger_url)
        _store_plaintext_sinks(
            ledger_url,
            [
                ("webhook", {"url": receiver.url, "timeout": 5.0, "attempts": 1}),
                ("slack", {"url": slack, "timeout": 5.0, "attempts": 1}),
                (
                    "email",
                    {
                        "host": server.host, "port": server.port, "sender": "alerts@example.com",
                        "recipients": ["ops@example.com"], "username": "alerts", "password": SMTP_PASSWORD,
                        "starttls": True, "ssl": False, "cafile": str(server.cafile), "attempts": 1,
                    },
                ),
            ],
        )  # fmt: skip
        assert SMTP_PASSWORD in json.dumps(stored_configs(ledger_url, migrate=False))

        status = kb("--db", ledger_url, "db", "upgrade", "--json")
        assert status.code == 0 and status.json()["applied"] == list(range(4, LATEST_VERSION + 1)), status

        table = json.dumps(stored_configs(ledger_url))
        for secret in ("secret-token-abcd", "slackTOKENold", SMTP_PASSWORD):
            assert secret not in table
        assert table.count("sealed") == 3

        sent = kb("--db", ledger_url, "alerts", "test")
        assert sent.code == 0, sent
        assert server.logins == ["alerts"] and len(server.messages) == 1
    assert sorted(r.path for r in receiver.received) == ["/hook/secret-token-abcd", "/services/T1/B1/slackTOKENold"]


def test_migration_refuses_a_master_key_that_cannot_read_the_ledger(
    kb: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose master key differs from the one the ledger's virtual keys use does not seal the sinks with
    it (nobody else could read them): one error line, nothing changed; the right key then migrates."""
    right = SecretBox.generate()
    _ledger_at_version_3(sqlite_url)
    backend = open_unmigrated(sqlite_url)
    KeyStore(backend, SecretBox(right)).create("web", project="p")
    backend.close()
    _store_plaintext_sinks(sqlite_url, [("slack", {"url": "https://hooks.slack.com/services/T/B/oldTOKEN"})])

    monkeypatch.setenv("KLING_BUDGET_MASTER_KEY", SecretBox.generate())
    refused = kb("--db", sqlite_url, "alerts", "list")
    assert refused.code == 1 and refused.err.count("\n") == 1
    assert refused.err.startswith("error: this ledger's secrets are encrypted with another master key")
    assert "oldTOKEN" in json.dumps(stored_configs(sqlite_url, migrate=False))  # rolled back: still schema 3

    monkeypatch.setenv("KLING_BUDGET_MASTER_KEY", right)
    assert kb("--db", sqlite_url, "alerts", "list").code == 0
    assert "oldTOKEN" not in json.dumps(stored_configs(sqlite_url))


def test_a_wrong_master_key_never_adds_or_leaks_and_listing_needs_none(
    kb: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With another master key, adding a sink is refused (keys never mix) and sending says the secret cannot be
    decrypted, one line without the URL; listing still works."""
    monkeypatch.setenv("KLING_BUDGET_MASTER_KEY", SecretBox.generate())
    monkeypatch.setenv("KLING_BUDGET_ALERT_URL", "https://ops.example.com/hooks/firstTOKEN")
    assert kb("--db", sqlite_url, "alerts", "add", "webhook").code == 0
    monkeypatch.setenv("KLING_BUDGET_MASTER_KEY", SecretBox.generate())
    monkeypatch.setenv("KLING_BUDGET_ALERT_URL", "https://ops.example.com/hooks/secondTOKEN")
    added = kb("--db", sqlite_url, "alerts", "add", "webhook")
    assert added.code == 1 and "encrypted with another master key" in added.err and added.err.count("\n") == 1
    assert len(stored_configs(sqlite_url)) == 1
    sent = kb("--db", sqlite_url, "alerts", "test", "1")
    assert sent.code == 1 and "cannot be decrypted" in sent.err and sent.err.count("\n") == 1
    listed = kb("--db", sqlite_url, "alerts", "list")
    assert listed.code == 0 and "https://ops.example.com/…OKEN" in listed.out
    everything = added.out + added.err + sent.out + sent.err + listed.out + caplog.text
    assert "firstTOKEN" not in everything and "secondTOKEN" not in everything


def test_db_copy_moves_the_ciphertext_and_the_copy_delivers(
    kb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HTTPReceiver
) -> None:
    """``db copy`` SQLite → PostgreSQL copies the sealed sinks as they are (still ciphertext) and, with the same
    master key, the copy delivers."""
    from tests.pgutil import fresh_postgres_url

    source = f"sqlite:///{tmp_path / 'source.db'}"
    monkeypatch.setenv("KLING_BUDGET_ALERT_URL", receiver.url)
    assert kb("--db", source, "alerts", "add", "webhook", "--sign").code == 0
    with fresh_postgres_url() as destination:
        copied = kb("db", "copy", source, destination, "--json")
        assert copied.code == 0 and copied.json()["rows"]["alert_sinks"] == 1, copied
        assert stored_configs(destination) == stored_configs(source)
        assert "secret-token-abcd" not in json.dumps(stored_configs(destination))
        sent = kb("--db", destination, "alerts", "test")
        assert sent.code == 0, sent
    [delivery] = receiver.received
    assert delivery.body["test"] is True and "webhook-signature" in delivery.headers


_WITHOUT_SERVER_EXTRA = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoServerExtra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {"starlette", "uvicorn", "httptools", "uvloop"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoServerExtra())
    from kling_budget.cli import main
    main(sys.argv[1:])
    """
)


def test_sinks_are_encrypted_and_deliver_without_the_server_extra(tmp_path: Path, receiver: HTTPReceiver) -> None:
    """A process without Starlette/uvicorn (no ``server`` extra) still encrypts a new sink and delivers to it."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_BUDGET_")}
    env |= {"KLING_BUDGET_HOME": str(tmp_path / "home"), "KLING_BUDGET_ALERT_URL": receiver.url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _WITHOUT_SERVER_EXTRA, "--db", db, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    added = run("alerts", "add", "webhook")
    assert added.returncode == 0, added.stderr
    assert "secret-token-abcd" not in json.dumps(stored_configs(db))
    sent = run("alerts", "test")
    assert sent.returncode == 0, sent.stderr
    assert [b["test"] for b in receiver.bodies()] == [True]


def test_reprs_logs_and_recorded_errors_of_a_sealed_sink_hold_no_secret(
    kb: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sealed sink's object repr, its stored SinkConfig repr, the failure log line and the recorded last error
    show the URL masked and never the signing secret."""
    from kling_budget.alerts._dispatch import _configured_entry
    from kling_budget.alerts._sinks import build_sink
    from kling_budget.ledger.outbox import Outbox

    url = f"http://127.0.0.1:{free_port()}/hooks/deadTOKEN"
    signing = "whsec_" + "ZGVhZC1zaWduaW5nLXNlY3JldA=="
    monkeypatch.setenv("KLING_BUDGET_ALERT_URL", url)
    monkeypatch.setenv("KLING_BUDGET_ALERT_SIGNING_SECRET", signing)
    assert kb("--db", sqlite_url, "alerts", "add", "webhook", "--sign", "--retries", "1", "--timeout", "1").code == 0
    with caplog.at_level("WARNING", logger="kling_budget"):
        failed = kb("--db", sqlite_url, "alerts", "test")
    assert failed.code == 1
    backend = open_backend(sqlite_url)
    try:
        [sink] = Outbox(backend).sinks()
    finally:
        backend.close()
    entry = repr(_configured_entry(sink))  # what the dispatcher holds: the sink and its secrets, to redact errors
    shown = [
        repr(sink),
        repr(build_sink(sink.kind, sink.config)),
        entry,
        sink.status.last_error,
        failed.out,
        caplog.text,
    ]
    assert "deadTOKEN" not in " ".join(shown) and signing not in " ".join(shown) and "ZGVhZC1z" not in " ".join(shown)
    assert "…OKEN" in repr(build_sink(sink.kind, sink.config))
