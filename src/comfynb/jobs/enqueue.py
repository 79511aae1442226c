"""Queue workflows as pending jobs: every one checked first, all written in one transaction."""

from __future__ import annotations

import copy
import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from ..core.jsonio import to_json
from ..core.models import Candidate, Job, NewStep, Run, Step
from ..errors import ComfynbError, InvalidInput
from ..store.base import NotebookStore
from ..workflows.check import check_int, check_saved_names, check_workflow
from ..workflows.workflow import Workflow

__all__ = ["enqueue", "enqueue_many"]


def enqueue(
    store: NotebookStore,
    workflow: Mapping[str, Any] | Workflow,
    *,
    run: Run | int | str,
    step: Step | NewStep | int | None = None,
    params: Mapping[str, Any] | None = None,
    priority: int = 0,
    parent: Candidate | int | None = None,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> Job:
    """Queue a workflow as a ``pending`` job; a worker (or ``submit_job``) sends it later.

    The workflow's shape is checked first; on any error nothing is written. For many
    workflows at once, :func:`enqueue_many` is far cheaper than a loop of these.

    Example::

        >>> job = enqueue(store, workflow, run="portraits",
        ...               params={"KSampler.seed": 42, "KSampler.cfg": 7.5})
        >>> job.status.value, job.workflow["3"]["inputs"]["cfg"], job.params
        ('pending', 7.5, {'KSampler.seed': 42, 'KSampler.cfg': 7.5})

    Args:
        store: the open store (a local one, or a worker's through ``comfynb.open``).
        workflow: the API prompt (a dict or a ``comfynb.Workflow``); what is stored is what
            is sent (secret-looking keys are not stored).
        run: the run it belongs to (a Run, id or name).
        step: the step it belongs to; it must be a step of ``run``.
        params: inputs to set, by name: ``"KSampler.seed"`` (class), ``"Positive.text"``
            (title) or ``"3.seed"`` (node id); each is set in the workflow before it is
            stored, and recorded under the name used (the columns of ``store.jobs()``). A
            free label is not a param: put it in ``metadata``.
        priority: higher goes first.
        parent: the candidate this job refines (default: the step's parent candidate).
        max_retries: transient failures tolerated before the job fails.
        metadata: extra JSON kept with the job (secret-looking keys are dropped).

    Raises:
        WorkflowError: the workflow is not an API prompt (the message names the node), or a
            param names no input, several, a link, or a value ComfyUI would refuse.
        RunNotFound, StepNotFound, CandidateNotFound: an unknown reference.
        InvalidInput: a bad priority, max_retries, params or metadata.
    """
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInput(f'params is a dict of what varied, e.g. {{"seed": 42}}; got {params!r}')
    [job] = _enqueue(
        store,
        [workflow],
        run=run,
        step=step,
        params=[params],
        priority=priority,
        parent=parent,
        max_retries=max_retries,
        metadata=metadata,
        name_index=False,
    )
    return job


def enqueue_many(
    store: NotebookStore,
    workflows: Iterable[Mapping[str, Any] | Workflow],
    *,
    run: Run | int | str,
    step: Step | NewStep | int | None = None,
    params: Iterable[Mapping[str, Any] | None] | None = None,
    priority: int = 0,
    parent: Candidate | int | None = None,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> list[Job]:
    """Queue many workflows as ``pending`` jobs, in ONE transaction: all of them or none.

    Each job's params are set in its workflow (as :func:`enqueue` does). Every workflow
    (and its params) is checked before anything is written; the first bad
    one raises, naming its index, and nothing is queued. The jobs get ascending ids in the
    order given, so a worker claims them in that order (within a priority, fair between
    runs). Through a ``comfynb worker`` (``comfynb.open``), the lot is one request.

    Example::

        >>> jobs = enqueue_many(store, [workflow] * 100, run="seeds",
        ...                     params=[{"KSampler.seed": s} for s in range(100)])
        >>> len(jobs), jobs[0].status.value, jobs[-1].params
        (100, 'pending', {'KSampler.seed': 99})

    Args:
        store: the open store (a local one, or a worker's through ``comfynb.open``).
        workflows: the API prompts (dicts or ``comfynb.Workflow``), one per job.
        params: the inputs to set in each job, one dict (or None) per workflow; or None.
        step: as for :func:`enqueue`, or a ``NewStep`` (``core.models``): the step is
            created with the jobs, in the same transaction (``comfynb.refine`` does this).
        run, priority, parent, max_retries, metadata: as for :func:`enqueue`, the
            same for every job.

    Returns:
        The jobs, in the order of ``workflows``.

    Raises:
        WorkflowError: ``workflows[i]`` is not an API prompt; the message starts with
            ``workflows[i]:`` and names the node.
        InvalidInput: bad params (``params[i]: ...``), lists of different lengths, or a bad
            priority, max_retries or metadata.
        RunNotFound, StepNotFound, CandidateNotFound: an unknown reference.
    """
    if isinstance(workflows, Mapping | str | bytes) or not isinstance(workflows, Iterable):
        raise InvalidInput(
            f"workflows is a list of API prompts, one per job, got {type(workflows).__name__}; "
            "for one workflow use comfynb.enqueue(store, workflow, ...)"
        )
    listed = list(workflows)
    if params is None:
        each: list[Mapping[str, Any] | None] = [None] * len(listed)
    elif isinstance(params, Mapping | str | bytes) or not isinstance(params, Iterable):
        raise InvalidInput(
            f"params is a list of dicts, one per workflow (or None), got "
            f"{type(params).__name__}; e.g. params=[{{'seed': s}} for s in seeds]"
        )
    else:
        each = list(params)
        if len(each) != len(listed):
            raise InvalidInput(
                f"params has {len(each)} entries for {len(listed)} workflows; pass one dict "
                "(or None) per workflow"
            )
    return _enqueue(
        store,
        listed,
        run=run,
        step=step,
        params=each,
        priority=priority,
        parent=parent,
        max_retries=max_retries,
        metadata=metadata,
        name_index=True,
    )


def _enqueue(
    store: NotebookStore,
    workflows: list[Mapping[str, Any] | Workflow],
    *,
    run: Run | int | str,
    step: Step | NewStep | int | None,
    params: list[Mapping[str, Any] | None],
    priority: int,
    parent: Candidate | int | None,
    max_retries: int,
    metadata: Mapping[str, Any] | None,
    name_index: bool,
) -> list[Job]:
    """Check everything, make the JSON texts, then one ``store.add_jobs`` call."""
    check_int(priority, "priority", -(2**31))
    check_int(max_retries, "max_retries", 0)
    metadata_json = to_json(dict(metadata or {}), "metadata")
    workflows_json: list[str] = []
    params_json: list[str | None] = []
    where = "workflows[0]"
    setter = _Setter()
    try:
        for index, (workflow, varied) in enumerate(zip(workflows, params, strict=True)):
            where = f"workflows[{index}]"
            prompt = setter.prompt(workflow)
            where = f"params[{index}]"
            if varied is not None and not isinstance(varied, Mapping):
                raise InvalidInput(
                    f'params is a dict of inputs to set, e.g. {{"KSampler.seed": 42}}; got '
                    f"{varied!r}"
                )
            if varied:
                prompt = setter.set(workflow, prompt, varied)
            params_json.append(to_json(dict(varied or {}), "params"))
            where = f"workflows[{index}]"
            check_saved_names(prompt)
            text = to_json(prompt, "workflow")
            assert text is not None
            workflows_json.append(text)
    except ComfynbError as exc:  # WorkflowError, InvalidInput: the same error, its index first
        if name_index:
            exc.args = (f"{where}: {exc}", *exc.args[1:])
        raise
    added = store.add_jobs(
        workflows_json,
        run=run,
        step=step,
        parent=parent,
        params_json=params_json,
        priority=priority,
        max_retries=max_retries,
        metadata_json=metadata_json,
    )
    with _collector_paused(len(workflows_json) >= _MANY):
        return added.jobs(
            workflows_json,
            params_json,
            priority=priority,
            max_retries=max_retries,
            metadata_json=metadata_json,
        )


class _Setter:
    """Sets params in workflows, resolving each name once per shape of workflow.

    A batch is usually one workflow many times: the name ``"KSampler.seed"`` is looked up
    (``Workflow.check``) on the first and reused while the node keeps its id, class and
    title; each job's prompt is a shallow copy with only the changed nodes copied.
    """

    def __init__(self) -> None:
        self._shapes: dict[tuple[tuple[str, str, str], ...], Workflow] = {}
        self._last: tuple[Workflow, dict[str, Any]] | None = None
        # (checker, name, type, value) -> (node id, input, value as set): a sweep repeats
        # each value of an axis for every value of the others
        self._checked: dict[tuple[int, str, type, Any], tuple[str, str, Any]] = {}

    def prompt(self, workflow: Mapping[str, Any] | Workflow) -> dict[str, Any]:
        """The API prompt of ``workflow``, checked (``WorkflowError`` naming the node).

        One ``Workflow`` given for many jobs (a sweep) is copied once: the jobs' prompts
        share its nodes, and :meth:`set` copies only the nodes it changes.
        """
        if isinstance(workflow, Workflow):
            if self._last is None or self._last[0] is not workflow:
                self._last = (workflow, workflow.to_api())
            return self._last[1]
        check_workflow(workflow)
        return dict(workflow)

    def set(
        self,
        workflow: Mapping[str, Any] | Workflow,
        prompt: dict[str, Any],
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        """``prompt`` with each param set in it (a new dict; ``prompt`` is not changed)."""
        checker = self._checker(workflow, prompt)
        result = dict(prompt)
        copied: set[str] = set()
        for name, value in params.items():
            if not isinstance(name, str):
                raise InvalidInput(f"a param's name is a string like 'KSampler.seed', got {name!r}")
            node_id, input_name, checked = self._check(checker, name, value)
            if node_id not in copied:
                node = dict(result[node_id])
                node["inputs"] = dict(node.get("inputs") or {})
                result[node_id] = node
                copied.add(node_id)
            result[node_id]["inputs"][input_name] = copy.deepcopy(checked)
        return result

    def _check(self, checker: Workflow, name: str, value: Any) -> tuple[str, str, Any]:
        try:
            key = (id(checker), name, type(value), value)
            hash(key)
        except TypeError:  # a list or dict value: checked each time
            return checker.check(name, value)
        found = self._checked.get(key)
        if found is None:
            found = self._checked[key] = checker.check(name, value)
        return found

    def _checker(self, workflow: Mapping[str, Any] | Workflow, prompt: dict[str, Any]) -> Workflow:
        if isinstance(workflow, Workflow):
            return workflow
        shape = tuple(
            (str(node_id), str(node.get("class_type")), _title(node))
            for node_id, node in prompt.items()
        )
        found = self._shapes.get(shape)
        if found is None:
            found = self._shapes[shape] = Workflow(prompt)
        return found


def _title(node: Mapping[str, Any]) -> str:
    meta = node.get("_meta")
    return str(meta.get("title")) if isinstance(meta, Mapping) else ""


#: From this many jobs, the cyclic garbage collector waits while their records are made.
_MANY: Final = 1000


@contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (``pause``), then resume it.

    Making 10,000 jobs' records allocates ~250,000 dicts and lists; the collections they set
    off, which walk every tracked object of the process, took 0.3 of enqueue_many's 0.9 s
    (bench/enqueue.py). The records hold no reference cycles, so pausing frees nothing late.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
