"""The store keeps each server's ``/object_info`` (a worker saves it when a server first
answers), so a UI workflow converts offline: ``Workflow.load(path, object_info=store)``;
``object_info`` may also be a server URL, fetched once with the standard library (issue 12).

Real things: the simulator over sockets, real DuckDB files, a RemoteStore through the
endpoint served on this process's threads.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import wait_for

import comfynb
from comfynb import (
    InvalidInput,
    ObjectInfoNotFound,
    RecordNotFound,
    StoreWriteFailed,
    Worker,
    Workflow,
    WorkflowError,
)
from comfynb.service.remote import RemoteStore, serve
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.workflows.load import fetch_object_info

DATA = Path(__file__).parent / "data"
UI = DATA / "ui-to-api" / "default_sd15_ui.ui.json.gz"
API = DATA / "ui-to-api" / "default_sd15_ui.api.json.gz"


def read_gz(path: Path) -> Any:
    with gzip.open(path) as f:
        return json.load(f)


@pytest.fixture
def ui_file(tmp_path: Path) -> Path:
    """The default graph as ComfyUI's "Save" writes it (UI format)."""
    path = tmp_path / "default.json"
    path.write_text(json.dumps(read_gz(UI)))
    return path


@pytest.fixture
def own_sim(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator of this test's own, which it may stop."""
    with Simulator(root=tmp_path / "sim") as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def copies(store: Store) -> list[tuple[Any, ...]]:
    """The cache's rows as stored: server, fetched_at, sha256, classes."""
    return store._fetch("SELECT server, fetched_at, sha256, classes FROM object_info ORDER BY 1")


# --------------------------------------------------------------------------- the worker fills it


def test_a_worker_keeps_the_servers_object_info_and_ui_workflows_then_convert_offline(
    store: Store, own_sim: Simulator, ui_file: Path
) -> None:
    with comfynb.Client(own_sim.url) as client:
        served = client.object_info()
    url = own_sim.url
    Worker(store, [url]).run()  # nothing to run: it returns once the server was checked
    assert store.object_info(url) == served
    assert store.object_info() == served  # the newest of any server's
    assert store.object_info(url.replace("127.0.0.1", "localhost") + "/") == served  # one spelling
    own_sim.stop()
    with pytest.raises(WorkflowError):
        Workflow.load(ui_file, object_info=url)  # the server is gone indeed
    wf = Workflow.load(ui_file, object_info=store)  # offline
    assert wf.to_api() == read_gz(API)
    assert wf.source == "default.json (UI format, converted)"


def test_a_worker_rewrites_the_copy_only_when_the_server_changed(
    store: Store, sim: Simulator
) -> None:
    Worker(store, [sim.url]).run()
    first = copies(store)
    assert [(row[0], row[3]) for row in first] == [(sim.url, len(store.object_info()))]
    Worker(store, [sim.url]).run()
    assert copies(store) == first  # unchanged: not rewritten (same fetched_at)
    sim.reset(version="0.8.0")  # the server was upgraded... downgraded: other classes
    Worker(store, [sim.url]).run()
    again = copies(store)
    assert len(again) == 1 and again[0][2] != first[0][2] and again[0][1] > first[0][1]
    with comfynb.Client(sim.url) as client:
        assert store.object_info(sim.url) == client.object_info()


def test_a_copy_that_cannot_be_kept_is_logged_and_the_worker_goes_on(
    store: Store, sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(server: str, info: Any) -> bool:
        raise StoreWriteFailed("disk full", path=store.path)

    monkeypatch.setattr(store, "save_object_info", full_disk)
    store.new_run("r")
    job = comfynb.enqueue(store, trivial_prompt(), run="r")
    with caplog.at_level(logging.WARNING, logger="comfynb.worker"):
        summary = Worker(store, [sim.url]).run()
    assert summary.completed == 1 and store.job(job.id).status is comfynb.JobStatus.COMPLETED
    said = [r.getMessage() for r in caplog.records if "object_info" in r.getMessage()]
    assert len(said) == 1 and "not kept in the store (StoreWriteFailed: disk full)" in said[0]
    assert "the worker goes on" in said[0]


def test_keeping_the_copy_costs_the_round_nothing(
    store: Store, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save runs on its own thread: a store write held back does not hold the loop, and
    ``stop()`` waits for it."""
    real = store.save_object_info
    gate = threading.Event()
    saved: list[bool] = []

    def held_back(server: str, info: Any) -> bool:
        assert gate.wait(5)
        saved.append(real(server, info))
        return saved[-1]

    monkeypatch.setattr(store, "save_object_info", held_back)
    store.new_run("r")
    job = comfynb.enqueue(store, trivial_prompt(), run="r")
    worker = Worker(store, [sim.url]).start()
    try:
        comfynb.wait(store, [job], timeout=5, progress=False)
        assert store.job(job.id).status is comfynb.JobStatus.COMPLETED
        assert not saved  # the job ran while the copy waited
    finally:
        gate.set()
        worker.stop()
    assert saved == [True]  # stop() waited for the save
    assert store.object_info(sim.url)


# --------------------------------------------------------------------------- Workflow.load


def test_a_server_url_is_fetched_once_with_the_standard_library(
    sim: Simulator, ui_file: Path
) -> None:
    wf = Workflow.load(ui_file, object_info=sim.url)
    assert wf.to_api() == read_gz(API)
    wf2 = Workflow.load(ui_file, object_info=sim.url.replace("127.0.0.1", "localhost") + "/")
    assert wf2 == wf


def test_a_url_nobody_listens_on_is_a_workflow_error_naming_it(ui_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(WorkflowError, match=rf"GET {url}/object_info failed") as caught:
        Workflow.load(ui_file, object_info=url)
    assert time.monotonic() - start < 5
    assert "is the ComfyUI server up?" in str(caught.value)
    assert "object_info=store" in str(caught.value)  # what to do offline


def test_what_object_info_cannot_be_is_a_workflow_error(ui_file: Path, sim: Simulator) -> None:
    with pytest.raises(WorkflowError, match=r"object_info='127.0.0.1:8188'.*no scheme"):
        Workflow.load(ui_file, object_info="127.0.0.1:8188")
    with pytest.raises(WorkflowError, match=r"a server URL .* got int"):
        Workflow.load(ui_file, object_info=42)
    sim.set_faults(http_500_next=1, routes=["/object_info"])
    with pytest.raises(WorkflowError, match=rf"GET {sim.url}/object_info answered HTTP 500"):
        Workflow.load(ui_file, object_info=sim.url)
    sim.set_faults(slow_next=1, slow_seconds=1.0, routes=["/object_info"])
    start = time.monotonic()
    with pytest.raises(WorkflowError, match=rf"GET {sim.url}/object_info failed \(timed out"):
        fetch_object_info(sim.url, timeout=0.2)
    assert time.monotonic() - start < 1.5
    with pytest.raises(WorkflowError, match=r"pass object_info= a server URL"):
        Workflow.load(ui_file)


def test_an_empty_store_says_how_to_get_a_copy(store: Store, ui_file: Path) -> None:
    with pytest.raises(ObjectInfoNotFound) as caught:
        Workflow.load(ui_file, object_info=store)
    error = caught.value
    assert isinstance(error, RecordNotFound) and error.key is None
    message = str(error)
    assert "no /object_info copy of any server" in message
    assert "comfynb worker --db FILE --server http://127.0.0.1:8188" in message
    assert "store.save_object_info(" in message
    store.save_object_info("http://127.0.0.1:8188", {"EmptyImage": {"input": {}}})
    with pytest.raises(
        ObjectInfoNotFound,
        match=r"copy of http://gpu1:8188 \(it has copies of "
        r"http://127.0.0.1:8188\)",
    ) as other:
        store.object_info("http://GPU1:8188/")
    assert other.value.key == "http://gpu1:8188"


def test_save_object_info_refuses_what_is_not_object_info(store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"info is the /object_info dict.*got list"):
        store.save_object_info("http://127.0.0.1:8188", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"no scheme"):
        store.save_object_info("127.0.0.1:8188", {"A": {}})
    with pytest.raises(ObjectInfoNotFound):
        store.object_info()  # nothing was written


def test_a_copy_keeps_what_json_allows_and_secrets_do_not_apply(store: Store) -> None:
    """``/object_info`` is the server's public description: kept exactly (hidden inputs named
    ``api_key_comfy_org``, ``Infinity`` bounds, 64-bit maxima), unlike job JSON."""
    info = read_gz(DATA / "object_info_0.33.0.json.gz")
    info["Unbounded"] = {"input": {"required": {"x": ["FLOAT", {"max": float("inf")}]}}}
    assert store.save_object_info("http://127.0.0.1:8188", info) is True
    assert store.object_info() == info
    assert store.save_object_info("http://localhost:8188", info) is False  # the same server


# --------------------------------------------------------------------------- through a worker


def test_through_a_remote_store_the_same(store: Store, own_sim: Simulator, ui_file: Path) -> None:
    Worker(store, [own_sim.url]).run()
    own_sim.stop()
    with serve(store), comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore)
        wf = Workflow.load(ui_file, object_info=remote)  # offline, through the worker
        assert wf.to_api() == read_gz(API)
        assert remote.object_info(own_sim.url) == store.object_info()
        assert remote.save_object_info(own_sim.url, remote.object_info()) is False
        with pytest.raises(ObjectInfoNotFound, match=r"no /object_info copy of http://gpu1") as e:
            remote.object_info("http://gpu1")
        assert e.value.key == "http://gpu1"
        assert remote.save_object_info("http://gpu1", {"EmptyImage": {"input": {}}}) is True
        assert store.object_info("http://gpu1") == {"EmptyImage": {"input": {}}}
        with pytest.raises(InvalidInput, match=r"info is the /object_info dict.*got list"):
            remote.save_object_info("http://gpu1", [1])  # type: ignore[arg-type]
        real = read_gz(DATA / "object_info_0.33.0.json.gz")
        real["Unbounded"] = {"input": {"required": {"x": ["FLOAT", {"max": float("inf")}]}}}
        assert remote.save_object_info("http://gpu2", real) is True
        assert remote.object_info("http://gpu2") == real == store.object_info("http://gpu2")


def test_a_worker_process_keeps_the_copy_for_the_notebook_beside_it(
    own_sim: Simulator, tmp_path: Path, ui_file: Path
) -> None:
    """``comfynb worker`` (a real subprocess) on a server; the notebook converts through it,
    offline; the copy stays in the file once the worker is gone."""
    from test_cli_worker import WorkerProcess

    db = tmp_path / "lab.duckdb"
    worker = WorkerProcess(db, [own_sim.url])
    try:
        worker.wait_serving()
        with comfynb.open(db) as remote:
            assert isinstance(remote, RemoteStore)

            def kept() -> dict[str, Any] | None:
                try:
                    return remote.object_info(own_sim.url)
                except ObjectInfoNotFound:
                    return None

            served = wait_for(kept, timeout=10, interval=0.02)
            own_sim.stop()
            assert Workflow.load(ui_file, object_info=remote).to_api() == read_gz(API)
        assert worker.stop() == 0
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    assert f"server {own_sim.url}: its /object_info (" in worker.stderr()
    with comfynb.open(db) as local:
        assert isinstance(local, Store) and local.object_info() == served
        assert Workflow.load(ui_file, object_info=local).to_api() == read_gz(API)
