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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from .errors import InvalidInput, InvalidTransition

if TYPE_CHECKING:
    from .models import Job
    from .store import Store, Transaction

__all__ = [
    "ALLOWED",
    "TRANSITION_FIELDS",
    "JobStatus",
    "check_move",
    "transition",
    "transition_many",
    "transition_read",
    "transition_read_many",
    "transition_states_many",
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


def transition(
    store: Store,
    job_id: int,
    to: JobStatus | str,
    *,
    detail: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """Move a job to ``to`` and record the event; the only writer of ``jobs.status``.

    The job row and its ``job_events`` row are written in one transaction (joining the
    caller's ``store.transaction()`` if there is one). Timestamps are set for you:
    ``submitted_at``, ``started_at``, ``finished_at``; a move back to ``pending`` clears the
    prompt_id, claim and progress and adds one to ``retries``.

    Example::

        >>> job = transition(store, 7, "failed", error={"type": "OOM", "message": "..."})
        >>> job.status.is_terminal, job.error["type"]
        (True, 'OOM')

    Args:
        store: the open store.
        job_id: the job to move.
        to: the new status.
        detail: extra JSON kept in the event row only (secret-looking keys are dropped).
        **fields: job columns to set with the move: one of ``TRANSITION_FIELDS``.

    Returns:
        The job as stored after the move.

    Raises:
        JobNotInStore: no job ``job_id``.
        InvalidTransition: ``ALLOWED`` forbids the move; nothing changed.
        InvalidInput: an unknown status or field; nothing changed.
    """
    return transition_many(store, [(job_id, to, fields, detail)])[0]


def transition_many(
    store: Store,
    moves: Iterable[
        tuple[int, JobStatus | str]
        | tuple[int, JobStatus | str, Mapping[str, Any]]
        | tuple[int, JobStatus | str, Mapping[str, Any], Mapping[str, Any] | None]
    ],
    *,
    fetch: bool = True,
) -> list[Job]:
    """Apply many moves in ONE transaction: all of them, or none if any is illegal.

    Far cheaper per move than :func:`transition` (a handful of statements for the whole
    batch, not per job), for workers that move many jobs at once. Moves apply in order.

    Example::

        >>> jobs = transition_many(store, [(7, "running"), (8, "completed", {"progress_value": 20})])
        >>> [j.status.value for j in jobs]
        ['running', 'completed']

    Args:
        store: the open store.
        moves: ``(job_id, to)``, ``(job_id, to, fields)`` or ``(job_id, to, fields, detail)``.
        fetch: read the moved jobs back; ``False`` saves that query (a worker's batches)
            and returns ``[]``.

    Returns:
        The moved jobs as stored afterwards, one per move, in the order of ``moves``.

    Raises:
        JobNotInStore, InvalidTransition, InvalidInput: as :func:`transition`; nothing changed.
    """
    normal = [_normal_move(move) for move in moves]
    if not normal:
        return []
    with store.transaction() as tx:
        states = tx.job_states({job_id for job_id, *_ in normal})
        jobs = tx.apply_plan(plan_moves(states, normal), fetch=fetch)
    return [jobs[job_id] for job_id, *_ in normal] if fetch else []


def check_move(job: Job, to: JobStatus) -> None:
    """Raise ``InvalidTransition`` unless ``ALLOWED`` lets ``job`` move to ``to``; no I/O.

    Example::

        >>> check_move(store.job(7), JobStatus.COMPLETED)   # job 7 is pending
        Traceback (most recent call last):
        comfynb.errors.InvalidTransition: job 7 cannot move from 'pending' to 'completed'; ...
    """
    plan_moves({job.id: JobState(job.status, job.retries, job.prompt_id)}, [(job.id, to, {}, None)])


def transition_read(
    tx: Transaction,
    job: Job,
    to: JobStatus,
    *,
    detail: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Move ``job``, just read inside ``tx``, to ``to``: :func:`transition` minus two queries.

    For job functions that hold the job's current row in their own transaction (e.g.
    completing it with its candidates); it neither reads the job again nor returns it.

    Example::

        >>> with store.transaction() as tx:
        ...     job = tx.job(7)
        ...     transition_read(tx, job, JobStatus.COMPLETED, detail={"candidates": 4})
    """
    transition_read_many(tx, [(job, to, fields, detail)])


def transition_read_many(
    tx: Transaction,
    moves: Sequence[tuple[Job, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]],
) -> None:
    """:func:`transition_read` for many jobs at once: one UPDATE per shape, one INSERT.

    Example::

        >>> with store.transaction() as tx:
        ...     jobs = tx.jobs_by_id([7, 8])
        ...     transition_read_many(tx, [(j, JobStatus.COMPLETED, {}, None) for j in jobs.values()])
    """
    states = {job.id: JobState(job.status, job.retries, job.prompt_id) for job, *_ in moves}
    plan = plan_moves(states, [(job.id, to, fields, detail) for job, to, fields, detail in moves])
    tx.apply_plan(plan, fetch=False)


def _normal_move(
    move: tuple[Any, ...],
) -> tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]:
    if not 2 <= len(move) <= 4:
        raise InvalidInput(
            f"a move is (job_id, to[, fields[, detail]]), got {move!r}; "
            'e.g. (7, "running") or (7, "failed", {"error": {...}})'
        )
    job_id, to, *rest = move
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidInput(f"a job id is an int, got {job_id!r}; pass job.id")
    fields = rest[0] if rest else {}
    detail = rest[1] if len(rest) > 1 else None
    return job_id, JobStatus.parse(to), fields or {}, detail


def transition_states_many(
    tx: Transaction,
    states: Mapping[int, JobState],
    moves: Sequence[tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]],
) -> None:
    """Apply ``moves`` of jobs whose ``states`` were just read inside ``tx``, in order.

    For a worker's round: submitted, running, completed and failed moves of many jobs are
    checked together and written as one UPDATE per set of columns and one INSERT of events.

    Example::

        >>> with store.transaction() as tx:
        ...     states = tx.job_states([7, 8])
        ...     transition_states_many(tx, states, [(7, RUNNING, {}, None), (8, COMPLETED, {}, None)])
    """
    tx.apply_plan(plan_moves(states, moves), fetch=False)
