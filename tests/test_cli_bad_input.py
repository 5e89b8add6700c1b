"""Every command with bad input: one `error:` line on stderr, the documented exit code, nothing changed.

Each case runs the real console entry point against a copy of a seeded ledger and compares every table of
the ledger before and after.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kling_budget.cli import main
from kling_budget.pricing import PriceTable
from kling_budget.tracker import CostTracker

TURBO = ["--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5"]
LONG = "/tmp/" + "a" * 5000  # a file name no filesystem accepts
PACK = ["packs", "add", "pk2", "--units", "10", "--price", "1"]  # a valid pack, made invalid by what follows
OK_RECORD = '{"job_id": "ok-1", "model": "kling-v1", "duration": 5, "credits_used": 10, "timestamp": "2025-01-13"}'


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with a budget, a pack, an open hold, a committed and a released reservation, a recorded job."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    with CostTracker(f"sqlite:///{path}", prices=PriceTable.default(), alert_sinks=[]) as tracker:
        tracker.set_budget("b1", project_id="p1", period="daily", limit_units=100)
        tracker.add_pack("pk1", units=1000, price_usd=100)
        tracker.reserve(model="kling-v2-5-turbo", mode="std", duration=5, project_id="p1", key="r1")
        tracker.reserve(model="kling-v2-5-turbo", mode="std", duration=5, project_id="p1", key="c1").commit()
        tracker.reserve(model="kling-v2-5-turbo", mode="std", duration=5, project_id="p1", key="x1").release()
        tracker.record_usage("j1", 5, "kling-v2-6", project_id="p1", mode="pro")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Bad input files, by placeholder name."""
    bad_record = (
        '{"records": [' + OK_RECORD + ', {"job_id": "bad-2", "model": "kling-nope", "timestamp": "2025-01-13"}]}'
    )
    contents: dict[str, str | bytes] = {
        "bad_json": "{not json",
        "not_utf8": b"\xff\xfe\x00garbage",
        "not_object": "42",
        "bad_record": bad_record,
        "bad_timestamp": '[{"job_id": "t", "model": "kling-v1", "duration": 5, "timestamp": "yesterday"}]',
        "bad_period": '{"budgets": {"p": {"period": "yearly", "limit_usd": 10}}}',
        "no_limit": '{"budgets": {"p": {"period": "monthly"}}}',
        "bad_threshold": '{"budgets": {"p": {"limit_usd": 10, "alert_threshold": "lots"}}}',
        "conflict": '[{"job_id": "r1", "model": "kling-v1", "duration": 5, "timestamp": "2025-01-13T10:00:00"}]',
        "bad_toml": "version = [",
    }
    paths = {}
    for name, content in contents.items():
        path = tmp_path / f"{name}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        paths[name] = str(path)
    paths["missing"] = str(tmp_path / "missing.json")
    paths["directory"] = str(tmp_path)
    return paths


