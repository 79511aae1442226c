"""What the two crash tests share: their jobs, a killable child worker, and the final checks.

tests/test_crash.py kills the cell-level lifecycle functions (tests/crash_worker.py),
tests/test_worker_crash.py the ``Worker`` (tests/crash_worker_loop.py); both run the child
with ``COMFYNB_CRASHPOINT`` and then check the same things.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from comfynb import JobStatus, Store, enqueue
from comfynb.core.status import ALLOWED
from comfynb.simulator import Simulator


def workflow(i: int, color: int, prefix: str) -> dict[str, Any]:
    """A trivial prompt, never cached (its color is its own), 1 or 2 images."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1 + i % 2, "color": color + i},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def enqueue_jobs(tmp_path: Path, count: int, color: int, prefix: str) -> None:
    """``count`` jobs in the store under ``tmp_path``, job ``i`` making ``1 + i % 2`` images."""
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as store:
        run = store.new_run("crash")
        for i in range(count):
            enqueue(store, workflow(i, color, prefix), run=run, params={"1.batch_size": 1 + i % 2})


def run_child(
    script: Path, tmp_path: Path, url: str, crashpoint: str | None
) -> subprocess.CompletedProcess[str]:
    """Run a child worker ``script`` on the store under ``tmp_path`` to its end (or death)."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYNB_CRASHPOINT"}
    if crashpoint is not None:
        env["COMFYNB_CRASHPOINT"] = crashpoint
    args = [str(tmp_path / "lab.duckdb"), str(tmp_path / "outputs"), url]
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def posting_damage(point: str, store: Store, posted: set[str]) -> bool | None:
    """Whether a kill at a POST or mid-download left its damage; None for other points."""
    claimed = [j.prompt_id for j in store.unsettled_jobs() if j.status is JobStatus.PENDING]
    if point == "submit.before_post":  # a prompt_id recorded, never sent
        return any(pid not in posted for pid in claimed)
    if point == "submit.after_post":  # sent, but the store does not know
        return any(pid in posted for pid in claimed)
    if point == "download.write":  # a half-written temporary file
        return any(store.output_dir.rglob(".*.part"))
    return None


def check_events(store: Store, job_id: int) -> None:
    """The job's events chain from its creation (none -> ``pending``) through legal moves (and
    retries or releases, whose row keeps a pending job where it is) to ``completed``."""
    events = store.events(job_id)
    moves = list(zip(events["from_status"], events["to_status"], strict=True))
    assert moves and moves[0][1] == "pending" and not isinstance(moves[0][0], str), (job_id, moves)
    moves, details = moves[1:], list(events["detail"])[1:]
    status = JobStatus.PENDING
    for (before, after), detail in zip(moves, details, strict=True):
        assert before == status.value, (job_id, moves)
        note = isinstance(detail, str) and ('"retry"' in detail or '"release"' in detail)
        assert (before == after == "pending" and note) or JobStatus(after) in ALLOWED[status], (
            job_id,
            moves,
        )
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
        for job_id, batch in zip(jobs["id"], jobs["1.batch_size"], strict=True):
            assert per_job.get(job_id) == batch, job_id
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
