"""One poison job among good ones: where the worker stops it, how it ends, and how soon.

Run: ``python bench/poison.py [--good 10]``.

For each case a fresh store and simulator: ``--good`` good jobs (trivial prompts, each its
own) and one poison job written past ``enqueue``'s checks (``store.add_jobs`` with a hand-made
JSON text: a store written by an older version, or by hand). A real ``Worker`` runs until idle
(the "after a restart" cases first leave the poison job where a crash would: claimed, or
finished on the server and not collected, so that the worker's ``recover`` meets it). Time to
end: from the worker's start to the poison job's ``finished_at``. Every good job must complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comfynb import Client, Worker, enqueue, select_next_job, submit_job
from comfynb.simulator import Simulator
from comfynb.store import Store


def trivial(prefix: str, color: Any) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def text(prefix: str = "poison", color: str = "7") -> str:
    """A trivial prompt's JSON text with ``color`` as raw JSON (``NaN``...)."""
    return json.dumps(trivial(prefix, "@C@")).replace('"@C@"', color)


def add(store: Store, workflow: str, params: dict[str, Any] | None = None) -> int:
    return store.add_jobs([workflow], run="r", params_json=[json.dumps(params or {})]).ids[0]


def finish_before_a_crash(store: Store, sim: Simulator, job_id: int) -> None:
    """Post it and let it finish on the server, as a worker killed before collecting it."""
    with Client(sim.url) as client:
        claimed = select_next_job(store, server=sim.url)
        assert claimed is not None and claimed.id == job_id
        posted = submit_job(store, client, claimed)
        deadline = time.monotonic() + 10
        while not client.job(posted.prompt_id or "").status.is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.01)


@dataclass(frozen=True)
class Case:
    name: str
    stopped: str  # where the worker stops it
    make: Callable[[Store, Simulator], int]  # writes the poison job, returns its id


def claim_it(store: Store, sim: Simulator, job_id: int) -> int:
    claimed = select_next_job(store, server=sim.url)  # a crash left it claimed, maybe posted
    assert claimed is not None and claimed.id == job_id
    return job_id


def lone_surrogate(store: Store, sim: Simulator) -> int:
    sim.set_faults(fail_node={"node_id": "1", "message": "cannot read 'in\udcffput.png'"})
    return add(store, text("surrogate", "31"))


def newline_after_crash(store: Store, sim: Simulator) -> int:
    job_id = add(store, text("crash\nname", "41"))
    finish_before_a_crash(store, sim, job_id)
    return job_id


CASES = [
    Case(
        "NaN in an input", "post (jobs.submit.unsendable)", lambda s, _: add(s, text(color="NaN"))
    ),
    Case(
        "NaN, claimed before a crash",
        "recover -> post (unsendable)",
        lambda s, sim: claim_it(s, sim, add(s, text(color="NaN"))),
    ),
    Case("Infinity in an input", "post (unsendable)", lambda s, _: add(s, text(color="Infinity"))),
    Case("workflow not an API prompt", "claim -> placing (unsendable)", lambda s, _: add(s, "[1]")),
    Case(
        "params seed = 2**70",
        "recording: the candidate row refused, job alone",
        lambda s, _: add(s, text(color="11"), {"seed": 2**70}),
    ),
    Case(
        "filename_prefix of 240 chars",
        "download (short temp name)",
        lambda s, _: add(s, text("p" * 240, "12")),
    ),
    Case(
        "file name with a newline",
        "download, 3 strikes, server up",
        lambda s, _: add(s, text("bad\nname", "13")),
    ),
    Case("  ... finished before a crash", "recover (in progress) -> strikes", newline_after_crash),
    Case("lone surrogate in a node error", "poll -> failed move refused: alone", lone_surrogate),
]


@dataclass(frozen=True)
class Row:
    case: str
    stopped: str
    end: str
    seconds: float
    good: str


def run_case(case: Case, good: int, root: Path) -> Row:
    with Simulator(root=root / "sim") as sim, Store.open(root / "lab.duckdb") as store:
        store.new_run("r")
        job_id = case.make(store, sim)
        ids = [enqueue(store, trivial(f"g{i}", 1000 + i), run="r").id for i in range(good)]
        started = datetime.now(UTC)
        Worker(store, [sim.url]).run()
        job = store.job(job_id)
        done = sum(store.job(i).status.value == "completed" for i in ids)
        seconds = (job.finished_at - started).total_seconds() if job.finished_at else float("nan")
        end = job.status.value
        if job.error is not None:
            end += f" ({job.error.get('type')})"
        return Row(case.name, case.stopped, end, seconds, f"{done}/{good}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=10, help="good jobs around each poison one")
    args = parser.parse_args()
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the simulator's /view traceback
    with tempfile.TemporaryDirectory() as folder:  # imports and first connections: not timed
        run_case(Case("warm-up", "", lambda s, _: add(s, text(color="1"))), args.good, Path(folder))
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(run_case(case, args.good, Path(folder)))
    header = ("case", "where it is stopped", "end state", "time to end", "good jobs")
    table = [header] + [(r.case, r.stopped, r.end, f"{r.seconds:.2f} s", r.good) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for index, line in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
