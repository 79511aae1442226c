"""Thumbnails for the gallery: made once (256 px WebP), cached on disk by content hash.

A candidate's thumbnail lives beside the outputs, in ``<output_dir>/.thumbs/<sha256>.webp``,
named by the sha256 of the image's bytes (the one the store recorded, or computed from the
file), so the same image is thumbnailed once however many candidates or galleries show it.
It is written atomically (a temp file renamed over), so a crash never leaves half a file.
A missing or corrupt image gives a grey placeholder, never an exception.

Example::

    >>> from comfynb.views.thumbnails import Thumbnails
    >>> thumbs = Thumbnails(store)
    >>> data = thumbs.get(store.candidate(12))   # WebP bytes, 256 px on the long side
    >>> thumbs.path(store.candidate(12))
    PosixPath('/home/me/outputs/.thumbs/9f2c...e1.webp')
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.models import Candidate

if TYPE_CHECKING:
    from ..store.base import NotebookStore

__all__ = ["THUMB_SIZE", "Thumbnails", "placeholder"]

#: Long side of a thumbnail, in pixels.
THUMB_SIZE = 256
_QUALITY = 80
_FOLDER = ".thumbs"


@cache
def placeholder(size: int = THUMB_SIZE) -> bytes:
    """A grey square (WebP bytes) shown for a missing or unreadable image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (70, 70, 70))
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, size, size), fill=(120, 120, 120), width=3)
    draw.line((0, size, size, 0), fill=(120, 120, 120), width=3)
    out = io.BytesIO()
    image.save(out, "WEBP", quality=_QUALITY)
    return out.getvalue()


def make_thumbnail(source: Path, size: int = THUMB_SIZE) -> bytes:
    """WebP bytes of ``source`` shrunk to ``size`` px on the long side (never enlarged).

    Raises ``OSError`` (or PIL's errors) if the file is missing or not an image.
    """
    from PIL import Image

    with Image.open(source) as opened:
        opened.draft("RGB", (size, size))  # JPEG: decode at a smaller scale, much faster
        opened.thumbnail((size, size))
        image: Image.Image = opened
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        out = io.BytesIO()
        image.save(out, "WEBP", quality=_QUALITY, method=0)
        return out.getvalue()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".webp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Thumbnails:
    """The thumbnail cache of one store (see the module's docstring).

    ``built`` and ``cached`` count how many thumbnails were made and how many came from the
    disk cache, ``failed`` how many images gave the placeholder.

    Example::

        >>> thumbs = Thumbnails(store)
        >>> len(thumbs.get(12))   # a candidate or its id
        5812
    """

    def __init__(self, store: NotebookStore, size: int = THUMB_SIZE) -> None:
        self.store = store
        self.size = size
        self.folder = Path(store.output_dir) / _FOLDER
        self.built = 0
        self.cached = 0
        self.failed = 0

    def path(self, candidate: Candidate | int) -> Path | None:
        """Where ``candidate``'s thumbnail is (or would be) cached; None if its image is gone."""
        found = candidate if isinstance(candidate, Candidate) else self.store.candidate(candidate)
        digest = found.sha256
        if not digest:
            try:
                digest = _sha256_of(self.store.image_path(found))
            except OSError:
                return None
        suffix = "" if self.size == THUMB_SIZE else f"-{self.size}"
        return self.folder / f"{digest}{suffix}.webp"

    def get(self, candidate: Candidate | int) -> bytes:
        """The thumbnail's WebP bytes: from the cache, else made and cached; a placeholder if
        the image is missing or corrupt (never raises for a bad image)."""
        try:
            found = (
                candidate if isinstance(candidate, Candidate) else self.store.candidate(candidate)
            )
            target = self.path(found)
            if target is None:
                raise OSError("image missing")
            with contextlib.suppress(OSError):
                data = target.read_bytes()
                if data:
                    self.cached += 1
                    return data
            data = make_thumbnail(self.store.image_path(found), self.size)
        except Exception:  # a missing, truncated or foreign file: show a placeholder
            self.failed += 1
            return placeholder(self.size)
        with contextlib.suppress(OSError):  # a read-only output folder: serve uncached
            _write_atomically(target, data)
        self.built += 1
        return data
