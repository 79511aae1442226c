"""comfynb.wait in a real browser: JupyterLab on loopback, driven by Playwright and Chromium.

nbmake runs every cell but renders no widget; this test looks at what a user sees. A notebook
written into tmp_path (never a committed file: Lab autosaves outputs into it) starts the
simulator, a store and four jobs, and calls ``comfynb.wait``. The worker starts only once the
browser shows the bar at 0/4, so the test sees the same widget move from 0/4 to 4/4 (it
updates while the cell blocks) without racing the jobs. See
shared/recipes/browser-widget-tests.md for the flags and the pitfalls.

Debian's Chromium only (``/usr/bin/chromium``): nothing here downloads a browser.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat
import pytest
from playwright.sync_api import Error, Page, expect, sync_playwright

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root on CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STDERR = "application/vnd.jupyter.stderr"
JOBS = 4
TIMEOUT_MS = 45_000  # per assertion: a loaded 2-core CI is slow, a real failure still ends
LAB_START_SECONDS = 60.0


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its URL, the folder it serves and its log."""

    url: str
    root: Path
    log: Path


def _require_chromium() -> None:
    """Skip without Chromium on a developer machine; on CI (``CI`` set) fail instead."""
    if CHROMIUM.exists():
        return
    message = (
        f"{CHROMIUM} is missing; install Debian's Chromium with "
        "`apt-get update && apt-get install -y chromium` (never `playwright install`)"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _lab_env(home: Path) -> dict[str, str]:
    """Lab's environment: its settings, workspaces, config and runtime under ``home``.

    The news toast is turned off (it can cover the outputs); a user's config or kernels
    cannot leak in.
    """
    settings = home / "settings"
    toast = settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    toast.parent.mkdir(parents=True)
    toast.write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ)
    for name, folder in [
        ("JUPYTERLAB_SETTINGS_DIR", settings),
        ("JUPYTERLAB_WORKSPACES_DIR", home / "workspaces"),
        ("JUPYTER_CONFIG_DIR", home / "config"),
        ("JUPYTER_DATA_DIR", home / "data"),
        ("JUPYTER_RUNTIME_DIR", home / "runtime"),
        ("IPYTHONDIR", home / "ipython"),
    ]:
        env[name] = str(folder)
    return env


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/api/status`` until Lab answers; fail with its log if it dies or takes too long."""
    deadline = time.monotonic() + LAB_START_SECONDS
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()}")
            try:
                if http.get(f"{url}/api/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"JupyterLab did not answer in {LAB_START_SECONDS} s:\n{log.read_text()}")


def serve_notebooks(tmp_path: Path, module: str, *extra: str) -> Iterator[Lab]:
    """``python -m module`` (jupyterlab, notebook) on 127.0.0.1 serving ``tmp_path/nb``,
    without a token, until the generator is closed (SIGTERM: its kernels stop too)."""
    _require_chromium()
    root, log = tmp_path / "nb", tmp_path / f"{module}.log"
    root.mkdir()
    port = _free_port()
    command = [
        sys.executable, "-m", module, "--allow-root", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={root}", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=_lab_env(tmp_path / "home")
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, process, log)
        yield Lab(url, root, log)
    finally:
        process.send_signal(signal.SIGTERM)  # also shuts down its kernels
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 serving ``tmp_path/nb``, without a token; stopped by SIGTERM."""
    yield from serve_notebooks(tmp_path, "jupyterlab", "--LabApp.news_url=None")


@contextmanager
def chromium_page(
    profile: Path, *, height: int = 1000, on_error: Callable[[Error], str] = str
) -> Iterator[tuple[Page, list[str]]]:
    """A page of Debian's Chromium (a fresh profile, this machine's flags) and the list its
    page errors are collected into (``on_error`` makes each one a line; "" drops it)."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("pageerror", lambda error: errors.append(on_error(error)))
            yield page, errors
        finally:
            context.close()


def write_cells(path: Path, sources: Sequence[str]) -> None:
    """A notebook of these code cells for the Python 3 kernel, at ``path``."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in sources],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )
    nbformat.write(notebook, path)


def write_notebook(path: Path, workdir: Path, gate: Path) -> None:
    """The notebook a user would write: simulator, store, jobs, worker, ``comfynb.wait``.

    The worker starts on a thread once ``gate`` exists (the test creates it when the browser
    shows the bar at 0/JOBS), so the bar is seen before and after the jobs run.
    """
    setup = f"""\
import threading
import time
from pathlib import Path

import comfynb
from comfynb.demo import txt2img

workdir, gate = Path({str(workdir)!r}), Path({str(gate)!r})
sim = comfynb.Simulator(root=workdir / "sim").start()
store = comfynb.open(workdir / "lab.duckdb", output_dir=workdir / "outputs")
run = store.new_run("browser wait")
jobs = [
    comfynb.enqueue(store, txt2img(seed, steps=2, size=64), run=run, params={{"KSampler.seed": seed}})
    for seed in range({JOBS})
]
worker = comfynb.Worker(store, servers=[sim.url])


def start_worker_at_gate(deadline=time.monotonic() + 120):
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.start()


threading.Thread(target=start_worker_at_gate, daemon=True).start()"""
    wait = "summary = comfynb.wait(store, run, timeout=120)\nprint(summary)"
    cleanup = "worker.stop()\nstore.close()\nsim.stop()"
    write_cells(path, (setup, wait, cleanup))


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` ignoring any saved layout; return once its kernel is idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset")
    expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=TIMEOUT_MS)
    status_bar = page.locator("#jp-main-statusbar")  # "Python 3 (ipykernel) | Idle"
    expect(status_bar).to_contain_text("| Idle", timeout=TIMEOUT_MS)


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells (Lab 4.6 has no default shortcut for it)."""
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def test_wait_shows_a_widget_bar_that_moves_to_the_end_in_jupyterlab(
    lab: Lab, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    write_notebook(lab.root / "wait.ipynb", tmp_path / "work", gate)
    with chromium_page(tmp_path / "profile") as (page, errors):
        open_notebook(page, lab, "wait.ipynb")
        run_all_cells(page)

        output = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea")
        label = output.locator("div.widget-label")  # the bar has an empty <label> of its own
        expect(output.locator(".widget-hprogress")).to_be_visible(timeout=TIMEOUT_MS)
        expect(label).to_contain_text(f"0/{JOBS} ended", timeout=TIMEOUT_MS)
        gate.touch()  # now the worker runs the jobs; the same bar must follow them

        expect(label).to_contain_text(f"{JOBS}/{JOBS} ended", timeout=TIMEOUT_MS)
        summary = f"WaitSummary(done={JOBS}, failed=0, cancelled=0, pending=0"
        expect(output).to_contain_text(summary, timeout=TIMEOUT_MS)
        bar = output.locator(".widget-hprogress .progress-bar")
        expect(bar).to_have_class("progress-bar progress-bar-success", timeout=TIMEOUT_MS)
        assert bar.evaluate("element => element.style.width") == "100%"
        # the widget, not tqdm's text fallback (which would print to stderr)
        expect(output.locator(f"[data-mime-type='{STDERR}']")).to_have_count(0)
        output.screenshot(path=str(tmp_path / "wait-output.png"))  # to look at on failure

        notebook = page.locator(".jp-Notebook")
        expect(notebook).not_to_contain_text("Error displaying widget")
        expect(notebook).not_to_contain_text("Loading widget")
    assert errors == [], f"errors in the page: {errors}; Lab's log: {lab.log}"
