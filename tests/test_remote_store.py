"""A store served by its owner process and reached through the local endpoint (comfynb.remote).

These tests serve the store on the endpoint's own threads in this process and reach it with
a real RemoteStore over loopback HTTP; tests/test_cli_worker.py does the same across two real
processes (a ``comfynb worker`` subprocess owning the file).
"""

from __future__ import annotations

import json
import os
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import FAST_RETRY, trivial_prompt
from sim_helpers import HTTP, release, start_blocker, wait_for

import comfynb
from comfynb import (
    CandidateNotFound,
    InvalidInput,
    InvalidTransition,
    JobNotInStore,
    JobStatus,
    RunNotFound,
    StoreError,
    WorkflowError,
)
from comfynb.errors import WorkerGone
from comfynb.service.remote import Endpoint, RemoteStore, endpoint_file, find_endpoint, serve
from comfynb.simulator import Simulator
from comfynb.store import Store


@pytest.fixture
def endpoint(store: Store) -> Iterator[Endpoint]:
    with serve(store) as served:
        yield served


@pytest.fixture
def remote(endpoint: Endpoint, store: Store) -> Iterator[RemoteStore]:
    opened = comfynb.open(store.path)
    assert isinstance(opened, RemoteStore)
    with opened:
        yield opened


def run_to_end(store: Store, sim: Simulator, job: comfynb.Job) -> comfynb.Job:
    """Submit and follow one job on the owner's side, as the worker would."""
    with comfynb.Client(sim.url, retry=FAST_RETRY) as client:
        job = comfynb.submit_job(store, client, job)
        return wait_for(
            lambda: (j := comfynb.poll_job_status(store, client, job)).status.is_terminal and j
        )


# --------------------------------------------------------------------------- finding the endpoint


def test_open_finds_the_endpoint_and_keeps_the_token_out_of_sight(
    endpoint: Endpoint, remote: RemoteStore, store: Store
) -> None:
    info = json.loads(endpoint.file.read_text())
    assert endpoint.file == Path(store.path + ".worker.json")
    assert stat.S_IMODE(endpoint.file.stat().st_mode) == 0o600
    assert info["pid"] == os.getpid() and info["url"] == endpoint.url
    assert endpoint.url.startswith("http://127.0.0.1:")
    token = info["token"]
    assert len(token) >= 32
    for shown in (repr(remote), str(remote), repr(endpoint)):
        assert token not in shown
    assert repr(remote) == f"<RemoteStore {store.path} via comfynb worker PID {os.getpid()}>"
    assert remote.output_dir == store.output_dir
    assert remote.schema_version == store.schema_version


def test_every_request_needs_the_token(endpoint: Endpoint) -> None:
    assert HTTP.get(f"{endpoint.url}/hello").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    response = HTTP.post(f"{endpoint.url}/call/runs", json={}, headers=wrong)
    assert response.status_code == 401
    stale = {**json.loads(endpoint.file.read_text()), "token": "old"}
    with pytest.raises(WorkerGone, match="refused the token"):
        RemoteStore(endpoint.store.path, stale)


