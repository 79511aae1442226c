"""Job functions a notebook cell calls: queue a prompt, claim the next one, record its images.

Example::

    >>> import comfynb
    >>> store = comfynb.open("lab.duckdb")
    >>> job = comfynb.enqueue(store, workflow, run="portraits", params={"seed": 42})
    >>> comfynb.select_next_job(store).id == job.id
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput, WorkflowError
from .lifecycle import JobStatus, check_move, transition_read_many
from .models import Candidate, Job, NewCandidate, Run, Step

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "check_workflow",
    "enqueue",
    "record_result",
    "record_results",
    "select_next_job",
    "select_next_jobs",
]

_UI_HINT = (
    "this looks like a UI workflow (it has 'nodes' and 'links'); in ComfyUI use "
    "'Export (API)' and pass that file's JSON"
)


def check_workflow(workflow: object) -> None:
    """Check that ``workflow`` is a ComfyUI API prompt; raise ``WorkflowError`` naming the node.

    The shape: a non-empty dict of node ids to ``{"class_type": str, "inputs": dict}``,
    where a list input is a link ``[node_id, output_index]`` to a node in the workflow.

    Example::

        >>> check_workflow({"1": {"class_type": "EmptyImage", "inputs": {"width": 64}}})
        >>> check_workflow({"2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}})
        Traceback (most recent call last):
        comfynb.errors.WorkflowError: node "2" (SaveImage) input "images" links to node "9", ...
    """
    if not isinstance(workflow, Mapping) or not workflow:
        raise WorkflowError(
            "a workflow is a non-empty dict of nodes in ComfyUI's API format, "
            f'{{"3": {{"class_type": "KSampler", "inputs": {{...}}}}}}; got {_short(workflow)}'
        )
    if "nodes" in workflow and "links" in workflow:
        raise WorkflowError(_UI_HINT)
    for node_id, node in workflow.items():
        _check_node(workflow, node_id, node)


def _check_node(workflow: Mapping[Any, Any], node_id: object, node: object) -> None:
    if not isinstance(node_id, str):
        raise WorkflowError(
            f"node id {node_id!r} must be a string (JSON object keys are); use {str(node_id)!r}",
            node_id=str(node_id),
        )
    if not isinstance(node, Mapping):
        raise WorkflowError(
            f'node "{node_id}" must be a dict with "class_type" and "inputs", got {_short(node)}',
            node_id=node_id,
        )
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        raise WorkflowError(
            f'node "{node_id}" has no "class_type" (the node\'s type, e.g. "KSampler"); add it',
            node_id=node_id,
        )
    inputs = node.get("inputs")
    if not isinstance(inputs, Mapping):
        raise WorkflowError(
            f'node "{node_id}" ({class_type}) has no "inputs" dict; add "inputs": {{}} '
            "if it takes none",
            node_id=node_id,
        )
    for name, value in inputs.items():
        if isinstance(value, list):
            _check_link(workflow, node_id, class_type, str(name), value)


def _check_link(
    workflow: Mapping[Any, Any], node_id: str, class_type: str, name: str, value: list[Any]
) -> None:
    where = f'node "{node_id}" ({class_type}) input "{name}"'
    if len(value) != 2 or not isinstance(value[0], str) or isinstance(value[1], bool):
        raise WorkflowError(
            f'{where} is {value!r}; a list input is a link [node_id, output_index], e.g. ["4", 0]',
            node_id=node_id,
            input_name=name,
        )
    if not isinstance(value[1], int) or value[1] < 0:
        raise WorkflowError(
            f"{where} links to output {value[1]!r} of node {value[0]!r}; an output index is "
            "an int from 0",
            node_id=node_id,
            input_name=name,
        )
    if value[0] not in workflow:
        raise WorkflowError(
            f'{where} links to node "{value[0]}", which is not in the workflow; '
            "add that node or fix the link",
            node_id=node_id,
            input_name=name,
        )


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an int from {minimum}, got {value!r}")
    return value


def enqueue(
    store: Store,
    workflow: Mapping[str, Any],
    *,
    run: Run | int | str,
    step: Step | int | None = None,
    params: Mapping[str, Any] | None = None,
    priority: int = 0,
    parent: Candidate | int | None = None,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> Job:
    """Queue a workflow as a ``pending`` job; a worker (or ``submit_job``) sends it later.

    The workflow's shape is checked first; on any error nothing is written.

    Example::

        >>> job = enqueue(store, workflow, run="portraits", params={"seed": 42, "cfg": 7.5})
        >>> job.status.value, job.params["cfg"]
        ('pending', 7.5)

    Args:
        store: the open store.
        workflow: the API prompt to send, exactly (secret-looking keys are not stored).
        run: the run it belongs to (a Run, id or name).
        step: the step it belongs to; it must be a step of ``run``.
        params: what varied in this job (``seed``, ``cfg``, ...): the columns of ``store.jobs()``.
        priority: higher goes first.
        parent: the candidate this job refines (default: the step's parent candidate).
        max_retries: transient failures tolerated before the job fails.
        metadata: extra JSON kept with the job (secret-looking keys are dropped).

    Raises:
        WorkflowError: the workflow is not an API prompt; the message names the node.
        RunNotFound, StepNotFound, CandidateNotFound: an unknown reference.
        InvalidInput: a bad priority, max_retries, params or metadata.
    """
    from .store import _to_json

    check_workflow(workflow)
    _check_int(priority, "priority", -(2**31))
    _check_int(max_retries, "max_retries", 0)
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInput(f'params is a dict of what varied, e.g. {{"seed": 42}}; got {params!r}')
    flow = _to_json(dict(workflow), "workflow")
    params_json = _to_json(dict(params or {}), "params")
    metadata_json = _to_json(dict(metadata or {}), "metadata")
    assert flow is not None
    with store.transaction() as tx:
        run_id = tx.run_id(run)
        step_id, parent_id = None, None
        if step is not None:
            found = store.step(step.id if isinstance(step, Step) else step)
            if found.run_id != run_id:
                raise InvalidInput(
                    f"step {found.id} belongs to run {found.run_id}, not run {run_id}; "
                    "pass that run or a step of this one"
                )
            step_id, parent_id = found.id, found.parent_candidate_id
        if parent is not None:
            parent_id = store.candidate(parent.id if isinstance(parent, Candidate) else parent).id
        return tx.insert_job(
            run_id=run_id,
            step_id=step_id,
            parent_candidate_id=parent_id,
            workflow_json=flow,
            params_json=params_json,
            priority=priority,
            max_retries=max_retries,
            metadata_json=metadata_json,
        )


def select_next_job(store: Store, *, server: str | None = None) -> Job | None:
    """Claim the next pending job, or return None when there is none.

    Highest priority first, then fair between runs (the run served least recently), then
    oldest first. The claim is atomic: two workers never take the same job. The claimed job
    stays ``pending`` with a fresh ``prompt_id``, which ``submit_job`` posts it with.

    Example::

        >>> job = select_next_job(store, server="http://127.0.0.1:8188")
        >>> job.status.value, len(job.prompt_id)
        ('pending', 32)

    Args:
        store: the open store.
        server: claim only jobs for this server (or for any server), and pin the job to it.
    """
    return store.claim_next_job(server=server)


def select_next_jobs(store: Store, n: int, *, server: str | None = None) -> list[Job]:
    """Claim up to ``n`` pending jobs at once (see :func:`select_next_job`); maybe fewer.

    Example::

        >>> [j.id for j in select_next_jobs(store, 3, server="http://127.0.0.1:8188")]
        [1, 5, 2]
    """
    return store.claim_next_jobs(n, server=server)


def record_result(
    store: Store,
    job_id: int,
    images: Sequence[NewCandidate],
    *,
    detail: Mapping[str, Any] | None = None,
) -> list[Candidate]:
    """Complete a job with its images, in ONE transaction; running it again changes nothing.

    Creates one candidate per image, adds their number to the parent candidate's
    ``child_count``, and moves the job to ``completed``. The files must already be in
    the output folder.

    Example::

        >>> cands = record_result(store, 7, [NewCandidate(node_id="9", path="run/a.png")])
        >>> store.job(7).status.value, [c.path for c in cands]
        ('completed', ['run/a.png'])

    Raises:
        JobNotInStore: no such job.
        InvalidTransition: the job cannot complete from its status; nothing changed.
        InvalidInput: an image path outside the output folder; nothing changed.
    """
    return record_results(store, {job_id: images}, detail=detail)[job_id]


def record_results(
    store: Store,
    results: Mapping[int, Sequence[NewCandidate]],
    *,
    detail: Mapping[str, Any] | None = None,
) -> dict[int, list[Candidate]]:
    """Complete many jobs with their images in ONE transaction: :func:`record_result` in bulk.

    A handful of statements for the whole batch (not per job), for workers that finish
    many prompts at once. Jobs already completed are left as they are; if any job cannot
    complete, nothing is written.

    Example::

        >>> done = record_results(store, {7: [NewCandidate("9", "r/a.png")], 8: []})
        >>> {job_id: len(cands) for job_id, cands in done.items()}
        {7: 1, 8: 0}

    Raises:
        JobNotInStore, InvalidTransition, InvalidInput: as :func:`record_result`.
    """
    with store.transaction() as tx:
        ids = list(results)
        jobs = tx.jobs_by_id(ids)
        missing = [i for i in ids if i not in jobs]
        if missing:
            tx.job(missing[0])  # raises JobNotInStore naming it
        done = {i: tx.candidates_of(i) for i in ids if jobs[i].status is JobStatus.COMPLETED}
        todo = [jobs[i] for i in ids if i not in done]
        for job in todo:
            check_move(job, JobStatus.COMPLETED)  # before writing anything
        made = tx.insert_candidates_many(
            [(job, image) for job in todo for image in results[job.id]]
        )
        by_job: dict[int, list[Candidate]] = {job.id: [] for job in todo}
        for candidate in made:
            by_job[candidate.job_id].append(candidate)
        children: dict[int, int] = {}
        for job in todo:
            if job.parent_candidate_id is not None and by_job[job.id]:
                children[job.parent_candidate_id] = children.get(job.parent_candidate_id, 0) + len(
                    by_job[job.id]
                )
        tx.add_child_counts(children)
        transition_read_many(
            tx,
            [
                (
                    job,
                    JobStatus.COMPLETED,
                    {},
                    {"candidates": len(by_job[job.id]), **(detail or {})},
                )
                for job in todo
            ],
        )
    return {i: done[i] if i in done else by_job[i] for i in ids}
