"""The queue: jobs written in, claimed in a fair order, given back; a job's non-status columns.

Example::

    >>> added = store.add_jobs(workflows_json, run="portraits")   # comfynb.enqueue_many's half
    >>> [j.id for j in store.claim_next_jobs(2, server="http://127.0.0.1:8188")]
    [1, 2]

Order of claims: highest priority first; then the run claimed from least recently (fair
between runs); then the oldest job. Claims are atomic: two threads never claim the same job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC

from ...core.models import Candidate, Job, NewStep, Run, Step
from ...core.status import JobStatus
from ...core.urls import server_url
from ...errors import InvalidInput, StoreError
from ...workflows.check import check_int
from ..base import AddedJobs
from .connection import Connection
from .rows import (
    JOB_SELECT,
    find_run_id,
    insert_step,
    job_row,
    read_candidate,
    read_job,
    read_jobs,
    read_step,
)

__all__ = ["Queue"]


class Queue(Connection):
    """The queue's reads and writes of ``Store`` (a part of it; use ``Store``)."""

    def add_jobs(
        self,
        workflows_json: Sequence[str],
        *,
        run: Run | int | str,
        step: Step | NewStep | int | None = None,
        parent: Candidate | int | None = None,
        params_json: Sequence[str | None] | None = None,
        priority: int = 0,
        max_retries: int = 3,
        metadata_json: str | None = None,
    ) -> AddedJobs:
        """Write pending jobs in ONE transaction, ids ascending in the order given.

        The store half of ``comfynb.enqueue_many``, which checks the workflows and makes the
        JSON texts (secrets stripped): call that. The texts are written as given.

        Example::

            >>> added = store.add_jobs(['{"1": {"class_type": "EmptyImage", "inputs": {}}}'],
            ...                        run="portraits", params_json=['{"seed": 1}'])
            >>> added.ids, added.run_id
            ((1,), 1)

        Args:
            workflows_json: one API prompt per job, as JSON text.
            run: the run they belong to (a Run, id or name).
            step: the step they belong to; it must be a step of ``run``. Its parent
                candidate is theirs unless ``parent`` is given. A ``NewStep`` is created
                in the same transaction (``comfynb.sweep``, ``comfynb.refine``).
            parent: the candidate they refine.
            params_json: one JSON object per job (or None for ``{}``), or None for all.
            priority, max_retries, metadata_json: the same for every job.

        Returns:
            The ids the jobs got (in the order given), their creation times, and the run,
            step and parent ids; ``AddedJobs.jobs(...)`` makes the ``Job`` records.

        Raises:
            RunNotFound, StepNotFound, CandidateNotFound: an unknown reference.
            InvalidInput: a step of another run, lists of different lengths, a bad int.
        """
        count = len(workflows_json)
        if params_json is not None and len(params_json) != count:
            raise InvalidInput(
                f"params_json has {len(params_json)} entries for {count} workflows; "
                "pass one per workflow"
            )
        if not all(isinstance(text, str) for text in workflows_json):
            raise InvalidInput("workflows_json is a list of JSON texts, one per job")
        check_int(priority, "priority", -(2**31))
        check_int(max_retries, "max_retries", 0)
        with self._atomic():
            run_id = find_run_id(self._fetch, run)
            step_id, parent_id = None, None
            if isinstance(step, NewStep):
                step = insert_step(
                    self._fetch,
                    run_id,
                    step.kind,
                    step.workflow_json,
                    step.params_spec_json,
                    step.parent_candidate_id,
                )
            if step is not None:
                found = read_step(self._fetch, step.id if isinstance(step, Step) else step)
                if found.run_id != run_id:
                    raise InvalidInput(
                        f"step {found.id} belongs to run {found.run_id}, not run {run_id}; "
                        "pass that run or a step of this one"
                    )
                step_id, parent_id = found.id, found.parent_candidate_id
            if parent is not None:
                parent_id = read_candidate(self._fetch, parent).id
            shared = [run_id, step_id, parent_id, priority, max_retries, metadata_json]
            params = list(params_json) if params_json is not None else [None] * count
            if count == 1:
                rows = self._fetch(_INSERT_ONE, [*shared, workflows_json[0], params[0]])
            elif count:
                rows = self._fetch(
                    _INSERT_MANY, [*shared, self._new_job_ids(count), list(workflows_json), params]
                )
            else:
                rows = []
            if rows:  # each job's story starts with its creation: (none) -> pending
                self._fetch(_CREATED_EVENTS, [[int(id_) for id_, _ in rows]])
            self._shared.note(queue_changes=bool(rows))  # shown once committed
        created = {int(id_): at.replace(tzinfo=UTC) for id_, at in rows}
        ids = sorted(created)
        return AddedJobs(run_id, step_id, parent_id, tuple(ids), tuple(created[i] for i in ids))

    def _new_job_ids(self, count: int) -> list[int]:
        """``count`` job ids, ascending: given in the order the jobs were passed, whatever
        order DuckDB inserts the rows in (a large insert may run on several threads)."""
        rows = self._fetch("SELECT nextval('jobs_id_seq') FROM range(?)", [count])
        return sorted(int(row[0]) for row in rows)

    def claim_next_job(self, *, server: str | None = None) -> Job | None:
        """Claim the next pending job for ``server`` and give it a fresh prompt_id; or None.

        Highest priority first; then the run claimed from least recently (fair between
        runs); then the oldest job. Atomic: two threads never claim the same job.
        ``comfynb.select_next_job`` is the cell-friendly name for this.

        Example::

            >>> job = store.claim_next_job(server="http://127.0.0.1:8188")
            >>> job.status.value, job.prompt_id is not None
            ('pending', True)
        """
        server = _server_column(server)
        rows = self._write(
            "UPDATE jobs SET prompt_id = ?, server = coalesce(server, ?), claimed_at = now(), "
            "change_seq = nextval('changes_seq') "
            "WHERE id = (SELECT j.id FROM jobs j LEFT JOIN "
            "(SELECT run_id, max(claimed_at) AS last_claim FROM jobs GROUP BY run_id) r "
            "USING (run_id) WHERE j.status = 'pending' AND j.prompt_id IS NULL "
            "AND (?::VARCHAR IS NULL OR j.server IS NULL OR j.server = ?) "
            "ORDER BY j.priority DESC, r.last_claim ASC NULLS FIRST, j.id LIMIT 1) "
            f"RETURNING {JOB_SELECT}",
            [str(uuid.uuid4()), server, server, server],
        )
        return job_row(rows[0]) if rows else None

    def claim_next_jobs(self, n: int, *, server: str | None = None) -> list[Job]:
        """Claim up to ``n`` pending jobs at once, each with a fresh prompt_id; in claim order.

        The same order as ``n`` calls of :meth:`claim_next_job` would give when no job is
        finished in between: by priority, then round-robin between runs (each run's oldest
        job, then each run's second, ...), the least recently served run first. One UPDATE
        and one SELECT for the lot, for workers that keep many prompts in flight.

        Example::

            >>> [(j.run_id, j.id) for j in store.claim_next_jobs(4)]
            [(1, 1), (2, 5), (1, 2), (2, 6)]
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"n is how many jobs to claim, an int from 1; got {n!r}")
        server = _server_column(server)
        with self._atomic():
            picked = self._fetch(
                "WITH last AS (SELECT run_id, max(claimed_at) AS last_claim FROM jobs "
                "GROUP BY run_id) SELECT j.id FROM jobs j LEFT JOIN last l USING (run_id) "
                "WHERE j.status = 'pending' AND j.prompt_id IS NULL "
                "AND (?::VARCHAR IS NULL OR j.server IS NULL OR j.server = ?) "
                "ORDER BY j.priority DESC, "
                "row_number() OVER (PARTITION BY j.priority, j.run_id ORDER BY j.id), "
                "l.last_claim ASC NULLS FIRST, j.id LIMIT ?",
                [server, server, n],
            )
            ids = [int(row[0]) for row in picked]
            if not ids:
                return []
            self._fetch(
                # one microsecond apart, so claimed_at keeps the claim order that the
                # fairness between runs reads back (now() is the same for the whole batch)
                "UPDATE jobs SET prompt_id = m.prompt_id, server = coalesce(jobs.server, ?), "
                "claimed_at = now() + to_microseconds(m.turn), "
                "change_seq = nextval('changes_seq') FROM (SELECT unnest(?::BIGINT[]) "
                "AS id, unnest(?::VARCHAR[]) AS prompt_id, unnest(?::BIGINT[]) AS turn) m "
                "WHERE jobs.id = m.id",
                [server, ids, [str(uuid.uuid4()) for _ in ids], list(range(len(ids)))],
            )
            jobs = read_jobs(self._fetch, ids)
        return [jobs[i] for i in ids]

    def claimable(self, servers: Sequence[str] | None = None) -> int:
        """How many pending jobs wait to be claimed (by a worker serving ``servers``); no lock.

        Counts pending jobs without a prompt_id that are pinned to none of the servers or to one
        of ``servers`` (all of them when ``servers`` is None). Cheaper than a claim that finds
        nothing: an idle worker asks this before it claims.

        Example::

            >>> store.claimable(["http://127.0.0.1:8188"])
            3
        """
        rows = self._fetch(
            "SELECT count(*) FROM jobs WHERE status = 'pending' AND prompt_id IS NULL AND "
            "(?::VARCHAR[] IS NULL OR server IS NULL OR list_contains(?::VARCHAR[], server))",
            [None if servers is None else [_server_column(url) for url in servers]] * 2,
        )
        return int(rows[0][0])

    def record_intent(self, job_id: int, *, prompt_id: str, server: str | None = None) -> Job:
        """Record, before posting, the prompt_id a pending job will be posted with.

        Idempotent for the same prompt_id. After a crash, ``recover`` finds the job by it.

        Example::

            >>> store.record_intent(7, prompt_id="5f0c...", server="http://gpu:8188").prompt_id
            '5f0c...'

        Raises:
            JobNotInStore: no such job.
            StoreError: the job is not pending, or already has another prompt_id.
        """
        if not isinstance(prompt_id, str) or not prompt_id:
            raise InvalidInput(f"prompt_id must be a non-empty string, got {prompt_id!r}")
        with self._atomic():
            job = read_job(self._fetch, job_id)
            if job.status is not JobStatus.PENDING or job.prompt_id not in (None, prompt_id):
                raise StoreError(
                    f"job {job_id} is {job.status.value} with prompt_id {job.prompt_id!r}; "
                    f"only a pending job without one can take prompt_id {prompt_id!r}"
                )
            rows = self._fetch(
                "UPDATE jobs SET prompt_id = ?, server = coalesce(?, server), "
                "claimed_at = coalesce(claimed_at, now()), "
                f"change_seq = nextval('changes_seq') WHERE id = ? RETURNING {JOB_SELECT}",
                [prompt_id, _server_column(server), job_id],
            )
        return job_row(rows[0])


# the column lists are spelled out: tests/test_lifecycle.py reads them (no status here)
_INSERT_ONE = (
    "INSERT INTO jobs (run_id, step_id, parent_candidate_id, priority, max_retries, metadata, "
    "workflow, params) VALUES (?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?::JSON) "
    "RETURNING id, timezone('UTC', created_at)"
)
_CREATED_EVENTS = (
    "INSERT INTO job_events (job_id, from_status, to_status) "
    "SELECT unnest(?::BIGINT[]), NULL, 'pending'"
)
# one statement for the lot: lists bound as parameters and unnested (bench/enqueue.py)
_INSERT_MANY = (
    "INSERT INTO jobs (run_id, step_id, parent_candidate_id, priority, max_retries, metadata, "
    "id, workflow, params) SELECT ?, ?, ?, ?, ?, ?::JSON, unnest(?::BIGINT[]), "
    "unnest(?::VARCHAR[])::JSON, unnest(?::VARCHAR[])::JSON "
    "RETURNING id, timezone('UTC', created_at)"
)


def _server_column(server: str | None) -> str | None:
    """What ``jobs.server`` holds for ``server``: its one spelling (``core.urls``), or None."""
    if server is None:
        return None
    if not isinstance(server, str):
        raise InvalidInput(f"server must be a URL string or None, got {server!r}")
    return server_url(server)
