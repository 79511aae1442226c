"""Cancel a job: at once if pending, on its server first if it was sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..core.models import Job
from ..core.status import JobStatus
from ..errors import InvalidInput, ServerUnreachable
from ..store.base import NotebookStore, ServedStore
from ..store.lifecycle import check_move, transition
from .base import check_server, load_job, withdraw

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

__all__ = ["cancel"]


def cancel(store: NotebookStore, job: Job | int, client: Client | None = None) -> Job:
    """Cancel a job: a pending one at once; a submitted or running one on its server first.

    A submitted or running job is deleted from the server's queue and interrupted by its
    prompt_id (only if it is the one running), then ``cancelled``. If its server cannot be
    reached at all (connection refused, unknown host: a stopped server, a restarted kernel's
    simulator), it is cancelled here anyway, and its ``cancelled`` event says the server was
    unreachable (a server that comes back may still run the prompt; its result is ignored).
    Cancelling a cancelled job changes nothing.

    Example::

        >>> cancel(store, job).status.value                       # pending
        'cancelled'
        >>> cancel(store, running_job, client=client).status.value
        'cancelled'

    Args:
        client: the job's server; needed for submitted and running jobs.

    Raises:
        InvalidTransition: the job is completed or failed.
        InvalidInput: a submitted or running job and no client (or one for another server).

    A store served by a ``comfynb worker`` process is cancelled there, with that process's
    client for the job's server; ``client`` is then not needed (and not used).
    """
    if isinstance(store, ServedStore):
        return store.cancel_on_owner(job)
    # not served: this process owns the store, and writes the move in its transaction
    owner = cast("Store", store)
    current = load_job(owner, job)
    if current.status is JobStatus.CANCELLED:
        return current
    check_move(current, JobStatus.CANCELLED)
    detail: dict[str, Any] = {"by": "comfynb.cancel"}
    on_server = current.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
    if client is None and on_server:
        raise InvalidInput(
            f"job {current.id} is {current.status.value} on {current.server}; pass its client "
            "to take it off that server: cancel(store, job, client=client)"
        )
    if client is not None and current.prompt_id is not None:
        check_server(current, client)
        try:
            withdraw(client, current.prompt_id)
            detail["withdrawn_from"] = client.url
        except ServerUnreachable as exc:
            # the server is gone (refused, unknown host): nothing there to take back now
            detail["server_unreachable"] = {"server": client.url, "error": str(exc)}
    return transition(owner, current.id, JobStatus.CANCELLED, detail=detail)
