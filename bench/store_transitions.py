"""Store transitions per second: enqueue, claim, complete with 4 candidates; single vs batched.

Run: ``python bench/store_transitions.py [--jobs 600] [--batch 100]``. Prints its figures.

Each phase works on ``--jobs`` jobs in a fresh DuckDB file under a temporary folder:

- enqueue: ``comfynb.enqueue`` one job at a time (one transaction each);
- claim: ``select_next_job`` until the queue is empty (one atomic UPDATE each);
- complete: per job ``transition(submitted)``, then ``record_result`` with 4 candidates
  (candidates, parent ``child_count`` and status in ONE transaction);

first on one thread, then again while a second thread reads DataFrames (``store.jobs()``,
``store.candidates()``) in a loop, as a notebook cell would beside a worker thread.

Then claim, ``pending -> submitted`` and complete-with-4-candidates once per job
(``select_next_job``, ``transition``, ``record_result``) and for ``--batch`` jobs per
transaction (``select_next_jobs``, ``transition_many``, ``record_results``): the ratio is
what batching buys.
DuckDB costs ~0.25 ms per statement here (``/work/shared/recipes/duckdb-facts.md``), so
figures are bounded by statements per operation, not by the disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfynb
from comfynb import Store, enqueue, select_next_job
from comfynb.core.models import NewCandidate
from comfynb.core.status import JobStatus
from comfynb.jobs import record_result, record_results, select_next_jobs
from comfynb.store.lifecycle import transition, transition_many

WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
}


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f}/s  ({seconds * 1000 / n:6.2f} ms each)"


def timed(label: str, n: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    print(f"  {label:<48} {rate(n, seconds)}")
    return n / seconds


def lifecycle_phases(store: Store, jobs: int, run: str) -> dict[str, float]:
    """Enqueue, claim and complete ``jobs`` jobs; returns operations per second by phase."""
    parent = _a_parent(store, run)
    ids: list[int] = []

    def do_enqueue() -> None:
        for i in range(jobs):
            ids.append(
                enqueue(store, WORKFLOW, run=run, params={"1.width": i % 64 + 1}, parent=parent).id
            )

    def do_claim() -> None:
        while select_next_job(store, server="http://gpu:8188") is not None:
            pass

    def do_complete() -> None:
        for job_id in ids:
            transition(store, job_id, JobStatus.SUBMITTED)
            images = [NewCandidate("2", f"{run}/{job_id}_{k}.png", width=64) for k in range(4)]
            record_result(store, job_id, images)

    return {
        "enqueue": timed("enqueue (1 job per transaction)", jobs, do_enqueue),
        "claim": timed("claim (select_next_job)", jobs, do_claim),
        "complete": timed("submit + complete with 4 candidates", jobs, do_complete),
    }


def _a_parent(store: Store, run: str) -> int:
    """A candidate to refine from, so completing bumps a parent's child_count as refines do."""
    seed = enqueue(store, WORKFLOW, run=store.new_run(run))
    transition(store, seed.id, JobStatus.SUBMITTED)
    return record_result(store, seed.id, [NewCandidate("2", f"{run}/root.png")])[0].id


def with_reader(store: Store, jobs: int) -> tuple[dict[str, float], float]:
    """The phases again while another thread reads DataFrames; returns (rates, reads/s)."""
    stop = threading.Event()
    reads: list[float] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                start = time.perf_counter()
                store.jobs()
                store.candidates()
                reads.append(time.perf_counter() - start)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        rates = lifecycle_phases(store, jobs, "with-reader")
    finally:
        stop.set()
        reader.join()
    if errors:
        raise errors[0]
    per_read = statistics.median(reads)
    print(f"  reader: {len(reads)} reads of jobs()+candidates(), median {per_read * 1000:.1f} ms")
    return rates, len(reads)


def single_vs_batched(store: Store, jobs: int, batch: int) -> dict[str, float]:
    """Each operation one job at a time vs ``batch`` jobs per transaction; returns the ratios."""
    run = store.new_run("moves")
    single = [enqueue(store, WORKFLOW, run=run).id for _ in range(jobs)]
    batched = [enqueue(store, WORKFLOW, run=run).id for _ in range(jobs)]
    chunks = [batched[i : i + batch] for i in range(0, len(batched), batch)]
    ratios = {}

    def pair(label: str, one: Callable[[], None], many: Callable[[], None]) -> None:
        a = timed(f"{label}: one by one", jobs, one)
        b = timed(f"{label}: {batch} per transaction", jobs, many)
        ratios[label] = b / a
        print(f"  {label}: batched / single {b / a:.1f}x")

    def claim_one() -> None:
        for _ in single:
            select_next_job(store)

    def claim_many() -> None:
        for _ in chunks:
            select_next_jobs(store, batch)

    def move_one() -> None:
        for job_id in single:
            transition(store, job_id, JobStatus.SUBMITTED)

    def move_many() -> None:
        for chunk in chunks:
            transition_many(store, [(j, JobStatus.SUBMITTED) for j in chunk])

    def images(job_id: int) -> list[NewCandidate]:
        return [NewCandidate("2", f"moves/{job_id}_{k}.png") for k in range(4)]

    def complete_one() -> None:
        for job_id in single:
            record_result(store, job_id, images(job_id))

    def complete_many() -> None:
        for chunk in chunks:
            record_results(store, {j: images(j) for j in chunk})

    pair("claim", claim_one, claim_many)
    pair("pending -> submitted", move_one, move_many)
    pair("complete with 4 candidates", complete_one, complete_many)
    assert len(store.jobs(run=run, status="completed")) == 2 * jobs
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        comfynb.open(Path(folder) / "bench.duckdb", output_dir=Path(folder) / "out") as store,
    ):
        print(f"{args.jobs} jobs, DuckDB file under {folder}")
        print("single thread:")
        alone = lifecycle_phases(store, args.jobs, "alone")
        print("with a reader thread reading DataFrames:")
        beside, _ = with_reader(store, args.jobs)
        for phase in alone:
            print(f"  {phase}: {beside[phase] / alone[phase]:.2f}x the single-thread rate")
        print("single-row vs batched transitions:")
        single_vs_batched(store, args.jobs, args.batch)


if __name__ == "__main__":
    main()
