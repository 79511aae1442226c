"""Sweep throughput: 10,000 combinations enqueued as one step (jobs/s), beside enqueue_many.

    python bench/sweep.py [--combinations 10000] [--repeat 3]

Prints, for the default txt2img graph (ComfyUI's, 7 nodes): ``comfynb.sweep`` over a
100 x 100 grid of cfg x seed with the values checked against /object_info 0.33.0, the same
without object_info, and ``enqueue_many`` of 10,000 prepared dicts with no params (the
floor: checks, JSON and the insert), all into a fresh run of a local store; medians.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import comfynb
from comfynb import Store, Workflow
from comfynb.demo import txt2img

DATA = Path(__file__).parent.parent / "tests" / "data" / "object_info_0.33.0.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combinations", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    side = int(options.combinations**0.5)
    n = side * side
    info = json.loads(gzip.decompress(DATA.read_bytes()))
    checked = Workflow.load(txt2img(0), object_info=info)
    plain = Workflow.load(txt2img(0))
    grid = {"KSampler.cfg": [1 + i * 0.05 for i in range(side)], "KSampler.seed": range(side)}
    prepared = []
    for cfg in grid["KSampler.cfg"]:
        for seed in grid["KSampler.seed"]:
            graph = txt2img(seed)
            graph["3"]["inputs"]["cfg"] = cfg
            prepared.append(graph)
    ways = {
        "sweep, values checked with object_info": lambda s, r: comfynb.sweep(
            s, checked, grid, run=r
        ),
        "sweep, no object_info": lambda s, r: comfynb.sweep(s, plain, grid, run=r),
        "enqueue_many of prepared dicts, no params": lambda s, r: comfynb.enqueue_many(
            s, prepared, run=r
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "b.duckdb") as store:
        for i in range(options.repeat):
            for name, way in ways.items():
                run = store.new_run(f"{name} {i}")
                started = time.perf_counter()
                jobs = way(store, run)
                times[name].append(time.perf_counter() - started)
                assert len(jobs) == n
    floor = statistics.median(times["enqueue_many of prepared dicts, no params"])
    print(f"{n} combinations ({side} x {side}), medians of {options.repeat}")
    print(f"{'way':<45} {'seconds':>8} {'jobs/s':>9} {'vs floor':>9}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<45} {median:8.3f} {n / median:9,.0f} {median / floor:8.2f}x")


if __name__ == "__main__":
    main()
