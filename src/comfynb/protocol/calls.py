"""ComfyUI's HTTP protocol as plain values: requests (``Call``), flows and response parsing; no I/O.

Each operation is a *flow*: a generator that yields the ``Call`` it needs next and receives the
``httpx.Response``; ``Client`` and ``AsyncClient`` drive the same flows (STYLE.md principle 3).
Errors that ``_send`` raises are thrown into the flow, so a flow may catch them (only the
``POST /prompt`` flow does, to retry without queueing twice).

Example::

    >>> flow = job_flow("5e62…", jobs_api=True)
    >>> next(flow)
    Call(method='GET', path='/api/jobs/5e62…', ...)

Parsers read what they know and keep the rest: unknown keys are ignored, unknown error types and
statuses are kept as they come, and a body whose shape cannot be read raises
``UnexpectedResponse`` rather than a ``KeyError``.
"""

from __future__ import annotations

import enum
import json
import random
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from ..errors import (
    TRANSIENT_ERRORS,
    ComfynbError,
    JobNotFound,
    PromptRejected,
    ServerFailed,
    UnexpectedResponse,
)

if TYPE_CHECKING:
    import httpx

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


def error_for(call: Call, status: int, body: str) -> ComfynbError:
    """The typed error for an answer with an unexpected ``status`` (the one mapping of statuses)."""
    if status >= 500:
        return ServerFailed(
            f"{call.method} {call.path} failed on the server (HTTP {status}): {body.strip()[:300]}",
            status=status,
            body=body,
        )
    if status == 400 and call.submit:
        return prompt_rejected(_json_or_none(body))
    if status == 404 and call.job_id is not None:
        return JobNotFound(call.job_id)
    if status in (401, 403):
        return UnexpectedResponse(
            f"{call.method} {call.path} was refused (HTTP {status}); check the token or "
            "credentials given to the client, and that nothing adds a foreign Origin header"
        )
    return UnexpectedResponse(
        f"{call.method} {call.path} answered HTTP {status}: {body.strip()[:300]!r}"
    )


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_json(response: httpx.Response) -> Any:
    """The JSON body of ``response``; an empty body is ``None`` (ComfyUI's empty 200s)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.content[:120]!r}, which is not JSON"
        ) from exc


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnexpectedResponse(f"expected {what} to be a JSON object, got {value!r:.120}")
    return value


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


# ---------------------------------------------------------------------------------------------
# Parsers


def time_from_ms(ms: Any) -> datetime | None:
    """A UTC time from ComfyUI's milliseconds since the epoch (``None`` if not a number)."""
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    return None


def parse_queued(body: Any) -> QueuedPrompt:
    """Read the 200 answer of ``POST /prompt``."""
    data = _object(body, "the answer to POST /prompt")
    if "prompt_id" not in data:
        raise UnexpectedResponse(f"POST /prompt answered without a prompt_id: {data!r:.200}")
    number = data.get("number")
    return QueuedPrompt(
        prompt_id=str(data["prompt_id"]),
        number=float(number) if isinstance(number, int | float) else float("nan"),
        node_errors=dict(data.get("node_errors") or {}),
    )


def parse_outputs(outputs: Any) -> tuple[ImageRef, ...]:
    """Every image in a history/jobs ``outputs`` object (``{node_id: {"images": [...]}}``).

    Other UI outputs (text, audio...) are skipped, entries without a filename too.
    """
    refs: list[ImageRef] = []
    if not isinstance(outputs, dict):
        return ()
    for node_id, ui in outputs.items():
        images = ui.get("images") if isinstance(ui, dict) else None
        for image in images if isinstance(images, list) else ():
            if isinstance(image, dict) and isinstance(image.get("filename"), str):
                refs.append(ImageRef.from_dict(image, node_id=str(node_id)))
    return tuple(refs)


