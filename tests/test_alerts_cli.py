"""``kling-budget alerts``, ``forecast``, ``report`` and the forecast in ``budget show``, in-process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kling_budget.cli import main
from tests.alert_receivers import free_port, http_receiver, smtp_server

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretTOKEN"


@dataclass
class Result:
    """Exit code, stdout and stderr of one command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def kb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``kling-budget --db <fresh db> ARGS...`` in-process."""
    db = f"sqlite:///{tmp_path / 'x.db'}"

    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["--db", db, *args])
        out, err = capsys.readouterr()
        code = exited.value.code
        assert "Traceback" not in out + err
        return Result(0 if code is None else int(code), out, err)

    return run


@pytest.fixture
def secret_file(tmp_path: Path) -> Any:
    """Write a secret to a new file and return its path (as ``--url-file``/``--password-file`` take it)."""
    count = iter(range(1000))

    def write(text: str) -> str:
        path = tmp_path / f"secret-{next(count)}"
        path.write_text(text + "\n", encoding="utf-8")
        return str(path)

    return write


def test_add_list_remove_never_print_secrets(kb: Any, secret_file: Any) -> None:
    """Sinks are stored and listed with their URL and password masked; remove deletes by id."""
    added = kb("alerts", "add", "slack", "--url-file", secret_file(SLACK), "--kinds", "threshold,exhausted")
    assert added.code == 0 and added.out.strip() == "added alert sink #1: slack https://hooks.slack.com/…OKEN"
    email = kb(
        "alerts", "add", "email", "--host", "smtp.example.com", "--username", "bob",
        "--password-file", secret_file("hunter2"), "--from", "a@example.com", "--to", "ops@example.com",
    )  # fmt: skip
    assert email.code == 0 and "hunter2" not in email.out
    listed = kb("alerts", "list", "--json").json()
    text = kb("alerts", "list").out
    for output in (json.dumps(listed), text):
        assert "secretTOKEN" not in output and "hunter2" not in output
    assert [s["target"] for s in listed["sinks"]] == [
        "https://hooks.slack.com/…OKEN",
        "bob@smtp.example.com:587 (starttls, password ****) → ops@example.com",
    ]
    assert listed["sinks"][0]["kinds"] == ["threshold", "exhausted"]
    assert kb("alerts", "remove", "1").out.strip() == "removed alert sink #1"
    assert [s["id"] for s in kb("alerts", "list", "--json").json()["sinks"]] == [2]
    missing = kb("alerts", "remove", "9")
    assert missing.code == 2 and missing.err.strip() == "error: no alert sink with id 9; existing: 2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["webhook", "--url-file", "ftp://x/y"], "the webhook URL must be an http:// or https:// URL"),
        (["webhook", "--url-file", "https://x/y", "--kinds", "nope"], "unknown alert kind 'nope'"),
        (["webhook", "--url-file", "https://x/y", "--budget", "ghost"], "no budget named 'ghost'"),
        (["webhook", "--url-file", "https://x/y", "--timeout", "soon"], "--timeout must be a number of seconds"),
        (
            ["webhook", "--url-file", "https://x/y", "--signing-secret-file", "not-whsec!"],
            "a webhook signing secret must be 'whsec_' followed by base64",
        ),
        (
            [
                "email",
                "--host",
                "h",
                "--username",
                "u",
                "--password-file",
                "p",
                "--no-starttls",
                "--from",
                "a@b.c",
                "--to",
                "d@e.f",
            ],
            "refusing to send an SMTP password without TLS",
        ),
        (
            ["email", "--host", "h", "--password-file", "p", "--from", "a@b.c", "--to", "d@e.f"],
            "an SMTP password needs --username",
        ),
    ],
)
def test_bad_sink_input_is_exit_2_with_one_line(kb: Any, secret_file: Any, args: list[str], message: str) -> None:
    """Invalid sink settings are refused before anything is stored."""
    previous = ["", *args[:-1]]
    args = [secret_file(a) if option.endswith("-file") else a for option, a in zip(previous, args, strict=True)]
    result = kb("alerts", "add", *args)
    assert result.code == 2
    assert result.err.startswith(f"error: {message}") and result.err.count("\n") == 1
    assert kb("alerts", "list", "--json").json()["sinks"] == []


def test_test_command_reports_each_sink(kb: Any, secret_file: Any) -> None:
    """``alerts test`` sends a marked test event to each sink and exits 1 if one failed."""
    with http_receiver() as receiver:
        kb("alerts", "add", "webhook", "--url-file", secret_file(receiver.url))
        down = secret_file(f"http://127.0.0.1:{free_port()}/down")
        kb("alerts", "add", "webhook", "--url-file", down, "--retries", "1", "--timeout", "1")
        result = kb("alerts", "test")
        [body] = receiver.bodies()
    assert result.code == 1
    lines = result.out.strip().splitlines()
    assert lines[0].startswith("ok     #1 webhook http://127.0.0.1:")
    assert lines[1].startswith("FAILED #2 webhook http://127.0.0.1:") and "webhook to 127.0.0.1" in lines[1]
    assert body["test"] is True and body["dedupe_key"].startswith("test:")
    listed = kb("alerts", "list", "--json").json()["sinks"]
    assert [(s["sent"], s["failures"]) for s in listed] == [(1, 0), (0, 1)]


def test_email_test_over_starttls(kb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An email sink added from the CLI (password from the environment) delivers a test message."""
    monkeypatch.setenv("KLING_BUDGET_SMTP_PASSWORD", "s3cret-pass")
    with smtp_server(tmp_path) as server:
        added = kb(
            "alerts", "add", "email", "--host", server.host, "--port", str(server.port), "--username", "alerts",
            "--from", "alerts@example.com", "--to", "ops@example.com", "--cafile", str(server.cafile),
        )  # fmt: skip
        assert added.code == 0
        result = kb("alerts", "test", "1")
        assert result.code == 0, result.out
        [message] = server.messages
    assert message["Subject"].startswith("[kling-budget] [test]")


