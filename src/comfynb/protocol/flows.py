"""ComfyUI's HTTP operations as flows: generators of the ``Call``s they need; no I/O.

Each operation is a *flow*: a generator that yields the ``Call`` it needs next and receives the
``httpx.Response``; ``Client`` and ``AsyncClient`` drive the same flows (STYLE.md principle 3).
Errors that ``_send`` raises are thrown into the flow, so a flow may catch them (only the
``POST /prompt`` flow does, to retry without queueing twice).

Example::

    >>> flow = job_flow("5e62…", jobs_api=True)
    >>> next(flow)
    Call(method='GET', path='/api/jobs/5e62…', ...)

The answers are read by ``comfynb.protocol.parse``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import (
    TRANSIENT_ERRORS,
    JobNotFound,
)

if TYPE_CHECKING:
    pass


from .parse import (
    json_object,
    parse_history,
    parse_queue,
    parse_queued,
    parse_system_stats,
    parse_upload,
    read_json,
    report_from_job,
    report_from_queue,
)
from .types import (
    Call,
    Flow,
    HistoryEntry,
    ImageRef,
    JobReport,
    QueuedPrompt,
    QueueState,
    RetryPolicy,
    SystemStats,
    UploadedImage,
)

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
    return json_object(read_json(response), "the object info")


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
