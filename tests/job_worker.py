"""A child process for crash tests: runs one budgeted Kling job up to a chosen point, says so, and waits to be killed.

Usage: ``python -c "from tests.job_worker import main; main()" MODE DB_URL KLING_BASE_URL``, with the Kling
credentials in ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY``. Modes:

* ``reserved``: the enforced client's first step only (quote + reserve with its TTL), as a process dies
  between reserving and sending;
* ``submitted``: a full ``generate_video`` (reserve, mark submitted, create), then ``wait()`` polling until
  killed, as a process dies between sending and settling.

Each mode prints one line (``reserved <id>`` / ``submitted <id> <task id>``) once it got there.
"""

from __future__ import annotations

import sys
import time

from kling_budget import CostTracker
from kling_budget.enforced import BudgetEnforcedClient, Submission
from kling_budget.kling import Endpoint

PROMPT = "a fox [sim:charge=2.5]"


def main() -> None:
    """Run the mode named on the command line (see the module docstring)."""
    mode, db_url, base_url = sys.argv[1:4]
    tracker = CostTracker(db_url)
    client = BudgetEnforcedClient(tracker, project_id="ads", base_url=base_url)
    if mode == "reserved":
        body = {"model_name": "kling-v2-6", "prompt": PROMPT, "duration": "5"}
        prepared = client._enforcer.prepare(Submission(Endpoint.TEXT_TO_VIDEO, body))
        print(f"reserved {prepared.key}", flush=True)
    elif mode == "submitted":
        job = client.generate_video(PROMPT, model="kling-v2-6")
        print(f"submitted {job.reservation_id} {job.task_id}", flush=True)
        job.wait(timeout=3600, poll_interval=0.05, max_poll_interval=0.05)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    time.sleep(3600)


if __name__ == "__main__":
    main()
