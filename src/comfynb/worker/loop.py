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
round after round (:meth:`_Loop.round`): it reads what the servers' sockets said, posts
claimed jobs to keep ``target_depth`` of ours waiting in each server's queue behind the one it
runs, hands progress, polls the jobs that ended badly, checks the servers' health, reroutes the
jobs of a server down for too long, polls where a socket is down or silent, and asks for more
claims. It never writes the store in the normal course: it hands every change (submitted,
running, completed with candidates, failed, retries, progress, claims) to the recorder, one
thread that commits all it was handed since its last commit in ONE transaction and tells the
loop what it recorded. The parts, each in its module:

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

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from ..core.status import JobStatus, Move, Retry, retry_or_fail
from ..core.urls import same_server, server_url
from ..errors import (
    TRANSIENT_ERRORS,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    ServerError,
    WorkerError,
)
from ..jobs.base import alone_error, withdraw
from ..jobs.recover import recover
from ..jobs.results import Collected
from ..jobs.submit import (
    Posted,
    Transient,
    poll_job_status,
    post_change,
    post_prompt,
    unsendable,
)
from ..protocol.events import Event, Executed, ExecutionStart, ExecutionSuccess, Progress
from ..store.base import require_owner
from ..store.lifecycle import record_changes, release_claims
from . import running as registry
from .downloads import Downloads, Fetched
from .objectinfo import ObjectInfoCopies
from .recorder import Claim, Expect, Record, Recorder, Result, Tick, Work
from .servers import PostedJob, Server, ServerStatus, clock
from .sockets import Socket, SocketDown, SocketUp

if TYPE_CHECKING:
    from ..client import ClientOptions
    from ..core.models import Job
    from ..store import Store

__all__ = ["RunSummary", "ServerStatus", "Worker", "WorkerStatus"]

logger = logging.getLogger("comfynb.worker")

#: Write a running job's progress at most this often (a 1,000-step sampler costs few writes).
PROGRESS_EVERY = 0.5
#: Times collecting one job's result may fail while its server answers other requests before
#: the job fails (each time is a whole download with the client's retries): a file the server
#: cannot send fails its job, never marks the server down.
JOB_STRIKES = 3

_WAKE: Final = (-1, None)  # the recorder has an outcome ready


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
        self._loop: _Loop | None = None  # the current (or last) run's
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
        loop = self._loop = _Loop(self, self._events)
        loop.said_stuck = loop.until_idle = until_idle  # run() says it as it gives up
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


@dataclass(frozen=True)
class _Unposted:
    """The loop's tag for a change of a job that is on no server: failed before or at its
    POST, or a POST to retry. ``server``: the one it was claimed for, if any."""

    server: Server | None
    job: Job
    change: Move | Retry


def _log_move(job: Job, before: JobStatus, after: JobStatus, url: str | None) -> None:
    logger.info("job %d run %d %s -> %s (%s)", job.id, job.run_id, before, after, url)


