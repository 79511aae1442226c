"""What job functions write inside ``store.transaction()``: status moves, candidates, progress
and previews.

Example::

    >>> with store.transaction() as tx:
    ...     states = tx.job_states({7, 8})
    ...     record_changes_in(tx, states, changes)      # comfynb.store.lifecycle

:meth:`Transaction.apply_plan` holds the only SQL that writes ``jobs.status``, and only
``comfynb.store.lifecycle`` calls it (``tests/test_lifecycle.py`` reads every module to hold
both to that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Final

from ...core.jsonio import from_json, to_json
from ...core.models import MAX_PREVIEW_BYTES, Candidate, Job, NewCandidate, Run
from ...core.status import NOW, JobState, JobStatus, Plan
from ...errors import CandidateNotFound, InvalidInput, JobNotInStore, StaleStates
from ...workflows.facts import GenerationFacts, generation_facts
from .connection import FileState
from .rows import (
    CANDIDATE_SELECT,
    Fetch,
    candidate_row,
    check_id,
    find_run_id,
    read_job,
    read_jobs,
)

__all__ = ["Transaction"]


class Transaction:
    """The writes that lifecycle and job functions compose inside ``store.transaction()``.

    Example::

        >>> with store.transaction() as tx:
        ...     states = tx.job_states({7, 8})

    Args:
        fetch: runs one statement in the transaction (the store's cursor for this thread).
        shared: the file's counters, bumped when jobs may have become claimable or cancelled.
    """

    def __init__(self, fetch: Fetch, shared: FileState) -> None:
        self._statement = fetch
        self._shared = shared

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement in this transaction and return its rows."""
        return self._statement(sql, params)

    def job(self, job_id: int) -> Job:
        """The job as this transaction sees it (``JobNotInStore`` if missing)."""
        return read_job(self.fetch, job_id)

    def run_id(self, run: Run | int | str) -> int:
        """The id of a run given as a Run, id or name (``RunNotFound`` if missing)."""
        return find_run_id(self.fetch, run)

    def candidates_of(self, job_id: int) -> list[Candidate]:
        """A job's candidates, oldest first."""
        rows = self.fetch(
            f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE job_id = ? ORDER BY id", [job_id]
        )
        return [candidate_row(row) for row in rows]

    def job_states(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        """Status, retries and prompt_id of each job; ``JobNotInStore`` names a missing one."""
        ids = sorted({check_id(i, "job") for i in job_ids})
        columns = "SELECT id, status, retries, prompt_id FROM jobs WHERE"
        if len(ids) == 1:  # a key lookup costs half of the IN (unnest) form
            rows = self.fetch(f"{columns} id = ?", ids)
        else:
            rows = self.fetch(f"{columns} id IN (SELECT unnest(?::BIGINT[]))", [ids])
        states = {int(r[0]): JobState(JobStatus(r[1]), int(r[2]), r[3]) for r in rows}
        missing = [i for i in ids if i not in states]
        if missing:
            raise JobNotInStore(missing[0], "store.jobs() lists them")
        return states

    def jobs_by_id(self, job_ids: Sequence[int]) -> dict[int, Job]:
        """The jobs with these ids, as this transaction sees them (missing ones are left out)."""
        return read_jobs(self.fetch, job_ids)

    def apply_plan(self, plan: Plan, *, fetch: bool = True) -> dict[int, Job]:
        """Write a checked plan from ``comfynb.store.lifecycle``: the only SQL that sets a status.

        Call it only through ``lifecycle.transition``/``transition_many``. One UPDATE
        (whatever columns each job sets), one INSERT of all events, one SELECT back.

        Raises:
            StaleStates: a job's status is no longer the one the plan was made from.
        """
        groups: dict[tuple[tuple[str, str], ...], list[tuple[int, JobStatus, dict[str, Any]]]]
        groups = {}
        for job_id, (before, columns) in plan.updates.items():
            shape = tuple(sorted((name, _kind(value)) for name, value in columns.items()))
            groups.setdefault(shape, []).append((job_id, before, columns))
        if len(groups) == 1:
            [(shape, members)] = groups.items()
            self._update_group(shape, members)
        elif groups:
            self._update_merged([m for members in groups.values() for m in members])
        self._insert_events(plan.events)
        self._drop_previews([job_id for job_id, _, to, _ in plan.events if to not in _UNDER_WAY])
        # counted only when a job may have become claimable: back to pending from elsewhere,
        # or a claim given back; a retry of a claimed pending job keeps its claim (it is
        # posted again), so it costs the worker no claim query
        self._shared.note(
            queue_changes=any(
                to is JobStatus.PENDING
                and (before is not JobStatus.PENDING or detail.get("event") == "release")
                for _, before, to, detail in plan.events
            ),
            cancellations=any(to is JobStatus.CANCELLED for _, _, to, _ in plan.events),
        )
        if not fetch:
            return {}
        # a separate SELECT is cheaper here than UPDATE ... RETURNING (measured: 1.3 vs 2 ms)
        return self.jobs_by_id(list(plan.updates))

    def _update_group(
        self,
        shape: tuple[tuple[str, str], ...],
        members: list[tuple[int, JobStatus, dict[str, Any]]],
    ) -> None:
        sets, selects, args = _set_clauses(shape, members)
        if len(members) == 1:
            job_id, before, _ = members[0]
            rows = self.fetch(
                f"UPDATE jobs SET {', '.join(sets)}, change_seq = nextval('changes_seq') "
                "WHERE id = ? AND status = ?",
                [*(a[0] for a in args), job_id, before.value],
            )
        else:
            rows = self.fetch(
                f"UPDATE jobs SET {', '.join(sets)}, change_seq = nextval('changes_seq') "
                f"FROM (SELECT {', '.join(selects)}) AS m "
                "WHERE jobs.id = m.id AND jobs.status = m.expected",
                [[m[0] for m in members], [m[1].value for m in members], *args],
            )
        _check_updated(rows, members)

    def _update_merged(self, members: list[tuple[int, JobStatus, dict[str, Any]]]) -> None:
        """Jobs that set different columns, in ONE UPDATE: per column, a mode says for each
        job whether to keep it, set it to now(), to NULL, or to a value."""
        names = sorted({name for _, _, columns in members for name in columns})
        sets: list[str] = []
        selects = ["unnest(?::BIGINT[]) AS id", "unnest(?::VARCHAR[]) AS expected"]
        args: list[list[Any]] = [[m[0] for m in members], [m[1].value for m in members]]
        for name in names:
            kinds = [_kind(m[2][name]) if name in m[2] else "keep" for m in members]
            cast = "::JSON" if name in ("error", "metadata") else ""
            whens = " WHEN 1 THEN now()" if "now" in kinds else ""
            whens += " WHEN 2 THEN NULL" if "null" in kinds else ""
            if "value" in kinds:
                whens += f" WHEN 3 THEN m.{name}{cast}"
                selects.append(f"unnest(?::{_COLUMN_TYPES[name]}[]) AS {name}")
                args.append(
                    [
                        _param_value(name, m[2][name]) if kind == "value" else None
                        for m, kind in zip(members, kinds, strict=True)
                    ]
                )
            sets.append(f"{name} = CASE m.{name}__mode{whens} ELSE jobs.{name} END")
            selects.append(f"unnest(?::UTINYINT[]) AS {name}__mode")
            args.append([_MODES[kind] for kind in kinds])
        rows = self.fetch(
            f"UPDATE jobs SET {', '.join(sets)}, change_seq = nextval('changes_seq') "
            f"FROM (SELECT {', '.join(selects)}) AS m "
            "WHERE jobs.id = m.id AND jobs.status = m.expected",
            args,
        )
        _check_updated(rows, members)

    def _insert_events(
        self, events: Sequence[tuple[int, JobStatus, JobStatus, dict[str, Any]]]
    ) -> None:
        columns = "INSERT INTO job_events (job_id, from_status, to_status, detail)"
        details = [to_json(e[3], "detail") if e[3] else None for e in events]
        if len(events) == 1:
            job_id, before, to, _ = events[0]
            self.fetch(
                f"{columns} VALUES (?, ?, ?, ?::JSON)", [job_id, before.value, to.value, details[0]]
            )
            return
        self.fetch(
            f"{columns} SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[])::JSON",
            [
                [e[0] for e in events],
                [e[1].value for e in events],
                [e[2].value for e in events],
                details,
            ],
        )

    def insert_candidates_many(self, pairs: Sequence[tuple[Job, NewCandidate]]) -> list[Candidate]:
        """Insert one candidate row per (job, image), in ONE statement; returns them in order.

        Raises:
            InvalidInput: a path outside the output folder, or a number its column cannot
                hold (checked before the INSERT: nothing is written).
        """
        for job, image in pairs:
            _check_relative(image.path)
            _check_numbers(job, image)
        if not pairs:
            return []
        rows = [(*_job_keys(job), *_candidate_values(job, image)) for job, image in pairs]
        columns = (*_JOB_KEY_COLUMNS, *_NEW_CANDIDATE_COLUMNS)
        into = f"INSERT INTO candidates ({', '.join(name for name, _ in columns)})"
        back = "RETURNING id, timezone('UTC', created_at)"
        if len(rows) <= _VALUES_ROWS:
            # a job's one or two images: a VALUES row each costs ~0.5 ms less than the unnest
            # form (1.0 against 1.4-2.2 ms at one row; equal at four, then the unnest wins)
            one = "(" + ", ".join("?::JSON" if n == "params" else "?" for n, _ in columns) + ")"
            returned = self.fetch(
                f"{into} VALUES {', '.join([one] * len(rows))} {back}",
                [value for row in rows for value in row],
            )
        else:
            unnests = ", ".join(
                f"unnest(?::{kind}[])" + ("::JSON" if name == "params" else "")
                for name, kind in columns
            )
            returned = self.fetch(
                f"{into} SELECT {unnests} {back}",
                [[row[i] for row in rows] for i in range(len(columns))],
            )
        # built here rather than read back: a SELECT would cost another ~1 ms per job
        names = [name for name, _ in columns]
        made = []
        for (id_, created_at), row in zip(sorted(returned), rows, strict=True):
            values = dict(zip(names, row, strict=True))
            values["params"] = from_json(values["params"]) or {}
            made.append(
                Candidate(
                    **values,
                    id=int(id_),
                    child_count=0,
                    picked=False,
                    stars=None,
                    created_at=created_at.replace(tzinfo=UTC),
                )
            )
        return made

    def set_progress(self, progress: Mapping[int, tuple[int, int]]) -> None:
        """Store ``{job_id: (value, max)}`` for jobs still on a server, in one statement.

        Jobs that ended meanwhile are left alone (a late tick never overwrites the end).

        Example::

            >>> with store.transaction() as tx:
            ...     tx.set_progress({7: (12, 20), 8: (3, 20)})
        """
        if not progress:
            return
        self.fetch(
            "UPDATE jobs SET progress_value = m.v, progress_max = m.x, "
            "change_seq = nextval('changes_seq') FROM (SELECT "
            "unnest(?::BIGINT[]) AS id, unnest(?::INTEGER[]) AS v, unnest(?::INTEGER[]) AS x) m "
            "WHERE jobs.id = m.id AND jobs.status IN ('submitted', 'running')",
            [list(progress), [v for v, _ in progress.values()], [x for _, x in progress.values()]],
        )

    def set_previews(self, previews: Mapping[int, tuple[str, bytes]]) -> None:
        """Keep ``{job_id: (mime, image bytes)}`` as each job's latest preview, in one statement.

        A job keeps ONE preview (a new one replaces it, with a higher ``seq``); jobs that are
        no longer submitted or running are left out, as is an image over
        ``MAX_PREVIEW_BYTES``. The job's settling move removes its preview (``apply_plan``).

        Example::

            >>> with store.transaction() as tx:
            ...     tx.set_previews({7: ("image/jpeg", jpeg_bytes)})
        """
        kept = {
            job_id: (mime, image)
            for job_id, (mime, image) in previews.items()
            if 0 < len(image) <= MAX_PREVIEW_BYTES
        }
        if not kept:
            return
        self._shared.previews = True
        self.fetch(
            'INSERT OR REPLACE INTO job_previews (job_id, seq, mime, image, "at") SELECT m.id, '
            "nextval('job_previews_seq'), m.mime, m.image, now() FROM (SELECT "
            "unnest(?::BIGINT[]) AS id, unnest(?::VARCHAR[]) AS mime, unnest(?::BLOB[]) AS image"
            ") m JOIN jobs ON jobs.id = m.id WHERE jobs.status IN ('submitted', 'running')",
            [list(kept), [m for m, _ in kept.values()], [i for _, i in kept.values()]],
        )

    def _drop_previews(self, job_ids: Sequence[int]) -> None:
        """Remove the previews of jobs that settled (none to remove: no statement)."""
        if not job_ids:
            return
        shared = self._shared
        if shared.previews is None:  # first settle in this process: does the file hold any?
            shared.previews = bool(self.fetch("SELECT EXISTS (SELECT 1 FROM job_previews)")[0][0])
        if shared.previews:
            self.fetch(
                "DELETE FROM job_previews WHERE job_id IN (SELECT unnest(?::BIGINT[]))",
                [sorted(set(job_ids))],
            )

    def add_child_counts(self, counts: Mapping[int, int]) -> None:
        """Add to several candidates' ``child_count`` in one statement (``{id: n}``)."""
        if not counts:
            return
        if len(counts) == 1:
            [(candidate_id, n)] = counts.items()
            self.add_child_count(candidate_id, n)
            return
        rows = self.fetch(
            "UPDATE candidates SET child_count = child_count + m.n, "
            "change_seq = nextval('changes_seq') FROM (SELECT "
            "unnest(?::BIGINT[]) AS id, unnest(?::INTEGER[]) AS n) m WHERE candidates.id = m.id",
            [list(counts), list(counts.values())],
        )
        if rows[0][0] != len(counts):
            found = {
                r[0]
                for r in self.fetch(
                    "SELECT id FROM candidates WHERE id IN (SELECT unnest(?::BIGINT[]))",
                    [list(counts)],
                )
            }
            missing = sorted(set(counts) - found)
            raise CandidateNotFound(missing[0] if missing else None, "its parent was deleted")

    def add_child_count(self, candidate_id: int, n: int) -> None:
        """Add ``n`` to a candidate's ``child_count`` (``CandidateNotFound`` if missing)."""
        rows = self.fetch(
            "UPDATE candidates SET child_count = child_count + ?, "
            "change_seq = nextval('changes_seq') WHERE id = ?",
            [n, candidate_id],
        )
        if not rows or rows[0][0] == 0:
            raise CandidateNotFound(candidate_id, "its parent was deleted")


#: The statuses in which a job keeps its preview; any other move removes it.
_UNDER_WAY: Final = (JobStatus.SUBMITTED, JobStatus.RUNNING)

_COLUMN_TYPES: Final = {
    "status": "VARCHAR",
    "prompt_id": "VARCHAR",
    "server": "VARCHAR",
    "error": "VARCHAR",
    "metadata": "VARCHAR",
    "retries": "INTEGER",
    "progress_value": "INTEGER",
    "progress_max": "INTEGER",
}


def _set_clauses(
    shape: tuple[tuple[str, str], ...], members: list[tuple[int, JobStatus, dict[str, Any]]]
) -> tuple[list[str], list[str], list[list[Any]]]:
    """SET clauses for one group of updates; a single job binds values, many bind lists.

    Returns (SET clauses, unnest columns for the many-form, one list of values per bound column).
    """
    single = len(members) == 1
    sets: list[str] = []
    selects = ["unnest(?::BIGINT[]) AS id", "unnest(?::VARCHAR[]) AS expected"]
    args: list[list[Any]] = []
    for name, kind in shape:
        if kind == "now":
            sets.append(f"{name} = now()")
        elif kind == "null":
            sets.append(f"{name} = NULL")
        else:
            cast = "::JSON" if name in ("error", "metadata") else ""
            sets.append(f"{name} = ?{cast}" if single else f"{name} = m.{name}{cast}")
            selects.append(f"unnest(?::{_COLUMN_TYPES[name]}[]) AS {name}")
            args.append([_param_value(name, m[2][name]) for m in members])
    return sets, selects, args


#: Up to this many candidates are inserted as VALUES rows, more with ``unnest`` of lists.
_VALUES_ROWS: Final = 3

_JOB_KEY_COLUMNS: Final = (
    ("job_id", "BIGINT"),
    ("run_id", "BIGINT"),
    ("step_id", "BIGINT"),
    ("parent_candidate_id", "BIGINT"),
)


def _job_keys(job: Job) -> tuple[int, int, int | None, int | None]:
    return job.id, job.run_id, job.step_id, job.parent_candidate_id


_NEW_CANDIDATE_COLUMNS: Final = (
    ("node_id", "VARCHAR"),
    ("path", "VARCHAR"),
    ("sha256", "VARCHAR"),
    ("width", "INTEGER"),
    ("height", "INTEGER"),
    ("bytes", "BIGINT"),
    ("seed", "UBIGINT"),
    ("cfg", "DOUBLE"),
    ("steps", "INTEGER"),
    ("sampler", "VARCHAR"),
    ("prompt", "VARCHAR"),
    ("params", "VARCHAR"),
)


def _candidate_values(job: Job, image: NewCandidate) -> tuple[Any, ...]:
    """One image's values in ``_NEW_CANDIDATE_COLUMNS`` order.

    Seed, cfg, steps, sampler and prompt are read from the prompt that ran (the job's
    workflow, upstream of the node that saved the image: ``workflows.facts``), never from a
    label; an image's own ``seed``/``prompt`` (given by a caller who knows better) win.
    """
    params = image.params if image.params is not None else job.params
    facts = _facts(job, image.node_id)
    seed = image.seed if image.seed is not None else facts.seed
    return (
        image.node_id,
        image.path,
        image.sha256,
        image.width,
        image.height,
        image.bytes,
        seed if _fits(seed, "seed") else None,
        _finite(facts.cfg),
        facts.steps if _fits(facts.steps, "height") else None,  # an INTEGER too
        facts.sampler,
        image.prompt if image.prompt is not None else facts.prompt,
        to_json(params, "params"),
    )


def _facts(job: Job, node_id: str) -> GenerationFacts:
    workflow = job.workflow
    if not isinstance(workflow, Mapping):  # a stored text JSON could not read
        return GenerationFacts()
    return generation_facts(workflow, node_id)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


_MODES: Final = {"keep": 0, "now": 1, "null": 2, "value": 3}


def _check_updated(rows: list[tuple[Any, ...]], members: Sequence[tuple[int, Any, Any]]) -> None:
    if rows[0][0] != len(members):
        # a job's status moved since the plan was made (a caller that planned from states it
        # keeps itself, not read in this transaction); the transaction must be rolled back
        raise StaleStates(
            "a job changed status while a transition was being written; nothing was "
            "changed, read the jobs again and retry"
        )


def _kind(value: object) -> str:
    if value is NOW:
        return "now"
    if value is None:
        return "null"
    return "value"


def _param_value(name: str, value: object) -> object:
    if name in ("error", "metadata"):
        return to_json(value, name)
    return value


def _check_relative(path: str) -> None:
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise InvalidInput(
            f"a candidate path is relative to the output folder and stays inside it, got "
            f"{path!r}; e.g. 'portraits/cnb_00001_.png'"
        )


#: What the candidates' integer columns hold: (low, high) inclusive.
_RANGES: Final = {
    "seed": (0, 2**64 - 1),  # UBIGINT
    "width": (-(2**31), 2**31 - 1),  # INTEGER
    "height": (-(2**31), 2**31 - 1),
    "bytes": (-(2**63), 2**63 - 1),  # BIGINT
}


def _fits(value: object, column: str) -> bool:
    low, high = _RANGES[column]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_numbers(job: Job, image: NewCandidate) -> None:
    """Each number of a candidate row fits its column (a job written by an older version or
    by hand may hold a seed of 2**70): a clear error naming it, before the INSERT."""
    for column in _RANGES:
        value = getattr(image, column)
        if value is not None and not _fits(value, column):
            low, high = _RANGES[column]
            raise InvalidInput(
                f"a candidate of job {job.id} has {column}={value!r}; the store holds an int "
                f"from {low} to {high} there (or None)"
            )
