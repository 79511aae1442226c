"""The job lifecycle: statuses, the one table of allowed moves, and the rules that plan them.

A job moves ``pending -> submitted -> running -> completed | failed | cancelled``. A fully
cached prompt may go from ``submitted`` straight to ``completed``; a job the server forgot
(a restart) goes back to ``pending`` and is counted as a retry. Nothing else writes
``jobs.status``: every change goes through ``comfynb.store.lifecycle`` (``transition``,
``transition_many``, ``record_changes``), which update the job and insert its ``job_events``
row in the same transaction, from a :class:`Plan` made here (pure, no I/O).

Two things happen to a job without a change of status:

* **Claimed** is a state the status does not show: a ``pending`` job with a ``prompt_id``
  (and ``claimed_at``, and usually ``server``) was claimed by a worker or ``submit_job`` and
  may already have been posted with that prompt_id. A claim writes no event row (one UPDATE
  claims many jobs; and a job's story starts with the move that ends its claim): the job row
  shows it, ``store.unsettled_jobs()`` lists it, and the ``submitted`` event that ends it
  names its ``prompt_id``. A claim given back (:class:`Release`: a stopping worker, a dead
  server) is an event row, pending to pending, ``{"event": "release", "previous_prompt_id":
  ..., "reason": ...}``; it clears ``prompt_id``, ``claimed_at`` and ``server``.
* **A retry** (:class:`Retry`) is an event row whose from and to are the same status when the
  job stays where it is (a POST that failed on the way: the job stays pending with its
  prompt_id), or ``-> pending`` when the job comes back from a server (forgotten, or its server
  is gone); either way its ``detail`` is ``{"event": "retry", "reason": ..., "retries": n}``
  and ``retries`` grows by one. :func:`retry_or_fail` is the one budget rule: a job retries
  while ``retries < max_retries``, else it fails with the reason.

Example::

    >>> from comfynb.store.lifecycle import transition
    >>> job = transition(store, 7, JobStatus.SUBMITTED, prompt_id="a1b2", server="http://gpu:8188")
    >>> job.status, job.submitted_at is not None
    (<JobStatus.SUBMITTED: 'submitted'>, True)
    >>> transition(store, 7, "pending")        # forgotten by the server: back in the queue
    >>> transition(store, 7, JobStatus.COMPLETED)
    Traceback (most recent call last):
    comfynb.errors.InvalidTransition: job 7 cannot move from 'pending' to 'completed'; ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple, Protocol

from ..errors import InvalidInput, InvalidTransition

__all__ = [
    "ALLOWED",
    "NOW",
    "TRANSITION_FIELDS",
    "Attempts",
    "Change",
    "JobState",
    "JobStatus",
    "Move",
    "Plan",
    "Release",
    "Retry",
    "check_fields",
    "job_of",
    "plan_moves",
    "retry_or_fail",
]


class JobStatus(StrEnum):
    """Where a job is in its life; compares equal to its string value (``"pending"``)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``: nothing moves a job on from there.

        Example::

            >>> JobStatus.FAILED.is_terminal, JobStatus.RUNNING.is_terminal
            (True, False)
        """
        return not ALLOWED[self]

    @classmethod
    def parse(cls, value: JobStatus | str) -> JobStatus:
        """Return the status named by ``value``; an unknown name raises ``InvalidInput``.

        Example::

            >>> JobStatus.parse("running")
            <JobStatus.RUNNING: 'running'>
        """
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise InvalidInput(f"unknown job status {value!r}; use one of: {names}") from None


PENDING: Final = JobStatus.PENDING
SUBMITTED: Final = JobStatus.SUBMITTED
RUNNING: Final = JobStatus.RUNNING
COMPLETED: Final = JobStatus.COMPLETED
FAILED: Final = JobStatus.FAILED
CANCELLED: Final = JobStatus.CANCELLED

ALLOWED: Final[Mapping[JobStatus, frozenset[JobStatus]]] = {
    # FAILED from PENDING: the server rejected the prompt (nothing was queued), or transient
    # faults used up max_retries before any POST succeeded.
    PENDING: frozenset({SUBMITTED, FAILED, CANCELLED}),
    # COMPLETED straight from SUBMITTED: a fully cached prompt never reports "running".
    # PENDING again: the server forgot the prompt (restart); it is resubmitted as a retry.
    SUBMITTED: frozenset({PENDING, RUNNING, COMPLETED, FAILED, CANCELLED}),
    RUNNING: frozenset({PENDING, COMPLETED, FAILED, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

#: Job columns a transition may set besides the status (timestamps are set for you).
TRANSITION_FIELDS: Final = frozenset(
    {"prompt_id", "server", "error", "retries", "progress_value", "progress_max", "metadata"}
)


class _Now:
    """Marks a timestamp column the store fills with the transaction's time."""

    def __repr__(self) -> str:
        return "NOW"


