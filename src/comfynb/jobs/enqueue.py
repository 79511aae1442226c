"""Queue workflows as pending jobs: checked first, written in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.models import Candidate, Job, Run, Step
from ..errors import (
    InvalidInput,
)
from ..workflows.check import check_int, check_workflow

if TYPE_CHECKING:
    from ..service.remote import RemoteStore
    from ..store import Store



def served_by(store: Store | RemoteStore) -> RemoteStore | None:
    """The store if a worker process serves it (that process does its writes), else None."""
    from ..store import Store

    return None if isinstance(store, Store) else store


def enqueue(
    store: Store | RemoteStore,
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
    from ..core.jsonio import to_json as _to_json
    from ..store import Store

    check_workflow(workflow)
    check_int(priority, "priority", -(2**31))
    check_int(max_retries, "max_retries", 0)
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInput(f'params is a dict of what varied, e.g. {{"seed": 42}}; got {params!r}')
    flow = _to_json(dict(workflow), "workflow")
    params_json = _to_json(dict(params or {}), "params")
    metadata_json = _to_json(dict(metadata or {}), "metadata")
    assert flow is not None
    remote = served_by(store)
    if remote is not None:  # checked here, written by the worker process that owns the file
        return remote._enqueue(
            workflow,
            run=run,
            step=step,
            params=params,
            priority=priority,
            parent=parent,
            max_retries=max_retries,
            metadata=metadata,
        )
    assert isinstance(store, Store)
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


