"""A server that cannot be used is said, not waited on in silence (issue 11, section 2).

Real simulators on real ports, real DuckDB files, the CLI worker as a real subprocess: a
server unreachable from the start or dying mid-run stops ``--until-idle`` with exit 1 naming
it; jobs left in flight on a server no worker serves are adopted; ``cancel`` of a job whose
server is gone cancels it here. (URLs: ``test_server_urls.py``; ``wait``:
``test_wait_servers.py``.)
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RETRY, trivial_prompt
from sim_helpers import wait_for
from test_cli_worker import STARTUP, WorkerProcess

import comfynb
from comfynb import Client, JobStatus, Worker, enqueue
from comfynb.service.remote import serve
from comfynb.simulator import Simulator
from comfynb.store import Store


def unique(index: int) -> dict[str, Any]:
    prompt = trivial_prompt("said")
    prompt["1"]["inputs"]["color"] = index
    return prompt


def closed_port() -> str:
    """The URL of a port nobody listens on (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fill(db: Path, count: int) -> list[int]:
    with Store.open(db) as store:
        store.new_run("r")
        return [enqueue(store, unique(i), run="r").id for i in range(count)]


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture
def own_sim(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator of this test's own, that the test may stop (the session one must live)."""
    sim = Simulator(root=tmp_path / "own").start()
    yield sim
    sim.stop()


# --------------------------------------------------------------------------- 1. --until-idle


def test_until_idle_on_an_unreachable_server_exits_1_naming_it(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    fill(db, 6)
    dead = closed_port()
    worker = WorkerProcess(db, [dead], "--until-idle", "--reroute-after", "0.5")
    workers.append(worker)
    assert worker.process.wait(STARTUP) == 1, worker.stderr()
    log = worker.stderr()
    assert "stopped: 6 job(s) still pending; no server could be used" in log, log
    assert f"{dead} (down since " in log and "connection refused" in log, log
    assert f"server {dead} down: connection refused" in log  # said when first seen
    assert "Traceback" not in log
    with Store.open(db) as store:
        assert store.status_counts() == {"pending": 6}  # nothing lost, nothing claimed


def test_until_idle_when_the_only_server_dies_mid_run_exits_1(
    own_sim: Simulator, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    total = 30
    fill(db, total)
    own_sim.configure(node_seconds=0.03)
    worker = WorkerProcess(db, [own_sim.url], "--until-idle", "--reroute-after", "0.5")
    workers.append(worker)
    worker.wait_serving()
    with comfynb.open(db) as watching:
        wait_for(lambda: watching.status_counts().get("completed", 0) >= 3, timeout=20)
    own_sim.stop()
    assert worker.process.wait(20) == 1, worker.stderr()
    log = worker.stderr()
    assert "job(s) still pending; no server could be used for more than 0.5 s" in log, log
    assert f"{own_sim.url} (down since " in log
    assert "Traceback" not in log
    with Store.open(db) as store:
        counts = store.status_counts()
    # the jobs that were on the server went back to the queue: none left in flight
    assert set(counts) <= {"completed", "pending"} and counts.get("pending", 0) > 0, counts
    assert f"stopped: {counts['pending']} job(s) still pending" in log


def test_until_idle_with_nothing_to_do_and_a_dead_server_exits_0_at_once(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    db = tmp_path / "lab.duckdb"
    fill(db, 0)
    worker = WorkerProcess(db, [closed_port()], "--until-idle", "--reroute-after", "30")
    workers.append(worker)
    assert worker.process.wait(STARTUP) == 0, worker.stderr()


# --------------------------------------------------------------------------- 4. orphans


def leave_in_flight(store: Store, sim: Simulator, count: int) -> list[int]:
    """Jobs a first worker posted to ``sim`` and left there, recorded in flight."""
    store.new_run("r")
    ids = [enqueue(store, unique(i), run="r").id for i in range(count)]
    sim.configure(node_seconds=0.5)  # they are still there when the worker stops
    first = Worker(store, [sim.url], target_depth=count).start()
    try:
        wait_for(
            lambda: (
                store.status_counts().get("submitted", 0) + store.status_counts().get("running", 0)
                == count
            ),
            timeout=10,
        )
    finally:
        first.stop()
    assert set(store.status_counts()) <= {"submitted", "running"}
    return ids


def test_jobs_left_on_a_dead_server_are_rerouted_by_a_worker_on_another(
    own_sim: Simulator, sim: Simulator, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ids = leave_in_flight(store, own_sim, 3)
    own_sim.stop()  # the kernel restarted: its embedded simulator is gone, a new one is up
    caplog.set_level(logging.INFO, logger="comfynb.worker")
    summary = Worker(store, [sim.url], reroute_after=0.3).run()
    for job_id in ids:
        job = store.job(job_id)
        assert (job.status, job.server, job.retries) == (JobStatus.COMPLETED, sim.url, 1)
    assert (summary.completed, summary.stopped_by) == (3, None)
    assert all(n == 1 for n in (row["posts"] for row in sim.prompts()))
    assert f"3 job(s) in flight on {own_sim.url}, a server" in caplog.text
    assert f"server {own_sim.url}: 3 job(s) rerouted" in caplog.text


def test_jobs_left_on_a_server_that_answers_are_followed_there(
    own_sim: Simulator, sim: Simulator, store: Store
) -> None:
    ids = leave_in_flight(store, own_sim, 3)
    own_sim.configure(node_seconds=0)
    summary = Worker(store, [sim.url], reroute_after=30).run()
    for job_id in ids:
        job = store.job(job_id)
        assert (job.status, job.server, job.retries) == (JobStatus.COMPLETED, own_sim.url, 0)
    assert (summary.left, summary.stopped_by) == (0, None)
    assert all(row["posts"] == 1 for row in own_sim.prompts())
    assert sim.prompts() == []  # nothing posted again elsewhere
    assert len(store.candidates()) == 3


def test_jobs_recorded_as_localhost_are_the_same_server_s(sim: Simulator, store: Store) -> None:
    ids = leave_in_flight(store, sim, 2)
    port = sim.url.rsplit(":", 1)[1]
    # a row written before URLs had one spelling
    store._write("UPDATE jobs SET server = ?", [f"http://localhost:{port}/"])
    sim.configure(node_seconds=0)
    Worker(store, [sim.url], reroute_after=30).run()
    assert [store.job(i).status for i in ids] == [JobStatus.COMPLETED] * 2
    assert all(row["posts"] == 1 for row in sim.prompts())


def test_cancel_of_a_job_whose_server_is_gone_cancels_it_here(
    own_sim: Simulator, store: Store
) -> None:
    ids = leave_in_flight(store, own_sim, 2)
    gone = own_sim.url
    own_sim.stop()
    with Client(gone, retry=FAST_RETRY) as client:
        cancelled = comfynb.cancel(store, ids[0], client=client)
    assert cancelled.status is JobStatus.CANCELLED
    detail = store.events(job=ids[0])["detail"].tolist()[-1]
    assert "server_unreachable" in str(detail) and gone in str(detail)
    served = serve(store, servers=[gone], client_options={"retry": FAST_RETRY})
    with served, comfynb.open(store.path) as remote:  # a notebook beside a worker process
        assert comfynb.cancel(remote, ids[1]).status is JobStatus.CANCELLED
