"""Queueing many jobs: ``enqueue_many`` against single ``enqueue`` calls and a raw DuckDB insert.

Run: ``python bench/enqueue.py [--jobs 10000] [--singles 1000] [--repeat 3]``. Prints its figures.

Each way queues ``--jobs`` txt2img workflows (7 nodes, ~740 bytes of JSON each) with a
``{"KSampler.seed": i}`` param into a fresh run:

* ``enqueue_many`` on a local store (the file opened here), and through a ``comfynb worker``
  process that owns the file (``RemoteStore``: one request). The worker's only server is down,
  so it claims nothing and the figure is the queueing alone; ``--live`` gives it a simulator,
  and it claims and posts the jobs as they arrive (the notebook beside a busy worker).
* single ``comfynb.enqueue`` calls, local and through the worker: ``--singles`` of them, the
  rate extrapolated to ``--jobs`` (a call costs the same whatever the table holds).
* a raw DuckDB ``INSERT ... SELECT`` of the same rows on a connection of its own, the JSON
  texts made beforehand: no checks, no secrets stripped, no records made. Two forms: lists
  bound as parameters and unnested (what ``Store.add_jobs`` does) and an Arrow table.

Medians of ``--repeat`` runs; compare the ratios in one run, not figures across runs (the
machine's figures vary by up to +-40%, ``duckdb-facts.md``).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import comfynb
from comfynb.core.jsonio import to_json
from comfynb.service.remote import RemoteStore, find_endpoint
from comfynb.store import MIGRATIONS, Store
from comfynb.workflows.check import check_workflow


def txt2img(seed: int) -> dict[str, Any]:
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": 20,
                "cfg": 7.5,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a portrait of a cat, oil painting", "clip": ["4", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
        },
    }


def median_seconds(run: Callable[[int], Any], repeat: int) -> float:
    """The median time of ``run(i)`` over ``repeat`` runs (each gets its own run name)."""
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        run(i)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def worker(db: Path, url: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db), "--server", url]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while find_endpoint(db) is None:
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the comfynb worker did not start")
        time.sleep(0.02)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def raw_inserts(
    folder: Path, workflows: list[str], params: list[str], repeat: int
) -> dict[str, float]:
    """A bare connection's ``INSERT ... SELECT`` of the same rows, texts made beforehand."""
    con = duckdb.connect(str(folder / "raw.duckdb"))
    for statement in MIGRATIONS[0].statements:
        con.execute(statement)
    con.execute("INSERT INTO runs (name) VALUES ('raw')")
    columns = "INSERT INTO jobs (run_id, priority, max_retries, metadata, workflow, params)"

    def unnested(_: int) -> None:
        con.execute("BEGIN")
        con.execute(
            f"{columns} SELECT 1, 0, 3, '{{}}', unnest(?::VARCHAR[])::JSON, "
            "unnest(?::VARCHAR[])::JSON RETURNING id",
            [workflows, params],
        ).fetchall()
        con.execute("COMMIT")

    def arrow(_: int) -> None:
        table = pa.table({"workflow": workflows, "params": params})
        con.execute("BEGIN")
        con.register("new_jobs", table)
        con.execute(
            f"{columns} SELECT 1, 0, 3, '{{}}', workflow::JSON, params::JSON FROM new_jobs "
            "RETURNING id"
        ).fetchall()
        con.unregister("new_jobs")
        con.execute("COMMIT")

    try:
        return {
            "raw INSERT ... SELECT unnest(lists)": median_seconds(unnested, repeat),
            "raw INSERT ... SELECT FROM arrow": median_seconds(arrow, repeat),
        }
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=1000, help="single enqueue calls timed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="the worker runs on a simulator")
    options = parser.parse_args()
    n, singles, repeat = options.jobs, min(options.singles, options.jobs), options.repeat
    workflows = [txt2img(i) for i in range(n)]
    params = [{"KSampler.seed": i} for i in range(n)]
    seconds: dict[str, float] = {}  # the time of n jobs, each way

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with Store.open(folder / "local.duckdb") as store:
            seconds["enqueue_many, local store"] = median_seconds(
                lambda i: comfynb.enqueue_many(
                    store, workflows, run=store.new_run(f"many{i}"), params=params
                ),
                repeat,
            )
            store.new_run("single")
            seconds["enqueue x1 (single calls), local store"] = (
                median_seconds(
                    lambda i: [
                        comfynb.enqueue(store, workflows[j], run="single", params=params[j])
                        for j in range(singles)
                    ],
                    1,
                )
                * n
                / singles
            )
            # the two halves of enqueue_many: the checks and JSON texts, then the store
            texts = [to_json(w, "workflow") or "" for w in workflows]
            param_texts = [to_json(p, "params") for p in params]
            seconds["  of which: checks + JSON texts"] = median_seconds(
                lambda i: [
                    (check_workflow(w), to_json(w, "workflow"), to_json(p, "params"))
                    for w, p in zip(workflows, params, strict=True)
                ],
                repeat,
            )
            seconds["  of which: store.add_jobs"] = median_seconds(
                lambda i: store.add_jobs(
                    texts, run=store.new_run(f"add{i}"), params_json=param_texts
                ),
                repeat,
            )
        raw = raw_inserts(folder, texts, [t or "{}" for t in param_texts], repeat)

        server = "http://127.0.0.1:9"  # nothing listens: the worker waits for its server
        simulator = None
        if options.live:
            from comfynb.simulator import Simulator

            simulator = Simulator(root=folder / "sim").__enter__()
            server = simulator.url
        try:
            db = folder / "remote.duckdb"
            with Store.open(db) as store:
                store.new_run("single")
            process = worker(db, server)
            try:
                with comfynb.open(db) as remote:
                    assert isinstance(remote, RemoteStore)
                    seconds["enqueue_many, through comfynb worker"] = median_seconds(
                        lambda i: comfynb.enqueue_many(
                            remote, workflows, run=remote.new_run(f"many{i}"), params=params
                        ),
                        repeat,
                    )
                    seconds["enqueue x1 (single calls), through comfynb worker"] = (
                        median_seconds(
                            lambda i: [
                                comfynb.enqueue(
                                    remote, workflows[j], run="single", params=params[j]
                                )
                                for j in range(singles)
                            ],
                            1,
                        )
                        * n
                        / singles
                    )
            finally:
                stop(process)
        finally:
            if simulator is not None:
                simulator.__exit__(None, None, None)
    seconds.update(raw)

    size = len(json.dumps(workflows[0], separators=(",", ":")))
    worker_state = "busy on a simulator" if options.live else "its server down: idle"
    print(
        f"{n} jobs ({size}-byte workflows), medians of {repeat}; single calls: {singles} timed, "
        f"extrapolated; the worker: {worker_state}"
    )
    base = seconds["enqueue_many, local store"]
    print(f"{'way':<52}{'seconds':>9}{'jobs/s':>10}{'vs enqueue_many':>17}")
    for way, taken in seconds.items():
        print(f"{way:<52}{taken:>9.3f}{n / taken:>10,.0f}{taken / base:>16.2f}x")


if __name__ == "__main__":
    main()
