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

from .core.models import Candidate, Job, Run, Step
from .core.status import JobStatus
from .errors import (
    CandidateNotFound,
    ComfynbError,
    CorruptImage,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    JobNotInStore,
    NotAStore,
    ObjectInfoNotFound,
    OutputError,
    OwnedByWorker,
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
    StoreWriteFailed,
    UnexpectedResponse,
    UnsafePath,
    WorkerError,
    WorkerGone,
    WorkflowError,
)
from .jobs import (
    cancel,
    enqueue,
    enqueue_many,
    poll_job_status,
    process_job_result,
    recover,
    refine,
    reproduce,
    retry_failed,
    select_next_job,
    submit_job,
)
from .protocol.types import PromptStatus, RetryPolicy

if TYPE_CHECKING:
    from .client import AsyncClient as AsyncClient
    from .client import Client as Client
    from .jobs.sweep import sweep
    from .service.open import open
    from .simulator import Simulator as Simulator
    from .store import Store as Store
    from .views.compare import compare
    from .views.gallery import Gallery
    from .views.jobtable import JobTable
    from .views.wait import wait
    from .worker.worker import Worker
    from .workflows.workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Candidate",
    "CandidateNotFound",
    "Client",
    "ComfynbError",
    "CorruptImage",
    "Gallery",
    "InvalidInput",
    "InvalidTransition",
    "Job",
    "JobNotFound",
    "JobNotInStore",
    "JobStatus",
    "JobTable",
    "NotAStore",
    "ObjectInfoNotFound",
    "OutputError",
    "OwnedByWorker",
    "PromptRejected",
    "PromptStatus",
    "RecordNotFound",
    "RetryPolicy",
    "Run",
    "RunNotFound",
    "SchemaTooNew",
    "ServerError",
    "ServerFailed",
    "ServerTimeout",
    "ServerUnreachable",
    "Step",
    "StepNotFound",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreWriteFailed",
    "UnexpectedResponse",
    "UnsafePath",
    "Worker",
    "WorkerError",
    "WorkerGone",
    "Workflow",
    "WorkflowError",
    "cancel",
    "compare",
    "enqueue",
    "enqueue_many",
    "open",
    "poll_job_status",
    "process_job_result",
    "recover",
    "refine",
    "reproduce",
    "retry_failed",
    "select_next_job",
    "submit_job",
    "sweep",
    "wait",
]

# Everything else (result types such as JobReport or WaitSummary, the batched store calls the
# worker uses) stays in its module: comfynb.protocol.*, comfynb.jobs, comfynb.store.lifecycle, ...
# Names whose modules are heavy (aiohttp, widget libraries): imported on first use.
# The store needs duckdb and pandas: imported on first use of comfynb.Store or comfynb.open.
# The clients need httpx: imported on first use of comfynb.Client or comfynb.AsyncClient.
_LAZY = {
    "AsyncClient": ".client",
    "Client": ".client",
    "Gallery": ".views.gallery",
    "compare": ".views.compare",
    "Simulator": ".simulator",
    "Store": ".store",
    "open": ".service.open",
    "Worker": ".worker.worker",
    "wait": ".views.wait",
    "JobTable": ".views.jobtable",
    "Workflow": ".workflows.workflow",
    "sweep": ".jobs.sweep",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'comfynb' has no attribute {name!r}")
