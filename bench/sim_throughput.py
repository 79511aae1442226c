"""Simulator throughput: 1,000 trivial prompts queued at once, and one prompt at a time.

Run: ``python bench/sim_throughput.py [--prompts 1000] [--rounds 200] [--root DIR]``.
Prints its figures, with the simulator on a thread of this process (as the tests run it) and
in a process of its own (as ``comfynb simulator`` runs it).

* burst, sequential: POST every prompt one after the other on one keep-alive httpx connection
  (as the comfynb client does), then wait on one WebSocket until each prompt's
  ``execution_success`` arrived; prompts/s = prompts / (last success - first POST).
* burst, concurrent: the same with an aiohttp client keeping 16 POSTs in flight.
* drain: queue the prompts behind a held one, release it, time the queue running dry: what
  the executor sustains on its own; also without files (SaveImageWebsocket, no client_id: the
  fact sheet's 10 010-prompt run, 566 prompts/s on the real server).
* round trip: POST one prompt, wait for its ``execution_success`` on the socket; median, p90.

The real ComfyUI on 2 cores: ~200 prompts/s, 3.9 ms median round trip (fact sheet). Each
trivial prompt writes one PNG: on a slow disk the file creation alone can cost ~0.5 ms, so
``--root /dev/shm`` shows what the simulator does without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
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


def held_prompt() -> dict[str, Any]:
    """Three nodes, so that an interrupt during the first ends it at the second."""
    prompt = trivial_prompt(0xFFFFFF)
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    return prompt


def wait_successes(ws: ClientConnection, prompt_ids: set[str], timeout: float = 120) -> float:
    """Read until every prompt id had its execution_success; return the time of the last one."""
    deadline = time.monotonic() + timeout
    left = set(prompt_ids)
    while left:
        raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
        if isinstance(raw, str) and '"execution_success"' in raw:
            left.discard(json.loads(raw)["data"]["prompt_id"])
    return time.perf_counter()


def burst_sequential(sim: Simulator | _Remote, count: int) -> float:
    with connect(f"{sim.ws_url}?clientId=bench-seq", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        started = time.perf_counter()
        ids = set()
        for index in range(count):
            body = {"prompt": trivial_prompt(index), "client_id": "bench-seq"}
            ids.add(http.post(f"{sim.url}/prompt", json=body).json()["prompt_id"])
        done = wait_successes(ws, ids)
    return count / (done - started)


async def _burst_concurrent(url: str, count: int, in_flight: int) -> float:
    async with aiohttp.ClientSession() as session:
        ws_url = url.replace("http://", "ws://") + "/ws?clientId=bench-conc"
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            await ws.receive()
            gate = asyncio.Semaphore(in_flight)

            async def post(index: int) -> str:
                body = {"prompt": trivial_prompt(index), "client_id": "bench-conc"}
                async with gate, session.post(f"{url}/prompt", json=body) as response:
                    prompt_id: str = (await response.json())["prompt_id"]
                    return prompt_id

            started = time.perf_counter()
            left = set(await asyncio.gather(*(post(i) for i in range(count))))
            while left:
                message = await ws.receive(timeout=120)
                if message.type == aiohttp.WSMsgType.TEXT and "execution_success" in message.data:
                    left.discard(json.loads(message.data)["data"]["prompt_id"])
            return count / (time.perf_counter() - started)


def burst_concurrent(sim: Simulator | _Remote, count: int, in_flight: int = 16) -> float:
    return asyncio.run(_burst_concurrent(sim.url, count, in_flight))


def drain(sim: Simulator | _Remote, count: int) -> float:
    """Queue ``count`` prompts behind a held one, release it, time the queue running dry."""
    with connect(f"{sim.ws_url}?clientId=bench-drain", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 30})
        held = {"prompt": held_prompt(), "client_id": "bench-drain"}
        held_id = http.post(f"{sim.url}/prompt", json=held).json()["prompt_id"]
        ids = set()
        for index in range(count):
            body = {"prompt": trivial_prompt(index), "client_id": "bench-drain"}
            ids.add(http.post(f"{sim.url}/prompt", json=body).json()["prompt_id"])
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 0})
        started = time.perf_counter()
        http.post(f"{sim.url}/interrupt", json={"prompt_id": held_id})
        done = wait_successes(ws, ids)
    return count / (done - started)


def drain_without_files(sim: Simulator | _Remote, count: int) -> float:
    """As the fact sheet's 10 010-prompt run: SaveImageWebsocket, no file, no client_id."""
    prompt = trivial_prompt(0)
    prompt["2"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}
    with connect(f"{sim.ws_url}?clientId=observer", max_size=None) as ws, httpx.Client() as http:
        ws.recv(timeout=5)
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 30})
        held_id = http.post(f"{sim.url}/prompt", json={"prompt": held_prompt()}).json()["prompt_id"]
        for index in range(count):
            prompt["1"]["inputs"]["color"] = index
            http.post(f"{sim.url}/prompt", json={"prompt": prompt})
        http.post(f"{sim.url}/_sim/config", json={"node_seconds": 0})
        started = time.perf_counter()
        http.post(f"{sim.url}/interrupt", json={"prompt_id": held_id})
        while True:  # status broadcasts reach every socket: wait for the empty queue
            raw = ws.recv(timeout=120)
            if isinstance(raw, str) and '"queue_remaining": 0' in raw:
                return count / (time.perf_counter() - started)


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
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


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


def best(sim: Simulator | _Remote, repeat: int, measure: Any, *args: Any) -> float:
    """The best of ``repeat`` runs (other work on a 2-core machine only ever slows a run)."""
    rates = []
    for _ in range(repeat):
        sim.reset()
        rates.append(measure(sim, *args))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is kept)")
    parser.add_argument(
        "--root", default=None, help="folder for the simulator's files (a temp dir)"
    )
    args = parser.parse_args()
    count = args.prompts
    for mode in ("thread", "process"):
        print(f"simulator in a {mode}, files under {args.root or tempfile.gettempdir()}:")
        with tempfile.TemporaryDirectory(dir=args.root) as root, simulator(mode, root) as sim:
            rate = best(sim, args.repeat, burst_sequential, count)
            print(f"  burst, {count} prompts, sequential POSTs (httpx): {rate:.0f} prompts/s")
            rate = best(sim, args.repeat, burst_concurrent, count)
            print(f"  burst, {count} prompts, 16 POSTs in flight (aiohttp): {rate:.0f} prompts/s")
            rate = best(sim, args.repeat, drain, count)
            print(f"  drain, {count} queued prompts: {rate:.0f} prompts/s")
            rate = best(sim, args.repeat, drain_without_files, count)
            print(
                f"  drain, {count} queued, SaveImageWebsocket, no client_id: {rate:.0f} prompts/s"
            )
            sim.reset()
            median, p90 = round_trips(sim, args.rounds)
            print(
                f"  round trip, POST -> execution_success, {args.rounds} prompts: "
                f"median {median:.2f} ms, p90 {p90:.2f} ms"
            )


if __name__ == "__main__":
    main()
