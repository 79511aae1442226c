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

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from comfynb import JobStatus, Store, enqueue
from comfynb.lifecycle import ALLOWED
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


def workflow(i: int) -> dict[str, Any]:
    """A trivial prompt, never cached (its color is its own), 1 or 2 images."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1 + i % 2, "color": 2000 + i},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "w"}},
    }


def run_worker(
    tmp_path: Path, url: str, crashpoint: str | None
) -> subprocess.CompletedProcess[str]:
    """Run one worker to its end (or its death)."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYNB_CRASHPOINT"}
    if crashpoint is not None:
        env["COMFYNB_CRASHPOINT"] = crashpoint
    args = [str(tmp_path / "lab.duckdb"), str(tmp_path / "outputs"), url]
    return subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def damage_of(point: str, tmp_path: Path, sim: Simulator) -> bool:
    """Whether the store and the server show the damage a kill at ``point`` leaves."""
    posted = {row["prompt_id"] for row in sim.prompts()}
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        unsettled = store.unsettled_jobs()
        claimed = [j.prompt_id for j in unsettled if j.status is JobStatus.PENDING]
        if point == "submit.before_post":  # a prompt_id claimed, never sent
            return any(pid not in posted for pid in claimed)
        if point == "submit.after_post":  # sent, but the store does not know
            return any(pid in posted for pid in claimed)
        if point == "download.write":  # a half-written temporary file
            return any(store.output_dir.rglob(".*.part"))
        # inside a commit of the recorder (its moves and results lost): jobs the server has
        # that the store has not settled
        return any(j.prompt_id in posted for j in unsettled)


def check_events(store: Store, job_id: int) -> None:
    """The job's events chain from ``pending`` through legal moves to ``completed``."""
    events = store.events(job_id)
    moves = list(zip(events["from_status"], events["to_status"], strict=True))
    assert moves, job_id
    status = JobStatus.PENDING
    for before, after in moves:
        assert before == status.value, (job_id, moves)
        assert JobStatus(after) in ALLOWED[status], (job_id, moves)
        status = JobStatus(after)
    assert status is JobStatus.COMPLETED, (job_id, moves)
    assert [to for _, to in moves].count("submitted") == 1, (job_id, moves)


def check_everything_done_once(tmp_path: Path, sim: Simulator, jobs_count: int) -> None:
    """Every job completed with its candidates and files, every prompt posted once."""
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        jobs = store.jobs()
        assert len(jobs) == jobs_count
        assert (jobs["status"] == JobStatus.COMPLETED.value).all(), store.status_counts()
        assert (jobs["retries"] == 0).all()
        cands = store.candidates()
        per_job = cands.groupby("job_id").size().to_dict()
        for job_id, seed in zip(jobs["id"], jobs["seed"], strict=True):
            assert per_job.get(job_id) == 1 + seed % 2, job_id
            check_events(store, int(job_id))
        on_disk = {
            p.relative_to(store.output_dir).as_posix()
            for p in store.output_dir.rglob("*")
            if p.is_file()
        }
        assert on_disk == set(cands["path"])  # no partial file, no stray
        for path, sha256 in zip(cands["path"], cands["sha256"], strict=True):
            assert hashlib.sha256((store.output_dir / path).read_bytes()).hexdigest() == sha256
        prompt_ids = set(jobs["prompt_id"])

    posted = sim.prompts()
    assert {row["prompt_id"] for row in posted} == prompt_ids
    assert len(prompt_ids) == jobs_count
    twice = [row for row in posted if row["posts"] != 1 or row["lives"] != 1]
    assert not twice, twice


def enqueue_jobs(tmp_path: Path, count: int) -> None:
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        run = store.new_run("crash")
        for i in range(count):
            enqueue(store, workflow(i), run=run, params={"seed": i})


def test_workers_killed_at_every_point_lose_nothing_and_post_nothing_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    enqueue_jobs(tmp_path, JOBS)
    for point, count in KILLS:
        done = run_worker(tmp_path, sim.url, f"{point}:{count}")
        assert done.returncode == -signal.SIGKILL, (point, count, done.stderr)
        assert "done" not in done.stdout.splitlines(), (point, count)
        assert damage_of(point, tmp_path, sim), f"a kill at {point}:{count} left nothing to repair"
    done = run_worker(tmp_path, sim.url, None)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "done", done.stdout
    summary = json.loads(lines[-2])
    assert summary["completed"] > 0 and summary["failed"] == summary["requeued"] == 0, summary
    check_everything_done_once(tmp_path, sim, JOBS)
