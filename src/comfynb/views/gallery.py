"""``Gallery``: the candidates of a run as a live grid of thumbnails, to pick and star.

Example::

    >>> gallery = comfynb.Gallery(store, run="portraits")
    >>> gallery            # in Jupyter: the grid; click to enlarge, p picks, 1-5 stars
    >>> gallery.selected   # the ids of the picked candidates, as saved in the store
    [12, 17]
    >>> gallery.save("sheet.png")   # a contact sheet with captions

The page asks for the tiles it shows (one page at a time) and the thumbnails travel as
binary comm buffers (256 px WebP, made once and cached on disk, see ``thumbnails``), so
10,000 candidates cost what one screen costs; the full image is sent only when a tile is
enlarged. Keyboard (click the grid first): arrows move, Enter enlarges, ``p`` picks,
``1``-``5`` stars (``0`` clears), ``s`` selects for comparing (or shift-click), ``c``
compares, ``Esc`` closes. A pick or a star is saved to the store at
once (``store.pick`` / ``store.star``). New candidates appear while the worker runs, and picks
and stars made elsewhere (another view, a cell, a notebook beside a worker) show: a background
thread reads every ``poll`` seconds only the candidates written since its last look
(``store.candidates(changed_since=...)``, one small query or request; see :meth:`Gallery.refresh`).

The enlarged view shows the candidate's params, buttons to its parent and children
(``store.lineage``) and a "refine" button: ``comfynb.refine(store, candidate,
params=gallery.refine_params)``, the queued job ids kept in ``gallery.refined``::

    >>> gallery.refine_params = [{"KSampler.seed": s} for s in range(4)]   # then click refine

Grouping: ``group_by="step"`` or a param/column (``"cfg"``, ``"KSampler.seed"``; also the
toolbar's "group" menu) shows the tiles under one header per value, the groups in order and
the sort kept inside each; pages still travel as binary buffers, each request naming its
grouping::

    >>> gallery = comfynb.Gallery(store, run="sweep", group_by="KSampler.cfg")
    >>> gallery.groups()
    [('KSampler.cfg = 4', 40), ('KSampler.cfg = 7', 40)]

Side by side: select two or more tiles (shift-click or ``s``), press "compare" (or ``c``):
the images next to each other above a params table whose differing rows are highlighted.
From Python, ``gallery.side_by_side(ids)`` gives the same as static HTML (``SideBySide``:
``.differing``, ``.table``); without ids it takes the page's selection, else the picked::

    >>> gallery.side_by_side([12, 17]).differing
    ['KSampler.cfg', 'seed']

Outside a live kernel (nbconvert, GitHub) the output shows a small static contact sheet.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import pandas as pd
import traitlets

from ..core.models import Candidate
from ..errors import InvalidInput
from .thumbnails import Thumbnails, placeholder
from .watchers import Watchers

if TYPE_CHECKING:
    from ..core.models import Run, Step
    from ..store.base import NotebookStore
    from .sidebyside import SideBySide

__all__ = ["Gallery"]

_FIXED = {
    "id", "job_id", "run_id", "step_id", "parent_candidate_id", "child_count", "node_id",
    "path", "sha256", "width", "height", "bytes", "picked", "stars", "created_at", "change_seq",
}  # fmt: skip
_BASE_SORTS = ["time", "newest", "stars", "seed", "cfg", "steps"]
_PROMPT_CHARS = 40
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def _caption(row: dict[str, Any]) -> str:
    parts = []
    for key in ("seed", "cfg", "steps"):
        value = row.get(key)
        if value is not None and value == value:  # not NaN
            parts.append(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}")
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt:
        short = prompt if len(prompt) <= _PROMPT_CHARS else prompt[: _PROMPT_CHARS - 1] + "…"
        parts.append(short)
    return " · ".join(parts) or f"#{row.get('id')}"


_CAPTION_LINES = 3
_PICKED = (46, 160, 67)  # the tiles' "picked" green


def _wrap(caption: str, width: float, measure: Any) -> list[str]:
    """A caption in at most ``_CAPTION_LINES`` lines of ``width``, broken between its parts
    (``seed 1 · cfg 7``); the last line ends with "…" if the rest does not fit."""
    lines: list[str] = []
    for part in caption.split(" · "):
        if lines and measure(f"{lines[-1]} · {part}") <= width:
            lines[-1] = f"{lines[-1]} · {part}"
        else:
            lines.append(part)
    if len(lines) > _CAPTION_LINES:
        lines = [*lines[: _CAPTION_LINES - 1], " · ".join(lines[_CAPTION_LINES - 1 :])]
    fitted = []
    for text in lines:
        while len(text) > 4 and measure(text) > width:
            text = text[:-2] + "…"
        fitted.append(text)
    return fitted


def _plain(value: Any) -> Any:
    """A DataFrame cell as JSON: NaN/NaT as None, numpy numbers as Python ones."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class Gallery(anywidget.AnyWidget):
    """The candidates of ``run`` (and ``step``), or of the whole store, as a live grid.

    ``page_size`` tiles per page; ``sort``: ``"time"`` (oldest first), ``"newest"``,
    ``"stars"`` or a param column (e.g. ``"cfg"``, ``"KSampler.seed"``); ``only_picked`` and
    ``min_stars`` filter; ``group_by``: ``"step"`` or a param/column (see ``group_options``),
    None for no groups; ``poll`` is the seconds between two looks for new candidates
    (``None``: no live updates). ``sent_bytes`` counts what was sent to the page.

    Example::

        >>> g = comfynb.Gallery(store, run="sweep", sort="cfg", min_stars=3)
        >>> g.selected
        [4, 9]
    """

    _esm = (Path(__file__).parent / "gallery.js").read_text(encoding="utf-8")

    count = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(24).tag(sync=True)
    sort = traitlets.Unicode("time").tag(sync=True)
    sort_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    only_picked = traitlets.Bool(False).tag(sync=True)
    min_stars = traitlets.Int(0).tag(sync=True)
    group_by = traitlets.Unicode("").tag(sync=True)
    group_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    compare_ids = traitlets.List(traitlets.Int()).tag(sync=True)

    def __init__(
        self,
        store: NotebookStore,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        *,
        sort: str = "time",
        only_picked: bool = False,
        min_stars: int = 0,
        group_by: str | None = None,
        page_size: int = 24,
        poll: float | None = 1.0,
        refine_params: Any = None,
    ) -> None:
        self._stop = threading.Event()
        self._watchers = Watchers()
        if not 1 <= page_size <= 500:
            raise InvalidInput(f"page_size must be 1..500, got {page_size!r}")
        if not 0 <= min_stars <= 5:
            raise InvalidInput(f"min_stars must be 0..5, got {min_stars!r}")
        super().__init__(page_size=page_size)
        self.store = store
        self.run_filter = run
        self.step_filter = step
        self.thumbnails = Thumbnails(store)
        #: The params the "refine" button passes to ``comfynb.refine`` (a dict or a list of
        #: dicts, one child each; None: one child with the candidate's own params).
        self.refine_params = refine_params
        #: The jobs queued by the "refine" button, newest last.
        self.refined: list[int] = []
        self.sent_bytes = 0
        self.messages = 0
        self._lock = threading.RLock()
        self._rows: dict[int, dict[str, Any]] = {}
        self._frame: pd.DataFrame | None = None
        self._order: list[int] = []
        self._cursor = 0  # the largest change number read (store.candidates(changed_since=))
        self._group_counts: dict[str, int] = {}
        self.reload()
        try:
            self._check_sort(sort)
            self._check_group(group_by or "")
        except InvalidInput:
            self.close()
            raise
        with self.hold_trait_notifications():
            self.sort, self.only_picked, self.min_stars = sort, only_picked, min_stars
            self.group_by = group_by or ""
        self._apply()
        self.on_msg(self._on_message)
        self.observe(self._on_filter, names=["sort", "only_picked", "min_stars", "group_by"])
        self._poller: threading.Thread | None = None
        if poll:
            self._poller = threading.Thread(
                target=self._poll, args=(float(poll),), name="comfynb-gallery", daemon=True
            )
            self._poller.start()

    # -- the data --------------------------------------------------------------------------
    def reload(self) -> None:
        """Read every candidate from the store again (the live updates read only changes)."""
        frame = self.store.candidates(run=self.run_filter, step=self.step_filter, changed_since=0)
        rows = {int(r["id"]): r for r in frame.to_dict("records")}
        with self._lock:
            self._frame, self._rows = frame, rows
            self._cursor = int(frame["change_seq"].max()) if len(frame) else 0
        self._options(frame)

    def refresh(self) -> bool:
        """Read the candidates written since the last look: new ones, and picks, stars and
        children made anywhere (this page, another view, a cell); show them. True if any.

        The live updates call it every ``poll`` seconds; one small query (or one request
        through a worker's endpoint) when nothing changed.

        Example::

            >>> store.pick(12)          # a cell, or another gallery
            >>> gallery.refresh()       # (the poll does it by itself)
            True
        """
        new = self.store.candidates(
            run=self.run_filter, step=self.step_filter, changed_since=self._cursor
        )
        if new.empty:
            return False
        records = {int(r["id"]): r for r in new.to_dict("records")}
        with self._lock:
            frame = self._frame
            assert frame is not None
            before = {i: self._rows.get(i) for i in records}
            kept = frame[~frame["id"].isin(list(records))]
            frame = pd.concat([kept, new], ignore_index=True) if len(kept) else new
            self._frame = frame
            self._rows.update(records)
            self._cursor = max(self._cursor, int(new["change_seq"].max()))
        if any(row is None for row in before.values()):
            self._options(frame)
        moved = [
            (i, row)
            for i, row in records.items()
            if before[i] is not None
            and (before[i]["picked"], _plain(before[i]["stars"]))  # type: ignore[index]
            != (row["picked"], _plain(row["stars"]))
        ]
        count, order = self.count, self.ids()
        self._apply()
        for candidate_id, row in moved:  # a pick or star made elsewhere: the tile shows it
            self._emit(
                {
                    "type": "update",
                    "id": candidate_id,
                    "picked": bool(row["picked"]),
                    "stars": _plain(row["stars"]),
                }
            )
        if self.count != count or self.ids() != order:  # new tiles, or a filter/sort moved
            self._emit({"type": "changed", "reset": False})
        return True

    def _options(self, frame: pd.DataFrame) -> None:
        """The sort and group menus: the base ones and each param column of ``frame``."""
        params = [c for c in frame.columns if c not in _FIXED and c not in _BASE_SORTS]
        options = _BASE_SORTS + [p for p in params if p not in ("sampler", "prompt")]
        if options != list(self.sort_options):
            self.sort_options = options
        groups = ["", "step"] + [c for c in frame.columns if c not in _FIXED and c != "prompt"]
        if groups != list(self.group_options):
            self.group_options = groups

    def _check_sort(self, sort: str) -> None:
        if sort not in self.sort_options and sort not in _BASE_SORTS:
            raise InvalidInput(f"unknown sort {sort!r}: use one of {', '.join(self.sort_options)}")

    def _check_group(self, group_by: str) -> None:
        if group_by not in self.group_options and group_by not in ("", "step"):
            names = ", ".join(repr(g) for g in self.group_options if g)
            raise InvalidInput(f"unknown group_by {group_by!r}: use None or one of {names}")

    def _group_column(self) -> str | None:
        group = self.group_by
        if group == "step":
            return "step_id"
        with self._lock:
            frame = self._frame
        return group if group and frame is not None and group in frame.columns else None

    def group_of(self, candidate_id: int) -> str | None:
        """The header of the group ``candidate_id`` is shown under (None: no grouping).

        Example::

            >>> Gallery(store, "sweep", group_by="cfg").group_of(12)
            'cfg = 7'
        """
        column = self._group_column()
        if column is None:
            return None
        with self._lock:
            value = _plain(self._rows[candidate_id].get(column))
        if self.group_by == "step":
            return "no step" if value is None else f"step {value}"
        if value is None:
            return f"{self.group_by}: not set"
        return (
            f"{self.group_by} = {value:g}"
            if isinstance(value, float)
            else f"{self.group_by} = {value}"
        )

    def groups(self) -> list[tuple[str, int]]:
        """The group headers in the order shown, with how many candidates each holds.

        Example::

            >>> Gallery(store, "sweep", group_by="step").groups()
            [('step 1', 40), ('step 2', 12)]
        """
        with self._lock:
            return list(self._group_counts.items())

    def _apply(self) -> None:
        with self._lock:
            frame = self._frame
            assert frame is not None
            if self.only_picked:
                frame = frame[frame["picked"]]
            if self.min_stars:
                frame = frame[frame["stars"].fillna(0) >= self.min_stars]
            sort = self.sort
            if sort == "newest":
                frame = frame.sort_values("id", ascending=False)
            elif sort == "stars":
                frame = frame.sort_values(
                    ["stars", "id"], ascending=[False, True], na_position="last"
                )
            elif sort in frame.columns and sort != "time":
                frame = frame.sort_values([sort, "id"], kind="stable", na_position="last")
            else:
                frame = frame.sort_values("id")
            column = self._group_column()
            if column is not None:  # the groups in order, the sort kept inside each
                frame = frame.sort_values(column, kind="stable", na_position="last")
            self._order = [int(i) for i in frame["id"]]
            counts: dict[str, int] = {}
            if column is not None:
                for i in self._order:
                    label = self.group_of(i) or ""
                    counts[label] = counts.get(label, 0) + 1
            self._group_counts = counts
        self.count = len(self._order)

    def _on_filter(self, change: dict[str, Any]) -> None:
        if change["name"] == "sort":
            with contextlib.suppress(InvalidInput):
                self._check_sort(change["new"])
        if change["name"] == "group_by":
            try:
                self._check_group(change["new"])
            except InvalidInput as exc:
                self._emit({"type": "error", "message": str(exc)})
                self.group_by = change["old"]
                return
        self._apply()
        self._emit({"type": "changed", "reset": True})

    @property
    def selected(self) -> list[int]:
        """The ids of the picked candidates shown by this gallery, read from the store."""
        frame = self.store.candidates(run=self.run_filter, step=self.step_filter, picked=True)
        return [int(i) for i in frame["id"]]

    def pick(self, candidate: Candidate | int, picked: bool = True) -> Candidate:
        """Pick (or unpick) a candidate from code, as ``p`` does in the page: saved in the
        store (``store.pick``) and shown on its tile at once. A ``store.pick`` call alone
        reaches the tiles only when the gallery next reloads.

        Example::

            >>> gallery.pick(gallery.ids()[0]).picked
            True
        """
        found = self.store.pick(candidate, picked)
        self._update(found)
        return found

    def star(self, candidate: Candidate | int, stars: int | None) -> Candidate:
        """Star a candidate 0-5 (``None`` clears) from code, as the keys ``1``-``5`` do in
        the page: saved in the store (``store.star``) and shown on its tile at once.

        Example::

            >>> gallery.star(12, 4).stars
            4
        """
        found = self.store.star(candidate, stars)
        self._update(found)
        return found

    def ids(self) -> list[int]:
        """The candidate ids in the order shown (after the filters and the sort)."""
        with self._lock:
            return list(self._order)

    def side_by_side(self, ids: list[int] | None = None) -> SideBySide:
        """Two or more candidates side by side, with a params table whose differing rows
        are highlighted; renders as static HTML (small WebP thumbnails inline).

        ``ids``: the candidates to compare; None: the ones selected in the page
        (shift-click or ``s`` on a tile), or else the picked ones.

        Example::

            >>> view = gallery.side_by_side([12, 17])
            >>> view.differing          # the params that are not the same for all
            ['KSampler.cfg', 'seed']
            >>> view                    # in Jupyter: the images and the table
        """
        from .sidebyside import SideBySide

        chosen = list(ids) if ids is not None else list(self.compare_ids) or self.selected
        return SideBySide.build(self.store, chosen, thumbnails=self.thumbnails)

    # -- talking to the page ---------------------------------------------------------------
    def _emit(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        self.sent_bytes += len(json.dumps(content)) + sum(len(b) for b in buffers or [])
        self.messages += 1
        self.send(content, buffers)

    def page(self, start: int, count: int) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Tiles ``start`` .. ``start + count`` of the shown order: captions and WebP bytes."""
        with self._lock:
            ids = self._order[max(0, start) : max(0, start) + max(0, min(count, 500))]
            rows = [self._rows[i] for i in ids]
        tiles, buffers = [], []
        grouped = self._group_column() is not None
        for row in rows:
            tile = {
                "id": int(row["id"]),
                "caption": _caption(row),
                "picked": bool(row["picked"]),
                "stars": _plain(row["stars"]),
            }
            if grouped:
                tile["group"] = self.group_of(int(row["id"]))
            tiles.append(tile)
            buffers.append(self.thumbnails.get(self._candidate(row)))
        return tiles, buffers

    def _candidate(self, row: dict[str, Any]) -> Candidate | int:
        sha = row.get("sha256")
        if isinstance(sha, str) and sha:
            # enough for the thumbnail cache: the image's hash and path, no store round trip
            fields = {f: _plain(row.get(f)) for f in Candidate.__dataclass_fields__}
            fields.update(params={}, picked=bool(row["picked"]), created_at=row["created_at"])
            with contextlib.suppress(TypeError, ValueError):
                return Candidate(**fields)
        return int(row["id"])

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        try:
            kind = content.get("type")
            if kind == "hello":
                self._watchers.hello()
            elif kind == "bye":
                self._watchers.bye()
            elif kind == "page":
                if content.get("group_by", self.group_by) != self.group_by:
                    return  # asked under a grouping since changed: a fresh request follows
                tiles, buffers = self.page(int(content["start"]), int(content["count"]))
                counts = dict(self.groups())
                reply = {
                    "type": "page",
                    "req": content.get("req"),
                    "group_by": self.group_by,
                    "tiles": tiles,
                    "groups": {
                        t["group"]: counts.get(t["group"], 0) for t in tiles if "group" in t
                    },
                }
                self._emit(reply, buffers)
            elif kind == "compare":
                view = self.side_by_side([int(i) for i in content["ids"]])
                self._emit({"type": "compare", "html": view._repr_html_()})
            elif kind == "full":
                self._send_full(int(content["id"]))
            elif kind == "pick":
                self._update(self.store.pick(int(content["id"]), bool(content["picked"])))
            elif kind == "refine":
                from ..jobs.refine import refine

                jobs = refine(self.store, int(content["id"]), params=self.refine_params)
                self.refined += [job.id for job in jobs]
                self._emit({"type": "refined", "id": int(content["id"]), "jobs": len(jobs)})
            elif kind == "star":
                stars = content.get("stars")
                self._update(
                    self.store.star(int(content["id"]), None if stars is None else int(stars))
                )
        except Exception as exc:  # never a dead widget: say it in the page
            self._emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

    def _send_full(self, candidate_id: int) -> None:
        candidate = self.store.candidate(candidate_id)
        path = self.store.image_path(candidate)
        try:
            data, mime = path.read_bytes(), _MIME.get(path.suffix.lower(), "image/png")
        except OSError:
            data, mime = placeholder(512), "image/webp"
        params = {k: v for k, v in candidate.params.items()}
        text = "\n".join(
            [
                f"candidate {candidate.id} · job {candidate.job_id} · run {candidate.run_id}",
                f"{candidate.width}x{candidate.height} · {path.name}",
                f"seed {candidate.seed} · cfg {candidate.cfg} · steps {candidate.steps}"
                f" · sampler {candidate.sampler}",
                f"prompt: {candidate.prompt}",
                "params: " + json.dumps(params, indent=1, default=str),
            ]
        )
        family = self.store.lineage(candidate)
        parent = family[family["depth"] == -1]["id"]
        children = [int(i) for i in family[family["depth"] == 1]["id"]]
        content = {
            "type": "full",
            "id": candidate.id,
            "mime": mime,
            "text": text,
            "picked": candidate.picked,
            "stars": candidate.stars,
            "parent": int(parent.iloc[0]) if len(parent) else None,
            "children": children,
        }
        self._emit(content, [data])

    def _update(self, candidate: Candidate) -> None:
        with self._lock:
            row = self._rows.get(candidate.id)
            if row is not None:
                row["picked"], row["stars"] = candidate.picked, candidate.stars
            if self._frame is not None:
                at = self._frame["id"] == candidate.id
                self._frame.loc[at, "picked"] = candidate.picked
                self._frame.loc[at, "stars"] = candidate.stars
        self._emit(
            {
                "type": "update",
                "id": candidate.id,
                "picked": candidate.picked,
                "stars": candidate.stars,
            }
        )

    # -- live ------------------------------------------------------------------------------
    @property
    def watched(self) -> bool:
        """True while the gallery shows in a notebook (or before it first showed): it looks
        for new candidates only then. Its output cleared (the cell run again), it rests until
        shown again."""
        return self._watchers.watched

    def _poll(self, every: float) -> None:
        while not self._stop.wait(max(every, 0.5)):
            self._watchers.park(self._stop)  # no view open: rest until one opens
            if self._stop.is_set():
                return
            with contextlib.suppress(Exception):  # a closed store ends nothing but the looks
                self.refresh()

    def close(self) -> None:
        """Stop the live updates and close the widget."""
        stop = getattr(self, "_stop", None)  # None: __init__ refused its arguments
        if stop is not None:
            stop.set()
            self._watchers.release()
        super().close()

    # -- outside a live kernel -------------------------------------------------------------
    def _sheet(self, limit: int, size: int, captions: bool) -> Any:
        from PIL import Image, ImageDraw

        tiles, buffers = self.page(0, limit)
        columns = max(1, min(6, len(tiles)))
        rows = max(1, math.ceil(len(tiles) / columns))
        caption_h = 14 * _CAPTION_LINES if captions else 0
        sheet = Image.new("RGB", (columns * (size + 4), rows * (size + 4 + caption_h)), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (tile, data) in enumerate(zip(tiles, buffers, strict=True)):
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail((size, size))
                x, y = (i % columns) * (size + 4) + 2, (i // columns) * (size + 4 + caption_h) + 2
                sheet.paste(image.convert("RGB"), (x + (size - image.width) // 2, y))
            if captions:
                for line, text in enumerate(_wrap(tile["caption"], size, draw.textlength)):
                    draw.text((x, y + size + 1 + 14 * line), text, fill="black")
                marks = ("picked " if tile["picked"] else "") + "*" * int(tile["stars"] or 0)
                if tile["picked"]:  # as the tiles show it: a green frame
                    draw.rectangle(
                        (x - 2, y - 2, x + size + 1, y + size + 1), outline=_PICKED, width=2
                    )
                if marks:  # and a label: picked, the stars
                    box = draw.textbbox((x + 3, y + 3), marks)
                    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=_PICKED)
                    draw.text((x + 3, y + 3), marks, fill="white")
        return sheet

    def save(self, path: str | Path, *, limit: int = 60, size: int = 192) -> Path:
        """Write a contact sheet (PNG/JPEG/WebP by the suffix) of the first ``limit`` tiles
        shown, with their captions.

        Example::

            >>> gallery.save("sheet.png")
            PosixPath('sheet.png')
        """
        target = Path(path)
        self._sheet(limit, size, captions=True).save(target)
        return target

    def _repr_html_(self) -> str:
        """A small static contact sheet (24 thumbnails of 96 px), for where no kernel runs."""
        out = io.BytesIO()
        self._sheet(24, 96, captions=False).save(out, "WEBP", quality=70)
        data = base64.b64encode(out.getvalue()).decode("ascii")
        return (
            f"<div><b>comfynb.Gallery</b>: {self.count} candidates (first {min(24, self.count)})"
            f'<br><img src="data:image/webp;base64,{data}"></div>'
        )

    def __repr__(self) -> str:
        """What a terminal or a text-only output shows, e.g. ``Gallery(run='quickstart',
        6 candidates, 1 picked)``."""
        shown = getattr(self.run_filter, "name", self.run_filter)  # a Run: its name
        with self._lock:
            picked = sum(1 for i in self._order if self._rows[i].get("picked"))
        step_id = getattr(self.step_filter, "id", self.step_filter)
        step = f", step={step_id!r}" if step_id is not None else ""
        return f"Gallery(run={shown!r}{step}, {self.count} candidates, {picked} picked)"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        with contextlib.suppress(Exception):
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            if data is not None:
                data["text/html"] = self._repr_html_()
        return bundle
