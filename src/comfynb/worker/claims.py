"""The jobs claimed for one server and not yet posted, and when to claim more for it.

A server holds ``target_depth`` of our prompts waiting in its queue (behind the one it runs),
and up to ``reserve`` more claimed here, so that a freed place is refilled at once, without
waiting on the store. The reserve starts at ``target_depth`` and doubles (up to
``MAX_RESERVE``) each time it runs dry while a claim is out: a fast server drains it in
milliseconds. A claim costs ~4 statements whatever its size, so more is asked only when half
the reserve is gone, or at once if a place on the server would otherwise stay empty. A claim
that came back short is asked again only once jobs may have become claimable since (the
store counts enqueues, requeues and released claims).

Each claimed job has its prompt_id, committed before it is posted; ``maybe_posted`` marks one
whose POST failed on the way (it may have arrived): the server is asked before it is posted
again.

Example (what the loop does)::

    n = server.claims.wanted(target_depth, server.waiting(), queue_changes)
    ...                                         # the recorder claims n jobs
    server.claims.came_back(jobs)
    for job, maybe_posted in server.claims.take(room): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.models import Job

__all__ = ["MAX_RESERVE", "Claims"]

#: The most jobs a server's claims hold beyond its queue.
MAX_RESERVE = 64


class Claims:
    """The jobs claimed for one server, not yet posted: ``jobs``, as (job, maybe_posted)."""

    def __init__(self, target_depth: int) -> None:
        self.jobs: list[tuple[Job, bool]] = []  # in claim order
        self.asked = 0  # jobs asked of the recorder, not yet come back
        self.reserve = target_depth  # jobs to hold beyond the queue: grows when it runs dry
        self.grew = False  # the reserve grew while the current claim was out
        self.dry_at: int | None = None  # the store's queue count when a claim came back short
        self.asked_at = 0  # the store's queue count when the claim out was asked

    def __len__(self) -> int:
        return len(self.jobs)

    def wanted(self, target_depth: int, waiting: int, queue_changes: int) -> int:
        """How many jobs to claim now (0: none), with ``waiting`` of ours in the queue."""
        if self.asked or (self.dry_at is not None and self.dry_at == queue_changes):
            return 0
        held = waiting + len(self.jobs)
        short = target_depth + self.reserve - held
        if short > 0 and (held < target_depth or short >= (self.reserve + 1) // 2):
            self.dry_at = None
            self.asked = short
            # the count as the claim is asked, before its SELECT can run: a job enqueued
            # after this may have missed the claim, and then the count moves past dry_at
            self.asked_at = queue_changes
            return short
        return 0

    def came_back(self, jobs: Sequence[Job]) -> None:
        """A claim came back with ``jobs`` (the caller places them).

        A short claim marks the server dry at the count read when it was ASKED, not the count
        now: a job enqueued between the claim's SELECT and this moment has already moved the
        count, and would otherwise wait for the next enqueue (the demo's lost third job).
        """
        if len(jobs) < self.asked:
            self.dry_at = self.asked_at
        self.asked, self.grew = 0, False

    def take(self, room: int) -> list[tuple[Job, bool]]:
        """Up to ``room`` jobs to post now, oldest first; the reserve grows if it ran dry."""
        if room > 0 and not self.jobs and self.asked and not self.grew:
            self.reserve = min(self.reserve * 2, MAX_RESERVE)
            self.grew = True
        taken = self.jobs[: max(room, 0)]
        del self.jobs[: len(taken)]
        return taken

    def add(self, job: Job) -> None:
        """A job just claimed (and placed here), last in line."""
        self.jobs.append((job, False))

    def put_back(self, job: Job) -> None:
        """A job whose POST failed on the way: first to go again, the server asked first."""
        self.jobs.insert(0, (job, True))

    def drop(self, job_ids: set[int]) -> None:
        """Forget these jobs (cancelled from a notebook since they were claimed)."""
        self.jobs = [(job, maybe) for job, maybe in self.jobs if job.id not in job_ids]

    def give_back(self) -> list[int]:
        """Empty the claims; the ids to release in the store."""
        ids = [job.id for job, _ in self.jobs]
        self.jobs.clear()
        return ids
