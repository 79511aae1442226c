"""The lifecycle functions against the simulator over loopback, with a real DuckDB file.

submit_job, poll_job_status, process_job_result, cancel: each one's success and failure paths,
the faults of docs/simulator-interface.md, real PNG files under tmp_path. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RETRY, trivial_prompt
from PIL import Image
from sim_helpers import HTTP, release, start_blocker, wait_for

from comfynb import (
    Client,
    InvalidInput,
    InvalidTransition,
    Job,
    JobStatus,
    Store,
    cancel,
    demo,
    enqueue,
    poll_job_status,
    process_job_result,
    select_next_job,
    submit_job,
)
from comfynb.jobs import DOWNLOAD_ATTEMPTS
from comfynb.simulator import Simulator

S = JobStatus


@pytest.fixture
def client(sim: Simulator) -> Iterator[Client]:
    with Client(sim.url, retry=FAST_RETRY) as made:
        yield made


@pytest.fixture
def legacy_client(legacy_sim: Simulator) -> Iterator[Client]:
    with Client(legacy_sim.url, retry=FAST_RETRY) as made:
        yield made


def finish(store: Store, client: Client, job: Job, timeout: float = 5.0) -> Job:
    """Poll until the job is terminal (poll_job_status collects the images of a finished one)."""

    def settled() -> Job | None:
        polled = poll_job_status(store, client, job)
        return polled if polled.status.is_terminal else None

    result: Job = wait_for(settled, timeout)
    return result


def two_outputs(color: int = 0, batch: int = 2) -> dict[str, Any]:
    """A batch saved into a subfolder, and its inverse previewed (a ``temp`` image)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 24, "batch_size": batch, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "sub/x"},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def txt2img(seed: int, text: str) -> dict[str, Any]:
    return demo.txt2img(seed, steps=2, prompt=text, size=64, prefix="t2i")


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def posts(sim: Simulator) -> dict[str, int]:
    return {row["prompt_id"]: row["posts"] for row in sim.prompts()}


# ----------------------------------------------------------------------------- the happy path


def test_a_job_runs_to_completed_with_every_image_recorded(
    store: Store, client: Client, sim: Simulator
) -> None:
    job = enqueue(store, two_outputs(), run=store.new_run("r"), params={"EmptyImage.color": 7})
    submitted = submit_job(store, client, job)
    assert submitted.status is S.SUBMITTED and submitted.server == client.url
    assert submitted.submitted_at is not None and submitted.prompt_id is not None
    done = finish(store, client, job)
    assert done.status is S.COMPLETED and done.error is None
    cands = store.candidates(job=job)
    # 2 saved + 2 previewed: every output node, every batch element, output and temp types
    assert len(cands) == 4
    assert sorted(cands["node_id"]) == ["2", "2", "4", "4"]
    assert {p.split("/")[2] for p in cands["path"]} == {"output", "temp"}
    assert any("/output/sub/x_" in p for p in cands["path"])
    for row in cands.itertuples():
        path = store.output_dir / row.path
        content = path.read_bytes()
        assert hashlib.sha256(content).hexdigest() == row.sha256
        assert row.bytes == len(content)
        with Image.open(path) as image:
            assert image.size == (row.width, row.height) == (32, 24)
    assert cands["EmptyImage.color"].tolist() == [7] * 4  # the param, as set
    assert cands["seed"].isna().all()  # no sampler ran: no seed
    moves = list(store.events(job=job.id)["to_status"])
    assert moves in (
        ["pending", "submitted", "completed"],
        ["pending", "submitted", "running", "completed"],
    )
    assert posts(sim) == {submitted.prompt_id: 1}


def test_processing_again_changes_nothing(store: Store, client: Client) -> None:
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
    done = finish(store, client, job)
    before = (store.candidates(job=job), store.events(job=job.id), files_under(store.output_dir))
    again = process_job_result(store, client, done)
    assert again == store.job(job.id) and again.status is S.COMPLETED
    assert store.candidates(job=job).equals(before[0])
    assert store.events(job=job.id).equals(before[1])
    assert files_under(store.output_dir) == before[2]


