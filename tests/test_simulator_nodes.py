"""The simulator's nodes: real pillow images, real PNG files with ComfyUI's text chunks."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from comfynb.simulator.nodes import (
    Interrupted,
    NodeContext,
    NodeExecutionError,
    NodeOutput,
    execute,
    is_output_node,
)


@dataclass
class Run:
    """A finished run of a prompt, driven in dependency order as the engine does."""

    root: Path
    outputs: dict[str, NodeOutput]
    progress: list[tuple[str, int, int]] = field(default_factory=list)
    previews: list[tuple[bytes, str]] = field(default_factory=list)

    def image(self, node_id: str, index: int = 0) -> Image.Image:
        image: Image.Image = self.outputs[node_id].values[0][index]
        return image

    def saved(self, node_id: str, index: int = 0) -> Path:
        ref = (self.outputs[node_id].ui or {})["images"][index]
        return self.root / ref["type"] / ref["subfolder"] / ref["filename"]


def run(
    prompt: dict[str, Any],
    root: Path,
    *,
    extra_pnginfo: dict[str, Any] | None = None,
    prompt_id: str = "p1",
    interrupt_at_tick: int | None = None,
    step_seconds: float = 0.0,
) -> Run:
    for folder in ("input", "output", "temp"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    result = Run(root, {})

    def context(node_id: str) -> NodeContext:
        def progress(value: int, total: int) -> None:
            result.progress.append((node_id, value, total))
            if interrupt_at_tick is not None and len(result.progress) >= interrupt_at_tick:
                raise Interrupted

        return NodeContext(
            node_id=node_id,
            prompt_id=prompt_id,
            prompt=prompt,
            extra_pnginfo=extra_pnginfo,
            output_dir=root / "output",
            input_dir=root / "input",
            temp_dir=root / "temp",
            progress=progress,
            send_preview=lambda data, kind: result.previews.append((data, kind)),
            step_seconds=step_seconds,
        )

    def visit(node_id: str) -> None:
        if node_id in result.outputs:
            return
        node = prompt[node_id]
        inputs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                visit(value[0])
                value = result.outputs[value[0]].values[value[1]]
            inputs[name] = value
        result.outputs[node_id] = execute(node["class_type"], inputs, context(node_id))

    for node_id, node in prompt.items():
        if is_output_node(node["class_type"]):
            visit(node_id)
    return result


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def empty(
    node_id: str = "1", *, size: tuple[int, int] = (64, 64), color: int = 0, batch: int = 1
) -> dict[str, Any]:
    inputs = {"width": size[0], "height": size[1], "batch_size": batch, "color": color}
    return {node_id: {"class_type": "EmptyImage", "inputs": inputs}}


def save(node_id: str, source: str, prefix: str = "t") -> dict[str, Any]:
    return {
        node_id: {
            "class_type": "SaveImage",
            "inputs": {"images": [source, 0], "filename_prefix": prefix},
        }
    }


# --- saving -----------------------------------------------------------------------------


def test_save_image_writes_a_png_with_prompt_and_workflow_chunks(tmp_path: Path) -> None:
    prompt = empty(color=0xFF8000) | save("2", "1", "trivial")
    workflow = {"id": "wf-1", "nodes": []}
    result = run(prompt, tmp_path, extra_pnginfo={"workflow": workflow})
    assert result.outputs["2"].ui == {
        "images": [{"filename": "trivial_00001_.png", "subfolder": "", "type": "output"}]
    }
    with Image.open(result.saved("2")) as png:
        assert png.format == "PNG" and png.size == (64, 64)
        assert png.getpixel((10, 10)) == (255, 128, 0)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow


def test_save_image_counts_on_from_the_highest_file_of_its_prefix(tmp_path: Path) -> None:
    prompt = empty() | save("2", "1", "t")
    assert run(prompt, tmp_path).saved("2").name == "t_00001_.png"
    assert run(prompt, tmp_path).saved("2").name == "t_00002_.png"
    (tmp_path / "output" / "t_00041_.png").write_bytes(b"someone else's file")
    (tmp_path / "output" / "t_extra_00099_.png").write_bytes(b"another prefix")
    assert run(prompt, tmp_path).saved("2").name == "t_00042_.png"
    for file in (tmp_path / "output").iterdir():
        file.unlink()
    assert run(prompt, tmp_path).saved("2").name == "t_00001_.png"


def test_a_batch_saves_one_file_per_image(tmp_path: Path) -> None:
    result = run(empty(batch=4) | save("2", "1", "batch"), tmp_path)
    names = [ref["filename"] for ref in (result.outputs["2"].ui or {})["images"]]
    assert names == [f"batch_{n:05}_.png" for n in range(1, 5)]
    assert all((tmp_path / "output" / name).is_file() for name in names)


def test_a_prefix_with_a_folder_saves_into_a_subfolder(tmp_path: Path) -> None:
    result = run(empty() | save("2", "1", "sub/two_out_b"), tmp_path)
    ref = (result.outputs["2"].ui or {})["images"][0]
    assert ref == {"filename": "two_out_b_00001_.png", "subfolder": "sub", "type": "output"}
    assert result.saved("2").is_file()


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/comfynb-escape", "sub/../../x"])
def test_saving_outside_the_output_folder_fails_as_comfyui_does(
    tmp_path: Path, prefix: str
) -> None:
    with pytest.raises(NodeExecutionError) as failed:
        run(empty() | save("2", "1", prefix), tmp_path)
    assert failed.value.exception_type == "Exception"
    assert failed.value.message.startswith(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
    )
    assert f"\n         output_dir: {tmp_path / 'output'}\n" in failed.value.message
    assert failed.value.traceback
    assert (
        not list(tmp_path.parent.glob("escape*"))
        and not Path("/tmp/comfynb-escape_00001_.png").exists()
    )


def test_preview_image_saves_to_temp_under_a_temp_name(tmp_path: Path) -> None:
    prompt = empty() | {"2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    result = run(prompt, tmp_path)
    ref = (result.outputs["2"].ui or {})["images"][0]
    assert ref["type"] == "temp" and ref["subfolder"] == ""
    assert ref["filename"].startswith("ComfyUI_temp_") and ref["filename"].endswith("_00001_.png")
    assert len(ref["filename"]) == len("ComfyUI_temp_abcde_00001_.png")
    assert result.saved("2").is_file()
    again = run(prompt, tmp_path, prompt_id="p2")
    assert (again.outputs["2"].ui or {})["images"][0]["filename"] == ref["filename"].replace(
        "00001", "00002"
    )


def test_save_image_websocket_sends_previews_and_progress_without_files(tmp_path: Path) -> None:
    prompt = empty(size=(32, 16), batch=3) | {
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}
    }
    result = run(prompt, tmp_path)
    assert result.outputs["2"].ui is None
    assert result.progress == [("2", 0, 3), ("2", 1, 3), ("2", 2, 3)]
    assert [kind for _, kind in result.previews] == ["PNG"] * 3
    with Image.open(io.BytesIO(result.previews[0][0])) as frame:
        assert frame.size == (32, 16)
    assert not any((tmp_path / "output").iterdir())


# --- image nodes ------------------------------------------------------------------------


def test_invert_blur_scale(tmp_path: Path) -> None:
    prompt = empty(size=(256, 256), color=0x336699) | {
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 3, "sigma": 1.5}},
        "4": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "bilinear",
                                                     "width": 128, "height": 96, "crop": "disabled"}},
    } | save("5", "4", "invert_blur_scale")  # fmt: skip
    result = run(prompt, tmp_path)
    assert result.image("2").getpixel((0, 0)) == (0xCC, 0x99, 0x66)
    with Image.open(result.saved("5")) as png:
        assert png.size == (128, 96)
        assert png.getpixel((64, 48)) == (0xCC, 0x99, 0x66)


@pytest.mark.parametrize(
    ("width", "height", "crop", "expected"),
    [(0, 0, "disabled", (200, 100)), (50, 0, "disabled", (50, 25)), (0, 50, "center", (100, 50)),
     (60, 60, "center", (60, 60))],
)  # fmt: skip
def test_image_scale_sizes(
    tmp_path: Path, width: int, height: int, crop: str, expected: tuple[int, int]
) -> None:
    prompt = empty(size=(200, 100)) | {
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "lanczos",
                                                     "width": width, "height": height, "crop": crop}},
    } | save("3", "2")  # fmt: skip
    assert run(prompt, tmp_path).image("2").size == expected


def noise_prompt(seed: int, strength: float = 0.5) -> dict[str, Any]:
    return empty(color=0x808080) | {
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": strength}},
    } | save("3", "2", "noise")  # fmt: skip


def test_noise_follows_the_seed(tmp_path: Path) -> None:
    first = run(noise_prompt(1), tmp_path / "a").saved("3").read_bytes()
    again = run(noise_prompt(1), tmp_path / "b").saved("3").read_bytes()
    other = run(noise_prompt(2), tmp_path / "c").image("2")
    assert first == again
    with Image.open(io.BytesIO(first)) as noisy:
        assert difference(noisy.convert("RGB"), other) > 20
        assert ImageStat.Stat(noisy).stddev[0] > 40  # strength 0.5 of N(0, 1) on 0..255


def test_noise_of_strength_zero_changes_nothing(tmp_path: Path) -> None:
    result = run(noise_prompt(7, strength=0.0), tmp_path)
    assert difference(result.image("1"), result.image("2")) == 0


def test_a_noisy_batch_has_different_noise_per_image(tmp_path: Path) -> None:
    prompt = noise_prompt(3)
    prompt["1"]["inputs"]["batch_size"] = 2
    result = run(prompt, tmp_path)
    assert difference(result.image("2", 0), result.image("2", 1)) > 20


def test_composite_and_blend(tmp_path: Path) -> None:
    prompt = empty("1", size=(256, 256), color=0xFF0000) | empty("2", size=(128, 128), color=0x0000FF) | {
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.6, "width": 128, "height": 128}},
        "4": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["1", 0], "source": ["2", 0],
              "x": 64, "y": 64, "resize_source": False, "mask": ["3", 0]}},
        "5": {"class_type": "ImageAddNoise", "inputs": {"image": ["4", 0], "seed": 7, "strength": 0.3}},
        "6": {"class_type": "ImageBlend", "inputs": {"image1": ["4", 0], "image2": ["5", 0],
              "blend_factor": 0.5, "blend_mode": "normal"}},
    } | save("7", "6", "composite")  # fmt: skip
    result = run(prompt, tmp_path)
    composite = result.image("4")
    assert composite.getpixel((10, 10)) == (255, 0, 0)
    red, _, blue = composite.getpixel((128, 128))
    assert abs(red - 102) <= 1 and abs(blue - 153) <= 1  # 60 % blue over red
    assert result.saved("7").is_file()


@pytest.mark.parametrize(
    "mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
)
def test_every_blend_mode_runs(tmp_path: Path, mode: str) -> None:
    prompt = empty("1", color=0x808080) | empty("2", size=(32, 48), color=0x404040) | {
        "3": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0],
              "blend_factor": 1.0, "blend_mode": mode}},
    } | save("4", "3")  # fmt: skip
    blended = run(prompt, tmp_path).image("3")
    assert blended.size == (64, 64)
    if mode == "difference":
        assert blended.getpixel((0, 0)) == (0x40, 0x40, 0x40)


def test_blending_batches_of_different_sizes_fails_as_torch_would(tmp_path: Path) -> None:
    prompt = empty("1", batch=2) | empty("2", batch=3) | {
        "3": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0],
              "blend_factor": 0.5, "blend_mode": "normal"}},
    } | save("4", "3")  # fmt: skip
    with pytest.raises(NodeExecutionError) as failed:
        run(prompt, tmp_path)
    assert failed.value.exception_type == "RuntimeError"


def test_a_literal_where_an_image_belongs_fails_at_execution(tmp_path: Path) -> None:
    prompt = {
        "1": {"class_type": "SaveImage", "inputs": {"images": "nope", "filename_prefix": "x"}}
    }
    with pytest.raises(NodeExecutionError) as failed:
        run(prompt, tmp_path)
    assert failed.value.exception_type == "AttributeError"


# --- loading ----------------------------------------------------------------------------


def write_input(root: Path, name: str, image: Image.Image) -> None:
    (root / "input").mkdir(parents=True, exist_ok=True)
    image.save(root / "input" / name)


def load(name: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}}}


def test_load_image_gives_rgb_and_the_inverted_alpha_as_mask(tmp_path: Path) -> None:
    write_input(tmp_path, "cat.png", Image.new("RGBA", (20, 10), (10, 20, 30, 64)))
    result = run(load("cat.png") | save("2", "1"), tmp_path)
    image, mask = result.outputs["1"].values[0][0], result.outputs["1"].values[1][0]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (10, 20, 30)
    assert mask.size == (20, 10) and mask.getpixel((0, 0)) == 255 - 64


def test_load_image_without_alpha_has_comfyuis_empty_mask(tmp_path: Path) -> None:
    write_input(tmp_path, "rgb.jpg", Image.new("RGB", (20, 10), (200, 0, 0)))
    mask = run(load("rgb.jpg") | save("2", "1"), tmp_path).outputs["1"].values[1][0]
    assert mask.size == (64, 64) and mask.getextrema() == (0, 0)


def test_load_image_reads_subfolders_and_annotated_folders(tmp_path: Path) -> None:
    (tmp_path / "input" / "sub").mkdir(parents=True)
    write_input(tmp_path, "sub/a.png", Image.new("RGB", (4, 4)))
    (tmp_path / "output").mkdir()
    Image.new("RGB", (6, 6)).save(tmp_path / "output" / "b.png")
    assert run(load("sub/a.png") | save("2", "1"), tmp_path).image("1").size == (4, 4)
    assert run(load("b.png [output]") | save("2", "1"), tmp_path).image("1").size == (6, 6)


def test_loading_a_file_that_is_not_an_image_fails_as_comfyui_does(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "junk.png").write_text("not an image")
    with pytest.raises(NodeExecutionError) as failed:
        run(load("junk.png") | save("2", "1"), tmp_path)
    assert failed.value.exception_type == "PIL.UnidentifiedImageError"
    assert failed.value.message == f"cannot identify image file '{tmp_path / 'input' / 'junk.png'}'"


def test_load_image_refuses_paths_outside_its_folders(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    with pytest.raises(NodeExecutionError) as failed:
        run(load("../secret.png") | save("2", "1"), tmp_path / "root")
    assert failed.value.exception_type == "FileNotFoundError"


# --- simulated model nodes --------------------------------------------------------------


def txt2img(*, seed: int = 42, text: str = "a glass bottle", size: int = 128, steps: int = 4,
            cfg: float = 8.0, sampler: str = "euler") -> dict[str, Any]:  # fmt: skip
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }  # fmt: skip


def test_txt2img_is_deterministic_and_ticks_each_step(tmp_path: Path) -> None:
    first = run(txt2img(), tmp_path / "a")
    second = run(txt2img(), tmp_path / "b")
    assert first.saved("9").read_bytes() == second.saved("9").read_bytes()
    assert first.progress == [("3", step, 4) for step in range(1, 5)]
    assert first.image("8").size == (128, 128)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 43},
        {"text": "a red fox in the snow"},
        {"cfg": 2.0},
        {"steps": 20},
        {"sampler": "dpmpp_2m"},
    ],
)
def test_each_sampling_input_changes_the_picture(tmp_path: Path, change: dict[str, Any]) -> None:
    base = run(txt2img(), tmp_path / "a").image("8")
    changed = run(txt2img(**change), tmp_path / "b").image("8")
    assert difference(base, changed) > 2


@pytest.mark.parametrize("change", [{"seed": 43}, {"text": "a red fox in the snow"}])
def test_another_seed_or_prompt_gives_a_visibly_different_picture(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    base = run(txt2img(), tmp_path / "a").image("8")
    assert difference(base, run(txt2img(**change), tmp_path / "b").image("8")) > 15


def test_latent_sizes_round_down_to_multiples_of_8(tmp_path: Path) -> None:
    assert run(txt2img(size=100), tmp_path).image("8").size == (96, 96)


def img2img(denoise: float) -> dict[str, Any]:
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "source.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"] |= {"latent_image": ["11", 0], "denoise": denoise}
    return prompt


def test_a_refined_image_resembles_its_source(tmp_path: Path) -> None:
    source = run(txt2img(seed=1, text="mountains"), tmp_path).image("8")
    write_input(tmp_path, "source.png", source.resize((132, 132)))
    light = run(img2img(0.3), tmp_path).image("8")
    full = run(img2img(1.0), tmp_path).image("8")
    assert light.size == full.size == (128, 128)  # 132 cropped to a multiple of 8
    cropped = source.resize((132, 132)).crop((2, 2, 130, 130))
    assert difference(light, cropped) < difference(full, cropped) / 2


def test_an_interrupt_at_a_progress_tick_stops_the_sampler(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        run(txt2img(steps=10), tmp_path, interrupt_at_tick=3)


def test_the_interrupt_flag_is_checked_when_a_node_starts(tmp_path: Path) -> None:
    def interrupted() -> None:
        raise Interrupted

    ctx = NodeContext("1", "p", {}, None, tmp_path, tmp_path, tmp_path, lambda v, m: None,
                      lambda b, f: None, check_interrupt=interrupted)  # fmt: skip
    with pytest.raises(Interrupted):
        execute("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 0}, ctx)


def test_step_seconds_slow_the_sampler_down(tmp_path: Path) -> None:
    started = time.perf_counter()
    run(txt2img(steps=3, size=64), tmp_path, step_seconds=0.02)
    assert time.perf_counter() - started >= 0.06


def test_trivial_prompts_are_fast(tmp_path: Path) -> None:
    """The simulator must never be the bottleneck: a trivial prompt's nodes take well under 1 ms.

    Measured in this process's CPU time: the wall clock also counts the time other processes
    of a loaded machine had the CPUs (it read 2.16 ms once, beside a whole test suite).
    """
    prompt = empty() | save("2", "1", "trivial")
    run(prompt, tmp_path)
    started = time.process_time()
    for _ in range(200):
        run(prompt, tmp_path)
    per_prompt = (time.process_time() - started) / 200
    assert per_prompt < 0.002, f"{per_prompt * 1000:.2f} ms per trivial prompt"
    assert len(os.listdir(tmp_path / "output")) == 201
