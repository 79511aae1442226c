"""Following the jobs posted: what their sockets say, their ends, their progress and previews.

Part of :class:`~comfynb.worker.loop.Loop`. A job of ours on a server is a
:class:`~comfynb.worker.servers.PostedJob`; the loop follows it from its POST to its end:

* ``heard``: an event of its socket (started, images, progress, success, failure);
* ``fetched``: its download ended (the result to the recorder; a server error while its
  server answers is the job's own: ``JOB_STRIKES``);
* ``hand_progress``: its progress and latest sampler preview, at most every
  ``PROGRESS_EVERY``;
* ``poll_ended_badly``/``poll``: the server asked how it ended (``poll_job_status``), when
  its socket said it failed or cannot tell;
* ``moved``: the book-keeping and log line of a move the recorder committed.

Example (what the loop does)::

    if loop.heard(posted, event): ended_badly.append(posted)   # ExecutionError, interrupted
    loop.hand_progress(now)
    loop.poll_ended_badly(ended_badly)
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..core.status import JobStatus, Move
from ..errors import TRANSIENT_ERRORS, InvalidTransition, JobNotFound, ServerError, WorkerError
from ..jobs.base import alone_error, withdraw
from ..jobs.results import Collected
from ..jobs.submit import poll_job_status
from ..protocol.events import Event, Executed, ExecutionStart, ExecutionSuccess, Progress
from .downloads import Downloads, Fetched
from .recorder import Expect, Record, Result, Tick, Work
from .servers import PostedJob, Server
from .sockets import Socket

if TYPE_CHECKING:
    from ..core.models import Job
    from ..store import Store

__all__ = ["JOB_STRIKES", "PROGRESS_EVERY", "Following", "log_move"]

logger = logging.getLogger("comfynb.worker")

#: Write a running job's progress at most this often (a 1,000-step sampler costs few writes).
PROGRESS_EVERY = 0.5
#: Times collecting one job's result may fail while its server answers other requests before
#: the job fails (each time is a whole download with the client's retries): a file the server
#: cannot send fails its job, never marks the server down.
JOB_STRIKES = 3


def log_move(job: Job, before: JobStatus, after: JobStatus, url: str | None) -> None:
    """The INFO line of a job's move: ``job 12 run 3 submitted -> running (URL)``."""
    logger.info("job %d run %d %s -> %s (%s)", job.id, job.run_id, before, after, url)


class Following:
    """The loop's jobs on servers (a part of :class:`~comfynb.worker.loop.Loop`)."""

    if TYPE_CHECKING:  # what it uses of the loop (set in Loop.__init__ and Loop.open)
        store: Store
        servers: list[Server]
        sockets: list[Socket]
        counts: dict[str, int]
        strikes: dict[int, int]

        @property
        def downloads(self) -> Downloads: ...

        def hand(self, work: Work) -> None: ...

        def sync(self) -> None: ...

    def heard(self, posted: PostedJob, event: Event) -> bool:
        """One socket event of a job of ours; True if it failed or was interrupted."""
        if isinstance(event, ExecutionStart):
            posted.started = True
            if posted.status is JobStatus.SUBMITTED:
                self.hand(Record(posted, Move(posted.job.id, JobStatus.RUNNING)))
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
                self.hand(Expect(posted.job, len(posted.images)))
        else:  # ExecutionError, ExecutionInterrupted: the server's report says how
            posted.ended = True
            return True
        return False

    def fetched(self, event: Fetched) -> None:
        """A download ended: its result goes to the recorder, or the job is polled later."""
        self.downloads.ended(event)
        posted, outcome = event.posted, event.outcome
        if isinstance(outcome, Collected):
            self.hand(Result(posted, posted.job, outcome))
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
        self.hand(Result(posted, posted.job, Collected(error=error)))

    def hand_progress(self, now: float) -> None:
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
            self.hand(Tick(due, previews))

    def moved(self, posted: PostedJob, after: JobStatus) -> None:
        """Book-keeping and the log line of a change the store has recorded."""
        server = posted.server
        prompt_id = posted.job.prompt_id
        assert prompt_id is not None
        if not posted.is_current:
            return  # settled already (rerouted, or polled to its end)
        before = posted.recorded
        if after is not before:
            log_move(posted.job, before, after, server.url)
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

    def poll_ended_badly(self, ended_badly: list[PostedJob]) -> None:
        """Jobs whose socket said they failed or were interrupted: the server's report says
        how (``poll_job_status``)."""
        if ended_badly:
            self.sync()
            for posted in ended_badly:
                if posted.is_current:
                    self.poll(posted)

    def poll(self, posted: PostedJob) -> None:
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
        self.moved(posted, job.status)
