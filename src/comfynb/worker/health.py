"""Servers in trouble: health checks, ``recover``, rerouting, adopted servers, no server usable.

Part of :class:`~comfynb.worker.loop.Loop`: what happens to a server beyond posting to it.

* ``check_servers``: the checks that are due (``Server.check``: ``/system_stats`` and
  ``/object_info``, with backoff while it is down); ``recover_server`` when it answers first;
* ``reroute_dead``: the jobs of a server down for more than ``reroute_after`` go back to the
  queue (a retry each, ``retry_or_fail``), its claims given back;
* ``poll_unheard``: our jobs polled where the socket is down, silent or just back;
* ``adopt`` / ``retire_adopted``: servers not in the worker's list where an earlier worker
  left jobs in flight, followed (or rerouted) until nothing of them is left;
* ``stuck`` / ``say_if_stuck``: jobs left and no server usable for ``reroute_after``.

Example (what the loop does each round)::

    loop.check_servers(now)
    loop.reroute_dead(now)
    loop.retire_adopted()
    loop.say_if_stuck()
    loop.poll_unheard(now)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core.status import JobStatus, Move, Retry, retry_or_fail
from ..core.urls import same_server, server_url
from ..errors import InvalidInput
from ..jobs.recover import recover
from ..store.lifecycle import record_changes, release_claims
from .objectinfo import ObjectInfoCopies
from .servers import PostedJob, Server, clock

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..store import Store

__all__ = ["Health"]

logger = logging.getLogger("comfynb.worker")


class Health:
    """The loop's servers in trouble (a part of :class:`~comfynb.worker.loop.Loop`)."""

    if TYPE_CHECKING:  # what it uses of the loop (set in Loop.__init__ and Loop.open)
        store: Store
        name: str
        servers: list[Server]
        adopted: list[Server]
        target_depth: int
        reroute_after: float
        extra_data: dict[str, Any] | None
        client_options: Mapping[str, Any]
        object_infos: ObjectInfoCopies
        said_stuck: bool
        until_idle: bool

        @property
        def every_server(self) -> list[Server]: ...

        def sync(self) -> None: ...

        def moved(self, posted: PostedJob, after: JobStatus) -> None: ...

        def poll(self, posted: PostedJob) -> None: ...

    def check_servers(self, now: float) -> None:
        """Health checks that are due (down servers, with backoff; servers in trouble)."""
        for server in self.every_server:
            if now >= server.checks.due:
                server.check(self.recover_server)

    def recover_server(self, server: Server) -> None:
        """``recover`` for this server, then follow the jobs it left on the server."""
        self.sync()
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

    def reroute_dead(self, now: float) -> None:
        """The jobs of servers down for more than ``reroute_after``, to the living ones."""
        for server in self.every_server:
            if server.is_overdue(now, self.reroute_after):
                self._reroute(server)

    def _reroute(self, server: Server) -> None:
        """Send a dead server's unfinished jobs back to the queue for the living servers.

        Each is a retry (``retry_or_fail``: failed with ``ServerDown`` when none is left);
        claimed jobs never posted are given back.
        """
        self.sync()
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
                self.moved(posted, job.status)
            else:
                logger.info("job %d run %d -> %s (%s)", job.id, job.run_id, job.status, reason)
        release_claims(self.store, release, reason=reason)
        server.posted.clear()
        server.recovered = True  # nothing of ours is left there to recover
        server.rerouted = True
        if changes or release:
            logger.info("server %s: %d job(s) rerouted", server.url, len(changes) + len(release))

    def poll_unheard(self, now: float) -> None:
        """Poll the jobs of servers whose socket is down (with backoff), silent, or just back."""
        for server in self.every_server:
            if not server.up or not server.poll_due(now):
                continue
            if server.posted:
                self.sync()  # the store then has every change of ours: it can be asked
            for posted in list(server.posted.values()):
                if posted.is_current and not posted.fetching and posted.settled and server.up:
                    self.poll(posted)

    # ----------------------------------------------------------------- adopted servers

    def adopt(self) -> None:
        """Follow the jobs an earlier worker left in flight on servers not in this one's list.

        A kernel restarted its embedded simulator on another port, or the list changed: such
        jobs would stay submitted or running forever. Each such server is adopted: asked with
        ``recover`` if it answers (its jobs followed to their end; a claimed job it never saw
        is posted there once, as ``recover`` does), else, once it has been down for
        ``reroute_after``, its jobs go back to the queue for this worker's servers
        (``reroute``). It is never given new jobs, and is dropped once nothing of it is left.
        """
        from ..client import Client, RetryPolicy

        ours = [s.url for s in self.servers]
        left: dict[str, int] = {}  # by the server's one spelling (a row may have another)
        for job in self.store.unsettled_jobs():
            if job.server is not None and not any(same_server(job.server, u) for u in ours):
                try:
                    url = server_url(job.server)
                except InvalidInput as exc:
                    logger.warning(
                        "job %d in flight on %r, left alone: %s", job.id, job.server, exc
                    )
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
            server.check(self.recover_server)

    def retire_adopted(self) -> None:
        """Drop the adopted servers that have nothing of ours left (followed or rerouted)."""
        for server in list(self.adopted):
            if server.recovered and not server.posted:
                self.adopted.remove(server)
                server.client.close()
                server.probe.close()
                logger.info("server %s: no job left there; no longer followed", server.url)

    def say_if_stuck(self) -> None:
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
