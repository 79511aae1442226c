"""Client latency: one trivial prompt at a time, ``queue_prompt`` -> ``ExecutionSuccess`` on ``events()``.

Run: ``python bench/client_latency.py [--prompts 200] [--in-process]``. Prints its figures.

For each client (``Client``, then ``AsyncClient``) one event stream stays open; each round queues a
trivial prompt (``EmptyImage`` 64x64 -> ``SaveImage``, a color of its own so nothing is cached),
follows it and reads events until its ``ExecutionSuccess``. The time from calling
``queue_prompt`` to that event is one sample; the median and p90 over all rounds are printed.

By default the simulator runs in a process of its own, as a real server would
(``python -m comfynb.simulator``); ``--in-process`` runs it on a thread of this process instead.
The real ComfyUI on 2 cores: 3.9 ms median from POST to ``executing{node: null}`` (fact sheet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

from comfynb.client import AsyncClient, Client
from comfynb.protocol.events import ExecutionSuccess


def trivial_prompt(index: int) -> dict[str, Any]:
    """EmptyImage 64x64 -> SaveImage; ``color`` varies so no prompt is served from the cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lat"}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator(in_process: bool) -> Iterator[str]:
    """The URL of a running simulator, in this process or in a child process."""
    with tempfile.TemporaryDirectory(prefix="comfynb-bench-") as root:
        if in_process:
            from comfynb.simulator import Simulator

            with Simulator(root=root) as sim:
                yield sim.url
            return
        port = free_port()
        command = [sys.executable, "-m", "comfynb.simulator", "--port", str(port), "--root", root]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/system_stats", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise SystemExit("the simulator did not start") from None
                    time.sleep(0.05)
            yield url
        finally:
            child.terminate()
            child.wait(timeout=10)


def sync_rounds(url: str, count: int, offset: int) -> tuple[list[float], int]:
    """Latency samples, and how many ends were synthesized over HTTP (not seen on the socket)."""
    samples, synthesized = [], 0
    with Client(url) as client, client.events() as stream:
        for index in range(count):
            started = time.perf_counter()
            queued = client.queue_prompt(trivial_prompt(offset + index))
            stream.follow(queued.prompt_id)
            for event in stream:
                if isinstance(event, ExecutionSuccess) and event.prompt_id == queued.prompt_id:
                    synthesized += event.synthesized
                    break
            samples.append(time.perf_counter() - started)
    return samples, synthesized


async def async_rounds(url: str, count: int, offset: int) -> tuple[list[float], int]:
    """Latency samples, and how many ends were synthesized over HTTP (not seen on the socket)."""
    samples, synthesized = [], 0
    async with AsyncClient(url) as client, client.events() as stream:
        for index in range(count):
            started = time.perf_counter()
            queued = await client.queue_prompt(trivial_prompt(offset + index))
            stream.follow(queued.prompt_id)
            async for event in stream:
                if isinstance(event, ExecutionSuccess) and event.prompt_id == queued.prompt_id:
                    synthesized += event.synthesized
                    break
            samples.append(time.perf_counter() - started)
    return samples, synthesized


def report(name: str, result: tuple[list[float], int]) -> None:
    samples, synthesized = result
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(
        f"{name:12s} {len(ms)} prompts: median {statistics.median(ms):.2f} ms, "
        f"p90 {p90:.2f} ms, min {ms[0]:.2f} ms, max {ms[-1]:.2f} ms "
        f"({synthesized} ends read over HTTP instead of the socket)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--in-process", action="store_true", help="simulator on a thread here")
    args = parser.parse_args()
    where = "a thread of this process" if args.in_process else "a process of its own"
    print(f"queue_prompt -> ExecutionSuccess on events(); the simulator runs in {where}")
    with simulator(args.in_process) as url:
        sync_rounds(url, 10, 10**6)  # warm up: imports, first connections, caches
        report("Client", sync_rounds(url, args.prompts, 0))
        report("AsyncClient", asyncio.run(async_rounds(url, args.prompts, args.prompts)))
    print("real ComfyUI 0.8.0 on 2 cores (fact sheet): median 3.9 ms (POST -> executing null)")


if __name__ == "__main__":
    main()