class _Loop:
    """One run of the worker: its servers, sockets, recorder and downloads, from :meth:`open`
    to :meth:`close`; :meth:`round` is one turn. Only the loop's thread calls it (but
    :meth:`status`)."""

    def __init__(self, worker: Worker, events: queue.Queue[Any]) -> None:
        self.store = worker.store
        self.name = worker.name
        self.target_depth = worker.target_depth
        self.reroute_after = worker.reroute_after
        self.extra_data = worker._extra_data
        self.urls = tuple(zip(worker.servers, worker._server_urls_as_given, strict=True))
        self.client_options = worker._client_options
        self.events = events
        self.counts = {"completed": 0, "failed": 0, "requeued": 0}
        self.halting = False  # the loop ended: claim and post nothing more
        # the one reason for every claim given back as it stops: in hand, or coming back from
        # the recorder while it closes (which of the two depends on timing alone)
        self.stopped = f"worker {self.name} stopped"
        self.strikes: dict[int, int] = {}  # job id: failures to collect it, its server up
        self.cancellations_seen = 0
        #: per server, the store's count of cancels when its claim out was asked: a claim
        #: comes back with jobs that were pending at its SELECT, and any cancel since counts
        self.cancellations_at_claim: dict[str, int] = {}
        self.servers: list[Server] = []
        #: servers not in the worker's list where an earlier worker left jobs in flight
        self.adopted: list[Server] = []
        self.said_stuck = False  # "no server could be used" was logged (until one is up)
        self.until_idle = False  # run(until_idle=True): it gives up and says so itself
        self.sockets: list[Socket] = []
        self._recorder: Recorder | None = None
        self._downloads: Downloads | None = None
        self.object_infos = ObjectInfoCopies(self.store)  # servers' /object_info, kept

    @property
    def recorder(self) -> Recorder:
        assert self._recorder is not None, "open() first"
        return self._recorder

    @property
    def downloads(self) -> Downloads:
        assert self._downloads is not None, "open() first"
        return self._downloads

    @property
    def every_server(self) -> list[Server]:
        """Its servers, then the adopted ones (followed and rerouted, never given claims)."""
        return [*self.servers, *self.adopted]

    def status(self) -> tuple[ServerStatus, ...]:
        sockets = self.sockets
        return tuple(
            server.status(sockets[i].queue_remaining if i < len(sockets) else None)
            for i, server in enumerate(self.every_server)
        )

    # ----------------------------------------------------------------- open, close, idle

    def open(self) -> None:
        """Start the recorder, the downloads and the sockets; check and ``recover`` each server."""
        from ..client import Client, RetryPolicy

        events = self.events
        self._recorder = Recorder(
            self.store, wake=lambda: events.put(_WAKE), results_coming=self._results_coming
        ).start()
        self.cancellations_seen = self.store.change_counts().cancellations
        options = self.client_options
        once = {**options, "retry": RetryPolicy(attempts=1)}
        self.servers = [
            Server(
                url, Client(given, **options), Client(given, **once), target_depth=self.target_depth
            )
            for url, given in self.urls
        ]
        for server in self.servers:
            server.on_object_info = self.object_infos.save
        self._downloads = Downloads(self.store, events)
        self.sockets = [Socket(i, s.client, events).start() for i, s in enumerate(self.servers)]
        for server in self.servers:
            server.check(self._recover)
        logger.info("worker %s started on %s", self.name, ", ".join(url for url, _ in self.urls))
        self._adopt()

    def close(self) -> None:
        """Finish the downloads under way, record everything handed, give back unposted jobs."""
        try:
            if self._downloads is not None:
                self._downloads.close()  # images being downloaded are recorded
            for _, event in self._drain(0):
                if isinstance(event, Fetched):
                    self._fetched(event)
            if self._recorder is not None:
                self._recorder.stop()  # posted jobs: recorded as submitted
                self._take_outcomes(raising=False)
            held = [job_id for server in self.servers for job_id in server.claims.give_back()]
            release_claims(self.store, held, reason=self.stopped)
        finally:
            if self._downloads is not None:
                self._downloads.close()
            if self._recorder is not None:
                self._recorder.stop()
            for socket in self.sockets:
                socket.stop()
            for socket in self.sockets:
                socket.join()
            for server in self.every_server:
                server.client.close()
                server.probe.close()
            self.object_infos.close()
            logger.info("worker %s stopped", self.name)

    def idle(self) -> bool:
        """Nothing in flight, in hand or being recorded, and nothing claimable on a server up.

        Checked after every round: ``run`` returns as soon as the last job is recorded. Jobs
        left in flight on a server not reached yet (not recovered), or on an adopted server,
        keep it busy; with no server up, only pending jobs for its servers do.
        """
        if self._busy():
            return False
        if self.recorder.handed:
            self._sync()  # the last moves: committed now, not after the recorder's linger
            if self._busy():
                return False
        if self.adopted:
            return False
        unreached = [s for s in self.servers if not s.recovered]
        if unreached and any(
            job.server is None or any(same_server(job.server, s.url) for s in unreached)
            for job in self.store.unsettled_jobs()
        ):
            return False
        up = [s for s in self.servers if s.up and s.caps is not None]
        return self.store.claimable([s.url for s in (up or self.servers)]) == 0

    def stuck(self) -> tuple[int, str] | None:
        """Jobs are left and no server could be used for ``reroute_after`` seconds: how many
        jobs, and why (each server, since when, its last error); else None.

        Every server of the worker down (or never up, or answering without its capabilities)
        for more than ``reroute_after``, its jobs rerouted, and no adopted server still
        followed. Checked after ``idle``: jobs are left.
        """
        if self.adopted or not all(s.rerouted and not s.up for s in self.servers):
            return None
        counts = self.store.status_counts()
        left = sum(counts.get(status, 0) for status in ("pending", "submitted", "running"))
        if not left:
            return None
        servers = "; ".join(
            f"{s.url} (down since {clock(s.down_at)}: {s.last_error or 'no answer'})"
            if s.down_at is not None
            else f"{s.url} ({s.last_error or 'no answer'})"
            for s in self.servers
        )
        return left, (
            f"{left} job(s) still pending; no server could be used for more than "
            f"{self.reroute_after:g} s: {servers}"
        )

    def _busy(self) -> bool:
        return bool(self.downloads.under_way) or any(
            s.posted or s.claims.jobs or s.claims.asked for s in self.every_server
        )

    def _results_coming(self) -> bool:
        """A download is under way: its result will be handed soon (the recorder's thread)."""
        downloads = self._downloads
        return downloads is not None and downloads.under_way > 0

    # ----------------------------------------------------------------- one round

    def round(self) -> None:
        """One turn of the loop, in named steps.

        It never waits on the store in the normal course: the changes it sees go to the
        recorder, which commits them on its own thread, many jobs per transaction.
        """
        events = self._wait_for_events()
        self._take_outcomes()  # what the recorder committed: book-keeping, log lines
        now = time.monotonic()
        ended_badly = self._read_events(events, now)
        self._post_claimed()  # the places freed on the servers, refilled at once
        self._hand_progress(now)
        self._poll_ended_badly(ended_badly)
        self._check_servers(now)
        self._reroute_dead(now)
        self._retire_adopted()
        self._say_if_stuck()
        self._poll_unheard(now)
        self._ask_for_claims()

    def _wait_for_events(self) -> list[tuple[int, Any]]:
        busy = any(server.posted for server in self.every_server)
        return self._drain(0.05 if busy else 0.1)

    def _drain(self, block: float) -> list[tuple[int, Any]]:
        """Every event queued; wait up to ``block`` for the first."""
        events: list[tuple[int, Any]] = []
        try:
            events.append(self.events.get(timeout=block) if block else self.events.get_nowait())
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def _read_events(self, events: list[tuple[int, Any]], now: float) -> list[PostedJob]:
        """What the sockets said and the downloads that ended; the jobs that ended badly."""
        ended_badly: list[PostedJob] = []
        for index, event in events:
            if index < 0:
                if isinstance(event, Fetched):
                    self._fetched(event)
                continue  # _WAKE, or a wake-up from a test
            server = self.servers[index]
            if isinstance(event, SocketUp):
                server.socket_opened(now)
            elif isinstance(event, SocketDown):
                server.socket_closed(event.reason)
            else:
                server.last_heard = now
                posted = server.posted.get(event.prompt_id or "")
                if posted is not None and not posted.ended and self._heard(posted, event):
                    ended_badly.append(posted)
        return ended_badly

    def _heard(self, posted: PostedJob, event: Event) -> bool:
        """One socket event of a job of ours; True if it failed or was interrupted."""
        if isinstance(event, ExecutionStart):
            posted.started = True
            if posted.status is JobStatus.SUBMITTED:
                self._hand(Record(posted, Move(posted.job.id, JobStatus.RUNNING)))
                posted.status = JobStatus.RUNNING
        elif isinstance(event, Executed):
            posted.images.extend(event.images)
        elif isinstance(event, Progress):
            posted.progress = (int(event.value), int(event.max))
        elif isinstance(event, ExecutionSuccess):
            posted.ended = True
            self.downloads.start(posted)
            if posted.images and posted.epoch == posted.server.epoch:
                # the recorder may write the completion while the images download
                self._hand(Expect(posted.job, len(posted.images)))
        else:  # ExecutionError, ExecutionInterrupted: the server's report says how
            posted.ended = True
            return True
        return False

    def _hand(self, work: Work) -> None:
        self.recorder.hand(work)

    def _sync(self) -> None:
        """Wait until the recorder has committed all handed so far, and take its outcomes.

        Before the loop itself asks the store about jobs of ours (polling, rerouting).
        """
        self.recorder.flush()
        self._take_outcomes()

    def _take_outcomes(self, *, raising: bool = True) -> None:
        """Book-keeping and log lines of what the recorder committed; claimed jobs to hands."""
        for outcome in self.recorder.outcomes():
            if outcome.error is not None:
                if raising:
                    raise WorkerError(
                        f"the store could not record the worker's moves: {outcome.error}"
                    ) from outcome.error
                logger.error("the store could not record: %s", outcome.error)
            for tag, status in outcome.moves:
                if isinstance(tag, PostedJob):
                    self._moved(tag, status)
                elif isinstance(tag, _Unposted):
                    self._unposted_moved(tag, status)
            for index, jobs in outcome.claimed.items():
                self._claimed(self.servers[index], jobs)

    # ----------------------------------------------------------------- claims and posts

    def _ask_for_claims(self) -> None:
        """Ask the recorder for jobs for each server whose queue and claims run short."""
        if self.halting:
            return
        counts = self.store.change_counts()
        for index, server in enumerate(self.servers):
            if not server.up or server.caps is None:
                continue
            wanted = server.claims.wanted(self.target_depth, server.waiting(), counts.queue_changes)
            if wanted:
                self.cancellations_at_claim[server.url] = counts.cancellations
                self._hand(Claim(index, server.url, wanted))

    def _claimed(self, server: Server, jobs: list[Job]) -> None:
        """Claimed jobs came back from the recorder: placed, and posted where there is room."""
        server.claims.came_back(jobs)
        # Jobs cancelled after the claim's SELECT: the count moved since it was asked, maybe
        # already looked at (and the hand checked) before these jobs were in it. The hand is
        # known free of cancelled jobs only up to the count as the claim was asked.
        asked_at = self.cancellations_at_claim.pop(server.url, self.cancellations_seen)
        self.cancellations_seen = min(self.cancellations_seen, asked_at)
        able = [s for s in self.servers if s.up and s.caps is not None]
        if server not in able or self.halting:  # it went down meanwhile, or stopping
            why = self.stopped if self.halting else f"server {server.url} down"
            release_claims(self.store, [job.id for job in jobs], reason=why)
            return
        for job in jobs:
            try:
                self._place(server, job, able)
            except Exception as exc:  # unforeseen, and this job's alone: it fails
                error = alone_error(exc, "it could not be given to a server")
                change = Move(job.id, JobStatus.FAILED, {"error": error})
                self._hand(Record(_Unposted(server, job, change), change))
        self._post_claimed()  # the hand may hold jobs cancelled since: checked first

    def _post_claimed(self) -> None:
        """Post claimed jobs until each server up has ``target_depth`` of ours waiting on it.

        First the claimed jobs that a notebook cancelled since are dropped (a query only when
        the store counted a cancel since the last check): every path to a POST passes here.
        """
        if self.halting:
            return
        cancellations = self.store.change_counts().cancellations
        if cancellations != self.cancellations_seen:
            self.cancellations_seen = cancellations
            self._drop_cancelled([job.id for s in self.servers for job, _ in s.claims.jobs])
        for server in self.servers:
            if server.up:
                room = self.target_depth - server.waiting()
                for job, maybe_posted in server.claims.take(room):
                    self._post(server, job, maybe_posted)

    def _drop_cancelled(self, job_ids: list[int]) -> None:
        """Forget claimed jobs that a notebook cancelled meanwhile (one count query)."""
        if not job_ids:
            return
        if self.store.status_counts(job_ids=job_ids).get("pending", 0) == len(job_ids):
            return
        gone = {i for i in job_ids if self.store.job(i).status is not JobStatus.PENDING}
        for server in self.servers:
            server.claims.drop(gone)

    def _place(self, server: Server, job: Job, able: Sequence[Server]) -> None:
        """Give a job claimed for ``server`` to one able to run it; fail it if none is (or if
        its workflow cannot be posted anywhere: ``unsendable``)."""
        unfit = unsendable(job.workflow)
        if unfit is not None:
            change = Move(job.id, JobStatus.FAILED, {"error": unfit})
            self._hand(Record(_Unposted(server, job, change), change))
            return
        if server.can_run(job.workflow):
            server.claims.add(job)
            return
        for other in able:
            if other is not server and other.can_run(job.workflow):
                assert job.prompt_id is not None
                job = self.store.record_intent(job.id, prompt_id=job.prompt_id, server=other.url)
                other.claims.add(job)
                return
        reasons = "; ".join(
            f"{other.url}: {other.missing(job.workflow) or 'down'}"
            for other in self.servers
            if other.caps is not None
        )
        error = {
            "type": "NoCapableServer",
            "message": f"no server of this worker can run job {job.id}: {reasons}; install "
            "what is missing on a server, or change the workflow",
        }
        change = Move(job.id, JobStatus.FAILED, {"error": error})
        self._hand(Record(_Unposted(None, job, change), change))

    def _post(self, server: Server, job: Job, maybe_posted: bool) -> None:
        """POST a claimed job (unless it arrived before); what to record, to the recorder."""
        assert job.prompt_id is not None
        epoch = server.epoch if server.socket_up else -1
        outcome = post_prompt(
            server.client,
            job,
            store=self.store,
            maybe_posted=maybe_posted,
            extra_data=self.extra_data,
        )
        change = post_change(job, outcome, server.url)
        if isinstance(outcome, Posted):
            posted = PostedJob(server, job, JobStatus.SUBMITTED, epoch)
            server.posted[job.prompt_id] = posted
            self._hand(Record(posted, change))
            return
        if isinstance(outcome, Transient):
            server.trouble(outcome.error)
        if isinstance(change, Retry):  # posted again (the server asked first) when it is up
            server.claims.put_back(dataclasses.replace(job, retries=job.retries + 1))
        self._hand(Record(_Unposted(server, job, change), change))

    def _unposted_moved(self, tag: _Unposted, after: JobStatus) -> None:
        """Log line and counts of a recorded change of a job on no server."""
        url = tag.server.url if tag.server is not None else None
        if isinstance(tag.change, Retry) and after is JobStatus.PENDING:
            job = tag.job
            logger.info(
                "job %d run %d: retry %d of %d (%s): %s",
                job.id,
                job.run_id,
                job.retries + 1,
                job.max_retries,
                url,
                tag.change.reason,
            )
        elif after is JobStatus.FAILED:
            _log_move(tag.job, JobStatus.PENDING, after, url)
            if tag.server is not None:
                tag.server.failed += 1
            self.counts["failed"] += 1

    # ----------------------------------------------------------------- jobs on servers

    def _fetched(self, event: Fetched) -> None:
        """A download ended: its result goes to the recorder, or the job is polled later."""
        self.downloads.ended(event)
        posted, outcome = event.posted, event.outcome
        if isinstance(outcome, Collected):
            self._hand(Result(posted, posted.job, outcome))
            posted.status = JobStatus.COMPLETED if outcome.error is None else JobStatus.FAILED
            return
        if isinstance(outcome, OSError) and not isinstance(outcome, TRANSIENT_ERRORS):
            raise WorkerError(
                f"the images of job {posted.job.id} could not be written under "
                f"{self.store.output_dir} ({type(outcome).__name__}: {outcome}); make room or "
                "fix that folder, then start the worker again: the job stays on the server "
                "and the next worker's recover collects it"
            ) from outcome
        if isinstance(outcome, ServerError) and not isinstance(outcome, JobNotFound):
            if self._job_trouble(posted, outcome):
                return
            posted.server.trouble(outcome)
        elif isinstance(outcome, Exception) and not isinstance(outcome, JobNotFound):
            # unforeseen, and this job's alone: it fails, the others go on
            self._fail_posted(posted, alone_error(outcome, "its images could not be collected"))
            return
        elif isinstance(outcome, BaseException) and not isinstance(outcome, JobNotFound):
            raise outcome
        posted.server.catch_up = True  # polled once the server answers

    def _job_trouble(self, posted: PostedJob, exc: Exception) -> bool:
        """A server error while collecting one job: the job's own if its server answers
        ``/system_stats`` meanwhile (a file the server cannot send, e.g. its name holds a
        newline): counted, and after ``JOB_STRIKES`` the job fails naming the file and the
        error; the server is not marked down. False: the server's (down or unwell).
        """
        server = posted.server
        try:
            server.probe.system_stats()
        except Exception:
            return False
        job = posted.job
        strikes = self.strikes[job.id] = self.strikes.get(job.id, 0) + 1
        what = "; ".join(getattr(exc, "__notes__", ())) or "its result"
        if strikes < JOB_STRIKES:
            logger.info(
                "job %d run %d: %s failed (%s: %s) while %s answers: try %d of %d",
                job.id,
                job.run_id,
                what,
                type(exc).__name__,
                exc,
                server.url,
                strikes,
                JOB_STRIKES,
            )
            server.catch_up = True  # polled (and collected) again next round
            return True
        reason = (
            f"{what} could not be fetched {strikes} times while the server answered other requests"
        )
        self._fail_posted(posted, alone_error(exc, reason))
        return True

    def _fail_posted(self, posted: PostedJob, error: dict[str, Any]) -> None:
        """A job on a server fails alone (the recorder writes it; the loop goes on)."""
        posted.ended = True
        posted.status = JobStatus.FAILED
        self._hand(Result(posted, posted.job, Collected(error=error)))

    def _hand_progress(self, now: float) -> None:
        """Hand the progress and the latest preview of running jobs, each job's at most
        every ``PROGRESS_EVERY`` (a preview waits on its job; a newer one replaces it)."""
        due: dict[int, tuple[int, int]] = {}
        previews: dict[int, tuple[str, bytes]] = {}
        sockets = self.sockets
        for index, server in enumerate(self.servers):
            if index < len(sockets):
                for prompt_id, preview in sockets[index].previews.take().items():
                    heard = server.posted.get(prompt_id)  # only our jobs' previews count
                    if heard is not None and not heard.ended:
                        heard.preview = preview
            for posted in server.posted.values():
                if now - posted.progress_at < PROGRESS_EVERY or posted.ended:
                    continue
                if posted.progress is not None and posted.progress != posted.progress_written:
                    due[posted.job.id] = posted.progress
                    posted.progress_written, posted.progress_at = posted.progress, now
                if posted.preview is not None:
                    previews[posted.job.id], posted.preview = posted.preview, None
                    posted.progress_at = now
        if due or previews:
            self._hand(Tick(due, previews))

    def _moved(self, posted: PostedJob, after: JobStatus) -> None:
        """Book-keeping and the log line of a change the store has recorded."""
        server = posted.server
        prompt_id = posted.job.prompt_id
        assert prompt_id is not None
        if not posted.is_current:
            return  # settled already (rerouted, or polled to its end)
        before = posted.recorded
        if after is not before:
            _log_move(posted.job, before, after, server.url)
        posted.recorded = after
        if after in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return
        server.posted.pop(prompt_id, None)
        self.strikes.pop(posted.job.id, None)
        if (after is JobStatus.CANCELLED and posted.status is JobStatus.SUBMITTED) or (
            after is JobStatus.FAILED and posted.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
        ):
            # cancelled while the POST was on its way, or failed alone (its move could not be
            # recorded): take the prompt back off the server
            with contextlib.suppress(*TRANSIENT_ERRORS):
                withdraw(server.client, prompt_id)
        if after is JobStatus.COMPLETED:
            server.done += 1
            self.counts["completed"] += 1
        elif after is JobStatus.FAILED:
            server.failed += 1
            self.counts["failed"] += 1
        elif after is JobStatus.PENDING:
            self.counts["requeued"] += 1

    def _poll_ended_badly(self, ended_badly: list[PostedJob]) -> None:
        """Jobs whose socket said they failed or were interrupted: the server's report says
        how (``poll_job_status``)."""
        if ended_badly:
            self._sync()
            for posted in ended_badly:
                if posted.is_current:
                    self._poll(posted)

    def _poll(self, posted: PostedJob) -> None:
        """Ask the server about one job and move it (``poll_job_status``); after ``_sync``."""
        server = posted.server
        try:
            job = poll_job_status(self.store, server.client, posted.job.id)
        except ServerError as exc:  # unreachable, or an answer about this job we cannot read
            if not self._job_trouble(posted, exc):
                server.trouble(exc)
            return
        except InvalidTransition:
            # moved meanwhile by someone else: cancel() withdraws the prompt (the server then
            # reports it interrupted) before it records "cancelled"
            job = self.store.job(posted.job.id)
        except OSError:
            raise  # our output folder (full, in the way): not this job's fault
        except Exception as exc:
            # this job's alone (e.g. a value the store refuses): it fails, the others go on
            self._fail_posted(posted, alone_error(exc, "its end could not be recorded"))
            return
        posted.status = job.status
        self._moved(posted, job.status)

    # ----------------------------------------------------------------- servers

    def _check_servers(self, now: float) -> None:
        """Health checks that are due (down servers, with backoff; servers in trouble)."""
        for server in self.every_server:
            if now >= server.checks.due:
                server.check(self._recover)

    def _recover(self, server: Server) -> None:
        """``recover`` for this server, then follow the jobs it left on the server."""
        self._sync()
        summary = recover(self.store, server.client, extra_data=self.extra_data)
        server.recovered = True
        moved = set(summary.completed + summary.failed + summary.requeued)
        if moved or summary.in_progress:
            logger.info(
                "server %s: recovered %d job(s): %d completed, %d failed, %d requeued, "
                "%d in progress",
                server.url,
                len(moved | set(summary.in_progress)),
                len(summary.completed),
                len(summary.failed),
                len(summary.requeued),
                len(summary.in_progress),
            )
        for job_id in summary.in_progress:
            job = self.store.job(job_id)
            assert job.prompt_id is not None
            server.posted[job.prompt_id] = PostedJob(server, job, job.status, -1, job.status)
        server.catch_up = bool(summary.in_progress)

    def _reroute_dead(self, now: float) -> None:
        """The jobs of servers down for more than ``reroute_after``, to the living ones."""
        for server in self.every_server:
            if server.is_overdue(now, self.reroute_after):
                self._reroute(server)

    def _reroute(self, server: Server) -> None:
        """Send a dead server's unfinished jobs back to the queue for the living servers.

        Each is a retry (``retry_or_fail``: failed with ``ServerDown`` when none is left);
        claimed jobs never posted are given back.
        """
        self._sync()
        reason = f"server {server.url} down for more than {self.reroute_after} s: rerouted"
        ours = {posted.job.id: posted for posted in server.posted.values()}
        stranded = [j for j in self.store.unsettled_jobs() if same_server(j.server, server.url)]
        release = server.claims.give_back()
        changes: list[Move | Retry] = []
        for job in stranded:
            if job.status is JobStatus.PENDING:
                release.append(job.id)
            else:
                error = {"type": "ServerDown", "message": reason}
                changes.append(
                    retry_or_fail(job, reason=reason, error=error, fields={"server": None})
                )
        for job in record_changes(self.store, changes):
            if job.id in ours:
                posted = ours[job.id]
                posted.status = job.status
                self._moved(posted, job.status)
            else:
                logger.info("job %d run %d -> %s (%s)", job.id, job.run_id, job.status, reason)
        release_claims(self.store, release, reason=reason)
        server.posted.clear()
        server.recovered = True  # nothing of ours is left there to recover
        server.rerouted = True
        if changes or release:
            logger.info("server %s: %d job(s) rerouted", server.url, len(changes) + len(release))

    def _poll_unheard(self, now: float) -> None:
        """Poll the jobs of servers whose socket is down (with backoff), silent, or just back."""
        for server in self.every_server:
            if not server.up or not server.poll_due(now):
                continue
            if server.posted:
                self._sync()  # the store then has every change of ours: it can be asked
            for posted in list(server.posted.values()):
                if posted.is_current and not posted.fetching and posted.settled and server.up:
                    self._poll(posted)

    # ----------------------------------------------------------------- adopted servers

    def _adopt(self) -> None:
        """Follow the jobs an earlier worker left in flight on servers not in this one's list.

        A kernel restarted its embedded simulator on another port, or the list changed: such
        jobs would stay submitted or running forever. Each such server is adopted: asked with
        ``recover`` if it answers (its jobs followed to their end; a claimed job it never saw
        is posted there once, as ``recover`` does), else, once it has been down for
        ``reroute_after``, its jobs go back to the queue for this worker's servers
        (``_reroute``). It is never given new jobs, and is dropped once nothing of it is left.
        """
        from ..client import Client, RetryPolicy

        ours = [s.url for s in self.servers]
        left: dict[str, int] = {}  # by the server's one spelling (a row may have another)
        for job in self.store.unsettled_jobs():
            if job.server is not None and not any(same_server(job.server, u) for u in ours):
                try:
                    url = server_url(job.server)
                except InvalidInput as exc:
                    logger.warning("job %d in flight on %r, left alone: %s", job.id, job.server, exc)
                    continue
                left[url] = left.get(url, 0) + 1
        once = {**self.client_options, "retry": RetryPolicy(attempts=1)}
        for url, count in left.items():
            client, probe = Client(url, **self.client_options), Client(url, **once)
            logger.info(
                "%d job(s) in flight on %s, a server worker %s was not given: looking them up "
                "there, or rerouting them if it stays down for %g s",
                count,
                url,
                self.name,
                self.reroute_after,
            )
            server = Server(url, client, probe, target_depth=self.target_depth)
            server.adopted = True
            server.on_object_info = self.object_infos.save
            self.adopted.append(server)
            server.check(self._recover)

    def _retire_adopted(self) -> None:
        """Drop the adopted servers that have nothing of ours left (followed or rerouted)."""
        for server in list(self.adopted):
            if server.recovered and not server.posted:
                self.adopted.remove(server)
                server.client.close()
                server.probe.close()
                logger.info("server %s: no job left there; no longer followed", server.url)

    def _say_if_stuck(self) -> None:
        """Log once (until a server is up again) that no server could be used for a while."""
        if any(s.up for s in self.servers):
            self.said_stuck = self.said_stuck and self.until_idle
            return
        if self.said_stuck or not all(s.rerouted for s in self.servers):
            return
        stuck = self.stuck()
        if stuck is not None:
            self.said_stuck = True
            logger.error("worker %s: %s", self.name, stuck[1])
