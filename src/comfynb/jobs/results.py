"""A finished job's images: downloaded, checked and recorded with its completion in ONE transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import crashpoints as _crashpoints
from ..core.models import Candidate, Job, NewCandidate
from ..core.status import Change, JobState, JobStatus, Move, job_of
from ..errors import (
    TRANSIENT_ERRORS,
    CorruptImage,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    OutputError,
    UnexpectedResponse,
    UnsafePath,
)
from ..protocol.types import ImageRef, JobReport, PromptStatus
from ..store.base import require_owner
from ..store.lifecycle import check_move, record_changes_in, transition

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

from .base import error_detail, load_job
from .follow import apply_report, forgotten


def record_result(
    store: Store,
    job_id: int,
    images: Sequence[NewCandidate],
    *,
    detail: Mapping[str, Any] | None = None,
) -> list[Candidate]:
    """Complete a job with its images, in ONE transaction; running it again changes nothing.

    Creates one candidate per image, adds their number to the parent candidate's
    ``child_count``, and moves the job to ``completed``. The files must already be in
    the output folder.

    Example::

        >>> cands = record_result(store, 7, [NewCandidate(node_id="9", path="run/a.png")])
        >>> store.job(7).status.value, [c.path for c in cands]
        ('completed', ['run/a.png'])

    Raises:
        JobNotInStore: no such job.
        InvalidTransition: the job cannot complete from its status; nothing changed.
        InvalidInput: an image path outside the output folder; nothing changed.
    """
    return record_results(store, {job_id: images}, detail=detail)[job_id]


def record_results(
    store: Store,
    results: Mapping[int, Sequence[NewCandidate]],
    *,
    detail: Mapping[str, Any] | None = None,
) -> dict[int, list[Candidate]]:
    """Complete many jobs with their images in ONE transaction: :func:`record_result` in bulk.

    A handful of statements for the whole batch (not per job), for workers that finish
    many prompts at once. Jobs already completed are left as they are; if any job cannot
    complete, nothing is written.

    Example::

        >>> done = record_results(store, {7: [NewCandidate("9", "r/a.png")], 8: []})
        >>> {job_id: len(cands) for job_id, cands in done.items()}
        {7: 1, 8: 0}

    Raises:
        JobNotInStore, InvalidTransition, InvalidInput: as :func:`record_result`.
    """
    return record_round(store, (), results, detail)


def record_round(
    store: Store,
    moves: Sequence[Change],
    results: Mapping[int, Sequence[NewCandidate]],
    detail: Mapping[str, Any] | None = None,
    *,
    known: Mapping[int, Job] | None = None,
    states: Mapping[int, JobState] | None = None,
) -> dict[int, list[Candidate]]:
    """``record_results`` after other ``moves`` (and retries) of the same round, in one plan.

    A worker's round: the moves (submitted, running, failed, ...), retries and completions are
    checked together and written with one read, one UPDATE per set of columns, one INSERT
    of candidates and one of events, whatever the number of jobs. ``known``: the jobs as the
    caller holds them, for what never changes after ``enqueue`` (run, step, parent, params);
    only their states are read then, not their workflows. ``states``: their states as the
    caller knows them, with ``known``: nothing is read; if a status turned out different,
    the UPDATE raises ``StaleStates`` and the caller's transaction must roll back.
    """
    with store.transaction():
        completing = start_round(
            store,
            moves,
            {job_id: len(images) for job_id, images in results.items()},
            detail,
            known=known,
            states=states,
        )
        return completing.add_images(results)


def start_round(
    store: Store,
    moves: Sequence[Change],
    counts: Mapping[int, int],
    detail: Mapping[str, Any] | None = None,
    *,
    known: Mapping[int, Job] | None = None,
    states: Mapping[int, JobState] | None = None,
) -> Completing:
    """:func:`record_round` but for the candidate rows: ``counts`` says how many images
    each completing job will have; :meth:`Completing.add_images` inserts them.

    Call it inside ``store.transaction()``, and ``add_images`` before that block ends: the
    completions, their events and the images are then ONE transaction. A worker writes the
    moves and completions while a job's images are still downloading, then adds their rows
    once they are on disk (the commit waits only for that last INSERT).

    Example::

        >>> with store.transaction():
        ...     completing = start_round(store, [], {7: 1})       # job 7: 1 image coming
        ...     completing.add_images({7: [NewCandidate("9", "r/a.png")]})
    """
    ids = list(counts)
    wanted = list(dict.fromkeys([*ids, *(job_of(move) for move in moves)]))
    if not wanted:
        return Completing(store, {}, {}, {})
    with store.transaction() as tx:  # joins the caller's
        if known is not None and all(i in known for i in ids):
            if states is None or any(i not in states for i in wanted):
                states = tx.job_states(wanted)  # JobNotInStore names a missing one
            jobs = {i: known[i] for i in ids}
        else:
            jobs = tx.jobs_by_id(wanted)
            missing = [i for i in wanted if i not in jobs]
            if missing:
                tx.job(missing[0])  # raises JobNotInStore naming it
            states = {i: JobState(j.status, j.retries, j.prompt_id) for i, j in jobs.items()}
        done = {i: tx.candidates_of(i) for i in ids if states[i].status is JobStatus.COMPLETED}
        todo = {i: jobs[i] for i in ids if i not in done}
        completions = [
            Move(job_id, JobStatus.COMPLETED, {}, {"candidates": counts[job_id], **(detail or {})})
            for job_id in todo
        ]
        # planned first (InvalidTransition before any write), then one UPDATE, one INSERT
        record_changes_in(tx, states, [*moves, *completions])
        children: dict[int, int] = {}
        for job in todo.values():
            if job.parent_candidate_id is not None and counts[job.id]:
                parent = job.parent_candidate_id
                children[parent] = children.get(parent, 0) + counts[job.id]
        tx.add_child_counts(children)
    return Completing(store, todo, dict(counts), done)


class Completing:
    """A round written but for its candidate rows (:func:`start_round`), in an open transaction."""

    def __init__(
        self,
        store: Store,
        todo: Mapping[int, Job],
        counts: Mapping[int, int],
        done: Mapping[int, list[Candidate]],
    ) -> None:
        self._store = store
        self._todo = todo
        self._counts = counts
        self._done = done

    def add_images(
        self, results: Mapping[int, Sequence[NewCandidate]]
    ) -> dict[int, list[Candidate]]:
        """Insert the images of each job (as many as announced); every job's candidates.

        Raises:
            InvalidInput: a job's images are not as many as announced (its completion event
                says how many); the caller's transaction must roll back.
        """
        for job_id, count in self._counts.items():
            if len(results.get(job_id, ())) != count:
                raise InvalidInput(
                    f"job {job_id} was announced with {count} image(s), got "
                    f"{len(results.get(job_id, ()))}; roll the transaction back"
                )
        with self._store.transaction() as tx:  # joins the caller's
            made = tx.insert_candidates_many(
                [(job, image) for job in self._todo.values() for image in results[job.id]]
            )
            by_job: dict[int, list[Candidate]] = {job_id: [] for job_id in self._todo}
            for candidate in made:
                by_job[candidate.job_id].append(candidate)
            _crashpoints.reached("result.transaction")  # the crash test kills a worker here
        return {i: self._done[i] if i in self._done else by_job[i] for i in self._counts}


# --------------------------------------------------------------------------- talking to a server

#: Attempts at downloading one image that arrives truncated or undecodable before the job fails
#: with ``CorruptImage`` (a cut connection or a proxy hiccup is usually gone on the next try).
DOWNLOAD_ATTEMPTS = 3

_IMAGE_TYPES = frozenset({"output", "temp", "input"})
# the workflow inputs a candidate's seed and prompt text are read from when params lack them
_SEED_INPUTS = ("seed", "noise_seed")


def process_job_result(
    store: Store, client: Client, job: Job | int, *, report: JobReport | None = None
) -> Job:
    """Download every image of a finished job and complete it with its candidates.

    Every output node, every batch element, ``output`` and ``temp`` images go under the store's
    output folder (one folder per job); each file is checked to decode and renamed into place
    whole. Then ONE transaction creates a candidate per image (size, bytes, sha256, seed, prompt
    text, params), adds to the parent candidate's ``child_count`` and completes the job.
    Calling it again on a completed job changes nothing.

    A server file name that would escape the output folder (``UnsafePath``), or an image that is
    still corrupt after ``DOWNLOAD_ATTEMPTS`` downloads (``CorruptImage``), fails the job with
    that in ``error``; no candidate is written and the job's files are removed. So does an
    image the server no longer has (``UnexpectedResponse``, HTTP 404). A fully cached
    re-run that an older ComfyUI reports with no outputs (the fact sheet's quirk 2) takes the
    images of the latest earlier run of the same prompt in the server's history; without one,
    the job fails with ``error["type"] == "OutputsNotListed"`` rather than completing with none.

    Example::

        >>> job = process_job_result(store, client, job)
        >>> job.status.value, store.candidates(job=job)[["node_id", "width", "height"]]
        ('completed',   node_id  width  height
        0       9    512     512)

    Args:
        report: the server's report, when the caller already has it (``poll_job_status``).

    Returns:
        The job as stored afterwards; if the server has not finished it, it is moved as
        ``poll_job_status`` would.

    Raises:
        InvalidTransition: the job is pending, failed or cancelled.
        ServerUnreachable, ServerTimeout, ServerFailed: the server did not answer; the job
            is unchanged and no file of it is left, call it again later.
    """
    require_owner(store, "comfynb.process_job_result")  # a served store: refused before any I/O
    current = load_job(store, job)
    if current.status is JobStatus.COMPLETED:
        return current
    check_move(current, JobStatus.COMPLETED)
    assert current.prompt_id is not None
    if report is None:
        try:
            report = client.job(current.prompt_id)
        except JobNotFound as exc:
            return forgotten(store, current, exc)
    if report.status is not PromptStatus.COMPLETED:
        return apply_report(store, current, report)
    collected = collect_images(store, client, current, report.outputs)
    if collected.error is not None:
        return transition(store, current.id, JobStatus.FAILED, error=collected.error)
    with _removed_on_failure(store, current, list(collected.written)):
        try:
            record_result(store, current.id, collected.images, detail=collected.detail)
        except InvalidTransition:
            # cancelled meanwhile: no candidate, no file
            remove_files(store, current, collected.written)
            return store.job(current.id)
    return store.job(current.id)


@dataclass(frozen=True)
class Collected:
    """A finished job's images, downloaded and checked, ready to record; or why it fails."""

    images: tuple[NewCandidate, ...] = ()
    detail: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    written: tuple[Path, ...] = ()


def collect_images(store: Store, client: Client, job: Job, refs: Sequence[ImageRef]) -> Collected:
    """Download the images ``refs`` of a finished job into its folder (no store write).

    The half of ``process_job_result`` before the transaction, so that a worker can record
    many jobs' results in one. A transient server error removes the files and propagates.
    """
    detail: dict[str, Any] = {}
    if not refs:
        refs, detail = _unlisted_outputs(client, job)
        if detail.get("type") == "OutputsNotListed":
            return Collected(error=detail)
    written: list[Path] = []
    with _removed_on_failure(store, job, written):
        try:
            images = tuple(_download(store, client, job, ref, written) for ref in refs)
        except (OutputError, UnexpectedResponse) as exc:
            # unsafe, corrupt, or gone from the server (/view answered 404): asking again
            # would get the same answer, so the job fails rather than stay stuck
            remove_files(store, job, written)
            return Collected(error=error_detail(exc))
    return Collected(images=images, detail=detail or None, written=tuple(written))


@contextlib.contextmanager
def _removed_on_failure(store: Store, job: Job, written: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        remove_files(store, job, written)
        raise


def job_folder(store: Store, job: Job) -> Path:
    """The folder of a job's image files under the store's output folder."""
    return store.output_dir / f"run-{job.run_id}" / f"job-{job.id}"


def _download(
    store: Store, client: Client, job: Job, ref: ImageRef, written: list[Path]
) -> NewCandidate:
    if ref.type not in _IMAGE_TYPES:
        raise UnsafePath(
            f"the server named an image type {ref.type!r}; expected one of "
            f"{', '.join(sorted(_IMAGE_TYPES))}. Refusing to download it"
        )
    dest = job_folder(store, job) / ref.type
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            path, facts = client.download_with_facts(ref, dest)
            break
        except CorruptImage:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
        except TRANSIENT_ERRORS as exc:
            # which file: a worker tells a file that always fails from a server that is down
            exc.add_note(image_note(ref))
            raise
    written.append(path)
    return NewCandidate(
        node_id=ref.node_id or "",
        path=path.relative_to(store.output_dir).as_posix(),
        sha256=facts.sha256,
        width=facts.width,
        height=facts.height,
        bytes=facts.bytes,
        seed=_seed_of(job),
        prompt=_prompt_of(job),
    )


def image_note(ref: ImageRef) -> str:
    """How an image is named in an error: ``image 'x_00001_.png' (output)``; the note a
    transient error of its download carries (``exc.__notes__``)."""
    where = f"{ref.type}, subfolder {ref.subfolder!r}" if ref.subfolder else ref.type
    return f"image {ref.filename!r} ({where})"


def remove_files(store: Store, job: Job, paths: Sequence[Path]) -> None:
    """Remove files of ``job`` that no candidate will point to, and its emptied folders."""
    for path in paths:
        path.unlink(missing_ok=True)
    top = job_folder(store, job)
    folders = sorted({p.parent for p in paths}, key=lambda p: len(p.parts), reverse=True)
    for folder in folders:
        while folder.is_relative_to(top):
            with contextlib.suppress(OSError):  # not empty: another image of the job stays
                folder.rmdir()
            if folder == top:
                break
            folder = folder.parent


#: The largest seed a candidate row holds (its ``seed`` column is a UBIGINT, as ComfyUI's
#: seeds are); a larger one (a job written by an older version, or by hand) stays in the
#: job's params and the candidate's seed is None.
SEED_MAX = 2**64 - 1


def _is_seed(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


def _seed_of(job: Job) -> int | None:
    """The job's seed: ``params["seed"]``, else the workflow's one seed input (if only one)."""
    seed = job.params.get("seed")
    if _is_seed(seed):
        assert isinstance(seed, int)
        return seed
    seeds = {
        value
        for node in job.workflow.values()
        for name, value in node.get("inputs", {}).items()
        if name in _SEED_INPUTS and isinstance(value, int) and not isinstance(value, bool)
    }
    if len(seeds) != 1:
        return None
    [only] = seeds
    return only if _is_seed(only) else None


def _prompt_of(job: Job) -> str | None:
    """``params["prompt"]``, else the text of the node linked as a sampler's ``positive``."""
    prompt = job.params.get("prompt")
    if isinstance(prompt, str):
        return prompt
    for node in job.workflow.values():
        link = node.get("inputs", {}).get("positive")
        if isinstance(link, list) and link and link[0] in job.workflow:
            text = job.workflow[link[0]].get("inputs", {}).get("text")
            if isinstance(text, str):
                return text
    return None


def _unlisted_outputs(client: Client, job: Job) -> tuple[Sequence[ImageRef], dict[str, Any]]:
    """Images of a completed job whose report lists none, and the event detail saying whence.

    An older ComfyUI lists no outputs for a fully cached re-run posted without a client_id
    (quirk 2). comfynb always sends one, but a proxy may drop it: the images are then those of
    the latest earlier run of the same prompt, found in the server's history. A job that was not
    fully cached really made no image files (e.g. only ``SaveImageWebsocket``): no images.
    """
    assert job.prompt_id is not None
    history = client.history()
    ours = history.get(job.prompt_id)
    if ours is None:
        return (), {"note": "the server listed no image outputs"}
    cached = {
        n
        for kind, data in ours.messages
        if kind == "execution_cached"
        for n in data.get("nodes", [])
    }
    if not set(ours.prompt) <= {str(n) for n in cached}:
        return (), {"note": "the server listed no image outputs"}
    earlier = None
    for prompt_id, entry in history.items():
        if prompt_id == job.prompt_id:
            break
        if entry.prompt == ours.prompt and entry.report.outputs:
            earlier = entry
    if earlier is None:
        return (), {
            "type": "OutputsNotListed",
            "message": "the server ran this prompt from its cache and listed no images (an "
            "older ComfyUI reached without a client_id), and its history has no earlier run "
            "of the same prompt to take them from; enqueue it again with one input changed "
            "(e.g. the seed)",
        }
    return earlier.report.outputs, {"outputs_from": earlier.prompt_id}
