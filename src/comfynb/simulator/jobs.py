"""The ``/api/jobs`` view: queue items and history entries as one list of job objects (pure).

Example::

    running, pending, history = engine.snapshot()
    list_jobs({"status": "completed", "limit": "10"}, running, pending, history)
    find_job(prompt_id, running, pending, history)   # None: unknown (404)
"""

from __future__ import annotations

from typing import Any

__all__ = ["JobQueryError", "find_job", "list_jobs"]

Json = dict[str, Any]


class JobQueryError(ValueError):
    """A bad ``/api/jobs`` query parameter; the message is the 400 body's ``error``."""


_JOB_STATUSES = ("pending", "in_progress", "completed", "failed")
_PREVIEWABLE = frozenset({"images", "video", "audio"})


def _workflow_id(extra_data: Json) -> Any:
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def _pruned(job: Json) -> Json:
    return {key: value for key, value in job.items() if value is not None}


def _queue_job(item: list[Any], status: str, newer: bool) -> Json:
    number, prompt_id, _, extra_data, _ = item
    job = {
        "id": prompt_id,
        "status": status,
        "priority": number,
        "create_time": extra_data.get("create_time"),
        "outputs_count": 0,
        "workflow_id": _workflow_id(extra_data),
    }
    if newer:
        job["previewable_outputs_count"] = 0
    return _pruned(job)


def _outputs_summary(outputs: Json) -> tuple[int, int, Json | None]:
    """(count, previewable count, preview): the first output-type image, else the first preview."""
    count = previewable = 0
    preview: Json | None = None
    fallback: Json | None = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media, items in node_outputs.items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if media not in _PREVIEWABLE:
                    continue
                previewable += 1
                enriched = {**item, "nodeId": node_id, "mediaType": media}
                if preview is None and item.get("type") == "output":
                    preview = enriched
                elif fallback is None:
                    fallback = enriched
    return count, previewable, preview or fallback


def _history_job(prompt_id: str, entry: Json, newer: bool, details: bool) -> Json:
    number, _, prompt, extra_data, _ = entry["prompt"]
    status = entry.get("status") or {}
    start = end = error = None
    for kind, data in status.get("messages", []):
        if kind == "execution_start":
            start = data.get("timestamp")
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            if kind == "execution_error":
                error = data
    outputs = entry.get("outputs", {})
    count, previewable, preview = _outputs_summary(outputs)
    job = {
        "id": prompt_id,
        "status": "failed" if status.get("status_str") == "error" else "completed",
        "priority": number,
        "create_time": extra_data.get("create_time"),
        "execution_start_time": start,
        "execution_end_time": end,
        "execution_error": error,
        "outputs_count": count,
        "preview_output": preview,
        "workflow_id": _workflow_id(extra_data),
    }
    if newer:
        job["previewable_outputs_count"] = previewable
    job = _pruned(job)
    if details:
        job["outputs"] = outputs
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def find_job(
    prompt_id: str,
    running: list[list[Any]],
    pending: list[list[Any]],
    history: dict[str, Json],
    *,
    newer: bool = True,
) -> Json | None:
    """``GET /api/jobs/{id}``: the finished job with its details, else the queued one, else None."""
    if prompt_id in history:
        return _history_job(prompt_id, history[prompt_id], newer, details=True)
    for item in running:
        if item[1] == prompt_id:
            return _queue_job(item, "in_progress", newer)
    for item in pending:
        if item[1] == prompt_id:
            return _queue_job(item, "pending", newer)
    return None


def _positive_int(query: Any, name: str, default: int | None, *, minimum: int) -> int | None:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise JobQueryError(
            f"{name} must be a positive integer" if minimum > 0 else f"{name} must be non-negative"
        )
    return value


def _status_filter(query: Any) -> list[str]:
    if "status" not in query:
        return list(_JOB_STATUSES)
    wanted = [part.strip() for part in query["status"].split(",") if part.strip()]
    bad = [part for part in wanted if part not in _JOB_STATUSES]
    if bad:
        raise JobQueryError(
            f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(_JOB_STATUSES)}"
        )
    return wanted


def list_jobs(
    query: Any,
    running: list[list[Any]],
    pending: list[list[Any]],
    history: dict[str, Json],
    *,
    newer: bool = True,
) -> Json:
    """``GET /api/jobs``: filter, sort (newest first by default) and page every job.

    Raises:
        JobQueryError: a bad ``status``, ``sort_by``, ``sort_order``, ``limit`` or ``offset``.
    """
    statuses = _status_filter(query)
    sort_by = query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        raise JobQueryError("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        raise JobQueryError("sort_order must be 'asc' or 'desc'")
    limit = _positive_int(query, "limit", None, minimum=1)
    offset = _positive_int(query, "offset", 0, minimum=0) or 0
    jobs: list[Json] = []
    if "in_progress" in statuses:
        jobs += [_queue_job(item, "in_progress", newer) for item in running]
    if "pending" in statuses:
        jobs += [_queue_job(item, "pending", newer) for item in pending]
    for prompt_id, entry in history.items():
        failed = (entry.get("status") or {}).get("status_str") == "error"
        if ("failed" if failed else "completed") in statuses:
            jobs.append(_history_job(prompt_id, entry, newer, details=False))
    workflow_id = query.get("workflow_id")
    if workflow_id:
        jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
    jobs.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
    total = len(jobs)
    page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
    return {
        "jobs": page,
        "pagination": {
            "offset": offset,
            "limit": limit,
            "total": total,
            "has_more": offset + len(page) < total,
        },
    }


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":

        def duration(job: Json) -> float:
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return float(end - start) if start and end else 0.0

        return duration
    return lambda job: job.get("create_time", 0)
