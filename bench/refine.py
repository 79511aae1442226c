"""Refining: what ``comfynb.refine`` costs, and how many uploads a worker makes for its children.

Run: ``python bench/refine.py [--children 8] [--calls 20]``. Prints its figures.

One small txt2img candidate (the shipped example, 64x64, 3 steps) is made on the embedded
simulator; then ``--calls`` refines of ``--children`` children each are queued (each a new
step and its jobs in one transaction: the median call is printed), and one worker runs them
all, counting the uploads of the candidate's image (one per server is the promise).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import comfynb
from comfynb import Worker, Workflow
from comfynb.client import Client
from comfynb.simulator import Simulator
from comfynb.store import Store

SMALL = {"KSampler.steps": 3, "Empty Latent Image.width": 64, "Empty Latent Image.height": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    uploads = 0
    real = Client.upload_image

    def counted(self: Client, *a: Any, **k: Any) -> Any:
        nonlocal uploads
        uploads += 1
        return real(self, *a, **k)

    Client.upload_image = counted  # type: ignore[method-assign]
    with (
        tempfile.TemporaryDirectory() as folder,
        Simulator(root=Path(folder) / "sim") as sim,
        Store.open(Path(folder) / "lab.duckdb", output_dir=Path(folder) / "out") as store,
    ):
        run = store.new_run("bench")
        params = {**SMALL, "KSampler.seed": 1}
        job = comfynb.enqueue(store, Workflow.example("txt2img"), run=run, params=params)
        Worker(store, [sim.url]).run()
        root = int(store.candidates(job=job)["id"][0])
        seconds = []
        for _ in range(args.calls):
            started = time.perf_counter()
            comfynb.refine(store, root, params=[{"KSampler.seed": s} for s in range(args.children)])
            seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        summary = Worker(store, [sim.url]).run()
        elapsed = time.perf_counter() - started
    print(
        f"refine of {args.children} children: median {statistics.median(seconds) * 1000:.1f} ms "
        f"({args.calls} calls)"
    )
    print(
        f"one worker ran {summary.completed} children in {elapsed:.2f} s on the simulator; "
        f"uploads of the candidate's image: {uploads}"
    )


if __name__ == "__main__":
    main()
