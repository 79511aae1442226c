"""comfynb.JobTable in a real browser: JupyterLab on loopback, Playwright and Debian's Chromium.

A notebook written into tmp_path starts the simulator, a store and four jobs, and shows a
JobTable. The test then drives it as a user would: a job enqueued by a later cell appears
without re-running the table's cell (on a second page: the table pages by 4 rows here, and
the arrows page), a click on "Cancel selected" cancels a pending job in
the store (the row's new status is read back from the store), and once the worker starts
a bar shows the running job's sampler steps and its latest preview (a decoded image: the jobs
send one from a SaveImageWebsocket node the simulator holds for a moment), and the rows turn
completed, their previews gone. Fixtures and helpers come from test_browser_wait; see
shared/recipes/browser-widget-tests.md for the flags and the pitfalls.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_browser_wait import (
    TIMEOUT_MS,
    Lab,
    chromium_page,
    lab,
    open_notebook,
    run_all_cells,
    write_cells,
)

pytestmark = pytest.mark.browser

__all__ = ["lab"]  # the fixture, imported so pytest finds it here
JOBS = 4
ARTIFACTS = Path(os.environ.get("COMFYNB_ARTIFACTS", Path(__file__).parent / "artifacts"))


def write_notebook(path: Path, workdir: Path, gates: Path) -> None:
    """Simulator, store, jobs; a JobTable; a later cell that enqueues one more job at a gate.

    The worker starts when ``gates/go`` exists, the extra job is enqueued when ``gates/new``
    exists: the test decides when things happen, and never races the jobs.
    """
    setup = f"""\
import threading
import time
from pathlib import Path

import comfynb
from comfynb.demo import txt2img

workdir, gates = Path({str(workdir)!r}), Path({str(gates)!r})
sim = comfynb.Simulator(root=workdir / "sim", step_seconds=0.25).start()
sim.configure(node_seconds_by_id={{"10": 2.0}})  # running a while after its preview
store = comfynb.open(workdir / "lab.duckdb", output_dir=workdir / "outputs")
run = store.new_run("browser table")


def with_preview(seed):
    workflow = txt2img(seed, steps=4, size=64)
    workflow["10"] = {{"class_type": "SaveImageWebsocket", "inputs": {{"images": ["8", 0]}}}}
    return workflow


jobs = [
    comfynb.enqueue(store, with_preview(seed), run=run, params={{"KSampler.seed": seed}})
    for seed in range({JOBS})
]
worker = comfynb.Worker(store, servers=[sim.url])


def at_gate(name, then, deadline=time.monotonic() + 120):
    while not (gates / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    then()


threading.Thread(target=at_gate, args=("go", worker.start), daemon=True).start()"""
    table = f"table = comfynb.JobTable(store, run=run, page_size={JOBS})\ntable"
    later = (
        "def one_more():\n"
        "    comfynb.enqueue(store, txt2img(99, steps=3, size=64), run=run)\n\n\n"
        'threading.Thread(target=at_gate, args=("new", one_more), daemon=True).start()'
    )
    write_cells(path, (setup, table, later))


def test_job_table_is_live_and_cancels_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    write_notebook(lab.root / "table.ipynb", tmp_path / "work", gates)
    with chromium_page(tmp_path / "profile") as (page, errors):
        try:
            open_notebook(page, lab, "table.ipynb")
            run_all_cells(page)

            output = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea")
            rows = output.locator(".comfynb-jobtable tbody tr")
            expect(rows).to_have_count(JOBS, timeout=TIMEOUT_MS)
            expect(output.locator("tr[data-status='pending']")).to_have_count(JOBS)

            (gates / "new").touch()  # a later cell's thread enqueues one more job
            label = output.locator(".cjt-page")  # on a second page: a page holds JOBS rows
            expect(label).to_have_text(f"rows 1-{JOBS} of {JOBS + 1}", timeout=TIMEOUT_MS)
            output.locator("button.cjt-next").click()
            expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
            expect(label).to_have_text(f"rows {JOBS + 1}-{JOBS + 1} of {JOBS + 1}")
            output.locator("button.cjt-prev").click()
            expect(rows).to_have_count(JOBS, timeout=TIMEOUT_MS)

            first = rows.first
            first.locator("input.cjt-select").check()
            output.locator("button.cjt-cancel").click()
            expect(first).to_have_attribute("data-status", "cancelled", timeout=TIMEOUT_MS)
            expect(output.locator(".cjt-note")).to_contain_text("1 cancelled")

            (gates / "go").touch()  # the worker runs the others, one at a time, 4 steps each
            running = output.locator("tr[data-status='running'] progress")
            expect(running).to_have_count(1, timeout=TIMEOUT_MS)  # a bar beside the running job
            # and its latest sampler preview, decoded from the binary comm buffer
            page.wait_for_function(
                """() => [...document.querySelectorAll(
                     ".comfynb-jobtable tr[data-status='running'] img.cjt-preview")]
                   .some(i => i.complete && i.naturalWidth > 0)""",
                timeout=TIMEOUT_MS,
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            output.screenshot(path=str(ARTIFACTS / "jobtable-running.png"))
            completed = output.locator("tr[data-status='completed']")  # the first page's
            expect(completed).to_have_count(JOBS - 1, timeout=TIMEOUT_MS)
            expect(output.locator("img.cjt-preview")).to_have_count(0)  # gone with the running
            expect(output.locator(".cjt-counts")).to_contain_text(
                f"{JOBS + 1} jobs: {JOBS} completed, 1 cancelled"
            )
            badge = first.locator(".cjt-badge")
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "jobtable.png"
            output.screenshot(path=str(shot))
            print(f"screenshot: {shot}")

            notebook = page.locator(".jp-Notebook")
            expect(notebook).not_to_contain_text("Error displaying widget")
            expect(notebook).not_to_contain_text("Loading widget")
        except AssertionError:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "jobtable-failure.png"))
            print("outputs:", page.locator(".jp-Notebook").inner_text()[-3000:])
            raise
    assert errors == [], f"errors in the page: {errors}; Lab's log: {lab.log}"
