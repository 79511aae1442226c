"""One row at a time: runs, steps, a job, a candidate, and the notebook's choices (pick, star).

Example::

    >>> run = store.new_run("portraits")
    >>> store.pick(12).picked
    (True, [31, 17, 4])

These return the frozen dataclasses of ``comfynb.core.models``; the plural reads that return
DataFrames are in ``frames``, and the claims in ``queue``. The servers' ``/object_info``
copies (``object_info``, ``save_object_info``) are here too: one row per server.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Iterable, Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

from ...core.jsonio import to_json
from ...core.models import Candidate, Job, Preview, Run, Step
from ...core.urls import server_url
from ...errors import CandidateNotFound, InvalidInput, ObjectInfoNotFound
from .connection import Connection
from .rows import (
    CANDIDATE_SELECT,
    JOB_SELECT,
    RUN_SELECT,
    STEP_KINDS,
    candidate_id,
    candidate_row,
    check_id,
    find_run_id,
    insert_step,
    job_row,
    read_candidate,
    read_job,
    read_step,
    run_row,
)

__all__ = ["Records"]


class Records(Connection):
    """The single-row reads and writes of ``Store`` (a part of it; use ``Store``)."""

    # ----------------------------------------------------------------- runs and steps

    def new_run(
        self, name: str, notes: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Run:
        """Create a run, or return the run already called ``name`` (unchanged).

        Example::

            >>> store.new_run("portraits", notes="cfg sweep").id
            1
            >>> store.new_run("portraits").id     # same name, same run
            1

        Raises:
            InvalidInput: ``name`` is not a non-empty string, or ``metadata`` is not JSON.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"a run name is a non-empty string, got {name!r}")
        if notes is not None and not isinstance(notes, str):
            raise InvalidInput(f"notes must be a string or None, got {notes!r}")
        meta = to_json(dict(metadata or {}), "metadata")
        with self._atomic():
            rows = self._fetch(f"SELECT {RUN_SELECT} FROM runs WHERE name = ?", [name])
            if not rows:
                rows = self._fetch(
                    f"INSERT INTO runs (name, notes, metadata) VALUES (?, ?, ?::JSON) "
                    f"RETURNING {RUN_SELECT}",
                    [name, notes, meta],
                )
        return run_row(rows[0])

    def run(self, id_or_name: int | str) -> Run:
        """Return the run with this id or name.

        Example::

            >>> store.run("portraits").id
            1

        Raises:
            RunNotFound: no such run.
        """
        run_id = find_run_id(self._fetch, id_or_name)
        return run_row(self._fetch(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id])[0])

    def new_step(
        self,
        run: Run | int | str,
        kind: str,
        workflow: Mapping[str, Any],
        params_spec: Mapping[str, Any] | None = None,
        parent_candidate: Candidate | int | None = None,
    ) -> Step:
        """Add a step to a run: ``generate``, ``sweep``, or ``refine`` from a candidate.

        Example::

            >>> step = store.new_step("portraits", "sweep", workflow, params_spec={"cfg": [4, 7]})
            >>> step.kind, step.run_id
            ('sweep', 1)

        Raises:
            RunNotFound, CandidateNotFound: an unknown run or parent candidate.
            WorkflowError: ``workflow`` is not a ComfyUI API prompt (the message names the node).
            InvalidInput: an unknown ``kind``.
        """
        from ...workflows.check import check_workflow

        if kind not in STEP_KINDS:
            raise InvalidInput(f"a step kind is 'generate', 'sweep' or 'refine', got {kind!r}")
        check_workflow(workflow)
        flow = to_json(dict(workflow), "workflow")
        spec = to_json(None if params_spec is None else dict(params_spec), "params_spec")
        assert flow is not None
        with self._atomic():
            run_id = find_run_id(self._fetch, run)
            return insert_step(self._fetch, run_id, kind, flow, spec, parent_candidate)

    def step(self, step_id: int) -> Step:
        """Return the step with this id.

        Example::

            >>> store.step(1).kind
            'sweep'

        Raises:
            StepNotFound: no such step.
        """
        return read_step(self._fetch, step_id)

    # ----------------------------------------------------------------- jobs

    def job(self, job_id: int) -> Job:
        """Return the job with this id, as stored now.

        Example::

            >>> store.job(7).status
            <JobStatus.PENDING: 'pending'>

        Raises:
            JobNotInStore: no such job.
        """
        return read_job(self._fetch, job_id)

    def unsettled_jobs(self) -> list[Job]:
        """Jobs caught between states: submitted, running, or pending with a prompt_id.

        A pending job with a prompt_id was claimed and may have been posted; ``recover``
        asks the server about each of these after a crash.

        Example::

            >>> [(j.id, j.status.value) for j in store.unsettled_jobs()]
            [(7, 'pending'), (8, 'running')]
        """
        rows = self._fetch(
            f"SELECT {JOB_SELECT} FROM jobs WHERE status IN ('submitted', 'running') "
            "OR (status = 'pending' AND prompt_id IS NOT NULL) ORDER BY id"
        )
        return [job_row(row) for row in rows]

    def status_counts(
        self, *, run: Run | int | str | None = None, job_ids: Iterable[int] | None = None
    ) -> dict[str, int]:
        """How many jobs are in each status: all, a run's, or these ids'; one cheap query.

        Example::

            >>> store.status_counts(run="portraits")
            {'completed': 18, 'running': 2}

        Raises:
            RunNotFound: an unknown run.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(find_run_id(self._fetch, run))
        if job_ids is not None:
            where.append("id IN (SELECT unnest(?::BIGINT[]))")
            params.append(sorted({check_id(i, "job") for i in job_ids}))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._fetch(f"SELECT status, count(*) FROM jobs {clause} GROUP BY status", params)
        return {str(status): int(n) for status, n in rows}

    def previews(self, run: Run | int | str | None = None, after: int = 0) -> list[Preview]:
        """The latest sampler preview of each running job (of ``run``) newer than ``after``.

        A worker keeps one preview per running job (written with its progress, at most every
        half second) and removes it when the job ends. ``seq`` grows on every write: pass the
        highest ``seq`` seen as ``after`` to get only what changed since (the JobTable does).

        Example::

            >>> shown = store.previews(run="portraits")
            >>> [(p.job_id, p.mime, len(p.image)) for p in shown]
            [(12, 'image/jpeg', 18342)]
            >>> store.previews(run="portraits", after=max(p.seq for p in shown))
            []

        Raises:
            RunNotFound: an unknown run.
            InvalidInput: ``after`` is not a whole number >= 0.
        """
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise InvalidInput(
                f"after is the highest seq already seen (a whole number >= 0, e.g. 0); got "
                f"{after!r}"
            )
        where, params = "p.seq > ?", [after]
        if run is not None:
            where += " AND j.run_id = ?"
            params.append(find_run_id(self._fetch, run))
        rows = self._fetch(
            'SELECT p.job_id, p.seq, p.mime, p.image, p."at" FROM job_previews p JOIN jobs j '
            f"ON j.id = p.job_id WHERE {where} ORDER BY p.seq",
            params,
        )
        return [
            Preview(int(job_id), int(seq), str(mime), bytes(image), at.astimezone(UTC))
            for job_id, seq, mime, image, at in rows
        ]

    # ----------------------------------------------------------------- candidates

    def candidate(self, candidate_id: int) -> Candidate:
        """Return the image candidate with this id.

        Example::

            >>> store.candidate(12).path
            'portraits/cnb_00012_.png'

        Raises:
            CandidateNotFound: no such candidate.
        """
        return read_candidate(self._fetch, check_id(candidate_id, "candidate"))

    def image_path(self, candidate: Candidate | int) -> Path:
        """The absolute path of a candidate's image file under ``output_dir``.

        Example::

            >>> store.image_path(12)
            PosixPath('/home/me/outputs/portraits/cnb_00012_.png')

        Raises:
            CandidateNotFound: no such candidate.
        """
        found = candidate if isinstance(candidate, Candidate) else self.candidate(candidate)
        return self.output_dir / found.path

    def candidates_by_sha256(self, prefix: str) -> list[Candidate]:
        """The candidates whose image's sha256 starts with ``prefix`` (hex), oldest first.

        The worker's way to the file behind a workflow input named by content
        (``comfynb/<sha256 prefix>.png``, ``jobs.inputs``), to upload it before posting.

        Example::

            >>> [c.id for c in store.candidates_by_sha256("3f2a9c0d1e2f3a4b")]
            [12]
        """
        if not isinstance(prefix, str) or not prefix or prefix.strip("0123456789abcdef"):
            raise InvalidInput(f"a sha256 prefix is lowercase hex, got {prefix!r}")
        rows = self._fetch(
            f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE starts_with(sha256, ?) ORDER BY id",
            [prefix],
        )
        return [candidate_row(row) for row in rows]

    def pick(self, candidate: Candidate | int, picked: bool = True) -> Candidate:
        """Mark a candidate as picked (or not, with ``picked=False``).

        Example::

            >>> store.pick(12).picked
            True

        Raises:
            CandidateNotFound: no such candidate; nothing changed.
        """
        if not isinstance(picked, bool):
            raise InvalidInput(f"picked is True or False, got {picked!r}")
        return self._set_candidate(candidate, "picked", picked)

    def star(self, candidate: Candidate | int, stars: int | None) -> Candidate:
        """Rate a candidate from 0 to 5 stars (``None`` clears the rating).

        Example::

            >>> store.star(12, 4).stars
            4

        Raises:
            InvalidInput: ``stars`` is not 0..5; nothing changed.
            CandidateNotFound: no such candidate; nothing changed.
        """
        if stars is not None and (  # numbers.Integral: numpy ints, e.g. from a DataFrame
            isinstance(stars, bool)
            or not isinstance(stars, numbers.Integral)
            or not 0 <= stars <= 5
        ):
            raise InvalidInput(
                f"stars is an int from 0 to 5 (or None to clear), got {stars!r}; "
                "e.g. store.star(12, 4)"
            )
        return self._set_candidate(candidate, "stars", None if stars is None else int(stars))

    def _set_candidate(self, candidate: Candidate | int, column: str, value: object) -> Candidate:
        found = candidate_id(candidate)
        rows = self._write(
            f"UPDATE candidates SET {column} = ?, change_seq = nextval('changes_seq') "
            f"WHERE id = ? RETURNING {CANDIDATE_SELECT}",
            [value, found],
        )
        if not rows:
            raise CandidateNotFound(found, "store.candidates() lists them")
        return candidate_row(rows[0])

    # ----------------------------------------------------------------- /object_info copies

    def object_info(self, server: str | None = None) -> dict[str, Any]:
        """The store's copy of a server's ``/object_info``; the newest of any server's if
        ``server`` is None. A worker saves one when a server first answers, so UI workflows
        convert offline: ``Workflow.load(path, object_info=store)``.

        Example::

            >>> info = store.object_info("http://127.0.0.1:8188")
            >>> info["KSampler"]["input"]["required"]["steps"][0]
            'INT'
            >>> wf = comfynb.Workflow.load("default.json", object_info=store)   # offline

        Raises:
            ObjectInfoNotFound: no copy (of that server); the message says how to get one.
            InvalidInput: ``server`` is not a server URL.
        """
        where, params = "", []
        if server is not None:
            where, params = "WHERE server = ?", [server_url(server)]
        rows = self._fetch(
            f"SELECT info FROM object_info {where} ORDER BY fetched_at DESC LIMIT 1", params
        )
        if not rows:
            stored = [str(r[0]) for r in self._fetch("SELECT server FROM object_info ORDER BY 1")]
            raise ObjectInfoNotFound(params[0] if params else None, stored)
        info: dict[str, Any] = json.loads(rows[0][0])
        return info

    def save_object_info(self, server: str, info: Mapping[str, Any]) -> bool:
        """Keep ``info`` (``GET /object_info``) as the store's copy for ``server``; True if
        written, False if the copy was the same already (an unchanged copy is not rewritten).

        The worker calls it when a server first answers; call it to keep a copy by hand.

        Example::

            >>> store.save_object_info(client.url, client.object_info())
            True
            >>> store.save_object_info(client.url, client.object_info())    # unchanged
            False

        Raises:
            InvalidInput: ``server`` is not a server URL, or ``info`` is not a dict of node
                classes (``class name -> definition``).
        """
        url = server_url(server)
        if not isinstance(info, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in info.items()
        ):
            raise InvalidInput(
                f"save_object_info({url!r}, info): info is the /object_info dict (class name "
                f"-> definition), e.g. client.object_info(); got {type(info).__name__}"
            )
        try:  # ComfyUI writes what Python's json does (Infinity for an unbounded FLOAT)
            # class by class: the same text as one json.dumps, but a worker's loop thread
            # gets the GIL between classes (one dumps of 0.33.0's 1.6 MB held it ~25 ms)
            classes = ",".join(
                f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}"
                for name, entry in info.items()
            )
            text = "{" + classes + "}"
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"save_object_info({url!r}, info): info is not JSON: {exc}"
            ) from None
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._atomic():
            rows = self._fetch("SELECT sha256 FROM object_info WHERE server = ?", [url])
            if rows and rows[0][0] == digest:
                return False
            self._fetch("DELETE FROM object_info WHERE server = ?", [url])
            self._fetch(
                "INSERT INTO object_info (server, sha256, classes, info) VALUES (?, ?, ?, ?::JSON)",
                [url, digest, len(info), text],
            )
        return True
