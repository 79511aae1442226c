"""Refine a picked candidate (img2img children in a new step) and reproduce one exactly.

The image is named by content in the stored workflow (``comfynb/<sha256 prefix>.png``,
``jobs.inputs``): the stored workflow is what is posted on every server, and the one submit
path uploads the image to the server that runs the job, once per server.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.jsonio import to_json
from ..core.models import Candidate, Job, NewStep, Run
from ..errors import InvalidInput, WorkflowError
from ..store.base import NotebookStore
from ..workflows.check import check_workflow
from ..workflows.img2img import set_denoise, to_img2img
from ..workflows.workflow import Workflow
from .enqueue import enqueue_many
from .inputs import input_name

__all__ = ["refine", "reproduce"]


def refine(
    store: NotebookStore,
    candidate: Candidate | int,
    workflow: Mapping[str, Any] | Workflow | None = None,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    run: Run | int | str | None = None,
    denoise: float = 0.6,
    priority: int = 0,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> list[Job]:
    """Queue img2img children of ``candidate``: a new ``refine`` step and its jobs, at once.

    Each child starts from the candidate's image (its ``LoadImage``), with ``denoise`` on the
    sampler that starts from it; ``params`` are set after that (a ``"KSampler.denoise"``
    param wins). The step (kind ``"refine"``, parent the candidate) and its jobs (parent the
    candidate) are written in ONE transaction; on any error nothing is written. The
    candidate's ``child_count`` grows as the children complete. The worker that runs a child
    uploads the image to that job's server first (once per server).

    Example::

        >>> kids = comfynb.refine(store, 12, params=[{"KSampler.seed": s} for s in (1, 2, 3)])
        >>> len(kids), kids[0].parent_candidate_id, store.step(kids[0].step_id).kind
        (3, 12, 'refine')
        >>> comfynb.refine(store, 12, comfynb.Workflow.example("img2img"), denoise=0.4)

    Args:
        store: the open store (local, or a worker's through ``comfynb.open``).
        candidate: the candidate (or its id) to start from.
        workflow: the workflow to run: a txt2img prompt (turned into img2img: its empty
            latent becomes ``LoadImage`` -> ``VAEEncode``) or an img2img one (the image goes
            into its ``LoadImage``). Default: the workflow that made the candidate.
        params: one dict of inputs to set (one child), or a list of dicts (one child each);
            names as in :func:`comfynb.enqueue` (``"KSampler.seed"``). Default: one child.
        run: the run for the step and jobs (default: the candidate's run).
        denoise: how far each child may move from the image (0 < denoise <= 1).
        priority, max_retries, metadata: as for :func:`comfynb.enqueue`.

    Returns:
        The pending jobs, one per params dict, in order.

    Raises:
        CandidateNotFound: no such candidate.
        WorkflowError: the workflow cannot be made img2img (no empty latent nor LoadImage ->
            VAEEncode, no VAE, no denoise), a bad denoise, or a param that names no input
            (``params[i]: ...``).
        InvalidInput: bad params, priority, max_retries or metadata; the candidate's image
            file is gone.
    """
    found = candidate if isinstance(candidate, Candidate) else None
    if found is None:
        found = store.candidate(_candidate_id(candidate))
    else:
        found = store.candidate(found.id)  # as stored now (and in this store)
    children = _children(params)
    image = input_name(found)
    path = store.image_path(found)
    if not path.is_file():  # the worker uploads it from there (same machine, same files)
        raise InvalidInput(
            f"candidate {found.id}'s image {path} is missing; put the file back, or refine "
            "another candidate"
        )
    if workflow is None:
        source = store.job(found.job_id).workflow
        if not isinstance(source, Mapping):
            raise WorkflowError(
                f"the workflow of candidate {found.id}'s job {found.job_id} cannot be read; "
                "pass the workflow to refine with"
            )
        base: Mapping[str, Any] = source
    elif isinstance(workflow, Workflow):
        base = workflow.to_api()
    else:
        check_workflow(workflow)
        base = workflow
    prompt = set_denoise(to_img2img(base, image, denoise=denoise), denoise)
    step = NewStep(
        "refine",
        _json(prompt, "workflow"),
        _json({"denoise": denoise, "params": [dict(p) for p in children]}, "params"),
        parent_candidate_id=found.id,
    )
    return enqueue_many(
        store,
        [prompt] * len(children),
        run=found.run_id if run is None else run,
        step=step,
        params=children,
        priority=priority,
        parent=found.id,
        max_retries=max_retries,
        metadata=metadata,
    )


def reproduce(store: NotebookStore, candidate: Candidate | int) -> Workflow:
    """The exact workflow that made ``candidate``: its job's stored workflow, as posted.

    Queued again on the same server with the same seed, it makes the same image; on any
    server, the image a refined child started from is uploaded there first.

    Example::

        >>> wf = comfynb.reproduce(store, 12)
        >>> wf["3"]["seed"] == store.candidate(12).seed
        True
        >>> comfynb.enqueue(store, wf, run="again")

    Raises:
        CandidateNotFound: no such candidate.
        WorkflowError: the stored workflow cannot be read (a row edited by hand).
    """
    found = store.candidate(
        candidate.id if isinstance(candidate, Candidate) else _candidate_id(candidate)
    )
    job = store.job(found.job_id)
    if not isinstance(job.workflow, Mapping):
        raise WorkflowError(
            f"the stored workflow of job {job.id} (candidate {found.id}) is not JSON Python "
            "can read; it cannot be reproduced"
        )
    return Workflow(job.workflow, source=f"the workflow of job {job.id} (candidate {found.id})")


def _candidate_id(candidate: object) -> int:
    """A candidate id as an int: numpy integers too (``df.id.iloc[0]`` is an ``np.int64``)."""
    if isinstance(candidate, bool) or not isinstance(candidate, numbers.Integral):
        raise InvalidInput(f"candidate is a Candidate or its id, got {candidate!r}")
    return int(candidate)


def _children(
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> list[Mapping[str, Any]]:
    if params is None:
        return [{}]
    if isinstance(params, Mapping):
        return [params]
    if isinstance(params, str | bytes) or not isinstance(params, Sequence):
        raise InvalidInput(
            "params is a dict of inputs (one child) or a list of dicts (one child each), e.g. "
            f'[{{"KSampler.seed": s}} for s in (1, 2, 3)]; got {type(params).__name__}'
        )
    if not params:
        raise InvalidInput("params is an empty list: no child to make; pass one dict per child")
    for index, each in enumerate(params):
        if not isinstance(each, Mapping):
            raise InvalidInput(
                f'params[{index}] is a dict of inputs to set, e.g. {{"KSampler.seed": 42}}; '
                f"got {each!r}"
            )
    return list(params)


def _json(value: Any, what: str) -> str:
    text = to_json(value, what)
    assert text is not None
    return text
