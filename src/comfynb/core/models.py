"""Plain data the store hands out: frozen dataclasses, one per row, never live cursors.

Example::

    >>> run = store.new_run("portraits")
    >>> run
    Run(id=1, name='portraits', notes=None, metadata={}, created_at=datetime.datetime(...))
    >>> store.job(7).status.is_terminal
    False

JSON columns come back as plain dicts (copies: changing one changes nothing stored);
timestamps are timezone-aware UTC ``datetime``\\ s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .status import JobStatus

__all__ = [
    "MAX_PREVIEW_BYTES",
    "Candidate",
    "Job",
    "NewCandidate",
    "NewStep",
    "Preview",
    "Run",
    "Step",
]

#: The largest preview image the store keeps (bytes); a bigger one is dropped, not stored.
MAX_PREVIEW_BYTES = 512 * 1024


@dataclass(frozen=True)
class Run:
    """An experiment: a named group of steps, jobs and candidates.

    Example::

        >>> store.new_run("portraits", notes="try cfg 4..9").name
        'portraits'
    """

    id: int
    name: str
    notes: str | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Step:
    """One stage of a run: ``generate``, ``sweep`` or ``refine`` from a parent candidate.

    Example::

        >>> store.new_step("portraits", "sweep", workflow, params_spec={"cfg": [4, 7, 9]}).kind
        'sweep'
    """

    id: int
    run_id: int
    kind: str
    parent_candidate_id: int | None
    workflow: dict[str, Any] = field(repr=False)  # whole graphs drown a notebook's output
    params_spec: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class NewStep:
    """A step to create together with its jobs, in ``store.add_jobs``'s one transaction.

    ``comfynb.sweep`` and ``comfynb.refine`` pass one, so that a step and its jobs are written
    all together or not at all.

    Example::

        >>> store.add_jobs(texts, run="r", step=NewStep("sweep", workflow_json, spec_json)).step_id
        4
    """

    kind: str
    workflow_json: str = field(repr=False)
    params_spec_json: str | None = None
    parent_candidate_id: int | None = None


@dataclass(frozen=True)
class Job:
    """One prompt to run on a ComfyUI server, and where it is in its life.

    ``prompt_id`` is chosen by comfynb before submitting; a pending job that has one has been
    claimed by a worker (``claimed_at``) and may already have been posted.

    Example::

        >>> job = store.job(7)
        >>> job.status, job.status.is_terminal, job.params
        (<JobStatus.PENDING: 'pending'>, False, {'seed': 42})
    """

    id: int
    run_id: int
    step_id: int | None
    parent_candidate_id: int | None
    prompt_id: str | None
    server: str | None
    status: JobStatus
    priority: int
    workflow: dict[str, Any] = field(repr=False)  # whole graphs drown a notebook's output
    params: dict[str, Any]
    error: dict[str, Any] | None
    retries: int
    max_retries: int
    progress_value: int | None
    progress_max: int | None
    created_at: datetime
    claimed_at: datetime | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """One output image of a job, kept as a file under the store's output folder.

    ``path`` is relative to ``store.output_dir``; ``child_count`` counts the jobs refined from
    it; ``picked`` and ``stars`` are the user's choice.

    Example::

        >>> c = store.candidate(12)
        >>> c.path, c.seed, c.picked, c.stars
        ('portraits/cnb_00012_.png', 42, False, None)
    """

    id: int
    job_id: int
    run_id: int
    step_id: int | None
    parent_candidate_id: int | None
    child_count: int
    node_id: str
    path: str
    sha256: str | None
    width: int | None
    height: int | None
    bytes: int | None
    seed: int | None
    cfg: float | None
    steps: int | None
    sampler: str | None
    prompt: str | None
    params: dict[str, Any]
    picked: bool
    stars: int | None
    created_at: datetime


@dataclass(frozen=True)
class NewCandidate:
    """An image already saved under the output folder, to record with its job's completion.

    ``seed``, ``prompt`` and ``params`` default to the job's params (``params["seed"]``,
    ``params["prompt"]``).

    Example::

        >>> NewCandidate(node_id="9", path="run1/cnb_00001_.png", sha256="ab..", width=512,
        ...              height=512, bytes=40213)
    """

    node_id: str
    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    seed: int | None = None
    prompt: str | None = None
    params: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Preview:
    """The latest sampler preview of a running job (ComfyUI's binary preview frames).

    The store keeps at most one per job, while it runs; ``seq`` grows on every write (of any
    job), so ``store.previews(after=seq)`` gives only what is newer.

    Example::

        >>> [p.job_id for p in store.previews(run="portraits")]
        [12, 13]
        >>> PIL.Image.open(io.BytesIO(store.previews()[0].image)).size
        (512, 512)
    """

    job_id: int
    seq: int
    mime: str  # "image/png" or "image/jpeg"
    image: bytes = field(repr=False)
    at: datetime
