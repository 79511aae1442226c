"""Crash test of the ``Worker``: SIGKILLed at each injected point, the next worker repairs.

tests/test_crash.py kills the cell-level lifecycle functions; this kills the ``Worker``, whose
writes take other paths: it posts a job claimed in an earlier commit and hands its
``submitted`` move to the recorder thread, which commits it later with other moves and
results; images are downloaded on a thread pool. A subprocess (tests/crash_worker_loop.py)
runs ``Worker.run()`` over 40 jobs against the session's simulator and is killed with SIGKILL
at each point of ``comfynb._crashpoints`` in turn: before a POST, after a POST (the store does
not know), in the middle of a download (on a pool thread), inside a commit of the recorder
(on its thread). Each next worker starts with ``recover``; a last one runs to idle.

Then every prompt_id was posted exactly once (and the server never restarted), every job is
completed with all its candidates and its events form a legal sequence, and the output folder
holds exactly the candidates' files (no partial file, no stray), each matching its sha256.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from crash_helpers import check_everything_done_once, enqueue_jobs, posting_damage, run_child

from comfynb import Store
from comfynb.simulator import Simulator

WORKER = Path(__file__).with_name("crash_worker_loop.py")
JOBS = 40
# (point, which arrival at it kills the worker); counts restart in each new worker
KILLS = (
    ("submit.before_post", 5),
    ("submit.after_post", 5),
    ("download.write", 3),
    ("result.transaction", 3),
    ("submit.after_post", 1),
    ("result.transaction", 1),
)


def damage_of(point: str, tmp_path: Path, sim: Simulator) -> bool:
    """Whether the store and the server show the damage a kill at ``point`` leaves."""
    posted = {row["prompt_id"] for row in sim.prompts()}
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        found = posting_damage(point, store, posted)
        if found is not None:
            return found
        # inside a commit of the recorder (its moves and results lost): jobs the server has
        # that the store has not settled
        return any(j.prompt_id in posted for j in store.unsettled_jobs())


def test_workers_killed_at_every_point_lose_nothing_and_post_nothing_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    enqueue_jobs(tmp_path, JOBS, color=2000, prefix="w")
    for point, count in KILLS:
        done = run_child(WORKER, tmp_path, sim.url, f"{point}:{count}")
        assert done.returncode == -signal.SIGKILL, (point, count, done.stderr)
        assert "done" not in done.stdout.splitlines(), (point, count)
        assert damage_of(point, tmp_path, sim), f"a kill at {point}:{count} left nothing to repair"
    done = run_child(WORKER, tmp_path, sim.url, None)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "done", done.stdout
    summary = json.loads(lines[-2])
    assert summary["completed"] > 0 and summary["failed"] == summary["requeued"] == 0, summary
    check_everything_done_once(tmp_path, sim, JOBS)
