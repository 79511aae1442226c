"""The JobTable and the Gallery in Notebook 7 (not only JupyterLab), in Debian's Chromium.

Issue 13 asks for the widgets in "JupyterLab and Notebook 7". Notebook 7 is a different
front end (its own page at ``/notebooks/NAME.ipynb``, its own menus and kernel indicator)
loading the same widget manager, so one test runs a notebook written into tmp_path there:
the simulator runs three jobs while a JobTable follows them to "completed", then a Gallery
shows their candidates as decoded thumbnails. The server is started with the same loopback,
no-token flags as the Lab fixture of test_browser_wait, whose helpers this reuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Error, Page, expect
from test_browser_wait import (
    TIMEOUT_MS,
    Lab,
    chromium_page,
    serve_notebooks,
    write_cells,
)

pytestmark = pytest.mark.browser
JOBS = 3
# Notebook 7.6's own front end throws this once while it loads its shortcut settings, on
# a one-cell "1+1" notebook without widgets as well (TypeError in JupyterLab's shortcut
# extension, bundled in notebook_core.js): it is tolerated by message AND origin, so an
# error from the widgets' code (anywidget's ESM, jobtable.js, gallery.js) still fails.
NOTEBOOK7_OWN_ERROR = (
    "Cannot read properties of undefined (reading 'schema')",
    "/static/notebook/notebook_core.",
)
ARTIFACTS = Path(os.environ.get("COMFYNB_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture
def notebook7(tmp_path: Path) -> Iterator[Lab]:
    """Notebook 7 on 127.0.0.1 serving ``tmp_path/nb``, without a token; stopped by SIGTERM."""
    yield from serve_notebooks(tmp_path, "notebook")


def write_notebook(path: Path, workdir: Path) -> None:
    """Simulator, store, three jobs and a worker; a JobTable; wait; a Gallery."""
    setup = f"""\
from pathlib import Path

import comfynb
from comfynb.demo import txt2img

workdir = Path({str(workdir)!r})
sim = comfynb.Simulator(root=workdir / "sim").start()
store = comfynb.open(workdir / "nb7.duckdb", output_dir=workdir / "outputs")
run = store.new_run("notebook 7")
for seed in range({JOBS}):
    comfynb.enqueue(store, txt2img(seed, steps=2, size=64), run=run, params={{"KSampler.seed": seed}})
worker = comfynb.Worker(store, servers=[sim.url]).start()"""
    table = "table = comfynb.JobTable(store, run=run)\ntable"
    wait = (
        f"summary = comfynb.wait(store, run, timeout=120)\nassert summary.done == {JOBS}, summary"
    )
    gallery = "gallery = comfynb.Gallery(store, run=run)\ngallery"
    write_cells(path, (setup, table, wait, gallery))


def start_kernel(server: Lab, name: str) -> None:
    """Start the notebook's session through the REST API before the page opens.

    Left to the page, Notebook 7 sometimes opens before it has the kernel specs and asks
    "Select Kernel" in a dialog (the toolbar's indicator says idle meanwhile); with a
    session already there the page joins it, and Run All waits for its kernel.
    """
    session = {"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        http.get("/tree").raise_for_status()  # sets the _xsrf cookie a POST must echo
        xsrf = {"X-XSRFToken": http.cookies["_xsrf"]}
        http.post("/api/sessions", json=session, headers=xsrf).raise_for_status()


def open_and_run_all(page: Page, server: Lab, name: str) -> None:
    """Start ``name``'s kernel, open it in Notebook 7, then Run > Run All Cells."""
    start_kernel(server, name)
    page.goto(f"{server.url}/notebooks/{name}")
    expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=TIMEOUT_MS)
    status = page.locator(".jp-Notebook-ExecutionIndicator")  # the toolbar's kernel circle
    expect(status).to_have_attribute("data-status", "idle", timeout=TIMEOUT_MS)
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def _unexpected(error: Error) -> str:
    """The page error as text, or "" if it is Notebook 7's own known one (see above)."""
    message, origin = NOTEBOOK7_OWN_ERROR
    if error.message == message and origin in (error.stack or "").splitlines()[1]:
        return ""
    return f"{error.message}\n{error.stack}"


def test_job_table_and_gallery_render_in_notebook_7(notebook7: Lab, tmp_path: Path) -> None:
    write_notebook(notebook7.root / "nb7.ipynb", tmp_path / "work")
    with chromium_page(tmp_path / "profile", height=1400, on_error=_unexpected) as (page, errors):
        try:
            open_and_run_all(page, notebook7, "nb7.ipynb")

            cells = page.locator(".jp-Notebook .jp-Cell")
            table = cells.nth(1).locator(".jp-OutputArea")
            expect(table.locator(".comfynb-jobtable tbody tr")).to_have_count(
                JOBS, timeout=TIMEOUT_MS
            )
            completed = table.locator("tr[data-status='completed']")
            expect(completed).to_have_count(JOBS, timeout=TIMEOUT_MS)  # live, not re-run

            gallery = cells.nth(3).locator(".jp-OutputArea")
            expect(gallery.locator(".cnb-tile")).to_have_count(JOBS, timeout=TIMEOUT_MS)
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('.cnb-tile img')];"
                f" return imgs.length === {JOBS} && imgs.every(i => i.complete && i.naturalWidth > 0); }}",
                timeout=TIMEOUT_MS,
            )
            widths = gallery.locator(".cnb-tile img").evaluate_all(
                "i => i.map(e => e.naturalWidth)"
            )
            assert widths == [64] * JOBS

            notebook = page.locator(".jp-Notebook")
            expect(notebook).not_to_contain_text("Error displaying widget")
            expect(notebook).not_to_contain_text("Loading widget")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "notebook7.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        except AssertionError:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "notebook7-failure.png"))
            raise
    errors = [error for error in errors if error]
    assert errors == [], f"errors in the page: {errors}; the server's log: {notebook7.log}"
