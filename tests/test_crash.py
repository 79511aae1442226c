"""Crash test (issue 4, section 5): workers SIGKILLed at injected points, then ``recover``.

A subprocess (tests/crash_worker.py) runs the lifecycle over 50 jobs against the session's
simulator and is killed with SIGKILL at each point of ``comfynb._crashpoints`` in turn: before
the POST, after the POST before the store knows, in the middle of a download, inside the result
transaction. A last worker recovers and finishes. Then every prompt_id was posted exactly once,
every job is completed with all its candidates, and the output folder holds exactly the
candidates' files (no partial file, no stray), each matching its sha256.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from crash_helpers import check_everything_done_once, enqueue_jobs, posting_damage, run_child

from comfynb import Store
from comfynb.simulator import Simulator

WORKER = Path(__file__).with_name("crash_worker.py")
JOBS = 50
# (point, which arrival at it kills the worker); counts restart in each new worker
KILLS = (
    ("submit.before_post", 5),
    ("submit.after_post", 5),
    ("download.write", 3),
    ("result.transaction", 3),
)


def run_worker(
    tmp_path: Path, url: str, crashpoint: str | None
) -> tuple[int, list[dict[str, Any]], bool]:
    """Run one worker to its end (or death): exit code, recover summaries, whether it finished."""
    done = run_child(WORKER, tmp_path, url, crashpoint)
    lines = done.stdout.splitlines()
    summaries = [json.loads(line) for line in lines if line.startswith("{")]
    assert crashpoint is not None or done.returncode == 0, done.stderr
    return done.returncode, summaries, "done" in lines


def damage_of(point: str, tmp_path: Path, sim: Simulator) -> bool:
    """Whether the store and the server show the damage a kill at ``point`` leaves."""
    posted = {row["prompt_id"] for row in sim.prompts()}
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        found = posting_damage(point, store, posted)
        if found is not None:
            return found
        # inside the result transaction: files downloaded, the job not completed
        return any(
            (store.output_dir / f"run-{j.run_id}" / f"job-{j.id}").is_dir()
            for j in store.unsettled_jobs()
        )


def test_workers_killed_at_every_point_lose_nothing_and_post_nothing_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    enqueue_jobs(tmp_path, JOBS, color=1000, prefix="c")
    summaries: list[dict[str, Any]] = []
    for point, count in KILLS:
        code, printed, finished = run_worker(tmp_path, sim.url, f"{point}:{count}")
        assert code == -signal.SIGKILL and not finished, point
        assert damage_of(point, tmp_path, sim), f"a kill at {point} left nothing to repair"
        summaries += printed
    code, printed, finished = run_worker(tmp_path, sim.url, None)
    assert code == 0 and finished
    summaries += printed
    assert summaries and any(s["completed"] for s in summaries)
    check_everything_done_once(tmp_path, sim, JOBS)
