"""A value JSON, DuckDB or ComfyUI cannot hold is refused up front with one typed error,
the same whether the store is a local file or a worker's endpoint, and nothing is written.

Seen before: NaN was stored and then broke the POST; a seed of 2**70 broke the recorder at
completion; a lone surrogate or priority=2**40 surfaced as a raw DuckDB conversion error
locally and as ValueError / UnicodeEncodeError through the endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import trivial_prompt

import comfynb
from comfynb import InvalidInput, Store
from comfynb.service.remote import RemoteStore, serve
from comfynb.store.base import NotebookStore


@pytest.fixture
def both(store: Store) -> Iterator[tuple[Store, RemoteStore]]:
    store.new_run("r")
    with serve(store):
        opened = comfynb.open(store.path)
        assert isinstance(opened, RemoteStore)
        with opened:
            yield store, opened


def with_input(name: str, value: Any) -> dict[str, Any]:
    workflow = trivial_prompt()
    node = next(iter(workflow.values()))
    node["inputs"][name] = value
    return workflow


def enqueue(**kwargs: Any) -> Callable[[NotebookStore], object]:
    kwargs.setdefault("workflow", trivial_prompt())
    return lambda store: comfynb.enqueue(store, run="r", **kwargs)


CASES: dict[str, tuple[Callable[[NotebookStore], object], str]] = {
    "NaN in a workflow input": (
        enqueue(workflow=with_input("width", math.nan)),
        r'workflow\["\d+"\]\["inputs"\]\["width"\] is nan: JSON has no NaN or infinity',
    ),
    "inf in a workflow input": (
        enqueue(workflow=with_input("cfg", math.inf)),
        r'\["cfg"\] is inf: JSON has no NaN',
    ),
    "a 70-bit int in a workflow": (
        enqueue(workflow=with_input("seed", 2**70)),
        r'\["seed"\] is 1180591620717411303424: beyond the 64-bit range',
    ),
    "a lone surrogate in a workflow": (
        enqueue(workflow=with_input("text", "cat\udc80")),
        r"\[\"text\"\] holds a lone surrogate '\\udc80' at position 3",
    ),
    "NaN in params": (enqueue(params={"1.width": math.nan}), r'params\["1.width"\] is nan'),
    "a 70-bit seed in params": (
        enqueue(workflow=with_input("seed", 1), params={"1.seed": 2**70}),
        r'params\["1.seed"\] is 1180591620717411303424: beyond the 64-bit',
    ),
    "-inf in metadata": (enqueue(metadata={"x": -math.inf}), r'metadata\["x"\] is -inf'),
    "a lone surrogate as a metadata key": (
        enqueue(metadata={"\ud800": 1}),
        r"metadata key '\\ud800' holds a lone surrogate",
    ),
    "priority 2**40": (
        enqueue(priority=2**40),
        r"priority must be an int from -2147483648 to 2147483647, got 1099511627776",
    ),
    "max_retries 2**40": (enqueue(max_retries=2**40), r"max_retries must be an int from 0 to"),
    "NaN in a batch's params": (
        lambda store: comfynb.enqueue_many(
            store, [trivial_prompt(), trivial_prompt()], run="r", params=[{}, {"1.width": math.nan}]
        ),
        r'^params\[1\]: params\["1.width"\] is nan',
    ),
    "a lone surrogate in a run name": (
        lambda store: comfynb.enqueue(store, trivial_prompt(), run="r\udc80"),
        r"a text argument holds a lone surrogate '\\udc80' at position 1",
    ),
    "a lone surrogate in a new run's notes": (
        lambda store: store.new_run("q", notes="\udfff"),
        r"lone surrogate '\\udfff' at position 0",
    ),
    "NaN in a new run's metadata": (
        lambda store: store.new_run("q", metadata={"x": math.nan}),
        r'metadata\["x"\] is nan',
    ),
    "NaN in a new step's workflow": (
        lambda store: store.new_step("r", "sweep", with_input("width", math.nan)),
        r'workflow\["\d+"\]\["inputs"\]\["width"\] is nan',
    ),
    "a 70-bit int in a step's params_spec": (
        lambda store: store.new_step("r", "sweep", trivial_prompt(), params_spec={"seed": [2**70]}),
        r'params_spec\["seed"\]\[0\] is 1180591620717411303424',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_is_one_typed_error_on_both_stores_and_writes_nothing(
    both: tuple[Store, RemoteStore], case: str
) -> None:
    local, remote = both
    call, message = CASES[case]
    said = []
    for store in (local, remote):
        with pytest.raises(InvalidInput, match=message) as raised:
            call(store)
        said.append(str(raised.value))
    assert said[0] == said[1]  # word for word
    assert local.jobs().empty and local.events().empty
    assert local.runs()["name"].tolist() == ["r"]
    assert local.candidates().empty


def test_the_edges_of_the_ranges_are_stored_as_given(both: tuple[Store, RemoteStore]) -> None:
    local, remote = both
    for store in (local, remote):
        workflow = with_input("seed", 0)
        workflow["1"]["inputs"].update(low=0, cfg=1.0)
        job = comfynb.enqueue(
            store,
            workflow,
            run="r",
            params={"1.seed": 2**64 - 1, "1.low": -(2**63), "1.cfg": 1e308},
            priority=2**31 - 1,
            max_retries=0,
            metadata={"name": "caf\u00e9 \U0001f600"},
        )
        assert local.job(job.id) == job
        assert job.params == {"1.seed": 2**64 - 1, "1.low": -(2**63), "1.cfg": 1e308}
        assert next(iter(job.workflow.values()))["inputs"]["seed"] == 2**64 - 1
        assert job.metadata == {"name": "caf\u00e9 \U0001f600"}


def test_a_secret_is_stripped_before_its_value_is_judged(store: Store) -> None:
    """A value under a secret-looking key is never stored, so it cannot be refused either."""
    store.new_run("r")
    job = comfynb.enqueue(store, trivial_prompt(), run="r", metadata={"api_key": math.nan})
    assert job.metadata == {}


PREFIXES = {
    "a newline": ("cat\nnight", r"holds a control character '\\n': ComfyUI would save"),
    "a tab": ("a\tb", r"control character '\\t'"),
    "a 250-byte name": ("x" * 250, r"makes file names of 262 bytes .* shorten it to 243 bytes"),
    "a 250-byte last folder part": ("ok/" + "\u00e9" * 125, r"makes file names of 262 bytes"),
}


@pytest.mark.parametrize("case", list(PREFIXES))
def test_a_filename_prefix_comfyui_could_not_serve_back_is_refused_at_enqueue(
    both: tuple[Store, RemoteStore], case: str
) -> None:
    local, remote = both
    prefix, message = PREFIXES[case]
    for store in (local, remote):
        with pytest.raises(comfynb.WorkflowError, match=message) as raised:
            comfynb.enqueue(store, trivial_prompt(prefix), run="r")
        assert raised.value.node_id == "2" and raised.value.input_name == "filename_prefix"
    assert local.jobs().empty


def test_a_long_prefix_that_still_fits_is_queued(both: tuple[Store, RemoteStore]) -> None:
    local, _ = both
    job = comfynb.enqueue(local, trivial_prompt("p" * 240 + "/" + "q" * 243), run="r")
    assert job.workflow["2"]["inputs"]["filename_prefix"].endswith("q" * 243)
