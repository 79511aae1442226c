"""Posting: claims asked for each server, placed on one able to run them, and posted.

Part of :class:`~comfynb.worker.loop.Loop` (its steps ``post_claimed`` and
``ask_for_claims``, and what it does with claims the recorder brings back, ``claimed``). A
server keeps ``target_depth`` of our prompts waiting in its queue; its hand of claimed jobs
(``Server.claims``, ``claims.py``) refills it at once. A claimed job goes to a server whose
``/object_info`` can run it (or fails ``NoCapableServer``); a job a notebook cancelled while
its claim was on the way is never posted. The POST and what to record of it are the job
functions' (``jobs.submit.post_prompt``/``post_change``); every change goes to the recorder.

Example (what the loop does each round)::

    loop.post_claimed()            # refill each server's queue from its hand
    loop.ask_for_claims()          # a Claim handed to the recorder where a hand runs short
    loop.claimed(server, jobs)     # the recorder claimed them: placed, posted where there is room
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.status import JobStatus, Move, Retry
from ..jobs.base import alone_error
from ..jobs.submit import Posted, Transient, post_change, post_prompt, unsendable
from ..store.lifecycle import release_claims
from .following import log_move
from .recorder import Claim, Record, Work
from .servers import PostedJob, Server

if TYPE_CHECKING:
    from ..core.models import Job
    from ..store import Store

__all__ = ["Posting", "Unposted"]

logger = logging.getLogger("comfynb.worker")


@dataclass(frozen=True)
class Unposted:
    """The loop's tag for a change of a job that is on no server: failed before or at its
    POST, or a POST to retry. ``server``: the one it was claimed for, if any."""

    server: Server | None
    job: Job
    change: Move | Retry


class Posting:
    """The loop's claims and posts (a part of :class:`~comfynb.worker.loop.Loop`)."""

    if TYPE_CHECKING:  # what it uses of the loop (set in Loop.__init__ and Loop.open)
        store: Store
        servers: list[Server]
        target_depth: int
        extra_data: dict[str, Any] | None
        counts: dict[str, int]
        halting: bool
        stopped: str
        cancellations_seen: int
        cancellations_at_claim: dict[str, int]

        def hand(self, work: Work) -> None: ...

    def ask_for_claims(self) -> None:
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
                self.hand(Claim(index, server.url, wanted))

    def claimed(self, server: Server, jobs: list[Job]) -> None:
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
                self.hand(Record(Unposted(server, job, change), change))
        self.post_claimed()  # the hand may hold jobs cancelled since: checked first

    def post_claimed(self) -> None:
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
            self.hand(Record(Unposted(server, job, change), change))
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
        self.hand(Record(Unposted(None, job, change), change))

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
            self.hand(Record(posted, change))
            return
        if isinstance(outcome, Transient):
            server.trouble(outcome.error)
        if isinstance(change, Retry):  # posted again (the server asked first) when it is up
            server.claims.put_back(dataclasses.replace(job, retries=job.retries + 1))
        self.hand(Record(Unposted(server, job, change), change))

    def unposted_moved(self, tag: Unposted, after: JobStatus) -> None:
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
            log_move(tag.job, JobStatus.PENDING, after, url)
            if tag.server is not None:
                tag.server.failed += 1
            self.counts["failed"] += 1
