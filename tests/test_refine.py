"""comfynb.refine and comfynb.reproduce on the simulator with a real Worker: a refine is a new
step whose img2img children start from the candidate's image, uploaded by the submit path to
the server that runs each job, once per server; reproduce gives back what was posted."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_cli_worker import WorkerProcess

import comfynb
from comfynb import (
    CandidateNotFound,
    InvalidInput,
    JobStatus,
    Worker,
    Workflow,
    WorkflowError,
)
from comfynb.client import Client
from comfynb.jobs.inputs import forget_uploads, input_name
from comfynb.service.remote import RemoteStore, serve
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.workflows.img2img import to_img2img

DATA = Path(__file__).parent / "data"
SMALL = {
    "KSampler.steps": 3,
    "Empty Latent Image.width": 64,
    "Empty Latent Image.height": 64,
}


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every upload the clients make, as (server URL, input name)."""
    seen: list[tuple[str, str]] = []
    real = Client.upload_image

    def counted(self: Client, image: Any, **kwargs: Any) -> Any:
        uploaded = real(self, image, **kwargs)
        seen.append((self.url, uploaded.as_input))
        return uploaded

    monkeypatch.setattr(Client, "upload_image", counted)
    forget_uploads()
    yield seen
    forget_uploads()


def generate(store: Store, sim: Simulator, seed: int = 1) -> int:
    """One txt2img candidate (the shipped example, small), made by a real worker."""
    run = "r" if "r" in set(store.runs()["name"]) else store.new_run("r")
    params = {**SMALL, "KSampler.seed": seed}
    job = comfynb.enqueue(store, Workflow.example("txt2img"), run=run, params=params)
    Worker(store, [sim.url]).run()
    [candidate] = store.candidates(job=job)["id"]
    return int(candidate)


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


# --------------------------------------------------------------------------- lineage


