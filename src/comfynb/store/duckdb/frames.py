"""The plural reads: runs, jobs, candidates and events as DataFrames, and their export.

Example::

    >>> store.candidates(run="portraits", picked=True)[["id", "path", "cfg", "stars"]]
       id                      path  cfg  stars
    0  12  portraits/cnb_00012_.png  7.5      4

Each key of the rows' ``params`` JSON becomes a column, typed from the values it holds
(:func:`column_type`). Columns keep nullable dtypes whatever their nulls (``Int64``,
``boolean``, ``str``: :func:`pandas_dtype`): a column of ints never turns into floats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from ...core.models import Candidate, Job, Run, Step
from ...core.status import JobStatus
from ...errors import InvalidInput, StoreError
from ..export import write_export
from .connection import Connection
from .rows import (
    CANDIDATE_COLUMNS,
    JOB_COLUMNS,
    find_run_id,
    find_step_id,
    read_candidate,
    read_job,
)

__all__ = ["Frames", "column_type", "pandas_dtype"]


class Frames(Connection):
    """The DataFrame reads of ``Store`` (a part of it; use ``Store``)."""

    def runs(self) -> pd.DataFrame:
        """All runs, oldest first, with how many jobs and candidates each has.

        Example::

            >>> store.runs()[["id", "name", "jobs", "candidates"]]
               id       name  jobs  candidates
            0   1  portraits    12          48
        """
        return self._frame(
            "SELECT r.id, r.name, r.notes, r.metadata, r.created_at, "
            "(SELECT count(*) FROM jobs j WHERE j.run_id = r.id) AS jobs, "
            "(SELECT count(*) FROM candidates c WHERE c.run_id = r.id) AS candidates "
            "FROM runs r ORDER BY r.id"
        )

    def jobs(
        self,
        run: Run | int | str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        *,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Jobs, oldest first, one row each, with their params as columns (not the workflow).

        Example::

            >>> store.jobs(run="portraits", status="failed")[["id", "status", "seed", "cfg"]]
               id  status  seed  cfg
            0   9  failed    42  7.5

        Only what changed, for a view that looks again and again (``comfynb.JobTable``):
        every write of a job (a status move, progress, a claim) gives its row the next
        change number; ``changed_since=n`` returns only the rows changed after ``n``, with
        a ``change_seq`` column. Start from 0 (every row) and pass the largest ``change_seq``
        seen next time (keep yours when no row came back)::

            >>> seen = store.jobs(run="portraits", changed_since=0)
            >>> cursor = int(seen["change_seq"].max())
            >>> store.jobs(run="portraits", changed_since=cursor)[["id", "status", "change_seq"]]
               id   status  change_seq
            0  12  running        1187

        Filters apply to the rows as they are now: a job that changed out of ``status`` is
        not returned; filter in the caller to see it leave.

        Args:
            run: only this run (a Run, id or name).
            status: only this status, or any of several.
            changed_since: only rows changed after this change number (an int from 0); the
                frame then has a ``change_seq`` column. None: every row, no such column.

        Raises:
            RunNotFound: an unknown run.
            InvalidInput: an unknown status, or ``changed_since`` not an int from 0.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(find_run_id(self._fetch, run))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append("list_contains(?::VARCHAR[], status)")
            params.append([JobStatus.parse(s).value for s in statuses])
        columns = [c for c in JOB_COLUMNS if c not in ("workflow", "params")]
        _changed_since(changed_since, columns, where, params)
        return self._flat_frame("jobs", columns, where, params)

    def candidates(
        self,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        picked: bool | None = None,
        *,
        job: Job | int | None = None,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Image candidates in the order of their jobs, one row each, with params as columns.

        Rows follow the jobs' order (the order they were enqueued: a sweep reads in its own
        order), then each job's images in order, whatever order the servers finished in.

        Each key of a candidate's params (``seed``, ``cfg``, ``steps``, ``prompt``, ...)
        becomes a column; the candidate's own ``seed`` and ``prompt`` win over a param of
        the same name.

        Example::

            >>> store.candidates(run="portraits", picked=True)[["id", "path", "cfg", "stars"]]
               id                      path  cfg  stars
            0  12  portraits/cnb_00012_.png  7.5      4

        Args:
            run: only this run (a Run, id or name).
            step: only this step.
            picked: ``True`` for picked only, ``False`` for the rest.
            job: only this job's images.
            changed_since: only candidates made or changed (pick, stars, a child) after this
                change number, with a ``change_seq`` column, as in :meth:`jobs`::

                    >>> new = store.candidates(run="portraits", changed_since=cursor)
                    >>> cursor = int(new["change_seq"].max()) if len(new) else cursor

        Raises:
            RunNotFound, StepNotFound, JobNotInStore: an unknown run, step or job.
            InvalidInput: ``changed_since`` not an int from 0.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(find_run_id(self._fetch, run))
        if step is not None:
            where.append("step_id = ?")
            params.append(find_step_id(self._fetch, step))
        if job is not None:
            job_id = job.id if isinstance(job, Job) else read_job(self._fetch, job).id
            where.append("job_id = ?")
            params.append(job_id)
        if picked is not None:
            if not isinstance(picked, bool):
                raise InvalidInput(f"picked is True, False or None, got {picked!r}")
            where.append("picked = ?")
            params.append(picked)
        columns = [c for c in CANDIDATE_COLUMNS if c != "params"]
        _changed_since(changed_since, columns, where, params)
        return self._flat_frame("candidates", columns, where, params, order="job_id, id")

    def lineage(self, candidate: Candidate | int) -> pd.DataFrame:
        """A candidate's family: its ancestors up to the root, itself, and all its descendants.

        One row per candidate, the columns of :meth:`candidates` plus ``depth``: 0 for the
        candidate, -1 its parent, -2 the parent's parent, ..., 1 its children, 2 theirs, ...
        Rows go by depth, then id.

        Example::

            >>> store.lineage(17)[["id", "parent_candidate_id", "depth", "child_count"]]
               id  parent_candidate_id  depth  child_count
            0   4                 <NA>     -1            3
            1  17                    4      0            2
            2  31                   17      1            0
            3  32                   17      1            0

        Raises:
            CandidateNotFound: no such candidate.
        """
        start = read_candidate(self._fetch, candidate)
        depths = {start.id: 0}
        parent_id, depth = start.parent_candidate_id, 0
        # up: a loop of key lookups, ~10x faster than a recursive CTE here (duckdb-facts.md)
        while parent_id is not None:
            if parent_id in depths:
                raise StoreError(f"candidate {parent_id} is its own ancestor; the store is damaged")
            rows = self._fetch(
                "SELECT parent_candidate_id FROM candidates WHERE id = ?", [parent_id]
            )
            if not rows:
                break  # the parent was deleted by hand: the lineage ends here
            depth -= 1
            depths[parent_id] = depth
            parent_id = rows[0][0]
        # down: one level per query, each a scan of the parent column
        level, depth = [start.id], 0
        while level:
            depth += 1
            rows = self._fetch(
                "SELECT id FROM candidates WHERE parent_candidate_id IN "
                "(SELECT unnest(?::BIGINT[])) ORDER BY id",
                [level],
            )
            level = [r[0] for r in rows if r[0] not in depths]
            depths.update((child, depth) for child in level)
        columns = [c for c in CANDIDATE_COLUMNS if c != "params"]
        frame = self._flat_frame(
            "candidates", columns, ["id IN (SELECT unnest(?::BIGINT[]))"], [list(depths)]
        )
        frame.insert(frame.columns.get_loc("child_count") + 1, "depth", frame["id"].map(depths))
        frame["depth"] = frame["depth"].astype("Int64")
        return frame.sort_values(["depth", "id"], ignore_index=True)

    def events(self, job: Job | int | None = None) -> pd.DataFrame:
        """Status changes, oldest first: job_id, from_status, to_status, at, detail.

        Example::

            >>> store.events(job=7)[["from_status", "to_status"]]
              from_status  to_status
            0     pending  submitted
            1   submitted    running

        Raises:
            JobNotInStore: an unknown job.
        """
        where, params = "", []
        if job is not None:
            where = "WHERE job_id = ?"
            params.append(job.id if isinstance(job, Job) else read_job(self._fetch, job).id)
        return self._frame(
            f'SELECT id, job_id, from_status, to_status, "at", detail FROM job_events {where} '
            "ORDER BY id",
            params,
        )

    def export(
        self, path: str | os.PathLike[str], what: str = "candidates", **filters: Any
    ) -> Path:
        """Write a table as Parquet (``.parquet``) or CSV (``.csv``), as the plural read shows it.

        The file appears whole or not at all (written beside it, then renamed).

        Example::

            >>> store.export("portraits.parquet", run="portraits")
            PosixPath('/home/me/portraits.parquet')

        Args:
            path: the file to write; its suffix chooses the format.
            what: ``candidates``, ``jobs``, ``runs`` or ``events``.
            **filters: passed to that read, e.g. ``run="portraits"``.
        """
        reads: dict[str, Callable[..., pd.DataFrame]] = {
            "candidates": self.candidates,
            "jobs": self.jobs,
            "runs": self.runs,
            "events": self.events,
        }
        return write_export(reads, path, what, filters)

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query into a DataFrame with nullable dtypes, through Arrow.

        Arrow is ~3x faster than ``.df()`` here, and ``.df()`` warns under pandas 3.1 on
        TIMESTAMPTZ columns (it calls a deprecated ``inplace=``).
        """
        table = self._execute(self._cursor(), lambda c: c.sql(sql, params=params).to_arrow_table())
        return table.to_pandas(types_mapper=pandas_dtype)

    def _flat_frame(
        self,
        table: str,
        columns: Sequence[str],
        where: Sequence[str],
        params: Sequence[Any],
        *,
        order: str = "id",
    ) -> pd.DataFrame:
        """``columns`` of ``table``, plus one column per top-level key of ``params`` JSON."""
        sql_where = f"WHERE {' AND '.join(where)}" if where else ""
        structure = self._param_types(table, sql_where, params, exclude=set(columns))
        select = ", ".join(f'"{c}"' for c in columns)
        args = list(params)
        if structure:
            select += ", unnest(json_transform(params, ?))"
            args = [json.dumps(structure), *args]
        return self._frame(f"SELECT {select} FROM {table} {sql_where} ORDER BY {order}", args)

    def _param_types(
        self, table: str, sql_where: str, params: Sequence[Any], *, exclude: set[str]
    ) -> dict[str, str]:
        """The top-level keys of ``params`` in these rows, in first-seen order, with a type each.

        Two cheap scans (distinct key lists, then distinct JSON types per key): together
        ~3x faster than ``json_group_structure`` over a million rows.
        """
        # in the order the rows first hold them (DISTINCT alone has no order: two reads of
        # the same rows, here and through a worker's endpoint, must give the same columns)
        lists = self._fetch(
            f"SELECT keys FROM (SELECT json_keys(params) AS keys, min(id) AS first "
            f"FROM {table} {sql_where} GROUP BY keys) ORDER BY first",
            params,
        )
        keys: dict[str, None] = {}
        for (names,) in lists:
            keys.update((k, None) for k in names or () if k not in exclude)
        if not keys:
            return {}
        types = ", ".join("list(DISTINCT json_type(params -> ?))" for _ in keys)
        rows = self._fetch(f"SELECT {types} FROM {table} {sql_where}", [*keys, *params])
        return {key: column_type(kinds) for key, kinds in zip(keys, rows[0], strict=True)}


