"""`comfynb demo` runs end to end on the embedded simulator and leaves real images behind."""

import subprocess
import sys
from pathlib import Path

from PIL import Image


def test_demo_collects_a_seed_sweep_and_a_refined_image(tmp_path: Path) -> None:
    out = tmp_path / "images"
    result = subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "demo", "--out", str(out), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ComfyUI 0.33.0" in result.stdout
    assert result.stdout.count("completed") == 4
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "demo_00001_.png",
        "demo_00002_.png",
        "demo_00003_.png",
        "demo_refined_00001_.png",
    ]
    for name in names:
        with Image.open(out / name) as image:
            image.load()
            assert image.size == (512, 512)
    sha = {(out / name).read_bytes() for name in names}
    assert len(sha) == 4, "every seed and the refine give a different picture"
