"""``compare``: an XY grid of a run's candidates by two params, with axis labels.

Like the XY plots ComfyUI users build by hand: one column per value of ``x``, one row per
value of ``y``, the candidate of each pair in its cell (the best starred, else the newest),
a blank where none is. It shows as a PNG in any notebook (no kernel needed to view it) and
``save`` writes it.

Example::

    >>> grid = comfynb.compare(store, "sweep", x="KSampler.cfg", y="KSampler.seed")
    >>> grid               # the image, 160 px thumbnails with cfg across and seed down
    >>> grid.ids           # a DataFrame: y values down, x values across, candidate ids
    >>> grid.save("xy.png")
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from .thumbnails import Thumbnails

if TYPE_CHECKING:
    import pandas as pd

    from ..core.models import Run
    from ..store.base import NotebookStore

__all__ = ["CompareGrid", "compare"]


@dataclass
class CompareGrid:
    """The result of :func:`compare`: ``ids`` (y down, x across) and the picture."""

    x: str
    y: str
    ids: pd.DataFrame
    image: Any

    def _repr_png_(self) -> bytes:
        out = io.BytesIO()
        self.image.save(out, "PNG")
        return out.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the grid (PNG, JPEG or WebP by the suffix).

        Example::

            >>> comfynb.compare(store, "sweep", x="KSampler.cfg", y="KSampler.seed").save("xy.png")
            PosixPath('xy.png')
        """
        target = Path(path)
        self.image.save(target)
        return target


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def compare(
    store: NotebookStore, run: Run | int | str, x: str, y: str, *, size: int = 160
) -> CompareGrid:
    """An XY grid of ``run``'s candidates by the params ``x`` and ``y`` (see the module).

    ``x`` and ``y`` name candidate columns: a param as enqueued (``"KSampler.cfg"``) or
    ``seed``, ``cfg``, ``steps``, ``sampler``.

    Raises:
        InvalidInput: ``x`` or ``y`` is not a column of the run's candidates.
    """
    import pandas as pd
    from PIL import Image, ImageDraw

    frame = store.candidates(run=run)
    for name in (x, y):
        if name not in frame.columns:
            known = sorted(c for c in frame.columns if "." in c or c in ("seed", "cfg", "steps"))
            raise InvalidInput(f"no param {name!r} in the run's candidates; use one of {known}")
    frame = frame.dropna(subset=[x, y])
    frame = frame.assign(_rank=frame["stars"].fillna(-1)).sort_values(
        ["_rank", "id"], ascending=[False, False]
    )
    best = frame.drop_duplicates([x, y])
    ids = best.pivot(index=y, columns=x, values="id").sort_index().sort_index(axis=1)
    thumbs = Thumbnails(store)
    left, top, pad = 70, 24, 4
    cols, rows = list(ids.columns), list(ids.index)
    sheet = Image.new(
        "RGB", (left + len(cols) * (size + pad), top + len(rows) * (size + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), f"rows: {y}   columns: {x}", fill="black")
    for j, value in enumerate(cols):
        draw.text((left + j * (size + pad) + size // 2 - 10, 10), _label(value), fill="black")
    for i, value in enumerate(rows):
        draw.text((4, top + i * (size + pad) + size // 2), _label(value)[:10], fill="black")
        for j in range(len(cols)):
            cid = ids.iat[i, j]
            if pd.isna(cid):  # no candidate for this pair
                continue
            with Image.open(io.BytesIO(thumbs.get(int(cid)))) as image:
                image.thumbnail((size, size))
                sheet.paste(image.convert("RGB"), (left + j * (size + pad), top + i * (size + pad)))
    return CompareGrid(x, y, ids, sheet)
