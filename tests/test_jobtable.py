"""comfynb.JobTable in Python: what it sends the browser, cancel and retry, the static HTML.

The widget's comm is ipywidgets' own (a ``comm.DummyComm`` outside a kernel); the tests
record what it publishes. tests/test_browser_jobtable.py looks at the same widget in
JupyterLab.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import wait_for

import comfynb
from comfynb import InvalidInput, JobStatus, JobTable
from comfynb.service.remote import RemoteStore, serve
from comfynb.store import Store
from comfynb.store.lifecycle import transition


class Recorder:
    """What a widget published on its comm: the custom messages' contents."""

    def __init__(self, table: JobTable) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        comm = table.comm
        assert comm is not None
        original = comm.publish_msg

        def publish(msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
            if isinstance(data, dict) and data.get("method") == "custom":
                with self.lock:
                    self.messages.append(data["content"])
            original(msg_type, data, *args, **kwargs)

        comm.publish_msg = publish  # type: ignore[method-assign]

    def rows_messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m.get("type") == "rows"]


@pytest.fixture
def table_of(store: Store) -> Iterator[Any]:
    tables: list[JobTable] = []

    def make(*args: Any, **kwargs: Any) -> JobTable:
        table = JobTable(*args, interval=kwargs.pop("interval", 0.2), **kwargs)
        tables.append(table)
        return table

    yield make
    for table in tables:
        table.close()


def enqueue(store: Any, run: str, n: int = 1) -> list[comfynb.Job]:
    if run not in set(store.runs()["name"]):
        store.new_run(run)
    return [comfynb.enqueue(store, trivial_prompt(f"t{i}"), run=run) for i in range(n)]


def test_a_new_job_and_a_cancel_send_only_their_rows(store: Store, table_of: Any) -> None:
    jobs = enqueue(store, "portraits", 3)
    table = table_of(store, run="portraits")
    recorder = Recorder(table)
    assert [r["status"] for r in table.rows()] == ["pending"] * 3

    new = enqueue(store, "portraits")[0]
    first = wait_for(lambda: recorder.rows_messages(), timeout=5)
    assert [r["id"] for r in first[0]["rows"]] == [new.id]  # one row, not the table

    comfynb.cancel(store, jobs[1])
    sent = wait_for(
        lambda: [m for m in recorder.rows_messages() if m["rows"][0]["status"] == "cancelled"]
    )
    assert [(r["id"], r["status"]) for r in sent[0]["rows"]] == [(jobs[1].id, "cancelled")]
    # nothing changed since: no more messages (a look that finds nothing sends nothing)
    count = len(recorder.rows_messages())
    table.refresh()
    assert len(recorder.rows_messages()) == count


def test_the_browser_asks_for_the_rows_and_filters_by_run(store: Store, table_of: Any) -> None:
    enqueue(store, "a", 2)
    enqueue(store, "b", 1)
    table = table_of(store)
    recorder = Recorder(table)
    assert table.runs == ["a", "b"]
    table._on_message(table, {"type": "hello"}, [])  # what the view sends when it renders
    reset = [m for m in recorder.messages if m["type"] == "reset"][-1]
    assert sorted(r["run"] for r in reset["rows"]) == ["a", "a", "b"]

    table.run = "b"  # the dropdown in the browser sets the same trait
    reset = [m for m in recorder.messages if m["type"] == "reset"][-1]
    assert [r["run"] for r in reset["rows"]] == ["b"]
    assert [r["run"] for r in table.rows()] == ["b"]


def test_cancel_and_retry_buttons_go_through_the_job_functions(store: Store, table_of: Any) -> None:
    pending, failing = enqueue(store, "r", 2)
    transition(store, failing.id, JobStatus.FAILED, error={"type": "OOM", "message": "out\nof"})
    table = table_of(store, run="r")
    recorder = Recorder(table)
    row = {r["id"]: r for r in table.rows()}[failing.id]
    assert row["error_line"] == "OOM: out"  # the first line; the rest on click
    assert "of" in row["error_full"]

    table._on_message(table, {"type": "cancel", "ids": [pending.id]}, [])
    assert store.job(pending.id).status is JobStatus.CANCELLED
    table._on_message(table, {"type": "retry", "ids": [failing.id]}, [])
    assert store.job(failing.id).status is JobStatus.FAILED  # failed is final
    queued = store.jobs(run="r", status="pending")["id"].tolist()
    assert len(queued) == 1
    again = store.job(queued[0])
    assert again.metadata["retry_of"] == failing.id and again.workflow == failing.workflow
    notes = [m["text"] for m in recorder.messages if m["type"] == "note"]
    assert notes == ["1 cancelled", "1 queued again"]
    from comfynb.jobs.retry import replaced_by_retries

    assert replaced_by_retries(store.jobs(run="r")["metadata"]) == {failing.id}


def test_retry_failed_refuses_a_job_that_did_not_fail(store: Store) -> None:
    job = enqueue(store, "r")[0]
    with pytest.raises(InvalidInput, match="only a failed job is retried"):
        comfynb.retry_failed(store, job)


def test_outside_a_kernel_the_output_holds_a_small_static_table(
    store: Store, table_of: Any
) -> None:
    jobs = enqueue(store, "r", 60)
    comfynb.cancel(store, jobs[0])
    table = table_of(store, run="r")
    data, _ = table._repr_mimebundle_()
    page = data["text/html"]
    assert "60 jobs: 59 pending, 1 cancelled" in page
    assert page.count("<tr>") == 1 + 50 and "and 10 more jobs" in page
    assert "application/vnd.jupyter.widget-view+json" in data
    assert len(page) < 20_000


