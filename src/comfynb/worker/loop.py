"""One run of the worker: the loop that turns round after round, from ``open`` to ``close``.

:class:`Loop` holds a run's state (its servers, the adopted ones, their sockets, the recorder,
the downloads, the counts) and turns :meth:`Loop.round`, a list of named steps. The steps
themselves are in its parts, one module each: ``posting.py`` (claims and posts),
``following.py`` (the jobs posted: what their sockets say, their ends, their progress) and
``health.py`` (checks, ``recover``, rerouting, adopted servers). ``Worker`` (``worker.py``)
makes one ``Loop`` per run and drives it::

    loop = Loop(store, name, urls, target_depth=2, reroute_after=10.0, client_options={},
                extra_data=None, events=queue.Queue(), until_idle=True)
    loop.open()                     # recorder, downloads, sockets; each server checked, recovered
    while not stop.is_set():
        loop.round()                # one turn: events, posts, progress, checks, claims
        if loop.idle(): break
    loop.close()                    # downloads recorded, claims given back

It never writes the store in the normal course: it hands every change to the recorder
(:meth:`Loop.hand`) and waits for it (:meth:`Loop.sync`) only before asking the store about
its own jobs.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..core.urls import same_server
from ..errors import WorkerError
from ..store.lifecycle import release_claims
from .downloads import Downloads, Fetched
from .following import Following
from .health import Health
from .objectinfo import ObjectInfoCopies
from .posting import Posting, Unposted
from .recorder import Recorder, Work
from .servers import PostedJob, Server, ServerStatus
from .sockets import Socket, SocketDown, SocketUp

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["Loop"]

logger = logging.getLogger("comfynb.worker")

_WAKE: Final = (-1, None)  # the recorder has an outcome ready


class Loop(Posting, Following, Health):
    """One run of the worker: its servers, sockets, recorder and downloads, from :meth:`open`
    to :meth:`close`; :meth:`round` is one turn. Only the loop's thread calls it (but
    :meth:`status`).

    Its steps are in its parts: :class:`~comfynb.worker.posting.Posting` (claims and posts),
    :class:`~comfynb.worker.following.Following` (the jobs posted) and
    :class:`~comfynb.worker.health.Health` (servers down, rerouted, adopted); this class holds
    the state they share (set here, in ``__init__`` and :meth:`open`) and turns the round.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        urls: tuple[tuple[str, str], ...],
        *,
        target_depth: int,
        reroute_after: float,
        client_options: Mapping[str, Any],
        extra_data: dict[str, Any] | None,
        events: queue.Queue[Any],
        until_idle: bool,
    ) -> None:
        self.store = store
        self.name = name
        self.target_depth = target_depth
        self.reroute_after = reroute_after
        self.extra_data = extra_data
        #: each server's URL (its one spelling, no credentials) and the URL as given
        self.urls = urls
        self.client_options = client_options
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
        # run(until_idle=True) gives up and says so itself: "no server could be used" is
        # then logged by its caller, never by the loop (else once, until a server is up)
        self.until_idle = until_idle
        self.said_stuck = until_idle
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
            server.check(self.recover_server)
        logger.info("worker %s started on %s", self.name, ", ".join(url for url, _ in self.urls))
        self.adopt()

    def close(self) -> None:
        """Finish the downloads under way, record everything handed, give back unposted jobs."""
        try:
            if self._downloads is not None:
                self._downloads.close()  # images being downloaded are recorded
            for _, event in self._drain(0):
                if isinstance(event, Fetched):
                    self.fetched(event)
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
            self.sync()  # the last moves: committed now, not after the recorder's linger
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
        self.post_claimed()  # the places freed on the servers, refilled at once
        self.hand_progress(now)
        self.poll_ended_badly(ended_badly)
        self.check_servers(now)
        self.reroute_dead(now)
        self.retire_adopted()
        self.say_if_stuck()
        self.poll_unheard(now)
        self.ask_for_claims()

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
                    self.fetched(event)
                continue  # _WAKE, or a wake-up from a test
            server = self.servers[index]
            if isinstance(event, SocketUp):
                server.socket_opened(now)
            elif isinstance(event, SocketDown):
                server.socket_closed(event.reason)
            else:
                server.last_heard = now
                posted = server.posted.get(event.prompt_id or "")
                if posted is not None and not posted.ended and self.heard(posted, event):
                    ended_badly.append(posted)
        return ended_badly

    def hand(self, work: Work) -> None:
        """Give the recorder a change to commit (or a claim to make, a result to expect)."""
        self.recorder.hand(work)

    def sync(self) -> None:
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
                    self.moved(tag, status)
                elif isinstance(tag, Unposted):
                    self.unposted_moved(tag, status)
            for index, jobs in outcome.claimed.items():
                self.claimed(self.servers[index], jobs)
