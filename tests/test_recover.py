"""recover(): each state a crash can leave a job in, reconciled with the simulator.

The states are made the way a crash makes them (a prompt posted and not recorded, an intent
recorded and not posted, a half-written download), with the real store and server; the crash
itself is in tests/test_crash.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_RETRY, trivial_prompt
from sim_helpers import wait_for

from comfynb import (
    Client,
    Job,
    JobStatus,
    Store,
    enqueue,
    poll_job_status,
    recover,
    select_next_job,
    submit_job,
)
from comfynb.jobs import Recovery
from comfynb.lifecycle import transition
from comfynb.protocol import new_prompt_id
from comfynb.simulator import Simulator

S = JobStatus


@pytest.fixture
def client(sim: Simulator) -> Iterator[Client]:
    with Client(sim.url, retry=FAST_RETRY) as made:
        yield made


def claimed(store: Store, color: int, server: str | None = None) -> Job:
    workflow = trivial_prompt()
    workflow["1"]["inputs"]["color"] = color
    enqueue(store, workflow, run=store.new_run("r"))
    job = select_next_job(store, server=server)
    assert job is not None and job.prompt_id is not None
    return job


def test_recover_reconciles_every_state_a_crash_leaves(
    store: Store, client: Client, sim: Simulator
) -> None:
    never_posted = claimed(store, 1, client.url)
    posted_unrecorded = claimed(store, 2, client.url)
    client.queue_prompt(posted_unrecorded.workflow, prompt_id=posted_unrecorded.prompt_id)
    finished = submit_job(store, client, claimed(store, 3, client.url))
    wait_for(lambda: client.job(finished.prompt_id or "").status.is_terminal)
    forgotten = claimed(store, 4, client.url)
    transition(store, forgotten.id, S.SUBMITTED, prompt_id=new_prompt_id())  # server restarted
    elsewhere = claimed(store, 5, "http://elsewhere:8188")
    untouched = enqueue(store, trivial_prompt(), run="r")
    # a download cut short, and a whole file no candidate points to, in the finished job's folder
    folder = store.output_dir / f"run-{finished.run_id}" / f"job-{finished.id}" / "output"
    folder.mkdir(parents=True)
    (folder / ".c_00001_.png.x1y2.part").write_bytes(b"\x89PNG half")
    (folder / "old_00001_.png").write_bytes(b"left by an earlier attempt")

    summary = recover(store, client)

    assert summary.posted == (never_posted.id,)
    assert summary.adopted == (posted_unrecorded.id,)
    assert summary.requeued == (forgotten.id,)
    assert summary.skipped == (elsewhere.id,)
    assert finished.id in summary.completed
    assert [p.name for p in summary.partial_files] == [".c_00001_.png.x1y2.part"]
    assert store.job(finished.id).status is S.COMPLETED
    (path,) = store.candidates(job=finished)["path"]
    assert [p.relative_to(store.output_dir).as_posix() for p in folder.rglob("*")] == [path]
    assert store.job(forgotten.id).status is S.PENDING and store.job(forgotten.id).retries == 1
    assert store.job(elsewhere.id).status is S.PENDING
    assert store.job(untouched.id).prompt_id is None  # recover claims nothing new
    for job in (never_posted, posted_unrecorded):
        done = wait_for(lambda j=job: poll_job_status(store, client, j).status.is_terminal)
        assert done and store.job(job.id).status is S.COMPLETED
    posts = {row["prompt_id"]: row["posts"] for row in sim.prompts()}
    assert posts == {
        never_posted.prompt_id: 1,
        posted_unrecorded.prompt_id: 1,
        finished.prompt_id: 1,
    }


def test_recover_twice_changes_nothing_the_second_time(
    store: Store, client: Client, sim: Simulator
) -> None:
    job = claimed(store, 6, client.url)
    first = recover(store, client)
    assert first.posted == (job.id,)
    wait_for(lambda: client.job(job.prompt_id or "").status.is_terminal)
    second = recover(store, client)  # completes it, unless the first one already did
    assert first.completed + second.completed == (job.id,)
    assert not second.posted and not second.adopted
    assert recover(store, client) == Recovery()
    assert [row["posts"] for row in sim.prompts()] == [1]


def test_recover_passes_extra_data_to_the_prompts_it_posts(
    store: Store, client: Client, tmp_path: Path
) -> None:
    job = claimed(store, 7, client.url)
    recover(store, client, extra_data={"hf_token": "hf-SECRET", "extra_pnginfo": {"a": 1}})
    wait_for(lambda: client.job(job.prompt_id or "").status.is_terminal)
    sent = client.history()[job.prompt_id or ""].extra_data
    assert sent["hf_token"] == "hf-SECRET" and sent["extra_pnginfo"] == {"a": 1}
    with store.transaction() as tx:
        assert "SECRET" not in repr(tx.fetch("SELECT COLUMNS(*)::VARCHAR FROM job_events"))
