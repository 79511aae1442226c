"""Importing comfynb is cheap and quiet: no threads, no sockets, no heavy libraries."""

import subprocess
import sys
import textwrap
from pathlib import Path


def test_import_starts_nothing_and_loads_no_heavy_modules() -> None:
    code = textwrap.dedent(
        """
        import sys, threading
        before = threading.active_count()
        import comfynb
        assert threading.active_count() == before, "import started a thread"
        heavy = {"aiohttp", "ipywidgets", "duckdb", "pandas", "websockets"} & set(sys.modules)
        assert not heavy, f"import loaded {sorted(heavy)}"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert result.stderr == ""


def test_a_clone_beside_the_notebook_does_not_shadow_the_installed_package(tmp_path: Path) -> None:
    """A notebook started in a clone, or beside a clone in a folder named comfynb (git's default).

    With the package under src/, neither folder holds a ``comfynb`` package of its own, so
    ``import comfynb`` finds the installed one (with ``Simulator``), not the clone's folder.
    """
    root = Path(__file__).resolve().parents[1]
    clone = tmp_path / "comfynb"
    clone.mkdir()
    for entry in root.iterdir():  # the clone's files, as they are here
        if not entry.name.startswith("."):
            (clone / entry.name).symlink_to(entry)
    code = "import comfynb; print(comfynb.Simulator.__name__, comfynb.__file__)"
    for where in (tmp_path, clone):
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=where, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        name, path = result.stdout.split()
        assert name == "Simulator"
        assert not Path(path).is_relative_to(tmp_path), f"imported from the clone: {path}"
