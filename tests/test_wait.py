"""comfynb.wait: blocks until jobs end, shows a bar, and an interrupt stops only the waiting."""

from __future__ import annotations

import _thread
import threading
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import wait_for

import comfynb
from comfynb import InvalidInput, JobStatus, Worker, enqueue
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.views import wait as waiting


def prompt(index: int) -> dict[str, Any]:
    p = trivial_prompt("wait")
    p["1"]["inputs"]["color"] = index
    return p


def test_wait_returns_when_the_jobs_end_with_a_summary(
    sim: Simulator, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.new_run("r")
    jobs = [enqueue(store, prompt(i), run="r") for i in range(6)]
    sim.set_faults(fail_node={"node_id": "2", "message": "boom", "next": 1})
    comfynb.cancel(store, jobs[5])
    with Worker(store, [sim.url]).start() as worker:
        summary = comfynb.wait(store, [*jobs[:5], jobs[5].id], timeout=20)
        assert worker.is_running
    assert (summary.done, summary.failed, summary.cancelled, summary.pending) == (4, 1, 1, 0)
    assert summary.total == 6 and not summary.timed_out and not summary.interrupted
    err = capsys.readouterr().err  # not a terminal here: plain lines, as a CI log gets them
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[-1] == "jobs: 6/6 ended · 1 cancelled, 4 completed, 1 failed"
    assert len(lines) == len(set(lines)) <= 8  # a line when something changed, not per poll


def test_on_a_terminal_the_bar_is_tqdms() -> None:
    import io

    from comfynb.views import wait as wait_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wait_module._is_terminal(Terminal())
    assert not wait_module._is_terminal(io.StringIO())


def test_wait_takes_a_run_by_name_or_object(sim: Simulator, store: Store) -> None:
    run = store.new_run("r")
    other = store.new_run("other")
    for i in range(3):
        enqueue(store, prompt(i), run=run)
    enqueue(store, prompt(9), run=other, priority=-1)
    with Worker(store, [sim.url]).start():
        assert comfynb.wait(store, "r", progress=False).done == 3
        assert comfynb.wait(store, other, progress=False).done == 1


def test_wait_times_out_and_the_jobs_go_on(sim: Simulator, store: Store) -> None:
    store.new_run("r")
    sim.configure(node_seconds=0.3)
    job = enqueue(store, prompt(1), run="r")
    with Worker(store, [sim.url]).start():
        summary = comfynb.wait(store, job, timeout=0.05, progress=False)
        assert summary.timed_out and summary.pending == 1 and summary.done == 0
        sim.configure(node_seconds=0)
        assert comfynb.wait(store, job, timeout=10, progress=False).done == 1


def test_an_interrupt_stops_the_waiting_not_the_worker(sim: Simulator, store: Store) -> None:
    store.new_run("r")
    sim.configure(node_seconds=30)  # the job stays running until the test lets it go
    job = enqueue(store, prompt(1), run="r")
    worker = Worker(store, [sim.url]).start()
    try:
        wait_for(lambda: store.job(job.id).status is JobStatus.RUNNING, timeout=10)
        # Ctrl-C in the cell: a KeyboardInterrupt in the main thread while wait() blocks
        timer = threading.Timer(0.2, _thread.interrupt_main)
        timer.start()
        summary = comfynb.wait(store, job, timeout=20, progress=False)
        timer.join()
        assert summary.interrupted and summary.pending == 1
        assert worker.is_running
        sim.configure(node_seconds=0)
        assert comfynb.wait(store, job, timeout=20, progress=False).done == 1
    finally:
        worker.stop()


def test_wait_refuses_what_is_not_jobs_or_a_run(store: Store) -> None:
    with pytest.raises(InvalidInput, match="wait takes"):
        comfynb.wait(store, 3.5, progress=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="jobs or job ids"):
        comfynb.wait(store, [1, "x"], progress=False)  # type: ignore[list-item]


def test_the_widget_bar_shows_the_real_total_and_ends_full_when_there_are_no_jobs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The widget path as in Jupyter, without a kernel: ipywidgets needs none to hold its
    # traits, and display() is caught instead of sent (tests/test_browser_wait.py renders it).
    shown: list[Any] = []
    monkeypatch.setattr(waiting, "_in_jupyter", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    store.new_run("empty")
    assert comfynb.wait(store, "empty").total == 0
    bar, label = shown[0].children
    assert label.value == "0/0 ended"  # was "0/1 ended · ": the bar's max shown as the total
    assert (bar.value, bar.max, bar.bar_style) == (1, 1, "success")
