"""The one writer of ``jobs.status``: every move of a job goes through these functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..core.models import Job
    from . import Store, Transaction


from ..core.status import Change, JobState, JobStatus, Release, Retry, job_of, plan_moves

__all__ = [
    "check_move",
    "record_changes",
    "record_changes_in",
    "release_claims",
    "retry",
    "transition",
    "transition_many",
]


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


# --------------------------------------------------------------------------- moves and retries


def record_changes(store: Store, changes: Iterable[Change], *, fetch: bool = True) -> list[Job]:
    """Record moves and retries (``Move``, ``(job_id, to, fields, detail)``, ``Retry``) in ONE
    transaction, in order: what ``retry_or_fail`` and the job functions decide.

    Example::

        >>> change = retry_or_fail(store.job(7), reason="POST /prompt: ServerTimeout", error=err)
        >>> [job] = record_changes(store, [change])
        >>> job.retries, store.events(job=7)["detail"].iloc[-1]
        (1, '{"event":"retry","reason":"POST /prompt: ServerTimeout","retries":1,...}')

    Args:
        store: the open store.
        changes: what to record; a move's ``to`` is a ``JobStatus``.
        fetch: read the jobs back; ``False`` saves that query and returns ``[]``.

    Returns:
        The jobs as stored afterwards, one per change, in order.

    Raises:
        JobNotInStore, InvalidTransition, InvalidInput: as :func:`transition`; nothing changed.
    """
    changes = list(changes)
    if not changes:
        return []
    with store.transaction() as tx:
        states = tx.job_states({job_of(change) for change in changes})
        jobs = tx.apply_plan(plan_moves(states, changes), fetch=fetch)
    return [jobs[job_of(change)] for change in changes] if fetch else []


def retry(
    store: Store,
    job_id: int,
    *,
    reason: str,
    error: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """Count a failed attempt of a job and record it as a ``retry`` event (see ``Retry``).

    A pending job stays pending with its prompt_id; a submitted or running one goes back to
    pending. It does not check the budget: ``retry_or_fail`` decides whether to call it.

    Example::

        >>> job = retry(store, 7, reason="POST /prompt: ServerTimeout", error=err)
        >>> job.status.value, job.retries
        ('pending', 1)
    """
    return record_changes(store, [Retry(job_id, reason, error, fields)])[0]


def record_changes_in(
    tx: Transaction, states: Mapping[int, JobState], changes: Sequence[Change]
) -> None:
    """:func:`record_changes` inside ``tx``, from ``states`` just read (or kept) by the caller.

    For a worker's round: moves, retries and completions of many jobs are checked together and
    written as one UPDATE per set of columns and one INSERT of events.

    Example::

        >>> with store.transaction() as tx:
        ...     states = tx.job_states([7, 8])
        ...     record_changes_in(tx, states, [Retry(7, "POST /prompt: ServerTimeout"),
        ...                                    Move(8, JobStatus.RUNNING)])
    """
    tx.apply_plan(plan_moves(states, changes), fetch=False)


def release_claims(store: Store, job_ids: Iterable[int], *, reason: str) -> int:
    """Give claimed, never-submitted jobs back to the queue, each with a ``release`` event.

    Each pending job with a prompt_id loses it, its claim and its server (``Release``); jobs no
    longer pending, or not claimed, are left alone. For a worker that stops (or loses a
    server) holding jobs it claimed but did not post: another claim gives them a fresh
    prompt_id, so no server ever sees one prompt_id twice. Returns how many were released.

    Example::

        >>> release_claims(store, [7, 8], reason="the worker stopped")
        2
    """
    ids = sorted(set(job_ids))
    if not ids:
        return 0
    with store.transaction() as tx:
        states = tx.job_states(ids)
        claimed = [
            Release(i, reason)
            for i in ids
            if states[i].status is JobStatus.PENDING and states[i].prompt_id is not None
        ]
        if claimed:
            tx.apply_plan(plan_moves(states, claimed), fetch=False)
    return len(claimed)
