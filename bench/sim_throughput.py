"""Simulator throughput: 1,000 trivial prompts queued at once, and one prompt at a time.

Run: ``python bench/sim_throughput.py [--prompts 1000] [--rounds 200]``. Prints its figures.

* burst: POST all prompts (one keep-alive connection), then wait on one WebSocket until every
  prompt's ``execution_success`` arrived; prompts/s = prompts / (last success - first POST).
* round trip: POST one prompt, wait for its ``execution_success`` on the socket; median and p90.

The real ComfyUI on 2 cores: ~200 prompts/s, 3.9 ms median round trip (fact sheet).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from comfynb.simulator import Simulator


def trivial_prompt(index: int) -> dict[str, Any]:
    """EmptyImage 64x64 -> SaveImage; ``color`` varies so no prompt is served from the cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "bench"},
        },
    }


def wait_successes(ws: ClientConnection, prompt_ids: set[str], timeout: float = 120) -> float:
    """Read until every prompt id had its execution_success; return the time of the last one."""
    deadline = time.monotonic() + timeout
    left = set(prompt_ids)
    while left:
        raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
        if isinstance(raw, str) and '"execution_success"' in raw:
            left.discard(json.loads(raw)["data"]["prompt_id"])
    return time.perf_counter()


def burst(sim: Simulator | _Remote, count: int) -> float:
    with connect(f"{sim.ws_url}?clientId=bench-burst", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        started = time.perf_counter()
        ids = set()
        for index in range(count):
            body = {"prompt": trivial_prompt(index), "client_id": "bench-burst"}
            ids.add(http.post(f"{sim.url}/prompt", json=body).json()["prompt_id"])
        posted = time.perf_counter()
        done = wait_successes(ws, ids)
    print(
        f"burst: {count} prompts posted in {posted - started:.2f} s ({count / (posted - started):.0f} POST/s)"
    )
    rate = count / (done - started)
    print(
        f"burst: all {count} done in {done - started:.2f} s from the first POST -> {rate:.0f} prompts/s"
    )
    return rate


def drain(sim: Simulator | _Remote, count: int) -> float:
    """Queue ``count`` prompts behind a held one, release it, time the queue running dry."""
    with connect(f"{sim.ws_url}?clientId=bench-drain", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 30})
        held = {"prompt": trivial_prompt(0xFFFFFF), "client_id": "bench-drain"}
        held["prompt"]["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
        held["prompt"]["2"]["inputs"]["images"] = ["3", 0]
        held_id = http.post(f"{sim.url}/prompt", json=held).json()["prompt_id"]
        ids = set()
        for index in range(count):
            body = {"prompt": trivial_prompt(index), "client_id": "bench-drain"}
            ids.add(http.post(f"{sim.url}/prompt", json=body).json()["prompt_id"])
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 0})
        started = time.perf_counter()
        http.post(f"{sim.url}/interrupt", json={"prompt_id": held_id})
        done = wait_successes(ws, ids)
    rate = count / (done - started)
    print(f"drain: {count} queued prompts ran in {done - started:.2f} s -> {rate:.0f} prompts/s")
    return rate


def round_trips(sim: Simulator | _Remote, rounds: int) -> tuple[float, float]:
    times: list[float] = []
    with connect(f"{sim.ws_url}?clientId=bench-rt", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        for index in range(rounds + 10):
            body = {"prompt": trivial_prompt(10_000 + index), "client_id": "bench-rt"}
            started = time.perf_counter()
            prompt_id = http.post(f"{sim.url}/prompt", json=body).json()["prompt_id"]
            done = wait_successes(ws, {prompt_id})
            if index >= 10:  # warm-up
                times.append((done - started) * 1000)
    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1]
    print(
        f"round trip (POST -> execution_success on the socket), {rounds} prompts: median {median:.2f} ms, p90 {p90:.2f} ms"
    )
    return median, p90


@contextlib.contextmanager
def simulator(mode: str, root: str) -> Iterator[Simulator | _Remote]:
    """The simulator in this process (a thread, as the tests run it) or in a process of its own."""
    if mode == "thread":
        with Simulator(root=root) as sim:
            yield sim
        return
    command = [sys.executable, "-m", "comfynb.simulator", "--port", "0", "--root", root]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().split(" on ")[1].split(",")[0]
        try:
            yield _Remote(url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


class _Remote:
    """What the measurements need of a simulator running in another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://") + "/ws"

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="bursts per mode (best is kept)")
    parser.add_argument(
        "--root", default=None, help="folder for the simulator's files (a temp dir)"
    )
    args = parser.parse_args()
    for mode in ("thread", "process"):
        print(f"-- simulator in a {mode} (files under {args.root or tempfile.gettempdir()})")
        with tempfile.TemporaryDirectory(dir=args.root) as root, simulator(mode, root) as sim:
            rates = []
            for _ in range(args.repeat):
                sim.reset()
                rates.append(burst(sim, args.prompts))
            print(f"burst: best {max(rates):.0f} prompts/s of {args.repeat}")
            sim.reset()
            drain(sim, args.prompts)
            sim.reset()
            round_trips(sim, args.rounds)


if __name__ == "__main__":
    main()
