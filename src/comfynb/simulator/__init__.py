"""A ComfyUI double that speaks the real protocol over HTTP and WebSocket on loopback.

Example::

    >>> from comfynb.simulator import Simulator
    >>> with Simulator() as sim:          # a free port, a temporary root folder
    ...     sim.url
    'http://127.0.0.1:38211'

``Simulator`` runs the aiohttp server of :mod:`comfynb.simulator.app` on a background thread
with its own event loop; ``python -m comfynb.simulator`` runs the same server in the foreground.
"""

from __future__ import annotations

import asyncio
import atexit
import socket
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Simulator"]

T = TypeVar("T")


class Simulator:
    """A simulated ComfyUI server on a background thread.

    Example::

        with Simulator(root=tmp_path, version="0.8.0") as sim:
            httpx.post(f"{sim.url}/prompt", json={"prompt": prompt})
            sim.set_faults(http_500_next=1)   # the next request gets a 500
            sim.reset()                       # empty queue, history, files, faults

    Args:
        root: folder holding ``input/``, ``output/`` and ``temp/`` (a temporary folder, removed
            at ``stop()``, when None).
        version: ``"0.33.0"`` (default) or ``"0.8.0"``, the older captured server.
        host, port: where to listen; port 0 picks a free port.
        seed: seeds the random faults.
        node_seconds: simulated time per executed node; step_seconds: per sampler step.
        faults: a fault set to start with (see ``set_faults``).
        checkpoints: the checkpoint files it has (``CheckpointLoaderSimple``'s ``ckpt_name``
            choices in ``/object_info``, ``/models/checkpoints``); None: the SD 1.5 and SDXL
            ones of ComfyUI's default graphs; ``[]``: a server without model files.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        version: str = "0.33.0",
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        node_seconds: float = 0.0,
        step_seconds: float = 0.0,
        faults: dict[str, Any] | None = None,
        checkpoints: Sequence[str] | None = None,
    ) -> None:
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="comfynb-sim-")
            root = self._tempdir.name
        self.root = Path(root)
        self.host = host
        self.port = port
        self._options: dict[str, Any] = {
            "version": version,
            "seed": seed,
            "node_seconds": node_seconds,
            "step_seconds": step_seconds,
            "faults": faults,
            "checkpoints": None if checkpoints is None else tuple(checkpoints),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._runner: Any = None

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        version = self._server.version if self._server is not None else self._options["version"]
        return f"<Simulator {self.url} ComfyUI {version} {state}>"

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8188``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL without ``clientId``, e.g. ``ws://127.0.0.1:8188/ws``."""
        return self.url.replace("http://", "ws://", 1) + "/ws"

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Start serving on a background thread; return self once the port is listening."""
        if self._thread is not None:
            return self
        from .app import Server

        self.root.mkdir(parents=True, exist_ok=True)
        self._server = Server(self.root, **self._options)
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="comfynb-simulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop.close()
            self._loop = None
            self._cleanup_tempdir()
            raise failure[0]
        # A notebook may never call stop(): do it at interpreter exit (removes the temp root).
        atexit.register(self.stop)
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            failure.append(exc)
            loop.run_until_complete(self._close())
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())

    async def _open(self) -> None:
        from aiohttp import web

        await self._server.startup()
        self._runner = web.AppRunner(
            self._server.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        """Stop the server, close every socket and join the thread."""
        if self._thread is None or self._loop is None:
            return
        atexit.unregister(self.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._thread = None
        self._loop = None
        self._cleanup_tempdir()

    def _cleanup_tempdir(self) -> None:
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control from tests -----------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator is not running: call start() or use `with`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def reset(self, version: str | None = None) -> None:
        """Empty queue, history, cache, faults, prompt log and files; optionally switch version.

        Example::

            sim.reset(version="0.8.0")   # behave as the older captured ComfyUI
        """
        self._call(self._server.reset(version))

    def configure(
        self,
        *,
        node_seconds: float | None = None,
        node_seconds_by_id: dict[str, float] | None = None,
        step_seconds: float | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Set per-node time (for all nodes or by node id), per-step time or the version.

        A node that is waiting right now re-decides with the new times, so a test can hold a
        prompt at one node and let it go on. Returns the whole configuration.

        Example::

            sim.configure(node_seconds=0.2)                # each executed node takes 0.2 s
            sim.configure(node_seconds_by_id={"3": 60})    # node "3" of every prompt is held...
            sim.configure(node_seconds_by_id={})           # ... until now (or an interrupt)
        """

        async def apply() -> dict[str, Any]:
            result: dict[str, Any] = self._server.configure(
                node_seconds=node_seconds,
                node_seconds_by_id=node_seconds_by_id,
                step_seconds=step_seconds,
                version=version,
            )
            return result

        return self._call(apply())

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault set (no arguments clears it); return the active set.

        Example::

            sim.set_faults(http_500_next=2, routes=["/prompt"])
            sim.set_faults(fail_node={"node_id": "2", "message": "boom"})
        """
        result: dict[str, Any] = self._server.faults.set(faults)
        return result

    def restart(self) -> None:
        """Forget queue, history and the running prompt; drop every socket (a crash + restart)."""
        self._call(self._server.restart())

    def prompts(self) -> list[dict[str, Any]]:
        """Every accepted prompt_id: ``{"prompt_id", "number", "time", "posts", "lives"}``.

        ``posts`` counts every accepted POST of the prompt_id, ``lives`` the lives of the server
        it was posted in (``restart`` starts a new one; it forgot the prompt): ``posts > lives``
        means one life of the server got it twice.

        Example::

            assert [row["posts"] for row in sim.prompts()] == [1]   # nothing was sent twice
        """

        async def read() -> list[dict[str, Any]]:
            return [dict(row) for row in self._server.prompt_log.values()]

        return self._call(read())