def test_a_call_outside_the_notebook_api_is_refused(endpoint: Endpoint) -> None:
    token = json.loads(endpoint.file.read_text())["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for name in ("claim_next_job", "record_intent", "close", "_fetch", "transaction"):
        response = HTTP.post(f"{endpoint.url}/call/{name}", json={}, headers=headers)
        assert response.status_code == 404, name
    assert not endpoint.store._closed


def test_a_stale_endpoint_file_is_ignored(tmp_path: Path) -> None:
    db = tmp_path / "lab.duckdb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    file = endpoint_file(db)
    file.write_text(
        json.dumps({"pid": int(dead.stdout), "url": "http://127.0.0.1:9", "token": "x"})
    )
    assert find_endpoint(db) is None
    with comfynb.open(db) as store:
        assert isinstance(store, Store)
        with serve(store) as endpoint:  # the next worker replaces it
            assert json.loads(file.read_text())["url"] == endpoint.url
        assert not file.exists()


def test_an_endpoint_that_does_not_answer_while_the_file_opens_was_stale(tmp_path: Path) -> None:
    db = tmp_path / "lab.duckdb"
    file = endpoint_file(db)
    # a live pid (ours, as after a pid reuse) but nobody listening
    file.write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9", "token": "x"}))
    with comfynb.open(db) as store:
        assert isinstance(store, Store)
    assert not file.exists()


def test_output_dir_must_be_the_workers(remote: RemoteStore, store: Store, tmp_path: Path) -> None:
    with comfynb.open(store.path, output_dir=store.output_dir) as same:
        assert isinstance(same, RemoteStore)
    with pytest.raises(InvalidInput, match="writes images to"):
        comfynb.open(store.path, output_dir=tmp_path / "elsewhere")


# --------------------------------------------------------------------------- the same answers


def test_frames_and_records_are_the_local_ones(
    sim: Simulator, remote: RemoteStore, store: Store
) -> None:
    run = remote.new_run("portraits", notes="remote", metadata={"lens": 50})
    assert run == store.run("portraits")
    jobs = [
        comfynb.enqueue(remote, trivial_prompt(f"p{i}"), run=run, params=params)
        for i, params in enumerate(
            [
                {"1.color": 1, "1.width": 48, "2.filename_prefix": "q"},
                {"1.color": 2},
                {"1.width": 32},
            ]
        )
    ]
    assert [j.status for j in jobs] == [JobStatus.PENDING] * 3
    assert jobs[0] == store.job(jobs[0].id)
    for job in jobs[:2]:
        assert run_to_end(store, sim, job).status is JobStatus.COMPLETED
    for local, there in [
        (store.jobs(), remote.jobs()),
        (
            store.jobs(run="portraits", status=["completed"]),
            remote.jobs("portraits", ["completed"]),
        ),
        (store.candidates(run=run), remote.candidates(run=run)),
        (store.candidates(job=jobs[0]), remote.candidates(job=jobs[0].id)),
        (store.events(), remote.events()),
        (store.runs(), remote.runs()),
    ]:
        pd.testing.assert_frame_equal(there, local)  # values and dtypes (Int64, str, ...)
    frame = remote.jobs()
    assert str(frame["1.color"].dtype) == "UInt64"  # nullable, as locally: not floats
    assert frame["1.color"].isna().tolist() == [False, False, True]
    assert remote.job(int(frame["id"][0])) == store.job(jobs[0].id)  # a numpy id travels
    assert remote.status_counts(run=run) == {"completed": 2, "pending": 1}
    [candidate] = remote.candidates(job=jobs[0]).itertuples()
    assert remote.candidate(candidate.id) == store.candidate(candidate.id)
    assert remote.image_path(candidate.id) == store.image_path(candidate.id)
    assert remote.image_path(candidate.id).is_file()


def test_pick_star_refine_lineage_and_export(
    sim: Simulator, remote: RemoteStore, store: Store, tmp_path: Path
) -> None:
    remote.new_run("r")
    first = run_to_end(store, sim, comfynb.enqueue(remote, trivial_prompt(), run="r"))
    [parent] = store.candidates(job=first)["id"]
    assert remote.pick(parent).picked and store.candidate(parent).picked
    assert remote.star(remote.candidate(parent), 4).stars == 4
    step = remote.new_step("r", "refine", trivial_prompt("refined"), parent_candidate=parent)
    assert step == store.step(step.id) and remote.step(step.id) == step
    child_job = comfynb.enqueue(remote, trivial_prompt("refined"), run="r", step=step)
    run_to_end(store, sim, child_job)
    [child] = remote.candidates(step=step)["id"]
    assert remote.lineage(child)[["id", "depth"]].values.tolist() == [[parent, -1], [child, 0]]
    pd.testing.assert_frame_equal(remote.lineage(parent), store.lineage(parent))
    assert remote.candidates(picked=True)["id"].tolist() == [parent]
    here = remote.export(tmp_path / "mine.parquet", run="r")
    pd.testing.assert_frame_equal(pd.read_parquet(here), store.candidates(run="r"))
    assert remote.export(tmp_path / "jobs.csv", "jobs").is_file()


def test_typed_errors_travel(remote: RemoteStore, store: Store) -> None:
    with pytest.raises(RunNotFound, match="no run 'nope'") as missing:
        remote.run("nope")
    assert missing.value.key == "nope"
    with pytest.raises(JobNotInStore) as no_job:
        remote.job(404)
    assert no_job.value.key == 404 and isinstance(no_job.value, LookupError)
    with pytest.raises(CandidateNotFound):
        remote.pick(99)
    with pytest.raises(InvalidInput, match="stars is an int from 0 to 5"):
        remote.star(1, 9)
    with pytest.raises(RunNotFound):
        comfynb.enqueue(remote, trivial_prompt(), run="not-made")
    with pytest.raises(WorkflowError, match="class_type"):
        comfynb.enqueue(remote, {"1": {"inputs": {}}}, run="r")
    with pytest.raises(TypeError):
        remote._call("jobs", nonsense=1)
    with pytest.raises(JobNotInStore):
        comfynb.cancel(remote, 10_000)
    assert store.jobs().empty  # nothing was written by the failed calls


def test_notebook_writes_the_worker_owns_are_refused(remote: RemoteStore) -> None:
    with pytest.raises(StoreError, match=r"owned by the comfynb worker \(PID \d+\).*enqueue"):
        remote.transaction()


def test_cancel_runs_in_the_owner_process_with_its_client(
    sim: Simulator, remote: RemoteStore, store: Store
) -> None:
    remote.new_run("c")
    pending = comfynb.enqueue(remote, trivial_prompt(), run="c")
    assert comfynb.cancel(remote, pending).status is JobStatus.CANCELLED
    blocker = start_blocker(sim)
    try:
        job = comfynb.enqueue(remote, trivial_prompt("behind"), run="c")
        with comfynb.Client(sim.url, retry=FAST_RETRY) as client:
            job = comfynb.submit_job(store, client, job)
        assert job.status is JobStatus.SUBMITTED
        # the notebook passes no client: the owner's process talks to the job's server
        cancelled = comfynb.cancel(remote, job.id)
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.id == job.id and store.job(job.id).status is JobStatus.CANCELLED
        queue = HTTP.get(f"{sim.url}/queue").json()
        assert job.prompt_id not in json.dumps(queue["queue_pending"])
    finally:
        release(sim, blocker)
    done = comfynb.enqueue(remote, trivial_prompt(), run="c")
    run_to_end(store, sim, done)
    with pytest.raises(InvalidTransition, match="cannot move from 'completed'"):
        comfynb.cancel(remote, done)


# --------------------------------------------------------------------------- the endpoint gone


def test_a_call_after_the_endpoint_closed_says_the_worker_is_gone(
    store: Store, tmp_path: Path
) -> None:
    endpoint = serve(store)
    remote = comfynb.open(store.path)
    assert isinstance(remote, RemoteStore)
    remote.runs()  # a keep-alive connection is open now
    started = time.monotonic()
    endpoint.close()
    assert time.monotonic() - started < 2  # idle connections do not hold the close
    assert not endpoint.file.exists()
    with pytest.raises(WorkerGone, match=r"is gone .*comfynb.open\(") as gone:
        remote.jobs()
    assert gone.value.pid == os.getpid() and isinstance(gone.value, StoreError)
    remote.close()
    with comfynb.open(store.path) as again:  # no worker: the file itself (here: shared)
        assert isinstance(again, Store)


def test_a_call_arriving_while_the_endpoint_stops_is_not_run(
    endpoint: Endpoint, remote: RemoteStore, store: Store
) -> None:
    endpoint._server.calls.shutdown(wait=True)  # the first step of stopping
    with pytest.raises(WorkerGone, match="it is stopping"):
        remote.new_run("late")
    assert store.runs().empty


def test_a_restarted_worker_is_followed_to_its_new_endpoint(store: Store) -> None:
    with serve(store) as first:
        remote = comfynb.open(store.path)
        assert isinstance(remote, RemoteStore)
        remote.new_run("before")
    with serve(store) as second:
        assert second._token != first._token
        assert remote.new_run("after").name == "after"  # refused by the old one: sent again
        assert remote.url == second.url
        assert remote.runs()["name"].tolist() == ["before", "after"]
    with remote, serve(store) as third, ThreadPoolExecutor(6) as pool:
        # threads refused together follow the restart once, and each call is done once
        names = list(pool.map(lambda i: remote.new_run(f"t{i}").name, range(6)))
        assert names == [f"t{i}" for i in range(6)] and remote.url == third.url
        assert len(store.runs()) == 8


def test_many_threads_calling_at_once(remote: RemoteStore, store: Store) -> None:
    remote.new_run("t")

    def add(i: int) -> Any:
        return comfynb.enqueue(remote, trivial_prompt(), run="t", params={"1.color": i}).id

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(add, range(30)))
        frames = list(pool.map(lambda _: len(remote.jobs(run="t")), range(12)))
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 30
    assert all(0 < n <= 30 for n in frames)
    assert len(store.jobs(run="t")) == 30
    assert len(store._cursors) <= 8 + 1  # a bounded pool: one cursor per call thread


