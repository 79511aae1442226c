"""The store: one DuckDB file holding runs, steps, jobs, their events and image candidates.

Example::

    >>> import comfynb
    >>> store = comfynb.open("lab.duckdb", output_dir="outputs")
    >>> run = store.new_run("portraits")
    >>> job = comfynb.enqueue(store, workflow, run=run, params={"seed": 42})
    >>> store.jobs(run="portraits")[["id", "status", "seed"]]
       id   status  seed
    0   1  pending    42

Users may query the tables with plain SQL (``runs``, ``steps``, ``jobs``, ``job_events``,
``candidates``); timestamps are ``TIMESTAMPTZ`` in UTC and JSON columns are ``JSON``.

Threads: one DuckDB connection per store, one cursor per thread, and one writer at a time
(a lock per file shared by every store on it in this process), so two threads never
conflict on an update. Readers never wait for the writer; they see committed data.

Processes: DuckDB lets one process own a file. Opening a file another process holds raises
``StoreLocked`` naming that process.

Secrets: JSON written through the store (metadata, params, errors, event details, and
workflows) loses every key that looks like a secret (``api_key*``, ``*_token``, ``*password``,
``authorization``, ...). Supply such values when submitting, never store them.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from ...core.jsonio import from_json, strip_secrets, to_json
from ...core.models import Candidate, Job, NewCandidate, Run, Step
from ...core.status import NOW, JobState, JobStatus, Plan, check_fields
from ...errors import (
    CandidateNotFound,
    InvalidInput,
    JobNotInStore,
    RunNotFound,
    SchemaTooNew,
    StaleStates,
    StepNotFound,
    StoreError,
    StoreLocked,
)

if TYPE_CHECKING:
    pass

__all__ = ["MIGRATIONS", "Migration", "Store", "Transaction", "open", "strip_secrets"]

# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One named schema change; a file records each one it has had, in order."""

    name: str
    statements: tuple[str, ...]


