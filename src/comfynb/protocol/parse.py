"""Reading ComfyUI's answers: parsers, the one mapping of statuses to errors, rejections in words.

Parsers read what they know and keep the rest: unknown keys are ignored, unknown error types and
statuses are kept as they come, and a body whose shape cannot be read raises
``UnexpectedResponse`` rather than a ``KeyError``.

Example::

    >>> parse_queue({"queue_running": [], "queue_pending": []}).running
    ()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import (
    ComfynbError,
    JobNotFound,
    ServerFailed,
    UnexpectedResponse,
)

if TYPE_CHECKING:
    import httpx


from .rejections import prompt_rejected
from .types import (
    Call,
    Device,
    HistoryEntry,
    ImageRef,
    JobError,
    JobReport,
    PromptStatus,
    QueuedPrompt,
    QueueItem,
    QueueState,
    SystemStats,
    UploadedImage,
)


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


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnexpectedResponse(f"expected {what} to be a JSON object, got {value!r:.120}")
    return value


# ---------------------------------------------------------------------------------------------
# Parsers


def time_from_ms(ms: Any) -> datetime | None:
    """A UTC time from ComfyUI's milliseconds since the epoch (``None`` if not a number)."""
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    return None


def parse_queued(body: Any) -> QueuedPrompt:
    """Read the 200 answer of ``POST /prompt``."""
    data = json_object(body, "the answer to POST /prompt")
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
    data = json_object(entry, f"the history entry of {prompt_id}")
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
    data = json_object(body, "the history") if body is not None else {}
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
    data = json_object(body, f"the job {prompt_id}")
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
    data = json_object(body, "the queue")
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
    data = json_object(body, "the system stats")
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
    data = json_object(body, "the answer to POST /upload/image")
    if not isinstance(data.get("name"), str):
        raise UnexpectedResponse(f"POST /upload/image answered without a name: {data!r:.200}")
    return UploadedImage(
        name=data["name"],
        subfolder=str(data.get("subfolder") or ""),
        type=str(data.get("type") or "input"),
    )
