"""The job lifecycle: every allowed and every forbidden move, against a real DuckDB file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import comfynb
from comfynb import InvalidInput, InvalidTransition, JobNotInStore, JobStatus, Store
from comfynb.core.status import ALLOWED, NOW, JobState, plan_moves
from comfynb.jobs import enqueue
from comfynb.store.lifecycle import transition, transition_many

S = JobStatus
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
# How to reach each status from a fresh pending job.
PATHS: dict[JobStatus, list[JobStatus]] = {
    S.PENDING: [],
    S.SUBMITTED: [S.SUBMITTED],
    S.RUNNING: [S.SUBMITTED, S.RUNNING],
    S.COMPLETED: [S.SUBMITTED, S.COMPLETED],
    S.FAILED: [S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}
ALLOWED_PAIRS = [(a, b) for a in S for b in sorted(ALLOWED[a])]
FORBIDDEN_PAIRS = [(a, b) for a in S for b in S if b not in ALLOWED[a]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with comfynb.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "out") as store:
        yield store


def job_at(store: Store, status: JobStatus) -> int:
    job = enqueue(store, WORKFLOW, run=store.new_run("r"), params={"seed": 1})
    for step in PATHS[status]:
        transition(store, job.id, step)
    assert store.job(job.id).status is status
    return job.id


def event_count(store: Store) -> int:
    return len(store.events())


def test_statuses_and_terminal() -> None:
    assert [s.value for s in S] == [
        "pending",
        "submitted",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert {s for s in S if s.is_terminal} == {S.COMPLETED, S.FAILED, S.CANCELLED}
    assert S.RUNNING == "running"
    assert S.parse("failed") is S.FAILED
    with pytest.raises(InvalidInput, match="use one of: pending"):
        S.parse("done")


@pytest.mark.parametrize(("start", "to"), ALLOWED_PAIRS, ids=lambda s: s.value)
def test_every_allowed_move_updates_the_job_and_writes_one_event(
    store: Store, start: JobStatus, to: JobStatus
) -> None:
    job_id = job_at(store, start)
    before = event_count(store)
    job = transition(store, job_id, to, detail={"why": "test"})
    assert job.status is to
    assert store.job(job_id) == job
    events = store.events(job=job_id)
    assert event_count(store) == before + 1
    last = events.iloc[-1]
    assert (last["from_status"], last["to_status"]) == (start.value, to.value)
    assert '"why":"test"' in last["detail"]


@pytest.mark.parametrize(("start", "to"), FORBIDDEN_PAIRS, ids=lambda s: s.value)
def test_every_forbidden_move_raises_and_changes_nothing(
    store: Store, start: JobStatus, to: JobStatus
) -> None:
    job_id = job_at(store, start)
    job, events = store.job(job_id), event_count(store)
    with pytest.raises(InvalidTransition) as caught:
        transition(store, job_id, to, error={"x": 1})
    assert caught.value.job_id == job_id
    assert f"from {start.value!r} to {to.value!r}" in str(caught.value)
    assert store.job(job_id) == job
    assert event_count(store) == events


def test_timestamps_follow_the_moves(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    submitted = transition(store, job_id, S.SUBMITTED, prompt_id="p1", server="http://a")
    assert submitted.submitted_at is not None and submitted.started_at is None
    assert (submitted.prompt_id, submitted.server) == ("p1", "http://a")
    running = transition(store, job_id, S.RUNNING, progress_value=3, progress_max=20)
    assert running.started_at is not None and running.finished_at is None
    assert (running.progress_value, running.progress_max) == (3, 20)
    done = transition(store, job_id, S.FAILED, error={"type": "OOM", "node": "3"})
    assert done.finished_at is not None and done.error == {"type": "OOM", "node": "3"}
    assert done.created_at <= done.submitted_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert done.finished_at.tzinfo is not None  # type: ignore[union-attr]


def test_back_to_pending_is_a_retry_with_a_fresh_claim(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    transition(store, job_id, S.SUBMITTED, prompt_id="old", server="http://a")
    transition(store, job_id, S.RUNNING, progress_value=5, progress_max=9)
    job = transition(store, job_id, S.PENDING, detail={"reason": "server forgot it"})
    assert job.status is S.PENDING and job.retries == 1
    assert job.prompt_id is None and job.claimed_at is None and job.submitted_at is None
    assert job.started_at is None and job.progress_value is None
    assert job.server == "http://a"  # stays pinned to its server
    detail = store.events(job=job_id).iloc[-1]["detail"]
    assert '"previous_prompt_id":"old"' in detail and "server forgot it" in detail


def test_bad_input_raises_and_changes_nothing(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    job, events = store.job(job_id), event_count(store)
    with pytest.raises(InvalidInput, match=r"unknown field.*status"):
        transition(store, job_id, S.SUBMITTED, status="running")
    with pytest.raises(InvalidInput, match="unknown job status 'done'"):
        transition(store, job_id, "done")
    with pytest.raises(JobNotInStore, match="no job 999"):
        transition(store, 999, S.SUBMITTED)
    with pytest.raises(InvalidInput, match="must be JSON"):
        transition(store, job_id, S.FAILED, error={"bad": object()})
    with pytest.raises(InvalidInput, match="retries must be an int from 0 or None, got -1"):
        transition(store, job_id, S.FAILED, retries=-1)
    with pytest.raises(InvalidInput, match="error must be a dict"):
        transition(store, job_id, S.FAILED, error="boom")
    with pytest.raises(InvalidInput, match="prompt_id must be a string"):
        transition(store, job_id, S.SUBMITTED, prompt_id=7)
    assert store.job(job_id) == job and event_count(store) == events


def test_transition_many_applies_all_in_order(store: Store) -> None:
    a, b, c = (job_at(store, S.PENDING) for _ in range(3))
    jobs = transition_many(
        store,
        [
            (a, S.SUBMITTED),
            (b, "cancelled"),
            (a, S.RUNNING, {"progress_value": 1}),
            (c, S.FAILED, {"error": {"type": "Rejected"}}, {"node": "2"}),
        ],
    )
    assert [(j.id, j.status) for j in jobs] == [
        (a, S.RUNNING),
        (b, S.CANCELLED),
        (a, S.RUNNING),
        (c, S.FAILED),
    ]
    assert store.job(a).submitted_at is not None and store.job(a).progress_value == 1
    events = store.events()
    assert list(zip(events["job_id"], events["to_status"], strict=True)) == [
        (a, "submitted"),
        (b, "cancelled"),
        (a, "running"),
        (c, "failed"),
    ]
    assert transition_many(store, []) == []


def test_a_batch_of_mixed_moves_writes_the_rows_the_moves_one_at_a_time_write(
    tmp_path: Path,
) -> None:
    """Jobs that set different columns share one UPDATE: the rows come out the same."""
    moves: list[Any] = [
        (S.SUBMITTED, {"server": "http://a:1", "error": None}, S.PENDING),
        (S.RUNNING, {"progress_value": 3}, S.SUBMITTED),
        (S.FAILED, {"error": {"type": "OOM", "message": "out of memory"}}, S.RUNNING),
        (S.PENDING, {"server": None}, S.SUBMITTED),  # a requeue: prompt_id and claim cleared
        (S.COMPLETED, {}, S.RUNNING),
        (S.CANCELLED, {}, S.PENDING),
    ]
    rows = []
    for batched in (False, True):
        with comfynb.open(tmp_path / f"{batched}.duckdb", output_dir=tmp_path) as store:
            ids = [job_at(store, start) for _, _, start in moves]
            batch = [(i, to, fields) for i, (to, fields, _) in zip(ids, moves, strict=True)]
            if batched:
                transition_many(store, batch)
            else:
                for move in batch:
                    transition_many(store, [move])
            frame = store.jobs().drop(columns=["created_at"])
            stamps = ["submitted_at", "started_at", "finished_at", "claimed_at"]
            frame[stamps] = frame[stamps].notna()  # times differ between the files
            rows.append(frame)
    assert rows[1].equals(rows[0]), rows[1].compare(rows[0])
    assert rows[1]["status"].tolist() == [to.value for to, _, _ in moves]


def test_a_plan_made_from_states_that_changed_is_refused_and_writes_nothing(
    store: Store,
) -> None:
    """A writer planning from states it keeps (the worker's recorder) learns it was wrong."""
    from comfynb.errors import StaleStates

    a, b = job_at(store, S.SUBMITTED), job_at(store, S.SUBMITTED)
    kept = {a: JobState(S.SUBMITTED, 0, None), b: JobState(S.SUBMITTED, 0, None)}
    transition(store, b, S.CANCELLED)  # meanwhile, from the notebook
    events = event_count(store)
    with pytest.raises(StaleStates, match="changed status"), store.transaction() as tx:
        tx.apply_plan(plan_moves(kept, [(a, S.RUNNING, {}, None), (b, S.RUNNING, {}, None)]))
    assert store.job(a).status is S.SUBMITTED and store.job(b).status is S.CANCELLED
    assert event_count(store) == events


def test_transition_many_with_one_illegal_move_changes_nothing(store: Store) -> None:
    a, b = job_at(store, S.PENDING), job_at(store, S.COMPLETED)
    before = store.jobs()
    events = event_count(store)
    with pytest.raises(InvalidTransition, match=f"job {b} cannot move"):
        transition_many(store, [(a, S.SUBMITTED), (b, S.RUNNING)])
    assert store.jobs().equals(before) and event_count(store) == events
    with pytest.raises(InvalidInput, match="a move is"):
        transition_many(store, [(a,)])  # type: ignore[list-item]
    with pytest.raises(JobNotInStore):
        transition_many(store, [(a, S.SUBMITTED), (404, S.SUBMITTED)])
    assert store.job(a).status is S.PENDING


def test_a_transition_joins_the_callers_transaction(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    with pytest.raises(RuntimeError), store.transaction():
        transition(store, job_id, S.SUBMITTED)
        assert store.job(job_id).status is S.SUBMITTED  # visible inside
        raise RuntimeError("abandon")
    assert store.job(job_id).status is S.PENDING
    assert event_count(store) == 0


def test_plan_moves_is_pure_and_checks_in_order() -> None:
    plan = plan_moves(
        {7: JobState(S.SUBMITTED, 0, "p")},
        [(7, S.RUNNING, {}, None), (7, S.PENDING, {}, None)],
    )
    before, columns = plan.updates[7]
    assert before is S.SUBMITTED
    assert columns["status"] == "pending" and columns["retries"] == 1
    assert columns["started_at"] is None and columns["prompt_id"] is None
    assert [(e[1], e[2]) for e in plan.events] == [(S.SUBMITTED, S.RUNNING), (S.RUNNING, S.PENDING)]
    assert (
        plan_moves({7: JobState(S.PENDING, 0, None)}, [(7, S.SUBMITTED, {}, None)]).updates[7][1][
            "submitted_at"
        ]
        is NOW
    )
    with pytest.raises(InvalidTransition):
        plan_moves({7: JobState(S.RUNNING, 0, None)}, [(7, S.SUBMITTED, {}, None)])


def test_only_the_lifecycle_writes_a_status() -> None:
    """Principle 5: one writer of jobs.status; the store's apply_plan is its only SQL."""
    package = Path(comfynb.__file__).parent
    writers = []
    for path in package.rglob("*.py"):
        text = path.read_text()
        if "apply_plan(" in text and path.relative_to(package).as_posix() not in ("store/lifecycle.py", "store/duckdb/store.py"):
            writers.append(path.name)
        # "UPDATE jobs SET status = ..." or "... SET a = 1, status = ...", in any module
        if re.search(r"UPDATE\s+jobs\s+SET\b(?:[^\n]*?,)?\s*status\s*=", text, re.IGNORECASE):
            writers.append(path.name)
    assert writers == []
    assert "apply_plan(" in (package / "store" / "lifecycle.py").read_text()
    assert re.findall(r"\.apply_plan\(", (package / "store" / "duckdb" / "store.py").read_text()) == []
    assert re.search(
        r"UPDATE\s+jobs\s+SET\b(?:[^\n]*?,)?\s*status\s*=", "UPDATE jobs SET x = 1, status = 'a'"
    )
