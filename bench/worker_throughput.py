"""Worker figures: throughput against a hand-written loop, 3 servers, latency, memory.

Run: ``python bench/worker_throughput.py [--jobs 2000] [--rounds 3] [--latency 200] [--memory 5000]
[--work-ms 20 --work-jobs 200]``.

Each round runs the hand loop and every worker setting once, one after the other; the figures
are medians over the rounds, and each ratio is taken within a round (these machines are noisy).

* throughput: 2,000 trivial jobs (EmptyImage 64x64 -> SaveImage, each with its own color so
  nothing is cached), end to end: from ``comfynb.enqueue_many`` of the workflows (one
  transaction) to a candidate row and a file on disk each, run by ``Worker.run()``; against a
  minimal hand-written loop on the same simulator in the same run (httpx + one WebSocket:
  post, wait for the end, download, write the file), which keeps no record at all. The
  worker's rate from pending to the last candidate (without the enqueue) is printed beside it.
  The simulators run in processes of their own, as a ComfyUI server would.
* 3 servers: the same jobs on three simulators; the ratio to one.
* jobs with work: the same, with ``--work-ms`` of server time per job (the EmptyImage node
  waits, standing in for the GPU): the ratio to the hand loop, and how much of the time the
  server was busy (jobs x work / elapsed). The hand loop leaves the server idle while it
  downloads and posts; the worker keeps ``target_depth`` prompts queued behind the running one.
* latency: one job at a time with the worker running in the background: from the
  simulator's ``execution_success`` (its timestamp, ms) to the worker's log line for the
  ``completed`` move, which it writes right after the commit; median and p90.
* memory: the worker's process RSS before and after 5,000 jobs (after a warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

import comfynb
from comfynb.store import Store


def trivial(index: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }


@contextlib.contextmanager
def simulators(count: int, root: Path) -> Iterator[list[str]]:
    """``count`` simulators, each in a process of its own; their URLs."""
    procs = []
    try:
        for i in range(count):
            command = [sys.executable, "-m", "comfynb.simulator", "--port", "0"]
            command += ["--root", str(root / f"sim{i}")]
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
        urls = []
        for proc in procs:
            assert proc.stdout is not None
            urls.append(proc.stdout.readline().split(" on ")[1].split(",")[0])
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def reset(urls: list[str]) -> None:
    for url in urls:
        httpx.post(f"{url}/_sim/reset")


def hand_loop(url: str, count: int, out: Path, offset: int) -> float:
    """The minimal loop: post, wait for the end on the socket, download, write; jobs/s."""
    out.mkdir(parents=True, exist_ok=True)
    ws_url = url.replace("http://", "ws://") + "/ws?clientId=hand"
    with connect(ws_url, max_size=None) as ws, httpx.Client(base_url=url) as http:
        ws.recv(timeout=5)
        started = time.perf_counter()
        for index in range(count):
            body = {"prompt": trivial(offset + index), "client_id": "hand"}
            prompt_id = http.post("/prompt", json=body).json()["prompt_id"]
            images: list[dict[str, Any]] = []
            while True:
                raw = ws.recv(timeout=30)
                if not isinstance(raw, str):
                    continue
                message = json.loads(raw)
                data = message["data"]
                if data.get("prompt_id") != prompt_id:
                    continue
                if message["type"] == "executed":
                    images += data["output"].get("images", [])
                elif message["type"] == "execution_success":
                    break
            for image in images:
                response = http.get("/view", params=image)
                (out / f"{index}_{image['filename']}").write_bytes(response.content)
        return count / (time.perf_counter() - started)


def worker_run(
    urls: list[str], count: int, folder: Path, offset: int, depth: int
) -> tuple[float, float]:
    """``enqueue_many`` of ``count`` workflows, then ``Worker.run()`` until they are done.

    Returns jobs/s end to end (from the enqueue to the last candidate) and jobs/s of the run
    alone (from pending to the last candidate).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with Store.open(folder / "lab.duckdb", output_dir=folder / "out") as store:
        store.new_run("bench")
        workflows = [trivial(offset + index) for index in range(count)]
        started = time.perf_counter()
        comfynb.enqueue_many(store, workflows, run="bench")
        enqueued = time.perf_counter()
        summary = comfynb.Worker(store, urls, target_depth=depth).run()
        done = time.perf_counter()
        assert summary.completed == count, summary
        assert len(store.candidates()) == count
        assert sum(1 for p in (folder / "out").rglob("*.png")) == count
    return count / (done - started), count / (done - enqueued)


