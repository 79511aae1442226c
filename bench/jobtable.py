"""JobTable's cost while a worker runs: comm messages per second and the updater's CPU per second.

Run: ``python bench/jobtable.py [--jobs 1000] [--depth 50] [--seconds 20] [--remote] [--previews]``.
Prints its figures. Issue 13's 10,000 jobs: ``--jobs 10000 --seconds 10`` (and ``--remote``).

A store gets ``--jobs`` txt2img jobs (4 sampler steps each, ``--step-ms`` per step on the
embedded simulator, so running jobs report progress); a ``Worker`` keeps ``--depth`` of them
on the simulator at once (``target_depth``). A ``JobTable`` of the run follows the store in
this process, as in a kernel (its comm is ipywidgets' own; outside a kernel its messages go
nowhere, but each one is made, serialised and counted). For ``--seconds`` (or until every job
ended) the bench counts the widget's comm messages (custom ones and trait syncs), the rows and
JSON bytes they carry, and the CPU time of the widget's updater thread
(``time.thread_time``), per look too. A view opening (the browser's "hello") is timed and its
bytes counted, before the worker starts and at the end; then ``--idle-looks`` looks with
nothing changed are timed (the updater thread's CPU, and the process's CPU, which through an
endpoint includes the endpoint's threads serving the look). ``--remote`` reads the store through the worker endpoint
(``RemoteStore``, loopback HTTP), as a notebook does beside a ``comfynb worker`` process.
``--previews``: each job also sends a preview frame (a ``SaveImageWebsocket`` node after the
decode, then held ``--hold-ms`` so the job is still running when its preview is written: a
preview waits up to the worker's ``PROGRESS_EVERY`` after the job's last progress write), so
the worker stores previews and the table sends them (binary buffers, counted in the bytes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import comfynb
from comfynb.demo import txt2img
from comfynb.service.remote import RemoteStore, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--step-ms", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--remote", action="store_true")
    parser.add_argument("--previews", action="store_true")
    parser.add_argument("--hold-ms", type=float, default=1500.0)
    parser.add_argument("--idle-looks", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = comfynb.Simulator(root=root / "sim", step_seconds=args.step_ms / 1000).start()
        store = comfynb.open(root / "bench.duckdb", output_dir=root / "outputs")
        run = store.new_run("bench")
        workflows = [txt2img(seed, steps=4, size=32) for seed in range(args.jobs)]
        if args.previews:
            for workflow in workflows:
                workflow["10"] = {
                    "class_type": "SaveImageWebsocket",
                    "inputs": {"images": ["8", 0]},
                }
            sim.configure(node_seconds_by_id={"10": args.hold_ms / 1000})
        comfynb.enqueue_many(store, workflows, run=run)
        endpoint = serve(store) if args.remote else None
        view: Any = store
        if endpoint is not None:
            endpoint.__enter__()
            view = comfynb.open(store.path)
            assert isinstance(view, RemoteStore)
        table = comfynb.JobTable(view, run="bench", interval=args.interval)
        sent: list[int] = []  # JSON bytes of each message
        rows: list[int] = []
        previews: list[int] = []  # images in each message carrying previews
        comm = table.comm
        assert comm is not None
        publish = comm.publish_msg

        def counting(msg_type: str, data: Any = None, *rest: Any, **kwargs: Any) -> None:
            buffers = kwargs.get("buffers") or []
            sent.append(len(json.dumps(data, default=str)) + sum(len(b) for b in buffers))
            content = data.get("content", {}) if isinstance(data, dict) else {}
            rows.append(len(content.get("rows", [])) if isinstance(content, dict) else 0)
            if isinstance(content, dict) and "previews" in content:
                previews.append(len(buffers))
            publish(msg_type, data, *rest, **kwargs)

        comm.publish_msg = counting  # type: ignore[method-assign]

        def open_view() -> tuple[float, int]:
            """A view opening: the browser says hello; seconds and JSON bytes sent."""
            before = len(sent)
            start = time.perf_counter()
            table._on_message(table, {"type": "hello"}, [])
            return time.perf_counter() - start, sum(sent[before:])

        open_first = open_view()
        worker = comfynb.Worker(store, servers=[sim.url], target_depth=args.depth)
        messages0, cpu0 = table.messages_sent, table.updater_cpu_seconds
        started = time.monotonic()
        worker.start()
        most_running = 0
        try:
            while time.monotonic() - started < args.seconds:
                counts = store.status_counts(run=run)
                busy = counts.get("running", 0) + counts.get("submitted", 0)
                most_running = max(most_running, busy)
                ended = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
                if ended >= args.jobs:
                    break
                time.sleep(0.25)
            elapsed = time.monotonic() - started
            messages = table.messages_sent - messages0
            cpu = table.updater_cpu_seconds - cpu0
            looks = elapsed / args.interval
            before = len(sent)
            open_end = open_view()
            sent, rows = sent[:before], rows[:before]
        finally:
            table.stop()
            worker.stop()
        idle_cpu, idle_process, idle_wall = 0.0, 0.0, 0.0
        try:
            table.refresh()  # what the worker's stop changed
            for _ in range(args.idle_looks):
                cpu_start, process_start = time.thread_time(), time.process_time()
                wall_start = time.perf_counter()
                table.refresh()
                idle_wall += time.perf_counter() - wall_start
                idle_cpu += time.thread_time() - cpu_start
                idle_process += time.process_time() - process_start
        finally:
            table.close()
            if endpoint is not None:
                view.close()
                endpoint.__exit__(None, None, None)
            counts = store.status_counts(run=run)
            store.close()
            sim.stop()

    where = "RemoteStore (worker endpoint)" if args.remote else "Store (this process)"
    what = " (each job sends a preview)" if args.previews else ""
    print(f"JobTable over {args.jobs} jobs{what}, worker target_depth={args.depth}, via {where}")
    print(f"  ran {elapsed:.1f} s; jobs at the end: {dict(sorted(counts.items()))}")
    print(f"  most jobs submitted or running at once: {most_running}")
    print(f"  comm messages: {messages} = {messages / elapsed:.2f}/s (interval {args.interval} s)")
    print(
        f"  rows sent: {sum(rows)} ({sum(rows) / max(messages, 1):.1f} per message); "
        f"bytes (JSON and buffers): {sum(sent) / elapsed / 1024:.1f} KiB/s, largest message "
        f"{max(sent, default=0)} B"
    )
    if previews:
        print(
            f"  previews: {sum(previews)} images in {len(previews)} messages "
            f"({len(previews) / elapsed:.2f}/s, counted in the comm messages)"
        )
    for label, (seconds, size) in (("before the worker", open_first), ("at the end", open_end)):
        print(
            f"  a view opening ({label}): {size / 1024:.1f} KiB sent, "
            f"{seconds * 1000:.1f} ms in the kernel"
        )
    print(
        f"  updater thread CPU: {cpu:.3f} s = {cpu / elapsed * 1000:.1f} ms per second, "
        f"{cpu / max(looks, 1) * 1000:.2f} ms per look ({looks:.0f} looks)"
    )
    n = max(args.idle_looks, 1)
    print(
        f"  a look with nothing changed: {idle_cpu / n * 1000:.2f} ms CPU of the looking thread, "
        f"{idle_process / n * 1000:.2f} ms CPU of the process (incl. endpoint threads), "
        f"{idle_wall / n * 1000:.2f} ms wall"
    )


if __name__ == "__main__":
    main()
