"""notebooks/01-quickstart.ipynb in a real browser: JupyterLab, Playwright, Debian's Chromium.

nbmake runs the committed notebooks without a browser; this test opens the quickstart as a
user would, in JupyterLab (a copy in tmp_path: Lab autosaves outputs into what it opens), runs
all its cells on the embedded simulator, and looks at what the user sees: the job table has
the sweep's rows, all completed; the gallery has one decoded thumbnail per image under one
header per cfg, and the pick and the stars the notebook gave in code are on their tile; no
widget failed to display. The last cell (clean up) is left out of the copy: it closes the
widgets this test looks at; the kernel stops with Lab.

The gallery's screenshot goes to tests/artifacts/ (COMFYNB_ARTIFACTS), and, with
COMFYNB_DOCS_IMAGES=1, also to docs/images/gallery.png, the README's picture (opt-in: its
seeds are random, so each run would change the committed file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from PIL import Image
from playwright.sync_api import expect
from test_browser_wait import (
    TIMEOUT_MS,
    Lab,
    chromium_page,
    open_notebook,
    run_all_cells,
    serve_notebooks,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"
DOCS_IMAGE = ROOT / "docs" / "images" / "gallery.png"
ARTIFACTS = Path(os.environ.get("COMFYNB_ARTIFACTS", Path(__file__).parent / "artifacts"))
JOBS = 6  # the quickstart's sweep: 2 cfg values x 3 seeds
DOCS_IMAGE_MAX_BYTES = 300_000


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """JupyterLab whose kernels run the notebook on the simulator, temp files in tmp_path."""
    for setting in ("COMFYUI_URL", "COMFYUI_TOKEN", "COMFYNB_DB", "COMFYNB_OUTPUT"):
        monkeypatch.delenv(setting, raising=False)
    (tmp_path / "tmp").mkdir()
    served = serve_notebooks(tmp_path, "jupyterlab", "--LabApp.news_url=None")
    with monkeypatch.context() as lab_only:  # Chromium's own sockets need a short TMPDIR
        lab_only.setenv("TMPDIR", str(tmp_path / "tmp"))
        started = next(served)
    yield started
    next(served, None)  # stops Lab and its kernels


def copy_without_cleanup(target: Path) -> None:
    book = nbformat.read(QUICKSTART, as_version=4)
    cleanup = book.cells.pop()
    assert "gallery.close()" in cleanup.source  # the one cell left out
    nbformat.write(book, target)


def save_small_png(shot: Path, target: Path) -> None:
    """The screenshot as a PNG of at most 256 colours (a few hundred KB at most)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(target, optimize=True)


def test_the_quickstart_notebook_renders_its_widgets_in_jupyterlab(
    lab: Lab, tmp_path: Path
) -> None:
    copy_without_cleanup(lab.root / "01-quickstart.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(tmp_path / "profile", height=1400) as (page, errors):
        try:
            open_notebook(page, lab, "01-quickstart.ipynb")
            run_all_cells(page)
            cells = page.locator(".jp-Notebook .jp-CodeCell")

            table = cells.filter(has_text="comfynb.JobTable(").locator(".jp-OutputArea")
            rows = table.locator(".comfynb-jobtable tbody tr")
            expect(rows).to_have_count(JOBS, timeout=TIMEOUT_MS)
            completed = table.locator("tr[data-status='completed']")
            expect(completed).to_have_count(JOBS, timeout=TIMEOUT_MS)  # it followed the worker

            saved = cells.filter(has_text="gallery.save(").locator(".jp-OutputArea")
            expect(saved).to_contain_text("sheet.png", timeout=TIMEOUT_MS)  # every cell ran

            output = cells.filter(has_text="comfynb.Gallery(").locator(".jp-OutputArea")
            gallery = output.locator(".cnb-gal")
            tiles = gallery.locator(".cnb-tile")
            expect(tiles).to_have_count(JOBS, timeout=TIMEOUT_MS)
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('.cnb-tile img')];"
                f" return imgs.length === {JOBS}"
                " && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=TIMEOUT_MS,
            )
            widths = tiles.locator("img").evaluate_all("i => i.map(e => e.naturalWidth)")
            assert widths == [256] * JOBS  # the thumbnails of 256 px images, decoded
            groups = gallery.locator(".cnb-group")
            expect(groups).to_have_count(2)
            expect(groups.nth(0)).to_have_text(re.compile(r"cfg = 4(\.0)? \(3\)"))
            expect(groups.nth(1)).to_have_text(re.compile(r"cfg = 7(\.0)? \(3\)"))
            # the cell after the gallery picked and starred the sweep's first image in code
            picked = gallery.locator(".cnb-tile.cnb-picked")
            expect(picked).to_have_count(1, timeout=TIMEOUT_MS)
            expect(picked.locator(".cnb-badge")).to_have_text("★★★★★", timeout=TIMEOUT_MS)
            expect(tiles.first.locator(".cnb-cap")).to_contain_text(re.compile(r"cfg 4"))

            notebook = page.locator(".jp-Notebook")
            expect(notebook).not_to_contain_text("Error displaying widget")
            expect(notebook).not_to_contain_text("Loading widget")

            table.screenshot(path=str(ARTIFACTS / "quickstart-jobtable.png"))
            gallery.scroll_into_view_if_needed()
            shot = ARTIFACTS / "quickstart-gallery.png"
            gallery.screenshot(path=str(shot))
            page.screenshot(path=str(ARTIFACTS / "quickstart-page.png"))
            print(f"screenshots: {shot}, {ARTIFACTS / 'quickstart-page.png'}")
        except AssertionError:
            page.screenshot(path=str(ARTIFACTS / "quickstart-failure.png"), full_page=True)
            raise
    assert errors == [], f"errors in the page: {errors}; Lab's log: {lab.log}"
    small = ARTIFACTS / "gallery.png"
    save_small_png(shot, small)
    assert small.stat().st_size < DOCS_IMAGE_MAX_BYTES, small.stat().st_size
    if os.environ.get("COMFYNB_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(small.read_bytes())
        print(f"README image: {DOCS_IMAGE}")