def test_seed_and_prompt_text_come_from_the_workflow_when_params_lack_them(
    store: Store, client: Client
) -> None:
    job = submit_job(
        store, client, enqueue(store, txt2img(1234, "a red fox"), run=store.new_run("r"))
    )
    finish(store, client, job)
    (cand,) = store.candidates(job=job).itertuples()
    assert (cand.seed, cand.prompt, cand.width, cand.height) == (1234, "a red fox", 64, 64)


def test_a_refine_adds_its_images_to_the_parents_child_count(store: Store, client: Client) -> None:
    root = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"))),
    )
    parent = int(store.candidates(job=root)["id"][0])
    child = enqueue(store, two_outputs(color=5), run=store.new_run("r"), parent=parent)
    finish(store, client, submit_job(store, client, child))
    assert store.candidate(parent).child_count == 4
    assert set(store.candidates(job=child)["parent_candidate_id"]) == {parent}


def test_a_claimed_job_is_submitted_with_its_claimed_prompt_id(
    store: Store, client: Client, sim: Simulator
) -> None:
    enqueue(store, trivial_prompt(), run=store.new_run("r"))
    claimed = select_next_job(store, server=client.url)
    assert claimed is not None and claimed.prompt_id is not None
    submitted = submit_job(store, client, claimed)
    assert submitted.prompt_id == claimed.prompt_id  # a canonical UUID: 0.33.0 accepts it
    assert posts(sim) == {claimed.prompt_id: 1}


