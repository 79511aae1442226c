"""Sampler previews: a worker keeps each running job's latest preview in the store, a notebook
reads them (locally and through a worker endpoint), and they go when the job settles.

The simulator sends preview frames from ``SaveImageWebsocket`` (one per image, with its
``progress``); the node is held (``node_seconds_by_id``) so the job stays running.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from sim_helpers import wait_for

import comfynb
from comfynb import InvalidInput, JobStatus, RunNotFound, Worker, enqueue
from comfynb.core.models import MAX_PREVIEW_BYTES, Preview
from comfynb.protocol.events import ExecutionStart, ExecutionSuccess
from comfynb.service.remote import RemoteStore, serve
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.store.lifecycle import transition
from comfynb.worker import sockets
from comfynb.worker.sockets import Previews

HELD = "3"  # the SaveImageWebsocket node: it sends its previews, then waits


def preview_prompt(batch: int = 2, color: int = 0x3A7BD5, held: str = HELD) -> dict[str, Any]:
    """EmptyImage -> ImageAddNoise -> SaveImageWebsocket (previews, node ``held``) and SaveImage
    (the result)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": batch, "color": color},
        },
        "2": {
            "class_type": "ImageAddNoise",
            "inputs": {"image": ["1", 0], "seed": 5, "strength": 0.5},
        },
        held: {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pv"}},
    }


@pytest.fixture(params=["0.33.0", "0.8.0"])
def any_sim(request: pytest.FixtureRequest, _sim_server: Simulator) -> Iterator[Simulator]:
    """The simulator as each ComfyUI version it plays (both send type-4 frames when asked)."""
    _sim_server.reset(version=request.param)
    yield _sim_server
    _sim_server.configure(node_seconds_by_id={})


def stored_previews(store: Store) -> int:
    with store.transaction() as tx:
        return int(tx.fetch("SELECT count(*) FROM job_previews")[0][0])


def test_a_running_job_shows_its_latest_preview_and_loses_it_when_it_completes(
    any_sim: Simulator, store: Store
) -> None:
    store.new_run("r")
    job = enqueue(store, preview_prompt(batch=8), run="r")
    any_sim.configure(node_seconds_by_id={HELD: 30})
    worker = Worker(store, [any_sim.url]).start()
    try:
        [preview] = wait_for(lambda: store.previews(run="r"), timeout=10)
        assert store.job(job.id).status is JobStatus.RUNNING
        assert preview.job_id == job.id and preview.mime == "image/png"
        with Image.open(io.BytesIO(preview.image)) as image:
            assert image.size == (64, 64)
        # eight frames came at once: at most two writes (the first at once, the latest of the
        # rest PROGRESS_EVERY later), not one per frame
        assert preview.seq <= 2
        any_sim.configure(node_seconds_by_id={})
        wait_for(lambda: store.job(job.id).status is JobStatus.COMPLETED, timeout=10)
        assert store.previews() == [] and stored_previews(store) == 0
        assert len(store.candidates(job=job.id)) == 8
    finally:
        worker.stop()


