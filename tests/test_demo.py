"""`comfynb demo` runs end to end on the embedded simulator, as a user runs it."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

from comfynb.store import Store


def run_demo(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "demo", "--out", str(out), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_sweeps_picks_and_refines_through_the_store(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ComfyUI 0.33.0" in result.stdout
    assert "txt2img, seeds 1-3: 3 done, 0 failed" in result.stdout
    assert "img2img of candidate 1: 1 done, 0 failed" in result.stdout

    with Store.open(tmp_path / "demo.duckdb") as store:
        frame = store.candidates()
        assert frame["seed"].tolist() == [1, 2, 3, 7]
        assert frame["picked"].tolist() == [True, False, False, False]
        assert frame["parent_candidate_id"].tolist()[3] == frame["id"][0]
        assert store.candidate(int(frame["id"][0])).child_count == 1
        files = [store.image_path(int(i)) for i in frame["id"]]
    digests = set()
    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.size == (512, 512)
        digests.add(path.read_bytes())
    assert len(digests) == 4, "every seed and the refine give a different picture"


def test_demo_run_twice_adds_a_second_run_to_the_same_store(tmp_path: Path) -> None:
    assert run_demo(tmp_path).returncode == 0
    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stderr
    with Store.open(tmp_path / "demo.duckdb") as store:
        assert store.runs()["name"].tolist() == ["demo 1", "demo 2"]
        assert len(store.candidates()) == 8
