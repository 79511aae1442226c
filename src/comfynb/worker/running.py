"""The workers running in this process: one per store, and all stopped at interpreter exit.

Example::

    >>> running(store)                  # the worker running on this store, or None
    <Worker lab.duckdb running servers=['http://127.0.0.1:8188']>
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..errors import WorkerError

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["register", "running", "servers_down", "stop_all_at_exit", "unregister"]


class _Server(Protocol):
    @property
    def up(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...
    def trouble(self) -> str | None: ...


class _Status(Protocol):
    @property
    def servers(self) -> Sequence[_Server]: ...


class Runs(Protocol):
    """What this module needs of a worker."""

    store: Store
    servers: tuple[str, ...]
    name: str

    @property
    def in_background(self) -> bool: ...
    def stop(self, timeout: float | None = 10.0) -> None: ...
    def status(self) -> _Status: ...


W = TypeVar("W", bound=Runs)

_RUNNING: dict[str, Runs] = {}
_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []


def _key(store: Store) -> str:
    if store.path == ":memory:":
        return f"memory:{id(store)}"
    return os.path.realpath(store.path)


def running(store: Store) -> Runs | None:
    """The worker running on ``store`` in this process, or None."""
    with _LOCK:
        return _RUNNING.get(_key(store))


def servers_down(store: Store) -> list[str]:
    """What the worker running on ``store`` in this process says of its servers that are down
    (a failure seen): ``["http://127.0.0.1:9 down since 12:01:02: connection refused"]``.

    Empty when no worker runs here or every server is up. ``comfynb.wait`` shows it; a
    ``comfynb worker`` process serves it to notebooks (``RemoteStore.servers_down_on_owner``).

    Example::

        >>> servers_down(store)
        ['http://127.0.0.1:9 down since 12:01:02: connection refused']
    """
    worker = running(store)
    if worker is None:
        return []
    return [
        trouble
        for server in worker.status().servers
        if not server.up and server.last_error and (trouble := server.trouble())
    ]


def register(worker: W, *, reuse: bool) -> W | None:
    """Make ``worker`` the one running on its store (then None). If one runs there already:
    with ``reuse``, that one when it is ``worker`` or has the same servers (a re-run cell);
    else ``WorkerError`` saying how to stop it."""
    with _LOCK:
        there = _RUNNING.get(_key(worker.store))
        if there is None:
            _RUNNING[_key(worker.store)] = worker
            return None
        if reuse and (there is worker or there.servers == worker.servers):
            return there  # type: ignore[return-value]  # the same kind: a Worker
        raise WorkerError(
            f"worker {there.name} already runs on {there.store.path} with servers "
            f"{list(there.servers)}; stop it first (comfynb.Worker.running(store).stop()) or "
            "start a worker with the same servers to get it back"
        )


def unregister(worker: Runs) -> None:
    with _LOCK:
        if _RUNNING.get(_key(worker.store)) is worker:
            del _RUNNING[_key(worker.store)]


def _stop_all() -> None:
    """Stop every started worker of this process (interpreter exit, a kernel shutting down)."""
    with _LOCK:
        workers = [w for w in _RUNNING.values() if w.in_background]
    for worker in workers:
        worker.stop()


def stop_all_at_exit() -> None:
    """Run ``_stop_all`` at exit, BEFORE ``concurrent.futures`` refuses new work.

    Python stops its thread pools in ``threading._shutdown``, which runs before ``atexit``
    handlers: a worker still running then would see its downloads (and an in-process
    simulator's file answers) fail. ``threading._register_atexit`` is the hook those pools
    use themselves; plain ``atexit`` stays as the fallback.
    """
    with _LOCK:
        if _AT_EXIT:
            return
        _AT_EXIT.append(True)
    hook = getattr(threading, "_register_atexit", None)
    if hook is not None:
        hook(_stop_all)
    atexit.register(_stop_all)
