"""comfynb.Gallery at 10,000 candidates: thumbnail build rate, first-screen bytes, browser timings.

Run: ``python bench/gallery.py [--candidates 10000] [--cold 1000] [--browser]``. Prints its figures.

- The store: ``--candidates`` completed jobs of one 512x512 PNG each, written as copies of one
  image with distinct trailing bytes (so each has its own sha256 and its own thumbnail),
  recorded through ``add_jobs`` + ``transition_many`` + ``record_results`` (the real path).
- Thumbnail build rate (thumbnails/s): ``--cold`` candidates with an empty cache (decode the
  PNG, shrink to 256 px, WebP, atomic write), then the same ones again from the disk cache.
- Bytes sent to the browser for the first screen: the widget's state (its JS included) plus
  the first page's message (captions as JSON and the thumbnails as binary buffers), counted
  from Python as the comm would carry them.
- A live look (the poll, every second), in this process and through a worker's endpoint
  (``RemoteStore``): ``Gallery.refresh()`` with nothing changed, after a pick made elsewhere,
  after one new candidate; beside what a look cost before it read only changes: the job
  counts (``status_counts``) when nothing changed, and a re-read of every candidate
  (``reload()`` and the sort) when a job completed. Medians of several looks.
- ``--browser``: JupyterLab on loopback + Debian's Chromium (as tests/test_browser_wait.py):
  time from running the cell to the first page's thumbnails decoded ("first paint"), and
  from a click on "last page" to its thumbnails decoded. Needs /usr/bin/chromium.

Targets (issue 13): first paint under 1 s, first screen under 500 KB.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

import comfynb
from comfynb.core.models import NewCandidate
from comfynb.core.status import JobStatus
from comfynb.demo import txt2img
from comfynb.jobs import record_results
from comfynb.store.lifecycle import transition_many
from comfynb.views.gallery import Gallery
from comfynb.views.thumbnails import Thumbnails


def one_png(size: int = 512) -> bytes:
    gradient = Image.radial_gradient("L").resize((size, size))
    noise = Image.effect_noise((size, size), 40)
    image = Image.merge("RGB", (gradient, noise, Image.linear_gradient("L").resize((size, size))))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def make_store(folder: Path, n: int, run: str = "bench") -> Any:
    store = comfynb.open(folder / "bench.duckdb", output_dir=folder / "outputs")
    store.new_run(run)
    base = one_png()
    workflows = [
        json.dumps(txt2img(seed, steps=20, size=512, prompt=f"a lighthouse at dusk, seed {seed}"))
        for seed in range(n)
    ]
    params = [json.dumps({"KSampler.cfg": 4 + seed % 7}) for seed in range(n)]
    ids = store.add_jobs(workflows, run=run, params_json=params).ids
    transition_many(store, [(job_id, JobStatus.SUBMITTED) for job_id in ids])
    results = {}
    (store.output_dir / run).mkdir(parents=True, exist_ok=True)
    for job_id in ids:
        data = base + job_id.to_bytes(8, "big")  # after IEND: same picture, distinct bytes
        rel = f"{run}/{job_id:06d}.png"
        (store.output_dir / rel).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        results[job_id] = [
            NewCandidate("9", rel, sha256=sha, width=512, height=512, bytes=len(data))
        ]
    record_results(store, results)
    return store


def first_screen_bytes(store: Any, page_size: int) -> tuple[int, int, int]:
    gallery = Gallery(store, run="bench", page_size=page_size, poll=None)
    gallery.send = lambda content, buffers=None: None  # no kernel here; count only
    state = len(json.dumps(gallery.get_state(), default=str))
    gallery.sent_bytes = 0
    gallery._on_message(gallery, {"type": "page", "start": 0, "count": page_size, "req": 1}, [])
    return state, gallery.sent_bytes, gallery.count


def _median_ms(call: Any, times: int) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1000


def look_costs(view: Any, where: str) -> None:
    """What one live look of a Gallery of every candidate costs, ms (medians)."""
    gallery = Gallery(view, run="bench", poll=None)
    gallery.send = lambda content, buffers=None: None  # no kernel here
    picks = iter(gallery.ids()[::7])
    owner = view  # picks through the view; new candidates recorded by the owner's store
    full = _median_ms(lambda: (gallery.reload(), gallery._apply()), 5)
    counts = _median_ms(lambda: view.status_counts(run="bench"), 20)
    idle = _median_ms(gallery.refresh, 20)

    def picked_elsewhere() -> None:
        owner.pick(next(picks))
        start = time.perf_counter()
        gallery.refresh()
        spent.append(time.perf_counter() - start)

    spent: list[float] = []
    for _ in range(5):
        picked_elsewhere()
    pick = statistics.median(spent) * 1000
    gallery.close()
    print(
        f"a look at {gallery.count} candidates ({where}): nothing changed {idle:.1f} ms, "
        f"a pick made elsewhere {pick:.1f} ms (read, merge, sort); before: nothing changed "
        f"{counts:.1f} ms (job counts), a job completed {full:.0f} ms (every candidate read "
        "and sorted)"
    )


def new_candidate_look(store: Any) -> None:
    """A look after the worker recorded one more candidate, in this process (ms, median)."""
    gallery = Gallery(store, run="bench", poll=None)
    gallery.send = lambda content, buffers=None: None
    base = one_png(64)
    spent = []
    for i in range(5):
        [job_id] = store.add_jobs([json.dumps(txt2img(90_000 + i, steps=4))], run="bench").ids
        transition_many(store, [(job_id, JobStatus.SUBMITTED)])
        rel = f"bench/new{job_id}.png"
        (store.output_dir / rel).write_bytes(base)
        record_results(store, {job_id: [NewCandidate("9", rel, width=64, height=64)]})
        start = time.perf_counter()
        gallery.refresh()
        spent.append(time.perf_counter() - start)
    gallery.close()
    print(
        f"a look after one new candidate (this process): {statistics.median(spent) * 1000:.1f} ms"
        f" ({gallery.count} candidates)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--cold", type=int, default=1000, help="thumbnails to build cold")
    parser.add_argument("--page-size", type=int, default=24)
    parser.add_argument("--browser", action="store_true", help="also time it in Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        store = make_store(folder, args.candidates)
        print(f"store: {args.candidates} candidates made in {time.perf_counter() - start:.1f} s")

        frame = store.candidates(run="bench")
        picks = [int(i) for i in frame["id"][: args.cold]]
        candidates = [store.candidate(i) for i in picks]
        for label in ("cold", "cached"):
            thumbs = Thumbnails(store)
            start = time.perf_counter()
            total = sum(len(thumbs.get(c)) for c in candidates)
            seconds = time.perf_counter() - start
            print(
                f"thumbnails {label}: {len(picks) / seconds:.0f}/s ({len(picks)} in {seconds:.2f} s,"
                f" built {thumbs.built}, cached {thumbs.cached}, mean {total / len(picks) / 1024:.1f} KB)"
            )

        start = time.perf_counter()
        state, page, count = first_screen_bytes(store, args.page_size)
        seconds = time.perf_counter() - start
        print(
            f"first screen ({args.page_size} tiles of {count}): widget state {state / 1024:.1f} KB"
            f" + first page {page / 1024:.1f} KB = {(state + page) / 1024:.1f} KB"
            f" (Gallery + first page in Python: {seconds * 1000:.0f} ms)"
        )
        look_costs(store, "this process")
        new_candidate_look(store)
        from comfynb.service.remote import serve

        with serve(store), comfynb.open(store.path) as remote:
            look_costs(remote, "through a worker endpoint")
        total = len(store.candidates(run="bench"))  # the looks above added a few
        store.close()
        if args.browser:
            browser_times(folder, args.page_size, total)


def browser_times(folder: Path, page_size: int, total: int) -> None:
    """JupyterLab + Chromium on the bench's store: first paint and last page, in seconds."""
    import os
    import signal
    import subprocess

    import nbformat
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_browser_wait import (
        CHROMIUM,
        CHROMIUM_FLAGS,
        _free_port,
        _lab_env,
        _wait_until_up,
        open_notebook,
        run_all_cells,
    )

    root, log = folder / "nb", folder / "lab.log"
    root.mkdir()
    setup = (
        "import comfynb\n"
        f"store = comfynb.open({str(folder / 'bench.duckdb')!r}, output_dir={str(folder / 'outputs')!r})"
    )
    show = (
        f"gallery = comfynb.Gallery(store, run='bench', page_size={page_size}, poll=None)\ngallery"
    )
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(show)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, root / "bench.ipynb")
    port = _free_port()
    command = [
        sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
    ]  # fmt: skip
    env = _lab_env(folder / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with log.open("wb") as out:
        lab = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    decoded = (
        "n => { const g = document.querySelector('.cnb-gal:not([data-old])');"
        " if (!g) return false; const imgs = [...g.querySelectorAll('.cnb-tile img')];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, lab, log)
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(folder / "profile"), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1000},
            )  # fmt: skip
            page = context.pages[0] if context.pages else context.new_page()

            class LabAt:
                pass

            at = LabAt()
            at.url = url  # type: ignore[attr-defined]
            open_notebook(page, at, "bench.ipynb")  # type: ignore[arg-type]
            run_all_cells(page)  # warm: the kernel, anywidget's JS, the store's first read
            page.wait_for_function(decoded, arg=page_size, timeout=120_000)
            page.evaluate("() => document.querySelector('.cnb-gal').dataset.old = '1'")
            page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputArea-editor").click()
            start = time.perf_counter()
            page.keyboard.press("Shift+Enter")
            page.wait_for_function(decoded, arg=page_size, timeout=60_000, polling="raf")
            first = time.perf_counter() - start
            rest = total % page_size or page_size
            start = time.perf_counter()
            page.locator(".cnb-gal:not([data-old]) .cnb-last").click()
            page.wait_for_function(
                "n => { const t = [...document.querySelectorAll('.cnb-gal:not([data-old]) .cnb-tile')];"
                " return t.length === n && t.every(d => d.querySelector('img').naturalWidth > 0); }",
                arg=rest, timeout=60_000, polling="raf",
            )  # fmt: skip
            last = time.perf_counter() - start
            context.close()
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(timeout=30)
    print(
        f"browser (JupyterLab + Chromium): first paint {first * 1000:.0f} ms"
        f" (cell run to {page_size} thumbnails decoded), last page {last * 1000:.0f} ms"
        f" (click to its {rest} thumbnails decoded, built cold; {total} candidates)"
    )


if __name__ == "__main__":
    main()