# (id, arguments, exit code, fragments the one error line must contain). "{name}" is replaced by a file
# from `files`; a case that gives its own `--db` is run without the test ledger's.
CASES: list[tuple[str, list[str], int, tuple[str, ...]]] = [
    # pricing, through every command that prices a request
    ("price-unknown-model", ["price", "--model", "kling-v9"], 2, ("unknown model 'kling-v9'", "kling-v2-6")),
    ("price-unknown-mode", ["price", "--model", "kling-v2-6", "--mode", "ultra"], 2, ("'ultra'", "std, pro")),
    ("price-bad-duration", ["price", "--model", "kling-v2-6", "--mode", "pro", "--duration", "7"], 2, ("5, 10",)),
    ("price-text-duration", ["price", "--duration", "five"], 2, ("duration", "'five'")),
    ("price-negative-duration", ["price", "--duration", "-5"], 2, ("duration must be positive",)),
    ("price-unknown-resolution", ["price", "--model", "kling-v3", "--resolution", "8k"], 2, ("'8k'", "720p")),
    ("price-unknown-product", ["price", "--product", "hologram"], 2, ("unknown product 'hologram'", "video")),
    ("price-n-not-integer", ["price", "-n", "two"], 2, ("'-n'", "not a valid integer")),
    ("price-n-out-of-range", ["price", "--product", "image", "--model", "kling-v2", "-n", "100"], 2, ("n=100",)),
    ("price-bad-sound", ["price", "--sound", "loud"], 2, ("'--sound'", "'on', 'off'")),
    ("price-unknown-option", ["price", "--colour", "red"], 2, ("No such option", "--help")),
    ("prices-file-missing", ["--prices", "{missing}", "price"], 2, ("no such price file",)),
    ("prices-file-invalid", ["--prices", "{bad_toml}", "price"], 2, ("not valid TOML",)),
    ("check-unknown-model", ["check", "--model", "kling-v9", "--project", "p1"], 2, ("unknown model 'kling-v9'",)),
    # budget set
    ("limit-not-a-number", ["budget", "set", "b2", "--limit-units", "lots"], 2, ("limit in units", "like 1.5")),
    ("limit-negative", ["budget", "set", "b2", "--limit-units", "-5"], 2, ("greater than 0",)),
    ("limit-zero-usd", ["budget", "set", "b2", "--limit-usd", "0"], 2, ("limit in USD must be greater than 0",)),
    ("limit-too-precise", ["budget", "set", "b2", "--limit-units", "1.0001"], 2, ("more than 3 decimal places",)),
    ("usd-too-precise", ["budget", "set", "b2", "--limit-usd", "0.0000000001"], 2, ("more than 9 decimal places",)),
    ("limit-nan", ["budget", "set", "b2", "--limit-units", "NaN"], 2, ("plain decimal", "'NaN'")),
    ("limit-exponent", ["budget", "set", "b2", "--limit-units", "1e999999"], 2, ("no exponent", "'1e999999'")),
    ("limit-5000-digits", ["budget", "set", "b2", "--limit-usd", "9" * 5000], 2, ("at most 20 digits",)),
    ("limit-missing", ["budget", "set", "b2"], 2, ("needs a limit", "--limit-units")),
    ("existing-budget-bad-limit", ["budget", "set", "b1", "--limit-units", "x"], 2, ("limit in units",)),
    ("unknown-period", ["budget", "set", "b2", "--limit-units", "5", "--period", "yearly"], 2, ("'yearly'", "daily")),
    ("unknown-timezone", ["budget", "set", "b2", "--limit-units", "5", "--timezone", "Mars/Olympus"], 2, ("IANA",)),
    ("unknown-week-start", ["budget", "set", "b2", "--limit-units", "5", "--week-start", "funday"], 2, ("monday",)),
    ("threshold-zero", ["budget", "set", "b2", "--limit-units", "5", "--alert-at", "0,80"], 2, ("'0'", "1 and 1000")),
    ("threshold-too-big", ["budget", "set", "b2", "--limit-units", "5", "--alert-at", "1001"], 2, ("1 and 1000",)),
    ("threshold-text", ["budget", "set", "b2", "--limit-units", "5", "--alert-at", "half"], 2, ("'half'",)),
    ("bad-budget-name", ["budget", "set", "no spaces", "--limit-units", "5"], 2, ("budget name", "letters")),
    ("unknown-unit-pack", ["budget", "set", "b2", "--limit-units", "5", "--unit-pack", "audio"], 2, ("'video'",)),
    ("unknown-scope-model", ["budget", "set", "b2", "--limit-units", "5", "--model", "kling-v9"], 2, ("kling-v9",)),
    ("show-unknown-budget", ["budget", "show", "nope"], 2, ("no budget named 'nope'", "existing: b1")),
    ("delete-unknown-budget", ["budget", "delete", "nope"], 2, ("no budget named 'nope'",)),
    ("delete-unknown-budget-yes", ["budget", "delete", "nope", "--yes"], 2, ("no budget named 'nope'",)),
    # reserve
    ("ttl-format", ["reserve", *TURBO, "--ttl", "10 minutes"], 2, ("--ttl", "90s, 10m, 2h or 1d")),
    ("ttl-no-unit", ["reserve", *TURBO, "--ttl", "600"], 2, ("--ttl", "'600'")),
    ("ttl-zero", ["reserve", *TURBO, "--ttl", "0s"], 2, ("--ttl must be positive",)),
    ("ttl-huge", ["reserve", *TURBO, "--ttl", "99999999999d"], 2, ("at most 365d",)),
    ("reserve-unknown-model", ["reserve", "--model", "kling-v9", "--project", "p1"], 2, ("unknown model",)),
    ("reserve-empty-key", ["reserve", *TURBO, "--key", ""], 2, ("key must be a non-empty string",)),
    ("reserve-key-conflict", ["reserve", *TURBO, "--project", "other", "--key", "r1"], 2, ("'r1'", "different")),
    # commit / release
    ("commit-unknown-id", ["commit", "nope"], 2, ("no reservation with id 'nope'",)),
    ("commit-units-text", ["commit", "r1", "--units", "all"], 2, ("charged units", "like 1.5")),
    ("commit-units-negative", ["commit", "r1", "--units", "-1"], 2, ("charged units cannot be negative",)),
    ("commit-units-precise", ["commit", "r1", "--units", "1.00001"], 2, ("more than 3 decimal places",)),
    ("commit-released", ["commit", "x1"], 1, ("reservation x1 is released",)),
    ("commit-other-units", ["commit", "c1", "--units", "9"], 1, ("already committed with 1.5 units",)),
    ("release-unknown-id", ["release", "nope"], 2, ("no reservation with id 'nope'",)),
    ("release-committed", ["release", "c1"], 1, ("reservation c1 is committed",)),
    # record
    ("record-no-job-id", ["record", *TURBO], 2, ("Missing option '--job-id'",)),
    ("record-blank-job-id", ["record", "--job-id", " ", *TURBO], 2, ("non-empty string",)),
    ("record-units-text", ["record", "--job-id", "j9", *TURBO, "--units", "some"], 2, ("charged units",)),
    ("record-units-negative", ["record", "--job-id", "j9", *TURBO, "--units", "-2"], 2, ("cannot be negative",)),
    ("record-unknown-model", ["record", "--job-id", "j9", "--model", "kling-v9"], 2, ("unknown model",)),
    ("record-key-conflict", ["record", "--job-id", "r1", *TURBO], 2, ("'r1'", "different request")),
    # reservations
    ("reservations-limit-zero", ["reservations", "--limit", "0"], 2, ("'--limit'", "1<=x<=100000")),
    # usage
    ("usage-from-without-to", ["usage", "--from", "2026-11-01"], 2, ("--from and --to go together",)),
    ("usage-to-without-from", ["usage", "--to", "2026-11-30"], 2, ("--from and --to go together",)),
    ("usage-bad-date", ["usage", "--from", "2026-13-01", "--to", "2026-12-31"], 2, ("--from", "2026-11-01")),
    ("usage-bad-to-date", ["usage", "--from", "2026-01-01", "--to", "31/12/2026"], 2, ("--to", "ISO datetime")),
    ("usage-year-range", ["usage", "--from", "2026-01-01", "--to", "9999-12-31"], 2, ("--to", "9998")),
    ("usage-reversed", ["usage", "--from", "2026-11-30", "--to", "2026-11-01"], 2, ("must end after it starts",)),
    ("usage-unknown-group", ["usage", "--by", "project,colour"], 2, ("colour", "accepted: project, user")),
    ("usage-unknown-period", ["usage", "--period", "fortnight"], 2, ("'fortnight'", "last-7d")),
    ("usage-empty-period", ["usage", "--period", "last-0d"], 2, ("last-0d", "from 1 to 3660")),
    ("usage-huge-period", ["usage", "--period", "last-99999999d"], 2, ("unknown period", "N up to 3660")),
    ("budget-limit-too-large", ["budget", "set", "b", "--limit-usd", "1" + "0" * 30], 2, ("too large",)),
    ("budget-limit-over-max", ["budget", "set", "b", "--limit-usd", "1000000001"], 2, ("$1,000,000,000",)),
    ("pack-price-too-large", ["packs", "add", "p", "--units", "10", "--price", "1" + "0" * 30], 2, ("too large",)),
    ("pack-price-exponent", ["packs", "add", "p", "--units", "10", "--price", "1e999999"], 2, ("no exponent",)),
    ("usage-unknown-timezone", ["usage", "--timezone", "Moon/Base"], 2, ("IANA",)),
    ("usage-unknown-model", ["usage", "--model", "kling-v9"], 2, ("unknown model",)),
    ("usage-unknown-format", ["usage", "--format", "xml"], 2, ("'--format'", "'csv'")),
    ("verify-unknown-option", ["verify", "--fix"], 2, ("No such option",)),
    # packs
    ("pack-units-text", ["packs", "add", "pk2", "--units", "many", "--price", "1"], 2, ("pack units",)),
    ("pack-units-zero", ["packs", "add", "pk2", "--units", "0", "--price", "1"], 2, ("more than 0 units",)),
    ("pack-price-negative", ["packs", "add", "pk2", "--units", "10", "--price", "-1"], 2, ("cannot be negative",)),
    ("pack-price-precise", ["packs", "add", "pk2", "--units", "10", "--price", "0.0000000001"], 2, ("decimal places",)),
    ("pack-unknown-type", ["packs", "add", "pk2", "--units", "10", "--price", "1", "--type", "audio"], 2, ("video",)),
    (
        "pack-bad-expiry",
        ["packs", "add", "pk2", "--units", "10", "--price", "1", "--expires", "soon"],
        2,
        ("--expires",),
    ),
    (
        "pack-expired",
        ["packs", "add", "pk2", "--units", "1", "--price", "1", "--expires", "2001-01-01"],
        2,
        ("expire",),
    ),
    ("pack-duplicate", ["packs", "add", "pk1", "--units", "10", "--price", "1"], 2, ("'pk1' already exists",)),
    ("pack-remove-unknown", ["packs", "remove", "nope"], 2, ("no pack named 'nope'",)),
    ("pack-remove-drawn", ["packs", "remove", "pk1"], 2, ("pk1",)),
    ("pack-missing-price", ["packs", "add", "pk2", "--units", "10"], 2, ("Missing option '--price'",)),
    # import
    ("import-missing-file", ["import", "{missing}"], 2, ("cannot read", "missing.json")),
    ("import-directory", ["import", "{directory}"], 2, ("is a directory",)),
    ("import-invalid-json", ["import", "{bad_json}"], 2, ("not valid JSON", "line 1")),
    ("import-not-utf8", ["import", "{not_utf8}"], 2, ("not UTF-8",)),
    ("import-not-an-object", ["import", "{not_object}"], 2, ("expected a JSON object",)),
    ("import-bad-record", ["import", "{bad_record}"], 2, ("record 2", "unknown model 'kling-nope'")),
    ("import-bad-timestamp", ["import", "{bad_timestamp}"], 2, ("record 1", "'yesterday'")),
    ("import-bad-period", ["import", "{bad_period}"], 2, ("budget 1", "'yearly'", "monthly")),
    ("import-no-limit", ["import", "{no_limit}"], 2, ("budget 1", "no limit found")),
    ("import-bad-threshold", ["import", "{bad_threshold}"], 2, ("budget 1", "alert_threshold 'lots'")),
    ("import-key-conflict", ["import", "{conflict}"], 2, ("record 1", "'r1'", "different job")),
    # global options and the rest
    ("db-unknown-scheme", ["--db", "mysql://localhost/x", "budget", "list"], 2, ("'mysql'", "sqlite:///")),
    ("db-sqlite-without-path", ["--db", "sqlite://", "budget", "list"], 2, ("needs a file path",)),
    ("db-bad-timeout", ["--db", "sqlite:///{directory}/y.db?timeout=soon", "budget", "list"], 2, ("timeout",)),
    ("unknown-command", ["spend"], 2, ("No such command 'spend'",)),
    ("unknown-subcommand", ["budget", "remove", "b1"], 2, ("No such command 'remove'",)),
    ("demo-workers-zero", ["demo", "--workers", "0"], 2, ("'--workers'", "1<=x<=32")),
    ("demo-limit-text", ["demo", "--limit-units", "lots"], 2, ("--limit-units", "like 1.5")),
    ("demo-limit-too-small", ["demo", "--limit-units", "1"], 2, ("at least 1.5",)),
    # hostile amounts and names: refused at once (no conversion of unbounded size), one short line
    ("price-duration-exponent", ["price", "-d", "1e999999"], 2, ("duration", "no exponent")),
    ("price-duration-digits", ["price", "-d", "9" * 5000], 2, ("duration is too long",)),
    ("reserve-duration-exponent", ["reserve", *TURBO[:4], "-d", "1e999999", "--project", "p1"], 2, ("no exponent",)),
    ("price-n-digits", ["price", "--product", "image", "--model", "kling-v2", "-n", "9" * 5000], 2, ("-n",)),
    ("commit-units-exponent", ["commit", "r1", "--units", "1e999999"], 2, ("no exponent",)),
    ("record-units-exponent", ["record", "--job-id", "j9", *TURBO, "--units", "1e999999"], 2, ("no exponent",)),
    ("pack-units-exponent", ["packs", "add", "pk3", "--units", "1e999999", "--price", "1"], 2, ("no exponent",)),
    ("demo-limit-exponent", ["demo", "--limit-units", "1e999999"], 2, ("no exponent",)),
    ("alert-at-digits", ["budget", "set", "b3", "--limit-units", "5", "--alert-at", "9" * 5000], 2, ("threshold",)),
    ("import-long-name", ["import", LONG], 2, ("cannot read",)),
    ("prices-long-name", ["--prices", LONG, "price"], 2, ("aaaa",)),
    ("db-long-name", ["--db", "sqlite:///" + LONG, "budget", "list"], 2, ("too long",)),
    ("report-long-name", ["report", "--out", LONG], 2, ("File name too long",)),
]


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


@pytest.mark.parametrize(("args", "code", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(
    args: list[str],
    code: int,
    fragments: tuple[str, ...],
    template: Path,
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad input exits with its code, prints exactly one `error:` line naming the problem, and changes nothing."""
    ledger = tmp_path / "ledger.db"
    shutil.copy(template, ledger)
    if Path(f"{template}-wal").exists():
        shutil.copy(f"{template}-wal", f"{ledger}-wal")
    before = _dump(ledger)
    argv = [arg.format(**files) for arg in args]
    if "--db" not in argv:
        argv = ["--db", f"sqlite:///{ledger}", *argv]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == code
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err
    assert _dump(ledger) == before
