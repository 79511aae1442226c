"""Where a job's completion latency goes, from the server's ``execution_success`` to the commit.

Run: ``python bench/worker_latency.py [--jobs 200]``.

The latency of ``worker_throughput.py`` (one trivial job at a time, a worker running in the
background, the simulator in a process of its own), cut at each hand-over: the simulator's
``execution_success`` timestamp (ms), the socket reader parsing that frame, the loop starting
the download, the download on its pool thread, the loop taking its end and handing the result
to the recorder, the recorder's commit, and the log line the loop writes after it. Medians of
each step (they need not add up to the median of the whole) and how often the result shared its
commit with the job's own ``submitted``/``running`` moves.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from worker_throughput import simulators, trivial

import comfynb
from comfynb.protocol.events import ExecutionSuccess
from comfynb.store import Store
from comfynb.worker import downloads, loop, recorder, sockets

MARKS: dict[str, dict[str, float]] = {}  # prompt_id -> step -> time.time()
BATCHES: dict[str, list[str]] = {}  # prompt_id -> kinds of items in its result's commit
COMPLETED: dict[int, float] = {}  # job id -> time of its "-> completed" log line


def mark(prompt_id: str | None, step: str) -> None:
    MARKS.setdefault(prompt_id or "", {})[step] = time.time()


def wrap(
    owner: Any,
    name: str,
    before: Callable[..., None] | None = None,
    after: Callable[..., None] | None = None,
) -> None:
    real = getattr(owner, name)

    def wrapped(*args: Any) -> Any:
        if before:
            before(*args)
        out = real(*args)
        if after:
            after(out, *args)
        return out

    setattr(owner, name, wrapped)


def instrument() -> None:
    def frame(event: Any, _frame: Any) -> None:
        if isinstance(event, ExecutionSuccess):
            mark(event.prompt_id, "frame")

    wrap(sockets, "needed", after=frame)
    wrap(downloads.Downloads, "start", before=lambda _s, p: mark(p.job.prompt_id, "seen"))
    wrap(
        downloads.Downloads,
        "_collect",
        before=lambda _s, p: mark(p.job.prompt_id, "download"),
        after=lambda _o, _s, p: mark(p.job.prompt_id, "downloaded"),
    )
    wrap(loop.Loop, "fetched", before=lambda _s, e: mark(e.posted.job.prompt_id, "taken"))

    def handed(_self: Any, work: Any) -> None:
        if isinstance(work, recorder.Result):
            mark(work.job.prompt_id, "handed")
        elif isinstance(work, recorder.Expect):
            mark(work.job.prompt_id, "expected")

    wrap(recorder.Recorder, "hand", before=handed)
    real_commit = recorder.Recorder._commit

    def commit(self: Any, work: Any, coming: Any) -> Any:
        # the results' commit: begun before they came (an expected result) or with them
        ours = [e.job.prompt_id for e in coming.values()]
        ours += [w.job.prompt_id for w in work if isinstance(w, recorder.Result)]
        for prompt_id in ours:
            mark(prompt_id, "commit")
            BATCHES[prompt_id] = [type(w).__name__ for w in work] + (["waited"] if coming else [])
        out = real_commit(self, work, coming)
        for prompt_id in ours:
            mark(prompt_id, "committed")
        return out

    recorder.Recorder._commit = commit  # type: ignore[method-assign]
    real_await = recorder.Recorder._await

    def waited(self: Any, coming: Any) -> Any:
        for expect in coming.values():
            mark(expect.job.prompt_id, "waiting")
        out = real_await(self, coming)
        for result in out:
            mark(result.job.prompt_id, "arrived")
        return out

    recorder.Recorder._await = waited  # type: ignore[method-assign]


class _Completed(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.args and len(record.args) == 5 and str(record.args[3]) == "completed":
            COMPLETED[int(record.args[0])] = time.time()  # type: ignore[arg-type,index]


STEPS = [
    ("success", "frame", "the socket reader has the frame"),
    ("frame", "seen", "the loop starts the download"),
    ("seen", "download", "a pool thread takes it"),
    ("download", "downloaded", "the download (GET, check, write, fsync, rename)"),
    ("downloaded", "taken", "the loop takes its end"),
    ("taken", "handed", "... and hands the result"),
    ("handed", "arrived", "the recorder, waiting in its transaction, takes it"),
    ("arrived", "committed", "... the candidate rows and the COMMIT"),
    ("committed", "logged", "the loop's log line"),
]
#: Beside the download: the recorder writes the completion (an ``Expect``) meanwhile.
ALONGSIDE = [
    ("seen", "expected", "the loop hands the Expect"),
    ("expected", "commit", "the recorder begins the transaction"),
    ("commit", "waiting", "... writes the moves and the completion (UPDATE, events)"),
    ("waiting", "arrived", "... and waits for the result"),
]
#: Results committed the old way (none expected, or rolled back): from the hand to the commit.
UNEXPECTED = [
    ("handed", "commit", "the recorder starts its commit"),
    ("commit", "committed", "the whole commit"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    instrument()
    log = logging.getLogger("comfynb.worker")
    log.addHandler(_Completed())
    log.setLevel(logging.INFO)
    log.propagate = False
    rows: list[dict[str, float]] = []
    shared = 0
    with tempfile.TemporaryDirectory() as tmp, simulators(1, Path(tmp)) as urls:
        url, folder = urls[0], Path(tmp)
        with Store.open(folder / "lat.duckdb", output_dir=folder / "lat") as store:
            store.new_run("lat")
            worker = comfynb.Worker(store, [url]).start()
            try:
                with httpx.Client(base_url=url) as http:
                    for index in range(args.jobs + 10):
                        job = comfynb.enqueue(store, trivial(900_000 + index), run="lat")
                        deadline = time.monotonic() + 10
                        while job.id not in COMPLETED:
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"job {job.id} did not complete")
                            time.sleep(0.002)
                        prompt_id = store.job(job.id).prompt_id or ""
                        entry = http.get(f"/history/{prompt_id}").json()[prompt_id]
                        success = next(
                            data["timestamp"]
                            for kind, data in entry["status"]["messages"]
                            if kind == "execution_success"
                        )
                        if index >= 10:  # warm-up
                            marks = dict(MARKS.get(prompt_id, {}))
                            marks["success"] = success / 1000
                            marks["logged"] = COMPLETED[job.id]
                            rows.append(marks)
                            shared += bool(
                                {"Record", "Tick", "Claim"} & set(BATCHES.get(prompt_id, []))
                            )
            finally:
                worker.stop()
    total = [(r["logged"] - r["success"]) * 1000 for r in rows]
    print(
        f"{len(rows)} jobs one at a time: execution_success -> completed logged after its "
        f"commit: median {statistics.median(total):.1f} ms, "
        f"p90 {statistics.quantiles(total, n=10)[-1]:.1f} ms"
    )
    waited = [r for r in rows if "arrived" in r]
    plain = [r for r in rows if "arrived" not in r]
    print(f"{len(waited)} of {len(rows)} committed by a transaction that waited for them:")
    for start, end, what in STEPS:
        spans = [(r[end] - r[start]) * 1000 for r in waited if start in r and end in r]
        if spans:
            print(f"  {statistics.median(spans):6.2f} ms  {start} -> {end}: {what}")
    print("  meanwhile:")
    for start, end, what in ALONGSIDE:
        spans = [(r[end] - r[start]) * 1000 for r in waited if start in r and end in r]
        if spans:
            print(f"  {statistics.median(spans):6.2f} ms  {start} -> {end}: {what}")
    if plain:
        print(f"{len(plain)} committed after they came:")
        for start, end, what in STEPS[:6] + UNEXPECTED + STEPS[-1:]:
            spans = [(r[end] - r[start]) * 1000 for r in plain if start in r and end in r]
            if spans:
                print(f"  {statistics.median(spans):6.2f} ms  {start} -> {end}: {what}")
    print(f"results that shared their commit with other moves: {shared} of {len(rows)}")


if __name__ == "__main__":
    main()
