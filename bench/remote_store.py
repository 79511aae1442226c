"""A notebook's calls through a ``comfynb worker`` process, against the same calls on the file.

Run: ``python bench/remote_store.py [--jobs 1000] [--rounds 50]``. Prints its figures.

A store gets ``--jobs`` trivial jobs, run to completion by ``comfynb worker --until-idle`` on an
embedded simulator (so there are as many candidates and 4 events per job). Then each call is
timed ``--rounds`` times twice: on the file opened in this process (``Store``), and through a
running ``comfynb worker`` process that owns the file (``RemoteStore``, over loopback HTTP:
Arrow IPC for DataFrames, JSON for dataclasses). Medians, and remote / local as a ratio.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfynb
from comfynb.service.remote import RemoteStore, find_endpoint
from comfynb.simulator import Simulator
from comfynb.store import Store


def trivial_prompt(index: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": index},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }


def median_ms(call: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def calls(store: Any, job_id: int, candidate_id: int) -> dict[str, Callable[[], Any]]:
    return {
        "job(id)": lambda: store.job(job_id),
        "candidate(id)": lambda: store.candidate(candidate_id),
        "status_counts()": lambda: store.status_counts(run="bench"),
        "jobs()": lambda: store.jobs(),
        "candidates()": lambda: store.candidates(),
        "events()": lambda: store.events(),
        "pick(id)": lambda: store.pick(candidate_id),
        "enqueue": lambda: comfynb.enqueue(store, trivial_prompt(0), run="extra"),
        "enqueue_many x100": lambda: comfynb.enqueue_many(
            store, [trivial_prompt(i) for i in range(100)], run="extra"
        ),
    }


def worker(db: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db), "--server", url]
    return subprocess.Popen([*args, *extra], stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, Simulator(root=Path(folder) / "sim") as sim:
        db = Path(folder) / "lab.duckdb"
        with Store.open(db) as store:
            store.new_run("bench")
            store.new_run("extra")
            for i in range(options.jobs):
                comfynb.enqueue(store, trivial_prompt(i), run="bench", params={"1.color": i})
        started = time.perf_counter()
        assert worker(db, sim.url, "--until-idle").wait() == 0
        print(f"{options.jobs} jobs run by comfynb worker: {time.perf_counter() - started:.1f} s")

        with Store.open(db) as store:
            job_id = int(store.jobs()["id"].iloc[-1])
            candidate_id = int(store.candidates()["id"].iloc[-1])
            local = {
                k: median_ms(c, options.rounds)
                for k, c in calls(store, job_id, candidate_id).items()
            }

        process = worker(db, sim.url)
        try:
            deadline = time.monotonic() + 30
            while find_endpoint(db) is None:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
            with comfynb.open(db) as remote:
                assert isinstance(remote, RemoteStore)
                there = {
                    k: median_ms(c, options.rounds)
                    for k, c in calls(remote, job_id, candidate_id).items()
                }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)

    print(
        f"{'call':<18}{'local ms':>10}{'remote ms':>11}{'ratio':>8}   ({options.rounds} rounds, medians)"
    )
    for name in local:
        print(
            f"{name:<18}{local[name]:>10.2f}{there[name]:>11.2f}{there[name] / local[name]:>8.2f}"
        )


if __name__ == "__main__":
    main()
