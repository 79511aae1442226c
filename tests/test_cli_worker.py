"""``comfynb worker`` as a real process, and a notebook (this test process) beside it.

The worker subprocess owns the DuckDB file and serves it; this process reaches it only through
``comfynb.open`` (a RemoteStore over loopback), as a notebook would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import HTTP, wait_for

import comfynb
from comfynb import JobStatus, StoreLocked, demo
from comfynb.errors import WorkerGone
from comfynb.service.remote import RemoteStore, endpoint_file, find_endpoint
from comfynb.simulator import Simulator
from comfynb.store import Store

STARTUP = 15.0  # seconds a cold subprocess may take to import comfynb and open the store


class WorkerProcess:
    """A ``comfynb worker`` subprocess; its stderr goes to a file the test reads afterwards."""

    def __init__(self, db: Path, servers: list[str], *extra: str) -> None:
        self.db = db
        self.log = db.with_name(f"worker-{os.urandom(3).hex()}.log")
        args = [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db)]
        for url in servers:
            args += ["--server", url]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([*args, *extra], stderr=log, stdout=log)

    def wait_serving(self) -> dict[str, Any]:
        def serving() -> dict[str, Any] | None:
            assert self.process.poll() is None, self.stderr()
            info = find_endpoint(self.db)
            return info if info is not None and info["pid"] == self.process.pid else None

        info: dict[str, Any] = wait_for(serving, timeout=STARTUP, interval=0.02)
        return info

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:  # a failed test leaves no process behind
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def test_a_notebook_beside_a_worker_process(
    sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    worker = WorkerProcess(db, [sim.url])
    workers.append(worker)
    info = worker.wait_serving()
    file = endpoint_file(db)
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(StoreLocked):  # the file itself is the worker's
        Store.open(db)

    store = comfynb.open(db)
    assert isinstance(store, RemoteStore) and store.pid == worker.process.pid
    run = store.new_run("sweep")
    jobs = [
        comfynb.enqueue(store, trivial_prompt(f"s{color}"), run=run, params={"1.color": color})
        for color in range(6)
    ]
    summary = comfynb.wait(store, jobs, timeout=20, progress=False)
    assert (summary.done, summary.failed, summary.pending) == (6, 0, 0)

    frame = store.jobs(run="sweep")
    assert frame["status"].tolist() == ["completed"] * 6
    assert str(frame["1.color"].dtype) == "UInt64"
    candidates = store.candidates(run=run)
    assert len(candidates) == 6 and candidates["1.color"].tolist() == list(range(6))
    assert all(store.image_path(int(i)).is_file() for i in candidates["id"])
    picked = store.pick(int(candidates["id"][2]))
    assert picked.picked and store.candidates(picked=True)["id"].tolist() == [picked.id]
    events = store.events(job=jobs[0])
    assert events["to_status"].tolist()[-1] == "completed"
    assert store.job(jobs[0].id).status is JobStatus.COMPLETED
    late = comfynb.enqueue(store, trivial_prompt("late"), run=run)
    assert comfynb.wait(store, late, timeout=20, progress=False).done == 1

    assert worker.stop() == 0
    assert not file.exists()
    with pytest.raises(WorkerGone, match="is gone"):
        store.jobs()
    store.close()
    with comfynb.open(db) as owned:  # the worker closed the file: it opens here now
        assert isinstance(owned, Store)
        assert owned.candidates(picked=True)["id"].tolist() == [picked.id]
        assert owned.status_counts() == {"completed": 7}
    log = worker.stderr()
    assert f"job {jobs[0].id} run {run.id} " in log and "-> completed" in log
    assert info["token"] not in log


def sampler_prompt(steps: int) -> dict[str, Any]:
    """txt2img with a KSampler: it reports progress once per step."""
    return demo.txt2img(1, steps=steps, size=64, prefix="s")


def test_the_notebook_watches_progress_and_cancels_a_running_job(
    sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    worker = WorkerProcess(db, [sim.url])
    workers.append(worker)
    worker.wait_serving()
    sim.configure(step_seconds=0.05)  # 100 steps: 5 s of sampling unless cancelled
    with comfynb.open(db) as store:
        store.new_run("r")
        job = comfynb.enqueue(store, sampler_prompt(steps=100), run="r")
        seen = wait_for(lambda: store.job(job.id).progress_value, timeout=10)
        assert 0 < seen < 100 and store.job(job.id).progress_max == 100
        assert store.job(job.id).status is JobStatus.RUNNING
        cancelled = comfynb.cancel(store, job)  # no client here: the worker's process has one
        assert cancelled.status is JobStatus.CANCELLED
        wait_for(lambda: not HTTP.get(f"{sim.url}/queue").json()["queue_running"], timeout=5)
        sim.configure(step_seconds=0)
        after = comfynb.enqueue(store, trivial_prompt("after"), run="r")
        assert comfynb.wait(store, after, timeout=20, progress=False).done == 1
        assert store.job(job.id).status is JobStatus.CANCELLED  # the worker left it so
        assert store.candidates(job=job).empty
    assert worker.stop() == 0
    assert "Traceback" not in worker.stderr()


def test_sigterm_mid_run_then_a_restart_finishes_the_rest(
    sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    total = 24
    with Store.open(db) as store:
        run = store.new_run("long")
        ids = [
            comfynb.enqueue(store, trivial_prompt(f"l{i}"), run=run, params={"1.color": i}).id
            for i in range(total)
        ]
    sim.configure(node_seconds=0.02)  # ~40 ms a job: the signal lands mid-run
    first = WorkerProcess(db, [sim.url])
    workers.append(first)
    first.wait_serving()
    with comfynb.open(db) as watching:
        wait_for(lambda: watching.status_counts().get("completed", 0) >= 4, timeout=20)
    assert first.stop(signal.SIGTERM) == 0
    assert not endpoint_file(db).exists()
    with Store.open(db) as store:  # the file was closed: it opens here
        counts = store.status_counts()
        assert 4 <= counts.get("completed", 0) < total, counts
        # nothing ambiguous: a job is done, on a server (posted, recoverable) or waiting
        assert set(counts) <= {"completed", "submitted", "running", "pending"}
        assert store.jobs(status="pending")["prompt_id"].isna().all()

    second = WorkerProcess(db, [sim.url], "--until-idle")
    workers.append(second)
    assert second.process.wait(30) == 0, second.stderr()
    with Store.open(db) as store:
        jobs = store.jobs()
        assert jobs["status"].tolist() == ["completed"] * total
        assert len(store.candidates()) == total
        assert sorted(jobs["id"]) == ids
    posts = {p["prompt_id"]: p["posts"] for p in sim.prompts()}
    assert set(jobs["prompt_id"]) <= set(posts)
    assert [posts[p] for p in jobs["prompt_id"]] == [1] * total
    assert "SIGTERM: stopping" in first.stderr()


def test_ctrl_c_stops_cleanly_and_a_second_worker_is_refused(
    sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    worker = WorkerProcess(db, [sim.url])
    workers.append(worker)
    info = worker.wait_serving()
    other = WorkerProcess(db, [sim.url])
    workers.append(other)
    assert other.process.wait(STARTUP) == 1
    assert f"PID {worker.process.pid}" in other.stderr()
    assert json.loads(endpoint_file(db).read_text())["token"] == info["token"]  # untouched
    assert worker.stop(signal.SIGINT) == 0
    assert not endpoint_file(db).exists()
    assert "Traceback" not in worker.stderr()


def test_a_killed_worker_leaves_a_stale_file_that_is_ignored_and_replaced(
    sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    killed = WorkerProcess(db, [sim.url])
    workers.append(killed)
    killed.wait_serving()
    with comfynb.open(db) as store:
        store.new_run("r")
        assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
        assert endpoint_file(db).exists()  # no clean exit: the file stays, its pid is dead
        with pytest.raises(WorkerGone, match=f"PID {killed.process.pid}"):
            store.runs()
    with comfynb.open(db) as local:  # the stale file is ignored: the file opens here
        assert isinstance(local, Store) and local.runs()["name"].tolist() == ["r"]
    after = WorkerProcess(db, [sim.url])
    workers.append(after)
    assert after.wait_serving()["pid"] == after.process.pid  # replaced
    assert after.stop() == 0


def test_worker_help_and_missing_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "worker", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--server" in done.stdout and "SIGTERM" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "worker", "--db", "x.duckdb"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "--server" in missing.stderr