NOW: Final = _Now()


@dataclass(frozen=True)
class JobState:
    """What planning a move needs to know about a job as stored."""

    status: JobStatus
    retries: int
    prompt_id: str | None


@dataclass
class Plan:
    """The writes of a batch of moves: one update per job and one event per move.

    ``updates`` maps a job id to (status before the batch, columns to set); a value of
    ``NOW`` means the transaction's time. ``events`` are (job_id, from, to, detail) in order.
    """

    updates: dict[int, tuple[JobStatus, dict[str, Any]]] = field(default_factory=dict)
    events: list[tuple[int, JobStatus, JobStatus, dict[str, Any]]] = field(default_factory=list)


def _automatic_fields(state: JobState, to: JobStatus) -> dict[str, Any]:
    """Columns a move to ``to`` always sets: its timestamp, or the reset of a requeue."""
    if to is SUBMITTED:
        return {"submitted_at": NOW}
    if to is RUNNING:
        return {"started_at": NOW}
    if to.is_terminal:
        return {"finished_at": NOW}
    # back to PENDING: a new attempt with a new prompt_id, counted as a retry
    return {
        "prompt_id": None,
        "claimed_at": None,
        "submitted_at": None,
        "started_at": None,
        "progress_value": None,
        "progress_max": None,
        "retries": state.retries + 1,
    }


_FIELD_KINDS: Final[Mapping[str, tuple[str, tuple[type, ...]]]] = {
    "prompt_id": ("a string", (str,)),
    "server": ("a URL string", (str,)),
    "error": ("a dict", (Mapping,)),
    "metadata": ("a dict", (Mapping,)),
    "retries": ("an int from 0", (int,)),
    "progress_value": ("an int from 0", (int,)),
    "progress_max": ("an int from 0", (int,)),
}


def check_fields(job_id: int, fields: Mapping[str, object]) -> None:
    unknown = sorted(set(fields) - TRANSITION_FIELDS)
    if unknown:
        raise InvalidInput(
            f"transition of job {job_id} got unknown field(s) {', '.join(unknown)}; "
            f"a transition may set {', '.join(sorted(TRANSITION_FIELDS))}"
        )
    for name, value in fields.items():
        what, types = _FIELD_KINDS[name]
        bad_int = isinstance(value, bool) or (isinstance(value, int) and value < 0)
        if value is not None and (not isinstance(value, types) or bad_int):
            raise InvalidInput(
                f"transition of job {job_id}: {name} must be {what} or None, got {value!r}"
            )


_NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})


class Move(NamedTuple):
    """A change of status: ``job_id`` to ``to``, setting job ``fields``; ``detail`` is kept in
    its event row only. A plain ``(job_id, to, fields, detail)`` tuple is the same move.

    Example::

        >>> Move(7, JobStatus.FAILED, {"error": {"type": "OOM", "message": "..."}})
    """

    job_id: int
    to: JobStatus
    fields: Mapping[str, Any] = _NO_FIELDS
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Retry:
    """A failed attempt, counted, and the job tried again; one event row of its own.

    A pending job (its POST failed on the way) stays pending with its prompt_id, to be posted
    again with it; a job on a server (the server forgot it, or is gone) goes back to pending
    and gets a fresh prompt_id at its next claim. Either way ``retries`` grows by one,
    ``error`` (when given) says why, ``fields`` are set too (``{"server": None}``: to any
    server), and the event row's detail is ``{"event": "retry", "reason": ..., "retries": n}``.
    :func:`retry_or_fail` decides whether a job retries or fails.

    Example::

        >>> Retry(7, "POST /prompt: ServerTimeout", {"type": "ServerTimeout", "message": "..."})
    """

    job_id: int
    reason: str
    error: Mapping[str, Any] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    """A claim given back: the pending job loses its prompt_id, claim and server, unposted
    (a stopping worker, a dead server); the next claim gives it a fresh prompt_id. One event
    row, pending to pending: ``{"event": "release", "previous_prompt_id": ..., "reason": ...}``.

    Example::

        >>> Release(7, "the worker stopped")
    """

    job_id: int
    reason: str


#: What the lifecycle records: a move (a ``Move`` or a plain tuple), a retry, a release.
Change = Move | tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None] | Retry | Release


def job_of(change: Change) -> int:
    """The id of the job a change is about."""
    return change.job_id if isinstance(change, Retry | Release) else change[0]


