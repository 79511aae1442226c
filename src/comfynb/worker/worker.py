"""The worker: the job functions in a loop, so that jobs flow by themselves across servers.

Example::

    >>> worker = comfynb.Worker(store, servers=["http://gpu1:8188", "http://gpu2:8188"]).start()
    >>> worker.status().servers[0]
    ServerStatus(url='http://gpu1:8188', up=True, queue_depth=2, in_flight=2, done=14, ...)
    >>> comfynb.wait(store, run)          # a bar until the run's jobs end
    >>> worker.stop()

    >>> comfynb.Worker(store, servers=[sim.url]).run()      # scripts and tests: until idle
    RunSummary(completed=20, failed=0, requeued=0, seconds=0.41)

How it works (STYLE.md principle 8, rq's ``SimpleWorker``): one loop on one thread (the caller's
for ``run``, a daemon thread for ``start``) calls ``recover`` for each server, then turns
round after round (:meth:`~comfynb.worker.loop.Loop.round`): it reads what the servers'
sockets said, posts claimed jobs to keep ``target_depth`` of ours waiting in each server's
queue behind the one it runs, hands progress, polls the jobs that ended badly, checks the
servers' health, reroutes the jobs of a server down for too long, polls where a socket is down
or silent, and asks for more claims. It never writes the store in the normal course: it hands
every change (submitted, running, completed with candidates, failed, retries, progress, claims)
to the recorder, one thread that commits all it was handed since its last commit in ONE
transaction and tells the loop what it recorded. The parts, each in its module:

* ``worker.py`` (this one): :class:`Worker`, the public face and its thread, and what it
  reports (:class:`WorkerStatus`, :class:`RunSummary`);
* ``loop.py``: one run (:class:`~comfynb.worker.loop.Loop`): open, the round in named steps,
  idle, close; its steps live in three parts:
* ``posting.py``: claims asked for, placed on a server able to run them, and posted;
* ``following.py``: the jobs posted: what their sockets say, their progress and previews,
  their images downloaded, polled when the socket cannot tell;
* ``health.py``: a server's checks, ``recover``, its jobs rerouted when it stays down, the
  servers adopted (jobs an earlier worker left elsewhere), and when no server can be used;
* ``servers.py``: a server's state (health with backoff, capabilities, its socket's news,
  our jobs on it: :class:`~comfynb.worker.servers.PostedJob`);
* ``claims.py``: the jobs claimed for a server but not yet posted, and when to claim more;
* ``sockets.py``: the socket reader threads;
* ``downloads.py``: finished jobs' images, fetched on a small pool;
* ``recorder.py``: the one writer thread;
* ``running.py``: the workers of this process, one per store, stopped at exit.

What to record after a POST and whether a job retries or fails are decided by the job
functions' own rules (``jobs.submit.post_prompt``/``post_change``, ``retry_or_fail``).

Many servers: a job goes only to a server whose ``/object_info`` has its node classes and the
model files it names; a job no server can run fails with a message naming what is missing. A
server that stops answering is marked down (health checks on ``/system_stats`` with backoff);
after ``reroute_after`` seconds its unfinished jobs go back to the queue with a fresh prompt_id
(counted as a retry) and run on the living servers: no prompt_id is ever posted twice.

Threads: the worker writes through the store from its own threads (the store gives each thread
its own DuckDB cursor, and one writer at a time); a notebook keeps reading and enqueueing
meanwhile. Design and figures: ``docs/worker.md``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import InvalidInput
from ..store.base import require_owner
from . import running as registry
from .loop import Loop
from .servers import ServerStatus, clock

if TYPE_CHECKING:
    from ..client import ClientOptions
    from ..store import Store

__all__ = ["RunSummary", "ServerStatus", "Worker", "WorkerStatus"]

logger = logging.getLogger("comfynb.worker")


@dataclass(frozen=True)
class WorkerStatus:
    """A snapshot of a worker: running or not, and each server.

    Example::

        >>> print(worker.status())
        worker lab (running)
          http://127.0.0.1:8188  up    queue 2  in flight 2  done 40  failed 0
    """

    name: str
    running: bool
    servers: tuple[ServerStatus, ...]
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"worker {self.name} ({'running' if self.running else 'stopped'})"]
        if self.error:
            lines.append(f"  stopped by an error: {self.error}")
        for s in self.servers:
            depth = "?" if s.queue_depth is None else s.queue_depth
            lines.append(
                f"  {s.url}  {'up  ' if s.up else 'DOWN'}  queue {depth}  in flight "
                f"{s.in_flight}  done {s.done}  failed {s.failed}"
                + (f"  down since {clock(s.down_since)}" if s.down_since else "")
                + (f"  last error: {s.last_error}" if s.last_error else "")
                + ("  (adopted: jobs an earlier worker left there)" if s.adopted else "")
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class RunSummary:
    """What one ``run`` did: jobs it completed, failed and put back in the queue, and its time.

    Example::

        >>> Worker(store, [sim.url]).run()
        RunSummary(completed=20, failed=0, requeued=0, seconds=0.41)
    """

    completed: int
    failed: int
    requeued: int
    seconds: float
    #: jobs not ended when it returned (counted only when it gave up: see ``stopped_by``)
    left: int = 0
    #: why ``run`` gave up with jobs left (every server down for ``reroute_after``), or None
    stopped_by: str | None = None


class Worker:
    """Runs a store's pending jobs on one or many ComfyUI servers, by itself.

    Example::

        >>> worker = comfynb.Worker(store, servers=[url1, url2]).start()   # returns at once
        >>> worker.status().servers[0].in_flight
        2
        >>> worker.stop()                      # joins; jobs on the servers stay recoverable

    Args:
        store: the open store (the worker writes through it from its own thread).
        servers: ComfyUI base URLs (by default ``COMFYUI_URL``'s, ``core.settings``).
        target_depth: how many of this worker's prompts to keep queued on each server.
        client_options: options for each server's ``Client`` (token, headers, timeout, retry).
        name: shown in logs and ``status()`` (default: the store's file name).
        reroute_after: seconds a server may stay down before its jobs go to the others.
        extra_data: ComfyUI's ``extra_data`` for every prompt (API keys: posted, never stored).
    """

    def __init__(
        self,
        store: Store,
        servers: Sequence[str] | None = None,
        *,
        target_depth: int = 2,
        client_options: ClientOptions | None = None,
        name: str | None = None,
        reroute_after: float = 10.0,
        extra_data: Mapping[str, Any] | None = None,
    ) -> None:
        from ..client.base import split_userinfo
        from ..core.settings import URL, settings

        if servers is None:
            servers = settings().servers
            if not servers:
                raise InvalidInput(
                    f"no servers: pass servers=['http://127.0.0.1:8188'] or set {URL} "
                    "(several servers: separated by commas)"
                )
        if isinstance(servers, str):
            servers = [servers]
        urls = [split_userinfo(url)[0] for url in servers]  # checked: InvalidInput shows the fix
        if not urls or len(set(urls)) != len(urls):
            twice = sorted({url for url in urls if urls.count(url) > 1})
            raise InvalidInput(
                f"servers is a list of distinct ComfyUI URLs, e.g. ['http://127.0.0.1:8188']; "
                f"got {list(servers)!r}"
                + (f": {', '.join(twice)} more than once (the same server)" if twice else "")
            )
        if isinstance(target_depth, bool) or not isinstance(target_depth, int) or target_depth < 1:
            raise InvalidInput(f"target_depth must be an int from 1, got {target_depth!r}")
        require_owner(store, "comfynb.Worker")  # another process's store: OwnedByWorker
        self.store = store
        # Shown, logged and compared without credentials; the clients get the URLs as given.
        self.servers: tuple[str, ...] = tuple(urls)
        self._server_urls_as_given: tuple[str, ...] = tuple(servers)
        self.target_depth = target_depth
        self.name = name or os.path.basename(store.path)
        self.reroute_after = reroute_after
        self._client_options: dict[str, Any] = dict(client_options or {})
        self._client_options.setdefault("timeout", 10.0)
        self._extra_data = dict(extra_data) if extra_data else None
        self._loop: Loop | None = None  # the current (or last) run's
        # queue.Queue, not SimpleQueue: on CPython 3.11 a SimpleQueue.get(timeout=...) that a
        # signal handler outlasts waits forever (measured), and the CLI's SIGTERM handler runs
        # in this thread while it waits here.
        self._events: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._running = False
        self._error: str | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<Worker {self.name} {state} servers={list(self.servers)}>"

    @staticmethod
    def running(store: Store) -> Worker | None:
        """The worker running on ``store`` in this process, or None.

        Example::

            >>> comfynb.Worker.running(store).stop()
        """
        return cast("Worker | None", registry.running(store))

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        """True while the loop runs (``start``ed, or inside ``run``)."""
        return self._running

    @property
    def in_background(self) -> bool:
        """True once ``start``ed, until ``stop`` has joined its thread."""
        return self._thread is not None

    def run(self, *, until_idle: bool = True, stop: threading.Event | None = None) -> RunSummary:
        """Run the loop in this thread until idle (or until ``stop`` is set); scripts and tests.

        Idle: nothing claimable is pending and nothing is in flight. When it returns, every
        job is in a settled state: posted jobs are ``submitted``/``running`` (a later worker
        recovers them) and claimed, unposted ones are back in the queue.

        It gives up when jobs are left and no server could be used for ``reroute_after``
        seconds (each down, or never up, that long; the jobs on them were put back in the
        queue): the summary then says so in ``stopped_by`` (servers, since when, their last
        error) with ``left`` jobs not ended (``comfynb worker --until-idle`` exits 1).

        Example::

            >>> Worker(store, [sim.url]).run()
            RunSummary(completed=20, failed=0, requeued=0, seconds=0.41)

        Raises:
            WorkerError: another worker runs on this store in this process.
        """
        registry.register(self, reuse=False)
        self._running = True
        try:
            return self._main(until_idle, stop or self._stop)
        finally:
            self._unregister()

    def start(self) -> Worker:
        """Run the loop on a daemon thread and return at once; returns the running worker.

        Starting again (this worker, or a new one for the same store and servers: a re-run
        cell) returns the worker already running. Interpreter exit (kernel shutdown) stops it.

        Example::

            >>> worker = comfynb.Worker(store, servers=[url]).start()

        Raises:
            WorkerError: a worker with other servers runs on this store; stop it first.
        """
        there = registry.register(self, reuse=True)
        if there is not None:
            return there
        self._stop.clear()
        self._running = True
        self._thread = threading.Thread(
            target=self._thread_main, name=f"comfynb-worker-{self.name}", daemon=True
        )
        registry.stop_all_at_exit()
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background loop and wait for it (at most ``timeout`` seconds).

        The loop finishes its round: images being downloaded are recorded, posted jobs are
        recorded as submitted, claimed but unposted jobs go back to the queue.

        Example::

            >>> worker.stop()
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("worker %s did not stop within %s s", self.name, timeout)
                return
        self._thread = None

    def status(self) -> WorkerStatus:
        """A snapshot: running or not, and per server up/down, queue, in flight, done, failed.

        Example::

            >>> worker.status().servers[0].done
            40
        """
        loop = self._loop
        servers = loop.status() if loop is not None else ()
        if not servers:
            servers = tuple(ServerStatus(url, False, None, 0, 0, 0, None) for url in self.servers)
        return WorkerStatus(self.name, self._running, servers, self._error)

    # ----------------------------------------------------------------- its thread

    def _unregister(self) -> None:
        registry.unregister(self)
        self._running = False

    def _thread_main(self) -> None:
        try:
            self._main(until_idle=False, stop=self._stop)
        except BaseException as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            logger.exception("worker %s stopped by an error", self.name)
        finally:
            self._unregister()

    def _main(self, until_idle: bool, stop: threading.Event) -> RunSummary:
        """``recover`` each server, then round after round until stopped (or idle)."""
        started = time.monotonic()
        self._error = None
        self._events = queue.Queue()
        loop = self._loop = Loop(
            self.store,
            self.name,
            tuple(zip(self.servers, self._server_urls_as_given, strict=True)),
            target_depth=self.target_depth,
            reroute_after=self.reroute_after,
            client_options=self._client_options,
            extra_data=self._extra_data,
            events=self._events,
            until_idle=until_idle,
        )
        loop.open()
        left, stopped_by = 0, None
        try:
            while not stop.is_set():
                loop.round()
                if until_idle and loop.idle():
                    break
                stuck = loop.stuck() if until_idle else None
                if stuck is not None:
                    left, stopped_by = stuck  # said by the caller (the CLI logs it)
                    break
        finally:
            loop.halting = True  # from here on nothing is claimed or posted
            loop.close()
        return RunSummary(
            completed=loop.counts["completed"],
            failed=loop.counts["failed"],
            requeued=loop.counts["requeued"],
            seconds=round(time.monotonic() - started, 3),
            left=left,
            stopped_by=stopped_by,
        )
