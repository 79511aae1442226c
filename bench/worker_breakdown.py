"""Where the worker's time goes: its loop, its recorder (the store) and its downloads.

Run: ``python bench/worker_breakdown.py [--jobs 1000] [--depth 2 8]``.

The same trivial jobs as ``worker_throughput.py`` (simulator in a process of its own). The
loop, the recorder and the download pool run on threads of their own, side by side; each
figure is the busy time of one of them per job (a bench-only instrument wraps one method):

* loop: posts (``POST /prompt``), waiting for events (nothing to do), and the rest of a round;
* recorder: its commits (every DuckDB statement of the worker's moves, claims and candidates),
  how many, and jobs per commit;
* downloads: collecting finished jobs' images (HTTP ``/view``, check, file, digest), on 4
  threads;
* store statements run by the loop itself (polling, recover; few).
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
from comfynb._recorder import Recorder
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
    timed(Recorder, "_record", "commits")
    timed(worker_module.Worker, "_fetch_result", "downloads")
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
            print(
                f"  loop: {CALLS['rounds']} rounds; per job: posts {ms(SPENT['posts'], n)}, "
                f"waiting {ms(SPENT['waiting'], n)}, rest of the round "
                f"{ms(SPENT['rounds'] - SPENT['posts'] - SPENT['waiting'], n)}"
            )
            commits = CALLS["commits"]
            print(
                f"  recorder: {commits} commits, {n / max(commits, 1):.1f} jobs per commit, "
                f"{ms(SPENT['commits'], n)} per job, {SPENT['commits'] / total * 100:.0f} % busy"
            )
            print(
                f"  downloads: {ms(SPENT['downloads'], n)} per job (summed over the pool's threads)"
            )
            print(f"  store statements, all threads: {CALLS['store'] / n:.1f} per job")


def ms(seconds: float, n: int) -> str:
    return f"{seconds / n * 1000:.2f} ms"


if __name__ == "__main__":
    main()