def test_idle_connections_never_make_a_call_wait(endpoint: Endpoint, store: Store) -> None:
    # a notebook re-running `store = comfynb.open(...)` keeps every old keep-alive connection
    kept = [comfynb.open(store.path) for _ in range(12)]
    try:
        for remote in kept:
            started = time.monotonic()
            remote.runs()
            assert time.monotonic() - started < 1.0
    finally:
        for remote in kept:
            remote.close()


def test_remote_reads_cost_a_small_multiple_of_local_ones(
    remote: RemoteStore, store: Store, record_property: Any
) -> None:
    store.new_run("b")
    for i in range(50):
        comfynb.enqueue(store, trivial_prompt(), run="b", params={"1.color": i})

    def per_call(call: Any, n: int = 30) -> float:
        """The median call: a loaded machine stretches some calls (a mean took them all in),
        a Nagle stall stretches each."""
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    ratios = {
        "jobs": per_call(remote.jobs) / per_call(store.jobs),
        "job": per_call(lambda: remote.job(1)) / per_call(lambda: store.job(1)),
    }
    record_property("remote_over_local", ratios)
    # loose: ~2x here, measured; a Nagle stall (~40 ms a call) would be ~50x
    assert ratios["jobs"] < 10 and per_call(lambda: remote.job(1)) < 0.02, ratios


def test_values_that_cannot_travel_are_refused_before_sending(remote: RemoteStore) -> None:
    with pytest.raises(InvalidInput, match="cannot be sent to the worker process"):
        remote.new_run("x", metadata={"f": object()})
    remote.close()
    with pytest.raises(StoreError, match="this RemoteStore is closed"):
        remote.runs()
