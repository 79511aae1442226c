"""The simulator's /object_info entries are the real servers' entries."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from comfynb.simulator import nodes, specs

SHARED = Path(__file__).resolve().parent / "data"


def _real_0_33() -> dict[str, Any]:
    with gzip.open(SHARED / "object_info_0.33.0.json.gz") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def _captured_0_8() -> dict[str, Any]:
    capture = json.loads((SHARED / "captures" / "object_info_used_nodes.json").read_text())
    entries: dict[str, Any] = capture["entries_for_used_nodes"]
    return entries


@pytest.mark.parametrize("version", specs.SERVER_VERSIONS)
def test_every_listed_class_runs_and_every_run_class_is_listed(version: str) -> None:
    info = specs.object_info(version)
    assert set(info) == set(nodes._NODES)
    for name, entry in info.items():
        assert entry["name"] == name
        assert entry["output_node"] is nodes.is_output_node(name)


def test_0_33_entries_are_the_real_ones_but_for_the_file_combos() -> None:
    real = _real_0_33()
    info = specs.object_info("0.33.0", input_files=["b.png", "a.png"])
    for name, entry in info.items():
        if name == "SaveImageWebsocket":
            continue  # a custom node: not in the real dump
        expected = json.loads(json.dumps(real[name]))
        if name == "CheckpointLoaderSimple":
            expected["input"]["required"]["ckpt_name"][0] = list(specs.CHECKPOINTS)
        if name == "LoadImage":
            expected["input"]["required"]["image"][0] = ["a.png", "b.png"]
        assert entry == expected, name


def test_0_8_entries_are_the_captured_ones_but_for_the_file_combos() -> None:
    captured = _captured_0_8()
    info = specs.object_info("0.8.0")
    for name, entry in captured.items():
        expected = json.loads(json.dumps(entry))
        if name == "LoadImage":
            expected["input"]["required"]["image"][0] = []
        assert info[name] == expected, name


def test_only_0_33_entries_carry_the_newer_keys() -> None:
    assert "is_input_list" in specs.object_info("0.33.0")["KSampler"]
    assert "is_input_list" in specs.object_info("0.33.0")["SaveImageWebsocket"]
    assert "is_input_list" not in specs.object_info("0.8.0")["KSampler"]


def test_the_default_workflow_checkpoint_is_offered() -> None:
    combo = specs.object_info()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "v1-5-pruned-emaonly-fp16.safetensors" in combo


def test_each_call_returns_a_fresh_copy() -> None:
    specs.object_info()["EmptyImage"]["input"]["required"]["width"][1]["min"] = 99
    assert specs.object_info()["EmptyImage"]["input"]["required"]["width"][1]["min"] == 1


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.33\.0"):
        specs.object_info("9.9.9")