def test_reserve_threshold_recent_and_deliver(kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A threshold crossed by ``reserve`` reaches the webhook once; ``recent`` shows it delivered, and a failed
    one pending until ``alerts deliver`` succeeds."""
    with http_receiver() as receiver:
        kb("budget", "set", "p", "--project", "p", "--limit-units", "3", "--alert-at", "50")
        monkeypatch.setenv("KLING_BUDGET_ALERT_URL", receiver.url)
        kb("alerts", "add", "webhook")
        assert (
            kb("reserve", "--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5", "--project", "p").code == 0
        )
        assert [b["threshold"] for b in receiver.bodies()] == [50]
        recent = kb("alerts", "recent", "--json").json()
        assert [(r["kind"], r["status"]) for r in recent] == [("threshold", "delivered")]
        receiver.mode = "fail"
        kb("reserve", "--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5", "--project", "p")
        pending = kb("alerts", "recent", "--json").json()[0]
        assert (pending["kind"], pending["status"]) == ("exhausted", "retrying")
        assert "HTTP 500" in pending["last_error"]
        assert kb("alerts", "deliver").code == 1
        receiver.mode = "ok"
        delivered = kb("alerts", "deliver")
        assert delivered.code == 0 and delivered.out.startswith("delivered 1,")
        assert [b["kind"] for b in receiver.bodies()] == ["threshold", "exhausted"]


def test_check_raises_a_forecast_alert_once(kb: Any) -> None:
    """``alerts check`` stores a forecast alert when a budget will run out this window, and only once."""
    from datetime import UTC, datetime

    # A fixed-offset zone in which it is about 06:00 now: 6 h into the day, a confident forecast.
    offset = (6 - datetime.now(UTC).hour + 12) % 24 - 12
    zone = "Etc/GMT" + (f"{-offset:+d}" if offset else "")
    kb("budget", "set", "day", "--period", "daily", "--limit-units", "100", "--timezone", zone)
    assert (
        kb(
            "record", "--job-id", "job-1", "--model", "kling-v2-6", "--mode", "pro", "--duration", "10", "--units", "60"
        ).code
        == 0
    )
    first = kb("alerts", "check", "--json").json()
    assert [e["kind"] for e in first] == ["forecast"]
    assert "is forecast to be exceeded" in first[0]["message"]
    assert kb("alerts", "check").out.strip() == "no new alerts"


def test_forecast_command_and_budget_show(kb: Any) -> None:
    """``forecast`` and ``budget show`` print the projection; JSON carries exact decimal strings."""
    kb("budget", "set", "m", "--limit-usd", "100", "--period", "monthly", "--timezone", "Europe/Berlin")
    kb("reserve", "--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5")
    data = kb("forecast", "m", "--json").json()
    assert data["budget"] == "m" and data["timezone"] == "Europe/Berlin"
    [limit] = data["limits"]
    assert limit["limit_kind"] == "usd" and limit["used"] == "0.21"
    assert "m" in kb("forecast").out
    shown = kb("budget", "show", "m")
    assert "forecast:" in shown.out and "projected" in shown.out
    assert kb("budget", "show", "m", "--json").json()["forecast"]["budget"] == "m"
    assert kb("forecast", "ghost").code == 2


def test_report_command_writes_png_and_html(kb: Any, tmp_path: Path) -> None:
    """``report`` writes the PNG and the HTML into --out and prints their paths."""
    pytest.importorskip("matplotlib")
    kb("budget", "set", "m", "--limit-usd", "10")
    assert (
        kb("record", "--job-id", "job-1", "--model", "kling-v2-5-turbo", "--mode", "std", "--duration", "5").code == 0
    )
    result = kb("report", "--out", str(tmp_path / "r"), "--by", "model", "--json")
    assert result.code == 0
    paths = result.json()
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in Path(paths["html"]).read_text(encoding="utf-8")
