"""A server's report on a job, turned into the job's move (running, failed, forgotten...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.models import Job
from ..core.status import JobStatus, retry_or_fail
from ..errors import (
    JobNotFound,
)
from ..protocol.types import JobReport, PromptStatus
from ..store.lifecycle import record_changes, transition

if TYPE_CHECKING:
    from ..store import Store

from .base import error_detail


def forgotten(store: Store, job: Job, exc: JobNotFound) -> Job:
    """A job its server does not know (a restart, a queue cleared): back to pending as a
    retry (a fresh prompt_id at its next claim), or failed once its retries are used up."""
    change = retry_or_fail(
        job, reason="the server does not know the prompt", error=error_detail(exc)
    )
    return record_changes(store, [change])[0]


def apply_report(store: Store, job: Job, report: JobReport) -> Job:
    """Move ``job`` as a report that is not ``completed`` says."""
    if report.status is PromptStatus.RUNNING and job.status is JobStatus.SUBMITTED:
        return transition(store, job.id, JobStatus.RUNNING)
    if report.status is PromptStatus.FAILED:
        failure = report.error
        error: dict[str, Any] = {
            "type": "ExecutionError",
            "message": "the server reports an error",
        }
        if failure is not None:
            error = {
                "type": "ExecutionError",
                "exception_type": failure.exception_type,
                "message": failure.message.strip(),
                "node_id": failure.node_id,
                "node_type": failure.node_type,
                "traceback": list(failure.traceback),
            }
        detail = {"outputs_listed": len(report.outputs)} if report.outputs else None
        return transition(store, job.id, JobStatus.FAILED, error=error, detail=detail)
    if report.status is PromptStatus.INTERRUPTED:
        where = f" at node {report.interrupted_at}" if report.interrupted_at else ""
        stopped: dict[str, Any] = {
            "type": "Interrupted",
            "message": f"interrupted on the server{where}, not by comfynb.cancel; "
            "enqueue the workflow again to run it",
            "node_id": report.interrupted_at,
        }
        return transition(store, job.id, JobStatus.FAILED, error=stopped)
    return job  # pending, still running, or a state this client cannot read
