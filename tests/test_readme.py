"""The README's "Ten lines" example runs as written, on the simulator, in a fresh folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

README = Path(__file__).resolve().parent.parent / "README.md"


def ten_lines() -> str:
    section = README.read_text().split("## Ten lines", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_the_ten_line_example_runs_and_leaves_candidates(tmp_path: Path) -> None:
    code = ten_lines()
    assert len([line for line in code.splitlines() if line.strip()]) <= 14
    script = tmp_path / "ten.py"
    script.write_text(code + "\nkids_done = comfynb.wait(store, kids)\nworker.stop(); sim.stop()\n")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(tmp_path / "lab.duckdb"), read_only=True) as db:
        rows = db.sql("SELECT cfg, parent_candidate_id FROM candidates ORDER BY id").fetchall()
    assert sorted(cfg for cfg, parent in rows if parent is None) == [5, 5, 5, 7, 7, 7]
    assert [parent for _, parent in rows][-1] == 1  # the refine of the first
    assert (tmp_path / "outputs").is_dir()


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    blocks = README.read_text().split("```sh\n")[1:]
    [command] = [b.split("\n```", 1)[0] for b in blocks if "pytest" in b.split("\n```", 1)[0]]
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert command.startswith(venv)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command.removeprefix(venv) in ci.splitlines()
    assert "comfynb demo" in ci.splitlines()  # and the main command once
