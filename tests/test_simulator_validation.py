"""The simulator's prompt validation against the real server's captured answers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfynb.simulator import specs
from comfynb.simulator.validation import Validation, validate_prompt

CAPTURES = Path(__file__).resolve().parent / "data" / "captures"
VALIDATION_CAPTURES: dict[str, Any] = json.loads(
    (CAPTURES / "post_prompt_validation_errors.json").read_text()
)


def _validate(
    prompt: dict[str, Any],
    version: str = "0.33.0",
    *,
    files: tuple[str, ...] = (),
    targets: list[str] | None = None,
) -> Validation:
    return validate_prompt(
        prompt,
        specs.object_info(version),
        version=version,
        input_exists=lambda name: name in files,
        partial_execution_targets=targets,
    )


def _without_tracebacks(value: Any) -> Any:
    """Tracebacks name the server's own source lines; everything else must match exactly."""
    if isinstance(value, dict):
        return {k: "<tb>" if k == "traceback" else _without_tracebacks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


def _trivial(**empty_image_inputs: Any) -> dict[str, Any]:
    inputs = {"width": 64, "height": 64, "batch_size": 1, "color": 0, **empty_image_inputs}
    return {
        "1": {"class_type": "EmptyImage", "inputs": inputs},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }


def _replayable() -> list[str]:
    """Captured submissions whose body held a prompt object (the rest are the app's 400/500s)."""
    names = []
    for name, capture in VALIDATION_CAPTURES.items():
        body = capture["request"].get("json")
        if isinstance(body, dict) and isinstance(body.get("prompt"), dict):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _replayable())
def test_replays_every_captured_validation_answer_in_legacy_mode(name: str) -> None:
    capture = VALIDATION_CAPTURES[name]
    result = _validate(copy.deepcopy(capture["request"]["json"]["prompt"]), "0.8.0")
    body = capture["body"]
    if capture["status"] == 400:
        assert result.outputs == []
        got = {"error": result.error, "node_errors": result.node_errors}
        assert _without_tracebacks(got) == _without_tracebacks(body)
    else:
        assert result.error is None
        assert _without_tracebacks(result.node_errors) == _without_tracebacks(body["node_errors"])


def test_exception_errors_carry_a_traceback_of_strings() -> None:
    prompt = copy.deepcopy(VALIDATION_CAPTURES["link_to_missing_node"]["request"]["json"]["prompt"])
    reason = _validate(prompt).node_errors["2"]["errors"][0]
    assert reason["extra_info"]["exception_type"] == "KeyError"
    frames = reason["extra_info"]["traceback"]
    assert frames and all(isinstance(frame, str) for frame in frames)


def test_unknown_class_is_missing_node_type_on_0_33() -> None:
    prompt = _trivial()
    prompt["1"]["class_type"] = "NoSuchNode"
    result = _validate(prompt)
    assert result.node_errors == {}
    assert result.error == {
        "type": "missing_node_type",
        "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": "NoSuchNode", "node_title": "NoSuchNode"},
    }


def test_unknown_class_is_named_by_its_title_on_0_33() -> None:
    prompt = _trivial()
    prompt["1"] |= {"class_type": "RMBG", "_meta": {"title": "Remove background"}}
    assert _validate(prompt).error is not None
    error = _validate(prompt).error or {}
    assert (
        error["message"]
        == "Node 'Remove background' not found. The custom node may not be installed."
    )
    assert error["extra_info"]["class_type"] == "RMBG"


def test_node_without_class_type_on_0_33() -> None:
    error = _validate({"4": {"inputs": {}}}).error
    assert error == {
        "type": "missing_node_type",
        "message": "Node 'ID #4' has no class_type. The workflow may be corrupted or a custom node is missing.",
        "details": "Node ID '#4'",
        "extra_info": {"node_id": "4", "class_type": None, "node_title": None},
    }


def test_a_node_that_is_not_an_object_raises_for_the_app_to_answer_500() -> None:
    with pytest.raises(TypeError):
        _validate({"1": 5})


def test_literal_values_are_converted_in_place_as_comfyui_does() -> None:
    prompt = _trivial(width="64", height=64.7)
    assert _validate(prompt).error is None
    assert prompt["1"]["inputs"]["width"] == 64
    assert prompt["1"]["inputs"]["height"] == 64


def test_wrapped_list_widget_values_are_unwrapped() -> None:
    prompt = _trivial(width={"__value__": 32})
    assert _validate(prompt).error is None
    assert prompt["1"]["inputs"]["width"] == 32


