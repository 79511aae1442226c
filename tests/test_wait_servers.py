"""``comfynb.wait`` shows a server the worker cannot use (issue 11, section 2).

With a wrong URL, ``wait`` used to time out with ``1 pending`` and nothing else; now what the
worker says of its down servers (``worker.status()``, or through a worker process's endpoint)
is in the bar's text and in ``WaitSummary.servers_down``.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST_RETRY
from sim_helpers import wait_for
from test_servers_said import closed_port, unique

import comfynb
from comfynb import Worker, enqueue
from comfynb.service.remote import RemoteStore, serve
from comfynb.store import Store
from comfynb.views import wait as waiting


def test_wait_shows_a_down_server_in_the_bar_and_the_summary(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "SERVERS_EVERY", 0.05)
    store.new_run("r")
    job = enqueue(store, unique(1), run="r")
    dead = closed_port()
    with Worker(store, [dead], client_options={"retry": FAST_RETRY}).start() as worker:
        # its first check done (as in the tests below): not a race with a 1 s wait's timeout
        wait_for(lambda: worker.status().servers[0].last_error, timeout=5)
        summary = comfynb.wait(store, job, timeout=1.0)
    assert summary.timed_out and summary.pending == 1
    assert len(summary.servers_down) == 1
    said = summary.servers_down[0]
    assert said.startswith(f"{dead} down since ") and said.endswith("connection refused")
    assert said in repr(summary)  # what a notebook shows of it
    assert f"server {dead} down since" in capsys.readouterr().err  # tqdm's bar


def test_the_widget_bar_says_which_server_is_down(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(waiting, "_in_jupyter", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    store.new_run("r")
    job = enqueue(store, unique(1), run="r")
    dead = closed_port()
    with Worker(store, [dead]).start() as worker:
        wait_for(lambda: worker.status().servers[0].last_error, timeout=5)
        comfynb.wait(store, job, timeout=0.3)
    bar, label = shown[0].children
    assert label.value.startswith("0/1 ended · 1 pending · server ")
    assert f"{dead} down since" in label.value and "connection refused" in label.value
    assert bar.bar_style == "warning"


def test_wait_through_a_worker_s_endpoint_shows_its_down_server(store: Store) -> None:
    store.new_run("r")
    job = enqueue(store, unique(1), run="r")
    dead = closed_port()
    with serve(store), Worker(store, [dead]).start() as worker, comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore)
        wait_for(lambda: worker.status().servers[0].last_error, timeout=5)
        summary = comfynb.wait(remote, job, timeout=0.3, progress=False)
    assert summary.timed_out
    assert [s.split(" down since ")[0] for s in summary.servers_down] == [dead]
