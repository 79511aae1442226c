"""Claim a job, post it once with its recorded prompt_id, follow it to its end."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core import crashpoints as _crashpoints
from ..core.models import Job
from ..core.status import JobStatus
from ..errors import (
    TRANSIENT_ERRORS,
    InvalidTransition,
    JobNotFound,
    PromptRejected,
)
from ..protocol.calls import PromptStatus, RetryPolicy, new_prompt_id
from ..store.lifecycle import check_move, transition

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

from .base import check_server, error_detail, find_posted, load_job, withdraw
from .follow import apply_report, forgotten
from .results import process_job_result


def select_next_job(store: Store, *, server: str | None = None) -> Job | None:
    """Claim the next pending job, or return None when there is none.

    Highest priority first, then fair between runs (the run served least recently), then
    oldest first. The claim is atomic: two workers never take the same job. The claimed job
    stays ``pending`` with a fresh ``prompt_id``, which ``submit_job`` posts it with.

    Example::

        >>> job = select_next_job(store, server="http://127.0.0.1:8188")
        >>> job.status.value, len(job.prompt_id)
        ('pending', 36)

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


def submit_job(
    store: Store,
    client: Client,
    job: Job | int,
    *,
    extra_data: Mapping[str, Any] | None = None,
) -> Job:
    """Send a pending job to the server; it becomes ``submitted`` (or ``failed`` if refused).

    The prompt_id is recorded in the store before the POST (a claimed job already has one), so
    after a crash ``recover`` finds the job by it. A job that already had a prompt_id may have
    been posted before (a crash, an interrupted cell): the server is asked first, and a prompt
    it has is recorded as submitted, never posted again. Transient faults (unreachable,
    timeout, 5xx, after the client's own retries) are retried here with backoff and counted in
    ``retries``, reusing the same prompt_id; after ``max_retries`` the job fails. A rejected
    prompt fails at once with ComfyUI's node errors in ``error``.

    Example::

        >>> job = submit_job(store, client, job, extra_data={"api_key_comfy_org": key})
        >>> job.status.value, job.server
        ('submitted', 'http://127.0.0.1:8188')

    Args:
        store: the open store.
        client: the server to send it to (a job pinned to another server is refused).
        job: a pending job (or its id).
        extra_data: ComfyUI's ``extra_data``, API keys included: posted, never stored.

    Returns:
        The job as stored afterwards: ``submitted``, or ``failed`` with ``error``.

    Raises:
        InvalidTransition: the job is not pending.
        InvalidInput: the job is pinned to another server.
        UnexpectedResponse: the server answered something unreadable (the job stays pending).
    """
    current = load_job(store, job)
    if current.status is not JobStatus.PENDING:
        check_move(current, JobStatus.SUBMITTED)  # raises, naming the status
    check_server(current, client)
    maybe_posted = current.prompt_id is not None
    if current.prompt_id is None:
        current = store.record_intent(current.id, prompt_id=new_prompt_id(), server=client.url)
    prompt_id = current.prompt_id
    assert prompt_id is not None
    delays = RetryPolicy(
        attempts=current.max_retries + 1,
        base=client.retry.base,
        max_delay=client.retry.max_delay,
        seed=client.retry.seed,
    ).delays()
    while True:
        try:
            if maybe_posted and (report := find_posted(client, prompt_id)) is not None:
                return _mark_submitted(
                    store, client, current.id, {"found_on_server": report.status.value}
                )
            _crashpoints.reached("submit.before_post")
            maybe_posted = True
            queued = client.queue_prompt(
                current.workflow, prompt_id=prompt_id, extra_data=extra_data
            )
            _crashpoints.reached("submit.after_post")
            detail: dict[str, Any] = {"number": queued.number}
            if queued.node_errors:  # accepted, but only the valid outputs will run
                detail["problems"] = queued.problems
            return _mark_submitted(store, client, current.id, detail)
        except PromptRejected as exc:
            error = error_detail(exc, error_type=exc.error_type, node_errors=exc.node_errors)
            return transition(store, current.id, JobStatus.FAILED, error=error)
        except TRANSIENT_ERRORS as exc:
            current = store.job(current.id)
            delay = next(delays, None)
            if delay is None or current.retries >= current.max_retries:
                return transition(store, current.id, JobStatus.FAILED, error=error_detail(exc))
            current = store.update_job(current.id, retries=current.retries + 1, error=error_detail(exc))
            time.sleep(delay)


def _mark_submitted(store: Store, client: Client, job_id: int, detail: dict[str, Any]) -> Job:
    try:
        return transition(
            store, job_id, JobStatus.SUBMITTED, server=client.url, error=None, detail=detail
        )
    except InvalidTransition:
        # cancelled while the POST was on its way: take the prompt back off the server
        job = store.job(job_id)
        if job.status is JobStatus.CANCELLED and job.prompt_id is not None:
            withdraw(client, job.prompt_id)
            return job
        raise


def poll_job_status(store: Store, client: Client, job: Job | int) -> Job:
    """Ask the server about a submitted or running job and move it along.

    Running on the server -> ``running``; finished -> ``process_job_result`` collects the images
    and completes the job with them; failed -> ``failed`` with the server's error (exception
    type, message, node id and type, traceback) in ``error``; interrupted by someone else ->
    ``failed`` with ``error["type"] == "Interrupted"``. A job the server does not know (it
    restarted, or its queue was cleared) goes back to ``pending`` with a fresh prompt_id on
    the next claim, counted in ``retries``; once ``max_retries`` is used up it fails instead.
    Jobs in any other status are returned unchanged.

    Example::

        >>> job = submit_job(store, client, job)
        >>> while not job.status.is_terminal:
        ...     job = poll_job_status(store, client, job)
        >>> job.status.value
        'completed'

    Returns:
        The job as stored afterwards.

    Raises:
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; the job is
            unchanged, poll again later.
    """
    current = load_job(store, job)
    if current.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        return current
    assert current.prompt_id is not None
    check_server(current, client)
    try:
        report = client.job(current.prompt_id)
    except JobNotFound as exc:
        return forgotten(store, current, exc)
    if report.status is PromptStatus.COMPLETED:
        return process_job_result(store, client, current, report=report)
    return apply_report(store, current, report)


