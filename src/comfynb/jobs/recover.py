"""Put a store and a server back in agreement after a crash: nothing posted twice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.models import Job
from ..core.status import JobStatus
from ..core.urls import same_server
from ..errors import InvalidTransition, ServerError
from ..store.base import require_owner
from ..store.lifecycle import transition

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

from .base import alone_error
from .results import job_folder, remove_files
from .submit import Posted, poll_job_status, post_job


@dataclass(frozen=True)
class Recovery:
    """What ``recover`` did, as job ids per outcome.

    ``adopted``: posted before the crash, found on the server, now recorded as submitted;
    ``posted``: never reached the server, posted now (once); ``requeued``: the server forgot
    them, back to pending; ``completed``/``failed``: finished now; ``in_progress``: still
    queued or running on the server, or finished there but not collected (the server answers,
    but not about this job: e.g. a file it cannot send; call again, a worker fails it after a
    few tries); ``skipped``: jobs of another server;
    ``partial_files``: temporary download files removed.

    Example::

        >>> recover(store, client)
        Recovery(adopted=(41,), posted=(42,), requeued=(), completed=(38, 39, 40, 41), ...)
    """

    adopted: tuple[int, ...] = ()
    posted: tuple[int, ...] = ()
    requeued: tuple[int, ...] = ()
    completed: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    in_progress: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    partial_files: tuple[Path, ...] = ()


def recover(
    store: Store, client: Client, *, extra_data: Mapping[str, Any] | None = None
) -> Recovery:
    """After a crash, bring every job caught between states in line with the server.

    A worker calls it when it starts, before it claims anything; no other thread of this store
    may be downloading images of this server's jobs meanwhile (it removes their unfinished
    files; those of jobs on other servers, which it skips, stay). For each job that is
    submitted, running, or pending with a prompt_id (claimed, maybe posted): a prompt_id the
    server has (queued, running or in its history) is recorded as submitted and never posted
    again; one the server never saw is posted, once; finished ones are processed (images
    downloaded, candidates recorded) or failed; ones the server forgot go back to pending.
    Temporary files of interrupted downloads are removed from the output folder, and files of
    unfinished jobs that no candidate points to. One job never stops the others: a job that
    fails in an unforeseen way of its own (a value the store refuses, ...) is recorded
    ``failed`` with the reason; one whose result the server does not send while it answers
    other requests is left ``in_progress``.

    Example::

        >>> summary = recover(store, client)
        >>> summary.adopted, summary.posted, summary.completed
        ((41,), (42,), (38, 39, 40, 41))

    Args:
        extra_data: as for ``submit_job``, for the prompts that must be posted now.

    Raises:
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; what was
            reconciled so far stays, call it again.
    """
    require_owner(store, "comfynb.recover")  # a served store: refused before any I/O
    unsettled = store.unsettled_jobs()
    # a job of another server may be downloading right now (a worker recovers a server that
    # came up late while its pool downloads images from the others): its files stay
    elsewhere = [job_folder(store, j) for j in unsettled if _elsewhere(j, client)]
    partial = tuple(
        path
        for path in store.output_dir.rglob(".*.part")
        if path.is_file() and not any(path.is_relative_to(top) for top in elsewhere)
    )
    for path in partial:
        path.unlink(missing_ok=True)
    outcomes: dict[str, list[int]] = {name: [] for name in Recovery.__dataclass_fields__}
    for job in unsettled:
        if _elsewhere(job, client):
            outcomes["skipped"].append(job.id)
            continue
        try:
            after = _reconcile(store, client, job, outcomes, extra_data)
        except ServerError:
            if not _answers(client):
                raise  # the server is down: what was reconciled so far stays
            # it answers, but not about this job (e.g. a file it cannot send): left in
            # progress, the caller tries again (a worker fails it after a few tries)
            outcomes["in_progress"].append(job.id)
            continue
        except OSError:
            raise  # the output folder (full, in the way): not this job's fault
        except Exception as exc:  # this job's alone (a value the store refuses, ...)
            after = _fail_alone(store, job, exc)
        if after.status is JobStatus.PENDING and job.status is not JobStatus.PENDING:
            outcomes["requeued"].append(job.id)
        elif after.status is JobStatus.COMPLETED:
            outcomes["completed"].append(job.id)
        elif after.status is JobStatus.FAILED:
            outcomes["failed"].append(job.id)
        elif after.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            outcomes["in_progress"].append(job.id)
        _remove_strays(store, after)
    fields: dict[str, Any] = {name: tuple(ids) for name, ids in outcomes.items()}
    fields["partial_files"] = partial
    return Recovery(**fields)


def _reconcile(
    store: Store,
    client: Client,
    job: Job,
    outcomes: dict[str, list[int]],
    extra_data: Mapping[str, Any] | None,
) -> Job:
    """One job: posted (once) if it was claimed, then polled (and collected if finished)."""
    after = job
    if job.status is JobStatus.PENDING:
        # claimed, maybe posted: submit asks the server first and never posts it twice
        after, outcome = post_job(store, client, job, extra_data=extra_data)
        if after.status is JobStatus.SUBMITTED and isinstance(outcome, Posted):
            outcomes["adopted" if outcome.found else "posted"].append(job.id)
    return poll_job_status(store, client, after)


def _answers(client: Client) -> bool:
    """The server answers ``/system_stats`` (it is up, whatever failed about one job)."""
    try:
        client.system_stats()
    except ServerError:
        return False
    return True


def _fail_alone(store: Store, job: Job, exc: Exception) -> Job:
    """``job`` failed of an unforeseen exception of its own; the other jobs go on."""
    error = alone_error(exc, "recover could not bring it in line with the server")
    try:
        return transition(store, job.id, JobStatus.FAILED, error=error)
    except InvalidTransition:
        return store.job(job.id)


def _elsewhere(job: Job, client: Client) -> bool:
    """The job is another server's (``localhost`` and ``127.0.0.1`` are one: ``core.urls``)."""
    return job.server is not None and not same_server(job.server, client.url)


def _remove_strays(store: Store, job: Job) -> None:
    """Remove files in a job's folder that none of its candidates points to."""
    top = job_folder(store, job)
    if not top.is_dir():
        return
    with store.transaction() as tx:
        kept = {store.output_dir / c.path for c in tx.candidates_of(job.id)}
    strays = [p for p in top.rglob("*") if p.is_file() and p not in kept]
    remove_files(store, job, strays)