def test_a_refine_of_a_refine_is_a_three_generation_lineage(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    [child_job] = comfynb.refine(store, root, params={"KSampler.seed": 7})
    step = store.step(child_job.step_id or 0)
    assert (step.kind, step.parent_candidate_id) == ("refine", root)
    assert child_job.parent_candidate_id == root
    assert child_job.workflow["10"]["inputs"]["image"] == input_name(store.candidate(root))
    assert child_job.workflow["3"]["inputs"]["denoise"] == 0.6
    assert store.candidate(root).child_count == 0  # grows as children complete
    Worker(store, [sim.url]).run()
    [child] = store.candidates(job=child_job)["id"]
    [grandchild_job] = comfynb.refine(store, int(child), denoise=0.3)
    Worker(store, [sim.url]).run()
    assert store.job(grandchild_job.id).status is JobStatus.COMPLETED
    assert grandchild_job.workflow["3"]["inputs"]["denoise"] == 0.3  # this refine's denoise

    family = store.lineage(int(child))
    assert list(family["depth"]) == [-1, 0, 1]
    assert list(family["id"])[:2] == [root, int(child)]
    assert list(family["child_count"]) == [1, 1, 0]
    assert list(family["parent_candidate_id"])[1:] == [root, int(child)]

    # the child starts from its parent's image and differs from it
    parent_image, child_image = store.image_path(root), store.image_path(int(child))
    assert pixels(parent_image) != pixels(child_image)
    other = generate(store, sim, seed=2)
    assert _distance(parent_image, child_image) < _distance(parent_image, store.image_path(other))
    assert len(uploads) == 2  # each image once: the root's, then the child's


def _distance(a: Path, b: Path) -> float:
    first, second = pixels(a), pixels(b)
    return sum(abs(x - y) for x, y in zip(first, second, strict=True)) / len(first)


def test_three_children_from_one_upload(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    kids = comfynb.refine(store, root, params=[{"KSampler.seed": s} for s in (1, 2, 3)])
    assert [k.params for k in kids] == [{"KSampler.seed": s} for s in (1, 2, 3)]
    assert len({k.step_id for k in kids}) == 1
    assert json.loads(json.dumps(store.step(kids[0].step_id or 0).params_spec))["params"] == [
        {"KSampler.seed": s} for s in (1, 2, 3)
    ]
    summary = Worker(store, [sim.url]).run()
    assert summary.completed == 3
    assert uploads == [(sim.url, input_name(store.candidate(root)))]
    assert store.candidate(root).child_count == 3
    images = {
        pixels(store.image_path(int(c))) for c in store.candidates(step=kids[0].step_id)["id"]
    }
    assert len(images) == 3


def test_the_image_is_uploaded_to_the_server_that_runs_the_job(
    store: Store, sim: Simulator, tmp_path: Path, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    name = input_name(store.candidate(root))
    with Simulator(root=tmp_path / "second") as second:
        kids = comfynb.refine(store, root, params=[{"KSampler.seed": s} for s in range(6)])
        summary = Worker(store, [sim.url, second.url]).run()
        assert summary.completed == 6
        servers = {store.job(k.id).server for k in kids}
        assert servers == {sim.url, second.url}  # both took some
        assert sorted(uploads) == sorted([(sim.url, name), (second.url, name)])
        assert (second.root / "input" / name).read_bytes() == store.image_path(root).read_bytes()


def test_a_refine_through_a_remote_store(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    with serve(store), comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore)
        kids = comfynb.refine(remote, root, params=[{"KSampler.seed": 4}, {"KSampler.seed": 5}])
        assert store.step(kids[0].step_id or 0).kind == "refine"
        Worker(store, [sim.url]).run()  # the owner's worker uploads
        assert remote.candidate(root).child_count == 2
        assert list(remote.lineage(root)["depth"]) == [0, 1, 1]
    assert len(uploads) == 1


def test_a_notebook_refines_beside_a_comfynb_worker_process(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "lab.duckdb"
    worker = WorkerProcess(db, [sim.url])
    try:
        worker.wait_serving()
        with comfynb.open(db) as remote:
            assert isinstance(remote, RemoteStore)
            run = remote.new_run("r")
            params = {**SMALL, "KSampler.seed": 1}
            job = comfynb.enqueue(remote, Workflow.example("txt2img"), run=run, params=params)
            assert comfynb.wait(remote, job, timeout=20, progress=False).done == 1
            [root] = remote.candidates(job=job)["id"]
            kids = comfynb.refine(remote, int(root), params=[{"KSampler.seed": s} for s in (2, 3)])
            summary = comfynb.wait(remote, kids, timeout=20, progress=False)
            assert (summary.done, summary.failed) == (2, 0), remote.job(kids[0].id).error
            family = remote.lineage(int(root))
            assert list(family["depth"]) == [0, 1, 1]
            assert list(family["child_count"]) == [2, 0, 0]
        assert worker.stop() == 0
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    uploaded = list((sim.root / "input" / "comfynb").iterdir())
    assert len(uploaded) == 1  # the worker process uploaded the image, once


def test_a_given_workflow_txt2img_or_img2img(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    name = input_name(store.candidate(root))
    small_img2img = Workflow.example("img2img").set("KSampler.steps", 3)
    [a] = comfynb.refine(store, root, small_img2img, denoise=0.4)
    assert a.workflow["10"]["inputs"]["image"] == name
    assert a.workflow["3"]["inputs"]["denoise"] == 0.4
    [b] = comfynb.refine(store, root, Workflow.example("txt2img"), {"KSampler.denoise": 0.9})
    assert b.workflow["3"]["inputs"]["denoise"] == 0.9  # a param wins over denoise=
    assert "5" not in b.workflow and b.workflow["10"]["inputs"]["image"] == name
    Worker(store, [sim.url]).run()
    assert store.job(a.id).status is JobStatus.COMPLETED
    assert store.job(b.id).status is JobStatus.COMPLETED
    assert store.candidate(root).child_count == 2


# --------------------------------------------------------------------------- bad inputs write nothing


def _written(store: Store) -> tuple[int, int]:
    steps = store._fetch("SELECT count(*) FROM steps")[0][0]
    return len(store.jobs()), int(steps)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "says"),
    [
        ((999,), {}, CandidateNotFound, "no candidate 999"),
        ((None, {"KSampler.sed": 1}), {}, WorkflowError, "sed"),
        ((None, [{"KSampler.seed": 1}, {"Nope.seed": 2}]), {}, WorkflowError, "params[1]"),
        ((None, [{"KSampler.seed": 1}, 5]), {}, InvalidInput, "params[1]"),
        ((None, []), {}, InvalidInput, "empty"),
        (({"1": {"class_type": "EmptyImage", "inputs": {}}},), {}, WorkflowError, "img2img"),
        (("not a workflow",), {}, WorkflowError, ""),
        ((), {"denoise": 0}, WorkflowError, "denoise"),
        ((), {"run": "no such run"}, comfynb.RunNotFound, "no such run"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    store: Store,
    sim: Simulator,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    says: str,
) -> None:
    root = generate(store, sim)
    before = _written(store)
    call = (999, *args[1:]) if args[:1] == (999,) else (root, *args)
    with pytest.raises(error) as raised:
        comfynb.refine(store, *call, **kwargs)
    assert says in str(raised.value)
    assert _written(store) == before


def test_a_candidate_whose_image_is_gone_is_refused(store: Store, sim: Simulator) -> None:
    root = generate(store, sim)
    store.image_path(root).unlink()
    before = _written(store)
    with pytest.raises(InvalidInput, match="is missing; put the file back"):
        comfynb.refine(store, root)
    assert _written(store) == before


def test_a_missing_image_fails_the_job_saying_so(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    [kid] = comfynb.refine(store, root)
    store.image_path(root).unlink()
    summary = Worker(store, [sim.url]).run()
    assert summary.failed == 1
    error = store.job(kid.id).error or {}
    assert error["type"] == "MissingInputImage"
    assert (
        "put the file back" in error["message"] and str(store.image_path(root)) in error["message"]
    )
    assert uploads == []


def test_an_image_gone_from_the_server_is_uploaded_again(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    name = input_name(store.candidate(root))
    with Client(sim.url) as client:  # one client: it remembers what it uploaded
        for seed in (1, 2):
            [kid] = comfynb.refine(store, root, params={"KSampler.seed": seed})
            claimed = comfynb.select_next_job(store, server=sim.url)
            assert claimed is not None and claimed.id == kid.id
            assert comfynb.submit_job(store, client, claimed).status is JobStatus.SUBMITTED
            (sim.root / "input" / name).unlink()  # the server's input folder emptied
    assert uploads == [(sim.url, name), (sim.url, name)]


def test_a_prompt_refused_for_another_reason_uploads_nothing_again(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim)
    good, bad = comfynb.refine(
        store, root, params=[{"KSampler.seed": 1}, {"KSampler.sampler_name": "no_such_sampler"}]
    )
    with Client(sim.url) as client:
        for job in (good, bad):
            claimed = comfynb.select_next_job(store, server=sim.url)
            assert claimed is not None and claimed.id == job.id
            comfynb.submit_job(store, client, claimed)
    failed = store.job(bad.id)
    assert failed.status is JobStatus.FAILED and "sampler_name" in str(failed.error)
    assert len(uploads) == 1


# --------------------------------------------------------------------------- reproduce


def test_reproduce_gives_the_same_bytes(
    store: Store, sim: Simulator, uploads: list[tuple[str, str]]
) -> None:
    root = generate(store, sim, seed=11)
    [kid] = comfynb.refine(store, root, params={"KSampler.seed": 3})
    Worker(store, [sim.url]).run()
    [child] = store.candidates(job=kid)["id"]
    for made in (root, int(child)):
        wf = comfynb.reproduce(store, made)
        assert wf.to_api() == store.job(store.candidate(made).job_id).workflow
        forget_uploads()
        for uploaded in (sim.root / "input").glob("comfynb/*"):
            uploaded.unlink()  # a server that never had it
        again = comfynb.enqueue(store, wf, run="r")
        Worker(store, [sim.url]).run()
        [copy] = store.candidates(job=again)["id"]
        assert store.image_path(int(copy)).read_bytes() == store.image_path(made).read_bytes()
        assert store.candidate(int(copy)).sha256 == store.candidate(made).sha256
    with pytest.raises(CandidateNotFound):
        comfynb.reproduce(store, 999)


# --------------------------------------------------------------------------- the shipped workflows


def _object_info() -> dict[str, Any]:
    with gzip.open(DATA / "object_info_0.33.0.json.gz") as f:
        info: dict[str, Any] = json.load(f)
    return info


@pytest.mark.parametrize("name", ["txt2img", "img2img"])
def test_each_shipped_ui_converts_to_its_api(name: str) -> None:
    data = resources.files("comfynb.workflows").joinpath("data")
    ui = json.loads(data.joinpath(f"{name}.ui.json").read_text())
    api = json.loads(data.joinpath(f"{name}.api.json").read_text())
    assert Workflow.load(ui, object_info=_object_info()).to_api() == api
    shipped = Workflow.example(name)
    assert shipped.to_api() == api and shipped.ui == ui


def test_the_shipped_txt2img_is_comfyuis_default_and_img2img_its_img2img_form() -> None:
    with gzip.open(DATA / "ui-to-api" / "default_sd15_ui.ui.json.gz") as f:
        default_ui = json.load(f)
    txt2img = Workflow.example("txt2img")
    assert txt2img.ui == default_ui
    assert (
        to_img2img(txt2img.to_api(), "example.png", denoise=0.6)
        == Workflow.example("img2img").to_api()
    )
    with pytest.raises(WorkflowError, match="'txt2img', 'img2img'"):
        Workflow.example("inpaint")


def test_both_shipped_workflows_run_on_the_simulator(store: Store, sim: Simulator) -> None:
    with Client(sim.url) as client:
        client.upload_image(_png(), name="example.png")
    run = store.new_run("examples")
    for name in ("txt2img", "img2img"):
        comfynb.enqueue(store, Workflow.example(name), run=run, params={"KSampler.steps": 2})
    summary = Worker(store, [sim.url]).run()
    assert summary.completed == 2
    assert len(store.candidates(run=run)) == 2


def _png() -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_ids_and_stars_read_from_a_dataframe_are_taken(store: Store, sim: Simulator) -> None:
    """A notebook picks from ``store.candidates()``: its ids are numpy ints (``df.id.iloc[0]``
    is an ``np.int64``), and so is a star computed from a column. ``refine``, ``reproduce`` and
    ``star`` take them, as ``pick`` and ``lineage`` do, locally and through a worker."""
    generate(store, sim)
    frame = store.candidates(run="r")
    first, stars = frame["id"].iloc[0], frame["child_count"].iloc[0] + 3  # np.int64, np.int32
    assert type(first).__module__ == "numpy" and type(stars).__module__ == "numpy"
    assert comfynb.reproduce(store, first).to_api() == store.job(int(frame.job_id[0])).workflow
    assert store.star(first, stars).stars == 3
    [kid] = comfynb.refine(store, first, params={"KSampler.seed": 2})
    assert kid.parent_candidate_id == int(first)
    with serve(store), comfynb.open(store.path) as remote:
        assert remote.star(first, stars - 1).stars == 2
        assert comfynb.refine(remote, first)[0].parent_candidate_id == int(first)
        assert comfynb.reproduce(remote, first) == comfynb.reproduce(store, int(first))
    for bad in (True, 1.0, "1"):
        with pytest.raises(InvalidInput, match="candidate is a Candidate or its id"):
            comfynb.refine(store, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="candidate is a Candidate or its id"):
            comfynb.reproduce(store, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="stars is an int from 0 to 5"):
        store.star(first, 2.0)  # type: ignore[arg-type]
