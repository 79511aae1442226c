"""The engine's pure parts: ComfyUI's execution order, cache keys, the jobs view, history paging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt

from comfynb.simulator.app import _history_slice
from comfynb.simulator.engine import execution_order, signatures
from comfynb.simulator.jobs import JobQueryError, find_job, list_jobs

OUTPUTS = {"SaveImage", "PreviewImage", "SaveImageWebsocket"}


def order(prompt: dict[str, Any], outputs: list[str], cached: set[str] | None = None) -> list[str]:
    return execution_order(
        prompt, outputs, cached or set(), lambda node: prompt[node]["class_type"] in OUTPUTS
    )


def two_outputs() -> dict[str, Any]:
    """The captured error-after-one-output graph: outputs ["4", "2"], ran 1, 2, 3, 4."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
    }


def test_an_output_node_runs_as_soon_as_it_is_ready() -> None:
    assert order(two_outputs(), ["4", "2"]) == ["1", "2", "3", "4"]


def test_cached_ancestors_are_not_visited_but_cached_outputs_are() -> None:
    assert order(two_outputs(), ["4", "2"], cached={"1", "2"}) == ["2", "3", "4"]
    assert order(two_outputs(), ["4", "2"], cached={"1", "2", "3", "4"}) == ["4", "2"]


def test_among_equals_the_last_input_pushed_runs_first() -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "EmptyImage", "inputs": {}},
        "3": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }
    assert order(prompt, ["5"]) == ["2", "1", "3", "4", "5"]


def test_signatures_follow_links_and_ignore_node_ids(tmp_path: Path) -> None:
    first = signatures(trivial_prompt("a"), tmp_path)
    renumbered = {
        "7": trivial_prompt("a")["1"],
        "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "a"}},
    }
    second = signatures(renumbered, tmp_path)
    assert first["1"] == second["7"] and first["2"] == second["9"]
    other = trivial_prompt("a")
    other["1"]["inputs"]["color"] = 1
    changed = signatures(other, tmp_path)
    assert changed["1"] != first["1"] and changed["2"] != first["2"]  # through the link


def test_loadimage_signature_changes_with_the_file(tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    (tmp_path / "x.png").write_bytes(b"one")
    before = signatures(prompt, tmp_path)["1"]
    (tmp_path / "x.png").write_bytes(b"three")
    assert signatures(prompt, tmp_path)["1"] != before


def entry(number: int, status: str, created: int, outputs: dict[str, Any]) -> dict[str, Any]:
    end = "execution_success" if status == "success" else "execution_interrupted"
    return {
        "prompt": [number, f"p{number}", {}, {"create_time": created}, []],
        "outputs": outputs,
        "status": {
            "status_str": status,
            "completed": status == "success",
            "messages": [
                ["execution_start", {"timestamp": created + 1}],
                [end, {"timestamp": created + 10 * number}],
            ],
        },
        "meta": {},
    }


def test_jobs_view_sorts_filters_and_pages() -> None:
    image = {"filename": "a.png", "subfolder": "", "type": "temp"}
    history = {
        "p1": entry(1, "success", 100, {"9": {"images": [image]}}),
        "p2": entry(2, "error", 200, {}),
        "p3": entry(3, "success", 300, {}),
    }
    pending = [[4, "p4", {}, {"create_time": 400}, []]]
    body = list_jobs({}, [], pending, history)
    assert [job["id"] for job in body["jobs"]] == ["p4", "p3", "p2", "p1"]
    assert body["jobs"][3]["preview_output"] == {**image, "nodeId": "9", "mediaType": "images"}
    assert "execution_error" not in body["jobs"][2]  # interrupted: failed without an error
    by_duration = list_jobs({"sort_by": "execution_duration", "sort_order": "asc"}, [], [], history)
    assert [job["id"] for job in by_duration["jobs"]] == ["p1", "p2", "p3"]
    page = list_jobs({"status": "completed", "limit": "1", "offset": "1"}, [], pending, history)
    assert [job["id"] for job in page["jobs"]] == ["p1"]
    assert page["pagination"] == {"offset": 1, "limit": 1, "total": 2, "has_more": False}
    assert find_job("p4", [], pending, history) == {
        "id": "p4",
        "status": "pending",
        "priority": 4,
        "create_time": 400,
        "outputs_count": 0,
        "previewable_outputs_count": 0,
    }
    assert find_job("nope", [], pending, history) is None


@pytest.mark.parametrize("query", [{"status": "x"}, {"limit": "0"}, {"offset": "-2"}])
def test_jobs_view_refuses_bad_queries(query: dict[str, str]) -> None:
    with pytest.raises(JobQueryError):
        list_jobs(query, [], [], {})


def test_history_paging_as_comfyui() -> None:
    history = {f"p{i}": {} for i in range(5)}
    assert list(_history_slice(history, 2, -1)) == ["p3", "p4"]
    assert list(_history_slice(history, 2, 1)) == ["p1", "p2"]
    assert list(_history_slice(history, None, 3)) == ["p3", "p4"]
    assert _history_slice(history, 0, -1) == {}
    assert list(_history_slice(history, 9, -1)) == list(history)
