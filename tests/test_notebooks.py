"""The notebooks in notebooks/ with COMFYUI_URL set: they use that server and start no simulator.

nbmake runs each notebook as committed, on the embedded simulator (pyproject: ``testpaths``
holds ``notebooks``). This test runs them as a user pointing them at their own ComfyUI would:
``COMFYUI_URL`` names a server this test started (a simulator standing in for ComfyUI), and
each notebook must send its jobs there, start no simulator of its own, and leave nothing
behind in the temporary folder once its last cell ran.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from comfynb.simulator import Simulator

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ["01-quickstart", "02-your-workflow", "03-candidates-to-pandas"]


def test_the_notebooks_are_there_with_their_outputs_cleared() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), name
        assert "COMFYUI_URL" in code[0].source and "os.environ" in code[0].source
        assert "sim.stop()" in code[-1].source and "worker.stop()" in code[-1].source


@pytest.mark.parametrize("name", NAMES)
def test_comfyui_url_switches_a_notebook_to_that_server(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the kernel's tempfile folder
    for setting in ("COMFYNB_DB", "COMFYNB_OUTPUT", "COMFYNB_WORKFLOW", "COMFYUI_TOKEN"):
        monkeypatch.delenv(setting, raising=False)
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    probe = "print(sim is None, sorted(set(store.jobs()['server'].dropna())))"
    book.cells.insert(len(book.cells) - 1, nbformat.v4.new_code_cell(probe))  # before cleanup
    with Simulator(root=tmp_path / "server") as server:
        monkeypatch.setenv("COMFYUI_URL", server.url)
        NotebookClient(book, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
        made = list((server.root / "output").glob("*.png"))
    code = [c for c in book.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    server_cell = next(c for c in code if c.source.startswith("if COMFYUI_URL:"))
    assert server_cell.outputs[0]["data"]["text/plain"] == repr(server.url)
    # no simulator of its own, and every job went to that server
    assert code[-2].outputs[0]["text"] == f"True {[server.url]!r}\n"
    assert made, "the images were made there"
    assert list(scratch.iterdir()) == []  # the last cell removed the notebook's temporary folder


def test_the_notebooks_import_only_what_the_notebook_extra_installs() -> None:
    """`pip install -e '.[notebook]'` (the README's line) gives every module a notebook imports."""
    import importlib.metadata
    import json
    import re
    import sys
    import tomllib

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["notebook"]]
    declared = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower() for spec in wanted}
    distributions = importlib.metadata.packages_distributions()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        found = re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", code, re.M)
        for match in found:
            module = (match.group(1) or match.group(2)).split(".")[0]
            if module in sys.stdlib_module_names or module == "comfynb":
                continue
            names = {d.lower() for d in distributions.get(module, [module])}
            assert names & declared, f"{path.name} imports {module}, which no extra installs"
