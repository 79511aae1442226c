"""Every error comfynb raises, in one tree.

* ComfynbError
  + ServerError                  something went wrong talking to a ComfyUI server
    - ServerUnreachable          could not connect (refused, reset, DNS)
    - ServerTimeout              connected, but no answer in time
    - ServerFailed               the server answered 5xx; ``.status`` and ``.body`` hold what it said
    - PromptRejected             HTTP 400 on ``POST /prompt``; ``.node_errors`` says why
    - JobNotFound                the server does not know that prompt_id
    - UnexpectedResponse         an answer whose shape we cannot read
  + OutputError                  an output image we refuse to keep
    - UnsafePath                 a server-named file would land outside the output folder
    - CorruptImage               downloaded bytes that are not a whole image
  + StoreError                   the DuckDB store refused or failed (comfynb.open, Store)
    - StoreLocked                another process holds the file; ``.pid`` names it
    - WorkerGone                 the worker process serving the store has exited (comfynb.open)
    - OwnedByWorker              a call the worker process owning the store does itself
                                 (claims, submits, transactions); ``.pid`` names it
    - StoreWriteFailed           the file could not be written (disk full, no permission)
    - NotAStore                  a file that is not a comfynb store (another program's)
    - SchemaTooNew               the file was written by a newer comfynb
    - InvalidTransition          a job status move the lifecycle table forbids
    - InvalidInput               a bad argument to a store call (also a ``ValueError``)
    - RecordNotFound             no row with that id or name (also a ``LookupError``)
      . RunNotFound, StepNotFound, CandidateNotFound
      . JobNotInStore            no job with that id in the store (``JobNotFound`` is the server's)
      . ObjectInfoNotFound       no copy of that server's ``/object_info`` in the store
  + WorkflowError                a workflow that is not a ComfyUI API prompt; ``.node_id`` names the node
  + WorkerError                  a worker cannot start (another one runs on the store)

Catch ``ComfynbError`` to catch them all; each message says what was wrong and what to do.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "TRANSIENT_ERRORS",
    "CandidateNotFound",
    "ComfynbError",
    "CorruptImage",
    "InvalidInput",
    "InvalidTransition",
    "JobNotFound",
    "JobNotInStore",
    "NotAStore",
    "ObjectInfoNotFound",
    "OutputError",
    "OwnedByWorker",
    "PromptRejected",
    "RecordNotFound",
    "RunNotFound",
    "SchemaTooNew",
    "ServerError",
    "ServerFailed",
    "ServerTimeout",
    "ServerUnreachable",
    "StepNotFound",
    "StoreError",
    "StoreLocked",
    "StoreWriteFailed",
    "UnexpectedResponse",
    "UnsafePath",
    "WorkerError",
    "WorkerGone",
    "WorkflowError",
]


class ComfynbError(Exception):
    """Base of every comfynb error."""


class ServerError(ComfynbError):
    """Talking to a ComfyUI server failed."""


class ServerUnreachable(ServerError):
    """No connection could be made (refused, reset before an answer, unknown host)."""


class ServerTimeout(ServerError):
    """The server took longer than the client's timeout to answer."""


class ServerFailed(ServerError):
    """The server answered with a 5xx status.

    ``status`` is the HTTP status and ``body`` the text it sent (ComfyUI sends
    ``500 Internal Server Error\\n\\nServer got itself in trouble`` for malformed input).
    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class PromptRejected(ServerError):
    """ComfyUI refused the workflow (HTTP 400); nothing was queued.

    ``error_type`` is ComfyUI's ``error.type`` as sent (unknown types from newer servers are
    kept as they come), ``error`` the whole ``error`` object and ``node_errors`` the per-node
    errors keyed by node id.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        error: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error = error or {}
        self.node_errors = node_errors or {}


class JobNotFound(ServerError):
    """The server knows no job with this prompt_id (never queued, deleted, or lost in a restart)."""

    def __init__(self, prompt_id: str) -> None:
        super().__init__(
            f"the server knows no job {prompt_id!r}: it was never queued, was deleted, "
            "or the server restarted and forgot it; queue it again"
        )
        self.prompt_id = prompt_id


class UnexpectedResponse(ServerError):
    """The server answered with something we cannot read (a newer or foreign server?)."""


class OutputError(ComfynbError):
    """An output image that comfynb refuses to keep."""


class UnsafePath(OutputError):
    """A file name from the server would land outside the output folder."""


class CorruptImage(OutputError):
    """Downloaded bytes are not a whole, decodable image (truncated or not an image)."""


class StoreError(ComfynbError):
    """The DuckDB store refused or failed; nothing of the failed call was written."""


class StoreLocked(StoreError):
    """Another process holds the store's file (DuckDB lets one process own a file).

    ``path`` is the file, ``pid`` the holder's process id when DuckDB named it, and
    ``holder`` the program DuckDB named (or ``""``).
    """

    def __init__(self, path: str, *, pid: int | None, holder: str = "") -> None:
        who = f"{holder} (PID {pid})" if pid is not None else (holder or "another process")
        stop = f"or end PID {pid} " if pid is not None else ""
        super().__init__(
            f"{path} is open in another process: {who}. DuckDB lets one process own a file: "
            f"close the store there (store.close(), or restart that notebook kernel) {stop}"
            "and open it again, or open a copy of the file. To use one store from a notebook "
            "while jobs run, let `comfynb worker --db FILE` own it: comfynb.open(FILE) then "
            "reaches it through the worker"
        )
        self.path = path
        self.pid = pid
        self.holder = holder


