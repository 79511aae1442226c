"""``SideBySide``: a few candidates next to each other, their differing params highlighted.

Made by ``Gallery.side_by_side(ids)`` (or the page's "compare" button). Example::

    >>> view = gallery.side_by_side([12, 17, 21])
    >>> view.differing            # params not the same for all, in table order
    ['KSampler.cfg', 'seed']
    >>> view.table                # a DataFrame: one row per param, one column per candidate
    >>> view                      # in Jupyter: the images and the table (static HTML)
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from .thumbnails import Thumbnails

if TYPE_CHECKING:
    import pandas as pd

    from ..store.base import NotebookStore

__all__ = ["SideBySide"]

MAX_CANDIDATES = 12
_BASE = ("seed", "cfg", "steps", "sampler", "prompt")


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


@dataclass(frozen=True)
class SideBySide:
    """Candidates ``ids`` side by side; ``rows``: (param, one value per candidate);
    ``differing``: the params whose values are not all equal.

    Example::

        >>> SideBySide.build(store, [12, 17]).differing
        ['seed']
    """

    ids: list[int]
    rows: list[tuple[str, list[Any]]]
    differing: list[str]
    images: list[bytes]

    @classmethod
    def build(
        cls, store: NotebookStore, ids: list[int], *, thumbnails: Thumbnails | None = None
    ) -> SideBySide:
        """Read ``ids`` (2..12 candidates) from ``store`` and their cached thumbnails."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        if not 2 <= len(ids) <= MAX_CANDIDATES:
            raise InvalidInput(
                f"side by side needs 2..{MAX_CANDIDATES} candidates, got {len(ids)}: select"
                " them in the gallery (shift-click or 's'), pick them, or pass ids=[...]"
            )
        thumbs = thumbnails or Thumbnails(store)
        candidates = [store.candidate(i) for i in ids]
        names: list[str] = list(_BASE)
        for c in candidates:
            names += [k for k in c.params if k not in names]
        names += ["run_id", "step_id", "job_id", "parent_candidate_id", "stars", "picked"]
        rows: list[tuple[str, list[Any]]] = []
        for name in names:
            values = [
                c.params[name] if name in c.params else getattr(c, name, None) for c in candidates
            ]
            rows.append((name, values))
        differing = [
            n for n, v in rows if len({json.dumps(x, sort_keys=True, default=str) for x in v}) > 1
        ]
        images = [thumbs.get(c) for c in candidates]
        return cls(ids, rows, differing, images)

    @property
    def table(self) -> pd.DataFrame:
        """One row per param, one column per candidate id; ``differs`` marks the rows."""
        import pandas as pd

        frame = pd.DataFrame(
            {f"#{i}": [v[k] for _, v in self.rows] for k, i in enumerate(self.ids)},
            index=[n for n, _ in self.rows],
        )
        frame["differs"] = [n in self.differing for n, _ in self.rows]
        return frame

    def _repr_html_(self) -> str:
        width = max(120, min(256, 900 // len(self.ids)))
        cells = "".join(
            f'<td style="text-align:center"><img class="cnb-sbs-img" style="width:{width}px"'
            f' src="data:image/webp;base64,{base64.b64encode(data).decode("ascii")}"><br>'
            f"#{i}</td>"
            for i, data in zip(self.ids, self.images, strict=True)
        )
        lines = []
        for name, values in self.rows:
            differs = name in self.differing
            style = ' style="background:#fd04;font-weight:bold"' if differs else ""
            tds = "".join(f"<td>{html.escape(_text(v))}</td>" for v in values)
            lines.append(
                f'<tr class="cnb-sbs-row{" cnb-differs" if differs else ""}"{style}>'
                f"<th style='text-align:left'>{html.escape(name)}</th>{tds}</tr>"
            )
        return (
            f'<div class="cnb-sbs"><b>side by side</b>: {len(self.ids)} candidates,'
            f" {len(self.differing)} differing params (highlighted)"
            f'<table style="border-collapse:collapse"><tr><th></th>{cells}</tr>'
            + "".join(lines)
            + "</table></div>"
        )
