"""files.py: safe paths for server-named files and all-or-nothing image writes, on real files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from comfynb import files
from comfynb.errors import CorruptImage, UnsafePath


def png_bytes(size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


HOSTILE = [
    ("", "../../x.png"),
    ("", "/tmp/comfynb-evil.png"),
    ("", "x\x00.png"),
    ("", "C:evil.png"),
    ("", "sub/x.png"),
    ("", "..\\x.png"),
    ("", ""),
    ("", ".."),
    ("..", "x.png"),
    ("a/../..", "x.png"),
    ("/etc", "x.png"),
    ("C:\\Windows", "x.png"),
    ("a\x00", "x.png"),
]


@pytest.mark.parametrize(("subfolder", "filename"), HOSTILE)
def test_hostile_names_are_refused(tmp_path: Path, subfolder: str, filename: str) -> None:
    with pytest.raises(UnsafePath):
        files.safe_output_path(tmp_path, subfolder, filename)


def test_plain_names_stay_inside(tmp_path: Path) -> None:
    assert files.safe_output_path(tmp_path, "", "a_00001_.png") == tmp_path / "a_00001_.png"
    assert files.safe_output_path(tmp_path, "x/y", "a.png") == tmp_path / "x" / "y" / "a.png"
    assert files.safe_output_path(tmp_path, "", "a..b.png") == tmp_path / "a..b.png"


def test_a_symlinked_subfolder_pointing_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        files.safe_output_path(dest, "link", "x.png")


def test_a_file_name_that_is_a_symlink_pointing_out_is_refused(tmp_path: Path) -> None:
    """A name that is already a symlink out of the folder is refused; one inside is fine."""
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    (dest / "x.png").symlink_to(outside / "x.png")
    (dest / "in.png").symlink_to(dest / "real.png")
    with pytest.raises(UnsafePath):
        files.safe_output_path(dest, "", "x.png")
    assert files.safe_output_path(dest, "", "in.png") == dest / "in.png"
    linked_root = tmp_path / "root-link"
    linked_root.symlink_to(dest)  # the folder itself may be a link: names stay under it
    assert files.safe_output_path(linked_root, "", "a.png") == linked_root / "a.png"


def test_atomic_write_leaves_a_whole_image(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.png"
    assert files.write_image_atomic(target, png_bytes()) == target
    assert files.check_image(target) == "PNG"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def test_a_truncated_image_leaves_nothing(tmp_path: Path) -> None:
    data = png_bytes(64)
    target = tmp_path / "a.png"
    with pytest.raises(CorruptImage):
        files.write_image_atomic(target, data[: len(data) // 2])
    assert list(tmp_path.iterdir()) == []


def noisy_png(size: int = 32) -> bytes:
    """A PNG whose pixels do not compress away (so a cut lands inside its pixel data)."""
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), bytes(range(256)) * (size * size * 3 // 256)).save(
        out, "PNG"
    )
    return out.getvalue()


def test_a_png_cut_anywhere_or_with_any_byte_changed_is_corrupt() -> None:
    """A PNG is checked by its chunks' CRCs up to IEND, not by decoding its pixels."""
    data = noisy_png()
    assert files._decoded(data, "whole.png") == ("PNG", 32, 32)
    for cut in range(8, len(data), 97):
        with pytest.raises(CorruptImage):
            files._decoded(data[:cut], "cut.png")
    for at in range(8, len(data), 89):  # past the signature: every chunk's bytes
        changed = bytearray(data)
        changed[at] ^= 0x10
        with pytest.raises(CorruptImage):
            files._decoded(bytes(changed), "changed.png")


def test_a_cut_jpeg_is_corrupt() -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(out, "JPEG")
    data = out.getvalue()
    assert files._decoded(data, "whole.jpg")[0] == "JPEG"
    with pytest.raises(CorruptImage):
        files._decoded(data[: len(data) // 2], "cut.jpg")


def test_an_error_inside_the_block_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    files.write_image_atomic(target, png_bytes(4))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), files.atomic_image_file(target) as f:
        f.write(b"\x89PNG")
        raise RuntimeError("connection lost")
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.png"]


def test_not_an_image_is_corrupt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"hello")
    with pytest.raises(CorruptImage, match="not a whole image"):
        files.check_image(junk)


def test_written_images_get_the_usual_file_mode(tmp_path: Path) -> None:
    target = files.write_image_atomic(tmp_path / "a.png", png_bytes())
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