def test_ksampler_steps_below_minimum_names_node_input_and_minimum() -> None:
    prompt = _txt2img(steps=0)
    result = _validate(prompt)
    assert result.error is not None and result.error["type"] == "prompt_outputs_failed_validation"
    node = result.node_errors["3"]
    assert node["class_type"] == "KSampler" and node["dependent_outputs"] == ["9"]
    assert node["errors"] == [
        {
            "type": "value_smaller_than_min",
            "message": "Value 0 smaller than min of 1",
            "details": "steps",
            "extra_info": {
                "input_name": "steps",
                "input_config": specs.object_info()["KSampler"]["input"]["required"]["steps"],
                "received_value": 0,
            },
        }
    ]


def test_a_long_combo_is_not_echoed_back() -> None:
    prompt = _txt2img(sampler_name="nope")
    reason = _validate(prompt).node_errors["3"]["errors"][0]
    assert reason["type"] == "value_not_in_list"
    assert reason["details"].startswith("sampler_name: 'nope' not in (list of length ")
    assert reason["extra_info"]["input_config"] is None


def test_the_default_txt2img_graph_is_valid_with_a_known_checkpoint() -> None:
    assert _validate(_txt2img()) == Validation(None, {}, ["9"])
    prompt = _txt2img()
    prompt["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    assert _validate(prompt).node_errors["4"]["errors"][0]["type"] == "value_not_in_list"


def test_loadimage_passes_when_the_file_exists() -> None:
    prompt = copy.deepcopy(
        VALIDATION_CAPTURES["loadimage_missing_file"]["request"]["json"]["prompt"]
    )
    assert _validate(prompt, files=("does_not_exist.png",)).error is None


def test_an_error_upstream_of_two_outputs_lists_both() -> None:
    prompt = _trivial(width=0)
    prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    result = _validate(prompt)
    assert result.error is not None
    assert result.node_errors["1"]["dependent_outputs"] == ["2", "3"]


def test_partial_execution_targets_limit_the_outputs() -> None:
    prompt = _trivial()
    prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    assert _validate(prompt, targets=["3"]).outputs == ["3"]
    assert _validate(prompt, targets=["1"]).error == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }


def test_a_missing_node_behind_an_inner_node_is_an_inner_exception() -> None:
    prompt = _trivial()
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    result = _validate(prompt)
    assert result.error is not None and result.error["details"] == ""
    reason = result.node_errors["3"]["errors"][0]
    assert reason["type"] == "exception_during_inner_validation"
    assert reason["details"] == "'99'"
    assert reason["extra_info"]["linked_node"] == ["3", 0]
    assert result.node_errors["3"]["dependent_outputs"] == ["2"]


def test_a_link_that_is_not_a_pair_is_a_bad_linked_input() -> None:
    prompt = _trivial()
    prompt["2"]["inputs"]["images"] = ["1", 0, 1]
    reason = _validate(prompt).node_errors["2"]["errors"][0]
    assert reason["type"] == "bad_linked_input"
    assert reason["extra_info"]["received_value"] == ["1", 0, 1]


def test_an_optional_input_is_type_checked_when_given() -> None:
    prompt = _trivial()
    prompt["3"] = {
        "class_type": "ImageCompositeMasked",
        "inputs": {"destination": ["1", 0], "source": ["1", 0], "x": 0, "y": 0,
                   "resize_source": False, "mask": ["1", 0]},
    }  # fmt: skip
    prompt["2"]["inputs"]["images"] = ["3", 0]
    reason = _validate(prompt).node_errors["3"]["errors"][0]
    assert reason["details"] == "mask, received_type(IMAGE) mismatch input_type(MASK)"


def test_save_image_has_an_output_only_on_0_33() -> None:
    prompt = _trivial()
    prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    assert _validate(prompt, "0.33.0").error is None
    legacy = _validate(prompt, "0.8.0")
    assert legacy.outputs == ["2"]
    assert legacy.node_errors["3"]["errors"][0]["details"] == "tuple index out of range"


def _txt2img(**ksampler: Any) -> dict[str, Any]:
    """ComfyUI's default SD 1.5 graph in API format."""
    sampler = {
        "seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0], **ksampler,
    }  # fmt: skip
    return {
        "3": {"class_type": "KSampler", "inputs": sampler},
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }  # fmt: skip
