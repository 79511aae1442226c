"""Lifecycle end to end on the simulator: jobs per second, and where the time goes.

Run: ``python bench/lifecycle.py [--jobs 200]``. Prints its figures.

Each phase uses a fresh store and a fresh in-process simulator (ComfyUI 0.33.0 behaviour,
trivial 16x16 prompts, each with its own color so nothing is cached):

- one at a time: ``enqueue``, ``submit_job``, then ``poll_job_status`` until completed (the
  poll downloads the image and completes the job), as a notebook cell would;
- worker: ``select_next_job`` + ``submit_job`` for every job, wait on the WebSocket for all,
  then ``poll_job_status`` each, as ``tests/crash_worker.py`` does;
- the pieces, per job: ``submit_job`` of an unclaimed job (record_intent, POST, transition) vs
  of a claimed one (which first asks the server whether its prompt_id already arrived), and
  ``process_job_result`` (GET the job, download, check, one transaction).
- ``recover`` of a store with every job of the worker phase still submitted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfynb
from comfynb import (
    Client,
    RetryPolicy,
    Store,
    enqueue,
    poll_job_status,
    process_job_result,
    recover,
    select_next_job,
    submit_job,
)
from comfynb.simulator import Simulator

RETRY = RetryPolicy(attempts=4, base=0.01, max_delay=0.05)


def workflow(i: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": i},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }


def timed(label: str, n: int, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    print(f"{label:<58} {n / seconds:8.1f} jobs/s   {1000 * seconds / n:7.2f} ms/job")
    return seconds


def one_at_a_time(store: Store, client: Client, n: int) -> None:
    run = store.new_run("one")
    for i in range(n):
        job = submit_job(store, client, enqueue(store, workflow(i), run=run))
        while not job.status.is_terminal:
            job = poll_job_status(store, client, job)
        assert job.status.value == "completed"


def worker(store: Store, client: Client) -> None:
    while (job := select_next_job(store, server=client.url)) is not None:
        submit_job(store, client, job)
    waiting = [job.prompt_id for job in store.unsettled_jobs() if job.prompt_id]
    with client.events(waiting) as events:
        for _ in events:
            pass
    for job in store.unsettled_jobs():
        poll_job_status(store, client, job)


def pieces(store: Store, client: Client, n: int) -> None:
    run = store.new_run("pieces")
    unclaimed = [enqueue(store, workflow(10_000 + i), run=run) for i in range(n)]
    submit = timed(
        "submit_job, unclaimed (intent, POST, transition)",
        n,
        lambda: [submit_job(store, client, job) for job in unclaimed],
    )
    claimed_jobs = []
    for i in range(n):
        enqueue(store, workflow(20_000 + i), run=run)
    while (job := select_next_job(store, server=client.url)) is not None:
        claimed_jobs.append(job)
    claimed = timed(
        "submit_job, claimed (asks the server first)",
        n,
        lambda: [submit_job(store, client, job) for job in claimed_jobs],
    )
    print(f"{'  the arrival check costs':<58} {1000 * (claimed - submit) / n:+7.2f} ms/job")
    everything = unclaimed + claimed_jobs
    deadline = time.monotonic() + 60
    while any(not client.job(job.prompt_id or "").status.is_terminal for job in everything[-5:]):
        assert time.monotonic() < deadline
    timed(
        "process_job_result (GET, download, check, 1 transaction)",
        len(everything),
        lambda: [process_job_result(store, client, job) for job in everything],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    n = parser.parse_args().jobs
    print(f"{n} trivial jobs per phase, simulator in-process (0.33.0), sync Client\n")
    for phase in ("one at a time", "worker", "pieces", "recover"):
        with (
            tempfile.TemporaryDirectory() as tmp,
            Simulator(root=Path(tmp) / "sim") as sim,
            comfynb.open(Path(tmp) / "lab.duckdb") as store,
            Client(sim.url, retry=RETRY) as client,
        ):
            if phase == "one at a time":
                timed("one at a time: enqueue, submit, poll until completed", n,
                      lambda: one_at_a_time(store, client, n))  # fmt: skip
            elif phase == "worker":
                run = store.new_run("w")
                for i in range(n):
                    enqueue(store, workflow(i), run=run)
                timed("worker: claim+submit all, wait on WS, poll each", n,
                      lambda: worker(store, client))  # fmt: skip
            elif phase == "pieces":
                pieces(store, client, n)
            else:
                run = store.new_run("r")
                for i in range(n):
                    enqueue(store, workflow(i), run=run)
                while (job := select_next_job(store, server=client.url)) is not None:
                    submit_job(store, client, job)
                last = store.unsettled_jobs()[-1].prompt_id or ""
                deadline = time.monotonic() + 60
                while not client.job(last).status.is_terminal:
                    assert time.monotonic() < deadline
                start = time.perf_counter()
                summary = recover(store, client)
                seconds = time.perf_counter() - start
                assert len(summary.completed) == n
                print(f"{'recover: every job submitted, finished on the server':<58} "
                      f"{n / seconds:8.1f} jobs/s   {1000 * seconds / n:7.2f} ms/job")  # fmt: skip


if __name__ == "__main__":
    main()
