"""ComfyUI's WebSocket as typed events, with reconnects that never lose the end of a job.

Example::

    >>> with client.events() as events:          # connect first, then queue
    ...     queued = client.queue_prompt(prompt)
    ...     events.follow(queued.prompt_id)
    ...     for event in events:                 # ends after the followed job's terminal event
    ...         if isinstance(event, Progress):
    ...             print(event.value, "/", event.max)
    >>> event
    ExecutionSuccess(prompt_id='6f1c…', timestamp=..., synthesized=False)

    >>> async with client.events([queued.prompt_id]) as events:   # AsyncClient
    ...     async for event in events: ...

Frames become frozen dataclasses: ``Status``, ``ExecutionStart``, ``ExecutionCached``,
``Executing``, ``Progress``, ``ProgressState``, ``Executed``, ``ExecutionSuccess``,
``ExecutionError``, ``ExecutionInterrupted``, ``PreviewImage`` (binary frames, both formats) and
``Unknown`` for anything else (kept as it came, never a crash).

Following jobs: with ``prompt_ids`` (or ``follow()``), the stream yields only events of those jobs
(and events that name no job, such as ``Status``), and ends once each has ended.

Reconnects: when the socket drops, the stream closes its side fully, waits a backoff (at least
``MIN_RECONNECT_DELAY``) and reconnects with the *same* ``clientId``: ComfyUI sends a prompt's
messages only to the socket whose id was posted with it, so a fresh id would hear nothing more of
the jobs already queued. After each (re)connect, and whenever the socket has been silent for
``poll_interval`` seconds, the stream asks the server over HTTP (``client.job``) how each followed
job stands, and yields the terminal event it may have missed, marked ``synthesized=True``. That
covers messages lost while disconnected and the real server's race in which a reconnect with the
same id can leave the new socket deaf (as does a second stream of the same client: the server
keeps one socket per id, so open one stream per client at a time). A job the server no longer
knows (deleted, or lost in a restart) ends with a synthesized ``ExecutionError`` whose
``exception_type`` is ``"JobNotFound"``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .parse import parse_job_error, parse_outputs, time_from_ms
from .types import ImageRef, JobError, JobReport, PromptStatus, RetryPolicy

__all__ = [
    "Event",
    "Executed",
    "Executing",
    "ExecutionCached",
    "ExecutionError",
    "ExecutionInterrupted",
    "ExecutionStart",
    "ExecutionSuccess",
    "PreviewImage",
    "Progress",
    "ProgressState",
    "Status",
    "Unknown",
    "parse_binary",
    "parse_message",
]

#: The shortest pause before reconnecting: the server must forget the old socket first.
MIN_RECONNECT_DELAY = 0.05
RECONNECT = RetryPolicy(attempts=10, base=0.05, max_delay=2.0)
FEATURE_FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


# ---------------------------------------------------------------------------------------------
# Events (pure)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``prompt_id`` is ``None`` when the frame names no job."""

    prompt_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Status(Event):
    """The queue length (``queue_remaining``); ``sid`` only in the first frame after connecting."""

    queue_remaining: int | None = None
    sid: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutionStart(Event):
    """A job started."""

    timestamp: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutionCached(Event):
    """These nodes of the job are reused from the cache."""

    nodes: tuple[str, ...] = ()
    timestamp: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Executing(Event):
    """A node starts running; ``node=None`` after the job ended."""

    node: str | None = None
    display_node: str | None = None


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A progress tick of a node (``value`` of ``max``)."""

    node: str | None = None
    value: float = 0
    max: float = 0


@dataclass(frozen=True, kw_only=True)
class ProgressState(Event):
    """The state of every started node, ``{node_id: {"value", "max", "state", ...}}``."""

    nodes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Executed(Event):
    """An output node finished; ``images`` are its images, ``output`` its whole UI output."""

    node: str | None = None
    display_node: str | None = None
    images: tuple[ImageRef, ...] = ()
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ExecutionSuccess(Event):
    """The job finished well. ``synthesized``: read over HTTP after the socket missed it."""

    timestamp: datetime | None = None
    synthesized: bool = False


@dataclass(frozen=True, kw_only=True)
class ExecutionError(Event):
    """A node raised and the job failed."""

    error: JobError
    executed: tuple[str, ...] = ()
    timestamp: datetime | None = None
    synthesized: bool = False


@dataclass(frozen=True, kw_only=True)
class ExecutionInterrupted(Event):
    """The job was interrupted; ``node_id`` is where it stopped."""

    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    timestamp: datetime | None = None
    synthesized: bool = False


@dataclass(frozen=True, kw_only=True)
class PreviewImage(Event):
    """A binary image frame: ``image`` holds the encoded bytes, ``format`` ``"PNG"``/``"JPEG"``.

    ``metadata`` (node_id, prompt_id, display_node_id, ...) comes with the newer frame format,
    which the stream asks for; the older format has none.
    """

    image: bytes = field(repr=False)
    format: str
    node_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Unknown(Event):
    """A frame this client does not know, kept as it came (``type`` and ``data``)."""

    type: str
    data: Any = None


TERMINAL = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_message(message: Any) -> Event:
    """A text frame (``{"type", "data"}``, already JSON-decoded) as an event."""
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        return Unknown(
            type=str(message.get("type")) if isinstance(message, dict) else "?", data=message
        )
    kind, data = str(message.get("type")), message["data"]
    pid = _text(data.get("prompt_id"))
    stamp = time_from_ms(data.get("timestamp"))
    if kind == "status":
        info = (
            data.get("status", {}).get("exec_info", {})
            if isinstance(data.get("status"), dict)
            else {}
        )
        remaining = info.get("queue_remaining") if isinstance(info, dict) else None
        return Status(
            queue_remaining=remaining if isinstance(remaining, int) else None,
            sid=_text(data.get("sid")),
        )
    if kind == "execution_start":
        return ExecutionStart(prompt_id=pid, timestamp=stamp)
    if kind == "execution_cached":
        return ExecutionCached(prompt_id=pid, nodes=_ids(data.get("nodes")), timestamp=stamp)
    if kind == "executing":
        return Executing(
            prompt_id=pid,
            node=_text(data.get("node")),
            display_node=_text(data.get("display_node")),
        )
    if kind == "progress":
        return Progress(
            prompt_id=pid,
            node=_text(data.get("node")),
            value=data.get("value", 0),
            max=data.get("max", 0),
        )
    if kind == "progress_state":
        nodes = data.get("nodes")
        return ProgressState(prompt_id=pid, nodes=nodes if isinstance(nodes, dict) else {})
    if kind == "executed":
        output = data.get("output") if isinstance(data.get("output"), dict) else {}
        node = _text(data.get("node"))
        images = parse_outputs({node: output}) if node is not None else ()
        return Executed(
            prompt_id=pid,
            node=node,
            display_node=_text(data.get("display_node")),
            images=images,
            output=output,
        )
    if kind == "execution_success":
        return ExecutionSuccess(prompt_id=pid, timestamp=stamp)
    if kind == "execution_error":
        return ExecutionError(
            prompt_id=pid,
            error=parse_job_error(data),
            executed=_ids(data.get("executed")),
            timestamp=stamp,
        )
    if kind == "execution_interrupted":
        return ExecutionInterrupted(
            prompt_id=pid,
            node_id=_text(data.get("node_id")),
            node_type=_text(data.get("node_type")),
            executed=_ids(data.get("executed")),
            timestamp=stamp,
        )
    return Unknown(prompt_id=pid, type=kind, data=data)


_IMAGE_FORMATS = {1: "JPEG", 2: "PNG"}


def parse_binary(frame: bytes) -> Event:
    """A binary frame: type 1 (format + image) or 4 (JSON metadata + image); else ``Unknown``."""
    if len(frame) < 8:
        return Unknown(type="binary", data=frame)
    (event_type,) = struct.unpack(">I", frame[:4])
    if event_type == 1:
        (code,) = struct.unpack(">I", frame[4:8])
        return PreviewImage(image=frame[8:], format=_IMAGE_FORMATS.get(code, f"unknown:{code}"))
    if event_type == 4:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            metadata = json.loads(frame[8 : 8 + length])
        except ValueError:
            return Unknown(type="binary:4", data=frame)
        metadata = metadata if isinstance(metadata, dict) else {}
        mime = str(metadata.get("image_type") or "")
        return PreviewImage(
            prompt_id=_text(metadata.get("prompt_id")),
            node_id=_text(metadata.get("node_id")),
            image=frame[8 + length :],
            format=mime.removeprefix("image/").upper() or "UNKNOWN",
            metadata=metadata,
        )
    return Unknown(type=f"binary:{event_type}", data=frame)


def parse_frame(frame: str | bytes) -> Event:
    """A WebSocket frame as an event (text frames that are not JSON become ``Unknown``)."""
    if isinstance(frame, bytes):
        return parse_binary(frame)
    try:
        return parse_message(json.loads(frame))
    except ValueError:
        return Unknown(type="text", data=frame)


def terminal_from_report(report: JobReport) -> Event | None:
    """The terminal event a finished job's report stands for (``synthesized=True``), else None."""
    pid = report.prompt_id
    if report.status is PromptStatus.COMPLETED:
        return ExecutionSuccess(prompt_id=pid, timestamp=report.ended_at, synthesized=True)
    if report.status is PromptStatus.FAILED:
        error = report.error or JobError("Exception", "the job failed")
        return ExecutionError(
            prompt_id=pid, error=error, timestamp=report.ended_at, synthesized=True
        )
    if report.status is PromptStatus.INTERRUPTED:
        return ExecutionInterrupted(
            prompt_id=pid,
            node_id=report.interrupted_at,
            timestamp=report.ended_at,
            synthesized=True,
        )
    return None


