"""Finished jobs' images, fetched on a small pool of threads while the loop goes on.

Each download (``collect_images``: the half of ``process_job_result`` before its transaction)
writes a job's images under the store's output folder (checked, synced, renamed), and puts a
:class:`Fetched` on the loop's queue when it ends; the loop hands the result to the recorder.

Example (what the loop does)::

    downloads = Downloads(store, events)
    downloads.start(posted)              # on ExecutionSuccess
    ...                                  # later, from the queue: (-1, Fetched(posted, Collected(...)))
    downloads.ended(fetched)
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TRANSIENT_ERRORS, JobNotFound
from ..jobs.results import Collected, collect_images
from ..protocol.types import PromptStatus

if TYPE_CHECKING:
    from ..protocol.types import ImageRef
    from ..store import Store
    from .servers import PostedJob

__all__ = ["POOL_SIZE", "Downloads", "Fetched"]

#: Download threads (1, 2 or 4 measured the same; docs/worker.md).
POOL_SIZE = 4


@dataclass(frozen=True)
class Fetched:
    """A download ended: the images on disk (``Collected``), what kept them, or None when the
    server had not finished the job after all."""

    posted: PostedJob
    outcome: Collected | BaseException | None


class Downloads:
    """Downloads on a pool; ``under_way`` counts those whose ``Fetched`` the loop has not seen."""

    def __init__(self, store: Store, events: queue.Queue[Any]) -> None:
        self._store = store
        self._events = events
        self._pool = ThreadPoolExecutor(
            max_workers=POOL_SIZE, thread_name_prefix="comfynb-download"
        )
        self.under_way = 0

    def start(self, posted: PostedJob) -> None:
        """Download a finished job's images; a ``Fetched`` event says when done."""
        events = self._events
        self.under_way += 1
        posted.fetching = True

        def done(future: Future[Collected | Exception | None]) -> None:
            error = future.exception()
            events.put((-1, Fetched(posted, error if error is not None else future.result())))

        self._pool.submit(self._collect, posted).add_done_callback(done)

    def ended(self, fetched: Fetched) -> None:
        """The loop took a ``Fetched``."""
        self.under_way -= 1
        fetched.posted.fetching = False

    def close(self) -> None:
        """Wait for the downloads under way (their ``Fetched`` are on the queue then)."""
        self._pool.shutdown()

    def _collect(self, posted: PostedJob) -> Collected | Exception | None:
        """One job's images on disk, or the error that kept them (None: not finished)."""
        job, server = posted.job, posted.server
        assert job.prompt_id is not None
        try:
            refs: Sequence[ImageRef] = posted.images
            if posted.epoch != server.epoch:
                # the socket dropped since the post: its `executed` list may be short
                report = server.client.job(job.prompt_id)
                if report.status is not PromptStatus.COMPLETED:
                    return None
                refs = report.outputs
            return collect_images(self._store, server.client, job, refs)
        except (*TRANSIENT_ERRORS, JobNotFound) as exc:
            return exc
