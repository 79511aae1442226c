"""``comfynb demo``: a txt2img prompt, a small seed sweep and an img2img refine, end to end.

It starts the embedded ComfyUI simulator (or talks to ``--server URL``), queues ComfyUI's
default txt2img graph through the client, follows each job on the WebSocket with a progress
line, downloads every image into the output folder, then refines the first image into a new
one (img2img) and prints what it collected.

Example::

    $ comfynb demo --out demo-images
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

DEFAULT_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"

# ComfyUI's default txt2img graph (the frontend's classic default workflow), in API format.
TXT2IMG: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle",
            "clip": ["4", 1],
        },
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "demo"}},
}


def txt2img(seed: int, *, steps: int = 20, prompt: str | None = None) -> dict[str, Any]:
    """Return the default txt2img graph with another seed, step count or prompt text."""
    graph = copy.deepcopy(TXT2IMG)
    graph["3"]["inputs"].update(seed=seed, steps=steps)
    if prompt is not None:
        graph["6"]["inputs"]["text"] = prompt
    return graph


def img2img(image_name: str, seed: int, *, denoise: float = 0.5, steps: int = 20) -> dict[str, Any]:
    """Return an img2img graph: LoadImage -> VAEEncode -> KSampler(denoise) -> VAEDecode -> SaveImage."""
    graph = txt2img(seed, steps=steps)
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["11", 0], denoise=denoise)
    graph["9"]["inputs"]["filename_prefix"] = "demo_refined"
    del graph["5"]
    return graph


def run_demo(*, out_dir: str | Path, server: str | None = None, steps: int = 20) -> int:
    """Run the demo and print what it did; returns the exit code (0 on success)."""
    from .client import Client

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _server_url(server) as url, Client(url) as client:
        stats = client.system_stats()
        print(f"ComfyUI {stats.comfyui_version} at {url}")
        images: list[Path] = []
        for seed in (1, 2, 3):
            images += _run(client, txt2img(seed, steps=steps), out, label=f"txt2img seed={seed}")
        uploaded = client.upload_image(images[0])
        refined = _run(client, img2img(uploaded.name, seed=7, steps=steps), out, label="img2img")
        print(f"\n{'image':40} {'size':>9} {'sha256':>14}")
        for path in [*images, *refined]:
            print(_describe(path))
        print(
            f"\nrefined image differs from its source by {_mean_difference(images[0], refined[0]):.1f}"
            f" (another seed: {_mean_difference(images[0], images[1]):.1f}); 0 = identical, 255 = opposite"
        )
    return 0


@contextlib.contextmanager
def _server_url(server: str | None) -> Iterator[str]:
    if server is not None:
        yield server
        return
    from .simulator import Simulator

    with (
        tempfile.TemporaryDirectory(prefix="comfynb-sim-") as root,
        Simulator(root=root, step_seconds=0.005) as sim,
    ):
        yield sim.url


def _run(client: Any, prompt: dict[str, Any], out: Path, *, label: str) -> list[Path]:
    queued = client.queue_prompt(prompt)
    for event in client.events(prompt_ids=[queued.prompt_id]):
        kind = type(event).__name__
        if kind == "Progress" and sys.stdout.isatty():
            print(f"\r{label:20} step {event.value:3}/{event.max}", end="", flush=True)
        elif kind in ("ExecutionSuccess", "ExecutionError", "ExecutionInterrupted"):
            break
    report = client.job(queued.prompt_id)
    print(f"\r{label:20} {report.status.value:10}")
    return [client.download(ref, out) for ref in report.outputs]


def _describe(path: Path) -> str:
    with Image.open(path) as image:
        size = f"{image.width}x{image.height}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name:40} {size:>9} {digest:>14}"


def _mean_difference(a: Path, b: Path) -> float:
    with Image.open(a) as first, Image.open(b) as second:
        small_a = first.convert("L").resize((64, 64))
        small_b = second.convert("L").resize((64, 64))
    pixels = zip(small_a.tobytes(), small_b.tobytes(), strict=True)
    return sum(abs(x - y) for x, y in pixels) / (64 * 64)
