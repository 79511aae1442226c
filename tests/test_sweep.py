"""Params name inputs and are set in the workflow; a sweep is one step of jobs written at once.

Before: the README's own line `[enqueue(store, workflow, run=run, params={"seed": s}) ...]`
queued eight copies of one prompt (1 distinct image recorded under 8 seeds), and a job
whose workflow had seed 1 but params={"seed": 99} got a candidate with seed 99, byte-identical
to the seed-1 image. Now the record is what ran: these tests run the jobs on the simulator.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import comfynb
from comfynb import InvalidInput, Store, Workflow, WorkflowError
from comfynb.demo import txt2img
from comfynb.service.remote import RemoteStore
from comfynb.simulator import Simulator

OBJECT_INFO: dict[str, Any] = json.loads(
    gzip.decompress((Path(__file__).parent / "data" / "object_info_0.33.0.json.gz").read_bytes())
)


def graph(seed: int = 1) -> dict[str, Any]:
    return txt2img(seed, steps=2, size=64)


def run_all(store: Store, sim: Simulator) -> None:
    summary = comfynb.Worker(store, [sim.url]).run(until_idle=True)
    assert summary.failed == 0


def digests(store: Store, run: str) -> list[str]:
    frame = store.candidates(run=run)
    return [hashlib.sha256(store.image_path(int(i)).read_bytes()).hexdigest() for i in frame["id"]]


def test_a_seed_param_is_the_seed_that_runs(store: Store, sim: Simulator) -> None:
    store.new_run("r")
    jobs = [comfynb.enqueue(store, graph(), run="r", params={"KSampler.seed": s}) for s in range(8)]
    assert [j.workflow["3"]["inputs"]["seed"] for j in jobs] == list(range(8))
    assert [j.params for j in jobs] == [{"KSampler.seed": s} for s in range(8)]
    run_all(store, sim)
    assert len(set(digests(store, "r"))) == 8  # eight prompts, eight images
    frame = store.candidates(run="r")
    assert frame["seed"].tolist() == list(range(8))  # read from the prompt that ran
    assert frame["KSampler.seed"].tolist() == list(range(8))
    assert frame["cfg"].tolist() == [8.0] * 8 and frame["steps"].tolist() == [2] * 8
    assert frame["sampler"].tolist() == ["euler"] * 8
    assert frame["prompt"].str.startswith("beautiful scenery").all()


def test_a_param_wins_over_the_workflow_and_the_image_is_its_own(
    store: Store, sim: Simulator
) -> None:
    store.new_run("r")
    store.new_run("direct")
    comfynb.enqueue(store, graph(seed=1), run="r", params={"3.seed": 99})
    comfynb.enqueue(store, graph(seed=99), run="direct")
    comfynb.enqueue(store, graph(seed=1), run="direct")
    run_all(store, sim)
    [candidate] = store.candidates(run="r").itertuples()
    assert candidate.seed == 99
    seed99, seed1 = digests(store, "direct")
    assert digests(store, "r") == [seed99] and seed99 != seed1


def test_a_label_is_not_a_param(store: Store) -> None:
    store.new_run("r")
    with pytest.raises(WorkflowError, match=r"name inputs as 'NODE.input'.*got 'seed'"):
        comfynb.enqueue(store, graph(), run="r", params={"seed": 5})
    with pytest.raises(WorkflowError, match=r"'Sampler.seed': no node 'Sampler'.*\"3\" \(KSampler"):
        comfynb.enqueue(store, graph(), run="r", params={"Sampler.seed": 5})
    with pytest.raises(WorkflowError, match=r"has no input 'sed'; its inputs are: cfg, .*seed"):
        comfynb.enqueue(store, graph(), run="r", params={"KSampler.sed": 5})
    with pytest.raises(WorkflowError, match=r"'CLIPTextEncode.text' is ambiguous: .*\"6.text\""):
        comfynb.enqueue(store, graph(), run="r", params={"CLIPTextEncode.text": "a fox"})
    assert store.jobs().empty
    job = comfynb.enqueue(store, graph(), run="r", metadata={"seed_label": 5})  # labels go here
    assert job.metadata == {"seed_label": 5} and job.params == {}


def test_a_3x4_sweep_is_one_step_of_12_jobs_in_one_request(store: Store) -> None:
    store.new_run("r")
    calls: list[int] = []
    add_jobs = store.add_jobs

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[0]))
        return add_jobs(*args, **kwargs)

    store.add_jobs = counted  # type: ignore[method-assign]  # a spy: the call still runs
    texts = ["a red fox", "a grey owl", "a cat"]
    jobs = comfynb.sweep(
        store,
        Workflow.load(graph(), object_info=OBJECT_INFO),
        {"6.text": texts, "KSampler.cfg": [4, 5.5, 7, 8]},
        run="r",
    )
    assert calls == [12]  # the step and its 12 jobs: one add_jobs, one transaction
    assert [j.params for j in jobs] == [
        {"6.text": t, "KSampler.cfg": c} for t in texts for c in (4, 5.5, 7, 8)
    ]
    assert [
        (j.workflow["6"]["inputs"]["text"], j.workflow["3"]["inputs"]["cfg"]) for j in jobs
    ] == [(t, c) for t in texts for c in (4, 5.5, 7, 8)]
    assert len({j.step_id for j in jobs}) == 1
    step = store.step(jobs[0].step_id or 0)
    assert step.kind == "sweep"
    assert step.params_spec == {
        "grid": {"6.text": texts, "KSampler.cfg": [4, 5.5, 7, 8]},
        "mode": "grid",
    }
    assert step.workflow == graph()
    frame = store.jobs()
    assert frame["6.text"].tolist() == [t for t in texts for _ in range(4)]


def test_zip_pairs_values_and_seeds_are_drawn_and_recorded(store: Store, sim: Simulator) -> None:
    store.new_run("r")
    jobs = comfynb.sweep(
        store, graph(), {"KSampler.cfg": [4, 7], "KSampler.steps": [2, 3]}, run="r", mode="zip",
        seeds=3,
    )  # fmt: skip
    assert len(jobs) == 6
    assert [(j.params["KSampler.cfg"], j.params["KSampler.steps"]) for j in jobs] == [
        (4, 2)] * 3 + [(7, 3)] * 3  # fmt: skip
    seeds = [j.params["KSampler.seed"] for j in jobs]  # named as the grid names inputs
    assert len(set(seeds)) == 6 and all(0 <= s < 2**50 for s in seeds)
    assert [j.workflow["3"]["inputs"]["seed"] for j in jobs] == seeds
    run_all(store, sim)
    assert store.candidates(run="r")["seed"].tolist() == seeds  # reproducible: recorded
    with pytest.raises(InvalidInput, match=r"mode='zip' takes lists of one length; got "):
        comfynb.sweep(store, graph(), {"KSampler.cfg": [4, 7], "KSampler.steps": [2]},
                      run="r", mode="zip")  # fmt: skip


def test_drawn_seeds_share_a_column_with_a_refine_of_them(store: Store, sim: Simulator) -> None:
    """Drawn seeds are recorded as "KSampler.seed" (by class, as the grid and refine name
    inputs), so a sweep's and its refines' seeds are one column; by node id only when the
    class names two nodes."""
    store.new_run("r")
    jobs = comfynb.sweep(store, graph(), {"KSampler.cfg": [4]}, run="r", seeds=2)
    assert [sorted(j.params) for j in jobs] == [["KSampler.cfg", "KSampler.seed"]] * 2
    run_all(store, sim)
    first = int(store.candidates(run="r")["id"].iloc[0])
    comfynb.refine(store, first, params={"KSampler.seed": 5})
    run_all(store, sim)
    frame = store.candidates(run="r")
    assert frame["KSampler.seed"].tolist() == [*(j.params["KSampler.seed"] for j in jobs), 5]
    assert "3.seed" not in frame.columns

    two = graph()
    two["10"] = {**two["3"], "inputs": {**two["3"]["inputs"], "seed": ["11", 0]}}
    two["11"] = {"class_type": "PrimitiveInt", "inputs": {"value": 3}}
    step = comfynb.sweep(store, two, {"3.cfg": [4]}, run="r", seeds=1)
    assert sorted(step[0].params) == ["3.cfg", "3.seed"]  # "KSampler" names nodes 3 and 10


@pytest.mark.parametrize(
    ("grid", "kwargs", "error", "message"),
    [
        ({"KSampler.sed": [1]}, {}, WorkflowError, r"has no input 'sed'"),
        ({"KSampler.cfg": []}, {}, InvalidInput, r"grid\['KSampler.cfg'\] has no values"),
        ({"KSampler.cfg": 7}, {}, InvalidInput, r"is the list of values to try"),
        (
            {"KSampler.cfg": [4, 1000]},
            {},
            WorkflowError,
            r'input "cfg" = 1000.0 is above the maximum 100.0',
        ),
        (
            {"KSampler.sampler_name": ["euler", "nope"]},
            {},
            WorkflowError,
            r"'nope' is not one of the allowed",
        ),
        ({"KSampler.cfg": [4]}, {"mode": "cross"}, InvalidInput, r"mode is 'grid'"),
        ({"KSampler.seed": [1]}, {"seeds": 2}, InvalidInput, r"the seed input seeds= would draw"),
        ({"3.cfg": [1], "KSampler.cfg": [2]}, {}, InvalidInput, r"names input 3.cfg twice"),
        ({}, {"seeds": 0}, InvalidInput, r"seeds is how many random seeds"),
    ],
)
def test_a_bad_sweep_writes_nothing(
    store: Store, grid: dict[str, Any], kwargs: dict[str, Any], error: type, message: str
) -> None:
    store.new_run("r")
    flow = Workflow.load(graph(), object_info=OBJECT_INFO)
    with pytest.raises(error, match=message):
        comfynb.sweep(store, flow, grid, run="r", **kwargs)
    assert store.jobs().empty
    assert store.runs()["jobs"].tolist() == [0]
    with store.transaction() as tx:
        assert tx.fetch("SELECT count(*) FROM steps") == [(0,)]


def test_a_sweep_through_a_worker_is_the_same(store: Store, remote: RemoteStore) -> None:
    remote.new_run("r")
    jobs = comfynb.sweep(remote, graph(), {"KSampler.steps": [2, 3, 4]}, run="r", seeds=2)
    assert jobs == [store.job(j.id) for j in jobs]
    assert store.step(jobs[0].step_id or 0).kind == "sweep"
    assert [j.params["KSampler.steps"] for j in jobs] == [2, 2, 3, 3, 4, 4]
