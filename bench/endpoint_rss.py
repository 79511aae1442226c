"""The worker's endpoint against a flood: its memory under a big unauthorized body, its threads
under many idle connections.

Run: ``python bench/endpoint_rss.py [--body-mib 256] [--connections 1000]``. Prints its figures.

It starts a real ``comfynb worker`` process (its server: a simulator in this process), then,
reading the worker's ``VmRSS`` and ``Threads`` from ``/proc/PID/status``:

* sends ``POST /call/runs`` without the token and with a ``--body-mib`` body, as fast as the
  worker takes it, sampling the worker's RSS every 5 ms meanwhile; prints the RSS before, the
  peak, how much of the body the worker took before it closed the connection, and the answer
  (target: the peak under +64 MiB);
* sends the same announced size with the token (413 expected, from the headers alone);
* opens ``--connections`` idle connections one after another (each connect waits for the
  worker to accept it), holds them ``--hold`` seconds and prints
  the worker's peak thread count, then the time a notebook's call (``comfynb.open`` and
  ``store.runs()``) takes meanwhile.

Run it with ``PYTHONPATH`` pointing at another tree to compare (it uses only the CLI, the
endpoint file and ``comfynb.open``).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import comfynb
from comfynb.service.remote import find_endpoint
from comfynb.simulator import Simulator


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise LookupError(name)


def rss_mib(pid: int) -> float:
    return status_field(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    return status_field(pid, "Threads")


def start_worker(db: Path, server: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db), "--server", server]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (info := find_endpoint(db)) is None or info["pid"] != process.pid:
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the comfynb worker did not start")
        time.sleep(0.02)
    return process


class Sampler:
    """The worker's peak RSS and thread count, read every 5 ms on a thread of this process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = rss_mib(pid)
        self.peak_threads = threads(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.005):
            self.peak_rss = max(self.peak_rss, rss_mib(self.pid))
            self.peak_threads = max(self.peak_threads, threads(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def send_body(address: tuple[str, int], size: int, token: str | None) -> tuple[int, str]:
    """POST ``size`` bytes to /call/runs; how many were taken, and the answer's status line."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST /call/runs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {size}\r\n\r\n"
    chunk = b"x" * 2**20
    sent = 0
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(head.encode())
        try:
            while sent < size:
                sent += conn.send(chunk[: size - sent])
        except OSError:
            pass  # the worker closed the connection
        try:
            answer = conn.recv(4096)
        except OSError as exc:
            return sent, f"no answer ({exc})"
    return sent, answer.split(b"\r\n", 1)[0].decode() or "closed without an answer"


def idle_connections(address: tuple[str, int], count: int) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections one after another, sending nothing; those made, and refused.

    A connect waits for the worker to accept it (up to 2 s): as a client opening connections in
    a loop would, so a worker that accepts everything gets them all.
    """
    opened, refused = [], 0
    for _ in range(count):
        try:
            opened.append(socket.create_connection(address, timeout=2))
        except OSError:
            refused += 1
    return opened, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-mib", type=int, default=256)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--hold", type=float, default=2.0, help="seconds the idle connections stay open"
    )
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < options.connections + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, options.connections + 100), hard))

    with tempfile.TemporaryDirectory() as name, Simulator(root=Path(name) / "sim") as sim:
        db = Path(name) / "lab.duckdb"
        process = start_worker(db, sim.url)
        try:
            info = find_endpoint(db)
            assert info is not None
            host, _, port = str(info["url"]).removeprefix("http://").partition(":")
            address = (host, int(port))
            with comfynb.open(db) as remote:  # warm: the endpoint has answered a call
                remote.runs()
            pid = process.pid
            print(f"comfynb worker PID {pid}, comfynb from {Path(comfynb.__file__).parent}")

            size = options.body_mib * 2**20
            before = rss_mib(pid)
            started = time.monotonic()
            with Sampler(pid) as sampler:
                sent, answer = send_body(address, size, token=None)
            print(
                f"unauthorized {options.body_mib} MiB body: RSS {before:.1f} MiB before, "
                f"peak {sampler.peak_rss:.1f} MiB (+{sampler.peak_rss - before:.1f} MiB; "
                f"target under +64); the worker took {sent / 2**20:.1f} MiB of it in "
                f"{time.monotonic() - started:.2f} s; answer: {answer}"
            )
            started = time.monotonic()
            with socket.create_connection(address, timeout=30) as conn:
                head = (
                    f"POST /call/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    f"{info['token']}\r\nContent-Length: {size}\r\n\r\n"
                )
                conn.sendall(head.encode())
                try:
                    big = conn.recv(4096).split(b"\r\n", 1)[0].decode()
                except TimeoutError:
                    big = "no answer in 30 s (the worker waits for the body)"
            print(
                f"authorized, {options.body_mib} MiB announced, nothing sent: {big} "
                f"in {time.monotonic() - started:.2f} s"
            )

            base = threads(pid)
            with Sampler(pid) as sampler:
                opened, refused = idle_connections(address, options.connections)
                try:
                    time.sleep(options.hold)  # idle: the worker's timeout is 30 s
                    held = threads(pid)
                    started = time.monotonic()
                    try:
                        with comfynb.open(db) as remote:
                            remote.runs()
                        call = f"{time.monotonic() - started:.2f} s"
                    except comfynb.ComfynbError as exc:
                        call = f"failed after {time.monotonic() - started:.1f} s: {exc}"
                finally:
                    for conn in opened:
                        conn.close()
            print(
                f"{options.connections} idle connections ({len(opened)} made, {refused} not): "
                f"worker threads {base} before, "
                f"{held} after {options.hold:.0f} s, peak {sampler.peak_threads}; RSS {rss_mib(pid):.1f} MiB; "
                f"a notebook's comfynb.open + store.runs() meanwhile: {call}"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            if process.poll() is None:
                process.kill()


if __name__ == "__main__":
    main()
