"""comfynb.Gallery in a real browser: JupyterLab on loopback, Playwright and Debian's Chromium.

The notebook (written into tmp_path) runs six jobs on the simulator, then shows a Gallery.
The test asserts the thumbnails are decoded images, that a click on pick and a key press
for stars reach the store (read back by re-running a later cell), that enlarging shows the
full image, that a candidate made after the cell ran appears without re-running it, that
two shift-clicked tiles compare side by side with the differing param highlighted, that
the toolbar's group menu puts headers over the tiles, and that no widget failed. A screenshot of the gallery is saved (path printed) to look at.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_browser_wait import (
    TIMEOUT_MS,
    Lab,
    chromium_page,
    lab,  # noqa: F401  (the fixture)
    open_notebook,
    run_all_cells,
    write_cells,
)

pytestmark = pytest.mark.browser
JOBS = 6


def write_notebook(path: Path, workdir: Path, gate: Path) -> None:
    setup = f"""\
import threading
import time
from pathlib import Path

import comfynb
from comfynb.demo import txt2img

workdir, gate = Path({str(workdir)!r}), Path({str(gate)!r})
sim = comfynb.Simulator(root=workdir / "sim").start()
store = comfynb.open(workdir / "lab.duckdb", output_dir=workdir / "outputs")
run = store.new_run("browser gallery")
for seed in range({JOBS}):
    comfynb.enqueue(store, txt2img(seed, steps=2, size=64, prompt=f"a lighthouse {{seed}}"),
                    run=run, params={{"KSampler.seed": seed}})
worker = comfynb.Worker(store, servers=[sim.url]).start()
summary = comfynb.wait(store, run, timeout=120)
assert summary.done == {JOBS}, summary


def one_more_at_gate(deadline=time.monotonic() + 120):
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    comfynb.enqueue(store, txt2img(99, steps=2, size=64), run=run, params={{"KSampler.seed": 99}})