def test_a_table_follows_a_store_through_the_worker_endpoint(
    store: Store, table_of: Any, tmp_path: Path
) -> None:
    with serve(store):
        remote = comfynb.open(store.path)
        assert isinstance(remote, RemoteStore)
        with remote:
            job = enqueue(remote, "r")[0]
            table = table_of(remote, run="r")
            assert [r["id"] for r in table.rows()] == [job.id]
            later = enqueue(remote, "r")[0]
            wait_for(lambda: len(table.rows()) == 2)
            assert table.cancel([later.id]) == []
            assert store.job(later.id).status is JobStatus.CANCELLED
            table.stop()


def test_a_bad_interval_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"at least 0\.2"):
        JobTable(store, interval=0.01)


def test_progress_of_a_running_job_is_sent_as_it_moves(store: Store, table_of: Any) -> None:
    job = enqueue(store, "r")[0]
    table = table_of(store, run="r")
    recorder = Recorder(table)
    transition(store, job.id, JobStatus.SUBMITTED, prompt_id="p1", server="http://127.0.0.1:9")
    transition(store, job.id, JobStatus.RUNNING)
    wait_for(lambda: table.rows()[0]["status"] == "running")
    with store.transaction() as tx:  # what the worker records from progress events
        tx.set_progress({job.id: (2, 4)})

    def sent_progress() -> Any:
        return [r for m in recorder.rows_messages() for r in m["rows"] if r["progress_value"] == 2]

    row = wait_for(sent_progress)[0]
    assert (row["status"], row["progress_max"]) == ("running", 4)


def test_previews_go_as_binary_buffers_only_when_new(store: Store, table_of: Any) -> None:
    job, other = enqueue(store, "r", 2)
    for one in (job, other):
        transition(store, one.id, JobStatus.SUBMITTED, prompt_id=f"p{one.id}", server="http://s")
        transition(store, one.id, JobStatus.RUNNING)
    table = table_of(store, run="r", interval=60)  # looks only when the test refreshes
    sent: list[tuple[dict[str, Any], list[bytes]]] = []
    comm = table.comm
    assert comm is not None
    original = comm.publish_msg

    def publish(msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
        content = data.get("content", {}) if isinstance(data, dict) else {}
        if isinstance(content, dict) and "previews" in content:
            sent.append((content, [bytes(b) for b in kwargs.get("buffers") or []]))
        original(msg_type, data, *args, **kwargs)

    comm.publish_msg = publish  # type: ignore[method-assign]
    with store.transaction() as tx:  # what the worker records from preview frames
        tx.set_previews({job.id: ("image/png", b"\x89PNG-1"), other.id: ("image/jpeg", b"J")})
    table.refresh()
    [(message, buffers)] = sent
    pairs = zip(message["previews"], buffers, strict=True)
    got = {p["id"]: (p["mime"], image) for p, image in pairs}
    # bytes as buffers, one per preview, not base64 in the JSON
    assert got == {job.id: ("image/png", b"\x89PNG-1"), other.id: ("image/jpeg", b"J")}
    table.refresh()
    assert len(sent) == 1  # nothing new: nothing sent
    with store.transaction() as tx:
        tx.set_previews({job.id: ("image/png", b"\x89PNG-2")})
    table.refresh()
    assert sent[-1][0]["previews"] == [{"id": job.id, "mime": "image/png"}]
    assert sent[-1][1] == [b"\x89PNG-2"]
    table._on_message(table, {"type": "hello"}, [])  # a new view: every current preview
    assert sent[-1][0]["type"] == "reset"  # with the page's rows, in the same message
    assert sorted(sent[-1][1]) == [b"J", b"\x89PNG-2"]
    before = table.messages_sent
    with store.transaction() as tx:  # a look that finds a moved row and a new preview
        tx.set_progress({job.id: (3, 8)})
        tx.set_previews({job.id: ("image/png", b"\x89PNG-3")})
    table.refresh()
    assert table.messages_sent == before + 1  # one message for the look
    assert sent[-1][0]["type"] == "rows" and sent[-1][1] == [b"\x89PNG-3"]


def test_a_table_whose_output_was_cleared_rests_until_shown_again(
    store: Store, table_of: Any
) -> None:
    enqueue(store, "portraits")
    table = table_of(store, run="portraits")
    recorder = Recorder(table)
    assert table.watched  # never shown yet: it follows the store (scripts, table.rows())
    table._on_message(table, {"type": "hello"}, [])
    table._on_message(table, {"type": "bye"}, [])  # the cell ran again: its view went
    assert not table.watched
    wait_for(lambda: table._watchers.parked, timeout=5)  # its thread waits, looking at nothing
    new = enqueue(store, "portraits")[0]
    before = len(recorder.messages)
    table._on_message(table, {"type": "hello"}, [])  # shown again: the page as it is now
    assert table.watched
    reset = recorder.messages[before]
    assert reset["type"] == "reset" and new.id in [r["id"] for r in reset["rows"]]
    wait_for(lambda: not table._watchers.parked, timeout=5)
    table.close()  # a parked thread ends too
    assert table._thread is not None and not table._thread.is_alive()
