"""The store interface (comfynb.store.base): both stores have it, exactly, and a served store
refuses the worker's calls with one error.

The served store here is a real RemoteStore reaching an endpoint served on this process's
threads over loopback (as in tests/test_remote_store.py).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RETRY, trivial_prompt

import comfynb
from comfynb import JobStatus, OwnedByWorker, StoreError
from comfynb.service.remote import Endpoint, RemoteStore, serve
from comfynb.simulator import Simulator
from comfynb.store import ChangeCounts, NotebookStore, ServedStore, Store
from comfynb.store.lifecycle import release_claims

# --------------------------------------------------------------------------- the same interface


def interface() -> dict[str, Any]:
    """The members NotebookStore declares: methods and properties, by name."""
    return {
        name: value
        for name, value in vars(NotebookStore).items()
        if (callable(value) or isinstance(value, property))
        and (not name.startswith("_") or name in ("__enter__", "__exit__"))
    }


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any, str]]:
    """A signature without ``self``: each parameter's name, kind, default and annotation text."""
    signature = inspect.signature(inspect.unwrap(function))
    return [
        (p.name, p.kind, p.default, str(p.annotation))
        for p in list(signature.parameters.values())[1:]
    ]


def returns(function: Callable[..., Any]) -> str:
    return str(inspect.signature(inspect.unwrap(function)).return_annotation)


def test_the_interface_has_what_a_notebook_uses() -> None:
    assert set(interface()) == set(
        [
            "path",
            "output_dir",
            "schema_version",
            "close",
            "__enter__",
            "__exit__",
            "new_run",
            "run",
            "new_step",
            "step",
            "add_jobs",
            "job",
            "unsettled_jobs",
            "status_counts",
            "candidate",
            "image_path",
            "pick",
            "star",
            "lineage",
            "runs",
            "jobs",
            "candidates",
            "events",
            "previews",
            "export",
            "object_info",
            "save_object_info",
        ]
    )


@pytest.mark.parametrize("implementation", [Store, RemoteStore], ids=lambda c: c.__name__)
def test_each_store_matches_the_interface_signature_for_signature(implementation: type) -> None:
    for name, declared in interface().items():
        if isinstance(declared, property):
            if name in ("path", "output_dir"):  # plain attributes on both, set when opened
                continue
            found = getattr(implementation, name)
            assert isinstance(found, property), name
            assert returns(found.fget) == returns(declared.fget), name
            continue
        found = getattr(implementation, name)
        assert parameters(found) == parameters(declared), name
        assert returns(found) == returns(declared), name


def test_the_two_stores_have_the_same_attributes(store: Store, endpoint: Endpoint) -> None:
    with comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore) and isinstance(remote, ServedStore)
        assert (remote.path, remote.output_dir) == (store.path, store.output_dir)
        assert isinstance(remote.path, str) and isinstance(remote.output_dir, Path)


def test_every_other_store_call_is_refused_by_a_served_store_with_the_same_arguments() -> None:
    """Whatever Store has beyond the interface is the worker's: a served store refuses it."""
    beyond = {
        name
        for name in dir(Store)
        if not name.startswith("_") and name not in interface() and name != "open"
    }
    assert beyond == set(
        [
            "transaction",
            "claim_next_job",
            "claim_next_jobs",
            "claimable",
            "record_intent",
            "change_counts",
            "candidates_by_sha256",
        ]
    )
    for name in beyond:
        refusal = vars(ServedStore)[name]
        assert parameters(refusal) == parameters(getattr(Store, name)), name
        assert returns(refusal) == "NoReturn", name


# --------------------------------------------------------------------------- the refusals


@pytest.fixture
def endpoint(store: Store) -> Iterator[Endpoint]:
    with serve(store) as served:
        yield served


@pytest.fixture
def remote(endpoint: Endpoint, store: Store) -> Iterator[RemoteStore]:
    opened = comfynb.open(store.path)
    assert isinstance(opened, RemoteStore)
    with opened:
        yield opened


REFUSED: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "transaction": ((), {}),
    "claim_next_job": ((), {"server": "http://127.0.0.1:1"}),
    "claim_next_jobs": ((3,), {}),
    "claimable": ((["http://127.0.0.1:1"],), {}),
    "record_intent": ((1,), {"prompt_id": "p"}),
    "change_counts": ((), {}),
}


