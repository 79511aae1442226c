"""The worker's one writer: a thread that records what the loop hands it, many jobs per commit.

DuckDB runs a few hundred transactions a second here whatever their size (duckdb-facts.md;
a statement costs ~0.3-1 ms however few rows it touches), and it releases the GIL while it
works. So the worker's loop (sockets, posts, downloads) never waits on the store: it hands
every move to this thread, which commits all that was handed since its last commit in ONE
transaction (a group commit: the busier the worker, the more jobs per commit), then leaves an
outcome for the loop saying what was recorded.

What keeps the store the source of truth: a claim (with its prompt_id) is committed before
the loop posts it; a job's images are on disk before its ``completed`` move is handed here;
moves are committed in the order they were handed. A ``submitted`` move that a crash loses
leaves a claimed ``pending`` job, which ``recover`` finds on the server by its prompt_id.

Example (what the worker does)::

    recorder = Recorder(store, wake=lambda: events.put(WAKE)).start()
    recorder.hand(Record(tag, Move(job.id, JobStatus.SUBMITTED, {"server": url}, {"number": 3})))
    recorder.hand(Record(None, Retry(job.id, "POST /prompt: ServerTimeout", error)))
    ...
    for outcome in recorder.outcomes():     # after a wake
        for tag, status in outcome.moves: ...
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.status import JobState, JobStatus, Move, Release, Retry, job_of
from ..errors import InvalidTransition, StaleStates
from ..jobs.base import alone_error
from ..jobs.results import Collected, record_result, remove_files, start_round
from ..jobs.submit import select_next_jobs
from ..store.lifecycle import record_changes, transition

if TYPE_CHECKING:
    from ..core.models import Job
    from ..store import Store

__all__ = ["Claim", "Expect", "Outcome", "Record", "Recorder", "Result", "Tick"]


@dataclass(frozen=True)
class Record:
    """Record a change of a job: a ``Move`` (a new status), a ``Retry`` (an attempt counted) or
    a ``Release`` (a claim given back)."""

    tag: Any  # the loop's handle for the job; handed back in the outcome with the status
    change: Move | Retry | Release


@dataclass(frozen=True)
class Result:
    """A finished job's downloaded images (or why it fails): candidates and ``completed``."""

    tag: Any
    job: Job
    collected: Collected


