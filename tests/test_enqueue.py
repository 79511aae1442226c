"""comfynb.enqueue_many: every workflow checked first, all jobs written in one transaction,
against a real DuckDB file and through a worker's endpoint (a real RemoteStore over loopback)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pandas as pd
import pytest
from conftest import trivial_prompt

import comfynb
from comfynb import (
    CandidateNotFound,
    InvalidInput,
    JobStatus,
    RunNotFound,
    StepNotFound,
    Store,
    WorkflowError,
)
from comfynb.jobs import select_next_jobs
from comfynb.service.remote import RemoteStore
from comfynb.simulator import Simulator


def sweep(n: int, prefix: str = "s") -> list[dict[str, Any]]:
    return [trivial_prompt(f"{prefix}{i}") for i in range(n)]


def test_the_jobs_are_written_in_order_and_read_back_the_same(store: Store) -> None:
    run = store.new_run("r")
    step = store.new_step(run, "sweep", trivial_prompt(), params_spec={"seed": [0, 1, 2]})
    jobs = comfynb.enqueue_many(
        store,
        sweep(3),
        run="r",
        step=step,
        params=[{"EmptyImage.color": 0}, None, {"EmptyImage.color": 2, "2.filename_prefix": "x"}],
        priority=2,
        max_retries=1,
        metadata={"why": "sweep"},
    )
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    assert [store.job(j.id) for j in jobs] == jobs  # built without reading back: the same
    assert [j.params for j in jobs] == [
        {"EmptyImage.color": 0},
        {},
        {"EmptyImage.color": 2, "2.filename_prefix": "x"},
    ]
    expected = sweep(3)  # each param set in its own job's workflow, the rest unchanged
    expected[0]["1"]["inputs"]["color"] = 0
    expected[2]["1"]["inputs"]["color"] = 2
    expected[2]["2"]["inputs"]["filename_prefix"] = "x"
    assert [j.workflow for j in jobs] == expected
    for job in jobs:
        assert (job.status, job.run_id, job.step_id, job.priority) == (
            JobStatus.PENDING,
            run.id,
            step.id,
            2,
        )
        assert (job.max_retries, job.metadata, job.prompt_id) == (1, {"why": "sweep"}, None)
        assert job.created_at.tzinfo is not None
    assert store.jobs()["id"].tolist() == [j.id for j in jobs]
    events = store.events()  # each job's story starts with its creation, in the same transaction
    assert events["job_id"].tolist() == [j.id for j in jobs]
    assert events["from_status"].isna().all() and (events["to_status"] == "pending").all()


def test_the_records_are_copies(store: Store) -> None:
    store.new_run("r")
    workflow = trivial_prompt()
    jobs = comfynb.enqueue_many(store, [workflow, workflow], run="r", metadata={"a": {"b": 1}})
    workflow["1"]["inputs"]["width"] = 9  # a sweep cell changing its dict after queueing
    jobs[0].metadata["a"]["b"] = 2
    assert jobs[0].workflow == jobs[1].workflow == store.job(jobs[0].id).workflow
    assert jobs[0].workflow["1"]["inputs"]["width"] == 64
    assert jobs[1].metadata == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            {"1": {"inputs": {}}},
            WorkflowError,
            r"^workflows\[2\]: node \"1\" has no \"class_type\"",
        ),
        ("not a workflow", WorkflowError, r"^workflows\[2\]: a workflow is a non-empty dict"),
        (
            {"1": {"class_type": "X", "inputs": {"f": object()}}},
            InvalidInput,
            r'^workflows\[2\]: workflow\["1"\]\["inputs"\]\["f"\] is a object: workflow must be JSON',
        ),
    ],
)
def test_one_bad_workflow_writes_nothing_and_is_named_by_its_index(
    store: Store, bad: Any, error: type[Exception], message: str
) -> None:
    store.new_run("r")
    workflows = [*sweep(2), bad, *sweep(2)]
    with pytest.raises(error, match=message) as caught:
        comfynb.enqueue_many(store, workflows, run="r")
    if isinstance(caught.value, WorkflowError) and isinstance(bad, dict):
        assert caught.value.node_id == "1"  # the error keeps its attributes
    assert store.jobs().empty


def test_bad_params_metadata_and_ints_write_nothing(store: Store) -> None:
    store.new_run("r")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"params": [{"1.color": 1}, [1, 2]]}, r"^params\[1\]: params is a dict of inputs to set"),
        (
            {"params": [{"1.color": 1}, {"1.color": {1, 2}}]},
            r'^params\[1\]: params\["1.color"\] is a set: params must be JSON data',
        ),
        ({"params": [{"1.color": 1}]}, "params has 1 entries for 2 workflows"),
        ({"params": {"1.color": 1}}, "params is a list of dicts, one per workflow"),
        ({"metadata": {"f": object()}}, "metadata must be JSON data"),
        ({"priority": "high"}, "priority must be an int"),
        ({"max_retries": -1}, "max_retries must be an int from 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            comfynb.enqueue_many(store, sweep(2), run="r", **kwargs)
    with pytest.raises(InvalidInput, match=r"for one workflow use comfynb\.enqueue"):
        comfynb.enqueue_many(store, trivial_prompt(), run="r")  # type: ignore[arg-type]
    assert store.jobs().empty


def test_bad_references_write_nothing(store: Store) -> None:
    one, two = store.new_run("one"), store.new_run("two")
    step = store.new_step(one, "generate", trivial_prompt())
    with pytest.raises(InvalidInput, match=f"step {step.id} belongs to run {one.id}"):
        comfynb.enqueue_many(store, sweep(2), run=two, step=step)
    with pytest.raises(RunNotFound):
        comfynb.enqueue_many(store, sweep(2), run="three")
    with pytest.raises(RunNotFound):  # nothing to queue, but the run is still checked
        comfynb.enqueue_many(store, [], run="three")
    with pytest.raises(StepNotFound):
        comfynb.enqueue_many(store, sweep(2), run=one, step=50)
    with pytest.raises(CandidateNotFound):
        comfynb.enqueue_many(store, sweep(2), run=one, parent=50)
    assert store.jobs().empty
    assert comfynb.enqueue_many(store, [], run="one") == []


def test_a_failed_insert_leaves_no_job_behind(store: Store) -> None:
    store.new_run("r")
    with pytest.raises(comfynb.StoreError):  # the store refuses the second text as JSON
        store.add_jobs(['{"1": {}}', "{not json"], run="r")
    assert store.jobs().empty


def test_priority_and_fairness_between_runs_hold_for_batches(store: Store) -> None:
    store.new_run("a")
    store.new_run("b")
    a = [j.id for j in comfynb.enqueue_many(store, sweep(3, "a"), run="a")]
    b = [j.id for j in comfynb.enqueue_many(store, sweep(2, "b"), run="b")]
    [urgent] = [j.id for j in comfynb.enqueue_many(store, sweep(1, "u"), run="b", priority=1)]
    taken = [j.id for j in select_next_jobs(store, 10)]
    assert taken == [urgent, a[0], b[0], a[1], b[1], a[2]]


def test_a_worker_runs_a_batch_to_the_end(store: Store, sim: Simulator) -> None:
    store.new_run("r")
    jobs = comfynb.enqueue_many(
        store, sweep(6), run="r", params=[{"EmptyImage.color": i} for i in range(6)]
    )
    summary = comfynb.Worker(store, [sim.url]).run(until_idle=True)
    assert summary.completed == 6
    assert store.status_counts(job_ids=[j.id for j in jobs]) == {"completed": 6}
    assert len(store.candidates(run="r")) == 6
    moves = store.events(job=jobs[0].id)[["from_status", "to_status"]].values.tolist()
    assert moves[0][1] == "pending" and moves[1] == ["pending", "submitted"]
    assert moves[-1][1] == "completed"


def test_secrets_are_dropped_from_every_workflow(store: Store) -> None:
    store.new_run("r")
    secret = copy.deepcopy(trivial_prompt())
    secret["2"]["inputs"]["api_key_comfy_org"] = "sk-live-1"
    jobs = comfynb.enqueue_many(store, [trivial_prompt(), secret], run="r")
    assert "api_key_comfy_org" not in jobs[1].workflow["2"]["inputs"]
    assert "sk-live-1" not in json.dumps(store.job(jobs[1].id).workflow)
    assert jobs[0].workflow == trivial_prompt()


# --------------------------------------------------------------------------- through a worker


def test_through_a_worker_the_batch_is_one_request(
    remote: RemoteStore, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote.new_run("r")
    sent: list[str] = []
    request = remote._request

    def counted(method: str, path: str, what: str, body: Any = None) -> Any:
        sent.append(path)
        return request(method, path, what, body)

    monkeypatch.setattr(remote, "_request", counted)  # a spy: every request still goes out
    jobs = comfynb.enqueue_many(
        remote, sweep(50), run="r", params=[{"EmptyImage.color": i} for i in range(50)]
    )
    assert sent == ["/call/add_jobs"]
    assert jobs == [store.job(j.id) for j in jobs]
    pd.testing.assert_frame_equal(remote.jobs(), store.jobs())
    sent.clear()
    with pytest.raises(WorkflowError, match=r"^workflows\[1\]:"):
        comfynb.enqueue_many(remote, [trivial_prompt(), {}], run="r")
    assert sent == []  # checked here, before anything is sent
    with pytest.raises(RunNotFound):  # checked in the worker's process: nothing written
        comfynb.enqueue_many(remote, sweep(2), run="nope")
    assert sent == ["/call/add_jobs"]
    assert len(store.jobs()) == 50


def test_enqueue_is_a_batch_of_one(store: Store, remote: RemoteStore) -> None:
    remote.new_run("r")
    job = comfynb.enqueue(remote, trivial_prompt(), run="r", params={"1.color": 4}, priority=3)
    assert job == store.job(job.id)
    assert (job.params, job.priority, job.status) == ({"1.color": 4}, 3, JobStatus.PENDING)
    assert job.workflow["1"]["inputs"]["color"] == 4
