"""Where the worker's time goes: CPU per job, by thread, beside the hand-written loop's.

Run: ``python bench/worker_breakdown.py [--jobs 2000] [--depth 2]``.

The same trivial jobs as ``worker_throughput.py``, the simulator in a process of its own. On a
2-core machine the worker is bound by CPU, not by waiting: its loop, its recorder (the store),
its download threads, its socket readers and DuckDB's own threads all run side by side with the
simulator. So this prints CPU time per job (from /proc, per thread), for the worker and for the
simulator, and the same for the hand loop; and the recorder's commits (jobs per commit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_throughput import hand_loop, reset, simulators, trivial

import comfynb
from comfynb.store import Store
from comfynb.worker.recorder import Recorder

COMMITS = [0]
_record = Recorder._record


def _counted(self: Recorder, work: Any) -> Any:
    COMMITS[0] += 1
    return _record(self, work)


Recorder._record = _counted  # type: ignore[method-assign]


def cpu_seconds(pid: int | str, task: str | None = None) -> float:
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu() -> dict[int, float]:
    out = {}
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # ended meanwhile
            out[int(task)] = cpu_seconds("self", task)
    return out


class ThreadWatch:
    """CPU seconds per thread name over a block (threads that start and end inside it too)."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-sampler")

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._look()

    def _look(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self.names[thread.native_id] = thread.name
        self.last.update(threads_cpu())

    def __enter__(self) -> ThreadWatch:
        self.before = threads_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._look()

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for task, seconds in self.last.items():
            role = _role(self.names.get(task, ""))
            roles[role] = roles.get(role, 0.0) + seconds - self.before.get(task, 0.0)
        return roles


def _role(name: str) -> str:
    if name == "MainThread":
        return "loop (posts, events, book-keeping)"
    if name.startswith("comfynb-recorder"):
        return "recorder (store commits)"
    if name.startswith("comfynb-download"):
        return "downloads (4 threads)"
    if name.startswith("comfynb-worker-ws") or "recv_events" in name or "keepalive" in name:
        return "sockets (reader + websockets')"
    if name.startswith("bench-"):
        return "this bench's sampler"
    return "DuckDB's own threads"


def measured(run: Callable[[], Any], sim_pid: int, n: int) -> tuple[float, float, float]:
    """(jobs/s, this process's CPU ms per job, the simulator's CPU ms per job)."""
    sim_before, cpu_before, started = cpu_seconds(sim_pid), time.process_time(), time.perf_counter()
    run()
    wall = time.perf_counter() - started
    cpu, sim = time.process_time() - cpu_before, cpu_seconds(sim_pid) - sim_before
    return n / wall, cpu / n * 1000, sim / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()
    n = args.jobs
    pids: list[int] = []
    popen = subprocess.Popen

    class Recording(popen):  # type: ignore[misc,valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            pids.append(self.pid)

    subprocess.Popen = Recording  # type: ignore[misc]
    with tempfile.TemporaryDirectory() as tmp, simulators(1, Path(tmp)) as urls:
        subprocess.Popen = popen  # type: ignore[misc]
        root = Path(tmp)
        reset(urls)
        rate, cpu, sim = measured(lambda: hand_loop(urls[0], n, root / "hand", 0), pids[0], n)
        print(
            f"hand loop: {rate:.0f} jobs/s; CPU per job: client {cpu:.2f} ms, simulator {sim:.2f} ms"
        )
        reset(urls)
        with Store.open(root / "lab.duckdb", output_dir=root / "out") as store:
            store.new_run("bench")
            with store.transaction():
                for index in range(n):
                    comfynb.enqueue(store, trivial(1_000_000 + index), run="bench")
            COMMITS[0] = 0
            worker = comfynb.Worker(store, urls, target_depth=args.depth)
            with ThreadWatch() as watch:
                rate, cpu, sim = measured(worker.run, pids[0], n)
        print(
            f"worker, target_depth={args.depth}: {rate:.0f} jobs/s; CPU per job: worker "
            f"{cpu:.2f} ms, simulator {sim:.2f} ms; {COMMITS[0]} commits, "
            f"{n / max(COMMITS[0], 1):.1f} jobs per commit"
        )
        for role, seconds in sorted(watch.by_role().items(), key=lambda kv: -kv[1]):
            print(f"  {role:38s} {seconds / n * 1000:5.2f} ms/job")
        cores = os.cpu_count() or 1
        print(
            f"  the machine's {cores} cores allow at most {cores * 1000 / (cpu + sim):.0f} jobs/s "
            f"at this worker + simulator CPU per job"
        )


if __name__ == "__main__":
    main()
