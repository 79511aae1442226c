"""A txt2img prompt turned into img2img (comfynb.workflows.img2img) runs on the simulator,
starts from the uploaded image, and leaves the input prompt unchanged."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sim_helpers import wait_for

import comfynb
from comfynb import WorkflowError
from comfynb.protocol.types import PromptStatus
from comfynb.simulator import Simulator
from comfynb.workflows.img2img import set_load_image, to_img2img


def txt2img(seed: int = 42) -> dict[str, Any]:
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 4, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }  # fmt: skip


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


def run(sim: Simulator, prompt: dict[str, Any], folder: Path) -> bytes:
    with comfynb.Client(sim.url) as client:
        queued = client.queue_prompt(prompt)
        report = wait_for(lambda: (r := client.job(queued.prompt_id)).status.is_terminal and r)
        assert report.status == PromptStatus.COMPLETED, report.error
        [image] = report.outputs
        return client.download(image, folder).read_bytes()


def test_the_img2img_form_runs_from_the_uploaded_image(sim: Simulator, tmp_path: Path) -> None:
    original = txt2img()
    before = copy.deepcopy(original)
    with comfynb.Client(sim.url) as client:
        red = client.upload_image(png((200, 30, 30)), name="red.png").as_input
        blue = client.upload_image(png((30, 30, 200)), name="blue.png").as_input
    api = to_img2img(original, red, denoise=0.5)
    assert original == before  # the input is not changed
    assert "5" not in api  # the empty latent is gone
    assert api["3"]["inputs"]["denoise"] == 0.5
    load = next(n for n, node in api.items() if node["class_type"] == "LoadImage")
    encode = api["3"]["inputs"]["latent_image"][0]
    assert api[encode] == {"class_type": "VAEEncode",
                           "inputs": {"pixels": [load, 0], "vae": ["4", 2]},
                           "_meta": {"title": "VAE Encode"}}  # fmt: skip
    from_red = run(sim, api, tmp_path)
    assert from_red != run(sim, to_img2img(original, blue, denoise=0.5), tmp_path)
    assert from_red == run(sim, set_load_image(api, red), tmp_path)  # same inputs, same bytes
    # an img2img prompt keeps its graph: only the image changes
    again = to_img2img(api, blue)
    assert again == set_load_image(api, blue) and again["3"]["inputs"]["denoise"] == 0.5


def test_a_custom_sampler_gets_its_denoise_on_the_scheduler() -> None:
    prompt = {
        "1": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "BasicScheduler", "inputs": {"model": ["5", 0], "scheduler": "simple",
              "steps": 8, "denoise": 1}},
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"sigmas": ["2", 0],
              "latent_image": ["1", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["6", 0]}},
        "5": {"class_type": "UNETLoader", "inputs": {}},
        "6": {"class_type": "VAELoader", "inputs": {}},
    }  # fmt: skip
    api = to_img2img(prompt, "x.png", denoise=0.3)
    assert api["2"]["inputs"]["denoise"] == 0.3
    assert api["7"]["class_type"] == "LoadImage" and api["8"]["inputs"]["vae"] == ["6", 0]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"1": {"class_type": "EmptyImage", "inputs": {}}}, "no sampler started from an empty"),
        (
            {
                "1": {"class_type": "EmptyLatentImage", "inputs": {}},
                "2": {"class_type": "KSamplerAdvanced", "inputs": {"latent_image": ["1", 0]}},
                "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["9", 0]}},
            },
            'sampler "2" \\(KSamplerAdvanced\\) has no denoise to set',
        ),
        (
            {
                "1": {"class_type": "EmptyLatentImage", "inputs": {}},
                "2": {"class_type": "KSampler", "inputs": {"latent_image": ["1", 0], "denoise": 1}},
            },
            "cannot tell which VAE",
        ),
    ],
)
def test_what_cannot_be_made_img2img_says_why(prompt: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        to_img2img(prompt, "x.png")


def test_denoise_is_checked() -> None:
    with pytest.raises(WorkflowError, match="denoise is a number above 0 and at most 1"):
        to_img2img(txt2img(), "x.png", denoise=0)


def test_set_load_image_needs_exactly_one() -> None:
    with pytest.raises(WorkflowError, match="it has none"):
        set_load_image(txt2img(), "x.png")
    two = to_img2img(to_img2img(txt2img(), "a.png"), "b.png")
    two["20"] = {
        "class_type": "LoadImage",
        "inputs": {"image": "c.png"},
        "_meta": {"title": "Mask"},
    }
    with pytest.raises(WorkflowError, match=r'it has "10" \(Load Image\), "20" \(Mask\)'):
        set_load_image(two, "x.png")
