"""ComfyUI's HTTP protocol as plain values: a request (``Call``), retries, and what a user reads.

Example::

    >>> Call("GET", "/queue")
    Call(method='GET', path='/queue', ...)
"""

from __future__ import annotations

import enum
import random
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    UnexpectedResponse,
)

if TYPE_CHECKING:
    import httpx


from .rejections import describe_node_errors

T = TypeVar("T")

#: A multi-request operation: yields ``Call``s, receives responses, returns its result.
Flow = Generator["Call", "httpx.Response", T]


# ---------------------------------------------------------------------------------------------
# Requests and retries


@dataclass(frozen=True)
class Call:
    """One HTTP request a flow needs, and how to read the answer.

    The body is ``json``, raw ``content``, or multipart ``files`` with form ``data``.
    ``expected`` are the statuses the flow wants to see; any other status becomes a typed error in
    the client's ``_send`` (see ``error_for``). ``idempotent`` calls are retried on transient
    errors; ``job_id`` turns a 404 into ``JobNotFound``; ``submit`` turns a 400 into
    ``PromptRejected``. ``delay`` is a pause (seconds) before sending, used by flows that retry.
    """

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    data: Mapping[str, str] | None = None
    expected: frozenset[int] = frozenset({200})
    idempotent: bool = True
    job_id: str | None = None
    submit: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: exponential backoff with full jitter.

    The n-th delay (n = 0, 1, ...) is uniform in ``[0, min(max_delay, base * 2**n)]``; there are
    ``attempts - 1`` delays, so ``attempts`` counts the first try. A ``seed`` makes the delays
    repeatable (tests).

    Example::

        >>> list(RetryPolicy(attempts=3, base=0.1, seed=1).delays())
        [0.013436424411240122, 0.16948151011315185]
    """

    attempts: int = 4
    base: float = 0.1
    max_delay: float = 2.0
    seed: int | None = None

    def delays(self) -> Iterator[float]:
        """Yield the pause before each retry, ``attempts - 1`` of them."""
        rng = random.Random(self.seed)
        for n in range(max(self.attempts - 1, 0)):
            yield rng.uniform(0.0, min(self.max_delay, self.base * 2**n))


# ---------------------------------------------------------------------------------------------
# What a user reads


class PromptStatus(enum.StrEnum):
    """Where a prompt is, as the server tells it (``JobReport.status``).

    Not to be confused with ``comfynb.JobStatus``, the life of a job in the store: a server
    knows no ``submitted`` or ``cancelled``, and tells ``interrupted`` apart from ``failed``.

    Example::

        >>> client.job(queued.prompt_id).status.is_terminal
        True
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    #: the server reported a state this client does not know (a newer server)
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True once the job will not change any more."""
        return self in (PromptStatus.COMPLETED, PromptStatus.FAILED, PromptStatus.INTERRUPTED)


@dataclass(frozen=True)
class ImageRef:
    """An image the server holds: what ``/view`` needs to send it.

    Example::

        >>> ref = ImageRef("trivial_00001_.png", subfolder="", type="output", node_id="2")
        >>> client.download(ref, "out/")
        PosixPath('out/trivial_00001_.png')
    """

    filename: str
    subfolder: str = ""
    type: str = "output"
    node_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], node_id: str | None = None) -> ImageRef:
        """Read ``{"filename", "subfolder", "type"}`` as ComfyUI sends it."""
        if not isinstance(data.get("filename"), str):
            raise UnexpectedResponse(f"an image without a filename: {data!r:.200}")
        return cls(
            filename=data["filename"],
            subfolder=str(data.get("subfolder") or ""),
            type=str(data.get("type") or "output"),
            node_id=node_id,
        )


@dataclass(frozen=True)
class QueuedPrompt:
    """The answer to ``queue_prompt``: the job's id and queue number.

    ``node_errors`` is non-empty when the server accepted a partially valid prompt and will run
    only its valid outputs; ``problems`` says what was wrong in words.
    """

    prompt_id: str
    number: float
    node_errors: dict[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """One sentence per node error (empty when the whole prompt is valid)."""
        return describe_node_errors(self.node_errors)


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the node that raised, and what."""

    exception_type: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    traceback: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f'node "{self.node_id}" ({self.node_type}) ' if self.node_id else ""
        return f"{where}raised {self.exception_type}: {self.message.strip()}"


@dataclass(frozen=True)
class JobReport:
    """What the server knows about one job.

    Example::

        >>> report = client.job(queued.prompt_id)
        >>> report.status, [ref.filename for ref in report.outputs]
        (<PromptStatus.COMPLETED: 'completed'>, ['trivial_00001_.png'])

    ``error`` is set for failed jobs, ``interrupted_at`` (the node id) for interrupted ones.
    Times are UTC; ``None`` when the server did not say.
    """

    prompt_id: str
    status: PromptStatus
    outputs: tuple[ImageRef, ...] = ()
    error: JobError | None = None
    interrupted_at: str | None = None
    number: float | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    server_status: str | None = None


@dataclass(frozen=True)
class QueueItem:
    """One queued prompt: ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: tuple[str, ...]


@dataclass(frozen=True)
class QueueState:
    """The server's queue: the running prompt(s) and the pending ones, in run order.

    Example::

        >>> state = client.queue()
        >>> queued.prompt_id in state, len(state.pending)
        (True, 3)
    """

    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return any(item.prompt_id == prompt_id for item in (*self.running, *self.pending))

    def is_running(self, prompt_id: str) -> bool:
        """True if ``prompt_id`` runs now."""
        return any(item.prompt_id == prompt_id for item in self.running)


@dataclass(frozen=True)
class HistoryEntry:
    """A finished prompt as ``/history`` keeps it.

    ``report`` holds the status, outputs and error; ``prompt`` and ``extra_data`` what was sent.
    """

    prompt_id: str
    report: JobReport
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    messages: tuple[tuple[str, dict[str, Any]], ...]


@dataclass(frozen=True)
class Device:
    """One compute device in ``/system_stats``."""

    name: str
    type: str
    vram_total: int | None = None
    vram_free: int | None = None


@dataclass(frozen=True)
class SystemStats:
    """Versions and resources of the server.

    Example::

        >>> client.system_stats().comfyui_version
        '0.33.0'
    """

    comfyui_version: str | None
    python_version: str | None
    pytorch_version: str | None
    os: str | None
    ram_total: int | None
    ram_free: int | None
    devices: tuple[Device, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class UploadedImage:
    """Where ``upload_image`` put the file; ``as_input`` is the value for ``LoadImage.image``.

    Example::

        >>> up = client.upload_image("cat.png", subfolder="refs")
        >>> up.as_input
        'refs/cat.png'
    """

    name: str
    subfolder: str
    type: str

    @property
    def as_input(self) -> str:
        """``name`` or ``subfolder/name``, as ``LoadImage`` expects it."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name
