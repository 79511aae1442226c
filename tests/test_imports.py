"""Importing comfynb is cheap and quiet: no threads, no sockets, no heavy libraries."""

import subprocess
import sys
import textwrap


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
