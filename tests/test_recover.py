"""recover(): each state a crash can leave a job in, reconciled with the simulator.

The states are made the way a crash makes them (a prompt posted and not recorded, an intent
recorded and not posted, a half-written download), with the real store and server; the crash
itself is in tests/test_crash.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from comfynb.protocol.flows import new_prompt_id
from comfynb.simulator import Simulator
from comfynb.store.lifecycle import transition

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


def test_recover_leaves_the_downloads_of_another_servers_jobs_alone(
    store: Store, client: Client
) -> None:
    # A worker recovers a server that came up late while it downloads, on its pool, an image
    # of a job on another server: that half-written file is not a crash's leftover.
    elsewhere = claimed(store, 8, "http://elsewhere:8188")
    ours = claimed(store, 9, client.url)
    theirs = store.output_dir / f"run-{elsewhere.run_id}" / f"job-{elsewhere.id}" / "output"
    mine = store.output_dir / f"run-{ours.run_id}" / f"job-{ours.id}" / "output"
    for folder in (theirs, mine):
        folder.mkdir(parents=True)
        (folder / ".c_00001_.png.x1y2.part").write_bytes(b"\x89PNG half")

    summary = recover(store, client)

    assert summary.skipped == (elsewhere.id,)
    assert summary.partial_files == (mine / ".c_00001_.png.x1y2.part",)
    assert (theirs / ".c_00001_.png.x1y2.part").exists()
    assert not (mine / ".c_00001_.png.x1y2.part").exists()


def test_a_server_recovered_late_does_not_cut_the_download_of_another(
    tmp_path: Path, store: Store, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker: `sim` is up, `late` answers 500 until an image from `sim` is half written; then
    # the worker's health check recovers `late` while that download waits on its pool thread.
    from comfynb import Worker, files
    from comfynb.worker import health

    store.new_run("r")
    for color in (10, 11):
        workflow = trivial_prompt()
        workflow["1"]["inputs"]["color"] = color
        enqueue(store, workflow, run="r")
    with Simulator(root=tmp_path / "late") as late:
        late.set_faults(http_500_rate=1.0, routes=["/system_stats"])
        late_recovered = threading.Event()
        real_recover, real_write = health.recover, files.AtomicImageWriter.write
        half_written: list[Path] = []

        def recover_spy(store: Store, client: Client, **options: Any) -> Recovery:
            done = real_recover(store, client, **options)
            if client.url == late.url:
                late_recovered.set()
            return done

        def write_held(writer: files.AtomicImageWriter, data: bytes) -> None:
            real_write(writer, data)
            if not half_written:
                half_written.append(writer._tmp)
                late.set_faults()  # it answers now: the next health check recovers it
                assert late_recovered.wait(10)

        monkeypatch.setattr(health, "recover", recover_spy)
        monkeypatch.setattr(files.AtomicImageWriter, "write", write_held)
        summary = Worker(store, [sim.url, late.url], target_depth=1).run()

    assert half_written and late_recovered.is_set()
    assert (summary.completed, summary.failed) == (2, 0)
    assert store.status_counts() == {"completed": 2}