threading.Thread(target=one_more_at_gate, daemon=True).start()"""
    show = "gallery = comfynb.Gallery(store, run=run, poll=0.5)\ngallery"
    check = (
        "import json\n"
        "frame = store.candidates(run=run)\n"
        "print('STATE', json.dumps({'picked': [int(i) for i in frame[frame.picked].id],"
        " 'stars': {int(r.id): int(r.stars) for r in frame.dropna(subset=['stars']).itertuples()},"
        " 'selected': gallery.selected}))"
    )
    write_cells(path, (setup, show, check))


def test_gallery_thumbnails_pick_stars_and_live_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    gate = tmp_path / "go"
    write_notebook(lab.root / "gallery.ipynb", tmp_path / "work", gate)
    shot = tmp_path / "gallery.png"
    with chromium_page(tmp_path / "profile") as (page, errors):
        open_notebook(page, lab, "gallery.ipynb")
        run_all_cells(page)

        cells = page.locator(".jp-Notebook .jp-Cell")
        output = cells.nth(1).locator(".jp-OutputArea")
        tiles = output.locator(".cnb-tile")
        expect(tiles).to_have_count(JOBS, timeout=TIMEOUT_MS)
        images = output.locator(".cnb-tile img")
        decoded = "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)"
        page.wait_for_function(
            f"() => {{ const imgs = [...document.querySelectorAll('.cnb-tile img')];"
            f" return imgs.length === {JOBS} && ({decoded})(imgs); }}",
            timeout=TIMEOUT_MS,
        )
        assert images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)") == [64] * JOBS
        expect(tiles.first.locator(".cnb-cap")).to_contain_text(re.compile(r"seed \d · cfg 8"))

        picked_id = int(tiles.nth(1).get_attribute("data-id") or 0)
        tiles.nth(1).locator(".cnb-pk").click()
        expect(tiles.nth(1)).to_have_class(re.compile("cnb-picked"), timeout=TIMEOUT_MS)

        starred_id = int(tiles.nth(2).get_attribute("data-id") or 0)
        tiles.nth(2).locator("img").click()  # enlarge: the full image, sent only now
        overlay = output.locator(".cnb-over")
        expect(overlay).to_be_visible(timeout=TIMEOUT_MS)
        seed = (tiles.nth(2).locator(".cnb-cap").inner_text()).split(" · ")[0]
        expect(overlay).to_contain_text(f"{seed} · cfg")  # its params, from the store
        page.wait_for_function(
            "() => { const i = document.querySelector('.cnb-over img');"
            " return i && i.complete && i.naturalWidth > 0; }",
            timeout=TIMEOUT_MS,
        )
        page.keyboard.press("4")
        expect(tiles.nth(2).locator(".cnb-badge")).to_have_text("★★★★", timeout=TIMEOUT_MS)
        expect(overlay.locator(".cnb-status")).to_contain_text("★★★★")
        output.screenshot(path=str(tmp_path / "gallery-enlarged.png"))
        page.keyboard.press("Escape")
        expect(overlay).to_have_count(0)

        gate.touch()  # a new job runs; its candidate must appear in the same output
        expect(tiles).to_have_count(JOBS + 1, timeout=TIMEOUT_MS)
        page.wait_for_function(
            f"() => {{ const imgs = [...document.querySelectorAll('.cnb-tile img')];"
            f" return imgs.length === {JOBS + 1} && ({decoded})(imgs); }}",
            timeout=TIMEOUT_MS,
        )
        output.screenshot(path=str(shot))

        # side by side: shift-click two tiles, compare: both images, seed row highlighted
        tiles.nth(0).click(modifiers=["Shift"])
        tiles.nth(3).click(modifiers=["Shift"])
        expect(output.locator(".cnb-tile.cnb-sel")).to_have_count(2, timeout=TIMEOUT_MS)
        output.locator(".cnb-compare").click()
        side = output.locator(".cnb-cmp")
        expect(side.locator(".cnb-differs", has_text="KSampler.seed")).to_have_count(
            1, timeout=TIMEOUT_MS
        )
        page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('.cnb-cmp img')];"
            " return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
            timeout=TIMEOUT_MS,
        )
        expect(side.locator(".cnb-sbs-row:not(.cnb-differs)", has_text="steps")).to_have_count(1)
        output.screenshot(path=str(tmp_path / "gallery-compare.png"))
        page.keyboard.press("Escape")
        expect(side).to_have_count(0)

        # group by a param from the toolbar: one header per seed, the tiles under them
        output.locator(".cnb-groupby").select_option("KSampler.seed")
        expect(output.locator(".cnb-group")).to_have_count(JOBS + 1, timeout=TIMEOUT_MS)
        expect(output.locator(".cnb-group").first).to_have_text("KSampler.seed = 0 (1)")
        expect(tiles).to_have_count(JOBS + 1, timeout=TIMEOUT_MS)
        output.screenshot(path=str(tmp_path / "gallery-grouped.png"))

        # the store saw the pick and the stars: run the last cell again and read it
        cells.nth(2).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        state_out = cells.nth(2).locator(".jp-OutputArea")
        expect(state_out).to_contain_text("STATE", timeout=TIMEOUT_MS)
        expect(state_out).to_contain_text(f'"selected": [{picked_id}]', timeout=TIMEOUT_MS)
        text = state_out.inner_text()
        state = json.loads(text[text.index("{") : text.rindex("}") + 1])
        assert state["picked"] == [picked_id] and state["stars"] == {str(starred_id): 4}

        notebook = page.locator(".jp-Notebook")
        expect(notebook).not_to_contain_text("Error displaying widget")
        expect(notebook).not_to_contain_text("Loading widget")
    print(f"screenshots: {shot} and gallery-enlarged, -compare, -grouped.png beside it")
    assert errors == [], f"errors in the page: {errors}; Lab's log: {lab.log}"