class WorkerGone(StoreError):
    """The ``comfynb worker`` process that served this store no longer answers.

    ``path`` is the store's file, ``pid`` the worker's process id and ``url`` its endpoint.
    """

    def __init__(self, path: str, *, pid: int | None, url: str, reason: str = "") -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"the comfynb worker (PID {pid}) that served {path} at {url} is gone{why}; "
            f"open the store again with comfynb.open({path!r}): it opens the file itself when "
            f"no worker runs, or start the worker again (comfynb worker --db {path} ...)"
        )
        self.path = path
        self.pid = pid
        self.url = url


class OwnedByWorker(StoreError):
    """A call that drives jobs, on a store a ``comfynb worker`` process owns: it does them itself.

    ``path`` is the store's file, ``pid`` the worker's process id and ``call`` what was refused.
    Nothing was done.
    """

    def __init__(self, path: str, *, pid: int, call: str) -> None:
        super().__init__(
            f"{call} is refused: {path} is owned by the comfynb worker (PID {pid}), which "
            "claims, submits, follows and records jobs itself. From this notebook queue jobs "
            "with comfynb.enqueue(store, ...) or comfynb.enqueue_many, follow them with "
            "comfynb.wait and cancel them with comfynb.cancel; or stop the worker (Ctrl-C in its "
            f"terminal, or kill -TERM {pid}) and open the file to drive jobs by hand"
        )
        self.path = path
        self.pid = pid
        self.call = call


class StoreWriteFailed(StoreError):
    """DuckDB could not write the store's file (a full disk, no permission, a size limit).

    ``path`` is the file; the message has the system's reason. Nothing of the failed call or
    transaction was kept.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class NotAStore(StoreError):
    """A file that is not a comfynb store: another program's DuckDB file, or no file at all.

    ``path`` is the file; the message says what it is. It was left as it was.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class SchemaTooNew(StoreError):
    """The file's schema is newer than this comfynb knows; upgrade comfynb to open it."""


class InvalidTransition(StoreError):
    """A job status move that ``comfynb.core.status.ALLOWED`` forbids; the job is unchanged."""

    def __init__(self, job_id: int, from_status: str, to_status: str, allowed: list[str]) -> None:
        can = ", ".join(allowed) if allowed else "nothing (it is final)"
        super().__init__(
            f"job {job_id} cannot move from {from_status!r} to {to_status!r}; "
            f"from {from_status!r} it may move to {can}. The job is unchanged."
        )
        self.job_id = job_id
        self.from_status = from_status
        self.to_status = to_status


class StaleStates(StoreError):
    """A batch of moves was planned from job states that changed before it was written.

    Raised inside the transaction, which must be rolled back: nothing of the batch is kept.
    """


class InvalidInput(StoreError, ValueError):
    """An argument the store cannot accept; the message names it and what to pass instead."""


class RecordNotFound(StoreError, LookupError):
    """No row in the store has this id (or name); ``kind`` is the table, ``key`` what was asked."""

    kind = "row"

    def __init__(self, key: object, hint: str = "") -> None:
        super().__init__(f"no {self.kind} {key!r} in the store{'; ' + hint if hint else ''}")
        self.key = key


class RunNotFound(RecordNotFound):
    """No run with this id or name; ``store.runs()`` lists them, ``store.new_run(name)`` makes one."""

    kind = "run"


class StepNotFound(RecordNotFound):
    """No step with this id; ``store.new_step(...)`` makes one."""

    kind = "step"


class JobNotInStore(RecordNotFound):
    """No job with this id in the store (``JobNotFound`` is the server not knowing a prompt_id)."""

    kind = "job"


class CandidateNotFound(RecordNotFound):
    """No image candidate with this id; ``store.candidates()`` lists them."""

    kind = "candidate"


class ObjectInfoNotFound(RecordNotFound):
    """The store has no copy of this server's ``/object_info`` (``key``: the server, or None
    for any server); the message says how to get one."""

    kind = "/object_info copy"

    def __init__(self, server: str | None, stored: list[str] | None = None) -> None:
        whose = f"of {server}" if server is not None else "of any server"
        has = f" (it has copies of {', '.join(stored)})" if stored else ""
        url = server or "http://127.0.0.1:8188"
        Exception.__init__(
            self,
            f"the store has no /object_info copy {whose}{has}. A worker saves one when a "
            f"server first answers: run one on it once (comfynb worker --db FILE --server "
            f"{url}, or comfynb.Worker(store, [{url!r}]).start()); or, while the server is "
            f"up, pass object_info={url!r} (or a comfynb.Client) instead of the store, or "
            f"save a copy yourself: store.save_object_info({url!r}, client.object_info())",
        )
        self.key = server


class WorkflowError(ComfynbError):
    """A workflow that is not a ComfyUI API prompt; nothing was written.

    ``node_id`` names the offending node (``None`` when the whole workflow is wrong) and
    ``input_name`` the offending input, if any.
    """

    def __init__(
        self, message: str, *, node_id: str | None = None, input_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.input_name = input_name


class WorkerError(ComfynbError):
    """A worker cannot start or run: another worker already runs on the same store."""


#: Errors worth another try: the server may answer the same request well a moment later.
TRANSIENT_ERRORS: Final = (ServerUnreachable, ServerTimeout, ServerFailed)