def terminal_for_lost_job(prompt_id: str) -> ExecutionError:
    """The synthesized end of a job the server no longer knows."""
    message = (
        "the server no longer knows this job: it was deleted from the queue, or the server "
        "restarted and forgot it; queue it again"
    )
    return ExecutionError(
        prompt_id=prompt_id, error=JobError("JobNotFound", message), synthesized=True
    )


class EventTracker:
    """Which jobs the stream follows and which have ended (no I/O; both streams share it)."""

    def __init__(self, prompt_ids: Iterable[str] | None) -> None:
        self.followed: set[str] | None = None if prompt_ids is None else set(prompt_ids)
        self.ended: set[str] = set()

    def follow(self, prompt_ids: Iterable[str]) -> None:
        self.followed = (self.followed or set()) | set(prompt_ids)

    @property
    def open_ids(self) -> list[str]:
        return sorted((self.followed or set()) - self.ended)

    @property
    def finished(self) -> bool:
        return bool(self.followed) and not self.open_ids

    def take(self, event: Event) -> bool:
        """Whether to yield ``event``; notes terminal events. Drops a second end of a job."""
        pid = event.prompt_id
        if isinstance(event, Unknown) and event.type == "feature_flags":
            return False  # the answer to our own handshake
        if pid is None:
            return True
        if self.followed is not None and pid not in self.followed:
            return False
        if isinstance(event, TERMINAL):
            if pid in self.ended:
                return False  # already ended (synthesized before the real one came)
            self.ended.add(pid)
        return True


# ---------------------------------------------------------------------------------------------
# The streams (I/O)
