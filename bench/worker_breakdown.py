"""Where the worker's time goes: per job, in the store, downloads, posts, waiting.

Run: ``python bench/worker_breakdown.py [--jobs 1000] [--depth 2 8]``.

The same trivial jobs as ``worker_throughput.py`` (simulator in a process of its own). Each part
is timed by wrapping one method of the worker's loop (a bench-only instrument):

* store: every DuckDB statement the loop runs, BEGIN and COMMIT included (``Store._execute``);
* downloads: collecting finished jobs' images (HTTP ``/view``, temp file, fsync, decode check,
  rename, digest), on 4 threads;
* posts: ``POST /prompt`` of each job;
* waiting: blocked on the event queue (nothing to do: the servers are busy);
* rounds: how many, and jobs per round.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_throughput import simulators, trivial

import comfynb
from comfynb import worker as worker_module
from comfynb.store import Store

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--depth", type=int, nargs="*", default=[2, 8])
    args = parser.parse_args()
    timed(Store, "_execute", "store")
    timed(worker_module.Worker, "_collect", "downloads")
    timed(worker_module.Worker, "_post", "posts")
    timed(worker_module.Worker, "_drain", "waiting")
    timed(worker_module.Worker, "_step", "rounds")
    with tempfile.TemporaryDirectory() as tmp, simulators(1, Path(tmp)) as urls:
        for depth in args.depth:
            SPENT.clear()
            CALLS.clear()
            folder = Path(tmp) / f"d{depth}"
            folder.mkdir()
            with Store.open(folder / "lab.duckdb", output_dir=folder / "out") as store:
                store.new_run("bench")
                with store.transaction():
                    for index in range(args.jobs):
                        comfynb.enqueue(store, trivial(depth * 1_000_000 + index), run="bench")
                SPENT.clear()
                CALLS.clear()
                started = time.perf_counter()
                comfynb.Worker(store, urls, target_depth=depth).run()
                total = time.perf_counter() - started
            n = args.jobs
            print(f"target_depth={depth}: {n / total:.0f} jobs/s, {total / n * 1000:.2f} ms/job")
            rounds = CALLS["rounds"]
            print(f"  rounds: {rounds}, {n / rounds:.1f} jobs per round")
            for label in ("store", "downloads", "posts", "waiting"):
                share = SPENT[label] / total * 100
                print(f"  {label:9s} {SPENT[label] / n * 1000:5.2f} ms/job ({share:4.1f} %)")
            other = total - sum(SPENT[k] for k in ("store", "downloads", "posts", "waiting"))
            print(f"  {'other':9s} {other / n * 1000:5.2f} ms/job ({other / total * 100:4.1f} %)")


if __name__ == "__main__":
    main()
