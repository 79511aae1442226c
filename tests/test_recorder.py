"""The worker's recorder: an expected result's completion is written before its images come."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import trivial_prompt

from comfynb import JobStatus, enqueue
from comfynb.core.models import Job, NewCandidate
from comfynb.core.status import Move
from comfynb.jobs import select_next_jobs
from comfynb.jobs.results import Collected
from comfynb.store import Store
from comfynb.worker import recorder as recorder_module
from comfynb.worker.recorder import Expect, Outcome, Record, Recorder, Result


@pytest.fixture
def recorder(store: Store) -> Iterator[Recorder]:
    woken: queue.Queue[None] = queue.Queue()
    made = Recorder(store, wake=lambda: woken.put(None)).start()
    made.woken = woken  # type: ignore[attr-defined]
    yield made
    made.stop()


def claimed_job(store: Store) -> Job:
    store.new_run("r")
    enqueue(store, trivial_prompt(), run="r")
    [job] = select_next_jobs(store, 1, server="http://s")
    return job


def hand_moves(recorder: Recorder, job: Job) -> None:
    recorder.hand(Record("s", Move(job.id, JobStatus.SUBMITTED, {"server": "http://s"})))
    recorder.hand(Record("r", Move(job.id, JobStatus.RUNNING)))


def image(store: Store, job: Job, name: str = "a.png") -> NewCandidate:
    return NewCandidate(node_id="2", path=f"run-{job.run_id}/job-{job.id}/output/{name}")


def outcomes(recorder: Recorder, wanted_items: int) -> list[Outcome]:
    """Outcomes until they cover ``wanted_items`` handed items."""
    found: list[Outcome] = []
    deadline = time.monotonic() + 10
    while sum(o.items for o in found) < wanted_items:
        assert time.monotonic() < deadline, found
        recorder.woken.get(timeout=10)  # type: ignore[attr-defined]
        found += recorder.outcomes()
    return found


def test_an_expected_result_shares_the_transaction_its_completion_was_written_in(
    store: Store, recorder: Recorder
) -> None:
    job = claimed_job(store)
    hand_moves(recorder, job)
    recorder.hand(Expect(job, 1))
    time.sleep(0.005)  # the recorder writes the moves and the completion, and waits
    assert store.job(job.id).status is JobStatus.PENDING  # nothing committed yet
    recorder.hand(Result("done", job, Collected(images=(image(store, job),))))
    [outcome] = outcomes(recorder, 4)  # one commit: the moves, the hint and the result
    assert outcome.error is None
    assert outcome.moves == [
        ("s", JobStatus.SUBMITTED),
        ("r", JobStatus.RUNNING),
        ("done", JobStatus.COMPLETED),
    ]
    assert store.job(job.id).status is JobStatus.COMPLETED
    assert list(store.candidates(job=job.id)["path"]) == [image(store, job).path]
    events = store.events(job=job.id)
    assert events["to_status"].tolist() == ["pending", "submitted", "running", "completed"]
    assert json.loads(events["detail"].iloc[-1]) == {"candidates": 1}


def test_an_expected_result_that_failed_rolls_the_completion_back_and_fails_the_job(
    store: Store, recorder: Recorder
) -> None:
    job = claimed_job(store)
    hand_moves(recorder, job)
    recorder.hand(Expect(job, 1))
    error = {"type": "CorruptImage", "message": "not a whole image"}
    recorder.hand(Result("done", job, Collected(error=error)))
    found = outcomes(recorder, 4)
    assert [move for o in found for move in o.moves][-1] == ("done", JobStatus.FAILED)
    failed = store.job(job.id)
    assert failed.status is JobStatus.FAILED and failed.error == error
    assert store.candidates(job=job.id).empty
    assert store.events(job=job.id)["to_status"].tolist()[-1] == "failed"


def test_a_result_with_other_images_than_expected_is_recorded_as_it_came(
    store: Store, recorder: Recorder
) -> None:
    job = claimed_job(store)
    hand_moves(recorder, job)
    recorder.hand(Expect(job, 2))  # the socket listed two; the server's report one
    recorder.hand(Result("done", job, Collected(images=(image(store, job),))))
    outcomes(recorder, 4)
    assert store.job(job.id).status is JobStatus.COMPLETED
    assert len(store.candidates(job=job.id)) == 1
    detail = store.events(job=job.id)["detail"].iloc[-1]
    assert json.loads(detail) == {"candidates": 1}


def test_a_result_that_does_not_come_in_time_leaves_the_moves_committed_without_it(
    store: Store, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "RESULT_WAIT", 0.05)
    job = claimed_job(store)
    hand_moves(recorder, job)
    recorder.hand(Expect(job, 1))
    found = outcomes(recorder, 3)
    assert [move for o in found for move in o.moves] == [
        ("s", JobStatus.SUBMITTED),
        ("r", JobStatus.RUNNING),
    ]
    assert store.job(job.id).status is JobStatus.RUNNING
    recorder.hand(Result("done", job, Collected(images=(image(store, job),))))
    [late] = outcomes(recorder, 1)
    assert late.moves == [("done", JobStatus.COMPLETED)]
    assert len(store.candidates(job=job.id)) == 1


def test_a_flush_while_a_result_is_awaited_returns_without_waiting_for_it(
    store: Store, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "RESULT_WAIT", 30.0)
    job = claimed_job(store)
    hand_moves(recorder, job)
    recorder.hand(Expect(job, 1))
    time.sleep(0.005)
    started = time.monotonic()
    flushed = threading.Thread(target=recorder.flush)
    flushed.start()
    flushed.join(timeout=10)
    assert not flushed.is_alive() and time.monotonic() - started < 5
    assert store.job(job.id).status is JobStatus.RUNNING  # committed, without the result
    recorder.hand(Result("done", job, Collected(images=(image(store, job),))))
    recorder.flush()
    assert store.job(job.id).status is JobStatus.COMPLETED
    assert sum(o.items for o in recorder.outcomes()) == 4


def test_a_busy_recorder_does_not_wait_for_an_expected_result(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "RESULT_WAIT", 30.0)
    job = claimed_job(store)
    woken: queue.Queue[None] = queue.Queue()
    busy = Recorder(store, wake=lambda: woken.put(None))
    busy._last_batch = recorder_module.BUSY_BATCH  # as if the last batch was large
    busy.start()
    try:
        hand_moves(busy, job)
        busy.hand(Expect(job, 1))
        woken.get(timeout=5)  # committed after the busy linger, not after RESULT_WAIT
        assert store.job(job.id).status is JobStatus.RUNNING
        assert [o.error for o in busy.outcomes()] == [None]
    finally:
        busy.stop()
