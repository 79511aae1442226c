"""comfynb.JobTable with more jobs than a page: the browser holds one page, the kernel all.

What the widget publishes on its comm is recorded as in tests/test_jobtable.py. The tables
here look at the store only when the test says so (``refresh()``; their own thread waits a
minute), so every message is the answer to one step of the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import trivial_prompt
from test_jobtable import Recorder

import comfynb
from comfynb import InvalidInput, JobStatus, JobTable
from comfynb.service.remote import RemoteStore, serve
from comfynb.store import Store
from comfynb.store.lifecycle import transition

JOBS = 25
PAGE = 10


class Reads:
    """A store that records what each ``jobs`` read asked and how many rows it got."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: list[tuple[int | None, int]] = []

    def jobs(self, *args: Any, **kwargs: Any) -> Any:
        frame = self._store.jobs(*args, **kwargs)
        self.reads.append((kwargs.get("changed_since"), len(frame)))
        return frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def jobs(store: Store) -> list[comfynb.Job]:
    store.new_run("r")
    made = comfynb.enqueue_many(store, [trivial_prompt(f"t{i}") for i in range(JOBS)], run="r")
    for job in (made[2], made[16]):  # one on the first page, one on the second
        transition(store, job.id, JobStatus.FAILED, error={"type": "OOM", "message": "out"})
    return made


@pytest.fixture
def table_of() -> Iterator[Any]:
    tables: list[JobTable] = []

    def make(store: Any, **kwargs: Any) -> tuple[JobTable, Recorder]:
        table = JobTable(store, run="r", interval=60, page_size=PAGE, **kwargs)
        tables.append(table)
        return table, Recorder(table)

    yield make
    for table in tables:
        table.close()


def last(recorder: Recorder, kind: str) -> dict[str, Any]:
    return [m for m in recorder.messages if m["type"] == kind][-1]


def ids(message: dict[str, Any]) -> list[int]:
    return [r["id"] for r in message["rows"]]


def test_opening_sends_one_page_with_the_counts_and_pages_on(
    store: Store, jobs: list[comfynb.Job], table_of: Any
) -> None:
    table, recorder = table_of(store)
    table._on_message(table, {"type": "hello"}, [])  # what the view sends when it renders
    opened = last(recorder, "reset")
    assert ids(opened) == [j.id for j in jobs[:PAGE]]
    assert (opened["start"], opened["total"]) == (0, JOBS)
    assert opened["counts"] == {"pending": JOBS - 2, "failed": 2}
    assert len(table.rows()) == JOBS  # the kernel holds every job of the run
    assert [r["id"] for r in table.page_rows()] == ids(opened)

    table.page = 2  # the browser's "next" arrow sets the same trait
    third = last(recorder, "reset")
    assert ids(third) == [j.id for j in jobs[2 * PAGE :]]
    assert (third["start"], third["total"]) == (2 * PAGE, JOBS)
    table.page = 9  # past the end: the last page
    assert last(recorder, "reset")["start"] == 2 * PAGE

    # a page is what one costs: a tenth of the table here
    whole = len(json.dumps(table.rows()))
    assert len(json.dumps(opened)) < whole / 2


def test_the_status_filter_runs_over_every_job_in_the_kernel(
    store: Store, jobs: list[comfynb.Job], table_of: Any
) -> None:
    table, recorder = table_of(store)
    table.page = 1
    table.status = "failed"  # a new filter starts at its first page
    assert table.page == 0
    failed = last(recorder, "reset")
    assert ids(failed) == [jobs[2].id, jobs[16].id]  # one of them was on no page shown
    assert (failed["start"], failed["total"]) == (0, 2)
    assert [r["id"] for r in table.page_rows()] == ids(failed)

    transition(store, jobs[20].id, JobStatus.FAILED, error={"type": "OOM", "message": "x"})
    table.refresh()
    assert ids(last(recorder, "rows")) == [jobs[20].id]  # it joins the filtered page
    assert last(recorder, "rows")["total"] == 3


def test_a_look_sends_only_the_changed_rows_of_the_page_and_the_counts(
    store: Store, jobs: list[comfynb.Job], table_of: Any
) -> None:
    reads = Reads(store)
    table, recorder = table_of(reads)
    table._on_message(table, {"type": "hello"}, [])
    assert reads.reads[0] == (0, JOBS)  # the first look reads every job once
    before = len(recorder.messages)
    table.refresh()
    assert len(recorder.messages) == before  # nothing changed: nothing sent
    assert reads.reads[-1][1] == 0  # and nothing read but the empty answer

    comfynb.cancel(store, jobs[14].id)  # on the second page: only the counts move
    table.refresh()
    assert reads.reads[-1][1] == 1  # the look read one row, not the run
    off_page = last(recorder, "rows")
    assert off_page["rows"] == []
    assert off_page["counts"] == {"pending": JOBS - 3, "failed": 2, "cancelled": 1}

    comfynb.cancel(store, jobs[4].id)  # on the page shown
    transition(store, jobs[5].id, JobStatus.SUBMITTED, prompt_id="p", server="http://x:1")
    table.refresh()
    on_page = last(recorder, "rows")
    assert [(r["id"], r["status"]) for r in on_page["rows"]] == [
        (jobs[4].id, "cancelled"),
        (jobs[5].id, "submitted"),
    ]
    assert reads.reads[-1][1] == 2
    assert {r["id"]: r["status"] for r in table.rows()}[jobs[14].id] == "cancelled"


def test_cancel_and_retry_reach_jobs_on_any_page(
    store: Store, jobs: list[comfynb.Job], table_of: Any
) -> None:
    table, recorder = table_of(store)
    table._on_message(table, {"type": "cancel", "ids": [jobs[22].id]}, [])  # selected, then paged
    assert store.job(jobs[22].id).status is JobStatus.CANCELLED
    table._on_message(table, {"type": "retry", "failed": True}, [])  # "Retry failed", none chosen
    again = store.jobs(run="r", status="pending")
    assert sorted(again["id"])[-2:] == [JOBS + 1, JOBS + 2]  # both failed jobs, queued again
    assert [m["text"] for m in recorder.messages if m["type"] == "note"] == [
        "1 cancelled",
        "2 queued again",
    ]
    assert last(recorder, "rows")["total"] == JOBS + 2
    # "Retry failed" with rows selected: only the failed ones among them
    table._on_message(table, {"type": "retry", "ids": [jobs[0].id, jobs[2].id]}, [])
    assert last(recorder, "note")["text"] == "1 queued again"


def test_pages_through_a_worker_endpoint(
    store: Store, jobs: list[comfynb.Job], table_of: Any
) -> None:
    with serve(store):
        remote = comfynb.open(store.path)
        assert isinstance(remote, RemoteStore)
        with remote:
            table, recorder = table_of(remote)
            table._on_message(table, {"type": "hello"}, [])
            assert last(recorder, "reset")["total"] == JOBS
            comfynb.cancel(remote, jobs[1].id)
            table.refresh()
            assert [(r["id"], r["status"]) for r in last(recorder, "rows")["rows"]] == [
                (jobs[1].id, "cancelled")
            ]
            table.status = "cancelled"
            assert ids(last(recorder, "reset")) == [jobs[1].id]
            table.stop()


def test_a_bad_page_size_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="page_size is rows per page"):
        JobTable(store, page_size=0)
