"""Secrets at rest on disk: the data directory is 0700, the ledger's files and master.key 0600, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_budget import CostTracker
from kling_budget.cli import main
from kling_budget.ledger import open_ledger
from kling_budget.server.keys import load_master_key

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: without care every new file would be 0666 and every directory 0777."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_new_data_dir_ledger_wal_shm_and_master_key_are_private(isolated_env: Path, permissive_umask: None) -> None:
    """A first run creates $KLING_BUDGET_HOME 0700 and ledger.db, -wal, -shm and master.key 0600."""
    home = isolated_env
    assert not home.exists()
    tracker = CostTracker()  # the default ledger: $KLING_BUDGET_HOME/ledger.db
    try:
        tracker.set_budget("team", limit_units=10)  # a write: SQLite creates the -wal and -shm files
        files = [home / "ledger.db", home / "ledger.db-wal", home / "ledger.db-shm"]
        assert all(f.exists() for f in files)
        load_master_key()
        files.append(home / "master.key")
        assert mode(home) == 0o700
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
    finally:
        tracker.close()


def test_a_new_directory_for_a_db_path_is_private(tmp_path: Path, permissive_umask: None) -> None:
    """``--db`` naming a file in a directory that does not exist yet creates that directory 0700."""
    target = tmp_path / "ledgers" / "prod" / "ledger.db"
    with pytest.raises(SystemExit) as exited:
        main(["--db", str(target), "budget", "set", "all", "--limit-units", "5"])
    assert exited.value.code == 0
    assert mode(target.parent) == 0o700 and mode(target) == 0o600


def test_existing_open_ledger_files_and_master_key_are_tightened_with_a_warning(
    tmp_path: Path, isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ledger and master.key left 0644 (an older version, a copy) are made 0600 when opened, with a warning."""
    path = tmp_path / "old" / "ledger.db"
    first = open_ledger(path)  # stays open: its -wal and -shm files exist
    try:
        first.recent_alerts()
        files = [path, path.with_name("ledger.db-wal"), path.with_name("ledger.db-shm")]
        for f in files:
            os.chmod(f, 0o644)
        key = load_master_key()
        os.chmod(isolated_env / "master.key", 0o644)
        with caplog.at_level(logging.WARNING, logger="kling_budget"):
            second = open_ledger(path)
            second.close()
            assert load_master_key().decrypt(key.encrypt("same key")) == "same key"
        assert [oct(mode(f)) for f in [*files, isolated_env / "master.key"]] == ["0o600"] * 4
        warned = " ".join(r.getMessage() for r in caplog.records)
        for f in [*files, isolated_env / "master.key"]:
            assert f"tightened the permissions of {f} from 644 to 600" in warned
    finally:
        first.close()


def test_an_open_home_is_warned_about_and_the_default_data_dir_tightened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A $KLING_BUDGET_HOME others can enter is only warned about (it may be shared on purpose); the
    platform's own data directory for kling-budget is tightened to 0700."""
    home = tmp_path / "shared-home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    monkeypatch.setenv("KLING_BUDGET_HOME", str(home))
    with caplog.at_level(logging.WARNING, logger="kling_budget"):
        open_ledger().close()
    assert mode(home) == 0o755
    assert f"KLING_BUDGET_HOME {home} is open to others (mode 755)" in caplog.text

    monkeypatch.delenv("KLING_BUDGET_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    default = tmp_path / "xdg" / "kling-budget"
    default.mkdir(parents=True)
    os.chmod(default, 0o755)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kling_budget"):
        open_ledger().close()
    assert (default / "ledger.db").exists()
    assert mode(default) == 0o700 and mode(default / "ledger.db") == 0o600
    assert f"tightened the permissions of the data directory {default} from 755 to 700" in caplog.text


def test_a_file_that_is_not_a_ledger_keeps_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--db`` pointing at someone's text file is refused and the file is left exactly as it was."""
    other = tmp_path / "notes.txt"
    other.write_text("not a database\n" * 100)
    os.chmod(other, 0o644)
    with pytest.raises(SystemExit) as exited:
        main(["--db", str(other), "budget", "list"])
    assert exited.value.code == 1
    assert mode(other) == 0o644
    assert capsys.readouterr().err.startswith("error: ")
