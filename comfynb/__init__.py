"""comfynb: drive a ComfyUI server from a Jupyter notebook as an experiment.

Example::

    >>> import comfynb
    >>> with comfynb.Simulator() as sim, comfynb.Client(sim.url) as client:
    ...     queued = client.queue_prompt(prompt)
    ...     client.job(queued.prompt_id).status
    'completed'

Importing comfynb is cheap and quiet: no threads, no sockets, no widget libraries. The
simulator (aiohttp) is imported on first use of ``comfynb.Simulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CandidateNotFound,
    ComfynbError,
    CorruptImage,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    JobNotInStore,
    OutputError,
    PromptRejected,
    RecordNotFound,
    RunNotFound,
    SchemaTooNew,
    ServerError,
    ServerFailed,
    ServerTimeout,
    ServerUnreachable,
    StepNotFound,
    StoreError,
    StoreLocked,
    UnexpectedResponse,
    UnsafePath,
    WorkerError,
    WorkerGone,
    WorkflowError,
)
from .jobs import (
    cancel,
    enqueue,
    poll_job_status,
    process_job_result,
    record_result,
    record_results,
    recover,
    select_next_job,
    select_next_jobs,
    submit_job,
)
from .lifecycle import JobStatus, transition, transition_many
from .models import Candidate, Job, NewCandidate, Run, Step
from .protocol import ImageRef, JobReport, PromptStatus, QueuedPrompt, RetryPolicy

if TYPE_CHECKING:
    from .client import AsyncClient as AsyncClient
    from .client import Client as Client
    from .remote import RemoteStore as RemoteStore
    from .simulator import Simulator as Simulator
    from .store import Store as Store
    from .store import open as open
    from .waiting import WaitSummary as WaitSummary
    from .waiting import wait as wait
    from .worker import RunSummary as RunSummary
    from .worker import ServerStatus as ServerStatus
    from .worker import Worker as Worker
    from .worker import WorkerStatus as WorkerStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Candidate",
    "CandidateNotFound",
    "Client",
    "ComfynbError",
    "CorruptImage",
    "ImageRef",
    "InvalidInput",
    "InvalidTransition",
    "Job",
    "JobNotFound",
    "JobNotInStore",
    "JobReport",
    "JobStatus",
    "NewCandidate",
    "OutputError",
    "PromptRejected",
    "PromptStatus",
    "QueuedPrompt",
    "RecordNotFound",
    "RemoteStore",
    "RetryPolicy",
    "Run",
    "RunNotFound",
    "RunSummary",
    "SchemaTooNew",
    "ServerError",
    "ServerFailed",
    "ServerStatus",
    "ServerTimeout",
    "ServerUnreachable",
    "Step",
    "StepNotFound",
    "Store",
    "StoreError",
    "StoreLocked",
    "UnexpectedResponse",
    "UnsafePath",
    "WaitSummary",
    "Worker",
    "WorkerError",
    "WorkerGone",
    "WorkerStatus",
    "WorkflowError",
    "cancel",
    "enqueue",
    "open",
    "poll_job_status",
    "process_job_result",
    "record_result",
    "record_results",
    "recover",
    "select_next_job",
    "select_next_jobs",
    "submit_job",
    "transition",
    "transition_many",
    "wait",
]

# Names whose modules are heavy (aiohttp, widget libraries): imported on first use.
# The store needs duckdb and pandas: imported on first use of comfynb.Store or comfynb.open.
# The clients need httpx: imported on first use of comfynb.Client or comfynb.AsyncClient.
_LAZY = {
    "AsyncClient": ".client",
    "Client": ".client",
    "RemoteStore": ".remote",
    "Simulator": ".simulator",
    "Store": ".store",
    "open": ".store",
    "RunSummary": ".worker",
    "ServerStatus": ".worker",
    "WaitSummary": ".waiting",
    "Worker": ".worker",
    "WorkerStatus": ".worker",
    "wait": ".waiting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'comfynb' has no attribute {name!r}")
