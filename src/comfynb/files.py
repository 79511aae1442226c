"""Output files: safe paths for server-named files, atomic writes, image checks.

A server names its output files; comfynb never lets such a name put a file outside the folder the
user chose, and never leaves a half-written or undecodable image behind.

Example::

    >>> path = safe_output_path("out", "sub", "trivial_00001_.png")
    >>> with atomic_image_file(path) as f:
    ...     f.write(png_bytes)
    >>> path
    PosixPath('out/sub/trivial_00001_.png')
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .core import crashpoints as _crashpoints
from .errors import CorruptImage, OutputError, UnsafePath

__all__ = [
    "NAME_MAX",
    "PART_GLOB",
    "AtomicImageWriter",
    "ImageFacts",
    "atomic_image_file",
    "check_image",
    "image_facts",
    "safe_output_path",
    "write_image_atomic",
]

_DRIVE = re.compile(r"^[A-Za-z]:")

#: The longest file or folder name, in bytes, that common file systems take (ext4, XFS,
#: APFS, NTFS): a server-named part longer than this fails its job with a clear reason.
NAME_MAX = 255
#: The temporary file of an unfinished download, in the folder of its target (whatever the
#: target's name, the temporary name is short): what ``recover`` looks for after a crash.
PART_PREFIX, PART_SUFFIX = ".comfynb-", ".part"
PART_GLOB = f"{PART_PREFIX}*{PART_SUFFIX}"


def _check_part(part: str, what: str, raw: str) -> None:
    if part in ("", ".", ".."):
        raise UnsafePath(
            f"the server named an output {what} {raw!r}, which would leave the output folder; "
            "refusing to write it (is the server compromised or misconfigured?)"
        )


def _check_name(value: str, what: str, *, allow_slash: bool) -> list[str]:
    """The path parts of ``value``, or ``UnsafePath`` if any could escape the output folder."""
    unsafe = (
        "\x00" in value
        or value.startswith(("/", "\\"))
        or bool(_DRIVE.match(value))
        or (not allow_slash and ("/" in value or "\\" in value))
    )
    if unsafe:
        raise UnsafePath(
            f"the server named an output {what} {value!r} (absolute, a drive, a NUL byte or a "
            "separator); refusing to write it outside the output folder"
        )
    parts = re.split(r"[/\\]", value) if value else []
    for part in parts:
        _check_part(part, what, value)
        _check_length(part, what)
    return parts


def _check_length(part: str, what: str) -> None:
    size = len(os.fsencode(part))
    if size > NAME_MAX:
        raise OutputError(
            f"the server named an output {what} of {size} bytes ({part[:40]!r}...); file "
            f"systems take names of at most {NAME_MAX} bytes. Use a shorter filename_prefix"
        )


def _too_long(exc: OSError, target: Path) -> OutputError:
    """``ENAMETOOLONG`` from this file system (shorter limits than ``NAME_MAX`` exist)."""
    return OutputError(
        f"this file system refused the name of {target.name[:40]!r}... ({exc.strerror}, "
        f"{len(os.fsencode(target.name))} bytes); use a shorter filename_prefix"
    )


def safe_output_path(dest_dir: str | os.PathLike[str], subfolder: str, filename: str) -> Path:
    """Where a server-named file goes under ``dest_dir``, or ``UnsafePath``.

    ``subfolder`` may hold several folders (``"a/b"``); neither it nor ``filename`` may be absolute,
    carry a drive letter or a NUL byte, or contain a ``..`` part; ``filename`` is one name. The
    result is checked to stay inside ``dest_dir`` after resolving symlinks.

    Example::

        >>> safe_output_path("out", "", "../../x.png")
        Traceback (most recent call last):
        comfynb.errors.UnsafePath: the server named an output file '../../x.png' ...

    Raises:
        UnsafePath: the name would land outside ``dest_dir``.
        OutputError: a name longer than file systems take (``NAME_MAX`` bytes).
    """
    folders = _check_name(subfolder, "subfolder", allow_slash=True)
    (name,) = _check_name(filename, "file", allow_slash=False) or [""]
    if not name:
        raise UnsafePath("the server named an output file with an empty name; refusing to write it")
    root = Path(dest_dir)
    target = root.joinpath(*folders, name)
    if not folders and not target.is_symlink():
        return target  # a plain name straight under root: it cannot lead out of it
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):
        raise UnsafePath(
            f"{target} resolves outside {resolved_root} (a symlink?); refusing to write it"
        )
    return target


def check_image(path: str | os.PathLike[str]) -> str:
    """Decode the whole image at ``path``; its format (``"PNG"``...) or ``CorruptImage``.

    Raises:
        CorruptImage: the file is not a whole image that pillow can decode.
    """
    return _decoded(Path(path).read_bytes(), repr(os.fspath(path)))[0]


def _decoded(content: bytes, name: str) -> tuple[str, int, int]:
    """Decode the whole image in ``content``: (format, width, height), or ``CorruptImage``.

    ``name`` says which image, as the message shows it.
    """
    from PIL import Image  # pillow is imported only when an image is checked

    try:
        with Image.open(io.BytesIO(content)) as image:
            image.verify()  # checksums and structure; leaves the image unusable
            if image.format == "PNG":
                # every chunk's CRC was checked, up to IEND: a cut or changed byte fails
                # there, so decoding the pixels (costly for big images) proves nothing more
                return "PNG", *image.size
        with Image.open(io.BytesIO(content)) as image:
            image.load()  # the pixels: a truncated body fails here
            return str(image.format), *image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImage(f"{name} is not a whole image ({exc}); download it again") from exc


@dataclass(frozen=True)
class ImageFacts:
    """What the store keeps about an image file: its size on disk, digest and pixel size."""

    bytes: int
    sha256: str
    width: int
    height: int


def image_facts(path: str | os.PathLike[str]) -> ImageFacts:
    """Size, SHA-256 and pixel size of the image at ``path``.

    Example::

        >>> image_facts("out/trivial_00001_.png")
        ImageFacts(bytes=178, sha256='9f2c...', width=64, height=64)

    Raises:
        CorruptImage: the file is not an image pillow can read.
    """
    from PIL import Image

    content = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage(f"{os.fspath(path)!r} is not an image ({exc})") from exc
    return ImageFacts(len(content), hashlib.sha256(content).hexdigest(), width, height)


@functools.cache
def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp's temp files are 0600)."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicImageWriter:
    """An image file written all or nothing: a temporary file next to ``target`` until ``commit``.

    The temporary file is ``.comfynb-<random>.part`` in ``target``'s folder (``PART_GLOB``),
    short whatever ``target``'s name: a name that fits the file system always has a
    temporary name that fits too.

    ``commit`` checks that the bytes decode as an image, syncs them and renames the file onto
    ``target`` in one step; ``discard`` (or a failed check) removes it. ``atomic_image_file`` is
    the usual way in; the async client calls ``commit`` on a worker thread. The bytes are
    checked (and their ``facts`` taken) from memory, not read back from the file.

    Raises:
        CorruptImage: from ``commit``, when the bytes are not a whole image (nothing is left).
        OutputError: a name this file system refuses as too long (nothing is left).
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        folder = self.target.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise _too_long(exc, folder) from exc
            raise
        fd, name = tempfile.mkstemp(prefix=PART_PREFIX, suffix=PART_SUFFIX, dir=folder)
        self._tmp = Path(name)
        self._content = bytearray()
        self.facts: ImageFacts | None = None  # set by commit
        self._file: BinaryIO = os.fdopen(fd, "wb")
        if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
            os.fchmod(fd, _file_mode())

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        self._file.write(data)
        self._content += data
        _crashpoints.reached("download.write")  # the crash test's "middle of a download"

    def commit(self) -> Path:
        """Check, sync and rename onto ``target``; the target path."""
        try:
            content = bytes(self._content)
            # named by the image it was to become: the temporary file is gone when this raises
            _, width, height = _decoded(content, f"the image for {os.fspath(self.target)!r}")
            digest = hashlib.sha256(content).hexdigest()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.target)
        except OSError as exc:
            self.discard()
            if exc.errno == errno.ENAMETOOLONG:
                raise _too_long(exc, self.target) from exc
            raise
        except BaseException:
            self.discard()
            raise
        _fsync_dir(self.target.parent)
        self.facts = ImageFacts(len(content), digest, width, height)
        self._content = bytearray()
        return self.target

    def discard(self) -> None:
        """Drop the temporary file; ``target`` is left as it was."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_image_file(target: str | os.PathLike[str]) -> Iterator[AtomicImageWriter]:
    """Write an image to ``target`` all or nothing.

    Yields a writer whose file sits in ``target``'s folder; when the block ends, the bytes are
    checked to decode as an image, synced to disk and renamed onto ``target`` in one step. If the
    block raises or the image does not decode, nothing is left behind.

    Raises:
        CorruptImage: the written bytes are not a whole image.
    """
    writer = AtomicImageWriter(target)
    try:
        yield writer
    except BaseException:
        writer.discard()
        raise
    writer.commit()


def write_image_atomic(target: str | os.PathLike[str], content: bytes) -> Path:
    """Write ``content`` to ``target`` with ``atomic_image_file``; the path written.

    Raises:
        CorruptImage: ``content`` is not a whole image (nothing is written).
    """
    with atomic_image_file(target) as f:
        f.write(content)
    return Path(target)
