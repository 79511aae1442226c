"""Claim a job, post it once with its recorded prompt_id, follow it to its end.

Posting is one rule for every caller (``submit_job``, ``recover``, the worker): the prompt_id
is recorded before the POST; a job that may have been posted already is looked up on the
server first (:func:`post_prompt`); and what to record of the answer is decided by a pure
function (:func:`post_change`: submitted, failed, or a retry within the job's budget), which
each caller records its way (a job function at once, the worker through its recorder).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import crashpoints as _crashpoints
from ..core.jsonio import unstorable
from ..core.models import Job
from ..core.status import JobStatus, Move, Retry, retry_or_fail
from ..errors import (
    TRANSIENT_ERRORS,
    InvalidTransition,
    JobNotFound,
    PromptRejected,
    WorkflowError,
)
from ..protocol.flows import new_prompt_id
from ..protocol.types import PromptStatus, RetryPolicy
from ..store.base import require_owner
from ..store.lifecycle import check_move, record_changes
from ..workflows.check import check_workflow

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

from .base import check_server, error_detail, find_posted, load_job, withdraw
from .follow import apply_report, forgotten
from .inputs import refused_inputs, upload_inputs, uploaded_before
from .results import process_job_result


def select_next_job(store: Store, *, server: str | None = None) -> Job | None:
    """Claim the next pending job, or return None when there is none.

    Highest priority first, then fair between runs (the run served least recently), then
    oldest first. The claim is atomic: two workers never take the same job. The claimed job
    stays ``pending`` with a fresh ``prompt_id``, which ``submit_job`` posts it with.

    Example::

        >>> job = select_next_job(store, server="http://127.0.0.1:8188")
        >>> job.status.value, len(job.prompt_id)
        ('pending', 36)

    Args:
        store: the open store.
        server: claim only jobs for this server (or for any server), and pin the job to it.
    """
    return store.claim_next_job(server=server)


def select_next_jobs(store: Store, n: int, *, server: str | None = None) -> list[Job]:
    """Claim up to ``n`` pending jobs at once (see :func:`select_next_job`); maybe fewer.

    Example::

        >>> [j.id for j in select_next_jobs(store, 3, server="http://127.0.0.1:8188")]
        [1, 5, 2]
    """
    return store.claim_next_jobs(n, server=server)


# --------------------------------------------------------------------------- posting, once


@dataclass(frozen=True)
class Posted:
    """The server has the prompt: queued now, or found there (an answer lost, a crash).

    ``detail`` goes in the ``submitted`` event: ``{"number": n}`` (and ``"problems"`` when
    ComfyUI accepted only some outputs), or ``{"found_on_server": "running"}``.
    """

    detail: dict[str, Any]

    @property
    def found(self) -> bool:
        """True if it was on the server already: not posted now."""
        return "found_on_server" in self.detail


@dataclass(frozen=True)
class Rejected:
    """ComfyUI refused the prompt (HTTP 400), or it cannot be sent at all (a value JSON cannot
    carry): nothing was queued; ``error`` has ComfyUI's node errors, or says which value."""

    error: dict[str, Any]


@dataclass(frozen=True)
class Transient:
    """The server could not be reached or failed (after the client's own retries), or the POST
    failed in a way nobody foresaw (``error`` says how); the prompt may or may not have
    arrived: the next attempt asks the server first, and the job fails once its retries are
    used up (``retry_or_fail``)."""

    error: Exception


PostOutcome = Posted | Rejected | Transient


def post_prompt(
    client: Client,
    job: Job,
    *,
    store: Store,
    maybe_posted: bool,
    extra_data: Mapping[str, Any] | None = None,
) -> PostOutcome:
    """POST a claimed job's prompt with its recorded prompt_id, unless the server has it.

    ``maybe_posted``: an earlier attempt may have reached the server (a crash, an answer
    lost); the server is asked first and a prompt it has is never posted again. The images
    its ``LoadImage`` nodes name by content (``comfynb/<sha256 prefix>.png``, as
    ``comfynb.refine`` stores them) are uploaded from ``store`` first, once per server
    (``jobs.inputs``); one that is gone fails the job. Writes nothing: :func:`post_change`
    says what to record.

    Example::

        >>> post_prompt(client, claimed, store=store, maybe_posted=False)
        Posted(detail={'number': 3})
    """
    assert job.prompt_id is not None, "post a job whose prompt_id is recorded (claimed)"
    cached = False
    try:
        if maybe_posted and (report := find_posted(client, job.prompt_id)) is not None:
            return Posted({"found_on_server": report.status.value})
        problem = unsendable(job.workflow)
        if problem is None:
            cached = uploaded_before(client, job.workflow)
            problem = upload_inputs(store, client, job.workflow)
        if problem is not None:  # the same every time: it fails now, nothing was sent
            return Rejected(problem)
        _crashpoints.reached("submit.before_post")
        try:
            queued = client.queue_prompt(
                job.workflow, prompt_id=job.prompt_id, extra_data=extra_data
            )
        except PromptRejected as exc:
            if not cached or not refused_inputs(job.workflow, exc.node_errors):
                raise
            # an image taken as uploaded may be gone (the server's input folder emptied):
            # upload again and post once more
            problem = upload_inputs(store, client, job.workflow, again=True)
            if problem is not None:
                return Rejected(problem)
            queued = client.queue_prompt(
                job.workflow, prompt_id=job.prompt_id, extra_data=extra_data
            )
        _crashpoints.reached("submit.after_post")
    except PromptRejected as exc:
        return Rejected(error_detail(exc, error_type=exc.error_type, node_errors=exc.node_errors))
    except TRANSIENT_ERRORS as exc:
        return Transient(exc)
    except Exception as exc:  # unforeseen: one job's POST never takes its caller down
        return Transient(_scrubbed(exc, extra_data))
    detail: dict[str, Any] = {"number": queued.number}
    if queued.node_errors:  # accepted, but only the valid outputs will run
        detail["problems"] = queued.problems
    return Posted(detail)


