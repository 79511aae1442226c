"""The store: one DuckDB file holding runs, steps, jobs, their events and image candidates.

Example::

    >>> import comfynb
    >>> store = comfynb.open("lab.duckdb", output_dir="outputs")
    >>> run = store.new_run("portraits")
    >>> job = comfynb.enqueue(store, workflow, run=run, params={"KSampler.seed": 42})
    >>> store.jobs(run="portraits")[["id", "status", "KSampler.seed"]]
       id   status  KSampler.seed
    0   1  pending             42

Users may query the tables with plain SQL (``runs``, ``steps``, ``jobs``, ``job_events``,
``candidates``, ``object_info``, ``job_previews``); timestamps are ``TIMESTAMPTZ`` in UTC and JSON
columns are ``JSON``.

``Store`` is a facade over the modules of this package, each holding one part:

* ``connection``: opening the file, a cursor per thread, the writer lock, DuckDB's errors;
* ``migrations``: the schema, as named, ordered migrations;
* ``rows``: each table's columns, and rows made into ``Run``/``Step``/``Job``/``Candidate``;
* ``records``: the single-row reads and writes (runs, steps, a job, a candidate, pick, star);
* ``queue``: jobs written in (``add_jobs``) and claimed;
* ``frames``: the DataFrame reads and export;
* ``transaction``: what job functions write inside ``store.transaction()``, including the
  only SQL that writes a job's status.

Threads, processes: see ``connection``. Secrets: JSON written through the store (metadata,
params, errors, event details, and workflows) loses every key that looks like a secret
(``api_key*``, ``*_token``, ``*password``, ``authorization``, ...). Supply such values when
submitting, never store them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ...core.jsonio import strip_secrets
from .frames import Frames
from .migrations import MIGRATIONS, Migration
from .queue import Queue
from .records import Records
from .transaction import Transaction

if TYPE_CHECKING:
    from ..base import NotebookStore

__all__ = ["MIGRATIONS", "Migration", "Store", "Transaction", "strip_secrets"]


class Store(Records, Queue, Frames):
    """One DuckDB file of runs, steps, jobs, events and candidates; safe to share between threads.

    Example::

        >>> with comfynb.Store.open("lab.duckdb", output_dir="outputs") as store:
        ...     run = store.new_run("portraits")
        ...     store.runs()[["id", "name"]]
           id       name
        0   1  portraits

    Singular reads (``run``, ``step``, ``job``, ``candidate``) return frozen dataclasses;
    plural reads (``runs``, ``jobs``, ``candidates``, ``events``) return DataFrames. It has
    every method of ``comfynb.store.base.NotebookStore``, and the calls a worker in this
    process drives jobs with (``transaction``, the claims, ``change_counts``).
    """

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"schema {self.schema_version}"
        return f"<Store {self.path} ({state})>"

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
        with self._atomic():
            yield Transaction(self._fetch, self._shared)


if TYPE_CHECKING:

    def _has_the_interface(store: Store) -> NotebookStore:
        return store  # mypy checks that Store has every method of NotebookStore