def test_a_partially_valid_prompt_is_submitted_and_says_what_will_not_run(
    store: Store, client: Client
) -> None:
    workflow = trivial_prompt()  # valid: node 2 runs
    workflow["4"] = {  # invalid: width 0, so node 5 will not run
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    workflow["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["4", 0], "filename_prefix": "b"},
    }
    job = submit_job(store, client, enqueue(store, workflow, run=store.new_run("r")))
    assert job.status is S.SUBMITTED
    detail = store.events(job=job.id)["detail"].iloc[-1]
    assert '"problems"' in detail and "width" in detail
    done = finish(store, client, job)
    assert done.status is S.COMPLETED
    assert set(store.candidates(job=job)["node_id"]) == {"2"}


# ----------------------------------------------------------------------------- submit failures


def test_a_rejected_prompt_fails_with_the_node_errors_and_no_retry(
    store: Store, client: Client, sim: Simulator
) -> None:
    workflow = trivial_prompt()
    workflow["1"]["inputs"]["width"] = 0
    job = submit_job(store, client, enqueue(store, workflow, run=store.new_run("r")))
    assert job.status is S.FAILED and job.retries == 0
    assert job.error is not None and job.error["type"] == "PromptRejected"
    assert job.error["error_type"] == "prompt_outputs_failed_validation"
    assert job.error["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert "width" in job.error["message"]
    assert sim.prompts() == []


def test_transient_faults_are_retried_with_the_same_prompt_id_and_counted(
    store: Store, client: Client, sim: Simulator
) -> None:
    # the client tries 4 times itself; the 5th 500 falls on the job-level retry
    sim.set_faults(routes=["/prompt"], http_500_next=FAST_RETRY.attempts + 1)
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
    assert job.status is S.SUBMITTED and job.retries == 1 and job.error is None
    assert posts(sim) == {job.prompt_id: 1}


def test_a_job_level_retry_after_the_prompt_arrived_does_not_post_it_again(
    store: Store, client: Client, sim: Simulator
) -> None:
    # the POST is queued but its answer lost; the client's own arrival check is cut off too
    # (4 resets), so the client gives up: the job-level retry must find it, not post it
    sim.set_faults(routes=["/prompt", "/jobs"], reset_next=1 + FAST_RETRY.attempts)
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
    assert job.status is S.SUBMITTED and job.retries == 1
    assert "found_on_server" in store.events(job=job.id)["detail"].iloc[-1]
    assert posts(sim) == {job.prompt_id: 1}


def test_transient_faults_fail_the_job_after_max_retries(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.set_faults(routes=["/prompt"], http_500_next=100)
    job = submit_job(
        store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"), max_retries=1)
    )
    assert job.status is S.FAILED and job.retries == 1
    assert job.error is not None and job.error["type"] == "ServerFailed"
    assert sim.prompts() == []


def details(store: Store, job: Job) -> list[dict[str, Any]]:
    """The job's event rows as (from, to, detail) dicts, oldest first (creation: from None)."""
    events = store.events(job=job.id)
    return [
        {
            "from": a if isinstance(a, str) else None,
            "to": b,
            **(json.loads(d) if isinstance(d, str) else {}),
        }
        for a, b, d in zip(
            events["from_status"], events["to_status"], events["detail"], strict=True
        )
    ]


def test_a_transient_post_failure_is_a_retry_event_with_its_reason(
    store: Store, client: Client, sim: Simulator
) -> None:
    # the client tries 4 times itself; the 5th 500 falls on the job-level retry
    sim.set_faults(routes=["/prompt"], http_500_next=FAST_RETRY.attempts + 1)
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
    assert job.status is S.SUBMITTED and job.retries == 1
    created, retry, submitted = details(store, job)
    assert (created["from"], created["to"]) == (None, "pending")
    assert (retry["from"], retry["to"], retry["event"]) == ("pending", "pending", "retry")
    assert retry["reason"] == "POST /prompt: ServerFailed" and retry["retries"] == 1
    assert retry["error"]["type"] == "ServerFailed" and "500" in retry["error"]["message"]
    assert (submitted["from"], submitted["to"]) == ("pending", "submitted")
    assert posts(sim) == {job.prompt_id: 1}


def test_a_job_out_of_retries_fails_with_the_reason_and_each_retry_is_an_event(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.set_faults(routes=["/prompt"], http_500_next=100)
    run = store.new_run("r")
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=run, max_retries=2))
    assert job.status is S.FAILED and job.retries == 2 and job.error is not None
    assert job.error["type"] == "ServerFailed"
    assert job.error["reason"] == "POST /prompt: ServerFailed"
    assert "no retries left (2 of 2 used)" in job.error["message"]
    moves = [(e["from"], e["to"], e.get("event"), e.get("retries")) for e in details(store, job)]
    assert moves == [
        (None, "pending", None, None),
        ("pending", "pending", "retry", 1),
        ("pending", "pending", "retry", 2),
        ("pending", "failed", None, 2),
    ]
    assert details(store, job)[-1]["reason"] == "POST /prompt: ServerFailed"
    assert sim.prompts() == []


def test_a_forgotten_job_s_requeue_is_a_retry_event(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.configure(node_seconds=30)
    try:
        job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
        sim.restart()
    finally:
        sim.configure(node_seconds=0)
    requeued = poll_job_status(store, client, job)
    last = details(store, requeued)[-1]
    assert (last["from"], last["to"], last["event"]) == ("submitted", "pending", "retry")
    assert last["reason"] == "the server does not know the prompt" and last["retries"] == 1
    assert last["previous_prompt_id"] == job.prompt_id
    assert requeued.error is not None and requeued.error["type"] == "JobNotFound"


def test_a_prompt_id_the_server_already_has_is_never_posted_again(
    store: Store, client: Client, sim: Simulator
) -> None:
    """A previous attempt got the prompt queued but not recorded (a crash, an interrupted cell)."""
    enqueue(store, trivial_prompt(), run=store.new_run("r"))
    claimed = select_next_job(store)
    assert claimed is not None and claimed.prompt_id is not None
    client.queue_prompt(claimed.workflow, prompt_id=claimed.prompt_id)  # the lost attempt
    job = submit_job(store, client, claimed)
    assert job.status is S.SUBMITTED
    assert "found_on_server" in store.events(job=job.id)["detail"].iloc[-1]
    assert posts(sim) == {claimed.prompt_id: 1}


def test_submit_refuses_a_job_that_is_not_pending_or_of_another_server(
    store: Store, client: Client
) -> None:
    job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
    with pytest.raises(InvalidTransition, match="submitted"):
        submit_job(store, client, job)
    enqueue(store, trivial_prompt(), run=store.new_run("r"))
    other = select_next_job(store, server="http://elsewhere:8188")
    assert other is not None
    with pytest.raises(InvalidInput, match="elsewhere"):
        submit_job(store, client, other)
    assert store.job(other.id).status is S.PENDING


# ----------------------------------------------------------------------------- poll outcomes


def test_an_execution_error_keeps_the_servers_error(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.set_faults(fail_node={"node_id": "2", "message": "boom", "exception_type": "RuntimeError"})
    job = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"))),
    )
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "ExecutionError"
    assert job.error["exception_type"] == "RuntimeError"
    assert job.error["message"] == "boom"
    assert (job.error["node_id"], job.error["node_type"]) == ("2", "SaveImage")
    assert isinstance(job.error["traceback"], list) and job.error["traceback"]
    assert store.candidates(job=job).empty
    assert files_under(store.output_dir) == []


def test_running_then_interrupted_by_someone_else_is_failed(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.configure(node_seconds=30)
    try:
        job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
        running = wait_for(lambda: poll_job_status(store, client, job).status is S.RUNNING)
        assert running
        client.interrupt()  # the ComfyUI user pressed Cancel
        done = finish(store, client, job)
    finally:
        sim.configure(node_seconds=0)
    assert done.status is S.FAILED and done.error is not None
    assert done.error["type"] == "Interrupted" and "comfynb.cancel" in done.error["message"]
    assert list(store.events(job=job.id)["to_status"]) == [
        "pending",
        "submitted",
        "running",
        "failed",
    ]


def test_a_job_the_server_forgot_goes_back_to_pending_and_runs_again(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.configure(node_seconds=30)
    try:
        job = submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")))
        first = job.prompt_id
        sim.restart()
    finally:
        sim.configure(node_seconds=0)
    requeued = poll_job_status(store, client, job)
    assert requeued.status is S.PENDING and requeued.retries == 1
    assert requeued.prompt_id is None
    claimed = select_next_job(store, server=client.url)
    assert claimed is not None and claimed.id == job.id and claimed.prompt_id != first
    done = finish(store, client, submit_job(store, client, claimed))
    assert done.status is S.COMPLETED and len(store.candidates(job=job)) == 1
    assert posts(sim) == {first: 1, claimed.prompt_id: 1}


def test_a_job_forgotten_once_too_often_fails(store: Store, client: Client, sim: Simulator) -> None:
    sim.configure(node_seconds=30)
    try:
        job = submit_job(
            store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"), max_retries=0)
        )
        sim.restart()
    finally:
        sim.configure(node_seconds=0)
    failed = poll_job_status(store, client, job)
    assert failed.status is S.FAILED and failed.error is not None
    assert failed.error["type"] == "JobNotFound"


def test_poll_leaves_pending_and_finished_jobs_alone(store: Store, client: Client) -> None:
    job = enqueue(store, trivial_prompt(), run=store.new_run("r"))
    assert poll_job_status(store, client, job) == store.job(job.id)
    cancelled = cancel(store, job)
    assert poll_job_status(store, client, job) == cancelled


# ----------------------------------------------------------------------------- bad outputs


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nul"])
def test_a_hostile_file_name_fails_the_job_and_writes_nothing(
    store: Store, client: Client, sim: Simulator, kind: str
) -> None:
    evil = Path("/tmp/comfynb-evil.png")
    existed = evil.exists()
    sim.set_faults(hostile_names=kind)
    job = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, two_outputs(), run=store.new_run("r"))),
    )
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "UnsafePath"
    assert store.candidates(job=job).empty
    assert files_under(store.output_dir) == []
    assert not list(store.output_dir.parent.rglob("x.png"))
    assert evil.exists() == existed


def test_a_truncated_download_is_retried(store: Store, client: Client, sim: Simulator) -> None:
    sim.set_faults(truncate_view_next=DOWNLOAD_ATTEMPTS - 1)
    job = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"))),
    )
    assert job.status is S.COMPLETED and len(store.candidates(job=job)) == 1


def test_an_image_corrupt_on_every_try_fails_the_job_and_leaves_no_file(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.set_faults(truncate_view_next=DOWNLOAD_ATTEMPTS + 10)
    job = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, two_outputs(), run=store.new_run("r"))),
    )
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "CorruptImage"
    assert store.candidates(job=job).empty
    assert files_under(store.output_dir) == []