def unsendable(workflow: Any) -> dict[str, Any] | None:
    """Why ``workflow`` cannot be posted, as a job's error (None if it can): not an API
    prompt (``check_workflow``), or not JSON (NaN, infinity, a lone surrogate). ``enqueue``
    refuses such workflows; this is the run-time guard for those already stored (by an older
    version, or by hand). Pure; the same every time: the job fails rather than retries.

    Example::

        >>> unsendable({"1": {"class_type": "EmptyImage", "inputs": {"color": float("nan")}}})
        {'type': 'UnsendablePrompt', 'message': 'the prompt cannot be sent as JSON: input
        "color" of node "1" is nan; fix that input and enqueue the job again', ...}
    """
    if isinstance(workflow, str):  # a stored text JSON cannot read (store.duckdb.rows)
        return {
            "type": "UnsendablePrompt",
            "message": f"the stored workflow is not JSON Python can read ({workflow[:60]!r}...); "
            "enqueue the job again with a workflow made by json or comfynb",
        }
    where = unstorable(workflow, "the workflow", prompt=True)
    if where is not None:
        return {
            "type": "UnsendablePrompt",
            "message": f"the prompt cannot be sent as JSON: {where}; fix that input and "
            "enqueue the job again",
        }
    try:
        check_workflow(workflow)
    except WorkflowError as exc:
        return error_detail(exc, reason="the stored workflow is not an API prompt")
    return None


def _scrubbed(exc: Exception, extra_data: Mapping[str, Any] | None) -> Exception:
    """``exc``, or a plain ``Exception`` of the same name and message without the values of
    ``extra_data`` (API keys are posted, never stored: not even in an error)."""
    text = str(exc)
    secrets = [v for v in _strings(extra_data) if len(v) >= 4 and v in text]
    if not secrets:
        return exc
    for secret in secrets:
        text = text.replace(secret, "***")
    scrubbed: Exception = type(type(exc).__name__, (Exception,), {})(text)
    return scrubbed


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def post_change(job: Job, outcome: PostOutcome, server: str) -> Move | Retry:
    """What to record after :func:`post_prompt`; pure.

    ``submitted`` on ``server`` (its error cleared; the event names the prompt_id); ``failed`` with the node errors when
    rejected; after a transient failure, a retry (the same prompt_id, asked for first next
    time) while the budget lasts, else ``failed`` with the reason (``retry_or_fail``).

    Example::

        >>> post_change(job, Posted({"number": 3}), "http://127.0.0.1:8188")
        Move(job_id=7, to=<JobStatus.SUBMITTED: 'submitted'>, fields={...}, detail={'number': 3, ...})
    """
    if isinstance(outcome, Posted):
        fields = {"server": server, "error": None}
        detail = {**outcome.detail, "prompt_id": job.prompt_id}  # the claim this move ends
        return Move(job.id, JobStatus.SUBMITTED, fields, detail)
    if isinstance(outcome, Rejected):
        return Move(job.id, JobStatus.FAILED, {"error": outcome.error})
    exc = outcome.error
    return retry_or_fail(job, reason=f"POST /prompt: {type(exc).__name__}", error=error_detail(exc))