def parse_job_error(data: Mapping[str, Any]) -> JobError:
    """Read an ``execution_error`` message (WS, history or ``/api/jobs``)."""
    traceback = data.get("traceback")
    return JobError(
        exception_type=str(data.get("exception_type") or "Exception"),
        message=str(data.get("exception_message") or ""),
        node_id=None if data.get("node_id") is None else str(data["node_id"]),
        node_type=None if data.get("node_type") is None else str(data["node_type"]),
        traceback=tuple(str(line) for line in traceback) if isinstance(traceback, list) else (),
    )


def _messages(status: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    raw = status.get("messages") if isinstance(status, dict) else None
    messages: list[tuple[str, dict[str, Any]]] = []
    for message in raw if isinstance(raw, list) else ():
        if isinstance(message, list) and len(message) == 2:
            payload = message[1] if isinstance(message[1], dict) else {}
            messages.append((str(message[0]), payload))
    return tuple(messages)


def _outcome(
    status_str: Any, messages: Sequence[tuple[str, dict[str, Any]]]
) -> tuple[PromptStatus, JobError | None, str | None]:
    """Status, error and interrupted node from a history ``status`` (quirk 1 of the fact sheet)."""
    by_type = dict(messages)
    last = messages[-1][0] if messages else None
    if last == "execution_interrupted" or (
        "execution_interrupted" in by_type and "execution_error" not in by_type
    ):
        node = by_type["execution_interrupted"].get("node_id")
        return PromptStatus.INTERRUPTED, None, None if node is None else str(node)
    if "execution_error" in by_type:
        return PromptStatus.FAILED, parse_job_error(by_type["execution_error"]), None
    if status_str == "success":
        return PromptStatus.COMPLETED, None, None
    if status_str == "error":
        return PromptStatus.FAILED, JobError("Exception", "the server reports an error"), None
    return PromptStatus.UNKNOWN, None, None


def parse_history_entry(prompt_id: str, entry: Any) -> HistoryEntry:
    """Read one value of the ``/history`` object."""
    data = _object(entry, f"the history entry of {prompt_id}")
    status = _dict(data.get("status"))
    messages = _messages(status)
    job_status, error, interrupted_at = _outcome(status.get("status_str"), messages)
    item = data.get("prompt")
    item = item if isinstance(item, list) else []
    number = item[0] if item and isinstance(item[0], int | float) else None
    extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
    stamps = {name: payload.get("timestamp") for name, payload in messages}
    report = JobReport(
        prompt_id=prompt_id,
        status=job_status,
        outputs=parse_outputs(data.get("outputs")),
        error=error,
        interrupted_at=interrupted_at,
        number=None if number is None else float(number),
        created_at=time_from_ms(extra.get("create_time")),
        started_at=time_from_ms(stamps.get("execution_start")),
        ended_at=time_from_ms(messages[-1][1].get("timestamp")) if messages else None,
        server_status=None if status.get("status_str") is None else str(status["status_str"]),
    )
    return HistoryEntry(
        prompt_id=prompt_id,
        report=report,
        prompt=item[2] if len(item) > 2 and isinstance(item[2], dict) else {},
        extra_data=extra,
        messages=messages,
    )


def parse_history(body: Any) -> dict[str, HistoryEntry]:
    """Read ``GET /history`` (or ``/history/{id}``): entries by prompt_id, oldest first."""
    data = _object(body, "the history") if body is not None else {}
    return {str(pid): parse_history_entry(str(pid), entry) for pid, entry in data.items()}


_JOBS_API_STATUS = {
    "pending": PromptStatus.PENDING,
    "in_progress": PromptStatus.RUNNING,
    "completed": PromptStatus.COMPLETED,
}


def report_from_job(prompt_id: str, body: Any) -> JobReport:
    """A ``JobReport`` from ``GET /api/jobs/{id}``.

    ``failed`` without ``execution_error`` is an interrupt (fact sheet); a status this client does
    not know becomes ``PromptStatus.UNKNOWN`` with the server's word in ``server_status``.
    """
    data = _object(body, f"the job {prompt_id}")
    server_status = str(data.get("status"))
    status = _JOBS_API_STATUS.get(server_status, PromptStatus.UNKNOWN)
    error: JobError | None = None
    interrupted_at: str | None = None
    if server_status == "failed":
        messages = _messages(data.get("execution_status"))
        if isinstance(data.get("execution_error"), dict):
            status, error = PromptStatus.FAILED, parse_job_error(data["execution_error"])
        else:
            status, error, interrupted_at = _outcome("error", messages)
            if status is PromptStatus.FAILED and not messages:
                status, error = PromptStatus.INTERRUPTED, None
    number = data.get("priority")
    return JobReport(
        prompt_id=str(data.get("id") or prompt_id),
        status=status,
        outputs=parse_outputs(data.get("outputs")),
        error=error,
        interrupted_at=interrupted_at,
        number=float(number) if isinstance(number, int | float) else None,
        created_at=time_from_ms(data.get("create_time")),
        started_at=time_from_ms(data.get("execution_start_time")),
        ended_at=time_from_ms(data.get("execution_end_time")),
        server_status=server_status,
    )


def _queue_item(raw: Any) -> QueueItem:
    if not isinstance(raw, list) or len(raw) < 2:
        raise UnexpectedResponse(f"a queue item that is not [number, prompt_id, ...]: {raw!r:.200}")
    number = raw[0] if isinstance(raw[0], int | float) else float("nan")
    outputs = raw[4] if len(raw) > 4 and isinstance(raw[4], list) else []
    return QueueItem(
        number=float(number),
        prompt_id=str(raw[1]),
        prompt=raw[2] if len(raw) > 2 and isinstance(raw[2], dict) else {},
        extra_data=raw[3] if len(raw) > 3 and isinstance(raw[3], dict) else {},
        outputs_to_execute=tuple(str(o) for o in outputs),
    )


def parse_queue(body: Any) -> QueueState:
    """Read ``GET /queue``; pending items sorted into run order (the server sends heap order)."""
    data = _object(body, "the queue")
    running = [_queue_item(raw) for raw in data.get("queue_running") or []]
    pending = [_queue_item(raw) for raw in data.get("queue_pending") or []]
    pending.sort(key=lambda item: item.number)
    return QueueState(running=tuple(running), pending=tuple(pending))


def report_from_queue(prompt_id: str, state: QueueState) -> JobReport | None:
    """``RUNNING`` or ``PENDING`` if ``prompt_id`` is in the queue, else ``None``."""
    for items, status in (
        (state.running, PromptStatus.RUNNING),
        (state.pending, PromptStatus.PENDING),
    ):
        for item in items:
            if item.prompt_id == prompt_id:
                return JobReport(
                    prompt_id=prompt_id,
                    status=status,
                    number=item.number,
                    created_at=time_from_ms(item.extra_data.get("create_time")),
                )
    return None


def parse_system_stats(body: Any) -> SystemStats:
    """Read ``GET /system_stats``."""
    data = _object(body, "the system stats")
    system = _dict(data.get("system"))

    def text(key: str) -> str | None:
        return None if system.get(key) is None else str(system[key])

    def number(value: Any) -> int | None:
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    devices = tuple(
        Device(
            name=str(d.get("name")),
            type=str(d.get("type")),
            vram_total=number(d.get("vram_total")),
            vram_free=number(d.get("vram_free")),
        )
        for d in data.get("devices") or []
        if isinstance(d, dict)
    )
    return SystemStats(
        comfyui_version=text("comfyui_version"),
        python_version=text("python_version"),
        pytorch_version=text("pytorch_version"),
        os=text("os"),
        ram_total=number(system.get("ram_total")),
        ram_free=number(system.get("ram_free")),
        devices=devices,
        raw=data,
    )


def parse_upload(body: Any) -> UploadedImage:
    """Read the answer of ``POST /upload/image``."""
    data = _object(body, "the answer to POST /upload/image")
    if not isinstance(data.get("name"), str):
        raise UnexpectedResponse(f"POST /upload/image answered without a name: {data!r:.200}")
    return UploadedImage(
        name=data["name"],
        subfolder=str(data.get("subfolder") or ""),
        type=str(data.get("type") or "input"),
    )


# ---------------------------------------------------------------------------------------------
# Rejections in words


def _options(config: Any) -> list[Any]:
    """Combo options from an input config in either spelling: ``[[...], {}]`` or ``["COMBO", {...}]``."""
    if isinstance(config, list) and config:
        if isinstance(config[0], list):
            return list(config[0])
        if len(config) > 1 and isinstance(config[1], dict):
            return list(config[1].get("options") or [])
    return []


def _limit(config: Any, key: str) -> Any:
    if isinstance(config, list) and len(config) > 1 and isinstance(config[1], dict):
        return config[1].get(key)
    return None


def _type_name(config: Any) -> str:
    return (
        str(config[0])
        if isinstance(config, list) and config and isinstance(config[0], str)
        else "?"
    )


def describe_node_error(node_id: str, class_type: str, error: Mapping[str, Any]) -> str:
    """One node error as a sentence naming node, class, input, what was wrong and the fix.

    Example::

        >>> describe_node_error("3", "KSampler", {"type": "value_smaller_than_min",
        ...     "extra_info": {"input_name": "steps", "received_value": 0,
        ...                    "input_config": ["INT", {"min": 1}]}})
        'node "3" (KSampler) input "steps" = 0 is below the minimum 1; set it to at least 1 and submit again'
    """
    kind = str(error.get("type"))
    info = _dict(error.get("extra_info"))
    name = info.get("input_name") or error.get("details") or "?"
    value = info.get("received_value")
    config = info.get("input_config")
    where = f'node "{node_id}" ({class_type}) input "{name}"'
    if kind == "required_input_missing":
        return f"{where} is required but missing; give it a value or a link and submit again"
    if kind == "value_smaller_than_min":
        low = _limit(config, "min")
        return f"{where} = {value!r} is below the minimum {low}; set it to at least {low} and submit again"
    if kind == "value_bigger_than_max":
        high = _limit(config, "max")
        return f"{where} = {value!r} is above the maximum {high}; set it to at most {high} and submit again"
    if kind == "invalid_input_type":
        wanted = _type_name(config)
        return (
            f"{where} = {value!r} is not a valid {wanted}; give a {wanted} value and submit again"
        )
    if kind == "value_not_in_list":
        options = _options(config)
        if not options:  # long lists come without input_config: "(list of length 44)"
            return (
                f"{where} = {value!r} is not one of the allowed values; pick one of those that "
                f'client.object_info("{class_type}") lists for it'
            )
        shown = ", ".join(repr(o) for o in options[:12]) + (", ..." if len(options) > 12 else "")
        return f"{where} = {value!r} is not one of the allowed values ({shown}); pick one of them"
    if kind == "return_type_mismatch":
        link = info.get("linked_node")
        source = (
            f'node "{link[0]}" output {link[1]}'
            if isinstance(link, list) and len(link) > 1
            else "its link"
        )
        return (
            f"{where} takes {_type_name(config)} but is linked to {source} of type "
            f"{info.get('received_type')}; link an output of the right type"
        )
    if kind == "exception_during_validation":
        return (
            f'node "{node_id}" ({class_type}) could not be validated: '
            f"{info.get('exception_type', 'error')} {error.get('details', '')}; check that its links "
            "point to existing nodes and outputs"
        )
    if kind == "custom_validation_failed":
        return (
            f'node "{node_id}" ({class_type}) was refused: {error.get("details", "")}; for a file '
            "input, upload it first (client.upload_image) or pick a file the server has"
        )
    text = "; ".join(str(p) for p in (error.get("message"), error.get("details")) if p)
    return f'node "{node_id}" ({class_type}) was refused ({kind}): {text}'


def describe_node_errors(node_errors: Mapping[str, Any]) -> list[str]:
    """Every error of a ``node_errors`` object, one sentence each."""
    lines: list[str] = []
    for node_id, entry in node_errors.items():
        entry = _dict(entry)
        class_type = str(entry.get("class_type") or "?")
        errors = entry.get("errors")
        for error in errors if isinstance(errors, list) else ():
            if isinstance(error, dict):
                lines.append(describe_node_error(str(node_id), class_type, error))
    return lines


def _describe_prompt_error(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type"))
    message = str(error.get("message") or "")
    details = str(error.get("details") or "")
    info = _dict(error.get("extra_info"))
    if kind == "missing_node_type":
        return (
            f'node "{info.get("node_id", "?")}" uses class_type {info.get("class_type")!r}, which '
            "the server does not have; install that custom node or fix the class_type"
        )
    if kind == "invalid_prompt":
        return f"{message} ({details}); fix the class_type of that node or install its custom node"
    if kind == "prompt_no_outputs":
        return (
            "the prompt has no output node; add one (SaveImage, PreviewImage...) and submit again"
        )
    if kind == "no_prompt":
        return "the request carried no prompt; pass the API-format prompt dict"
    if kind == "invalid_prompt_id":
        return f"{message}; leave prompt_id=None to get a fresh UUID4, or pass one"
    return f"{message} {details}".strip() or f"refused with error type {kind!r}"


def prompt_rejected(body: Any) -> PromptRejected:
    """A ``PromptRejected`` from a 400 answer of ``POST /prompt``, whatever its error type."""
    data = body if isinstance(body, dict) else {}
    error = _dict(data.get("error"))
    if not error and isinstance(data.get("error"), str):
        error = {"type": "unknown", "message": data["error"]}
    node_errors = _dict(data.get("node_errors"))
    kind = str(error.get("type") or "unknown")
    lines = describe_node_errors(node_errors) or [_describe_prompt_error(error)]
    message = "ComfyUI refused the prompt:" + (
        f" {lines[0]}" if len(lines) == 1 else "".join(f"\n  {line}" for line in lines)
    )
    return PromptRejected(message, error_type=kind, error=error, node_errors=node_errors)


# ---------------------------------------------------------------------------------------------
# Flows


def new_prompt_id() -> str:
    """A fresh canonical lowercase UUID4 (newer servers accept nothing else)."""
    return str(uuid.uuid4())


def _arrived_flow(
    prompt_id: str, *, jobs_api: bool | None, delay: float
) -> Flow[QueuedPrompt | None]:
    """Ask whether ``prompt_id`` reached the server: its ``QueuedPrompt`` if so, else ``None``."""
    quoted = quote(prompt_id, safe="")
    if jobs_api is None:
        jobs_api = yield from jobs_api_probe_flow(delay=delay)
        delay = 0.0
    if jobs_api:
        response = yield Call(
            "GET", f"/api/jobs/{quoted}", expected=frozenset({200, 404}), delay=delay
        )
        if response.status_code == 404:
            return None
        report = report_from_job(prompt_id, read_json(response))
        return QueuedPrompt(prompt_id, report.number if report.number is not None else float("nan"))
    response = yield Call("GET", "/queue", delay=delay)
    found = report_from_queue(prompt_id, parse_queue(read_json(response)))
    if found is None:
        response = yield Call("GET", f"/history/{quoted}")
        entry = parse_history(read_json(response)).get(prompt_id)
        found = entry.report if entry else None
    if found is None:
        return None
    return QueuedPrompt(prompt_id, found.number if found.number is not None else float("nan"))


def queue_prompt_flow(
    body: dict[str, Any], *, jobs_api: bool | None, retry: RetryPolicy
) -> Flow[QueuedPrompt]:
    """``POST /prompt``, retried on transient errors without ever queueing twice.

    ``body["prompt_id"]`` must be set. Before each retry the flow asks the server whether that
    prompt_id already arrived (the answer may have been lost after the server queued it); if so
    it returns that job instead of posting again.
    """
    prompt_id = str(body["prompt_id"])
    delays = retry.delays()
    delay = 0.0
    while True:
        try:
            response = yield Call(
                "POST", "/prompt", json=body, idempotent=False, submit=True, delay=delay
            )
            return parse_queued(read_json(response))
        except TRANSIENT_ERRORS:
            next_delay = next(delays, None)
            if next_delay is None:
                raise
        arrived = yield from _arrived_flow(prompt_id, jobs_api=jobs_api, delay=next_delay)
        if arrived is not None:
            return arrived


def jobs_api_probe_flow(delay: float = 0.0) -> Flow[bool]:
    """Whether the server has ``/api/jobs`` (older servers answer 404 or 405)."""
    response = yield Call(
        "GET",
        "/api/jobs",
        params={"limit": 1},
        expected=frozenset({200, 400, 404, 405}),
        delay=delay,
    )
    return response.status_code in (200, 400)


def job_flow(prompt_id: str, *, jobs_api: bool) -> Flow[JobReport]:
    """The state of one job: ``/api/jobs/{id}``, or ``/history/{id}`` + ``/queue`` on older servers.

    Raises ``JobNotFound`` when the server does not know ``prompt_id``.
    """
    quoted = quote(prompt_id, safe="")
    if jobs_api:
        response = yield Call("GET", f"/api/jobs/{quoted}", job_id=prompt_id)
        return report_from_job(prompt_id, read_json(response))
    response = yield Call("GET", f"/history/{quoted}")
    entry = parse_history(read_json(response)).get(prompt_id)
    if entry is not None:
        return entry.report
    # /history/{id} is {} while pending or running (quirk 4): the queue tells them apart
    response = yield Call("GET", "/queue")
    report = report_from_queue(prompt_id, parse_queue(read_json(response)))
    if report is not None:
        return report
    # it may have finished between the two calls
    response = yield Call("GET", f"/history/{quoted}")
    entry = parse_history(read_json(response)).get(prompt_id)
    if entry is not None:
        return entry.report
    raise JobNotFound(prompt_id)


def history_flow(
    max_items: int | None = None, offset: int | None = None
) -> Flow[dict[str, HistoryEntry]]:
    """``GET /history``: finished prompts by id, oldest first."""
    params: dict[str, str | int] = {}
    if max_items is not None:
        params["max_items"] = max_items
    if offset is not None:
        params["offset"] = offset
    response = yield Call("GET", "/history", params=params or None)
    return parse_history(read_json(response))


def queue_flow() -> Flow[QueueState]:
    """``GET /queue``."""
    response = yield Call("GET", "/queue")
    return parse_queue(read_json(response))


def post_flow(path: str, body: Any, *, idempotent: bool = True) -> Flow[None]:
    """A POST whose answer is an empty 200 (``/queue``, ``/interrupt``, ``/free``, ``/history``)."""
    yield Call("POST", path, json=body, idempotent=idempotent)
    return None


def object_info_flow(class_type: str | None = None) -> Flow[dict[str, Any]]:
    """``GET /object_info`` or ``/object_info/{class}`` (``{}`` for an unknown class)."""
    path = "/object_info" if class_type is None else f"/object_info/{quote(class_type, safe='')}"
    response = yield Call("GET", path)
    return _object(read_json(response), "the object info")


def system_stats_flow() -> Flow[SystemStats]:
    """``GET /system_stats``."""
    response = yield Call("GET", "/system_stats")
    return parse_system_stats(read_json(response))


def upload_image_flow(
    filename: str, content: bytes, *, subfolder: str, type: str, overwrite: bool
) -> Flow[UploadedImage]:
    """``POST /upload/image`` (multipart); same name and same bytes give back the same name."""
    data = {"type": type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
    response = yield Call(
        "POST",
        "/upload/image",
        files={"image": (filename, content, "application/octet-stream")},
        data=data,
    )
    return parse_upload(read_json(response))


def view_call(ref: ImageRef) -> Call:
    """The ``GET /view`` request for ``ref``."""
    params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
    return Call("GET", "/view", params=params)
