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
for ``run``, a daemon thread for ``start``) calls ``recover`` for each server, then reads what
the servers' WebSockets said (one reader thread per server only turns frames into events),
posts claimed jobs to keep ``target_depth`` of ours waiting in each server's queue behind the
one it runs, and starts the download of each job that ended well on a small pool
(``process_job_result``'s download half). It never writes the store in the normal course: it
hands every move (submitted, running, completed with candidates, failed, progress, claims) to
the recorder (``comfynb/_recorder.py``), one thread that commits all it was handed since its
last commit in ONE transaction and tells the loop what it recorded. A socket that is down or
silent is replaced by polling (``poll_job_status``) with backoff until it returns.

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

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..client.ws import connect as ws_connect
from ..core import crashpoints as _crashpoints
from ..core.status import JobStatus
from ..errors import (
    TRANSIENT_ERRORS,
    InvalidTransition,
    JobNotFound,
    PromptRejected,
    ServerFailed,
    ServerTimeout,
    ServerUnreachable,
    WorkerError,
)
from ..jobs.base import error_detail, find_posted, withdraw
from ..jobs.recover import recover
from ..jobs.results import Collected, collect_images
from ..jobs.submit import poll_job_status
from ..protocol.calls import PromptStatus
from ..protocol.events import (
    MIN_RECONNECT_DELAY,
    Event,
    Executed,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
    Status,
)
from ..store.lifecycle import transition, transition_many
from . import recorder as _rec
from .recorder import Recorder

if TYPE_CHECKING:
    from ..client import Client, ClientOptions
    from ..core.models import Job
    from ..protocol.calls import ImageRef
    from ..store import Store

__all__ = [
    "Capabilities",
    "RunSummary",
    "ServerStatus",
    "Worker",
    "WorkerStatus",
    "capabilities",
    "missing_capability",
]

logger = logging.getLogger("comfynb.worker")

_DOWN = (ServerUnreachable, ServerTimeout)

#: Seconds without a word from a server's socket, jobs in flight, before they are polled (the
#: real server's reconnect race can leave a socket deaf; a long node also stays silent).
SILENCE = 2.0
#: Write a running job's progress at most this often (a 1,000-step sampler costs few writes).
PROGRESS_EVERY = 0.5
#: The most jobs a server's hand holds claimed beyond its queue (grown from ``target_depth``
#: while the hand runs dry before a claim comes back: a fast server drains it in milliseconds).
MAX_RESERVE = 64
#: The longest pause between health checks of a down server, and between polls.
MAX_BACKOFF = 2.0

# --------------------------------------------------------------------------- capabilities (pure)

#: Input values ending so are model files; a job naming one goes only where the file is.
MODEL_SUFFIXES: Final = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


@dataclass(frozen=True)
class Capabilities:
    """What a server can run: its node classes and the options of each combo input.

    Example::

        >>> caps = capabilities(client.object_info())
        >>> "KSampler" in caps.classes, "v1-5.safetensors" in caps.combos["CheckpointLoaderSimple", "ckpt_name"]
        (True, True)
    """

    classes: frozenset[str]
    combos: Mapping[tuple[str, str], frozenset[str]] = field(repr=False)


def _combo_options(spec: Any) -> list[str] | None:
    """The options of a combo input spec in either spelling, else None."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    first = spec[0]
    if isinstance(first, list):  # older nodes: [["a", "b"], {...}]
        return [str(option) for option in first]
    if first == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):  # v3 nodes
        options = spec[1].get("options")
        return [str(o) for o in options] if isinstance(options, list) else None
    return None


def capabilities(object_info: Mapping[str, Any]) -> Capabilities:
    """Read a server's ``/object_info`` into :class:`Capabilities`; pure.

    Example::

        >>> capabilities({"EmptyImage": {"input": {"required": {}}}}).classes
        frozenset({'EmptyImage'})
    """
    combos: dict[tuple[str, str], frozenset[str]] = {}
    for class_type, entry in object_info.items():
        inputs = entry.get("input") if isinstance(entry, dict) else None
        for section in ("required", "optional"):
            specs = inputs.get(section) if isinstance(inputs, dict) else None
            for name, spec in (specs or {}).items():
                options = _combo_options(spec)
                if options is not None:
                    combos[class_type, name] = frozenset(options)
    return Capabilities(frozenset(object_info), combos)


def missing_capability(workflow: Mapping[str, Any], caps: Capabilities) -> str | None:
    """What a server with ``caps`` lacks to run ``workflow`` (a node class, a model), or None.

    Example::

        >>> missing_capability({"4": {"class_type": "UNETLoader", "inputs": {}}}, caps)
        'node "4" (UNETLoader) is not installed'
    """
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        if class_type not in caps.classes:
            return f'node "{node_id}" ({class_type}) is not installed'
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                options = caps.combos.get((class_type, name))
                if options is not None and value not in options:
                    return (
                        f'model "{value}" (input "{name}" of node "{node_id}", {class_type}) '
                        "is missing"
                    )
    return None


# --------------------------------------------------------------------------- status and summaries


@dataclass(frozen=True)
class ServerStatus:
    """One server as the worker sees it.

    ``queue_depth`` is the server's own count of queued and running prompts (all clients),
    ``in_flight`` this worker's jobs on it; ``done``/``failed`` count this worker's jobs.

    Example::

        >>> worker.status().servers[0].up
        True
    """

    url: str
    up: bool
    queue_depth: int | None
    in_flight: int
    done: int
    failed: int
    last_error: str | None


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
                + (f"  last error: {s.last_error}" if s.last_error else "")
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


# --------------------------------------------------------------------------- socket readers


@dataclass(frozen=True)
class _SocketUp:
    pass


@dataclass(frozen=True)
class _SocketDown:
    reason: str


_WANTED = (
    ExecutionStart,
    Executed,
    Progress,
    ExecutionSuccess,
    ExecutionError,
    ExecutionInterrupted,
)
#: Frames the loop never needs, told by how ComfyUI's ``json.dumps`` starts them: most of a
#: job's ~13 frames (0.33.0 sends ``progress_state`` 4 times per 2-node job). Skipping them
#: unparsed saves a third of the socket thread's CPU; a frame written otherwise is parsed.
_UNNEEDED = ('{"type": "progress_state"', '{"type": "executing"', '{"type": "execution_cached"')


def _needed(frame: str | bytes) -> Event | None:
    """The event a frame stands for, or None for one the loop never needs (told unparsed)."""
    from ..protocol.events import parse_frame

    if isinstance(frame, bytes) or frame.startswith(_UNNEEDED):
        return None  # previews, and node-by-node news
    return parse_frame(frame)


class _Socket:
    """Reads one server's WebSocket on a thread, turning the frames the loop needs into events.

    It reconnects with the client's own ``clientId`` (prompts were posted with it) after a
    drop, with backoff, and tells the loop when the socket goes up or down; the loop polls
    meanwhile. It writes nothing and decides nothing.
    """

    def __init__(self, index: int, lane: _Lane, events: queue.Queue[Any]) -> None:
        self._index = index
        self._lane = lane
        self._events = events
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"comfynb-worker-ws-{index}", daemon=True
        )
        self._lock = threading.Lock()
        self._ws: Any = None  # the open connection, closed by ``stop`` to wake the reader

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader to end; an open connection is closed at once (``recv`` then ends)."""
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()  # websockets' sync connection may be closed from another thread

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        client = self._lane.client
        delay = MIN_RECONNECT_DELAY
        while not self._stop.is_set():
            try:
                ws = ws_connect(client.ws_url, client.headers, timeout=min(client.timeout, 5.0))
            except ServerUnreachable as exc:
                self._events.put((self._index, _SocketDown(f"WebSocket: {exc.__cause__}")))
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = MIN_RECONNECT_DELAY
            with self._lock:
                self._ws = ws
            if self._stop.is_set():  # stopped while connecting
                ws.close()
            self._events.put((self._index, _SocketUp()))
            try:
                while not self._stop.is_set():
                    try:
                        frame = ws.recv(timeout=0.1)
                    except TimeoutError:
                        continue
                    event = _needed(frame)
                    if isinstance(event, _WANTED):
                        self._events.put((self._index, event))
                    elif isinstance(event, Status) and event.queue_remaining is not None:
                        self._lane.queue_remaining = event.queue_remaining
            except ConnectionClosed:
                pass
            finally:
                with self._lock:
                    self._ws = None
                ws.close()  # returns once the closing handshake is over: the id is released
            if not self._stop.is_set():
                self._events.put((self._index, _SocketDown("WebSocket closed")))
                self._stop.wait(MIN_RECONNECT_DELAY)


@dataclass(frozen=True)
class _Fetched:
    """A download on the pool ended: the images on disk, or what kept them."""

    flight: _Flight
    outcome: Any  # Collected | Exception | None (not finished after all)


_WAKE: Final = (-1, None)  # the recorder has an outcome ready

# --------------------------------------------------------------------------- per-server state


@dataclass
class _Flight:
    """A job of ours on a server: what its socket said so far."""

    lane: _Lane
    job: Job
    status: JobStatus  # after every move handed to the recorder
    epoch: int  # the socket connection it was posted under (-1: none, read the report)
    recorded: JobStatus = JobStatus.PENDING  # as the store has it (the recorder's outcomes)
    images: list[ImageRef] = field(default_factory=list)
    progress: tuple[int, int] | None = None
    progress_written: tuple[int, int] | None = None
    progress_at: float = 0.0
    ended: bool = False  # its end was seen: it no longer holds a place on the server
    fetching: bool = False  # its images are being downloaded
    started: bool = False  # its socket said it started: it left the server's queue

    @property
    def settled(self) -> bool:
        """Every move handed for it is recorded: the store can be asked about it."""
        return self.recorded is self.status


class _Lane:
    """One server: its client, socket, capabilities, health and the jobs on it."""

    def __init__(self, url: str, client: Client, probe: Client) -> None:
        self.url = url
        self.client = client
        self.probe = probe  # the same server without retries: a health check must not stall
        self.rerouted = False
        self.dry_at: int | None = None  # the store's queue count when a claim came back short
        self.claiming = 0  # jobs asked of the recorder, not yet come back
        self.grew = False  # reserve grew while the current claim was out
        self.reserve = 0  # jobs to hold in hand beyond the queue: grows when the hand runs dry
        self.caps: Capabilities | None = None
        self.up = False
        self.recovered = False
        self.socket_up = False
        self.epoch = 0
        self.flights: dict[str, _Flight] = {}  # by prompt_id
        self.hand: list[tuple[Job, bool]] = []  # claimed and pinned here, not posted; maybe posted
        self.down_since: float | None = time.monotonic()
        self.next_check = 0.0
        self.check_delay = MIN_RECONNECT_DELAY
        self.next_poll = 0.0
        self.poll_delay = MIN_RECONNECT_DELAY
        self.catch_up = False
        self.last_heard = time.monotonic()
        self.done = 0
        self.failed = 0
        self.last_error: str | None = None
        self.queue_remaining: int | None = None
        self.socket: _Socket | None = None

    def status(self) -> ServerStatus:
        return ServerStatus(
            url=self.url,
            up=self.up,
            queue_depth=self.queue_remaining,
            in_flight=len(self.flights),
            done=self.done,
            failed=self.failed,
            last_error=self.last_error,
        )


# --------------------------------------------------------------------------- the worker

_RUNNING: dict[str, Worker] = {}
_RUNNING_LOCK = threading.Lock()


def _store_key(store: Store) -> str:
    if store.path == ":memory:":
        return f"memory:{id(store)}"
    return os.path.realpath(store.path)


def _log_move(job: Job, before: JobStatus, after: JobStatus, url: str | None) -> None:
    logger.info("job %d run %d %s -> %s (%s)", job.id, job.run_id, before, after, url)


class Worker:
    """Runs a store's pending jobs on one or many ComfyUI servers, by itself.

    Example::

        >>> worker = comfynb.Worker(store, servers=[url1, url2]).start()   # returns at once
        >>> worker.status().servers[0].in_flight
        2
        >>> worker.stop()                      # joins; jobs on the servers stay recoverable

    Args:
        store: the open store (the worker writes through it from its own thread).
        servers: ComfyUI base URLs.
        target_depth: how many of this worker's prompts to keep queued on each server.
        client_options: options for each server's ``Client`` (token, headers, timeout, retry).
        name: shown in logs and ``status()`` (default: the store's file name).
        reroute_after: seconds a server may stay down before its jobs go to the others.
        extra_data: ComfyUI's ``extra_data`` for every prompt (API keys: posted, never stored).
    """

    def __init__(
        self,
        store: Store,
        servers: Sequence[str],
        *,
        target_depth: int = 2,
        client_options: ClientOptions | None = None,
        name: str | None = None,
        reroute_after: float = 10.0,
        extra_data: Mapping[str, Any] | None = None,
    ) -> None:
        from ..client.base import split_userinfo
        from ..errors import InvalidInput

        if isinstance(servers, str):
            servers = [servers]
        urls = [split_userinfo(url)[0] for url in servers]
        if not urls or len(set(urls)) != len(urls):
            raise InvalidInput(
                f"servers is a list of distinct ComfyUI URLs, e.g. ['http://127.0.0.1:8188']; "
                f"got {list(servers)!r}"
            )
        if isinstance(target_depth, bool) or not isinstance(target_depth, int) or target_depth < 1:
            raise InvalidInput(f"target_depth must be an int from 1, got {target_depth!r}")
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
        self._lanes: list[_Lane] = []
        self._pool: ThreadPoolExecutor | None = None
        self._recorder: Recorder | None = None
        self._fetching = 0  # downloads started, their outcome not yet seen
        self._halting = False  # the loop ended: claim and post nothing more
        self._cancellations_seen = 0
        self._events: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._running = False
        self._error: str | None = None
        self._counts = {"completed": 0, "failed": 0, "requeued": 0}

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<Worker {self.name} {state} servers={list(self.servers)}>"

    # ----------------------------------------------------------------- public API

    @staticmethod
    def running(store: Store) -> Worker | None:
        """The worker running on ``store`` in this process, or None.

        Example::

            >>> comfynb.Worker.running(store).stop()
        """
        with _RUNNING_LOCK:
            return _RUNNING.get(_store_key(store))

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        """True while the loop runs (``start``ed, or inside ``run``)."""
        return self._running

    def run(self, *, until_idle: bool = True, stop: threading.Event | None = None) -> RunSummary:
        """Run the loop in this thread until idle (or until ``stop`` is set); scripts and tests.

        Idle: nothing claimable is pending and nothing is in flight. When it returns, every
        job is in a settled state: posted jobs are ``submitted``/``running`` (a later worker
        recovers them) and claimed, unposted ones are back in the queue.

        Example::

            >>> Worker(store, [sim.url]).run()
            RunSummary(completed=20, failed=0, requeued=0, seconds=0.41)

        Raises:
            WorkerError: another worker runs on this store in this process.
        """
        self._register()
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
        with _RUNNING_LOCK:
            running = _RUNNING.get(_store_key(self.store))
            if running is not None:
                if running is self or running.servers == self.servers:
                    return running
                raise _busy(running)
            self._stop.clear()
            self._running = True
            _RUNNING[_store_key(self.store)] = self
            self._thread = threading.Thread(
                target=self._thread_main, name=f"comfynb-worker-{self.name}", daemon=True
            )
        _stop_all_at_exit()
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
        lanes = self._lanes
        servers = (
            tuple(lane.status() for lane in lanes)
            if lanes
            else tuple(ServerStatus(url, False, None, 0, 0, 0, None) for url in self.servers)
        )
        return WorkerStatus(self.name, self._running, servers, self._error)

    # ----------------------------------------------------------------- life cycle

    def _register(self) -> None:
        with _RUNNING_LOCK:
            running = _RUNNING.get(_store_key(self.store))
            if running is not None:
                raise _busy(running)
            _RUNNING[_store_key(self.store)] = self
            self._running = True

    def _unregister(self) -> None:
        with _RUNNING_LOCK:
            if _RUNNING.get(_store_key(self.store)) is self:
                del _RUNNING[_store_key(self.store)]
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
        started = time.monotonic()
        self._counts = dict.fromkeys(self._counts, 0)
        self._error = None
        self._open()
        try:
            while not stop.is_set():
                self._step()
                if until_idle and self._idle():
                    break
        finally:
            self._halting = True  # from here on nothing is claimed or posted
            self._close()
        return RunSummary(
            completed=self._counts["completed"],
            failed=self._counts["failed"],
            requeued=self._counts["requeued"],
            seconds=round(time.monotonic() - started, 3),
        )

    def _open(self) -> None:
        from ..client import Client, RetryPolicy

        # queue.Queue, not SimpleQueue: on CPython 3.11 a SimpleQueue.get(timeout=...) that a
        # signal handler outlasts waits forever (measured), and the CLI's SIGTERM handler runs
        # in this thread while it waits here.
        self._events = queue.Queue()
        events = self._events
        self._recorder = Recorder(self.store, wake=lambda: events.put(_WAKE)).start()
        self._fetching = 0
        self._halting = False
        self._cancellations_seen = self.store._shared.cancellations
        once = {**self._client_options, "retry": RetryPolicy(attempts=1)}
        self._lanes = [
            _Lane(url, Client(given, **self._client_options), Client(given, **once))
            for url, given in zip(self.servers, self._server_urls_as_given, strict=True)
        ]
        for lane in self._lanes:
            lane.reserve = self.target_depth
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="comfynb-download")
        for index, lane in enumerate(self._lanes):
            lane.socket = _Socket(index, lane, self._events)
            lane.socket.start()
        for lane in self._lanes:
            self._check(lane)
        logger.info("worker %s started on %s", self.name, ", ".join(self.servers))

    def _close(self) -> None:
        """Finish the downloads under way, record everything handed, give back unposted jobs."""
        try:
            if self._pool is not None:
                self._pool.shutdown()  # images being downloaded are recorded
                self._pool = None
            for _, event in self._drain(0):
                if isinstance(event, _Fetched):
                    self._fetched(event)
            if self._recorder is not None:
                self._recorder.stop()  # posted jobs: recorded as submitted
                self._apply_outcomes(raising=False)
            held = [job.id for lane in self._lanes for job, _ in lane.hand]
            if held:
                self.store.release_claims(held)
            for lane in self._lanes:
                lane.hand.clear()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._recorder is not None:
                self._recorder.stop()
                self._recorder = None
            for lane in self._lanes:
                if lane.socket is not None:
                    lane.socket.stop()
            for lane in self._lanes:
                if lane.socket is not None:
                    lane.socket.join()
                lane.client.close()
                lane.probe.close()
            logger.info("worker %s stopped", self.name)

    def _idle(self) -> bool:
        """Nothing in flight, in hand or being recorded, and nothing claimable on a server up.

        Checked after every round: ``run`` returns as soon as the last job is recorded.
        """
        if self._busy():
            return False
        if self._recorder is not None and self._recorder.handed:
            self._sync()  # the last moves: committed now, not after the recorder's linger
            if self._busy():
                return False
        up = [lane for lane in self._lanes if lane.up and lane.caps is not None]
        if not up:
            # every server down: give up once they have been down for reroute_after
            now = time.monotonic()
            return all(
                lane.down_since is not None and now - lane.down_since > self.reroute_after
                for lane in self._lanes
            )
        return self.store.claimable([lane.url for lane in up]) == 0

    def _busy(self) -> bool:
        lanes = self._lanes
        return bool(self._fetching) or any(
            lane.flights or lane.hand or lane.claiming for lane in lanes
        )

    # ----------------------------------------------------------------- one round

    def _step(self) -> None:
        """One round: the events since the last, then posts, progress, health and claims.

        It never waits on the store: the moves it sees go to the recorder, which commits them
        on its own thread, many jobs per transaction, while this thread posts and downloads.
        """
        lanes = self._lanes
        block = 0.05 if any(lane.flights for lane in lanes) else 0.1
        events = self._drain(block)
        self._apply_outcomes()
        now = time.monotonic()
        failed: list[_Flight] = []
        for index, event in events:
            if index < 0:
                if isinstance(event, _Fetched):
                    self._fetched(event)
                continue
            lane = lanes[index]
            if isinstance(event, _SocketUp):
                lane.socket_up, lane.epoch, lane.catch_up = True, lane.epoch + 1, True
                lane.poll_delay = MIN_RECONNECT_DELAY
                lane.last_heard = now
                if not lane.up:
                    lane.next_check = 0.0
                continue
            if isinstance(event, _SocketDown):
                if lane.socket_up:
                    logger.info("server %s: socket down (%s); polling", lane.url, event.reason)
                    lane.epoch += 1
                lane.socket_up = False
                continue
            lane.last_heard = now
            flight = lane.flights.get(event.prompt_id or "")
            if flight is None or flight.ended:
                continue
            if isinstance(event, ExecutionStart):
                flight.started = True
                if flight.status is JobStatus.SUBMITTED:
                    self._hand(_rec.Move(flight, flight.job.id, JobStatus.RUNNING))
                    flight.status = JobStatus.RUNNING
            elif isinstance(event, Executed):
                flight.images.extend(event.images)
            elif isinstance(event, Progress):
                flight.progress = (int(event.value), int(event.max))
            elif isinstance(event, ExecutionSuccess):
                flight.ended = True
                self._fetch(flight)
            else:
                flight.ended = True
                failed.append(flight)
        # the freed places on the servers are refilled at once, from the jobs in hand
        self._post_from_hands()
        self._hand_progress(now)
        if failed:
            self._sync()
            for flight in failed:
                if flight.lane.flights.get(flight.job.prompt_id or "") is flight:
                    self._poll(flight)
        self._maintain(now)
        self._ask_for_claims()

    def _drain(self, block: float) -> list[tuple[int, Any]]:
        """Every event queued; wait up to ``block`` for the first."""
        events: list[tuple[int, Any]] = []
        try:
            events.append(self._events.get(timeout=block) if block else self._events.get_nowait())
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _hand(self, work: _rec.Work) -> None:
        assert self._recorder is not None
        self._recorder.hand(work)

    def _sync(self) -> None:
        """Wait until the recorder has committed all handed so far, and take its outcomes.

        Before the loop itself asks the store about jobs of ours (polling, rerouting).
        """
        assert self._recorder is not None
        self._recorder.flush()
        self._apply_outcomes()

    def _apply_outcomes(self, *, raising: bool = True) -> None:
        """Book-keeping and log lines of what the recorder committed; claimed jobs to hands."""
        assert self._recorder is not None
        for outcome in self._recorder.outcomes():
            if outcome.error is not None:
                if raising:
                    raise WorkerError(
                        f"the store could not record the worker's moves: {outcome.error}"
                    ) from outcome.error
                logger.error("the store could not record: %s", outcome.error)
            for flight, status in outcome.moves:
                self._moved(flight, status)
            for index, jobs in outcome.claimed.items():
                self._claimed(self._lanes[index], jobs)

    # ----------------------------------------------------------------- results

    def _fetch(self, flight: _Flight) -> None:
        """Download a finished job's images on the pool; a ``_Fetched`` event says when done."""
        assert self._pool is not None
        events = self._events
        self._fetching += 1
        flight.fetching = True

        def done(future: Future[Collected | Exception | None]) -> None:
            error = future.exception()
            events.put((-1, _Fetched(flight, error if error is not None else future.result())))

        self._pool.submit(self._fetch_result, flight).add_done_callback(done)

    def _fetch_result(self, flight: _Flight) -> Collected | Exception | None:
        """One job's images on disk, or the error that kept them (None: not finished)."""
        job, lane = flight.job, flight.lane
        assert job.prompt_id is not None
        try:
            refs: Sequence[ImageRef] = flight.images
            if flight.epoch != lane.epoch:
                # the socket dropped since the post: its `executed` list may be short
                report = lane.client.job(job.prompt_id)
                if report.status is not PromptStatus.COMPLETED:
                    return None
                refs = report.outputs
            return collect_images(self.store, lane.client, job, refs)
        except (*TRANSIENT_ERRORS, JobNotFound) as exc:
            return exc

    def _fetched(self, event: _Fetched) -> None:
        """A download ended: its result goes to the recorder, or the job is polled later."""
        self._fetching -= 1
        flight, outcome = event.flight, event.outcome
        flight.fetching = False
        lane = flight.lane
        if isinstance(outcome, Collected):
            self._hand(_rec.Result(flight, flight.job, outcome))
            flight.status = JobStatus.COMPLETED if outcome.error is None else JobStatus.FAILED
            return
        if isinstance(outcome, OSError) and not isinstance(outcome, TRANSIENT_ERRORS):
            raise WorkerError(
                f"the images of job {flight.job.id} could not be written under "
                f"{self.store.output_dir} ({type(outcome).__name__}: {outcome}); make room or "
                "fix that folder, then start the worker again: the job stays on the server "
                "and the next worker's recover collects it"
            ) from outcome
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, (*TRANSIENT_ERRORS, JobNotFound)
        ):
            raise outcome
        if isinstance(outcome, TRANSIENT_ERRORS):
            self._trouble(lane, outcome)
        lane.catch_up = True  # polled once the server answers

    def _hand_progress(self, now: float) -> None:
        due: dict[int, tuple[int, int]] = {}
        for lane in self._lanes:
            for flight in lane.flights.values():
                if (
                    flight.progress is not None
                    and flight.progress != flight.progress_written
                    and now - flight.progress_at >= PROGRESS_EVERY
                    and not flight.ended
                ):
                    due[flight.job.id] = flight.progress
                    flight.progress_written, flight.progress_at = flight.progress, now
        if due:
            self._hand(_rec.Tick(due))

    def _moved(self, flight: _Flight, after: JobStatus) -> None:
        """Book-keeping and the log line of a move the store has recorded."""
        lane = flight.lane
        assert flight.job.prompt_id is not None
        if lane.flights.get(flight.job.prompt_id) is not flight:
            return  # settled already (rerouted, or polled to its end)
        before = flight.recorded
        if after is not before:
            _log_move(flight.job, before, after, lane.url)
        flight.recorded = after
        if after in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return
        lane.flights.pop(flight.job.prompt_id, None)
        if after is JobStatus.CANCELLED and flight.status is JobStatus.SUBMITTED:
            # cancelled while the POST was on its way: take the prompt back off the server
            with contextlib.suppress(*TRANSIENT_ERRORS):
                withdraw(lane.client, flight.job.prompt_id)
        if after is JobStatus.COMPLETED:
            lane.done += 1
            self._counts["completed"] += 1
        elif after is JobStatus.FAILED:
            lane.failed += 1
            self._counts["failed"] += 1
        elif after is JobStatus.PENDING:
            self._counts["requeued"] += 1

    # ----------------------------------------------------------------- polling and health

    def _poll(self, flight: _Flight) -> None:
        """Ask the server about one job and move it (``poll_job_status``); after ``_sync``."""
        lane = flight.lane
        try:
            job = poll_job_status(self.store, lane.client, flight.job.id)
        except TRANSIENT_ERRORS as exc:
            self._trouble(lane, exc)
            return
        except InvalidTransition:
            # moved meanwhile by someone else: cancel() withdraws the prompt (the server then
            # reports it interrupted) before it records "cancelled"
            job = self.store.job(flight.job.id)
        flight.status = job.status
        self._moved(flight, job.status)

    def _trouble(self, lane: _Lane, exc: Exception) -> None:
        """A server call failed after the client's retries: check its health soon."""
        lane.last_error = f"{type(exc).__name__}: {exc}"
        lane.next_check = 0.0
        if isinstance(exc, _DOWN) and lane.up:
            self._mark_down(lane, lane.last_error)

    def _mark_down(self, lane: _Lane, reason: str) -> None:
        if lane.up:
            logger.info("server %s down: %s", lane.url, reason)
        lane.up = False
        lane.last_error = reason
        if lane.down_since is None:
            lane.down_since = time.monotonic()

    def _check(self, lane: _Lane) -> None:
        """Health check (``/system_stats``); on the way up, capabilities and ``recover``."""
        try:
            lane.probe.system_stats()
            if lane.caps is None or not lane.up:
                lane.caps = capabilities(lane.probe.object_info())
            if not lane.recovered:
                self._recover(lane)
        except _DOWN as exc:
            self._mark_down(lane, f"{type(exc).__name__}: {exc}")
            lane.next_check = time.monotonic() + lane.check_delay
            lane.check_delay = min(lane.check_delay * 2, MAX_BACKOFF)
            return
        except ServerFailed as exc:  # it answers, badly: up, try again soon
            lane.last_error = f"{type(exc).__name__}: {exc}"
            lane.next_check = time.monotonic() + lane.check_delay
            lane.check_delay = min(lane.check_delay * 2, MAX_BACKOFF)
            return
        if not lane.up:
            logger.info("server %s up", lane.url)
        lane.up, lane.down_since, lane.rerouted = True, None, False
        lane.check_delay = MIN_RECONNECT_DELAY
        lane.next_check = float("inf")

    def _recover(self, lane: _Lane) -> None:
        """``recover`` for this server, then follow the jobs it left on the server."""
        self._sync()
        summary = recover(self.store, lane.client, extra_data=self._extra_data)
        lane.recovered = True
        moved = set(summary.completed + summary.failed + summary.requeued)
        if moved or summary.in_progress:
            logger.info(
                "server %s: recovered %d job(s): %d completed, %d failed, %d requeued, "
                "%d in progress",
                lane.url,
                len(moved | set(summary.in_progress)),
                len(summary.completed),
                len(summary.failed),
                len(summary.requeued),
                len(summary.in_progress),
            )
        for job_id in summary.in_progress:
            job = self.store.job(job_id)
            assert job.prompt_id is not None
            lane.flights[job.prompt_id] = _Flight(lane, job, job.status, -1, job.status)
        lane.catch_up = bool(summary.in_progress)

    def _maintain(self, now: float) -> None:
        for lane in self._lanes:
            if now >= lane.next_check:
                self._check(lane)
            if not lane.up:
                overdue = lane.down_since is not None and now - lane.down_since > self.reroute_after
                if overdue and not lane.rerouted:
                    self._reroute(lane)
                continue
            silent = lane.flights and now - lane.last_heard > SILENCE
            if lane.catch_up or silent or (not lane.socket_up and now >= lane.next_poll):
                if not lane.socket_up and not lane.catch_up:
                    lane.next_poll = now + lane.poll_delay
                    lane.poll_delay = min(lane.poll_delay * 2, MAX_BACKOFF)
                lane.catch_up = False
                lane.last_heard = now
                if lane.flights:
                    self._sync()  # the store then has every move of ours: it can be asked
                for flight in list(lane.flights.values()):
                    ours = lane.flights.get(flight.job.prompt_id or "") is flight
                    if ours and not flight.fetching and flight.settled and lane.up:
                        self._poll(flight)

    def _reroute(self, lane: _Lane) -> None:
        """Send a dead server's unfinished jobs back to the queue for the living servers."""
        self._sync()
        reason = f"server {lane.url} down for more than {self.reroute_after} s: rerouted"
        ours = {f.job.id: f for f in lane.flights.values()}
        stranded = [j for j in self.store.unsettled_jobs() if j.server == lane.url]
        back: list[tuple[int, JobStatus | str, Mapping[str, Any], Mapping[str, Any] | None]] = []
        release = [job.id for job, _ in lane.hand]
        for job in stranded:
            if job.status is JobStatus.PENDING:
                release.append(job.id)
            elif job.retries >= job.max_retries:
                error = {"type": "ServerDown", "message": reason + "; no retries left"}
                back.append((job.id, JobStatus.FAILED, {"error": error}, None))
            else:
                back.append((job.id, JobStatus.PENDING, {"server": None}, {"reason": reason}))
        if back:
            moved = transition_many(self.store, back)
            for job in moved:
                if job.id in ours:
                    flight = ours[job.id]
                    flight.status = job.status
                    self._moved(flight, job.status)
                else:
                    logger.info("job %d run %d -> %s (%s)", job.id, job.run_id, job.status, reason)
        self.store.release_claims(release)
        lane.hand.clear()
        lane.flights.clear()
        lane.recovered = True  # nothing of ours is left there to recover
        lane.rerouted = True
        if back or release:
            logger.info("server %s: %d job(s) rerouted", lane.url, len(back) + len(release))

    # ----------------------------------------------------------------- claiming and posting

    def _ask_for_claims(self) -> None:
        """Ask the recorder for jobs for each server whose queue and hand run short.

        A server holds ``target_depth`` of ours queued, and up to ``reserve`` more claimed in
        hand so that a freed place is refilled at once, without waiting on the store. A server
        whose last claim came back short asks again only once jobs may have become claimable
        since (the store counts enqueues, requeues and released claims).
        """
        if self._halting:
            return
        queue_changes = self.store._shared.queue_changes
        for index, lane in enumerate(self._lanes):
            if not lane.up or lane.caps is None or lane.claiming:
                continue
            if lane.dry_at is not None and lane.dry_at == queue_changes:
                continue
            held = self._on_server(lane) + len(lane.hand)
            short = self.target_depth + lane.reserve - held
            # a claim costs ~4 statements whatever its size: ask when half the reserve is
            # gone, or at once if a place on the server would otherwise stay empty
            if short > 0 and (held < self.target_depth or short >= (lane.reserve + 1) // 2):
                lane.dry_at = None
                lane.claiming = short
                self._hand(_rec.Claim(index, lane.url, short))

    def _claimed(self, lane: _Lane, jobs: list[Job]) -> None:
        """Claimed jobs came back from the recorder: into hands, and posted where there is room."""
        if len(jobs) < lane.claiming:
            lane.dry_at = self.store._shared.queue_changes
        lane.claiming, lane.grew = 0, False
        lanes = [other for other in self._lanes if other.up and other.caps is not None]
        if lane not in lanes or self._halting:  # it went down meanwhile, or stopping
            if jobs:
                self.store.release_claims([job.id for job in jobs])
            return
        for job in jobs:
            self._place(lane, job, lanes)
        self._post_from_hands(check=False)

    @staticmethod
    def _on_server(lane: _Lane) -> int:
        """Our jobs waiting in the server's queue (not started, as far as its socket said)."""
        return sum(1 for f in lane.flights.values() if not f.ended and not f.started)

    def _post_from_hands(self, *, check: bool = True) -> None:
        """Post jobs in hand until each server up has ``target_depth`` of ours on it.

        ``check``: first drop the jobs in hand that a notebook cancelled since they were
        claimed (a query only when the store counted a cancel since the last check).
        """
        if self._halting:
            return
        cancellations = self.store._shared.cancellations
        if check and cancellations != self._cancellations_seen:
            self._cancellations_seen = cancellations
            self._drop_cancelled([job.id for lane in self._lanes for job, _ in lane.hand])
        for lane in self._lanes:
            if not lane.up:
                continue
            room = self.target_depth - self._on_server(lane)
            if room > 0 and not lane.hand and lane.claiming and not lane.grew:
                lane.reserve = min(lane.reserve * 2, MAX_RESERVE)  # it ran dry: hold more
                lane.grew = True
            for pair in lane.hand[: max(room, 0)]:
                lane.hand.remove(pair)
                self._post(lane, *pair)

    def _drop_cancelled(self, job_ids: list[int]) -> None:
        """Forget jobs in hand that a notebook cancelled meanwhile (one count query)."""
        if not job_ids:
            return
        if self.store.status_counts(job_ids=job_ids).get("pending", 0) == len(job_ids):
            return
        for job_id in job_ids:
            if self.store.job(job_id).status is not JobStatus.PENDING:
                for lane in self._lanes:
                    lane.hand = [(job, maybe) for job, maybe in lane.hand if job.id != job_id]

    def _place(self, lane: _Lane, job: Job, lanes: Sequence[_Lane]) -> None:
        """Give a job claimed for ``lane`` to a server able to run it; fail it if none is."""
        assert lane.caps is not None
        if missing_capability(job.workflow, lane.caps) is None:
            lane.hand.append((job, False))
            return
        for other in lanes:
            if (
                other is not lane
                and other.caps is not None
                and missing_capability(job.workflow, other.caps) is None
            ):
                assert job.prompt_id is not None
                job = self.store.record_intent(job.id, prompt_id=job.prompt_id, server=other.url)
                other.hand.append((job, False))
                return
        known = [other for other in self._lanes if other.caps is not None]
        reasons = "; ".join(
            f"{other.url}: {missing_capability(job.workflow, other.caps)}"  # type: ignore[arg-type]
            for other in known
        )
        error = {
            "type": "NoCapableServer",
            "message": f"no server of this worker can run job {job.id}: {reasons}; install "
            "what is missing on a server, or change the workflow",
        }
        failed = transition(self.store, job.id, JobStatus.FAILED, error=error)
        _log_move(job, JobStatus.PENDING, failed.status, None)
        self._counts["failed"] += 1

    def _post(self, lane: _Lane, job: Job, maybe_posted: bool) -> None:
        """POST a claimed job (unless it arrived before); its ``submitted`` move to the recorder."""
        assert job.prompt_id is not None
        epoch = lane.epoch if lane.socket_up else -1
        try:
            detail: dict[str, Any]
            if maybe_posted and (report := find_posted(lane.client, job.prompt_id)):
                detail = {"found_on_server": report.status.value}
            else:
                _crashpoints.reached("submit.before_post")
                queued = lane.client.queue_prompt(
                    job.workflow, prompt_id=job.prompt_id, extra_data=self._extra_data
                )
                _crashpoints.reached("submit.after_post")
                detail = {"number": queued.number}
                if queued.node_errors:
                    detail["problems"] = queued.problems
        except PromptRejected as exc:
            error = error_detail(exc, error_type=exc.error_type, node_errors=exc.node_errors)
            failed = transition(self.store, job.id, JobStatus.FAILED, error=error)
            _log_move(job, JobStatus.PENDING, failed.status, lane.url)
            lane.failed += 1
            self._counts["failed"] += 1
            return
        except TRANSIENT_ERRORS as exc:
            self._trouble(lane, exc)
            current = self.store.job(job.id)
            if current.retries >= current.max_retries:
                failed = transition(self.store, job.id, JobStatus.FAILED, error=error_detail(exc))
                _log_move(job, JobStatus.PENDING, failed.status, lane.url)
                lane.failed += 1
                self._counts["failed"] += 1
            else:
                current = self.store.update_job(
                    job.id, retries=current.retries + 1, error=error_detail(exc)
                )
                lane.hand.insert(0, (current, True))
            return
        flight = _Flight(lane, job, JobStatus.SUBMITTED, epoch)
        lane.flights[job.prompt_id] = flight
        fields = {"server": lane.url, "error": None}
        self._hand(_rec.Move(flight, job.id, JobStatus.SUBMITTED, fields, detail))


_AT_EXIT: list[bool] = []


def _stop_all() -> None:
    """Stop every started worker of this process (interpreter exit, a kernel shutting down)."""
    with _RUNNING_LOCK:
        workers = [w for w in _RUNNING.values() if w._thread is not None]
    for worker in workers:
        worker.stop()


def _stop_all_at_exit() -> None:
    """Run ``_stop_all`` at exit, BEFORE ``concurrent.futures`` refuses new work.

    Python stops its thread pools in ``threading._shutdown``, which runs before ``atexit``
    handlers: a worker still running then would see its downloads (and an in-process
    simulator's file answers) fail. ``threading._register_atexit`` is the hook those pools
    use themselves; plain ``atexit`` stays as the fallback.
    """
    with _RUNNING_LOCK:
        if _AT_EXIT:
            return
        _AT_EXIT.append(True)
    hook = getattr(threading, "_register_atexit", None)
    if hook is not None:
        hook(_stop_all)
    atexit.register(_stop_all)


def _busy(running: Worker) -> WorkerError:
    return WorkerError(
        f"worker {running.name} already runs on {running.store.path} with servers "
        f"{list(running.servers)}; stop it first (comfynb.Worker.running(store).stop()) or "
        "start a worker with the same servers to get it back"
    )
