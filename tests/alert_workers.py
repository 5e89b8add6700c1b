"""Worker processes for the multi-process alert tests (importable by spawned children)."""

from __future__ import annotations

import uuid
from typing import Any

from kling_budget.tracker import CostTracker


def reserve_and_flush(url: str, worker: int, count: int, go: Any) -> list[str]:
    """Reserve ``count`` one-unit jobs through a CostTracker (alerts delivered by its dispatcher), then flush the
    outbox too, racing the other workers for the same events; return the reservation ids."""
    tracker = CostTracker(url, alert_sinks=[])
    keys = []
    go.wait()
    for _ in range(count):
        hold = tracker.reserve(
            "kling-v2-5-turbo",
            mode="std",
            duration=5,
            units=1,
            project_id="studio",
            key=f"w{worker}-{uuid.uuid4().hex[:10]}",
        )
        keys.append(hold.id)
    tracker.alerts.flush()
    tracker.close()
    return keys