class _Completed(logging.Handler):
    """The time of each ``-> completed`` line of the worker's log, by job id."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and len(record.args) == 5 and str(record.args[3]) == "completed":
            self.at[int(record.args[0])] = time.time()  # type: ignore[arg-type,index]


def latency(url: str, count: int, folder: Path) -> tuple[float, float]:
    handler = _Completed()
    log = logging.getLogger("comfynb.worker")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with Store.open(folder / "lat.duckdb", output_dir=folder / "lat") as store:
            store.new_run("lat")
            worker = comfynb.Worker(store, [url]).start()
            delays = []
            try:
                with httpx.Client(base_url=url) as http:
                    for index in range(count + 10):
                        job = comfynb.enqueue(store, trivial(900_000 + index), run="lat")
                        deadline = time.monotonic() + 10
                        while job.id not in handler.at:
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"job {job.id} did not complete")
                            time.sleep(0.002)
                        prompt_id = store.job(job.id).prompt_id
                        entry = http.get(f"/history/{prompt_id}").json()[prompt_id]
                        success = (
                            next(
                                data["timestamp"]
                                for kind, data in entry["status"]["messages"]
                                if kind == "execution_success"
                            )
                            / 1000
                        )
                        if index >= 10:  # warm-up
                            delays.append((handler.at[job.id] - success) * 1000)
            finally:
                worker.stop()
    finally:
        log.removeHandler(handler)
    return statistics.median(delays), statistics.quantiles(delays, n=10)[-1]


def with_work(url: str, count: int, work_ms: float, folder: Path) -> tuple[float, float]:
    """Jobs of ``work_ms`` server time each: (worker/hand ratio, worker's server-busy share).

    Also prints both contenders' figures.
    """
    work = {"node_seconds_by_id": {"1": work_ms / 1000}}
    try:
        httpx.post(f"{url}/_sim/config", json=work)
        hand = hand_loop(url, count, folder / "wh", 700_000)
        reset([url])  # resets the config too
        httpx.post(f"{url}/_sim/config", json=work)
        worker = worker_run([url], count, folder / "ww", 800_000, 2)[0]
    finally:
        reset([url])
    busy = {name: rate * work_ms / 1000 for name, rate in (("hand", hand), ("worker", worker))}
    print(
        f"jobs with {work_ms:g} ms of server work, {count} jobs: hand loop {hand:.1f} jobs/s "
        f"(server busy {busy['hand']:.0%}), worker {worker:.1f} jobs/s (server busy "
        f"{busy['worker']:.0%}); ratio {worker / hand:.2f}"
    )
    return worker / hand, busy["worker"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(url: str, count: int, folder: Path) -> tuple[float, float]:
    worker_run([url], 300, folder / "warm", 500_000, 2)  # warm-up: imports, caches, arenas
    reset([url])
    before = rss_mb()
    worker_run([url], count, folder / "mem", 600_000, 2)
    return before, rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--memory", type=int, default=5000)
    parser.add_argument("--depth", type=int, nargs="*", default=[2, 8])
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--work-jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, simulators(3, Path(tmp)) as urls:
        root = Path(tmp)
        n = args.jobs
        rates: dict[str, list[float]] = {}
        for r in range(args.rounds):  # interleaved: a noisy moment hits every contender
            offset = r * 10 * n

            reset(urls)
            rates.setdefault("hand", []).append(hand_loop(urls[0], n, root / f"h{r}", offset))
            for d in args.depth:
                for count in (1, 3):
                    reset(urls)
                    folder = root / f"r{r}d{d}s{count}"
                    rate, run_only = worker_run(urls[:count], n, folder, offset + count * n, d)
                    rates.setdefault(f"{count}/{d}", []).append(rate)
                    rates.setdefault(f"{count}/{d} run", []).append(run_only)
        hand = rates["hand"]
        print(f"{args.rounds} rounds of {n} jobs, interleaved; medians (and each round's figure)")
        print(f"hand-written loop (httpx + WebSocket), 1 simulator: {_median(hand)} jobs/s")
        for d in args.depth:
            one, three, run_only = rates[f"1/{d}"], rates[f"3/{d}"], rates[f"1/{d} run"]
            to_hand = [w / h for w, h in zip(one, hand, strict=True)]
            run_to_hand = [w / h for w, h in zip(run_only, hand, strict=True)]
            to_one = [t / o for t, o in zip(three, one, strict=True)]
            print(
                f"worker, target_depth={d}, enqueue_many -> last candidate: 1 simulator "
                f"{_median(one)} jobs/s, ratio to the hand loop {_median(to_hand, 2)}; "
                f"3 simulators {_median(three)} jobs/s, ratio to 1 {_median(to_one, 2)}"
            )
            print(
                f"  the run alone (pending -> last candidate), 1 simulator: {_median(run_only)} "
                f"jobs/s, ratio to the hand loop {_median(run_to_hand, 2)}"
            )
        if args.work_jobs:
            reset(urls)
            with_work(urls[0], args.work_jobs, args.work_ms, root)
        if args.latency:
            reset(urls)
            median, p90 = latency(urls[0], args.latency, root)
            print(
                f"completion latency, execution_success -> completed row committed, "
                f"{args.latency} jobs one at a time: median {median:.1f} ms, p90 {p90:.1f} ms"
            )
        if args.memory:
            reset(urls)
            before, after = memory(urls[0], args.memory, root)
            print(
                f"worker RSS over {args.memory} jobs: {before:.1f} MB -> {after:.1f} MB "
                f"(+{after - before:.1f} MB)"
            )


def _median(values: list[float], digits: int = 0) -> str:
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{statistics.median(values):.{digits}f} ({each})"


if __name__ == "__main__":
    main()