@dataclass(frozen=True)
class Tick:
    """Progress of jobs still on a server: ``{job_id: (value, max)}``, and the latest preview
    of some: ``{job_id: (mime, image bytes)}`` (``Transaction.set_previews``)."""

    progress: Mapping[int, tuple[int, int]]
    previews: Mapping[int, tuple[str, bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """Claim up to ``n`` pending jobs for ``server``; ``key`` names the asker in the outcome."""

    key: int
    server: str
    n: int


@dataclass(frozen=True)
class Expect:
    """``job``'s images are being downloaded: its ``Result``, with ``images`` of them, follows.

    A hint (ignoring it is always correct): a recorder that is not busy writes the job's
    completion meanwhile, in a transaction it commits once the result is there; a result
    that differs (a failure, another count), comes late or not at all rolls it back.
    """

    job: Job
    images: int


Work = Record | Result | Tick | Claim | Expect


@dataclass
class Outcome:
    """What one commit recorded: each move as (tag, status the job is in now), in order.

    ``items``: how many handed items it covers; ``claimed``: jobs by ``Claim.key``;
    ``error``: the commit failed for a reason other than a job moved meanwhile (the store
    is unwritable): nothing of it was recorded.
    """

    items: int
    moves: list[tuple[Any, JobStatus]] = field(default_factory=list)
    claimed: dict[int, list[Job]] = field(default_factory=dict)
    error: BaseException | None = None


_STOP = object()

#: How long a batch of moves alone waits for a result to commit with (seconds).
LINGER = 0.004
#: ... and how long at most while a download is under way, its result on the way: a quick
#: job's ``submitted``/``running`` moves then share the commit of its result, rather than
#: making the result wait behind their own commit (measured: ~3 ms of a ~15 ms latency).
RESULT_LINGER = 0.025
#: A batch this large means the worker is busy: the next one gathers for ``BUSY_LINGER``
#: (a commit costs ~5 ms of CPU whatever its size; under load, fewer and larger commits
#: leave that CPU to the loop and the downloads: measured 1.05 -> 0.59 ms of recorder CPU
#: per job going from 20 to 50 ms, 22 jobs per commit).
BUSY_BATCH = 9
BUSY_LINGER = 0.05
#: How long an open transaction waits for an expected result before it is rolled back
#: (and redone without it); the writer lock is held meanwhile.
RESULT_WAIT = 0.025

#: The most job states the recorder keeps (those of jobs the loop failed or released itself
#: are never dropped one by one).
MAX_REMEMBERED = 4096


class Recorder:
    """Commits handed work on its own thread; see the module docstring.

    ``wake`` is called (on the recorder's thread) after each outcome is ready;
    ``results_coming`` (read on the recorder's thread) says whether a download is under way,
    whose result will be handed soon.
    """

    def __init__(
        self,
        store: Store,
        wake: Callable[[], None],
        results_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self._wake = wake
        self._results_coming = results_coming
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._outcomes: collections.deque[Outcome] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="comfynb-recorder", daemon=True)
        self.handed = 0  # items handed and not yet in an outcome taken by the loop
        self._last_batch = 0  # how many items the last batch held
        self._busy = False  # the last batch was large: gather longer, expect nothing
        self._carried: list[Any] = []  # taken while waiting for a result: the next batch's
        # the states of jobs on their way, as this thread last committed them: a commit plans
        # from them instead of reading them; its UPDATE checks them (StaleStates if a job was
        # moved by someone else meanwhile, then the batch is redone one by one from the store)
        self._states: dict[int, JobState] = {}

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def hand(self, work: Work) -> None:
        """Queue ``work`` for the next commit (the loop's thread only)."""
        self.handed += 1
        self._inbox.put(work)

    def flush(self) -> None:
        """Block until everything handed so far is committed (its outcome may be untaken)."""
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._inbox.put(done)
        done.wait()

    def outcomes(self) -> list[Outcome]:
        """The outcomes ready since the last call, oldest first (the loop's thread only)."""
        ready = []
        while self._outcomes:
            outcome = self._outcomes.popleft()
            self.handed -= outcome.items
            ready.append(outcome)
        return ready

    def stop(self) -> None:
        """Commit what was handed, then end the thread (its outcomes stay to be taken)."""
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join()

    # ----------------------------------------------------------------- the thread

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = self._next_batch()
            work: list[Work] = [item for item in batch if isinstance(item, Work)]
            try:
                if work:
                    self._outcomes.append(self._record(work))
                    self._wake()
            finally:
                for item in batch:
                    if isinstance(item, threading.Event):
                        item.set()
                    elif item is _STOP:
                        stopping = True

    def _next_batch(self) -> list[Any]:
        """Everything handed, waiting for the first item; lingers a little to gather more.

        A batch of only ``submitted``/``running`` moves waits up to ``LINGER`` for more, and
        up to ``RESULT_LINGER`` while a download is under way: a quick job's result then
        shares the commit of its own ``submitted`` move instead of queueing behind it (one
        commit, not two; and a shorter wait for its ``completed``). When the last batch was
        large (the worker is busy), any batch gathers for ``BUSY_LINGER``. A flush or the stop
        ends the gathering at once; a claim too, unless the worker is busy.
        """
        busy = self._busy = self._last_batch >= BUSY_BATCH
        if self._carried:
            batch, self._carried = self._carried, []
        else:
            batch = [self._inbox.get()]
        deadline: float | None = None
        longest = 0.0
        while True:
            try:
                batch.append(self._inbox.get_nowait())
                continue
            except queue.Empty:
                pass
            # a claim ends the gathering unless busy: then the hand it refills still holds
            # half its reserve, the loop is not waiting for it yet
            urgent = any(
                isinstance(i, threading.Event) or i is _STOP or (isinstance(i, Claim) and not busy)
                for i in batch
            )
            results = not all(isinstance(item, Record | Tick) for item in batch)
            now = time.monotonic()
            if deadline is None:
                deadline = now + (BUSY_LINGER if busy else LINGER)
                longest = now + (BUSY_LINGER if busy else RESULT_LINGER)
            if now >= deadline and deadline < longest and self._results_coming():
                deadline = longest  # a result is on its way: commit with it
            if urgent or (results and not busy) or now >= deadline:
                self._last_batch = len(batch)
                return batch
            with contextlib.suppress(queue.Empty):  # then the deadline is checked again
                batch.append(self._inbox.get(timeout=deadline - now))

    def _record(self, work: list[Work]) -> Outcome:
        """Commit ``work`` (to which the results it waited for are added).

        When the batch fails for another reason than a job moved meanwhile, it is redone
        one by one too: a job whose own change the store refuses (a value it cannot hold, in
        a job written by an older version or by hand) is recorded ``failed`` with the reason
        (``alone_error``), and the others are recorded as they were. Only when a job cannot
        even be recorded as failed is the store itself at fault (``Outcome.error``).
        """
        try:
            return self._record_together(work)
        except (InvalidTransition, StaleStates):
            # someone (a notebook's cancel, the loop's own poll) moved one of these jobs
            # meanwhile: one by one, from the store
            self._states.clear()
            try:
                return self._record_one_by_one(work)
            except Exception as exc:
                return Outcome(len(work), error=exc)
        except Exception as exc:
            self._states.clear()
            try:
                return self._record_one_by_one(work, alone=True)
            except Exception:
                return Outcome(len(work), error=exc)

    def _record_together(self, work: list[Work]) -> Outcome:
        """Every item in ONE transaction; ``InvalidTransition`` if a job moved meanwhile.

        When not busy and a job's images are being downloaded (an ``Expect`` without its
        ``Result``), its completion is written first and the commit waits for the result:
        once it comes, only its candidate rows and the COMMIT remain.
        """
        coming = self._coming(work)
        if coming:
            try:
                return self._commit(work, coming)
            except _Late as late:  # rolled back; again below, with the results that came
                work.extend(late.arrived)
        return self._commit(work, {})

    def _coming(self, work: Sequence[Work]) -> dict[int, Expect]:
        """The expected results not in ``work``, to wait for (none when busy)."""
        if self._busy:
            return {}
        there = {item.job.id for item in work if isinstance(item, Result)}
        return {
            item.job.id: item
            for item in work
            if isinstance(item, Expect) and item.job.id not in there and item.images
        }

    def _commit(self, work: list[Work], coming: Mapping[int, Expect]) -> Outcome:
        """One transaction: the moves, the results in ``work`` and, once they come, those of
        ``coming`` (``_Late``, rolled back, if one differs or is late)."""
        records = [item for item in work if isinstance(item, Record)]
        results = [item for item in work if isinstance(item, Result)]
        good = [r for r in results if r.collected.error is None]
        plain = [r for r in good if r.collected.detail is None]
        failing: list[tuple[int, JobStatus, Mapping[str, Any], Mapping[str, Any] | None]] = [
            (r.job.id, JobStatus.FAILED, {"error": r.collected.error}, None)
            for r in results
            if r.collected.error is not None
        ]
        outcome = Outcome(0)
        planned = [*(r.change for r in records), *failing]
        images = {r.job.id: r.collected.images for r in plain}
        counts = {job_id: len(found) for job_id, found in images.items()}
        counts.update((job_id, expect.images) for job_id, expect in coming.items())
        known = {r.job.id: r.job for r in plain}
        known.update((job_id, expect.job) for job_id, expect in coming.items())
        with self.store.transaction() as tx:
            completing = start_round(self.store, planned, counts, known=known, states=self._states)
            for r in good:
                if r.collected.detail is not None:
                    record_result(
                        self.store, r.job.id, r.collected.images, detail=r.collected.detail
                    )
            tx.set_progress(_merged_ticks(work))
            tx.set_previews(_merged_previews(work))
            outcome.claimed = self._claim(work)
            if coming:
                arrived = self._await(coming)
                work.extend(arrived)
                good += arrived
                for r in arrived:
                    images[r.job.id] = r.collected.images
            completing.add_images(images)
        outcome.items = len(work)
        self._remember(
            [*planned, *((r.job.id, JobStatus.COMPLETED, {}, None) for r in good)],
            outcome.claimed,
        )
        outcome.moves = [(r.tag, _status_after(r.change)) for r in records]
        outcome.moves += [
            (r.tag, JobStatus.COMPLETED if r.collected.error is None else JobStatus.FAILED)
            for r in work
            if isinstance(r, Result)
        ]
        return outcome

    def _await(self, coming: Mapping[int, Expect]) -> list[Result]:
        """The results of ``coming``, taken from the inbox as they come (at most
        ``RESULT_WAIT``); anything else taken meanwhile goes to the next batch.

        Raises:
            _Late: one is late, or differs from what was expected (the loop is waiting on a
                flush, or the recorder is stopping: at once). What came is in ``arrived``.
        """
        deadline = time.monotonic() + RESULT_WAIT
        waiting = dict(coming)
        arrived: list[Result] = []
        while waiting:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise _Late(arrived) from None
            if not (isinstance(item, Result) and item.job.id in waiting):
                self._carried.append(item)
                if isinstance(item, threading.Event) or item is _STOP:
                    raise _Late(arrived)
                continue
            arrived.append(item)
            expect = waiting.pop(item.job.id)
            collected = item.collected
            if (
                collected.error is not None
                or collected.detail is not None
                or (len(collected.images) != expect.images)
            ):
                raise _Late(arrived)
        return arrived

    def _remember(
        self,
        changes: Sequence[Move | Retry | Release | tuple[int, JobStatus, Any, Any]],
        claimed: Mapping[int, list[Job]],
    ) -> None:
        """Keep the states this commit left (a retry or a release changes more than the
        status: read again next time)."""
        for change in changes:
            if isinstance(change, Retry | Release):
                self._states.pop(change.job_id, None)
                continue
            job_id, to, _, _ = change
            state = self._states.get(job_id)
            if to.is_terminal or state is None:
                self._states.pop(job_id, None)
            else:
                self._states[job_id] = JobState(to, state.retries, state.prompt_id)
        for jobs in claimed.values():
            for job in jobs:
                self._states[job.id] = JobState(job.status, job.retries, job.prompt_id)
        if len(self._states) > MAX_REMEMBERED:  # jobs the loop settled itself: start afresh
            self._states.clear()

    def _record_one_by_one(self, work: Sequence[Work], *, alone: bool = False) -> Outcome:
        """The same items, each in its own transaction; a refused move reports the status now.

        ``alone``: a change the store refuses for another reason fails its job alone.
        """
        outcome = Outcome(len(work))
        for item in work:
            if isinstance(item, Record):
                outcome.moves.append((item.tag, self._settle(item.change, alone)))
            elif isinstance(item, Result):
                outcome.moves.append((item.tag, self._finish(item, alone)))
        ticks = _merged_ticks(work)
        try:
            with self.store.transaction() as tx:
                tx.set_progress(ticks)
                tx.set_previews(_merged_previews(work))
        except Exception:
            if not alone:
                raise
            # progress is only shown: a value the store refuses is dropped, the next one
            # (or the job's end) is written
        outcome.claimed = self._claim(work)
        return outcome

    def _settle(self, change: Move | Retry | Release, alone: bool = False) -> JobStatus:
        try:
            return record_changes(self.store, [change])[0].status
        except InvalidTransition:
            return self.store.job(change.job_id).status
        except Exception as exc:
            if not alone:
                raise
            what = f"its move to {change.to.value}" if isinstance(change, Move) else "its change"
            return self._fail_alone(job_of(change), exc, f"{what} could not be recorded")

    def _finish(self, result: Result, alone: bool = False) -> JobStatus:
        job, collected = result.job, result.collected
        try:
            if collected.error is not None:
                return transition(self.store, job.id, "failed", error=collected.error).status
            record_result(self.store, job.id, collected.images, detail=collected.detail)
            return JobStatus.COMPLETED
        except InvalidTransition:
            if collected.error is None:
                remove_files(self.store, job, collected.written)
            return self.store.job(job.id).status
        except Exception as exc:
            if not alone:
                raise
            if collected.error is None:
                remove_files(self.store, job, collected.written)
            return self._fail_alone(job.id, exc, "its result could not be recorded")

    def _fail_alone(self, job_id: int, exc: Exception, reason: str) -> JobStatus:
        """Record ``job_id`` failed of ``exc``; raises if even that cannot be written (then the
        store is at fault, not the job)."""
        try:
            return transition(self.store, job_id, "failed", error=alone_error(exc, reason)).status
        except InvalidTransition:
            return self.store.job(job_id).status

    def _claim(self, work: Sequence[Work]) -> dict[int, list[Job]]:
        claimed: dict[int, list[Job]] = {}
        for item in work:
            if isinstance(item, Claim):
                claimed[item.key] = select_next_jobs(self.store, item.n, server=item.server)
        return claimed


class _Late(Exception):
    """An expected result is late or differs: roll back, commit without waiting."""

    def __init__(self, arrived: list[Result]) -> None:
        super().__init__("an expected result is late or differs")
        self.arrived = arrived


def _merged_ticks(work: Sequence[Work]) -> dict[int, tuple[int, int]]:
    progress: dict[int, tuple[int, int]] = {}
    for item in work:
        if isinstance(item, Tick):
            progress.update(item.progress)
    return progress


def _merged_previews(work: Sequence[Work]) -> dict[int, tuple[str, bytes]]:
    previews: dict[int, tuple[str, bytes]] = {}
    for item in work:
        if isinstance(item, Tick):
            previews.update(item.previews)
    return previews


def _status_after(change: Move | Retry | Release) -> JobStatus:
    return JobStatus.PENDING if isinstance(change, Retry | Release) else change.to