def test_a_server_that_ignores_the_flags_sends_type_1_frames_tied_to_the_running_prompt(
    legacy_sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the socket's flags without supports_preview_metadata: the simulator then sends the older
    # frames (no prompt_id), as a server predating the flags does
    monkeypatch.setattr(sockets, "FEATURE_FLAGS", {"type": "feature_flags", "data": {}})
    store.new_run("r")
    red = enqueue(store, preview_prompt(batch=1, color=0xFF0000), run="r")  # one frame each
    blue = enqueue(store, preview_prompt(batch=1, color=0x0000FF, held="5"), run="r")
    legacy_sim.configure(node_seconds_by_id={HELD: 30, "5": 30})
    worker = Worker(store, [legacy_sim.url]).start()

    def colour(preview: Preview) -> tuple[int, int, int]:
        with Image.open(io.BytesIO(preview.image)) as image:
            r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        return r, g, b

    try:
        [first] = wait_for(lambda: store.previews(run="r"), timeout=10)
        assert first.job_id == red.id and first.mime == "image/png"
        assert colour(first)[0] > colour(first)[2]  # red: the running prompt's image
        legacy_sim.configure(node_seconds_by_id={"5": 30})  # the red job ends, the blue runs
        [second] = wait_for(lambda: store.previews(run="r", after=first.seq), timeout=10)
        assert second.job_id == blue.id and colour(second)[2] > colour(second)[0]
        assert store.job(red.id).status is JobStatus.COMPLETED
        assert [p.job_id for p in store.previews()] == [blue.id]
        legacy_sim.configure(node_seconds_by_id={})
        wait_for(lambda: store.job(blue.id).status is JobStatus.COMPLETED, timeout=10)
        assert store.previews() == [] and stored_previews(store) == 0
    finally:
        legacy_sim.configure(node_seconds_by_id={})
        worker.stop()


def test_previews_travel_through_a_worker_endpoint_as_bytes(sim: Simulator, store: Store) -> None:
    store.new_run("r")
    job = enqueue(store, preview_prompt(batch=1), run="r")  # one frame: one write
    sim.configure(node_seconds_by_id={HELD: 30})
    worker = Worker(store, [sim.url]).start()
    try:
        with serve(store):
            remote = comfynb.open(store.path)
            assert isinstance(remote, RemoteStore)
            with remote:
                [seen] = wait_for(lambda: remote.previews(run="r"), timeout=10)
                assert seen == store.previews(run="r")[0]  # the same bytes, seq and time
                assert seen.job_id == job.id and seen.image.startswith(b"\x89PNG")
                assert remote.previews(after=seen.seq) == []
                with pytest.raises(RunNotFound):
                    remote.previews(run="nope")
                with pytest.raises(InvalidInput, match="after"):
                    remote.previews(after=-1)
    finally:
        sim.configure(node_seconds_by_id={})
        worker.stop()


def test_a_job_that_settles_any_way_loses_its_preview_in_the_same_transaction(
    store: Store,
) -> None:
    store.new_run("r")
    jobs = [enqueue(store, preview_prompt(), run="r") for _ in range(3)]
    for job in jobs:
        transition(store, job.id, "submitted", prompt_id=f"p{job.id}", server="http://s")
    png = (b"\x89PNG", b"\x89PNG2")
    with store.transaction() as tx:
        tx.set_previews({job.id: ("image/png", png[0]) for job in jobs})
    with store.transaction() as tx:  # a newer one replaces it, with a higher seq
        tx.set_previews({jobs[0].id: ("image/png", png[1])})
    shown = {p.job_id: p for p in store.previews()}
    assert shown[jobs[0].id].image == png[1]
    assert shown[jobs[0].id].seq > max(shown[j.id].seq for j in jobs[1:])
    transition(store, jobs[0].id, "cancelled")
    transition(store, jobs[1].id, "pending")  # back to the queue
    assert [p.job_id for p in store.previews()] == [jobs[2].id]
    # a job no longer under way gets none; nor does an image over the cap
    with store.transaction() as tx:
        tx.set_previews({jobs[0].id: ("image/png", png[0])})
        tx.set_previews({jobs[2].id: ("image/png", b"x" * (MAX_PREVIEW_BYTES + 1))})
    assert [(p.job_id, p.image) for p in store.previews()] == [(jobs[2].id, png[0])]
    transition(store, jobs[2].id, "failed", error={"type": "X", "message": "y"})
    assert store.previews() == [] and stored_previews(store) == 0


def test_previews_of_a_run_only_and_a_bad_after_is_refused(store: Store) -> None:
    a, b = store.new_run("a"), store.new_run("b")
    one, two = enqueue(store, preview_prompt(), run=a), enqueue(store, preview_prompt(), run=b)
    for job in (one, two):
        transition(store, job.id, "submitted", prompt_id=f"p{job.id}", server="http://s")
    with store.transaction() as tx:
        tx.set_previews({one.id: ("image/jpeg", b"\xff\xd8a"), two.id: ("image/png", b"b")})
    [only] = store.previews(run="b")
    assert isinstance(only, Preview) and only.job_id == two.id and only.at.tzinfo is not None
    assert store.previews(run="b", after=only.seq) == []  # only what is newer than seen
    assert store.previews(run="b", after=only.seq - 1) == [only]
    assert "image=" not in repr(only)  # bytes kept out of the repr
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidInput, match="after"):
            store.previews(after=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the socket's side


def type_1(image: bytes, code: int = 2) -> bytes:
    """A preview frame of the older format: no metadata, so no prompt_id."""
    return struct.pack(">II", 1, code) + image


def type_4(image: bytes, prompt_id: str, mime: str = "image/png") -> bytes:
    meta = json.dumps({"node_id": "3", "prompt_id": prompt_id, "image_type": mime}).encode()
    return struct.pack(">II", 4, len(meta)) + meta + image


def test_a_type_1_frame_belongs_to_the_prompt_the_socket_last_heard_start() -> None:
    previews = Previews()
    previews.frame(type_1(b"early"))  # nothing heard running yet: whose is it? dropped
    assert previews.take() == {}
    previews.heard(ExecutionStart(prompt_id="p1"))
    previews.frame(type_1(b"one", code=1))
    previews.frame(type_1(b"two"))  # the latest replaces the older one
    previews.frame(type_4(b"other", "p9", "image/jpeg"))  # a type-4 frame names its prompt
    assert previews.take() == {"p1": ("image/png", b"two"), "p9": ("image/jpeg", b"other")}
    assert previews.take() == {}
    previews.heard(ExecutionStart(prompt_id="p2"))
    previews.frame(type_1(b"jpeg", code=1))
    assert previews.take() == {"p2": ("image/jpeg", b"jpeg")}
    previews.heard(ExecutionSuccess(prompt_id="p2"))
    previews.frame(type_1(b"late"))  # after its end: no prompt runs
    previews.heard(ExecutionStart(prompt_id="p3"))
    previews.lost()  # a reconnect: what runs now is not known
    previews.frame(type_1(b"after a reconnect"))
    assert previews.take() == {}


def test_bad_and_oversized_preview_frames_are_dropped() -> None:
    previews = Previews()
    previews.heard(ExecutionStart(prompt_id="p1"))
    previews.frame(type_1(b"x" * (MAX_PREVIEW_BYTES + 1)))
    previews.frame(type_1(b"y", code=7))  # an unknown image format
    previews.frame(type_1(b""))
    previews.frame(struct.pack(">II", 4, 99) + b"{not json")
    previews.frame(struct.pack(">II", 3, 0) + b"other binary")
    previews.frame(b"\x00")
    assert previews.take() == {}


def test_the_default_simulators_sampler_sends_a_preview_per_step_and_the_table_gets_it(
    sim: Simulator, store: Store
) -> None:
    """ComfyUI's default --preview-method auto: KSampler sends a JPEG of its latent after each
    step's progress; the worker keeps the latest, as for a real server's sampler."""
    from comfynb.demo import txt2img

    store.new_run("r")
    job = enqueue(store, txt2img(3, steps=400, size=256), run="r")
    sim.configure(step_seconds=0.01)  # 4 s of sampling: the job runs while we look
    worker = Worker(store, [sim.url]).start()
    try:
        first = wait_for(lambda: store.previews(run="r"), timeout=15)[0]
        assert first.job_id == job.id and first.mime == "image/jpeg"
        with Image.open(io.BytesIO(first.image)) as image:
            assert image.format == "JPEG" and image.size == (32, 32)  # the latent: 1/8
        later = wait_for(lambda: [p for p in store.previews(run="r", after=first.seq)], 15)[0]
        assert later.image != first.image  # the picture moves on with the steps
        sim.configure(step_seconds=0)
        wait_for(lambda: store.job(job.id).status is JobStatus.COMPLETED, timeout=30)
        assert store.previews(run="r") == []
    finally:
        sim.configure(step_seconds=0)
        worker.stop()


def test_the_older_server_sends_no_sampler_previews(legacy_sim: Simulator) -> None:
    from comfynb.demo import txt2img

    with comfynb.Client(legacy_sim.url) as client, client.events() as events:
        events.follow(client.queue_prompt(txt2img(3, steps=3, size=64)).prompt_id)
        kinds = [type(event).__name__ for event in events]
    assert "Progress" in kinds and "PreviewImage" not in kinds
