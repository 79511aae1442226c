"""The fact sheet's model-free workflows run end to end and report what the real server did.

``workflow_runs_summary.json`` holds, per workflow, the status and the outputs the real
server reported; here each one runs once on a fresh simulator and its history entry must have
the same output nodes, image counts, types and subfolders (file names: same pattern).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from conftest import load_capture
from sim_helpers import history_of, post_prompt

from comfynb.simulator import Simulator


def empty(size: int = 64, color: int = 0x336699, batch: int = 1) -> dict[str, Any]:
    inputs = {"width": size, "height": size, "batch_size": batch, "color": color}
    return {"class_type": "EmptyImage", "inputs": inputs}


def save(source: str, prefix: str) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def noise(source: str, seed: int = 1) -> dict[str, Any]:
    return {
        "class_type": "ImageAddNoise",
        "inputs": {"image": [source, 0], "seed": seed, "strength": 0.5},
    }


WORKFLOWS: dict[str, dict[str, Any]] = {
    "trivial_64.json": {"1": empty(64), "2": save("1", "trivial")},
    "trivial_512.json": {"1": empty(512), "2": save("1", "trivial512")},
    "invert_blur_scale.json": {
        "1": empty(256),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["2", 0], "blur_radius": 3, "sigma": 1.5},
        },
        "4": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["3", 0],
                "upscale_method": "bilinear",
                "width": 128,
                "height": 96,
                "crop": "disabled",
            },
        },
        "5": save("4", "invert_blur_scale"),
    },
    "noise_seeded.json": {"1": empty(), "2": noise("1", seed=42), "3": save("2", "noise")},
    "composite_blend.json": {
        "1": empty(color=0xFF0000),
        "2": empty(color=0x0000FF),
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 32, "height": 32}},
        "4": {
            "class_type": "ImageCompositeMasked",
            "inputs": {
                "destination": ["1", 0],
                "source": ["2", 0],
                "x": 8,
                "y": 8,
                "resize_source": False,
                "mask": ["3", 0],
            },
        },
        "5": noise("4"),
        "6": {
            "class_type": "ImageBlend",
            "inputs": {
                "image1": ["5", 0],
                "image2": ["1", 0],
                "blend_factor": 0.5,
                "blend_mode": "normal",
            },
        },
        "7": save("6", "composite"),
    },
    "batch4.json": {"1": empty(batch=4), "2": noise("1"), "3": save("2", "batch")},
    "two_outputs.json": {
        "1": empty(96),
        "2": save("1", "two_out_a"),
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": save("3", "sub/two_out_b"),
    },
    "progress_ws_save.json": {
        "1": empty(32, batch=3),
        "2": noise("1"),
        "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
    },
    "preview_only.json": {
        "1": empty(),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    },
}


def pattern(name: str) -> str:
    """A file name with its counter and random letters wildcarded."""
    name = re.sub(r"_\d{5}_\.png$", "_NNNNN_.png", name)
    return re.sub(r"^ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_xxxxx_", name)


def summary(outputs: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    return {
        node: [(pattern(i["filename"]), i["subfolder"], i["type"]) for i in out["images"]]
        for node, out in outputs.items()
    }


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_outputs_match_the_real_run(legacy_sim: Simulator, name: str) -> None:
    expected = load_capture("workflow_runs_summary.json")[name]
    response = post_prompt(legacy_sim, WORKFLOWS[name], client_id="wf-check")
    assert response.status_code == 200, response.text
    entry = history_of(legacy_sim, response.json()["prompt_id"])
    assert entry["status"]["status_str"] == expected["status"]
    assert summary(entry["outputs"]) == summary(expected["outputs"])
    for images in entry["outputs"].values():
        for image in images["images"]:
            folder = legacy_sim.root / image["type"] / image["subfolder"]
            assert (folder / image["filename"]).read_bytes().startswith(b"\x89PNG")


def test_same_seed_same_bytes_other_seed_other_bytes(legacy_sim: Simulator) -> None:
    def digest(seed: int, prefix: str) -> str:
        prompt = {"1": empty(), "2": noise("1", seed=seed), "3": save("2", prefix)}
        entry = history_of(legacy_sim, post_prompt(legacy_sim, prompt).json()["prompt_id"])
        name = entry["outputs"]["3"]["images"][0]["filename"]
        return hashlib.sha256((legacy_sim.root / "output" / name).read_bytes()).hexdigest()

    captured = load_capture("workflow_runs_summary.json")["_seed_variation_noise_seeded"]
    assert captured["1"][0][1] == captured["1"][1][1] != captured["2"][0][1]
    first, other, again = (
        digest(1, "noise_seed1"),
        digest(2, "noise_seed2"),
        digest(1, "noise_seed1"),
    )
    assert first == again != other