def assert_refused(caught: pytest.ExceptionInfo[OwnedByWorker], remote: RemoteStore) -> None:
    error = caught.value
    assert isinstance(error, StoreError)
    assert (error.pid, error.path) == (os.getpid(), remote.path)
    message = str(error)
    assert f"owned by the comfynb worker (PID {os.getpid()})" in message
    assert "comfynb.enqueue" in message and "stop the worker" in message


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_worker_call_is_refused_at_once_and_nothing_is_sent(
    remote: RemoteStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_request(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused call was sent to the worker")

    monkeypatch.setattr(remote, "_request", no_request)  # a spy: the refusal is local
    args, kwargs = REFUSED[name]
    with pytest.raises(OwnedByWorker, match=rf"store\.{name}\(\) is refused") as caught:
        getattr(remote, name)(*args, **kwargs)
    assert_refused(caught, remote)
    assert caught.value.call == f"store.{name}()"


def test_the_job_functions_of_a_worker_are_refused_on_a_served_store(
    sim: Simulator, remote: RemoteStore, store: Store
) -> None:
    remote.new_run("r")
    job = comfynb.enqueue(remote, trivial_prompt(), run="r")
    with pytest.raises(OwnedByWorker) as caught:
        comfynb.select_next_job(remote)
    assert_refused(caught, remote)
    with pytest.raises(OwnedByWorker):
        comfynb.jobs.select_next_jobs(remote, 2)
    with comfynb.Client(sim.url, retry=FAST_RETRY) as client, pytest.raises(OwnedByWorker):
        comfynb.submit_job(remote, client, job)  # type: ignore[arg-type]
    with (
        pytest.raises(OwnedByWorker, match=r"store\.transaction\(\) is refused"),
        remote.transaction(),
    ):
        pass
    with pytest.raises(OwnedByWorker, match=r"store\.change_counts\(\) is refused"):
        remote.change_counts()
    # nothing was claimed, recorded or sent
    assert store.job(job.id) == job
    assert sim.prompts() == []


def test_submitting_a_job_the_worker_claimed_is_refused_before_the_server_is_asked(
    sim: Simulator, remote: RemoteStore, store: Store
) -> None:
    remote.new_run("r")
    comfynb.enqueue(remote, trivial_prompt(), run="r")
    claimed = comfynb.select_next_job(store)  # as the worker would
    assert claimed is not None
    with comfynb.Client(sim.url, retry=FAST_RETRY) as client, pytest.raises(OwnedByWorker):
        comfynb.submit_job(remote, client, claimed)  # type: ignore[arg-type]
    assert sim.prompts() == []  # the server got nothing (its log, not a race with its queue)


def test_recover_on_a_served_store_is_refused_and_touches_no_file(
    sim: Simulator, remote: RemoteStore, store: Store
) -> None:
    partial = store.output_dir / "run-1" / "job-1" / ".a.png.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")  # the worker downloading an image
    with comfynb.Client(sim.url, retry=FAST_RETRY) as client, pytest.raises(OwnedByWorker):
        comfynb.recover(remote, client)  # type: ignore[arg-type]
    assert partial.exists()


def test_a_worker_on_a_served_store_is_refused_when_made(
    sim: Simulator, remote: RemoteStore
) -> None:
    with pytest.raises(OwnedByWorker, match=r"comfynb\.Worker is refused"):
        comfynb.Worker(remote, [sim.url])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- change counts


def test_change_counts_grow_with_enqueues_requeues_releases_and_cancels(store: Store) -> None:
    start = store.change_counts()
    assert isinstance(start, ChangeCounts)
    store.new_run("r")
    _, b = comfynb.enqueue_many(store, [trivial_prompt(), trivial_prompt()], run="r")
    after = store.change_counts()
    assert after.queue_changes > start.queue_changes
    assert after.cancellations == start.cancellations
    claimed = comfynb.select_next_job(store)
    assert claimed is not None
    release_claims(store, [claimed.id], reason="given back")
    released = store.change_counts()
    assert released.queue_changes > after.queue_changes
    comfynb.cancel(store, b)
    assert store.change_counts().cancellations == released.cancellations + 1
    assert store.job(b.id).status is JobStatus.CANCELLED
    with Store.open(store.path) as other:  # the counts are the file's, in this process
        assert other.change_counts() == store.change_counts()


def test_a_count_moves_only_once_what_it_counts_can_be_read(store: Store) -> None:
    """Another thread that sees a cancel or an enqueue counted sees the job it counts.

    A worker read the count of cancels moved while the cancel was not committed yet, read
    the job still pending, and posted a cancelled job (seen once under load).
    """
    import threading

    from comfynb.store.lifecycle import transition

    store.new_run("r")
    job = comfynb.enqueue(store, trivial_prompt(), run="r")
    before = store.change_counts()
    seen: list[tuple[ChangeCounts, JobStatus, int]] = []

    def look() -> None:  # a reader thread (as the worker's loop): no writer lock
        seen.append((store.change_counts(), store.job(job.id).status, len(store.jobs())))

    with store.transaction():
        transition(store, job.id, JobStatus.CANCELLED, detail={"by": "test"})
        comfynb.enqueue(store, trivial_prompt(), run="r")
        reader = threading.Thread(target=look)
        reader.start()
        reader.join()
    counts, status, jobs = seen[0]
    assert counts.cancellations == before.cancellations or status is JobStatus.CANCELLED
    assert counts.queue_changes == before.queue_changes or jobs == 2
    after = store.change_counts()  # committed: counted
    assert after.cancellations == before.cancellations + 1
    assert after.queue_changes > before.queue_changes


def test_a_rolled_back_change_is_not_counted(store: Store) -> None:
    store.new_run("r")
    before = store.change_counts()
    with pytest.raises(RuntimeError), store.transaction():
        comfynb.enqueue(store, trivial_prompt(), run="r")
        raise RuntimeError("rolled back")
    assert store.change_counts() == before and store.jobs().empty