_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "001_create_tables",
        (
            "CREATE SEQUENCE runs_id_seq START 1",
            """CREATE TABLE runs (
                id BIGINT PRIMARY KEY DEFAULT nextval('runs_id_seq'),
                name VARCHAR NOT NULL UNIQUE,
                notes VARCHAR,
                metadata JSON,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
            "CREATE SEQUENCE steps_id_seq START 1",
            """CREATE TABLE steps (
                id BIGINT PRIMARY KEY DEFAULT nextval('steps_id_seq'),
                run_id BIGINT NOT NULL,
                kind VARCHAR NOT NULL CHECK (kind IN ('generate', 'sweep', 'refine')),
                parent_candidate_id BIGINT,
                workflow JSON NOT NULL,
                params_spec JSON,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
            "CREATE SEQUENCE jobs_id_seq START 1",
            f"""CREATE TABLE jobs (
                id BIGINT PRIMARY KEY DEFAULT nextval('jobs_id_seq'),
                run_id BIGINT NOT NULL,
                step_id BIGINT,
                parent_candidate_id BIGINT,
                prompt_id VARCHAR,
                server VARCHAR,
                status VARCHAR NOT NULL DEFAULT 'pending' CHECK (status IN ({_STATUSES})),
                priority INTEGER NOT NULL DEFAULT 0,
                workflow JSON NOT NULL,
                params JSON,
                error JSON,
                retries INTEGER NOT NULL DEFAULT 0,
                max_retries INTEGER NOT NULL DEFAULT 3,
                progress_value INTEGER,
                progress_max INTEGER,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                claimed_at TIMESTAMPTZ,
                submitted_at TIMESTAMPTZ,
                started_at TIMESTAMPTZ,
                finished_at TIMESTAMPTZ,
                metadata JSON)""",
            # no key: events are appended and scanned, never looked up one by one
            "CREATE SEQUENCE job_events_id_seq START 1",
            f"""CREATE TABLE job_events (
                id BIGINT NOT NULL DEFAULT nextval('job_events_id_seq'),
                job_id BIGINT NOT NULL,
                from_status VARCHAR CHECK (from_status IN ({_STATUSES})),
                to_status VARCHAR NOT NULL CHECK (to_status IN ({_STATUSES})),
                "at" TIMESTAMPTZ NOT NULL DEFAULT now(),
                detail JSON)""",
            "CREATE SEQUENCE candidates_id_seq START 1",
            """CREATE TABLE candidates (
                id BIGINT PRIMARY KEY DEFAULT nextval('candidates_id_seq'),
                job_id BIGINT NOT NULL,
                run_id BIGINT NOT NULL,
                step_id BIGINT,
                parent_candidate_id BIGINT,
                child_count INTEGER NOT NULL DEFAULT 0,
                node_id VARCHAR NOT NULL,
                path VARCHAR NOT NULL,
                sha256 VARCHAR,
                width INTEGER,
                height INTEGER,
                bytes BIGINT,
                seed UBIGINT,
                prompt VARCHAR,
                params JSON,
                picked BOOLEAN NOT NULL DEFAULT false,
                stars SMALLINT CHECK (stars BETWEEN 0 AND 5),
                created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        ),
    ),
)

# --------------------------------------------------------------------------- columns


def _select(columns: Sequence[str], timestamps: Iterable[str], table: str = "") -> str:
    """A select list that returns timestamps as naive UTC (DuckDB needs pytz for tz-aware)."""
    prefix = f"{table}." if table else ""
    stamps = set(timestamps)
    return ", ".join(
        f'timezone(\'UTC\', {prefix}"{c}") AS "{c}"' if c in stamps else f'{prefix}"{c}"'
        for c in columns
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_RUN_COLUMNS = _names("id name notes metadata created_at")
_STEP_COLUMNS = _names("id run_id kind parent_candidate_id workflow params_spec created_at")
_JOB_COLUMNS = _names(
    "id run_id step_id parent_candidate_id prompt_id server status priority workflow "
    "params error retries max_retries progress_value progress_max created_at "
    "claimed_at submitted_at started_at finished_at metadata"
)
_JOB_TIMES = ("created_at", "claimed_at", "submitted_at", "started_at", "finished_at")
_CANDIDATE_COLUMNS = _names(
    "id job_id run_id step_id parent_candidate_id child_count node_id path sha256 "
    "width height bytes seed prompt params picked stars created_at"
)
RUN_SELECT: Final = _select(_RUN_COLUMNS, ["created_at"])
STEP_SELECT: Final = _select(_STEP_COLUMNS, ["created_at"])
JOB_SELECT: Final = _select(_JOB_COLUMNS, _JOB_TIMES)
CANDIDATE_SELECT: Final = _select(_CANDIDATE_COLUMNS, ["created_at"])


def _run(row: tuple[Any, ...]) -> Run:
    id_, name, notes, metadata, created_at = row
    return Run(id_, name, notes, from_json(metadata) or {}, _utc(created_at))  # type: ignore[arg-type]


def _step(row: tuple[Any, ...]) -> Step:
    id_, run_id, kind, parent, workflow, spec, created_at = row
    return Step(id_, run_id, kind, parent, from_json(workflow), from_json(spec), _utc(created_at))  # type: ignore[arg-type]


def _job(row: tuple[Any, ...]) -> Job:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    for name in ("workflow", "params", "error", "metadata"):
        values[name] = from_json(values[name])
    values["params"] = values["params"] or {}
    values["metadata"] = values["metadata"] or {}
    values["status"] = JobStatus(values["status"])
    for name in _JOB_TIMES:
        values[name] = _utc(values[name])
    return Job(**values)


def _candidate(row: tuple[Any, ...]) -> Candidate:
    values = dict(zip(_CANDIDATE_COLUMNS, row, strict=True))
    values["params"] = from_json(values["params"]) or {}
    values["created_at"] = _utc(values["created_at"])
    return Candidate(**values)


# --------------------------------------------------------------------------- errors

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def _map_error(exc: duckdb.Error, path: str) -> StoreError:
    """Translate a DuckDB error into the comfynb tree (the one place this happens)."""
    text = str(exc)
    if "Could not set lock on file" in text or "Conflicting lock" in text:
        found = _LOCK_HOLDER.search(text)
        if found:
            return StoreLocked(path, pid=int(found.group(2)), holder=found.group(1))
        return StoreLocked(path, pid=None)
    if isinstance(exc, duckdb.TransactionException) and "onflict" in text:
        return StoreError(
            f"two writers changed the same row of {path} at once ({text.splitlines()[0]}); "
            "write through one Store per process and retry the call"
        )
    if "not a valid DuckDB database file" in text or "is not a valid DuckDB" in text:
        return StoreError(f"{path} is not a DuckDB file; pass the path of a .duckdb file")
    if isinstance(exc, duckdb.ConstraintException):
        return StoreError(f"the store refused a row in {path}: {text}")
    return StoreError(f"DuckDB failed on {path}: {text}")


# --------------------------------------------------------------------------- process-wide locks

_LOCKS_GUARD = threading.Lock()


@dataclass
class _FileState:
    """What every Store open on one file in this process shares: the writer lock, and counts
    a worker reads to skip queries (they only grow; a rolled-back write may bump them)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    queue_changes: int = 0  # jobs may have become claimable: enqueued, requeued, released
    cancellations: int = 0  # jobs were cancelled


_FILE_STATES: dict[str, _FileState] = {}


def _file_state(key: str) -> _FileState:
    """One shared state per file in this process, whichever Store is open on it."""
    with _LOCKS_GUARD:
        state = _FILE_STATES.get(key)
        if state is None:
            state = _FILE_STATES[key] = _FileState()
        return state


# --------------------------------------------------------------------------- Store


def _check_id(value: object, what: str) -> int:
    # numbers.Integral admits numpy integers: ids read from a DataFrame (df.id[0]) are np.int64
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{what} must be an int id, got {value!r}")
    return int(value)


class Store:
    """One DuckDB file of runs, steps, jobs, events and candidates; safe to share between threads.

    Example::

        >>> with comfynb.Store.open("lab.duckdb", output_dir="outputs") as store:
        ...     run = store.new_run("portraits")
        ...     store.runs()[["id", "name"]]
           id       name
        0   1  portraits

    Singular reads (``run``, ``step``, ``job``, ``candidate``) return frozen dataclasses;
    plural reads (``runs``, ``jobs``, ``candidates``, ``events``) return DataFrames.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        output_dir: Path,
        shared: _FileState,
    ) -> None:
        self._con = con
        self.path = path
        self.output_dir = output_dir
        self._shared = shared
        self._lock = shared.lock
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_guard = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------- opening, closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        output_dir: str | os.PathLike[str] | None = None,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Store:
        """Open or create the store at ``path``, bringing its schema up to date in place.

        Example::

            >>> store = comfynb.Store.open("lab.duckdb", output_dir="outputs")
            >>> store.schema_version
            1

        Args:
            path: the DuckDB file (created if missing), or ``":memory:"``.
            output_dir: where image files live; default ``outputs`` beside the file. Created
                if missing.
            migrations: the ordered migrations to apply; the default is this comfynb's schema
                (tests and forks pass their own).

        Raises:
            StoreLocked: another process holds the file.
            SchemaTooNew: the file was written by a newer comfynb; nothing changed.
            StoreError: the file is not a DuckDB file or cannot be opened.
        """
        if not isinstance(path, str | os.PathLike):
            raise InvalidInput(f"path must be a file path, got {path!r}; e.g. 'lab.duckdb'")
        text = os.fspath(path)
        memory = text == ":memory:"
        folder = Path.cwd() if memory else Path(text).resolve().parent
        outputs = Path(output_dir) if output_dir is not None else folder / "outputs"
        key = f"memory:{uuid.uuid4()}" if memory else str(Path(text).resolve())
        if not memory and not Path(text).resolve().parent.is_dir():
            raise InvalidInput(
                f"the folder of {text} does not exist; create it first "
                f"(Path({str(Path(text).resolve().parent)!r}).mkdir(parents=True))"
            )
        if outputs.exists() and not outputs.is_dir():
            raise InvalidInput(f"output_dir {str(outputs)!r} is a file; pass a folder")
        try:
            con = duckdb.connect(text, config={"autoinstall_known_extensions": False})
        except duckdb.Error as exc:
            raise _map_error(exc, text) from exc
        store = cls(con, text, outputs.resolve(), _file_state(key))
        try:
            store._migrate(migrations)
            outputs.mkdir(parents=True, exist_ok=True)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the store; other processes may open the file afterwards. Closing twice is fine.

        Example::

            >>> store.close()
        """
        if self._closed:
            return
        self._closed = True
        with self._cursors_guard:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"schema {self.schema_version}"
        return f"<Store {self.path} ({state})>"

    @property
    def schema_version(self) -> int:
        """How many migrations the file has had.

        Example::

            >>> store.schema_version
            1
        """
        rows = self._fetch("SELECT count(*) FROM schema_migrations")
        return int(rows[0][0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        with self._lock:
            self._fetch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = self._fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            for version, name in applied:
                if version > len(migrations):
                    raise SchemaTooNew(
                        f"{self.path} has schema version {len(applied)} ({name!r}) but this "
                        f"comfynb knows {len(migrations)}; upgrade comfynb to open it "
                        "(the file is unchanged)"
                    )
                if migrations[version - 1].name != name:
                    raise StoreError(
                        f"{self.path} had migration {version} {name!r} where this comfynb has "
                        f"{migrations[version - 1].name!r}; it is not a store this comfynb "
                        "made. Open another file"
                    )
            for version in range(len(applied) + 1, len(migrations) + 1):
                migration = migrations[version - 1]
                with self.transaction() as tx:
                    for statement in migration.statements:
                        tx.fetch(statement)
                    tx.fetch(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [version, migration.name],
                    )

    # ----------------------------------------------------------------- the DuckDB boundary

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections must not be shared between threads)."""
        if self._closed:
            raise StoreError(
                f"the store {self.path} is closed; open it again with comfynb.open(path)"
            )
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursors_guard:
                cursor = self._con.cursor()
                self._cursors.append(cursor)
            self._execute(cursor, lambda c: c.execute("SET TimeZone = 'UTC'").fetchall())
            self._local.cursor = cursor
        return cursor

    def _execute(self, cursor: duckdb.DuckDBPyConnection, call: Any) -> Any:
        """Run ``call(cursor)``, translating DuckDB errors: the one boundary for them."""
        try:
            return call(cursor)
        except duckdb.Error as exc:
            raise _map_error(exc, self.path) from exc
        except RuntimeError as exc:
            # Ctrl-C (the kernel's stop button) while DuckDB runs a query: DuckDB swallows the
            # KeyboardInterrupt and raises this instead; give the caller its interrupt back
            # (comfynb.wait returns its summary on one).
            if str(exc) != "Query interrupted":
                raise
            raise KeyboardInterrupt from exc

    def _fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Execute one statement on this thread's cursor and fetch every row."""
        rows: list[tuple[Any, ...]] = self._execute(
            self._cursor(), lambda c: c.execute(sql, params).fetchall()
        )
        return rows

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query into a DataFrame with nullable dtypes, through Arrow.

        Arrow is ~3x faster than ``.df()`` here, and ``.df()`` warns under pandas 3.1 on
        TIMESTAMPTZ columns (it calls a deprecated ``inplace=``).
        """
        table = self._execute(self._cursor(), lambda c: c.sql(sql, params=params).to_arrow_table())
        return table.to_pandas(types_mapper=_pandas_dtype)

    def _write(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """One statement under the writer lock (its own transaction unless inside one)."""
        with self._lock:
            return self._fetch(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Group writes: all of them are kept, or none if the block raises.

        Only one thread writes at a time; others wait here. A transaction inside another on
        the same thread joins the outer one (which commits or rolls back the lot).

        Example::

            >>> with store.transaction() as tx:
            ...     job = tx.job(7)
            ...     store.pick(12)            # joins this transaction
        """
        with self._lock:
            cursor = self._cursor()
            if getattr(self._local, "depth", 0):
                self._local.depth += 1
                try:
                    yield Transaction(self)
                finally:
                    self._local.depth -= 1
                return
            self._execute(cursor, lambda c: c.execute("BEGIN TRANSACTION").fetchall())
            self._local.depth = 1
            try:
                yield Transaction(self)
            except BaseException:
                self._local.depth = 0
                self._execute(cursor, lambda c: c.execute("ROLLBACK").fetchall())
                raise
            self._local.depth = 0
            try:
                self._execute(cursor, lambda c: c.execute("COMMIT").fetchall())
            except StoreError:
                self._execute(cursor, lambda c: c.rollback())
                raise

    # ----------------------------------------------------------------- resolving references

    def _run_id(self, run: Run | int | str) -> int:
        if isinstance(run, Run):
            run = run.id
        if isinstance(run, str):
            rows = self._fetch("SELECT id FROM runs WHERE name = ?", [run])
        else:
            rows = self._fetch("SELECT id FROM runs WHERE id = ?", [_check_id(run, "run")])
        if not rows:
            raise RunNotFound(run, "store.runs() lists them; store.new_run(name) makes one")
        return int(rows[0][0])

    def _step_id(self, step: Step | int) -> int:
        step_id = step.id if isinstance(step, Step) else _check_id(step, "step")
        if not self._fetch("SELECT 1 FROM steps WHERE id = ?", [step_id]):
            raise StepNotFound(step_id, "store.new_step(...) makes one")
        return step_id

    def _candidate_id(self, candidate: Candidate | int) -> int:
        if isinstance(candidate, Candidate):
            return candidate.id
        return _check_id(candidate, "candidate")

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
        with self.transaction():
            rows = self._fetch(f"SELECT {RUN_SELECT} FROM runs WHERE name = ?", [name])
            if not rows:
                rows = self._fetch(
                    f"INSERT INTO runs (name, notes, metadata) VALUES (?, ?, ?::JSON) "
                    f"RETURNING {RUN_SELECT}",
                    [name, notes, meta],
                )
        return _run(rows[0])

    def run(self, id_or_name: int | str) -> Run:
        """Return the run with this id or name.

        Example::

            >>> store.run("portraits").id
            1

        Raises:
            RunNotFound: no such run.
        """
        run_id = self._run_id(id_or_name)
        return _run(self._fetch(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id])[0])

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

        if kind not in ("generate", "sweep", "refine"):
            raise InvalidInput(f"a step kind is 'generate', 'sweep' or 'refine', got {kind!r}")
        check_workflow(workflow)
        flow = to_json(dict(workflow), "workflow")
        spec = to_json(None if params_spec is None else dict(params_spec), "params_spec")
        with self.transaction():
            run_id = self._run_id(run)
            parent = None
            if parent_candidate is not None:
                parent = self.candidate(self._candidate_id(parent_candidate)).id
            rows = self._fetch(
                "INSERT INTO steps (run_id, kind, parent_candidate_id, workflow, params_spec) "
                f"VALUES (?, ?, ?, ?::JSON, ?::JSON) RETURNING {STEP_SELECT}",
                [run_id, kind, parent, flow, spec],
            )
        return _step(rows[0])

    def step(self, step_id: int) -> Step:
        """Return the step with this id.

        Example::

            >>> store.step(1).kind
            'sweep'

        Raises:
            StepNotFound: no such step.
        """
        rows = self._fetch(
            f"SELECT {STEP_SELECT} FROM steps WHERE id = ?", [_check_id(step_id, "step")]
        )
        if not rows:
            raise StepNotFound(step_id, "store.new_step(...) makes one")
        return _step(rows[0])

    # ----------------------------------------------------------------- jobs

    def job(self, job_id: int) -> Job:
        """Return the job with this id, as stored now.

        Example::

            >>> store.job(7).status
            <JobStatus.PENDING: 'pending'>

        Raises:
            JobNotInStore: no such job.
        """
        rows = self._fetch(
            f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", [_check_id(job_id, "job")]
        )
        if not rows:
            raise JobNotInStore(job_id, "store.jobs() lists them")
        return _job(rows[0])

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
        return [_job(row) for row in rows]

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
        if server is not None and not isinstance(server, str):
            raise InvalidInput(f"server must be a URL string or None, got {server!r}")
        rows = self._write(
            "UPDATE jobs SET prompt_id = ?, server = coalesce(server, ?), claimed_at = now() "
            "WHERE id = (SELECT j.id FROM jobs j LEFT JOIN "
            "(SELECT run_id, max(claimed_at) AS last_claim FROM jobs GROUP BY run_id) r "
            "USING (run_id) WHERE j.status = 'pending' AND j.prompt_id IS NULL "
            "AND (?::VARCHAR IS NULL OR j.server IS NULL OR j.server = ?) "
            "ORDER BY j.priority DESC, r.last_claim ASC NULLS FIRST, j.id LIMIT 1) "
            f"RETURNING {JOB_SELECT}",
            [str(uuid.uuid4()), server, server, server],
        )
        return _job(rows[0]) if rows else None

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
        if server is not None and not isinstance(server, str):
            raise InvalidInput(f"server must be a URL string or None, got {server!r}")
        with self.transaction():
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
                "claimed_at = now() + to_microseconds(m.turn) FROM (SELECT unnest(?::BIGINT[]) "
                "AS id, unnest(?::VARCHAR[]) AS prompt_id, unnest(?::BIGINT[]) AS turn) m "
                "WHERE jobs.id = m.id",
                [server, ids, [str(uuid.uuid4()) for _ in ids], list(range(len(ids)))],
            )
            jobs = Transaction(self).jobs_by_id(ids)
        return [jobs[i] for i in ids]

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
            params.append(self._run_id(run))
        if job_ids is not None:
            where.append("id IN (SELECT unnest(?::BIGINT[]))")
            params.append(sorted({_check_id(i, "job") for i in job_ids}))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._fetch(f"SELECT status, count(*) FROM jobs {clause} GROUP BY status", params)
        return {str(status): int(n) for status, n in rows}

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
            [None if servers is None else list(servers)] * 2,
        )
        return int(rows[0][0])

    def release_claims(self, job_ids: Iterable[int]) -> int:
        """Give claimed, never-submitted jobs back to the queue: no prompt_id, claim, or server.

        For a worker that stops (or loses a server) holding jobs it claimed but did not post,
        or posted to a server that is gone; another worker claims them afresh, with a new
        prompt_id, so no server ever sees one prompt_id twice. Jobs no longer pending are
        left alone. Returns how many were released.

        Example::

            >>> store.release_claims([7, 8])
            2
        """
        ids = sorted({_check_id(i, "job") for i in job_ids})
        if not ids:
            return 0
        rows = self._write(
            "UPDATE jobs SET prompt_id = NULL, claimed_at = NULL, server = NULL "
            "WHERE id IN (SELECT unnest(?::BIGINT[])) AND status = 'pending'",
            [ids],
        )
        self._shared.queue_changes += 1
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
        with self.transaction():
            job = self.job(job_id)
            if job.status is not JobStatus.PENDING or job.prompt_id not in (None, prompt_id):
                raise StoreError(
                    f"job {job_id} is {job.status.value} with prompt_id {job.prompt_id!r}; "
                    f"only a pending job without one can take prompt_id {prompt_id!r}"
                )
            rows = self._fetch(
                "UPDATE jobs SET prompt_id = ?, server = coalesce(?, server), "
                f"claimed_at = coalesce(claimed_at, now()) WHERE id = ? RETURNING {JOB_SELECT}",
                [prompt_id, server, job_id],
            )
        return _job(rows[0])

    def update_job(self, job_id: int, **fields: Any) -> Job:
        """Set job columns that are not its status: retries, error, metadata, progress.

        The status changes only through ``comfynb.lifecycle.transition``.

        Example::

            >>> store.update_job(7, retries=1, error={"type": "ServerTimeout"}).retries
            1

        Raises:
            JobNotInStore: no such job.
            InvalidInput: an unknown column, or ``status`` (use ``transition``).
        """
        allowed = {"retries", "error", "metadata", "progress_value", "progress_max", "server"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            hint = " (change it with comfynb.lifecycle.transition)" if "status" in unknown else ""
            raise InvalidInput(
                f"update_job cannot set {', '.join(unknown)}{hint}; it sets "
                f"{', '.join(sorted(allowed))}"
            )
        check_fields(job_id, fields)
        if not fields:
            return self.job(job_id)
        sets = ", ".join(
            f"{name} = ?::JSON" if name in ("error", "metadata") else f"{name} = ?"
            for name in fields
        )
        values = [
            to_json(value, name) if name in ("error", "metadata") else value
            for name, value in fields.items()
        ]
        rows = self._write(
            f"UPDATE jobs SET {sets} WHERE id = ? RETURNING {JOB_SELECT}",
            [*values, _check_id(job_id, "job")],
        )
        if not rows:
            raise JobNotInStore(job_id, "store.jobs() lists them")
        return _job(rows[0])

    # ----------------------------------------------------------------- candidates

    def candidate(self, candidate_id: int) -> Candidate:
        """Return the image candidate with this id.

        Example::

            >>> store.candidate(12).path
            'portraits/cnb_00012_.png'

        Raises:
            CandidateNotFound: no such candidate.
        """
        rows = self._fetch(
            f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE id = ?",
            [_check_id(candidate_id, "candidate")],
        )
        if not rows:
            raise CandidateNotFound(candidate_id, "store.candidates() lists them")
        return _candidate(rows[0])

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
        if stars is not None and (
            isinstance(stars, bool) or not isinstance(stars, int) or not 0 <= stars <= 5
        ):
            raise InvalidInput(
                f"stars is an int from 0 to 5 (or None to clear), got {stars!r}; "
                "e.g. store.star(12, 4)"
            )
        return self._set_candidate(candidate, "stars", stars)

    def _set_candidate(self, candidate: Candidate | int, column: str, value: object) -> Candidate:
        candidate_id = self._candidate_id(candidate)
        rows = self._write(
            f"UPDATE candidates SET {column} = ? WHERE id = ? RETURNING {CANDIDATE_SELECT}",
            [value, candidate_id],
        )
        if not rows:
            raise CandidateNotFound(candidate_id, "store.candidates() lists them")
        return _candidate(rows[0])

    def lineage(self, candidate: Candidate | int) -> list[Candidate]:
        """The candidate, its parent, its parent's parent, ... up to the root (a generate step).

        Example::

            >>> [c.id for c in store.lineage(31)]
            [31, 17, 4]

        Raises:
            CandidateNotFound: no such candidate.
        """
        chain = [self.candidate(self._candidate_id(candidate))]
        seen = {chain[0].id}
        # a loop of key lookups: ~10x faster than a recursive CTE here (duckdb-facts.md)
        while chain[-1].parent_candidate_id is not None:
            parent_id = chain[-1].parent_candidate_id
            if parent_id in seen:
                raise StoreError(f"candidate {parent_id} is its own ancestor; the store is damaged")
            seen.add(parent_id)
            rows = self._fetch(
                f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE id = ?", [parent_id]
            )
            if not rows:
                break  # the parent was deleted by hand: the lineage ends here
            chain.append(_candidate(rows[0]))
        return chain

    # ----------------------------------------------------------------- DataFrames

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
    ) -> pd.DataFrame:
        """Jobs, oldest first, one row each, with their params as columns (not the workflow).

        Example::

            >>> store.jobs(run="portraits", status="failed")[["id", "status", "seed", "cfg"]]
               id  status  seed  cfg
            0   9  failed    42  7.5

        Args:
            run: only this run (a Run, id or name).
            status: only this status, or any of several.

        Raises:
            RunNotFound: an unknown run.
            InvalidInput: an unknown status.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(self._run_id(run))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append("list_contains(?::VARCHAR[], status)")
            params.append([JobStatus.parse(s).value for s in statuses])
        columns = [c for c in _JOB_COLUMNS if c not in ("workflow", "params")]
        return self._flat_frame("jobs", columns, where, params)

    def candidates(
        self,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        picked: bool | None = None,
        *,
        job: Job | int | None = None,
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

        Raises:
            RunNotFound, StepNotFound, JobNotInStore: an unknown run, step or job.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(self._run_id(run))
        if step is not None:
            where.append("step_id = ?")
            params.append(self._step_id(step))
        if job is not None:
            job_id = job.id if isinstance(job, Job) else self.job(job).id
            where.append("job_id = ?")
            params.append(job_id)
        if picked is not None:
            if not isinstance(picked, bool):
                raise InvalidInput(f"picked is True, False or None, got {picked!r}")
            where.append("picked = ?")
            params.append(picked)
        columns = [c for c in _CANDIDATE_COLUMNS if c != "params"]
        return self._flat_frame("candidates", columns, where, params, order="job_id, id")

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
            params.append(job.id if isinstance(job, Job) else self.job(job).id)
        return self._frame(
            f'SELECT id, job_id, from_status, to_status, "at", detail FROM job_events {where} '
            "ORDER BY id",
            params,
        )

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
        lists = self._fetch(f"SELECT DISTINCT json_keys(params) FROM {table} {sql_where}", params)
        keys: dict[str, None] = {}
        for (names,) in lists:
            keys.update((k, None) for k in names or () if k not in exclude)
        if not keys:
            return {}
        types = ", ".join("list(DISTINCT json_type(params -> ?))" for _ in keys)
        rows = self._fetch(f"SELECT {types} FROM {table} {sql_where}", [*keys, *params])
        return {key: _column_type(kinds) for key, kinds in zip(keys, rows[0], strict=True)}

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
        return _export(reads, path, what, filters)


def _export(
    reads: Mapping[str, Callable[..., pd.DataFrame]],
    path: str | os.PathLike[str],
    what: str,
    filters: Mapping[str, Any],
) -> Path:
    """``Store.export`` given the plural reads (a remote store writes on its own side too)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InvalidInput(
            f"export writes .parquet or .csv files, got {target.name!r}; "
            "e.g. store.export('runs.parquet')"
        )
    if what not in reads:
        raise InvalidInput(f"export what= is one of {', '.join(reads)}, got {what!r}")
    frame: pd.DataFrame = reads[what](**filters)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        if suffix == ".parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.resolve()


