"""The store as a notebook uses it, whatever holds the data: the seam between backends.

Two stores implement :class:`NotebookStore` today: ``comfynb.store.Store`` (a DuckDB file this
process owns) and ``comfynb.service.remote.RemoteStore`` (the store of a ``comfynb worker``
process, reached through its local endpoint). A test holds them to the same methods with the
same signatures, so code above the store (``comfynb.jobs``, ``comfynb.wait``, the views) takes a
``NotebookStore`` and never needs to know which it has, nor import DuckDB.

Example::

    >>> def pick_best(store: NotebookStore, run: str) -> Candidate:
    ...     best = store.candidates(run=run).sort_values("stars").iloc[-1]
    ...     return store.pick(int(best["id"]))

What a backend (a PostgreSQL store, later) must provide:

* Every method of :class:`NotebookStore`, with these signatures, results and errors: singular
  reads return the frozen dataclasses of ``comfynb.core.models`` (timezone-aware UTC times,
  JSON columns as fresh dicts); plural reads return DataFrames with one column per key of the
  rows' ``params`` and nullable dtypes (``Int64``, ``boolean``, ``str``, ``datetime64[us,
  UTC]``); a missing row raises the ``RecordNotFound`` of its kind, a bad argument
  ``InvalidInput``, and a failed call writes nothing. JSON it writes has lost its
  secret-looking keys (``comfynb.core.jsonio.to_json``). :meth:`NotebookStore.add_jobs` writes
  its jobs in ONE transaction, ids ascending in the order given.
* For a worker that drives jobs in this process, what ``Store`` has beyond the interface
  (``ServedStore`` lists it): ``transaction()``, yielding a transaction whose methods the
  job functions and the lifecycle call (``job``, ``job_states``, ``jobs_by_id``,
  ``candidates_of``, ``apply_plan``, ``insert_candidates_many``, ``add_child_counts``,
  ``set_progress``, ``set_previews``; none of them takes SQL), with ``apply_plan`` the only code that writes
  ``jobs.status`` and ``comfynb.store.lifecycle`` its only caller; the claims
  (``claim_next_job(s)``, ``claimable``, ``record_intent``) with their order (priority,
  then fair between runs, then oldest) and atomicity between processes; and ``change_counts()`` (:class:`ChangeCounts`: a backend with several
  writing processes counts what it sees, e.g. by LISTEN/NOTIFY).
* A store that another process owns and serves derives from :class:`ServedStore`: the
  worker-side calls are refused there with ``OwnedByWorker``, and ``comfynb.cancel`` runs on
  the owner (:meth:`ServedStore.cancel_on_owner`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, Self

from ..core.jsonio import from_json
from ..core.models import Candidate, Job, NewStep, Preview, Run, Step
from ..core.status import JobStatus
from ..errors import OwnedByWorker

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AddedJobs",
    "ChangeCounts",
    "NotebookStore",
    "ServedStore",
    "require_owner",
]


@dataclass(frozen=True)
class ChangeCounts:
    """Counters a worker reads to skip queries; they only grow (a rolled-back write may bump them).

    Example::

        >>> before = store.change_counts()
        >>> job = comfynb.enqueue(store, workflow, run="portraits")
        >>> store.change_counts().queue_changes > before.queue_changes
        True
    """

    #: jobs may have become claimable: enqueued, put back to pending, claims released
    queue_changes: int
    #: jobs were cancelled
    cancellations: int


@dataclass(frozen=True)
class AddedJobs:
    """What a store gave the jobs :meth:`NotebookStore.add_jobs` wrote: ids and references.

    The rest of each job is what was passed in (a pending job has nothing else), so
    :meth:`jobs` makes the ``Job`` records without reading the rows back.

    Example::

        >>> added = store.add_jobs([workflow_json], run="portraits")
        >>> added.ids, added.run_id
        ((1,), 1)
    """

    run_id: int
    step_id: int | None
    parent_candidate_id: int | None
    ids: tuple[int, ...]
    created_at: tuple[datetime, ...]

    def __post_init__(self) -> None:  # lists from the wire become tuples, as the store makes
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "created_at", tuple(self.created_at))

    def jobs(
        self,
        workflows_json: Sequence[str],
        params_json: Sequence[str | None] | None,
        *,
        priority: int,
        max_retries: int,
        metadata_json: str | None,
    ) -> list[Job]:
        """The new jobs as the store now holds them, from the JSON texts that were written."""
        return [
            Job(
                id=job_id,
                run_id=self.run_id,
                step_id=self.step_id,
                parent_candidate_id=self.parent_candidate_id,
                prompt_id=None,
                server=None,
                status=JobStatus.PENDING,
                priority=priority,
                workflow=from_json(workflow),
                params=from_json(params_json[i] if params_json is not None else None) or {},
                error=None,
                retries=0,
                max_retries=max_retries,
                progress_value=None,
                progress_max=None,
                created_at=created_at,
                claimed_at=None,
                submitted_at=None,
                started_at=None,
                finished_at=None,
                metadata=from_json(metadata_json) or {},  # each job its own dict
            )
            for i, (job_id, created_at, workflow) in enumerate(
                zip(self.ids, self.created_at, workflows_json, strict=True)
            )
        ]


class NotebookStore(Protocol):
    """What a notebook does with a store; ``Store`` and ``RemoteStore`` both have exactly this.

    Each method is documented on ``comfynb.store.Store``, with an example.

    Example::

        >>> store: NotebookStore = comfynb.open("lab.duckdb")
        >>> store.new_run("portraits").name
        'portraits'
    """

    @property
    def path(self) -> str:
        """The store's file, as given to ``open``."""
        ...

    @property
    def output_dir(self) -> Path:
        """Where the image files live; candidates' paths are relative to it."""
        ...

    @property
    def schema_version(self) -> int:
        """How many migrations the file has had."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def new_run(
        self, name: str, notes: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Run: ...

    def run(self, id_or_name: int | str) -> Run: ...

    def new_step(
        self,
        run: Run | int | str,
        kind: str,
        workflow: Mapping[str, Any],
        params_spec: Mapping[str, Any] | None = None,
        parent_candidate: Candidate | int | None = None,
    ) -> Step: ...

    def step(self, step_id: int) -> Step: ...

    def add_jobs(
        self,
        workflows_json: Sequence[str],
        *,
        run: Run | int | str,
        step: Step | NewStep | int | None = None,
        parent: Candidate | int | None = None,
        params_json: Sequence[str | None] | None = None,
        priority: int = 0,
        max_retries: int = 3,
        metadata_json: str | None = None,
    ) -> AddedJobs:
        """Write pending jobs that ``comfynb.enqueue_many`` checked, in ONE transaction."""
        ...

    def job(self, job_id: int) -> Job: ...

    def unsettled_jobs(self) -> list[Job]: ...

    def status_counts(
        self, *, run: Run | int | str | None = None, job_ids: Iterable[int] | None = None
    ) -> dict[str, int]: ...

    def previews(self, run: Run | int | str | None = None, after: int = 0) -> list[Preview]:
        """The latest sampler preview of each running job (of ``run``) newer than ``after``."""
        ...

    def candidate(self, candidate_id: int) -> Candidate: ...

    def image_path(self, candidate: Candidate | int) -> Path: ...

    def pick(self, candidate: Candidate | int, picked: bool = True) -> Candidate: ...

    def star(self, candidate: Candidate | int, stars: int | None) -> Candidate: ...

    def lineage(self, candidate: Candidate | int) -> pd.DataFrame: ...

    def runs(self) -> pd.DataFrame: ...

    def jobs(
        self,
        run: Run | int | str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        *,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Jobs as a DataFrame; with ``changed_since=n`` only the rows written after change
        number ``n``, with their ``change_seq`` (see ``Store.jobs``)::

            >>> changed = store.jobs(run="portraits", changed_since=cursor)
            >>> cursor = int(changed["change_seq"].max()) if len(changed) else cursor
        """
        ...

    def candidates(
        self,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        picked: bool | None = None,
        *,
        job: Job | int | None = None,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Candidates as a DataFrame; ``changed_since`` as in :meth:`jobs` (new candidates,
        picks, stars, children): see ``Store.candidates``."""
        ...

    def events(self, job: Job | int | None = None) -> pd.DataFrame: ...

    def export(
        self, path: str | os.PathLike[str], what: str = "candidates", **filters: Any
    ) -> Path: ...

    def object_info(self, server: str | None = None) -> dict[str, Any]:
        """The stored ``/object_info`` copy of ``server`` (the newest of any if None)."""
        ...

    def save_object_info(self, server: str, info: Mapping[str, Any]) -> bool:
        """Keep ``info`` as ``server``'s ``/object_info`` copy; False if it was unchanged."""
        ...


class ServedStore(ABC):
    """A store another process owns and serves to this one: its worker drives the jobs.

    The calls that drive a job's life (claims, submits, transitions, transactions) are the
    owner's: here each one raises ``OwnedByWorker`` at once, with the arguments ``Store``
    takes, naming the owner's PID and what to do instead. ``comfynb.cancel`` runs on the owner,
    which has a client for the job's server (:meth:`cancel_on_owner`).

    Example::

        >>> remote = comfynb.open("lab.duckdb")      # a comfynb worker owns the file
        >>> comfynb.select_next_job(remote)
        Traceback (most recent call last):
        comfynb.errors.OwnedByWorker: store.claim_next_job() is refused: lab.duckdb is owned ...
    """

    #: the store's file
    path: str
    #: the process that owns the file and serves it
    pid: int

    @abstractmethod
    def cancel_on_owner(self, job: Job | int) -> Job:
        """``comfynb.cancel`` done by the owner process, with its client for the job's server."""

    def servers_down_on_owner(self) -> list[str]:
        """What the owner's worker says of its servers that are down, one line each
        (``"http://127.0.0.1:9 down since 12:01:02: connection refused"``); ``comfynb.wait``
        shows them. A backend without a worker to ask says nothing."""
        return []

    def refuse(self, call: str) -> NoReturn:
        """Raise ``OwnedByWorker`` for ``call``: the owner process does it itself."""
        raise OwnedByWorker(self.path, pid=self.pid, call=call)

    # The owner's calls, with Store's arguments: a call with the right arguments gets the
    # refusal, never a TypeError or an AttributeError.

    def transaction(self) -> NoReturn:
        """Refused: the owner process writes the jobs' lives (``OwnedByWorker``)."""
        self.refuse("store.transaction()")

    def claim_next_job(self, *, server: str | None = None) -> NoReturn:
        """Refused: the owner's worker claims jobs (``OwnedByWorker``)."""
        self.refuse("store.claim_next_job()")

    def claim_next_jobs(self, n: int, *, server: str | None = None) -> NoReturn:
        """Refused: the owner's worker claims jobs (``OwnedByWorker``)."""
        self.refuse("store.claim_next_jobs()")

    def claimable(self, servers: Sequence[str] | None = None) -> NoReturn:
        """Refused: only the owner's worker claims, so only it asks (``OwnedByWorker``)."""
        self.refuse("store.claimable()")

    def record_intent(self, job_id: int, *, prompt_id: str, server: str | None = None) -> NoReturn:
        """Refused: the owner's worker posts jobs (``OwnedByWorker``)."""
        self.refuse("store.record_intent()")

    def change_counts(self) -> NoReturn:
        """Refused: the counters are the owner's worker's (``OwnedByWorker``)."""
        self.refuse("store.change_counts()")

    def candidates_by_sha256(self, prefix: str) -> NoReturn:
        """Refused: the owner's worker uploads a job's input images (``OwnedByWorker``)."""
        self.refuse("store.candidates_by_sha256()")


def require_owner(store: object, call: str) -> None:
    """Refuse ``call`` with ``OwnedByWorker`` when another process owns and serves ``store``.

    For job functions that read before they write (``submit_job`` asks the server about a
    claimed job, ``recover`` removes partial files): call it first, so nothing is done.

    Example::

        >>> require_owner(remote, "comfynb.submit_job")
        Traceback (most recent call last):
        comfynb.errors.OwnedByWorker: comfynb.submit_job is refused: lab.duckdb is owned ...
    """
    if isinstance(store, ServedStore):
        store.refuse(call)
