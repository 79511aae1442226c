"""Job functions a notebook cell calls: queue a prompt, send it, follow it, collect its images.

Each function does one step of a job's life and can be called on its own; a worker is these
functions in a loop (``select_next_job``, ``submit_job``, ``poll_job_status``), and ``recover``
puts a store and a server back in agreement after a crash.

Example::

    >>> import comfynb
    >>> store = comfynb.open("lab.duckdb")
    >>> job = comfynb.enqueue(store, workflow, run="portraits", params={"seed": 42})
    >>> with comfynb.Client("http://127.0.0.1:8188") as client:
    ...     job = comfynb.submit_job(store, client, job)
    ...     while not job.status.is_terminal:
    ...         job = comfynb.poll_job_status(store, client, job)
    >>> job.status.value, len(store.candidates(job=job))
    ('completed', 1)

Decisions (see README.md, "The store"):

* ``completed`` always means "every image recorded": polling a job the server finished calls
  ``process_job_result``, which downloads the images and completes the job with its candidates
  in ONE transaction.
* A job the server reports interrupted that ``cancel`` did not stop (someone pressed Cancel in
  ComfyUI) is ``failed`` with ``error.type == "Interrupted"``; ``cancel`` itself moves the job
  to ``cancelled`` before the server reports anything.
* Image files go to ``<output_dir>/run-<run id>/job-<job id>/<type>/<subfolder>/<file name>``:
  server file names repeat (counters restart, several servers), so each job has its folder.
* Secrets go in ``extra_data`` to ``submit_job`` and ``recover``; they are posted, never stored.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import crashpoints as _crashpoints
from ..core.models import Candidate, Job, NewCandidate, Run, Step
from ..core.status import JobState, JobStatus, plan_moves
from ..errors import (
    CorruptImage,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    OutputError,
    PromptRejected,
    ServerFailed,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedResponse,
    UnsafePath,
)
from ..protocol.calls import ImageRef, JobReport, PromptStatus, RetryPolicy, new_prompt_id
from ..store.lifecycle import check_move, transition, transition_states_many
from ..workflows.check import check_int, check_workflow

if TYPE_CHECKING:
    from ..client import Client
    from ..service.remote import RemoteStore
    from ..store import Store

__all__ = [
    "DOWNLOAD_ATTEMPTS",
    "Recovery",
    "cancel",
    "enqueue",
    "poll_job_status",
    "process_job_result",
    "record_result",
    "record_results",
    "recover",
    "select_next_job",
    "select_next_jobs",
    "submit_job",
]

def _remote(store: Store | RemoteStore) -> RemoteStore | None:
    """The store if a worker process serves it (that process does its writes), else None."""
    from ..store import Store

    return None if isinstance(store, Store) else store


def enqueue(
    store: Store | RemoteStore,
    workflow: Mapping[str, Any],
    *,
    run: Run | int | str,
    step: Step | int | None = None,
    params: Mapping[str, Any] | None = None,
    priority: int = 0,
    parent: Candidate | int | None = None,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> Job:
    """Queue a workflow as a ``pending`` job; a worker (or ``submit_job``) sends it later.

    The workflow's shape is checked first; on any error nothing is written.

    Example::

        >>> job = enqueue(store, workflow, run="portraits", params={"seed": 42, "cfg": 7.5})
        >>> job.status.value, job.params["cfg"]
        ('pending', 7.5)

    Args:
        store: the open store.
        workflow: the API prompt to send, exactly (secret-looking keys are not stored).
        run: the run it belongs to (a Run, id or name).
        step: the step it belongs to; it must be a step of ``run``.
        params: what varied in this job (``seed``, ``cfg``, ...): the columns of ``store.jobs()``.
        priority: higher goes first.
        parent: the candidate this job refines (default: the step's parent candidate).
        max_retries: transient failures tolerated before the job fails.
        metadata: extra JSON kept with the job (secret-looking keys are dropped).

    Raises:
        WorkflowError: the workflow is not an API prompt; the message names the node.
        RunNotFound, StepNotFound, CandidateNotFound: an unknown reference.
        InvalidInput: a bad priority, max_retries, params or metadata.
    """
    from ..core.jsonio import to_json as _to_json
    from ..store import Store

    check_workflow(workflow)
    check_int(priority, "priority", -(2**31))
    check_int(max_retries, "max_retries", 0)
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInput(f'params is a dict of what varied, e.g. {{"seed": 42}}; got {params!r}')
    flow = _to_json(dict(workflow), "workflow")
    params_json = _to_json(dict(params or {}), "params")
    metadata_json = _to_json(dict(metadata or {}), "metadata")
    assert flow is not None
    remote = _remote(store)
    if remote is not None:  # checked here, written by the worker process that owns the file
        return remote._enqueue(
            workflow,
            run=run,
            step=step,
            params=params,
            priority=priority,
            parent=parent,
            max_retries=max_retries,
            metadata=metadata,
        )
    assert isinstance(store, Store)
    with store.transaction() as tx:
        run_id = tx.run_id(run)
        step_id, parent_id = None, None
        if step is not None:
            found = store.step(step.id if isinstance(step, Step) else step)
            if found.run_id != run_id:
                raise InvalidInput(
                    f"step {found.id} belongs to run {found.run_id}, not run {run_id}; "
                    "pass that run or a step of this one"
                )
            step_id, parent_id = found.id, found.parent_candidate_id
        if parent is not None:
            parent_id = store.candidate(parent.id if isinstance(parent, Candidate) else parent).id
        return tx.insert_job(
            run_id=run_id,
            step_id=step_id,
            parent_candidate_id=parent_id,
            workflow_json=flow,
            params_json=params_json,
            priority=priority,
            max_retries=max_retries,
            metadata_json=metadata_json,
        )


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


def record_result(
    store: Store,
    job_id: int,
    images: Sequence[NewCandidate],
    *,
    detail: Mapping[str, Any] | None = None,
) -> list[Candidate]:
    """Complete a job with its images, in ONE transaction; running it again changes nothing.

    Creates one candidate per image, adds their number to the parent candidate's
    ``child_count``, and moves the job to ``completed``. The files must already be in
    the output folder.

    Example::

        >>> cands = record_result(store, 7, [NewCandidate(node_id="9", path="run/a.png")])
        >>> store.job(7).status.value, [c.path for c in cands]
        ('completed', ['run/a.png'])

    Raises:
        JobNotInStore: no such job.
        InvalidTransition: the job cannot complete from its status; nothing changed.
        InvalidInput: an image path outside the output folder; nothing changed.
    """
    return record_results(store, {job_id: images}, detail=detail)[job_id]


def record_results(
    store: Store,
    results: Mapping[int, Sequence[NewCandidate]],
    *,
    detail: Mapping[str, Any] | None = None,
) -> dict[int, list[Candidate]]:
    """Complete many jobs with their images in ONE transaction: :func:`record_result` in bulk.

    A handful of statements for the whole batch (not per job), for workers that finish
    many prompts at once. Jobs already completed are left as they are; if any job cannot
    complete, nothing is written.

    Example::

        >>> done = record_results(store, {7: [NewCandidate("9", "r/a.png")], 8: []})
        >>> {job_id: len(cands) for job_id, cands in done.items()}
        {7: 1, 8: 0}

    Raises:
        JobNotInStore, InvalidTransition, InvalidInput: as :func:`record_result`.
    """
    return _record_round(store, (), results, detail)


def _record_round(
    store: Store,
    moves: Sequence[tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]],
    results: Mapping[int, Sequence[NewCandidate]],
    detail: Mapping[str, Any] | None = None,
    *,
    known: Mapping[int, Job] | None = None,
    states: Mapping[int, JobState] | None = None,
) -> dict[int, list[Candidate]]:
    """``record_results`` after other ``moves`` of the same round, in one plan.

    A worker's round: the moves (submitted, running, failed, ...) and the completions are
    checked together and written with one read, one UPDATE per set of columns, one INSERT
    of candidates and one of events, whatever the number of jobs. ``known``: the jobs as the
    caller holds them, for what never changes after ``enqueue`` (run, step, parent, params);
    only their states are read then, not their workflows. ``states``: their states as the
    caller knows them, with ``known``: nothing is read; if a status turned out different,
    the UPDATE raises ``StaleStates`` and the caller's transaction must roll back.
    """
    ids = list(results)
    wanted = list(dict.fromkeys([*ids, *(move[0] for move in moves)]))
    if not wanted:
        return {}
    with store.transaction() as tx:
        if known is not None and all(i in known for i in ids):
            if states is None or any(i not in states for i in wanted):
                states = tx.job_states(wanted)  # JobNotInStore names a missing one
            jobs = {i: known[i] for i in ids}
        else:
            jobs = tx.jobs_by_id(wanted)
            missing = [i for i in wanted if i not in jobs]
            if missing:
                tx.job(missing[0])  # raises JobNotInStore naming it
            states = {i: JobState(j.status, j.retries, j.prompt_id) for i, j in jobs.items()}
        done = {i: tx.candidates_of(i) for i in ids if states[i].status is JobStatus.COMPLETED}
        todo = [jobs[i] for i in ids if i not in done]
        completions: list[tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]]
        completions = [
            (
                job.id,
                JobStatus.COMPLETED,
                {},
                {"candidates": len(results[job.id]), **(detail or {})},
            )
            for job in todo
        ]
        plan_moves(states, [*moves, *completions])  # pure: raises before anything is written
        made = tx.insert_candidates_many(
            [(job, image) for job in todo for image in results[job.id]]
        )
        by_job: dict[int, list[Candidate]] = {job.id: [] for job in todo}
        for candidate in made:
            by_job[candidate.job_id].append(candidate)
        children: dict[int, int] = {}
        for job in todo:
            if job.parent_candidate_id is not None and by_job[job.id]:
                children[job.parent_candidate_id] = children.get(job.parent_candidate_id, 0) + len(
                    by_job[job.id]
                )
        tx.add_child_counts(children)
        transition_states_many(tx, states, [*moves, *completions])
        _crashpoints.reached("result.transaction")  # the crash test kills a worker here
    return {i: done[i] if i in done else by_job[i] for i in ids}


# --------------------------------------------------------------------------- talking to a server

#: Attempts at downloading one image that arrives truncated or undecodable before the job fails
#: with ``CorruptImage`` (a cut connection or a proxy hiccup is usually gone on the next try).
DOWNLOAD_ATTEMPTS = 3

_TRANSIENT = (ServerUnreachable, ServerTimeout, ServerFailed)
_IMAGE_TYPES = frozenset({"output", "temp", "input"})
# the workflow inputs a candidate's seed and prompt text are read from when params lack them
_SEED_INPUTS = ("seed", "noise_seed")


def _load(store: Store, job: Job | int) -> Job:
    """The job as stored now (a ``Job`` passed in may be stale)."""
    return store.job(job.id if isinstance(job, Job) else job)


def _check_server(job: Job, client: Client) -> None:
    if job.server is not None and job.server != client.url:
        raise InvalidInput(
            f"job {job.id} belongs to server {job.server}, not {client.url}; use a client "
            f"for that server: comfynb.Client({job.server!r})"
        )


def _arrived(client: Client, prompt_id: str) -> JobReport | None:
    """The server's report of ``prompt_id``, or None if it never saw it."""
    try:
        return client.job(prompt_id)
    except JobNotFound:
        return None


def _error(exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc), **extra}


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
    timeout, 5xx, after the client's own retries) are retried here with backoff and counted in
    ``retries``, reusing the same prompt_id; after ``max_retries`` the job fails. A rejected
    prompt fails at once with ComfyUI's node errors in ``error``.

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
        UnexpectedResponse: the server answered something unreadable (the job stays pending).
    """
    current = _load(store, job)
    if current.status is not JobStatus.PENDING:
        check_move(current, JobStatus.SUBMITTED)  # raises, naming the status
    _check_server(current, client)
    maybe_posted = current.prompt_id is not None
    if current.prompt_id is None:
        current = store.record_intent(current.id, prompt_id=new_prompt_id(), server=client.url)
    prompt_id = current.prompt_id
    assert prompt_id is not None
    delays = RetryPolicy(
        attempts=current.max_retries + 1,
        base=client.retry.base,
        max_delay=client.retry.max_delay,
        seed=client.retry.seed,
    ).delays()
    while True:
        try:
            if maybe_posted and (report := _arrived(client, prompt_id)) is not None:
                return _mark_submitted(
                    store, client, current.id, {"found_on_server": report.status.value}
                )
            _crashpoints.reached("submit.before_post")
            maybe_posted = True
            queued = client.queue_prompt(
                current.workflow, prompt_id=prompt_id, extra_data=extra_data
            )
            _crashpoints.reached("submit.after_post")
            detail: dict[str, Any] = {"number": queued.number}
            if queued.node_errors:  # accepted, but only the valid outputs will run
                detail["problems"] = queued.problems
            return _mark_submitted(store, client, current.id, detail)
        except PromptRejected as exc:
            error = _error(exc, error_type=exc.error_type, node_errors=exc.node_errors)
            return transition(store, current.id, JobStatus.FAILED, error=error)
        except _TRANSIENT as exc:
            current = store.job(current.id)
            delay = next(delays, None)
            if delay is None or current.retries >= current.max_retries:
                return transition(store, current.id, JobStatus.FAILED, error=_error(exc))
            current = store.update_job(current.id, retries=current.retries + 1, error=_error(exc))
            time.sleep(delay)


def _mark_submitted(store: Store, client: Client, job_id: int, detail: dict[str, Any]) -> Job:
    try:
        return transition(
            store, job_id, JobStatus.SUBMITTED, server=client.url, error=None, detail=detail
        )
    except InvalidTransition:
        # cancelled while the POST was on its way: take the prompt back off the server
        job = store.job(job_id)
        if job.status is JobStatus.CANCELLED and job.prompt_id is not None:
            _withdraw(client, job.prompt_id)
            return job
        raise


def _withdraw(client: Client, prompt_id: str) -> None:
    # delete first, then interrupt: a prompt that starts in between is caught by the interrupt
    client.delete_from_queue([prompt_id])
    client.interrupt(prompt_id)


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
    current = _load(store, job)
    if current.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        return current
    assert current.prompt_id is not None
    _check_server(current, client)
    try:
        report = client.job(current.prompt_id)
    except JobNotFound as exc:
        return _forgotten(store, current, exc)
    if report.status is PromptStatus.COMPLETED:
        return process_job_result(store, client, current, report=report)
    return _apply_report(store, current, report)


def _forgotten(store: Store, job: Job, exc: JobNotFound) -> Job:
    if job.retries >= job.max_retries:
        return transition(store, job.id, JobStatus.FAILED, error=_error(exc))
    return transition(
        store, job.id, JobStatus.PENDING, detail={"reason": "the server does not know the prompt"}
    )


def _apply_report(store: Store, job: Job, report: JobReport) -> Job:
    """Move ``job`` as a report that is not ``completed`` says."""
    if report.status is PromptStatus.RUNNING and job.status is JobStatus.SUBMITTED:
        return transition(store, job.id, JobStatus.RUNNING)
    if report.status is PromptStatus.FAILED:
        failure = report.error
        error: dict[str, Any] = {
            "type": "ExecutionError",
            "message": "the server reports an error",
        }
        if failure is not None:
            error = {
                "type": "ExecutionError",
                "exception_type": failure.exception_type,
                "message": failure.message.strip(),
                "node_id": failure.node_id,
                "node_type": failure.node_type,
                "traceback": list(failure.traceback),
            }
        detail = {"outputs_listed": len(report.outputs)} if report.outputs else None
        return transition(store, job.id, JobStatus.FAILED, error=error, detail=detail)
    if report.status is PromptStatus.INTERRUPTED:
        where = f" at node {report.interrupted_at}" if report.interrupted_at else ""
        stopped: dict[str, Any] = {
            "type": "Interrupted",
            "message": f"interrupted on the server{where}, not by comfynb.cancel; "
            "enqueue the workflow again to run it",
            "node_id": report.interrupted_at,
        }
        return transition(store, job.id, JobStatus.FAILED, error=stopped)
    return job  # pending, still running, or a state this client cannot read


def process_job_result(
    store: Store, client: Client, job: Job | int, *, report: JobReport | None = None
) -> Job:
    """Download every image of a finished job and complete it with its candidates.

    Every output node, every batch element, ``output`` and ``temp`` images go under the store's
    output folder (one folder per job); each file is checked to decode and renamed into place
    whole. Then ONE transaction creates a candidate per image (size, bytes, sha256, seed, prompt
    text, params), adds to the parent candidate's ``child_count`` and completes the job.
    Calling it again on a completed job changes nothing.

    A server file name that would escape the output folder (``UnsafePath``), or an image that is
    still corrupt after ``DOWNLOAD_ATTEMPTS`` downloads (``CorruptImage``), fails the job with
    that in ``error``; no candidate is written and the job's files are removed. So does an
    image the server no longer has (``UnexpectedResponse``, HTTP 404). A fully cached
    re-run that an older ComfyUI reports with no outputs (the fact sheet's quirk 2) takes the
    images of the latest earlier run of the same prompt in the server's history; without one,
    the job fails with ``error["type"] == "OutputsNotListed"`` rather than completing with none.

    Example::

        >>> job = process_job_result(store, client, job)
        >>> job.status.value, store.candidates(job=job)[["node_id", "width", "height"]]
        ('completed',   node_id  width  height
        0       9    512     512)

    Args:
        report: the server's report, when the caller already has it (``poll_job_status``).

    Returns:
        The job as stored afterwards; if the server has not finished it, it is moved as
        ``poll_job_status`` would.

    Raises:
        InvalidTransition: the job is pending, failed or cancelled.
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; the job
            is unchanged and no file of it is left, call it again later.
    """
    current = _load(store, job)
    if current.status is JobStatus.COMPLETED:
        return current
    check_move(current, JobStatus.COMPLETED)
    assert current.prompt_id is not None
    if report is None:
        try:
            report = client.job(current.prompt_id)
        except JobNotFound as exc:
            return _forgotten(store, current, exc)
    if report.status is not PromptStatus.COMPLETED:
        return _apply_report(store, current, report)
    collected = _collect(store, client, current, report.outputs)
    if collected.error is not None:
        return transition(store, current.id, JobStatus.FAILED, error=collected.error)
    with _removed_on_failure(store, current, list(collected.written)):
        try:
            record_result(store, current.id, collected.images, detail=collected.detail)
        except InvalidTransition:
            # cancelled meanwhile: no candidate, no file
            _remove_files(store, current, collected.written)
            return store.job(current.id)
    return store.job(current.id)


@dataclass(frozen=True)
class _Collected:
    """A finished job's images, downloaded and checked, ready to record; or why it fails."""

    images: tuple[NewCandidate, ...] = ()
    detail: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    written: tuple[Path, ...] = ()


def _collect(store: Store, client: Client, job: Job, refs: Sequence[ImageRef]) -> _Collected:
    """Download the images ``refs`` of a finished job into its folder (no store write).

    The half of ``process_job_result`` before the transaction, so that a worker can record
    many jobs' results in one. A transient server error removes the files and propagates.
    """
    detail: dict[str, Any] = {}
    if not refs:
        refs, detail = _unlisted_outputs(client, job)
        if detail.get("type") == "OutputsNotListed":
            return _Collected(error=detail)
    written: list[Path] = []
    with _removed_on_failure(store, job, written):
        try:
            images = tuple(_download(store, client, job, ref, written) for ref in refs)
        except (OutputError, UnexpectedResponse) as exc:
            # unsafe, corrupt, or gone from the server (/view answered 404): asking again
            # would get the same answer, so the job fails rather than stay stuck
            _remove_files(store, job, written)
            return _Collected(error=_error(exc))
    return _Collected(images=images, detail=detail or None, written=tuple(written))


@contextlib.contextmanager
def _removed_on_failure(store: Store, job: Job, written: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        _remove_files(store, job, written)
        raise


def _job_folder(store: Store, job: Job) -> Path:
    """The folder of a job's image files under the store's output folder."""
    return store.output_dir / f"run-{job.run_id}" / f"job-{job.id}"


def _download(
    store: Store, client: Client, job: Job, ref: ImageRef, written: list[Path]
) -> NewCandidate:
    if ref.type not in _IMAGE_TYPES:
        raise UnsafePath(
            f"the server named an image type {ref.type!r}; expected one of "
            f"{', '.join(sorted(_IMAGE_TYPES))}. Refusing to download it"
        )
    dest = _job_folder(store, job) / ref.type
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            path, facts = client._save(ref, dest)
            break
        except CorruptImage:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
    written.append(path)
    return NewCandidate(
        node_id=ref.node_id or "",
        path=path.relative_to(store.output_dir).as_posix(),
        sha256=facts.sha256,
        width=facts.width,
        height=facts.height,
        bytes=facts.bytes,
        seed=_seed_of(job),
        prompt=_prompt_of(job),
    )


def _remove_files(store: Store, job: Job, paths: Sequence[Path]) -> None:
    """Remove files of ``job`` that no candidate will point to, and its emptied folders."""
    for path in paths:
        path.unlink(missing_ok=True)
    top = _job_folder(store, job)
    folders = sorted({p.parent for p in paths}, key=lambda p: len(p.parts), reverse=True)
    for folder in folders:
        while folder.is_relative_to(top):
            with contextlib.suppress(OSError):  # not empty: another image of the job stays
                folder.rmdir()
            if folder == top:
                break
            folder = folder.parent


def _seed_of(job: Job) -> int | None:
    """The job's seed: ``params["seed"]``, else the workflow's one seed input (if only one)."""
    seed = job.params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed
    seeds = {
        value
        for node in job.workflow.values()
        for name, value in node.get("inputs", {}).items()
        if name in _SEED_INPUTS and isinstance(value, int) and not isinstance(value, bool)
    }
    return seeds.pop() if len(seeds) == 1 and min(seeds) >= 0 else None


def _prompt_of(job: Job) -> str | None:
    """``params["prompt"]``, else the text of the node linked as a sampler's ``positive``."""
    prompt = job.params.get("prompt")
    if isinstance(prompt, str):
        return prompt
    for node in job.workflow.values():
        link = node.get("inputs", {}).get("positive")
        if isinstance(link, list) and link and link[0] in job.workflow:
            text = job.workflow[link[0]].get("inputs", {}).get("text")
            if isinstance(text, str):
                return text
    return None


def _unlisted_outputs(client: Client, job: Job) -> tuple[Sequence[ImageRef], dict[str, Any]]:
    """Images of a completed job whose report lists none, and the event detail saying whence.

    An older ComfyUI lists no outputs for a fully cached re-run posted without a client_id
    (quirk 2). comfynb always sends one, but a proxy may drop it: the images are then those of
    the latest earlier run of the same prompt, found in the server's history. A job that was not
    fully cached really made no image files (e.g. only ``SaveImageWebsocket``): no images.
    """
    assert job.prompt_id is not None
    history = client.history()
    ours = history.get(job.prompt_id)
    if ours is None:
        return (), {"note": "the server listed no image outputs"}
    cached = {
        n
        for kind, data in ours.messages
        if kind == "execution_cached"
        for n in data.get("nodes", [])
    }
    if not set(ours.prompt) <= {str(n) for n in cached}:
        return (), {"note": "the server listed no image outputs"}
    earlier = None
    for prompt_id, entry in history.items():
        if prompt_id == job.prompt_id:
            break
        if entry.prompt == ours.prompt and entry.report.outputs:
            earlier = entry
    if earlier is None:
        return (), {
            "type": "OutputsNotListed",
            "message": "the server ran this prompt from its cache and listed no images (an "
            "older ComfyUI reached without a client_id), and its history has no earlier run "
            "of the same prompt to take them from; enqueue it again with one input changed "
            "(e.g. the seed)",
        }
    return earlier.report.outputs, {"outputs_from": earlier.prompt_id}


def cancel(store: Store | RemoteStore, job: Job | int, client: Client | None = None) -> Job:
    """Cancel a job: a pending one at once; a submitted or running one on its server first.

    A submitted or running job is deleted from the server's queue and interrupted by its
    prompt_id (only if it is the one running), then ``cancelled``. Cancelling a cancelled job
    changes nothing.

    Example::

        >>> cancel(store, job).status.value                       # pending
        'cancelled'
        >>> cancel(store, running_job, client=client).status.value
        'cancelled'

    Args:
        client: the job's server; needed for submitted and running jobs.

    Raises:
        InvalidTransition: the job is completed or failed.
        InvalidInput: a submitted or running job and no client (or one for another server).

    A store served by a ``comfynb worker`` process is cancelled there, with that process's
    client for the job's server; ``client`` is then not needed (and not used).
    """
    from ..store import Store

    remote = _remote(store)
    if remote is not None:
        return remote._cancel(job)
    assert isinstance(store, Store)
    current = _load(store, job)
    if current.status is JobStatus.CANCELLED:
        return current
    check_move(current, JobStatus.CANCELLED)
    detail: dict[str, Any] = {"by": "comfynb.cancel"}
    on_server = current.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
    if client is None and on_server:
        raise InvalidInput(
            f"job {current.id} is {current.status.value} on {current.server}; pass its client "
            "to take it off that server: cancel(store, job, client=client)"
        )
    if client is not None and current.prompt_id is not None:
        _check_server(current, client)
        _withdraw(client, current.prompt_id)
        detail["withdrawn_from"] = client.url
    return transition(store, current.id, JobStatus.CANCELLED, detail=detail)


@dataclass(frozen=True)
class Recovery:
    """What ``recover`` did, as job ids per outcome.

    ``adopted``: posted before the crash, found on the server, now recorded as submitted;
    ``posted``: never reached the server, posted now (once); ``requeued``: the server forgot
    them, back to pending; ``completed``/``failed``: finished now; ``in_progress``: still
    queued or running on the server; ``skipped``: jobs of another server;
    ``partial_files``: temporary download files removed.

    Example::

        >>> recover(store, client)
        Recovery(adopted=(41,), posted=(42,), requeued=(), completed=(38, 39, 40, 41), ...)
    """

    adopted: tuple[int, ...] = ()
    posted: tuple[int, ...] = ()
    requeued: tuple[int, ...] = ()
    completed: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    in_progress: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    partial_files: tuple[Path, ...] = ()


def recover(
    store: Store, client: Client, *, extra_data: Mapping[str, Any] | None = None
) -> Recovery:
    """After a crash, bring every job caught between states in line with the server.

    A worker calls it when it starts, before it claims anything; no other thread of this store
    may be downloading images of this server's jobs meanwhile (it removes their unfinished
    files; those of jobs on other servers, which it skips, stay). For each job that is
    submitted, running, or pending with a prompt_id (claimed, maybe posted): a prompt_id the
    server has (queued, running or in its history) is recorded as submitted and never posted
    again; one the server never saw is posted, once; finished ones are processed (images
    downloaded, candidates recorded) or failed; ones the server forgot go back to pending.
    Temporary files of interrupted downloads are removed from the output folder, and files of
    unfinished jobs that no candidate points to.

    Example::

        >>> summary = recover(store, client)
        >>> summary.adopted, summary.posted, summary.completed
        ((41,), (42,), (38, 39, 40, 41))

    Args:
        extra_data: as for ``submit_job``, for the prompts that must be posted now.

    Raises:
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; what was
            reconciled so far stays, call it again.
    """
    unsettled = store.unsettled_jobs()
    # a job of another server may be downloading right now (a worker recovers a server that
    # came up late while its pool downloads images from the others): its files stay
    elsewhere = [_job_folder(store, j) for j in unsettled if j.server not in (None, client.url)]
    partial = tuple(
        path
        for path in store.output_dir.rglob(".*.part")
        if path.is_file() and not any(path.is_relative_to(top) for top in elsewhere)
    )
    for path in partial:
        path.unlink(missing_ok=True)
    outcomes: dict[str, list[int]] = {name: [] for name in Recovery.__dataclass_fields__}
    for job in unsettled:
        if job.server not in (None, client.url):
            outcomes["skipped"].append(job.id)
            continue
        after = job
        if job.status is JobStatus.PENDING:
            assert job.prompt_id is not None
            seen = _arrived(client, job.prompt_id) is not None
            after = submit_job(store, client, job, extra_data=extra_data)
            if after.status is JobStatus.SUBMITTED:
                outcomes["adopted" if seen else "posted"].append(job.id)
        after = poll_job_status(store, client, after)
        if after.status is JobStatus.PENDING and job.status is not JobStatus.PENDING:
            outcomes["requeued"].append(job.id)
        elif after.status is JobStatus.COMPLETED:
            outcomes["completed"].append(job.id)
        elif after.status is JobStatus.FAILED:
            outcomes["failed"].append(job.id)
        elif after.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            outcomes["in_progress"].append(job.id)
        _remove_strays(store, after)
    fields: dict[str, Any] = {name: tuple(ids) for name, ids in outcomes.items()}
    fields["partial_files"] = partial
    return Recovery(**fields)


def _remove_strays(store: Store, job: Job) -> None:
    """Remove files in a job's folder that none of its candidates points to."""
    top = _job_folder(store, job)
    if not top.is_dir():
        return
    with store.transaction() as tx:
        kept = {store.output_dir / c.path for c in tx.candidates_of(job.id)}
    strays = [p for p in top.rglob("*") if p.is_file() and p not in kept]
    _remove_files(store, job, strays)
