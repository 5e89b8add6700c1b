"""``kling-budget db status | upgrade | copy``, through the real entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from kling_budget.budgets import Budget
from kling_budget.cli import main
from kling_budget.cli.db_cmds import open_unmigrated
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.ledger.schema import LATEST_VERSION, MIGRATIONS, apply_migration
from kling_budget.types import Attribution, PackType


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def kb(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        code = exited.value.code
        return Result(0 if code is None else int(code), out, err)

    return run


@pytest.fixture
def pg_url() -> Iterator[str]:
    from tests.pgutil import fresh_postgres_url

    with fresh_postgres_url() as url:
        yield url


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def test_status_then_upgrade_of_a_new_sqlite_file(kb: Any, tmp_path: Path) -> None:
    """A new file is at version 0 with every migration pending until `db upgrade`."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    before = kb("--db", url, "db", "status", "--json").json()
    assert before["schema_version"] == 0 and before["latest_version"] == LATEST_VERSION
    assert [p["version"] for p in before["pending"]] == list(range(1, LATEST_VERSION + 1))
    upgraded = kb("--db", url, "db", "upgrade", "--json").json()
    assert upgraded["applied"] == list(range(1, LATEST_VERSION + 1)) and upgraded["to_version"] == LATEST_VERSION
    after = kb("--db", url, "db", "status")
    assert after.code == 0 and "none" in after.out and str(LATEST_VERSION) in after.out
    again = kb("--db", url, "db", "upgrade")
    assert again.code == 0 and "up to date" in again.out


def test_upgrade_to_7_keeps_the_entry_log_and_its_sequence(kb: Any, tmp_path: Path) -> None:
    """Migration 7 rebuilds a version-6 SQLite ledger's entries with the same rows and seq values, still
    append-only, and later entries continue the sequence without a sqlite_sequence row."""
    url = f"sqlite:///{tmp_path / 'v6.db'}"
    backend = open_unmigrated(url)
    for migration in MIGRATIONS[:6]:

        def apply(conn: Any, migration: Any = migration) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            apply_migration(conn, migration, "sqlite")
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
                (migration.version, migration.name),
            )

        backend.run(apply)
    old = Ledger(backend)
    old.set_budget(Budget.create("account", limit_units=100))
    for key in ("r1", "r2", "r3"):
        old.reserve(key, units_milli=2500, pack_type=PackType.VIDEO, attribution=Attribution(project="p"))
    old.commit("r1")
    old.release("r2")
    log = "SELECT seq, reservation_id, kind, units_milli, usd_nano, at FROM entries ORDER BY seq"
    before = backend.run(lambda c: c.fetchall(log), write=False)
    old.close()
    assert [p["version"] for p in kb("--db", url, "db", "status", "--json").json()["pending"]] == [7, 8]
    assert kb("--db", url, "db", "upgrade", "--json").json()["applied"] == [7, 8]
    ledger = open_ledger(url)
    run = ledger.backend.run
    assert run(lambda c: c.fetchall(log), write=False) == before
    assert run(lambda c: c.fetchone("SELECT 1 FROM sqlite_sequence WHERE name LIKE 'entries%'"), write=False) is None
    ledger.commit("r3")
    after = run(lambda c: c.fetchall(log), write=False)
    assert after[:-1] == before and after[-1][:3] == (before[-1][0] + 1, "r3", "commit")
    with pytest.raises(Exception, match="append-only"):
        run(lambda c: c.execute("DELETE FROM entries WHERE seq = ?", (after[-1][0],)))
    with pytest.raises(Exception, match="append-only"):
        run(lambda c: c.execute("UPDATE entries SET units_milli = 0"))
    duplicate = "INSERT INTO entries (reservation_id, kind, units_milli, usd_nano, at) VALUES ('r1', 'commit', 1, 1, 1)"
    with pytest.raises(Exception, match="UNIQUE"):
        run(lambda c: c.execute(duplicate))
    assert ledger.verify().ok and ledger.budget_status("account").counters.committed_milli == 5000
    ledger.close()


def test_postgres_status_never_shows_the_password(kb: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL (from KLING_BUDGET_DB) is printed without its password (trust auth ignores it here)."""
    monkeypatch.setenv("KLING_BUDGET_DB", _with_password(pg_url, "s3cret-pw"))
    result = kb("db", "status")
    assert result.code == 0, result
    assert "s3cret" not in result.out + result.err
    data = kb("db", "upgrade", "--json").json()
    assert data["to_version"] == LATEST_VERSION
    assert "s3cret" not in json.dumps(data)
    assert kb("db", "status", "--json").json()["pending"] == []


def test_copy_sqlite_to_postgres_and_use_it(kb: Any, tmp_path: Path, pg_url: str) -> None:
    """`db copy` moves the history; the same commands then run on the new URL."""
    source = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = open_ledger(source)
    ledger.set_budget(Budget.create("account", limit_units=100))
    ledger.reserve("r1", units_milli=2500, pack_type=PackType.VIDEO, attribution=Attribution(project="p"))
    ledger.commit("r1")
    ledger.close()
    result = kb("db", "copy", str(tmp_path / "old.db"), pg_url, "--json")
    assert result.code == 0, result
    data = result.json()
    assert data["ok"] and data["rows"]["entries"] == 2 and data["rows"]["budgets"] == 1
    moved = open_ledger(pg_url)
    assert moved.budget_status("account").counters.committed_milli == 2500
    moved.close()
    table = kb("db", "copy", str(tmp_path / "old.db"), pg_url)
    assert table.code == 2 and "not empty" in table.err and len(table.err.strip().splitlines()) == 1


def test_bad_input_is_one_line_and_exit_2(kb: Any, tmp_path: Path) -> None:
    """An unsupported URL scheme or a bad option: one line on stderr, exit 2."""
    result = kb("--db", "mysql://x@y/z", "db", "status")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "unsupported" in result.err
    result = kb("--db", "postgresql://postgres@127.0.0.1/test?timeout=soon", "db", "status")
    assert result.code == 2 and "timeout" in result.err


def test_unreachable_postgres_is_exit_1_without_secrets(kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens: one line naming the server (not the password), exit 1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KLING_BUDGET_DB", f"postgresql://app:hunter2@127.0.0.1:{port}/x?timeout=2")
    result = kb("db", "status")
    assert result.code == 1
    assert "cannot connect" in result.err and "hunter2" not in result.err
    assert len(result.err.strip().splitlines()) == 1
