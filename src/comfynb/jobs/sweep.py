"""Sweep a workflow's inputs: one step, one job per combination, in one transaction."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from ..core.jsonio import to_json
from ..core.models import Job, NewStep, Run
from ..errors import InvalidInput, WorkflowError
from ..store.base import NotebookStore
from ..workflows.workflow import Workflow
from .enqueue import enqueue_many

__all__ = ["sweep"]

#: The range ComfyUI's frontend draws a random seed from (``control_after_generate``).
SEED_RANGE: Final = 1125899906842624
_SEED_INPUTS: Final = ("seed", "noise_seed")


def sweep(
    store: NotebookStore,
    workflow: Workflow | Mapping[str, Any] | str,
    grid: Mapping[str, Iterable[Any]],
    *,
    run: Run | int | str,
    mode: Literal["grid", "zip"] = "grid",
    seeds: int | None = None,
    priority: int = 0,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> list[Job]:
    """Queue one job per combination of input values, as one ``sweep`` step of ``run``.

    ``grid`` maps input names (``"KSampler.cfg"``, ``"Positive.text"``, ``"3.seed"``: as
    for ``enqueue``'s params) to the values to try. ``mode="grid"`` runs every combination
    (the cartesian product, the first name varying slowest); ``mode="zip"`` pairs the i-th
    values of each name (equal lengths). ``seeds=n`` runs each combination with ``n`` seeds
    drawn at random (as ComfyUI's "randomize" would), set in the workflow's one seed input
    and recorded, so every candidate can be made again. Each job's params are its values
    under the names used; the step keeps the grid.

    Every name and value is checked first (with ``object_info`` when the workflow was loaded
    with it); on any error nothing is written. The step and all its jobs are written in ONE
    transaction.

    Example::

        >>> jobs = comfynb.sweep(store, wf, {"KSampler.cfg": [4, 7], "KSampler.steps": [20, 30]},
        ...                      run="portraits", seeds=2)
        >>> len(jobs), jobs[0].params
        (8, {'KSampler.cfg': 4, 'KSampler.steps': 20, 'KSampler.seed': 418093557712389})

    Args:
        store: the open store (local, or a worker's through ``comfynb.open``).
        workflow: a ``comfynb.Workflow``, an API-format dict, or what ``Workflow.load``
            takes (a path, JSON text, a PNG ComfyUI saved).
        grid: input name -> the values to try (a list, a range, ...).
        run: the run the step belongs to (a Run, id or name).
        mode: ``"grid"`` (every combination) or ``"zip"`` (values side by side).
        seeds: draw this many random seeds for each combination.
        priority, max_retries, metadata: as for ``enqueue``, the same for every job.

    Returns:
        The jobs, in combination order (``store.jobs()`` and the gallery read them so).

    Raises:
        WorkflowError: a name that is no input (the message lists what exists), a linked
            input, or a value ComfyUI would refuse.
        InvalidInput: an empty list of values, ``zip`` lists of different lengths, a bad
            ``mode`` or ``seeds``, or ``seeds`` with a seed already in ``grid``.
    """
    flow = Workflow.load(workflow)
    if mode not in ("grid", "zip"):
        raise InvalidInput(f"mode is 'grid' (every combination) or 'zip', got {mode!r}")
    if not isinstance(grid, Mapping) or (not grid and seeds is None):
        raise InvalidInput(
            "grid maps input names to the values to try, e.g. "
            f'{{"KSampler.cfg": [4, 7]}}; got {grid!r}'
        )
    names = list(grid)
    values: list[list[Any]] = []
    places: dict[tuple[str, str], str] = {}  # (node id, input) -> the name that sets it
    for name in names:
        given = grid[name]
        if isinstance(given, str | bytes | Mapping) or not isinstance(given, Iterable):
            raise InvalidInput(
                f"grid[{name!r}] is the list of values to try, e.g. [4, 7]; got {given!r}"
            )
        listed = list(given)
        if not listed:
            raise InvalidInput(f"grid[{name!r}] has no values; give at least one")
        for value in listed:
            node_id, input_name, _ = flow.check(name, value)  # bad: nothing is written
        if (node_id, input_name) in places:
            raise InvalidInput(
                f"grid names input {node_id}.{input_name} twice: {places[node_id, input_name]!r} "
                f"and {name!r}; keep one"
            )
        places[node_id, input_name] = name
        values.append(listed)
    if mode == "zip" and len({len(v) for v in values}) > 1:
        sizes = ", ".join(f"{n}: {len(v)}" for n, v in zip(names, values, strict=True))
        raise InvalidInput(f"mode='zip' takes lists of one length; got {sizes}")
    combos: list[dict[str, Any]] = [
        dict(zip(names, combo, strict=True))
        for combo in (itertools.product(*values) if mode == "grid" else zip(*values, strict=True))
    ] or [{}]  # seeds= alone: the workflow as it is, with drawn seeds
    spec: dict[str, Any] = {"grid": dict(zip(names, values, strict=True)), "mode": mode}
    if seeds is not None:
        seed_name = _seed_input(flow, places, seeds)
        combos = [
            {**combo, seed_name: secrets.randbelow(SEED_RANGE)}
            for combo in combos
            for _ in range(seeds)
        ]
        spec["seeds"] = {"input": seed_name, "per_combination": seeds}
    workflow_json = to_json(flow.to_api(), "workflow")
    assert workflow_json is not None
    step = NewStep("sweep", workflow_json, to_json(spec, "params_spec"))
    return enqueue_many(
        store,
        [flow] * len(combos),
        run=run,
        step=step,
        params=combos,
        priority=priority,
        max_retries=max_retries,
        metadata=metadata,
    )


def _seed_input(flow: Workflow, places: Mapping[tuple[str, str], str], seeds: object) -> str:
    """The name of the workflow's one seed input, for ``seeds=n``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InvalidInput(
            f"seeds is how many random seeds per combination (1 or more), got {seeds!r}"
        )
    inputs = flow.inputs()
    found = inputs[inputs["name"].isin(_SEED_INPUTS)]
    candidates = [(str(row.node), str(row.name)) for row in found.itertuples()]
    if len(candidates) != 1:
        listed = ", ".join(f'"{n}.{i}" ({flow.title(n)})' for n, i in candidates)
        raise WorkflowError(
            f"seeds= sets the workflow's one seed input; it has {listed or 'none'}: sweep the "
            'one you mean by name instead, e.g. {"3.seed": [...]}'
        )
    node_id, input_name = candidates[0]
    if (node_id, input_name) in places:
        raise InvalidInput(
            f"grid sets {places[node_id, input_name]!r}, the seed input seeds= would draw; "
            "use one or the other"
        )
    return _name_of(flow, node_id, input_name)


def _name_of(flow: Workflow, node_id: str, input_name: str) -> str:
    """How a user names an input: ``"KSampler.seed"`` when the class names only that node
    (as in the grid and in ``refine``'s params: one column in the tables), else ``"3.seed"``."""
    by_class = f"{flow.to_api()[node_id].get('class_type')}.{input_name}"
    try:
        place = flow.check(by_class, flow[node_id][input_name])
    except WorkflowError:  # two nodes of that class: the node id says which
        return f"{node_id}.{input_name}"
    return by_class if place[:2] == (node_id, input_name) else f"{node_id}.{input_name}"
