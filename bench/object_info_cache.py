"""What keeping a server's ``/object_info`` in the store costs, at the real 0.33.0 size.

Run: ``python bench/object_info_cache.py [--repeat 5]``. Prints its figures (medians).

* ``GET /object_info``: the simulator's (the classes it runs), and the real 0.33.0 answer
  (``tests/data/object_info_0.33.0.json.gz``, ~1.6 MB, 886 classes) served by a loopback
  ``http.server``; with ``comfynb.Client`` (what the worker already does for capabilities) and
  with ``fetch_object_info`` (urllib: ``Workflow.load(object_info=url)``).
* ``store.save_object_info``: a first copy, and an unchanged one (not rewritten);
  ``store.object_info()``: the read ``Workflow.load(object_info=store)`` does.
* The same two through a ``RemoteStore`` (the endpoint on this process's threads).
* The worker's loop: what handing the copy costs it (``ObjectInfoCopies.save``), and the
  longest pause of a thread ticking every 1 ms while the copy is saved (the GIL).
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfynb
from comfynb.service.remote import serve
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.worker.objectinfo import ObjectInfoCopies
from comfynb.workflows.load import fetch_object_info

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "object_info_0.33.0.json.gz"


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def serve_file(raw: bytes) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def loop_pause(store: Store, info: dict[str, Any]) -> float:
    """The longest a thread ticking every 1 ms waits while a new copy is saved (ms)."""
    done = threading.Event()
    url = f"http://pause{time.monotonic_ns()}:8188"
    saver = threading.Thread(target=lambda: (store.save_object_info(url, info), done.set()))
    longest, last = 0.0, time.perf_counter()
    saver.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    saver.join()
    return longest * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    n = parser.parse_args().repeat
    raw = gzip.decompress(DATA.read_bytes())
    real_server = serve_file(raw)
    real = f"http://127.0.0.1:{real_server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp, Simulator(root=Path(tmp) / "sim") as sim:
        with comfynb.Client(sim.url) as client:
            small = client.object_info()
            print(f"GET /object_info, simulator ({len(small)} classes):")
            print(f"  Client            {median_ms(client.object_info, n):7.1f} ms")
            print(f"  fetch_object_info {median_ms(lambda: fetch_object_info(sim.url), n):7.1f} ms")
        with comfynb.Client(real) as client:
            info = client.object_info()
            print(f"GET /object_info, real 0.33.0 ({len(info)} classes, {len(raw) / 1e6:.2f} MB):")
            print(f"  Client            {median_ms(client.object_info, n):7.1f} ms")
            print(f"  fetch_object_info {median_ms(lambda: fetch_object_info(real), n):7.1f} ms")
        with Store.open(Path(tmp) / "lab.duckdb", output_dir=Path(tmp) / "out") as store:
            urls = iter(f"http://gpu{i}:8188" for i in range(10_000))
            first = median_ms(lambda: store.save_object_info(next(urls), info), n)
            store.save_object_info(real, info)
            same = median_ms(lambda: store.save_object_info(real, info), n)
            read = median_ms(lambda: store.object_info(real), n)
            print("Store (0.33.0 copy):")
            print(f"  save, a new copy  {first:7.1f} ms")
            print(f"  save, unchanged   {same:7.1f} ms (not rewritten)")
            print(f"  object_info()     {read:7.1f} ms")
            with serve(store), comfynb.open(store.path) as remote:
                same = median_ms(lambda: remote.save_object_info(real, info), n)
                read = median_ms(lambda: remote.object_info(real), n)
                print("RemoteStore (0.33.0 copy):")
                print(f"  save, unchanged   {same:7.1f} ms")
                print(f"  object_info()     {read:7.1f} ms")
            copies = ObjectInfoCopies(store)
            hand = median_ms(lambda: copies.save(real, info), n)
            copies.close()
            print(f"Worker loop: handing the copy {hand * 1000:7.0f} us (saved on its own thread)")
            pauses = sorted(loop_pause(store, info) for _ in range(n))
            print(f"  its longest pause meanwhile (the GIL) {pauses[len(pauses) // 2]:5.1f} ms")
    real_server.shutdown()


if __name__ == "__main__":
    main()