def _changed_since(
    changed_since: int | None, columns: list[str], where: list[str], params: list[Any]
) -> None:
    """Add ``changed_since``'s filter and its ``change_seq`` column to a plural read."""
    if changed_since is None:
        return
    if isinstance(changed_since, bool) or not isinstance(changed_since, int) or changed_since < 0:
        raise InvalidInput(
            f"changed_since is a change number, an int from 0 (0: every row); got "
            f"{changed_since!r}. Pass the largest change_seq of the rows you read last"
        )
    columns.append("change_seq")
    where.append("change_seq > ?")
    params.append(changed_since)


def column_type(json_types: Sequence[str | None]) -> str:
    """The DuckDB type for a param seen with these JSON types; a mix that fits none stays JSON.

    Example::

        >>> column_type(["UBIGINT", "BIGINT", "NULL"]), column_type(["BIGINT", "VARCHAR"])
        ('BIGINT', 'JSON')
    """
    kinds = {k for k in json_types if k not in (None, "NULL")}
    if not kinds:
        return "VARCHAR"
    if len(kinds) == 1 and kinds <= {"BIGINT", "UBIGINT", "DOUBLE", "VARCHAR", "BOOLEAN"}:
        return kinds.pop()
    if kinds <= {"BIGINT", "UBIGINT"}:
        return "BIGINT"
    if kinds <= {"BIGINT", "UBIGINT", "DOUBLE"}:
        return "DOUBLE"
    return "JSON"  # objects, arrays, or text mixed with numbers: kept as JSON text


def pandas_dtype(arrow_type: pa.DataType) -> Any:
    """Nullable pandas dtypes whatever the nulls: ``Int64``/``UInt64``, ``boolean``, ``str``.

    Without this, a column of ints turns into floats as soon as one row has no value.
    """
    if pa.types.is_integer(arrow_type):
        return pd.api.types.pandas_dtype(
            str(arrow_type).replace("int", "Int").replace("uInt", "UInt")
        )
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return _TEXT
    return None


_TEXT: Final = pd.StringDtype(na_value=np.nan)  # pandas 3's default ``str`` dtype
