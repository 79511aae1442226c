"""Retry a failed job: queue its workflow again as a new job; the failed one stays as it was.

A job's status only moves forward (``failed`` is final, see ``core.status``), so a retry is
a fresh ``pending`` job with the same workflow, run, step, parent, params and priority, and
``metadata["retry_of"]`` naming the failed job. It goes through ``enqueue``, so it works the
same on a local store and through a ``comfynb worker`` endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..core.models import Job
from ..core.status import JobStatus
from ..errors import InvalidInput
from .enqueue import enqueue

if TYPE_CHECKING:
    from ..store.base import NotebookStore

__all__ = ["replaced_by_retries", "retry_failed"]


def retry_failed(store: NotebookStore, job: Job | int) -> Job:
    """Queue a failed job's workflow again; returns the new ``pending`` job.

    Example::

        >>> new = comfynb.retry_failed(store, 9)          # job 9 failed
        >>> new.status.value, new.metadata["retry_of"], store.job(9).status.value
        ('pending', 9, 'failed')

    Raises:
        JobNotInStore: no such job.
        InvalidInput: the job did not fail (only failed jobs are retried this way).
    """
    if isinstance(job, bool) or not isinstance(job, Job | int):
        raise InvalidInput(f"job is a Job or its id, got {job!r}")
    current = store.job(job.id if isinstance(job, Job) else job)
    if current.status is not JobStatus.FAILED:
        raise InvalidInput(
            f"job {current.id} is {current.status.value}; only a failed job is retried "
            "(cancel a job that runs, or wait for it)"
        )
    metadata: dict[str, Any] = {**current.metadata, "retry_of": current.id}
    return enqueue(
        store,
        current.workflow,
        run=current.run_id,
        step=current.step_id,
        priority=current.priority,
        parent=current.parent_candidate_id,
        max_retries=current.max_retries,
        metadata=metadata,
        params=current.params or None,
    )


def replaced_by_retries(metadata: Iterable[Any]) -> set[int]:
    """The ids of the failed jobs that a retry queued again, read from the jobs' ``metadata``
    (a column of ``store.jobs()``: dicts or their JSON text).

    Example::

        >>> jobs = store.jobs(run="portraits")
        >>> live = jobs[~jobs["id"].isin(replaced_by_retries(jobs["metadata"]))]
    """
    replaced: set[int] = set()
    for meta in metadata:
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except ValueError:
                continue
        if isinstance(meta, Mapping) and isinstance(meta.get("retry_of"), int):
            replaced.add(meta["retry_of"])
    return replaced