def test_an_image_gone_from_the_server_fails_the_job(
    store: Store, client: Client, sim: Simulator
) -> None:
    job = submit_job(store, client, enqueue(store, two_outputs(), run=store.new_run("r")))
    wait_for(lambda: client.job(job.prompt_id or "").status.is_terminal)
    (sim.root / "output" / "sub" / "x_00002_.png").unlink()  # deleted by hand on the server
    failed = poll_job_status(store, client, job)
    assert failed.status is S.FAILED and failed.error is not None
    assert failed.error["type"] == "UnexpectedResponse" and "404" in failed.error["message"]
    assert store.candidates(job=job).empty
    assert files_under(store.output_dir) == []


# ----------------------------------------------------------------------------- quirk 2


class NoClientIdClient(Client):
    """Prompts without a client_id, as a proxy that drops it sends them (fact sheet quirk 2).

    comfynb's own client always sends one; this is the only way to make an older ComfyUI list
    no outputs for a fully cached re-run, which ``process_job_result`` must still handle.
    """

    def _prompt_body(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        body = super()._prompt_body(*args, **kwargs)
        del body["client_id"]
        return body


def test_a_cached_rerun_listed_without_outputs_takes_the_earlier_runs_images(
    store: Store, legacy_client: Client, legacy_sim: Simulator
) -> None:
    first = submit_job(
        store, legacy_client, enqueue(store, trivial_prompt(), run=store.new_run("r"))
    )
    first = finish(store, legacy_client, first)
    with NoClientIdClient(legacy_sim.url, retry=FAST_RETRY) as bare:
        again = submit_job(store, bare, enqueue(store, trivial_prompt(), run=store.new_run("r")))
        assert bare.job(again.prompt_id or "").outputs == ()  # quirk 2 happened
        done = finish(store, bare, again)
        assert done.status is S.COMPLETED
        (old,) = store.candidates(job=first)["sha256"]
        (new,) = store.candidates(job=again)["sha256"]
        assert new == old
        assert first.prompt_id in store.events(job=again.id)["detail"].iloc[-1]
        # the earlier run gone from the history: the job fails, it is not completed with none
        HTTP.post(f"{legacy_sim.url}/history", json={"clear": True})
        third = submit_job(store, bare, enqueue(store, trivial_prompt(), run=store.new_run("r")))
        failed = finish(store, bare, third)
    assert failed.status is S.FAILED and failed.error is not None
    assert failed.error["type"] == "OutputsNotListed"
    assert store.candidates(job=third).empty


def test_a_workflow_without_image_files_completes_with_none_and_says_so(
    store: Store, client: Client
) -> None:
    workflow = trivial_prompt()
    workflow["2"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}
    job = finish(
        store, client, submit_job(store, client, enqueue(store, workflow, run=store.new_run("r")))
    )
    assert job.status is S.COMPLETED and store.candidates(job=job).empty
    assert "no image outputs" in store.events(job=job.id)["detail"].iloc[-1]


# ----------------------------------------------------------------------------- cancel


def test_cancel_a_pending_job_needs_no_client(store: Store) -> None:
    job = enqueue(store, trivial_prompt(), run=store.new_run("r"))
    assert cancel(store, job).status is S.CANCELLED
    assert cancel(store, job).status is S.CANCELLED  # again: nothing changes
    assert list(store.events(job=job.id)["to_status"]) == ["pending", "cancelled"]


def test_cancel_takes_a_queued_job_off_the_server(
    store: Store, client: Client, sim: Simulator
) -> None:
    sim.configure(node_seconds=30)
    try:
        blocker = submit_job(
            store, client, enqueue(store, two_outputs(color=1), run=store.new_run("r"))
        )
        queued = submit_job(
            store, client, enqueue(store, two_outputs(color=2), run=store.new_run("r"))
        )
        wait_for(lambda: client.queue().is_running(blocker.prompt_id or ""))
        with pytest.raises(InvalidInput, match="client"):
            cancel(store, queued)
        assert cancel(store, queued, client=client).status is S.CANCELLED
        assert queued.prompt_id not in client.queue()
        running = cancel(store, blocker, client=client)
        assert running.status is S.CANCELLED
        stopped = wait_for(lambda: client.job(blocker.prompt_id or "").status.is_terminal)
        assert stopped
    finally:
        sim.configure(node_seconds=0)
    assert client.job(blocker.prompt_id or "").status.value == "interrupted"
    assert poll_job_status(store, client, blocker).status is S.CANCELLED  # stays cancelled
    assert store.candidates().empty


def test_a_job_cancelled_while_its_post_is_on_the_way_is_taken_back_off_the_server(
    store: Store, client: Client, sim: Simulator
) -> None:
    blocker = start_blocker(sim)  # the queue is busy: the job would wait there
    try:
        enqueue(store, trivial_prompt(), run=store.new_run("r"))
        claimed = select_next_job(store, server=client.url)
        assert claimed is not None
        sim.set_faults(routes=["/prompt"], slow_seconds=0.3, slow_next=1)
        done: list[Job] = []
        poster = threading.Thread(target=lambda: done.append(submit_job(store, client, claimed)))
        poster.start()
        wait_for(lambda: HTTP.get(f"{sim.url}/_sim/faults").json().get("slow_next") == 0)
        cancel(store, claimed)  # pending in the store: no client needed
        poster.join(timeout=10)
        assert [job.status for job in done] == [S.CANCELLED]
        assert claimed.prompt_id not in client.queue()
    finally:
        release(sim, blocker)
    assert posts(sim)[claimed.prompt_id or ""] == 1
    assert list(store.events(job=claimed.id)["to_status"]) == ["pending", "cancelled"]


def test_cancel_refuses_a_finished_job(store: Store, client: Client) -> None:
    job = finish(
        store,
        client,
        submit_job(store, client, enqueue(store, trivial_prompt(), run=store.new_run("r"))),
    )
    with pytest.raises(InvalidTransition, match="completed"):
        cancel(store, job, client=client)


# ----------------------------------------------------------------------------- secrets


def test_secrets_in_extra_data_reach_the_server_but_never_the_store(
    store: Store, client: Client, tmp_path: Path
) -> None:
    secrets = {"api_key_comfy_org": "sk-SECRET-one", "hf_token": "hf-SECRET-two"}
    extra = {**secrets, "extra_pnginfo": {"workflow": {"id": "wf-1"}}}
    job = submit_job(
        store, client, enqueue(store, trivial_prompt(), run=store.new_run("r")), extra_data=extra
    )
    finish(store, client, job)
    sent = client.history()[job.prompt_id or ""].extra_data
    assert sent["hf_token"] == "hf-SECRET-two"  # ComfyUI itself drops api_key_comfy_org
    assert sent["extra_pnginfo"] == {"workflow": {"id": "wf-1"}}
    for table in ("runs", "steps", "jobs", "job_events", "candidates"):
        with store.transaction() as tx:
            rows = tx.fetch(f"SELECT COLUMNS(*)::VARCHAR FROM {table}")
        assert "SECRET" not in repr(rows), table
    store.close()
    for path in tmp_path.glob("lab.duckdb*"):
        assert b"SECRET" not in path.read_bytes(), path
