"""comfynb.Gallery and its thumbnail cache, from Python (the browser test renders it)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sim_helpers import wait_for

import comfynb
from comfynb.core.models import NewCandidate
from comfynb.core.status import JobStatus
from comfynb.demo import txt2img
from comfynb.jobs import record_results
from comfynb.store.lifecycle import transition
from comfynb.views.gallery import Gallery
from comfynb.views.thumbnails import Thumbnails, placeholder


def make_candidates(
    store: Any, n: int, run: str = "r", size: int = 320, step: Any = None
) -> list[int]:
    """``n`` completed jobs of one real PNG each (distinct colours); the candidate ids."""
    store.new_run(run)
    added = store.add_jobs(
        [json.dumps(txt2img(seed, steps=3, size=64, prompt=f"a red fox number {seed} in snow"))
         for seed in range(n)],
        run=run,
        step=step,
        params_json=[json.dumps({"KSampler.cfg": 4.0 + seed % 3}) for seed in range(n)],
    )  # fmt: skip
    results = {}
    for i, job_id in enumerate(added.ids):
        rel = f"{run}/{job_id}.png"
        target = store.output_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        out = io.BytesIO()
        Image.new("RGB", (size, size // 2), (i * 37 % 256, i * 91 % 256, 80)).save(out, "PNG")
        target.write_bytes(out.getvalue())
        sha = hashlib.sha256(out.getvalue()).hexdigest()
        transition(store, job_id, JobStatus.SUBMITTED)
        results[job_id] = [NewCandidate("9", rel, sha256=sha, width=size, height=size // 2)]
    recorded = record_results(store, results)
    return [c.id for job_id in added.ids for c in recorded[job_id]]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with comfynb.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "out") as s:
        yield s


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        return image.size


def test_a_thumbnail_is_made_once_and_cached_by_content_hash(store: Any) -> None:
    [cid] = make_candidates(store, 1)
    thumbs = Thumbnails(store)
    data = thumbs.get(cid)
    assert _size(data) == (256, 128)
    candidate = store.candidate(cid)
    cached = store.output_dir / ".thumbs" / f"{candidate.sha256}.webp"
    assert thumbs.path(cid) == cached and cached.read_bytes() == data
    assert not list(cached.parent.glob(".tmp-*"))  # written through a temp file, renamed
    assert Thumbnails(store).get(candidate) == data and (thumbs.built, thumbs.cached) == (1, 0)
    again = Thumbnails(store)
    again.get(cid)
    assert (again.built, again.cached) == (0, 1)


def test_a_missing_or_corrupt_image_gives_a_placeholder_not_an_exception(store: Any) -> None:
    gone, broken = make_candidates(store, 2)
    store.image_path(gone).unlink()
    store.image_path(broken).write_bytes(b"\x89PNG not really")
    thumbs = Thumbnails(store)
    assert thumbs.get(gone) == placeholder() and thumbs.get(broken) == placeholder()
    assert thumbs.get(10_000) == placeholder()  # no such candidate
    assert thumbs.failed == 3 and not (store.output_dir / ".thumbs").exists()


class Recorder:
    def __init__(self, gallery: Gallery) -> None:
        self.sent: list[tuple[dict[str, Any], list[bytes]]] = []
        gallery.send = lambda content, buffers=None: self.sent.append((content, buffers or []))


def test_the_page_gets_the_tiles_it_asks_for_as_binary_buffers(store: Any) -> None:
    ids = make_candidates(store, 30)
    gallery = Gallery(store, run="r", page_size=12, poll=None)
    sent = Recorder(gallery).sent
    assert gallery.count == 30 and gallery.sort_options[:3] == ["time", "newest", "stars"]
    assert "KSampler.cfg" in gallery.sort_options
    gallery._on_message(gallery, {"type": "page", "start": 24, "count": 12, "req": 7}, [])
    [(content, buffers)] = sent
    assert content["req"] == 7 and [t["id"] for t in content["tiles"]] == ids[24:]
    assert all(isinstance(b, bytes) and b[8:12] == b"WEBP" for b in buffers) and len(buffers) == 6
    assert content["tiles"][0]["caption"].startswith("seed 24 · cfg 8 · steps 3 · a red fox")
    assert "base64" not in json.dumps(content)
    assert gallery.sent_bytes == len(json.dumps(content)) + sum(map(len, buffers))


def test_pick_and_stars_from_the_page_are_in_the_store_at_once(store: Any) -> None:
    ids = make_candidates(store, 5)
    gallery = Gallery(store, run="r", poll=None)
    sent = Recorder(gallery).sent
    gallery._on_message(gallery, {"type": "pick", "id": ids[1], "picked": True}, [])
    gallery._on_message(gallery, {"type": "star", "id": ids[2], "stars": 4}, [])
    frame = store.candidates(run="r").set_index("id")
    assert bool(frame.loc[ids[1], "picked"]) and frame.loc[ids[2], "stars"] == 4
    assert gallery.selected == [ids[1]]
    assert sent[0][0] == {"type": "update", "id": ids[1], "picked": True, "stars": None}
    gallery.only_picked = True
    assert gallery.ids() == [ids[1]] and sent[-1][0] == {"type": "changed", "reset": True}
    gallery.only_picked, gallery.min_stars = False, 3
    assert gallery.ids() == [ids[2]]
    gallery.min_stars, gallery.sort = 0, "stars"
    assert gallery.ids()[0] == ids[2]
    gallery.sort = "newest"
    assert gallery.ids() == ids[::-1]


def test_pick_and_stars_from_code_show_on_the_tiles_at_once(store: Any) -> None:
    """A notebook cell picks and stars through the gallery (as p and 1-5 do in the page):
    saved in the store and sent to the page as one update each, ids from a DataFrame too."""
    ids = make_candidates(store, 4)
    gallery = Gallery(store, run="r", poll=None)
    sent = Recorder(gallery).sent
    chosen = store.candidates(run="r")["id"].iloc[2]  # np.int64
    assert gallery.pick(chosen).picked and gallery.star(chosen, 5).stars == 5
    assert sent == [
        ({"type": "update", "id": ids[2], "picked": True, "stars": None}, []),
        ({"type": "update", "id": ids[2], "picked": True, "stars": 5}, []),
    ]
    assert gallery.selected == [ids[2]] and store.candidate(ids[2]).stars == 5
    tiles, _ = gallery.page(0, 4)
    assert [(t["picked"], t["stars"]) for t in tiles][2] == (True, 5)
    assert not gallery.pick(ids[2], False).picked and gallery.star(ids[2], None).stars is None
    assert gallery.selected == [] and sent[-1][0]["stars"] is None
    assert repr(gallery) == "Gallery(run='r', 4 candidates, 0 picked)"
    gallery.pick(ids[0])
    assert repr(gallery) == "Gallery(run='r', 4 candidates, 1 picked)"  # not <... object at 0x>
    assert repr(Gallery(store, run=store.run("r"), poll=None)).startswith("Gallery(run='r', ")
    with pytest.raises(comfynb.InvalidInput, match="stars is an int from 0 to 5"):
        gallery.star(ids[0], 6)
    with pytest.raises(comfynb.CandidateNotFound):
        gallery.pick(999)


def test_enlarging_sends_the_full_image_with_its_params(store: Any) -> None:
    ids = make_candidates(store, 2)
    gallery = Gallery(store, run="r", poll=None)
    sent = Recorder(gallery).sent
    gallery._on_message(gallery, {"type": "full", "id": ids[1]}, [])
    [(content, [data])] = sent
    assert data == store.image_path(ids[1]).read_bytes() and content["mime"] == "image/png"
    assert "seed 1" in content["text"] and "KSampler.cfg" in content["text"]
    gallery._on_message(gallery, {"type": "star", "id": 999, "stars": 2}, [])
    assert sent[-1][0]["type"] == "error" and "999" in sent[-1][0]["message"]


def test_new_candidates_appear_through_the_poll(store: Any) -> None:
    make_candidates(store, 2, run="r")
    gallery = Gallery(store, run="r", poll=0.5)
    sent = Recorder(gallery).sent
    try:
        assert gallery.count == 2
        make_candidates(store, 3, run="r")
        import time

        deadline = time.monotonic() + 10
        while gallery.count != 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert {"type": "changed", "reset": False} in [c for c, _ in sent]
    finally:
        gallery.close()


def test_static_contact_sheet_and_save(store: Any, tmp_path: Path) -> None:
    ids = make_candidates(store, 40)
    store.pick(ids[0])
    gallery = Gallery(store, run="r", poll=None)
    html = gallery._repr_html_()
    assert html.count("<img") == 1 and len(html) < 150_000 and "40 candidates" in html
    bundle = gallery._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and "text/html" in data
    sheet = gallery.save(tmp_path / "sheet.png", limit=12)
    with Image.open(sheet) as image:
        assert image.size == (6 * 196, 2 * (196 + 3 * 14))
        rgb = image.convert("RGB")
        assert rgb.getpixel((0, 100)) == (46, 160, 67)  # the picked one's green frame
        assert rgb.getpixel((196, 100)) != (46, 160, 67)  # the next one has none


def test_a_long_seed_does_not_hide_the_cfg_and_steps_on_the_sheet() -> None:
    from PIL import ImageDraw

    from comfynb.views.gallery import _wrap

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    caption = "seed 356940126706880 · cfg 7 · steps 20 · a lighthouse at dusk, oil painting…"
    lines = _wrap(caption, 192, measure)
    assert lines[0].startswith("seed 356940126706880 · cfg 7")  # whole, not cut in a number
    assert "steps 20" in " ".join(lines) and lines[-1].startswith("a lighthouse")
    assert len(lines) <= 3 and all(measure(line) <= 192 for line in lines)


def test_bad_arguments_are_clear(store: Any) -> None:
    with pytest.raises(comfynb.InvalidInput, match="page_size"):
        Gallery(store, page_size=0, poll=None)
    with pytest.raises(comfynb.InvalidInput, match="unknown sort 'nope'"):
        Gallery(store, sort="nope", poll=None)


def test_through_a_remote_store_the_tiles_are_the_images_and_picks_reach_the_owner(
    store: Any,
) -> None:
    from comfynb.service.remote import RemoteStore, serve

    ids = make_candidates(store, 3)
    with serve(store), comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore)
        gallery = Gallery(remote, run="r", poll=None)
        sent = Recorder(gallery).sent
        gallery._on_message(gallery, {"type": "page", "start": 0, "count": 24, "req": 1}, [])
        [(content, buffers)] = sent
        assert [t["id"] for t in content["tiles"]] == ids
        assert [_size(b) for b in buffers] == [(256, 128)] * 3  # real thumbnails, no placeholder
        gallery._on_message(gallery, {"type": "pick", "id": ids[0], "picked": True}, [])
        assert gallery.selected == [ids[0]]
    assert bool(store.candidate(ids[0]).picked)


def test_enlarged_shows_its_family_and_refine_queues_children(store: Any) -> None:
    [cid] = make_candidates(store, 1)
    gallery = Gallery(store, run="r", poll=None, refine_params=[{"KSampler.seed": 5}] * 2)
    sent = Recorder(gallery).sent
    gallery._on_message(gallery, {"type": "refine", "id": cid}, [])
    assert sent[-1][0] == {"type": "refined", "id": cid, "jobs": 2}
    assert [store.job(j).parent_candidate_id for j in gallery.refined] == [cid, cid]
    gallery._on_message(gallery, {"type": "full", "id": cid}, [])
    assert sent[-1][0]["parent"] is None and sent[-1][0]["children"] == []


def test_compare_lays_candidates_out_by_two_params(store: Any, tmp_path: Path) -> None:
    ids = make_candidates(store, 6)  # seed 0..5, KSampler.cfg 4, 5, 6, 4, 5, 6
    store.star(ids[3], 5)  # cfg 4 again, seed 3: its own cell
    grid = comfynb.compare(store, "r", x="KSampler.cfg", y="seed", size=64)
    assert list(grid.ids.columns) == [4.0, 5.0, 6.0] and list(grid.ids.index) == list(range(6))
    assert grid.ids.loc[3, 4.0] == ids[3] and grid.ids.loc[0, 4.0] == ids[0]
    assert grid._repr_png_()[:4] == b"\x89PNG"
    with Image.open(grid.save(tmp_path / "xy.png")) as image:
        assert image.size == (70 + 3 * 68, 24 + 6 * 68)
    with pytest.raises(comfynb.InvalidInput, match=r"no param 'KSampler\.nope'"):
        comfynb.compare(store, "r", x="KSampler.nope", y="seed")


def test_group_by_a_param_orders_the_tiles_under_headers_and_pages_carry_it(store: Any) -> None:
    ids = make_candidates(store, 9)  # KSampler.cfg 4, 5, 6, 4, 5, 6, ...
    gallery = Gallery(store, run="r", page_size=4, group_by="KSampler.cfg", poll=None)
    sent = Recorder(gallery).sent
    assert "KSampler.cfg" in gallery.group_options and "step" in gallery.group_options
    assert gallery.ids() == ids[0::3] + ids[1::3] + ids[2::3]  # by group, time inside
    assert gallery.groups() == [("KSampler.cfg = 4", 3), ("KSampler.cfg = 5", 3),
                                ("KSampler.cfg = 6", 3)]  # fmt: skip
    page = {"type": "page", "start": 2, "count": 4, "req": 3, "group_by": "KSampler.cfg"}
    gallery._on_message(gallery, page, [])
    [(content, buffers)] = sent
    assert content["group_by"] == "KSampler.cfg" and len(buffers) == 4  # still binary buffers
    assert [t["group"] for t in content["tiles"]] == ["KSampler.cfg = 4"] + ["KSampler.cfg = 5"] * 3
    assert content["groups"] == {"KSampler.cfg = 4": 3, "KSampler.cfg = 5": 3}
    gallery.group_by = "seed"  # from Python (or the toolbar): a fresh first page is asked for
    assert sent[-1][0] == {"type": "changed", "reset": True} and gallery.ids() == ids
    gallery._on_message(gallery, page, [])  # asked under the old grouping: no answer
    assert sent[-1][0]["type"] == "changed"
    gallery.group_by = ""
    gallery._on_message(gallery, {"type": "page", "start": 0, "count": 2, "req": 4}, [])
    assert sent[-1][0]["groups"] == {} and "group" not in sent[-1][0]["tiles"][0]


def test_group_by_step_and_a_bad_grouping_is_refused_clearly(store: Any) -> None:
    first = make_candidates(store, 2)
    step = store.new_step("r", "refine", {"1": {"class_type": "X", "inputs": {}}})
    later = make_candidates(store, 2, step=step)
    gallery = Gallery(store, run="r", sort="newest", group_by="step", poll=None)
    assert gallery.ids() == later[::-1] + first[::-1]  # no step last
    assert gallery.groups() == [(f"step {step.id}", 2), ("no step", 2)]
    assert gallery.group_of(first[0]) == "no step"
    with pytest.raises(comfynb.InvalidInput, match=r"unknown group_by 'nope'.*'step'"):
        Gallery(store, run="r", group_by="nope", poll=None)
    sent = Recorder(gallery).sent
    gallery.group_by = "nope"  # as the page would: refused, said, the old grouping kept
    assert gallery.group_by == "step" and any(
        c["type"] == "error" and "unknown group_by" in c["message"] for c, _ in sent
    )


def test_side_by_side_highlights_the_params_that_differ(store: Any) -> None:
    ids = make_candidates(store, 4)
    gallery = Gallery(store, run="r", poll=None)
    view = gallery.side_by_side([ids[0], ids[3]])  # same cfg (4), other seed, prompt, job
    assert view.ids == [ids[0], ids[3]]
    assert {"seed", "prompt", "job_id"} <= set(view.differing)
    assert not {"KSampler.cfg", "steps", "sampler", "cfg"} & set(view.differing)
    assert bool(view.table.loc["seed", "differs"]) and view.table.loc["seed", f"#{ids[3]}"] == 3
    html = view._repr_html_()
    assert html.count("<img") == 2 and html.count("cnb-differs") == len(view.differing)
    assert "data:image/webp;base64," in html and len(html) < 60_000
    with pytest.raises(comfynb.InvalidInput, match=r"2\.\.12 candidates, got 1"):
        gallery.side_by_side([ids[0]])
    store.pick(ids[1], True)
    store.pick(ids[2], True)
    assert gallery.side_by_side().ids == [ids[1], ids[2]]  # none selected: the picked ones
    gallery.compare_ids = [ids[2], ids[0], ids[1]]  # selected in the page
    assert gallery.side_by_side().ids == [ids[2], ids[0], ids[1]]
    assert "KSampler.cfg" in gallery.side_by_side().differing
    sent = Recorder(gallery).sent
    gallery._on_message(gallery, {"type": "compare", "ids": [ids[0], ids[1]]}, [])
    assert sent[-1][0]["type"] == "compare" and "cnb-sbs" in sent[-1][0]["html"]
    gallery._on_message(gallery, {"type": "compare", "ids": []}, [])
    assert sent[-1][0]["type"] == "error" and "got 0" in sent[-1][0]["message"]


def test_a_gallery_whose_output_was_cleared_rests_until_shown_again(store: Any) -> None:
    make_candidates(store, 2, run="r")
    gallery = Gallery(store, run="r", poll=0.5)
    try:
        gallery._on_message(gallery, {"type": "hello"}, [])
        gallery._on_message(gallery, {"type": "bye"}, [])  # the cell ran again
        assert not gallery.watched
        wait_for(lambda: gallery._watchers.parked, timeout=5)
        make_candidates(store, 1, run="r")
        assert gallery.count == 2  # parked: it did not look
        gallery._on_message(gallery, {"type": "hello"}, [])  # shown again: it looks again
        wait_for(lambda: gallery.count == 3, timeout=10)
    finally:
        gallery.close()
    assert gallery._poller is not None
    gallery._poller.join(timeout=5)
    assert not gallery._poller.is_alive()
