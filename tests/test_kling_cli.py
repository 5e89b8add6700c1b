"""`kling-budget generate` end to end against a simulator started in the test, credentials from KLING_* variables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_budget import CostTracker
from kling_budget.ledger import ReservationState
from kling_budget.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.jobfixtures import CliResult, run_cli, use_sim_credentials

FAST = ["--poll-interval", "0.02"]


@pytest.fixture
def kling(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """A wall-clock simulator whose tasks finish in ~50 ms, with KLING_* pointing at it."""
    config = SimulatorConfig.single(queued_seconds=0.02, running_seconds=0.03)
    with running_simulator(config) as running:
        use_sim_credentials(monkeypatch, running)
        yield running


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh SQLite ledger URL with a 10-unit budget on project "ads"."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with CostTracker(url) as tracker:
        tracker.set_budget("ads", project_id="ads", limit_units=10)
    return url


def kb(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> CliResult:
    return run_cli(capsys, "--db", db, *args)


def test_generate_video_prints_urls_and_the_cost(
    kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`generate video` reserves, submits, waits and prints the result URL and what Kling charged."""
    result = kb(capsys, db, "generate", "video", "a red fox in the snow", "-m", "kling-v2-6", "--project", "ads", *FAST)
    assert result.code == 0, result
    assert "reserved kling-v2-6 video: 1.5 units ($0.21)" in result.out
    assert "succeeded" in result.out and "https://media.kling-simulator.invalid/videos/" in result.out
    assert "charged 1.5 units ($0.21)" in result.out
    (task,) = kling.sim.tasks()
    assert task.status == "succeed" and task.model == "kling-v2-6"


def test_generate_video_json_has_klings_charge_and_no_secret(
    kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json reports the settlement with Kling's own units (overage included) and never a credential."""
    result = kb(capsys, db, "generate", "video", "a fox [sim:charge=2]", "--project", "ads", "--json", *FAST)
    assert result.code == 0, result
    data = result.json()
    assert (data["status"], data["settlement"]["action"], data["settlement"]["charged_units"]) == (
        "succeeded",
        "committed",
        "2",
    )
    assert data["reservation"]["overage_units"] == "0.5" and data["urls"]
    assert kling.sim.task(data["task_id"]).external_task_id == data["reservation_id"]
    assert kling.secret_key is not None and kling.secret_key not in result.out + result.err


def test_generate_image_draws_image_units(kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`generate image -n 2` holds and commits image-pack units for both images."""
    result = kb(capsys, db, "generate", "image", "a lighthouse", "-m", "kling-v2", "-n", "2", "--json", *FAST)
    assert result.code == 0, result
    data = result.json()
    assert len(data["urls"]) == 2
    assert (data["reservation"]["pack_type"], data["reservation"]["actual_units"]) == ("image", "8")


def test_image_to_video_with_image(kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--image turns `generate video` into image-to-video."""
    args = ["generate", "video", "it turns", "--image", "https://x.invalid/fox.png", "-m", "kling-v2-1", "--json"]
    result = kb(capsys, db, *args, *FAST)
    assert result.code == 0, result
    assert kling.sim.tasks()[0].path == "/v1/videos/image2video"


def test_denied_generate_exits_1_without_calling_kling(
    kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over budget: exit 1, one `error: denied` line naming the budget, and nothing sent to Kling."""
    args = ["generate", "video", "a fox", "-m", "kling-v2-6", "--mode", "pro", "-d", "10", "--sound", "on"]
    result = kb(capsys, db, *args, "--project", "ads", *FAST)  # 10 units on a 10-unit budget: fits
    assert result.code == 0, result
    denied = kb(capsys, db, "generate", "video", "again", "--project", "ads", *FAST)
    assert denied.code == 1 and denied.err.startswith("error: denied: budget 'ads'") and denied.out == ""
    assert len(kling.sim.tasks()) == 1


def test_failed_and_rejected_jobs_exit_1_and_release(
    kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task Kling fails exits 1 and says it was not charged; a create Kling rejects exits 1, hold released."""
    failed = kb(capsys, db, "generate", "video", "a fox [sim:fail=moderation]", "--project", "ads", *FAST)
    assert failed.code == 1 and "failed (moderation)" in failed.out and "not charged" in failed.out
    rejected = kb(capsys, db, "generate", "video", "a fox [sim:reject=1301]", "--project", "ads", *FAST)
    assert rejected.code == 1 and "error: Kling error 1301" in rejected.err and "hold was released" in rejected.err
    with CostTracker(db) as tracker:
        assert {r.state for r in tracker.ledger.list_reservations()} == {ReservationState.RELEASED}


def test_bad_input_exits_2_before_reserving(
    kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown model or missing credentials: exit 2, one error line, nothing reserved or sent."""
    unknown = kb(capsys, db, "generate", "video", "a fox", "-m", "kling-v99", *FAST)
    assert unknown.code == 2 and unknown.err.count("\n") == 1 and "kling-v99" in unknown.err
    monkeypatch.delenv("KLING_SECRET_KEY")
    no_keys = kb(capsys, db, "generate", "video", "a fox", *FAST)
    assert no_keys.code == 2 and no_keys.err.startswith("error: ") and no_keys.err.count("\n") == 1
    with CostTracker(db) as tracker:
        assert tracker.ledger.list_reservations() == []
    assert kling.sim.tasks() == []


def test_no_wait_then_reconcile_settles(kling: RunningSimulator, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--no-wait leaves the hold submitted; `reconcile` settles it from Kling's answer later."""
    submitted = kb(capsys, db, "generate", "video", "a fox", "--project", "ads", "--no-wait", "--json")
    assert submitted.code == 0 and submitted.json()["reservation"]["state"] == "submitted"
    key = submitted.json()["reservation_id"]
    deadline = time.monotonic() + 10
    while kling.sim.task(submitted.json()["task_id"]).status != "succeed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    reconciled = kb(capsys, db, "reconcile", "--json")
    assert reconciled.code == 0, reconciled
    assert [(i["reservation_id"], i["action"]) for i in reconciled.json()["items"]] == [(key, "committed")]
