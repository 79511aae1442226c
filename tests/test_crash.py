"""Crash test (issue 4, section 5): workers SIGKILLed at injected points, then ``recover``.

A subprocess (tests/crash_worker.py) runs the lifecycle over 50 jobs against the session's
simulator and is killed with SIGKILL at each point of ``comfynb._crashpoints`` in turn: before
the POST, after the POST before the store knows, in the middle of a download, inside the result
transaction. A last worker recovers and finishes. Then every prompt_id was posted exactly once,
every job is completed with all its candidates, and the output folder holds exactly the
candidates' files (no partial file, no stray), each matching its sha256.
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


def workflow(i: int) -> dict[str, Any]:
    """A trivial prompt, never cached (its color is its own), 1 or 2 images."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1 + i % 2, "color": 1000 + i},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
    }


def run_worker(
    tmp_path: Path, url: str, crashpoint: str | None
) -> tuple[int, list[dict[str, Any]], bool]:
    """Run one worker to its end (or death): exit code, recover summaries, whether it finished."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYNB_CRASHPOINT"}
    if crashpoint is not None:
        env["COMFYNB_CRASHPOINT"] = crashpoint
    args = [str(tmp_path / "lab.duckdb"), str(tmp_path / "outputs"), url]
    done = subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.splitlines()
    summaries = [json.loads(line) for line in lines if line.startswith("{")]
    assert crashpoint is not None or done.returncode == 0, done.stderr
    return done.returncode, summaries, "done" in lines


def damage_of(point: str, tmp_path: Path, sim: Simulator) -> bool:
    """Whether the store and the server show the damage a kill at ``point`` leaves."""
    posted = {row["prompt_id"] for row in sim.prompts()}
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        unsettled = store.unsettled_jobs()
        claimed = [j.prompt_id for j in unsettled if j.status is JobStatus.PENDING]
        if point == "submit.before_post":  # a prompt_id recorded, never sent
            return any(pid not in posted for pid in claimed)
        if point == "submit.after_post":  # sent, but the store does not know
            return any(pid in posted for pid in claimed)
        if point == "download.write":  # a half-written temporary file
            return any(store.output_dir.rglob(".*.part"))
        # inside the result transaction: files downloaded, the job not completed
        return any(
            (store.output_dir / f"run-{j.run_id}" / f"job-{j.id}").is_dir() for j in unsettled
        )


def test_workers_killed_at_every_point_lose_nothing_and_post_nothing_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        run = store.new_run("crash")
        for i in range(JOBS):
            enqueue(store, workflow(i), run=run, params={"seed": i})

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

    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        jobs = store.jobs()
        assert (jobs["status"] == JobStatus.COMPLETED.value).all()
        assert (jobs["retries"] == 0).all()
        cands = store.candidates()
        per_job = cands.groupby("job_id").size().to_dict()
        for job_id, seed in zip(jobs["id"], jobs["seed"], strict=True):
            assert per_job.get(job_id) == 1 + seed % 2, job_id
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
    assert len(prompt_ids) == JOBS
    assert all(row["posts"] == 1 for row in posted)
