"""UI -> API conversion over ComfyUI's template corpus: time per template, and how much passes.

Run: ``python bench/convert.py [--repeat 5]`` (needs ``comfyui-workflow-templates-json==0.1.50``,
in the ``test`` extra). Prints its figures:

* conversion time per template (``ui_to_api`` with ``/object_info`` 0.33.0 already parsed):
  median, p99 and the largest template (by JSON size), medians of ``--repeat`` runs;
* ``Workflow.load`` of the largest template from its JSON text (parse + detect + convert);
* the share of the corpus converted (the rest name a class ``/object_info`` lacks);
* the share the simulator accepts: over a real socket for the templates whose classes it runs
  (none of the corpus; ComfyUI's default graph is posted instead), and in-process with the
  simulator's validation (``validate_prompt``, as ComfyUI 0.33.0) against the full 0.33.0
  ``/object_info``: accepted as is, and accepted but for the two things that are not the
  conversion's: model files this server does not have (``value_not_in_list`` of a file name)
  and what the simulator's validation does not model (the V3 dynamic input types
  ``COMFY_*_V3``, ``CustomCombo``'s own check of its choice).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from comfynb import Workflow
from comfynb.errors import WorkflowError
from comfynb.simulator import Simulator, specs
from comfynb.simulator.validation import validate_prompt
from comfynb.workflows.convert import ui_to_api

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
_FILE = re.compile(r"\.\w{2,12}$")


def _gz(path: Path) -> Any:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _templates() -> list[Path]:
    import comfyui_workflow_templates_json as package

    return sorted((Path(package.__file__).parent / "templates").glob("*.json"))


def _tolerated(prompt: dict[str, Any], info: dict[str, Any], node_id: str, error: Any) -> bool:
    """An error that is not the conversion's: a missing model file, or a V3 type the
    simulator's validation does not model."""
    kind = error.get("type")
    extra = error.get("extra_info") or {}
    if prompt[node_id]["class_type"] == "CustomCombo" and extra.get("input_name") == "choice":
        return True  # its options live in the node (option1...); ComfyUI validates it itself
    if kind == "value_not_in_list":
        return isinstance(extra.get("received_value"), str) and bool(
            _FILE.search(extra["received_value"])
        )
    if kind == "return_type_mismatch":
        text = f"{extra.get('received_type')} {extra.get('input_config')}"
        return "_V3" in text
    if kind == "required_input_missing":
        spec = info[prompt[node_id]["class_type"]]["input"].get("required", {})
        entry = spec.get(extra.get("input_name"))
        return isinstance(entry, list) and str(entry[0]).endswith("_V3")
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    info: dict[str, Any] = _gz(DATA / "object_info_0.33.0.json.gz")
    workflows: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    not_ui = 0
    for path in _templates():
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            workflows[path.name] = data
            sizes[path.name] = len(text)
        else:
            not_ui += 1

    prompts: dict[str, dict[str, Any]] = {}
    unknown: dict[str, str] = {}
    times: dict[str, list[float]] = {name: [] for name in workflows}
    for _ in range(args.repeat):
        for name, data in workflows.items():
            start = time.perf_counter()
            try:
                prompt = ui_to_api(data, info)
            except WorkflowError as exc:
                unknown[name] = str(exc)
                continue
            times[name].append(time.perf_counter() - start)
            prompts[name] = prompt
    per = sorted(statistics.median(t) for t in times.values() if t)
    largest = max(sizes, key=lambda n: sizes[n])
    p99 = per[min(len(per) - 1, int(0.99 * len(per)))]
    print(f"templates: {len(workflows)} UI workflows ({not_ui} index files skipped)")
    print(
        f"conversion per template: median {statistics.median(per) * 1e3:.2f} ms, "
        f"p99 {p99 * 1e3:.2f} ms, max {per[-1] * 1e3:.2f} ms"
    )
    text = (_templates()[0].parent / largest).read_text(encoding="utf-8")
    loads = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        Workflow.load(text, info)
        loads.append(time.perf_counter() - start)
    print(
        f"largest template {largest} ({sizes[largest] / 1e3:.0f} kB, "
        f"{len(workflows[largest]['nodes'])} top nodes -> {len(prompts.get(largest, {}))} API "
        f"nodes): convert {statistics.median(times[largest]) * 1e3:.2f} ms, Workflow.load from "
        f"text {statistics.median(loads) * 1e3:.2f} ms"
    )
    print(
        f"converted: {len(prompts)}/{len(workflows)} ({len(prompts) / len(workflows):.1%}); "
        f"{len(unknown)} name a class /object_info 0.33.0 lacks: {', '.join(sorted(unknown))}"
    )

    as_is = modulo = 0
    for prompt in prompts.values():
        result = validate_prompt(
            copy.deepcopy(prompt), info, version="0.33.0", input_exists=lambda _: True
        )
        errors = [
            (node_id, error)
            for node_id, entry in result.node_errors.items()
            for error in entry["errors"]
        ]
        if result.error is None and not errors:
            as_is += 1
            modulo += 1
        elif errors and all(_tolerated(prompt, info, n, e) for n, e in errors):
            modulo += 1
    print(
        f"simulator's validation (in-process, full /object_info 0.33.0): accepted as is "
        f"{as_is}/{len(prompts)} ({as_is / len(prompts):.1%}); but for missing model files and "
        f"V3 types {modulo}/{len(prompts)} ({modulo / len(prompts):.1%})"
    )

    known = set(specs.class_names())
    runnable = {
        n: p for n, p in prompts.items() if all(x["class_type"] in known for x in p.values())
    }
    default = ui_to_api(_gz(DATA / "ui-to-api" / "default_sd15_ui.ui.json.gz"), info)
    with Simulator() as sim, httpx.Client(timeout=10) as http:
        posted = {**runnable, "default_sd15_ui (not a template)": default}
        accepted = sum(
            http.post(f"{sim.url}/prompt", json={"prompt": p}).status_code == 200
            for p in posted.values()
        )
    print(
        f"simulator over a socket: {len(runnable)} templates use only the classes it runs; "
        f"accepted {accepted}/{len(posted)} posted (with ComfyUI's default graph)"
    )


if __name__ == "__main__":
    main()