class Attempts(Protocol):
    """What the retry budget reads of a job (a ``Job`` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def retries(self) -> int: ...
    @property
    def max_retries(self) -> int: ...


def retry_or_fail(
    job: Attempts,
    *,
    reason: str,
    error: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] = _NO_FIELDS,
) -> Retry | Move:
    """The one budget rule: retry while ``retries < max_retries``, else fail with the reason.

    Pure: it returns what to record, and each caller records it its own way (a job function
    through ``lifecycle.record_changes``, the worker through its recorder thread).

    Example::

        >>> retry_or_fail(job, reason="POST /prompt: ServerFailed", error=err)  # retries 0 of 3
        Retry(job_id=7, reason='POST /prompt: ServerFailed', error={...}, fields={})
        >>> retry_or_fail(spent, reason="POST /prompt: ServerFailed", error=err).to
        <JobStatus.FAILED: 'failed'>

    Args:
        job: the job as last recorded (its status, ``retries`` and ``max_retries``).
        reason: why the attempt failed, in a few words; kept in the event (and the error).
        error: the attempt's error as JSON (``type``, ``message``); default: the reason.
        fields: job columns a retry also sets (e.g. ``{"server": None}``); not on failure.

    Returns:
        A :class:`Retry`, or a :class:`Move` to ``failed`` whose ``error`` names the reason and
        says no retries are left.
    """
    if job.retries < job.max_retries:
        return Retry(job.id, reason, error, fields)
    failure = dict(error) if error else {"type": "RetriesExhausted", "message": reason}
    failure["message"] = (
        f"{failure.get('message') or reason}; no retries left "
        f"({job.retries} of {job.max_retries} used)"
    )
    failure.setdefault("reason", reason)
    return Move(job.id, FAILED, {"error": failure}, {"reason": reason, "retries": job.retries})


def plan_moves(states: Mapping[int, JobState], moves: Iterable[Change]) -> Plan:
    """Check a batch of moves and retries against ``ALLOWED`` and return the writes; pure.

    Changes apply in order, so one job may pass through several statuses in one batch.
    The first illegal move raises ``InvalidTransition`` and nothing is planned. A
    :class:`Retry` of a pending job keeps its status (its event goes from pending to
    pending); of a job on a server, it is a move back to pending.

    Example::

        >>> plan = plan_moves({7: JobState(PENDING, 0, "a1")}, [(7, SUBMITTED, {}, None)])
        >>> plan.updates[7]
        (<JobStatus.PENDING: 'pending'>, {'status': 'submitted', 'submitted_at': NOW})
    """
    plan = Plan()
    current = dict(states)
    for change in moves:
        if isinstance(change, Release):
            _plan_release(plan, current, change)
            continue
        if isinstance(change, Retry):
            job_id, to, fields = change.job_id, PENDING, change.fields
        else:
            job_id, to, fields, detail = change
        state = current[job_id]
        if to not in ALLOWED[state.status] and not (
            isinstance(change, Retry) and state.status is PENDING
        ):
            allowed = sorted(s.value for s in ALLOWED[state.status])
            raise InvalidTransition(job_id, state.status.value, to.value, allowed)
        check_fields(job_id, fields)
        before, columns = plan.updates.get(job_id, (state.status, {}))
        if isinstance(change, Retry) and state.status is PENDING:
            # tried again as it is: the same prompt_id, posted again
            columns["retries"] = state.retries + 1
        else:
            columns.update(_automatic_fields(state, to))
        if isinstance(change, Retry) and change.error is not None:
            columns["error"] = change.error
        columns.update(fields)
        columns["status"] = to.value
        plan.updates[job_id] = (before, columns)
        event = dict(fields)
        if to is PENDING and state.prompt_id is not None and state.status is not PENDING:
            event.setdefault("previous_prompt_id", state.prompt_id)
        if isinstance(change, Retry):
            event.update(event="retry", reason=change.reason, retries=columns["retries"])
            if change.error is not None:
                event["error"] = change.error
        else:
            event.update(detail or {})
        plan.events.append((job_id, state.status, to, event))
        current[job_id] = JobState(
            to,
            int(columns.get("retries", state.retries)),
            columns.get("prompt_id", state.prompt_id),
        )
    return plan


def _plan_release(plan: Plan, current: dict[int, JobState], release: Release) -> None:
    state = current[release.job_id]
    if state.status is not PENDING or state.prompt_id is None:
        raise InvalidTransition(release.job_id, state.status.value, "released", ["pending"])
    before, columns = plan.updates.get(release.job_id, (state.status, {}))
    columns.update(prompt_id=None, claimed_at=None, server=None, status=PENDING.value)
    plan.updates[release.job_id] = (before, columns)
    event = {"event": "release", "previous_prompt_id": state.prompt_id, "reason": release.reason}
    plan.events.append((release.job_id, PENDING, PENDING, event))
    current[release.job_id] = JobState(PENDING, state.retries, None)
