"""What the job functions share: loading a job, the server it is on, errors as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.models import Job
from ..core.urls import same_server
from ..errors import (
    InvalidInput,
    JobNotFound,
)
from ..protocol.types import JobReport

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store


def load_job(store: Store, job: Job | int) -> Job:
    """The job as stored now (a ``Job`` passed in may be stale)."""
    return store.job(job.id if isinstance(job, Job) else job)


def check_server(job: Job, client: Client) -> None:
    if job.server is not None and not same_server(job.server, client.url):
        raise InvalidInput(
            f"job {job.id} belongs to server {job.server}, not {client.url}; use a client "
            f"for that server: comfynb.Client({job.server!r})"
        )


def find_posted(client: Client, prompt_id: str) -> JobReport | None:
    """The server's report of ``prompt_id``, or None if it never saw it."""
    try:
        return client.job(prompt_id)
    except JobNotFound:
        return None


def error_detail(exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc), **extra}


def alone_error(exc: BaseException, reason: str) -> dict[str, Any]:
    """The error of a job that fails alone of an unexpected exception (the others go on):
    its type, the first line of its message (a store error's SQL is left out), and why.

    Example::

        >>> alone_error(StoreError("DuckDB failed: Conversion Error: ...\nLINE 1: ..."),
        ...             "its result could not be recorded")
        {'type': 'StoreError', 'message': 'its result could not be recorded: DuckDB ...', ...}
    """
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > 500:
        first = first[:500] + "..."
    return {
        "type": type(exc).__name__,
        "message": f"{reason}: {first}" if first else reason,
        "reason": reason,
    }


def withdraw(client: Client, prompt_id: str) -> None:
    # delete first, then interrupt: a prompt that starts in between is caught by the interrupt
    client.delete_from_queue([prompt_id])
    client.interrupt(prompt_id)
