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
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .jobs import enqueue, refine
from .workflows.workflow import Workflow

DEFAULT_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"

# ComfyUI's default txt2img graph (the frontend's classic default workflow), in API format: the
# one comfynb ships (``comfynb.Workflow.example("txt2img")``), saving as "demo".
TXT2IMG: dict[str, Any] = Workflow.example("txt2img").to_api()
TXT2IMG["9"]["inputs"]["filename_prefix"] = "demo"


def txt2img(
    seed: int,
    *,
    steps: int = 20,
    prompt: str | None = None,
    size: int = 512,
    sampler: str = "euler",
    checkpoint: str = DEFAULT_CHECKPOINT,
    prefix: str = "demo",
) -> dict[str, Any]:
    """Return ComfyUI's default txt2img graph (API format) with the given inputs.

    Example::

        >>> graph = txt2img(42, steps=8, size=64)
        >>> graph["3"]["inputs"]["seed"], graph["5"]["inputs"]["width"]
        (42, 64)
    """
    graph = copy.deepcopy(TXT2IMG)
    graph["3"]["inputs"].update(seed=seed, steps=steps, sampler_name=sampler)
    graph["4"]["inputs"]["ckpt_name"] = checkpoint
    graph["5"]["inputs"].update(width=size, height=size)
    graph["9"]["inputs"]["filename_prefix"] = prefix
    if prompt is not None:
        graph["6"]["inputs"]["text"] = prompt
    return graph


def run_demo(*, out_dir: str | Path, server: str | None = None, steps: int = 20) -> int:
    """Run the demo and print what it did; returns the exit code (0 on success).

    A seed sweep of the default txt2img graph goes through a store (``demo.duckdb`` in
    ``out_dir``) and a worker; the first image is picked and refined (img2img) into a child.
    """
    from .client import Client
    from .store import Store
    from .views.wait import wait
    from .worker.loop import Worker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _server_url(server) as url, Client(url) as client:
        print(f"ComfyUI {client.system_stats().comfyui_version} at {url}")
        store = Store.open(out / "demo.duckdb", output_dir=out / "outputs")
        try:
            run = store.new_run(f"demo {len(store.runs()) + 1}", notes="seed sweep, then a refine")
            graph = txt2img(0, steps=steps)
            worker = Worker(store, servers=[url]).start()
            try:
                sweep = [
                    enqueue(store, graph, run=run, params={"KSampler.seed": seed})
                    for seed in (1, 2, 3)
                ]
                print(f"txt2img, seeds 1-3: {_summary(wait(store, sweep))}")
                first = int(store.candidates(run=run)["id"].iloc[0])
                store.pick(first)
                # its own workflow, img2img from its image (the worker uploads it)
                children = refine(store, first, params={"KSampler.seed": 7}, denoise=0.5)
                print(f"img2img of candidate {first}: {_summary(wait(store, children))}")
            finally:
                worker.stop()
            _report(store, run)
        finally:
            store.close()
    return 0


def _summary(summary: Any) -> str:
    return f"{summary.done} done, {summary.failed} failed in {summary.seconds:.1f} s"


def _report(store: Any, run: Any) -> None:
    frame = store.candidates(run=run)
    print()
    print(
        frame[["id", "job_id", "parent_candidate_id", "seed", "width", "picked", "path"]].to_string(
            index=False
        )
    )
    source, child = (store.image_path(i) for i in (frame["id"].iloc[0], frame["id"].iloc[-1]))
    other = store.image_path(frame["id"].iloc[1])
    print(
        f"\nthe refined image differs from its source by {_mean_difference(source, child):.1f},"
        f" another seed by {_mean_difference(source, other):.1f} (0 = identical, 255 = opposite)"
    )
    print(f"store: {store.path}  images: {store.output_dir}")


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


def _mean_difference(a: Path, b: Path) -> float:
    with Image.open(a) as first, Image.open(b) as second:
        small_a = first.convert("L").resize((64, 64))
        small_b = second.convert("L").resize((64, 64))
    pixels = zip(small_a.tobytes(), small_b.tobytes(), strict=True)
    return sum(abs(x - y) for x, y in pixels) / (64 * 64)
