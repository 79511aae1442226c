"""The job lifecycle: statuses, the one table of allowed moves, and the one writer of a status.

A job moves ``pending -> submitted -> running -> completed | failed | cancelled``. A fully
cached prompt may go from ``submitted`` straight to ``completed``; a job the server forgot
(a restart) goes back to ``pending`` and is counted as a retry. Nothing else writes
``jobs.status``: every change goes through :func:`transition` or :func:`transition_many`,
which update the job and insert its ``job_events`` row in the same transaction.

Example::

    >>> from comfynb.lifecycle import JobStatus, transition
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
from typing import TYPE_CHECKING, Any, Final

from ..errors import InvalidInput, InvalidTransition

if TYPE_CHECKING:
    pass

__all__ = [
    "ALLOWED",
    "NOW",
    "TRANSITION_FIELDS",
    "JobState",
    "JobStatus",
    "Plan",
    "check_fields",
    "plan_moves",
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


def plan_moves(
    states: Mapping[int, JobState],
    moves: Iterable[tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]],
) -> Plan:
    """Check a batch of moves against ``ALLOWED`` and return the writes; pure, no I/O.

    Moves apply in order, so one job may pass through several statuses in one batch.
    The first illegal move raises ``InvalidTransition`` and nothing is planned.

    Example::

        >>> plan = plan_moves({7: JobState(PENDING, 0, "a1")}, [(7, SUBMITTED, {}, None)])
        >>> plan.updates[7]
        (<JobStatus.PENDING: 'pending'>, {'status': 'submitted', 'submitted_at': NOW})
    """
    plan = Plan()
    current = dict(states)
    for job_id, to, fields, detail in moves:
        state = current[job_id]
        if to not in ALLOWED[state.status]:
            allowed = sorted(s.value for s in ALLOWED[state.status])
            raise InvalidTransition(job_id, state.status.value, to.value, allowed)
        check_fields(job_id, fields)
        before, columns = plan.updates.get(job_id, (state.status, {}))
        auto = _automatic_fields(state, to)
        columns.update(auto)
        columns.update(fields)
        columns["status"] = to.value
        plan.updates[job_id] = (before, columns)
        event = dict(fields)
        if to is PENDING and state.prompt_id is not None:
            event.setdefault("previous_prompt_id", state.prompt_id)
        event.update(detail or {})
        plan.events.append((job_id, state.status, to, event))
        current[job_id] = JobState(
            to,
            int(columns.get("retries", state.retries)),
            columns.get("prompt_id", state.prompt_id),
        )
    return plan