def _column_type(json_types: Sequence[str | None]) -> str:
    """The DuckDB type for a param seen with these JSON types; a mix that fits none stays JSON.

    Example::

        >>> _column_type(["UBIGINT", "BIGINT", "NULL"]), _column_type(["BIGINT", "VARCHAR"])
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


def _pandas_dtype(arrow_type: pa.DataType) -> Any:
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


# --------------------------------------------------------------------------- Transaction


class Transaction:
    """The writes that lifecycle and job functions compose inside ``store.transaction()``.

    Example::

        >>> with store.transaction() as tx:
        ...     states = tx.job_states({7, 8})
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement in this transaction and return its rows."""
        return self.store._fetch(sql, params)

    def job(self, job_id: int) -> Job:
        """The job as this transaction sees it (``JobNotInStore`` if missing)."""
        return self.store.job(job_id)

    def run_id(self, run: Run | int | str) -> int:
        """The id of a run given as a Run, id or name (``RunNotFound`` if missing)."""
        return self.store._run_id(run)

    def candidates_of(self, job_id: int) -> list[Candidate]:
        """A job's candidates, oldest first."""
        rows = self.fetch(
            f"SELECT {CANDIDATE_SELECT} FROM candidates WHERE job_id = ? ORDER BY id", [job_id]
        )
        return [_candidate(row) for row in rows]

    def job_states(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        """Status, retries and prompt_id of each job; ``JobNotInStore`` names a missing one."""
        ids = sorted({_check_id(i, "job") for i in job_ids})
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
        if len(job_ids) == 1:
            rows = self.fetch(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", list(job_ids))
        else:
            rows = self.fetch(
                f"SELECT {JOB_SELECT} FROM jobs WHERE id IN (SELECT unnest(?::BIGINT[]))",
                [list(job_ids)],
            )
        return {int(row[0]): _job(row) for row in rows}

    def apply_plan(self, plan: Plan, *, fetch: bool = True) -> dict[int, Job]:
        """Write a checked plan from ``comfynb.lifecycle``: the only SQL that sets a status.

        Call it only through ``comfynb.lifecycle.transition``/``transition_many``. One UPDATE
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
        targets = {to for _, _, to, _ in plan.events}
        self.store._shared.queue_changes += JobStatus.PENDING in targets
        self.store._shared.cancellations += JobStatus.CANCELLED in targets
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
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status = ?",
                [*(a[0] for a in args), job_id, before.value],
            )
        else:
            rows = self.fetch(
                f"UPDATE jobs SET {', '.join(sets)} FROM (SELECT {', '.join(selects)}) AS m "
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
            f"UPDATE jobs SET {', '.join(sets)} FROM (SELECT {', '.join(selects)}) AS m "
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

    def insert_job(
        self,
        *,
        run_id: int,
        step_id: int | None,
        parent_candidate_id: int | None,
        workflow_json: str,
        params_json: str | None,
        priority: int,
        max_retries: int,
        metadata_json: str | None,
    ) -> Job:
        """Insert a pending job (``comfynb.enqueue`` checks everything first)."""
        rows = self.fetch(
            "INSERT INTO jobs (run_id, step_id, parent_candidate_id, workflow, params, priority, "
            "max_retries, metadata) VALUES (?, ?, ?, ?::JSON, ?::JSON, ?, ?, ?::JSON) "
            f"RETURNING {JOB_SELECT}",
            [
                run_id,
                step_id,
                parent_candidate_id,
                workflow_json,
                params_json,
                priority,
                max_retries,
                metadata_json,
            ],
        )
        self.store._shared.queue_changes += 1
        return _job(rows[0])

    def insert_candidates(self, job: Job, images: Sequence[NewCandidate]) -> list[Candidate]:
        """Insert one candidate row per image of ``job``; returns them in order."""
        return self.insert_candidates_many([(job, image) for image in images])

    def insert_candidates_many(self, pairs: Sequence[tuple[Job, NewCandidate]]) -> list[Candidate]:
        """Insert one candidate row per (job, image), in ONE statement; returns them in order."""
        for _, image in pairs:
            _check_relative(image.path)
        if not pairs:
            return []
        rows = [(*_job_keys(job), *_candidate_values(job, image)) for job, image in pairs]
        columns = (*_JOB_KEY_COLUMNS, *_NEW_CANDIDATE_COLUMNS)
        unnests = ", ".join(
            f"unnest(?::{kind}[])" + ("::JSON" if name == "params" else "")
            for name, kind in columns
        )
        returned = self.fetch(
            f"INSERT INTO candidates ({', '.join(name for name, _ in columns)}) "
            f"SELECT {unnests} RETURNING id, timezone('UTC', created_at)",
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
            "UPDATE jobs SET progress_value = m.v, progress_max = m.x FROM (SELECT "
            "unnest(?::BIGINT[]) AS id, unnest(?::INTEGER[]) AS v, unnest(?::INTEGER[]) AS x) m "
            "WHERE jobs.id = m.id AND jobs.status IN ('submitted', 'running')",
            [list(progress), [v for v, _ in progress.values()], [x for _, x in progress.values()]],
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
            "UPDATE candidates SET child_count = child_count + m.n FROM (SELECT "
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
            "UPDATE candidates SET child_count = child_count + ? WHERE id = ?", [n, candidate_id]
        )
        if not rows or rows[0][0] == 0:
            raise CandidateNotFound(candidate_id, "its parent was deleted")


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
    ("prompt", "VARCHAR"),
    ("params", "VARCHAR"),
)


def _candidate_values(job: Job, image: NewCandidate) -> tuple[Any, ...]:
    """One image's values in ``_NEW_CANDIDATE_COLUMNS`` order, defaults from the job."""
    params = image.params if image.params is not None else job.params
    return (
        image.node_id,
        image.path,
        image.sha256,
        image.width,
        image.height,
        image.bytes,
        _default_seed(image, job),
        _default_prompt(image, job),
        to_json(params, "params"),
    )


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


def _default_seed(image: NewCandidate, job: Job) -> int | None:
    if image.seed is not None:
        return image.seed
    seed = (image.params or job.params).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


def _default_prompt(image: NewCandidate, job: Job) -> str | None:
    if image.prompt is not None:
        return image.prompt
    prompt = (image.params or job.params).get("prompt")
    return prompt if isinstance(prompt, str) else None
