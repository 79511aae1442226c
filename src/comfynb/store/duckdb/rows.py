"""Rows to records: each table's columns, the select lists, and the lookups by key.

Every read of one row goes through here, so a ``Run``, ``Step``, ``Job`` or ``Candidate``
looks the same whichever call made it (a store method, a transaction, a claim).

Example::

    >>> job_row(fetch(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", [7])[0]).status
    <JobStatus.PENDING: 'pending'>

The lookups take ``fetch`` (run one statement, return its rows): the store's own, or a
transaction's, so they read what that transaction sees.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ...core.jsonio import from_json
from ...core.models import Candidate, Job, Run, Step
from ...core.status import JobStatus
from ...errors import CandidateNotFound, InvalidInput, JobNotInStore, RunNotFound, StepNotFound

#: run one SQL statement and return every row
Fetch = Callable[[str, Sequence[Any] | None], list[tuple[Any, ...]]]


def select_list(columns: Sequence[str], timestamps: Iterable[str], table: str = "") -> str:
    """A select list that returns timestamps as naive UTC (DuckDB needs pytz for tz-aware)."""
    prefix = f"{table}." if table else ""
    stamps = set(timestamps)
    return ", ".join(
        f'timezone(\'UTC\', {prefix}"{c}") AS "{c}"' if c in stamps else f'{prefix}"{c}"'
        for c in columns
    )


def utc(value: datetime | None) -> datetime | None:
    """A naive UTC time from DuckDB, made timezone-aware."""
    return None if value is None else value.replace(tzinfo=UTC)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


RUN_COLUMNS: Final = _names("id name notes metadata created_at")
STEP_COLUMNS: Final = _names("id run_id kind parent_candidate_id workflow params_spec created_at")
JOB_COLUMNS: Final = _names(
    "id run_id step_id parent_candidate_id prompt_id server status priority workflow "
    "params error retries max_retries progress_value progress_max created_at "
    "claimed_at submitted_at started_at finished_at metadata"
)
JOB_TIMES: Final = ("created_at", "claimed_at", "submitted_at", "started_at", "finished_at")
CANDIDATE_COLUMNS: Final = _names(
    "id job_id run_id step_id parent_candidate_id child_count node_id path sha256 "
    "width height bytes seed cfg steps sampler prompt params picked stars created_at"
)
RUN_SELECT: Final = select_list(RUN_COLUMNS, ["created_at"])
STEP_SELECT: Final = select_list(STEP_COLUMNS, ["created_at"])
JOB_SELECT: Final = select_list(JOB_COLUMNS, JOB_TIMES)
CANDIDATE_SELECT: Final = select_list(CANDIDATE_COLUMNS, ["created_at"])


def run_row(row: tuple[Any, ...]) -> Run:
    id_, name, notes, metadata, created_at = row
    return Run(id_, name, notes, from_json(metadata) or {}, utc(created_at))  # type: ignore[arg-type]


def step_row(row: tuple[Any, ...]) -> Step:
    id_, run_id, kind, parent, workflow, spec, created_at = row
    return Step(id_, run_id, kind, parent, from_json(workflow), from_json(spec), utc(created_at))  # type: ignore[arg-type]


def job_row(row: tuple[Any, ...]) -> Job:
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    for name in ("workflow", "params", "error", "metadata"):
        values[name] = _lenient_json(values[name], name)
    values["params"] = values["params"] or {}
    values["metadata"] = values["metadata"] or {}
    values["status"] = JobStatus(values["status"])
    for name in JOB_TIMES:
        values[name] = utc(values[name])
    return Job(**values)


def _lenient_json(text: str | None, name: str) -> Any:
    """A JSON column's value; text Python's JSON cannot read (DuckDB's JSON takes ``nan``,
    a trailing comma: written by hand) comes as is for ``workflow`` (the worker fails that
    job, ``jobs.submit.unsendable``) and under ``"unreadable"`` for the others, so one
    damaged row never stops a read of many."""
    try:
        return from_json(text)
    except ValueError:
        if name == "workflow":
            return text
        return {"unreadable": text}


def candidate_row(row: tuple[Any, ...]) -> Candidate:
    values = dict(zip(CANDIDATE_COLUMNS, row, strict=True))
    values["params"] = from_json(values["params"]) or {}
    values["created_at"] = utc(values["created_at"])
    return Candidate(**values)


# --------------------------------------------------------------------------- lookups by key


def check_id(value: object, what: str) -> int:
    """An id as an ``int``; ``InvalidInput`` for anything else (a bool, a str, a float)."""
    # numbers.Integral admits numpy integers: ids read from a DataFrame (df.id[0]) are np.int64
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{what} must be an int id, got {value!r}")
    return int(value)


def candidate_id(candidate: Candidate | int) -> int:
    """The id of a candidate given as a Candidate or an id (not looked up)."""
    if isinstance(candidate, Candidate):
        return candidate.id
    return check_id(candidate, "candidate")


def find_run_id(fetch: Fetch, run: Run | int | str) -> int:
    """The id of a run given as a Run, id or name; ``RunNotFound`` if there is none."""
    if isinstance(run, Run):
        run = run.id
    if isinstance(run, str):
        rows = fetch("SELECT id FROM runs WHERE name = ?", [run])
    else:
        rows = fetch("SELECT id FROM runs WHERE id = ?", [check_id(run, "run")])
    if not rows:
        raise RunNotFound(run, "store.runs() lists them; store.new_run(name) makes one")
    return int(rows[0][0])


def find_step_id(fetch: Fetch, step: Step | int) -> int:
    """The id of a step given as a Step or id; ``StepNotFound`` if there is none."""
    step_id = step.id if isinstance(step, Step) else check_id(step, "step")
    if not fetch("SELECT 1 FROM steps WHERE id = ?", [step_id]):
        raise StepNotFound(step_id, "store.new_step(...) makes one")
    return step_id


def read_step(fetch: Fetch, step_id: int) -> Step:
    """The step with this id; ``StepNotFound`` if there is none."""
    rows = fetch(f"SELECT {STEP_SELECT} FROM steps WHERE id = ?", [check_id(step_id, "step")])
    if not rows:
        raise StepNotFound(step_id, "store.new_step(...) makes one")
    return step_row(rows[0])


STEP_KINDS: Final = ("generate", "sweep", "refine")


def insert_step(
    fetch: Fetch,
    run_id: int,
    kind: str,
    workflow_json: str,
    params_spec_json: str | None,
    parent: Candidate | int | None,
) -> Step:
    """Write a step of run ``run_id`` (in the caller's transaction) and return it."""
    if kind not in STEP_KINDS:
        raise InvalidInput(f"a step kind is 'generate', 'sweep' or 'refine', got {kind!r}")
    parent_id = None if parent is None else read_candidate(fetch, parent).id
    rows = fetch(
        "INSERT INTO steps (run_id, kind, parent_candidate_id, workflow, params_spec) "
        f"VALUES (?, ?, ?, ?::JSON, ?::JSON) RETURNING {STEP_SELECT}",
        [run_id, kind, parent_id, workflow_json, params_spec_json],
    )
    return step_row(rows[0])


def read_job(fetch: Fetch, job_id: int) -> Job:
    """The job with this id; ``JobNotInStore`` if there is none."""
    rows = fetch(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", [check_id(job_id, "job")])
    if not rows:
        raise JobNotInStore(job_id, "store.jobs() lists them")
    return job_row(rows[0])


def read_jobs(fetch: Fetch, job_ids: Sequence[int]) -> dict[int, Job]:
    """The jobs with these ids, by id (missing ones are left out)."""
    if len(job_ids) == 1:
        rows = fetch(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", list(job_ids))
    else:
        rows = fetch(
            f"SELECT {JOB_SELECT} FROM jobs WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [list(job_ids)],
        )
    return {int(row[0]): job_row(row) for row in rows}


def read_candidate(fetch: Fetch, candidate: Candidate | int) -> Candidate:
    """The candidate with this id, as stored now; ``CandidateNotFound`` if there is none."""
    found = candidate_id(candidate)
    rows = fetch(f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE id = ?", [found])
    if not rows:
        raise CandidateNotFound(found, "store.candidates() lists them")
    return candidate_row(rows[0])
