"""Shared fixtures: a real simulator on loopback, real files under tmp_path.

One simulator per test session per server version (starting one costs a thread and a port);
``sim.reset()`` before each test empties its queue, history, faults and files, as rq's
``flushdb()`` does for Redis.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from comfynb.client import AsyncClient, Client, RetryPolicy

if TYPE_CHECKING:
    from comfynb.simulator import Simulator
    from comfynb.store import Store

# Captures and facts from the fact sheet, copied into tests/data: a user's clone has no fact sheet.
DATA = Path(__file__).resolve().parent / "data"
CAPTURES = DATA / "captures"


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs the same whatever the user's environment names (README, "Settings")."""
    for name in ("COMFYUI_URL", "COMFYUI_TOKEN", "COMFYNB_DB", "COMFYNB_OUTPUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def remote(store: Store) -> Iterator[Any]:
    """``store`` as a notebook beside a worker process reaches it: through its endpoint."""
    import comfynb
    from comfynb.service.remote import RemoteStore, serve

    with serve(store):
        opened = comfynb.open(store.path)
        assert isinstance(opened, RemoteStore)
        with opened:
            yield opened


@pytest.fixture(params=["local", "remote"])
def view(request: pytest.FixtureRequest, store: Store) -> Any:
    """The store as a notebook reads it: the file itself, or through a worker's endpoint."""
    return store if request.param == "local" else request.getfixturevalue("remote")


def load_capture(name: str) -> Any:
    """Return a capture file from the fact sheet: JSON for ``.json``, a list of frames for ``.jsonl``."""
    path = CAPTURES / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def _sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    from comfynb.simulator import Simulator

    with Simulator(root=tmp_path_factory.mktemp("sim")) as server:
        yield server


@pytest.fixture
def sim(_sim_server: Simulator) -> Simulator:
    """The simulator as ComfyUI 0.33.0, reset to empty for this test."""
    _sim_server.reset(version="0.33.0")
    return _sim_server


@pytest.fixture
def legacy_sim(_sim_server: Simulator) -> Simulator:
    """The same simulator switched to the older captured ComfyUI (0.8.0), reset to empty."""
    _sim_server.reset(version="0.8.0")
    return _sim_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real store: a DuckDB file and an output folder under tmp_path."""
    from comfynb.store import Store

    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "outputs") as opened:
        yield opened


def trivial_prompt(prefix: str = "trivial", size: int = 64) -> dict[str, Any]:
    """EmptyImage -> SaveImage: the fact sheet's trivial prompt."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


# -- clients (helper-3): every client test runs through Client and through AsyncClient ----------

FAST_RETRY = RetryPolicy(attempts=4, base=0.01, max_delay=0.05, seed=0)


class AsyncDriven:
    """An ``AsyncClient`` driven from a plain test on one event loop kept for the whole test.

    Coroutine methods run to completion; ``events()`` gives a blocking view of the async stream.
    Only the driving differs: the client, its sockets and its stream are the real async ones.
    """

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_loop", loop)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._client, name, value)  # e.g. a test forcing client._jobs_api

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._loop.run_until_complete(attr(*args, **kwargs))
        return attr

    def events(self, prompt_ids: Any = None, **options: Any) -> AsyncDrivenEvents:
        return AsyncDrivenEvents(self._client.events(prompt_ids, **options), self._loop)


class AsyncDrivenEvents:
    """A blocking view of an ``AsyncEventStream`` (see ``AsyncDriven``)."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._stream, self._loop = stream, loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __enter__(self) -> AsyncDrivenEvents:
        self._loop.run_until_complete(self._stream.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._stream.aclose())

    def __iter__(self) -> Iterator[Any]:
        # as `async for` does: one async iterator, closed when the loop is left
        events = self._stream.__aiter__()
        try:
            while True:
                try:
                    event = self._loop.run_until_complete(events.__anext__())
                except StopAsyncIteration:
                    return
                yield event
        finally:
            self._loop.run_until_complete(events.aclose())

    def close(self) -> None:
        self._loop.run_until_complete(self._stream.aclose())


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_client(url, **options)``: a ``Client``, or an ``AsyncDriven`` ``AsyncClient``.

    Clients use a fast retry policy unless ``retry=`` is given; all are closed after the test.
    """
    loop = asyncio.new_event_loop()
    made: list[Any] = []

    def make(url: str, **options: Any) -> Any:
        options.setdefault("retry", FAST_RETRY)
        if request.param == "sync":
            made.append(Client(url, **options))
            return made[-1]
        made.append(AsyncClient(url, **options))
        return AsyncDriven(made[-1], loop)

    yield make
    for client in made:
        if isinstance(client, Client):
            client.close()
        else:
            loop.run_until_complete(client.aclose())
    loop.close()
