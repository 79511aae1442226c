"""comfynb.Gallery's live updates read only what changed: new candidates, picks and stars.

Each look is ``store.candidates(changed_since=...)``; the picks and stars another view made
(another gallery, a cell, a notebook beside a worker) come back through it. Locally and
through a real endpoint (a RemoteStore over loopback, as in tests/test_remote_store.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_gallery import Recorder, make_candidates

import comfynb
from comfynb.views.gallery import Gallery


class Reads:
    """A store that records how many rows each ``candidates`` read returned."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.rows: list[int] = []

    def candidates(self, *args: Any, **kwargs: Any) -> Any:
        frame = self._store.candidates(*args, **kwargs)
        self.rows.append(len(frame))
        return frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Any]:
    with comfynb.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "out") as opened:
        yield opened


def test_a_look_reads_new_candidates_and_picks_made_elsewhere(view: Any, store: Any) -> None:
    ids = make_candidates(store, 3)
    reads = Reads(view)
    gallery = Gallery(reads, run="r", poll=None)
    sent = Recorder(gallery).sent
    try:
        assert gallery.refresh() is False and reads.rows[-1] == 0  # nothing changed
        assert sent == []

        view.pick(ids[1])  # another view's pick and star, written through the store
        view.star(ids[2], 5)
        assert gallery.refresh() is True
        assert reads.rows[-1] == 2  # the two rows, not the run
        updates = [c for c, _ in sent if c["type"] == "update"]
        assert updates == [
            {"type": "update", "id": ids[1], "picked": True, "stars": None},
            {"type": "update", "id": ids[2], "picked": False, "stars": 5},
        ]
        assert not [c for c, _ in sent if c["type"] == "changed"]  # no tile moved

        more = make_candidates(store, 2)  # the worker records two more
        assert gallery.refresh() is True and reads.rows[-1] == 2
        assert gallery.count == 5 and gallery.ids() == ids + more
        assert {"type": "changed", "reset": False} in [c for c, _ in sent]

        gallery._on_message(gallery, {"type": "star", "id": more[0], "stars": 3}, [])
        before = len(sent)
        assert gallery.refresh() is True  # its own star comes back: nothing new to show
        assert len(sent) == before
    finally:
        gallery.close()


def test_a_pick_made_elsewhere_enters_a_picked_only_gallery(view: Any, store: Any) -> None:
    ids = make_candidates(store, 4)
    gallery = Gallery(view, run="r", only_picked=True, poll=None)
    sent = Recorder(gallery).sent
    try:
        assert gallery.count == 0
        view.pick(ids[3])
        gallery.refresh()
        assert gallery.ids() == [ids[3]]
        assert {"type": "changed", "reset": False} in [c for c, _ in sent]
        view.pick(ids[3], False)
        gallery.refresh()
        assert gallery.ids() == []
    finally:
        gallery.close()
