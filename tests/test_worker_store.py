"""The store calls added for the worker: a round's mixed moves, claims given back, counts."""

from __future__ import annotations

import json

import pytest
from conftest import trivial_prompt

from comfynb import JobStatus, enqueue
from comfynb.core.models import NewCandidate
from comfynb.core.status import Retry
from comfynb.jobs import select_next_jobs
from comfynb.jobs.results import record_round
from comfynb.store import Store
from comfynb.store.lifecycle import record_changes, release_claims, transition_many


def jobs(store: Store, n: int) -> list[int]:
    store.new_run("r")
    return [enqueue(store, trivial_prompt(), run="r").id for _ in range(n)]


def test_a_round_of_mixed_moves_sets_each_job_s_own_columns(store: Store) -> None:
    a, b, c, d = jobs(store, 4)
    select_next_jobs(store, 4, server="http://s")
    transition_many(store, [(b, "submitted"), (c, "submitted"), (d, "submitted")])
    transition_many(store, [(c, "running")])
    error = {"type": "Boom", "message": "no"}
    (store.output_dir / "x.png").write_bytes(b"png")
    record_round(
        store,
        [
            (a, JobStatus.SUBMITTED, {"server": "http://t", "error": None}, {"number": 3}),
            (b, JobStatus.RUNNING, {}, None),
            (d, JobStatus.FAILED, {"error": error}, None),
        ],
        {c: [NewCandidate(node_id="2", path="x.png")]},
    )
    ja, jb, jc, jd = (store.job(i) for i in (a, b, c, d))
    assert ja.status is JobStatus.SUBMITTED and ja.server == "http://t"
    assert ja.submitted_at is not None and ja.started_at is None and ja.error is None
    assert jb.status is JobStatus.RUNNING and jb.started_at is not None and jb.finished_at is None
    assert jb.server == "http://s"  # untouched
    assert jc.status is JobStatus.COMPLETED and jc.finished_at is not None
    assert jc.started_at is not None  # from its earlier move, kept
    assert jd.status is JobStatus.FAILED and jd.error == error and jd.finished_at is not None
    assert list(store.candidates(job=c)["path"]) == ["x.png"]
    events = store.events()
    assert events[events["job_id"] == a]["to_status"].tolist()[-1] == "submitted"


def test_release_claims_gives_claimed_jobs_back_and_counts(store: Store) -> None:
    ids = jobs(store, 3)
    assert store.claimable() == 3
    claimed = select_next_jobs(store, 2, server="http://s")
    assert store.claimable(["http://s"]) == 1
    transition_many(store, [(claimed[0].id, "submitted")])
    assert release_claims(store, [c.id for c in claimed], reason="r") == 1  # submitted one stays
    released = store.job(claimed[1].id)
    assert (released.prompt_id, released.server, released.claimed_at) == (None, None, None)
    assert store.claimable(["http://other"]) == 2
    assert store.status_counts() == {"pending": 2, "submitted": 1}
    assert claimed[0].id == ids[0]
    assert store.status_counts(job_ids=ids[:2]) == {"submitted": 1, "pending": 1}
    assert store.status_counts(run="r") == {"pending": 2, "submitted": 1}


def test_a_claim_given_back_through_the_lifecycle_is_a_release_event(store: Store) -> None:
    ids = jobs(store, 3)
    claimed = select_next_jobs(store, 2, server="http://s")
    transition_many(store, [(claimed[0].id, "submitted")])
    everyone = [c.id for c in claimed] + [ids[2]]  # submitted, claimed, never claimed
    assert release_claims(store, everyone, reason="the worker stopped") == 1
    released = store.job(claimed[1].id)
    assert (released.prompt_id, released.server, released.claimed_at) == (None, None, None)
    assert released.status is JobStatus.PENDING and released.retries == 0
    events = store.events(job=claimed[1].id)
    assert list(zip(events["from_status"].fillna(""), events["to_status"], strict=True)) == [
        ("", "pending"),  # created
        ("pending", "pending"),
    ]
    assert json.loads(events["detail"].iloc[1]) == {
        "event": "release",
        "previous_prompt_id": claimed[1].prompt_id,
        "reason": "the worker stopped",
    }
    assert store.events(job=ids[2])["to_status"].tolist() == ["pending"]  # created only
    assert store.claimable(["http://other"]) == 2
    again = select_next_jobs(store, 2, server="http://t")
    assert claimed[1].id in [j.id for j in again] and claimed[1].prompt_id not in [
        j.prompt_id for j in again
    ]


def test_progress_is_written_only_for_jobs_on_a_server(store: Store) -> None:
    a, b = jobs(store, 2)
    select_next_jobs(store, 2)
    transition_many(store, [(a, "submitted")])
    with store.transaction() as tx:
        tx.set_progress({a: (3, 20), b: (4, 20)})
    assert (store.job(a).progress_value, store.job(a).progress_max) == (3, 20)
    assert store.job(b).progress_value is None  # still pending: left alone


def test_only_a_job_that_may_be_claimed_again_counts_as_a_queue_change(store: Store) -> None:
    a, b, c = jobs(store, 3)
    select_next_jobs(store, 3, server="http://s")
    transition_many(store, [(b, "submitted")])
    before = store.change_counts().queue_changes
    record_changes(store, [Retry(a, "POST /prompt: ServerTimeout")])  # keeps its claim
    assert store.change_counts().queue_changes == before
    record_changes(store, [Retry(b, "server down")])  # back from the server: claimable
    assert store.change_counts().queue_changes == before + 1
    release_claims(store, [c], reason="stopping")  # a claim given back: claimable
    assert store.change_counts().queue_changes == before + 2


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_candidates_inserted_together_come_back_in_order_with_their_values(
    store: Store, count: int
) -> None:
    [job_id] = jobs(store, 1)
    select_next_jobs(store, 1)
    transition_many(store, [(job_id, "submitted"), (job_id, "running")])
    images = [
        NewCandidate(
            "2",
            f"r/{i}.png",
            sha256=f"{i:064x}",
            width=i,
            height=2 * i,
            bytes=10 + i,
            seed=2**64 - 1 - i,
            prompt=f"it's {i}",
            params={"i": i},
        )
        for i in range(count)
    ]
    made = record_round(store, [], {job_id: images})[job_id]
    assert [c.path for c in made] == [i.path for i in images]
    assert [(c.sha256, c.width, c.height, c.bytes, c.seed, c.prompt, c.params) for c in made] == [
        (i.sha256, i.width, i.height, i.bytes, i.seed, i.prompt, i.params) for i in images
    ]
    stored = store.candidates(job=job_id)
    assert stored["path"].tolist() == [i.path for i in images]
    assert stored["id"].tolist() == [c.id for c in made]
    assert [store.candidate(c.id) for c in made] == made