def submit_job(
    store: Store,
    client: Client,
    job: Job | int,
    *,
    extra_data: Mapping[str, Any] | None = None,
) -> Job:
    """Send a pending job to the server; it becomes ``submitted`` (or ``failed`` if refused).

    The prompt_id is recorded in the store before the POST (a claimed job already has one), so
    after a crash ``recover`` finds the job by it. A job that already had a prompt_id may have
    been posted before (a crash, an interrupted cell): the server is asked first, and a prompt
    it has is recorded as submitted, never posted again. Transient faults (unreachable,
    timeout, 5xx, after the client's own retries) are retried here with backoff, reusing the
    same prompt_id; each is counted in ``retries`` and recorded as a ``retry`` event with its
    reason. After ``max_retries`` the job fails, its error saying why. Anything else the POST
    raises (an answer that cannot be read, ...) counts as such an attempt too. A rejected
    prompt fails at once with ComfyUI's node errors in ``error``, and so does a stored
    workflow that cannot be sent (``unsendable``: NaN, not an API prompt, ...).

    Example::

        >>> job = submit_job(store, client, job, extra_data={"api_key_comfy_org": key})
        >>> job.status.value, job.server
        ('submitted', 'http://127.0.0.1:8188')

    Args:
        store: the open store.
        client: the server to send it to (a job pinned to another server is refused).
        job: a pending job (or its id).
        extra_data: ComfyUI's ``extra_data``, API keys included: posted, never stored.

    Returns:
        The job as stored afterwards: ``submitted``, or ``failed`` with ``error``.

    Raises:
        InvalidTransition: the job is not pending.
        InvalidInput: the job is pinned to another server.
    """
    require_owner(store, "comfynb.submit_job")  # a served store: refused before any I/O
    return post_job(store, client, job, extra_data=extra_data)[0]


def post_job(
    store: Store,
    client: Client,
    job: Job | int,
    *,
    extra_data: Mapping[str, Any] | None = None,
) -> tuple[Job, PostOutcome]:
    """:func:`submit_job`, also saying how its last POST went (``recover`` tells adopted
    jobs, found on the server, from the ones it posted).

    Example::

        >>> job, outcome = post_job(store, client, claimed)
        >>> job.status.value, isinstance(outcome, Posted) and outcome.found
        ('submitted', True)
    """
    current = load_job(store, job)
    if current.status is not JobStatus.PENDING:
        check_move(current, JobStatus.SUBMITTED)  # raises, naming the status
    check_server(current, client)
    maybe_posted = current.prompt_id is not None
    if current.prompt_id is None:
        current = store.record_intent(current.id, prompt_id=new_prompt_id(), server=client.url)
    delays = RetryPolicy(
        attempts=current.max_retries + 1,
        base=client.retry.base,
        max_delay=client.retry.max_delay,
        seed=client.retry.seed,
    ).delays()
    while True:
        outcome = post_prompt(
            client, current, store=store, maybe_posted=maybe_posted, extra_data=extra_data
        )
        change = post_change(current, outcome, client.url)
        try:
            [current] = record_changes(store, [change])
        except InvalidTransition:
            # cancelled while the POST was on its way: take the prompt back off the server
            cancelled = store.job(current.id)
            if cancelled.status is not JobStatus.CANCELLED or cancelled.prompt_id is None:
                raise
            if isinstance(outcome, Posted):
                withdraw(client, cancelled.prompt_id)
            elif isinstance(outcome, Transient):  # it may have arrived
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    withdraw(client, cancelled.prompt_id)
            return cancelled, outcome
        if not isinstance(change, Retry):
            return current, outcome
        maybe_posted = True  # the POST may have arrived though its answer did not
        time.sleep(next(delays, client.retry.max_delay))


def poll_job_status(store: Store, client: Client, job: Job | int) -> Job:
    """Ask the server about a submitted or running job and move it along.

    Running on the server -> ``running``; finished -> ``process_job_result`` collects the images
    and completes the job with them; failed -> ``failed`` with the server's error (exception
    type, message, node id and type, traceback) in ``error``; interrupted by someone else ->
    ``failed`` with ``error["type"] == "Interrupted"``. A job the server does not know (it
    restarted, or its queue was cleared) goes back to ``pending`` with a fresh prompt_id on
    the next claim, counted in ``retries``; once ``max_retries`` is used up it fails instead.
    Jobs in any other status are returned unchanged.

    Example::

        >>> job = submit_job(store, client, job)
        >>> while not job.status.is_terminal:
        ...     job = poll_job_status(store, client, job)
        >>> job.status.value
        'completed'

    Returns:
        The job as stored afterwards.

    Raises:
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; the job is
            unchanged, poll again later.
    """
    require_owner(store, "comfynb.poll_job_status")  # a served store: refused before any I/O
    current = load_job(store, job)
    if current.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        return current
    assert current.prompt_id is not None
    check_server(current, client)
    try:
        report = client.job(current.prompt_id)
    except JobNotFound as exc:
        return forgotten(store, current, exc)
    if report.status is PromptStatus.COMPLETED:
        return process_job_result(store, client, current, report=report)
    return apply_report(store, current, report)
