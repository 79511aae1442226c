"""The store's schema as named, ordered migrations; a file records each one it has had.

Example::

    >>> [m.name for m in MIGRATIONS]
    ['001_create_tables', '002_candidate_facts', '003_object_info', '004_job_previews',
     '005_change_seq']

A new schema change is a new ``Migration`` appended here (never an edit of an applied one):
``Store.open`` applies the ones a file lacks, in order, each in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ...core.status import JobStatus

__all__ = ["MIGRATIONS", "Migration"]


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
    Migration(
        # what made each image, read from the prompt that ran (workflows.facts)
        "002_candidate_facts",
        (
            "ALTER TABLE candidates ADD COLUMN cfg DOUBLE",
            "ALTER TABLE candidates ADD COLUMN steps INTEGER",
            "ALTER TABLE candidates ADD COLUMN sampler VARCHAR",
        ),
    ),
    Migration(
        # a copy of each server's /object_info, so UI workflows convert offline
        # (Workflow.load(path, object_info=store)); one row per server, its newest copy
        "003_object_info",
        (
            """CREATE TABLE object_info (
                server VARCHAR NOT NULL,
                fetched_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                sha256 VARCHAR NOT NULL,
                classes INTEGER NOT NULL,
                info JSON NOT NULL)""",
        ),
    ),
    Migration(
        # the latest sampler preview of each running job (at most one row per job, removed
        # when the job settles); seq grows on every write, so a view asks for what is newer
        "004_job_previews",
        (
            "CREATE SEQUENCE job_previews_seq START 1",
            """CREATE TABLE job_previews (
                job_id BIGINT PRIMARY KEY,
                seq BIGINT NOT NULL,
                mime VARCHAR NOT NULL,
                image BLOB NOT NULL,
                "at" TIMESTAMPTZ NOT NULL DEFAULT now())""",
        ),
    ),
    Migration(
        # every write of a job or candidate row takes the next number of one sequence, so a
        # view reads only the rows changed since the largest number it saw
        # (store.jobs(changed_since=...), store.candidates(changed_since=...)); rows that
        # exist get numbers now, in id order. Inserts take one by the column's default, and
        # every UPDATE of jobs or candidates sets "change_seq = nextval('changes_seq')"
        # (tests/test_changes.py reads the store's SQL for it). Writes hold the writer lock,
        # so numbers are given in commit order: a reader that saw number n has seen every
        # row numbered below it
        "005_change_seq",
        (
            "CREATE SEQUENCE changes_seq START 1",
            "ALTER TABLE jobs ADD COLUMN change_seq BIGINT DEFAULT nextval('changes_seq')",
            "ALTER TABLE candidates ADD COLUMN change_seq BIGINT DEFAULT nextval('changes_seq')",
        ),
    ),
)
