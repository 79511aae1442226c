"""``wait``: block a cell until some jobs end, with a progress bar; the worker runs on.

Example::

    >>> worker = comfynb.Worker(store, servers=[url]).start()
    >>> jobs = [comfynb.enqueue(store, wf, run="sweep", params={"cfg": c}) for c in (4, 7, 9)]
    >>> comfynb.wait(store, jobs)
    WaitSummary(done=3, failed=0, cancelled=0, pending=0, seconds=2.1, interrupted=False, timed_out=False)

The bar is an ``ipywidgets.IntProgress`` in Jupyter (imported only there), ``tqdm`` on a
terminal, and a plain line per change (at most every 2 s) in a log: CI, a pipe, a file. Interrupting the cell (Ctrl-C, the stop button) ends the waiting and returns the
summary so far; the worker, on its own thread, goes on.

A server the worker cannot use is shown, not waited on in silence: what the worker says of
its servers that are down (``worker.status()``; through the endpoint for a ``comfynb worker``
process) is in the bar's text and in the summary's ``servers_down``::

    >>> comfynb.wait(store, job, timeout=5)
    WaitSummary(done=0, ..., pending=1, ..., timed_out=True,
                servers_down=('http://127.0.0.1:9 down since 12:01:02: connection refused',))
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core.models import Job, Run
from ..errors import InvalidInput, StoreError
from ..store.base import ServedStore
from ..worker.running import servers_down

if TYPE_CHECKING:
    from ..store.base import NotebookStore

__all__ = ["WaitSummary", "wait"]

#: Seconds between two looks at the store (one small query each).
POLL_INTERVAL = 0.1
#: Seconds between two looks at what the worker says of its servers.
SERVERS_EVERY = 1.0
_ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class WaitSummary:
    """How the jobs waited for stand: ended (by kind), still pending, and the time waited.

    ``interrupted``: the cell was interrupted; ``timed_out``: ``timeout`` passed first;
    ``servers_down``: what the worker said last of its servers that were down (one line each,
    with since when and the last error), while jobs were left.

    Example::

        >>> comfynb.wait(store, "portraits").done
        20
    """

    done: int
    failed: int
    cancelled: int
    pending: int
    seconds: float
    interrupted: bool = False
    timed_out: bool = False
    servers_down: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """How many jobs were waited for."""
        return self.done + self.failed + self.cancelled + self.pending


class _Bar(Protocol):
    def show(self, ended: int, counts: dict[str, int], down: tuple[str, ...] = ()) -> None: ...
    def close(self) -> None: ...


def wait(
    store: NotebookStore,
    jobs_or_run: Job | int | Run | str | Iterable[Job | int],
    *,
    timeout: float | None = None,
    progress: bool = True,
) -> WaitSummary:
    """Block until these jobs are completed, failed or cancelled; show a bar meanwhile.

    Example::

        >>> summary = comfynb.wait(store, run, timeout=600)
        >>> summary.done, summary.failed
        (18, 2)

    Args:
        store: the store the jobs are in (a worker runs them: ``Worker.start``).
        jobs_or_run: a Job or job id (an ``int`` is a job id), a list of them, a ``Run``, or a
            run's name.
        timeout: give up waiting after this many seconds (the jobs go on).
        progress: show the bar.

    Returns:
        The summary; ``interrupted`` if the cell was interrupted, ``timed_out`` on timeout,
        ``servers_down`` if the worker said some of its servers were down.

    Raises:
        RunNotFound: an unknown run.
        InvalidInput: ``jobs_or_run`` is none of the above.
    """
    run, job_ids = _target(jobs_or_run)
    started = time.monotonic()
    counts = store.status_counts(run=run, job_ids=job_ids)
    total = sum(counts.values())
    bar = _make_bar(total) if progress else None
    interrupted = timed_out = False
    down: tuple[str, ...] = ()
    looked = -SERVERS_EVERY
    try:
        while True:
            ended = sum(counts.get(s, 0) for s in _ENDED)
            if ended < total and time.monotonic() - looked >= SERVERS_EVERY:
                down, looked = _servers_down(store), time.monotonic()
            elif ended >= total:
                down = ()
            if bar is not None:
                bar.show(ended, counts, down)
            if ended >= total:
                break
            if timeout is not None and time.monotonic() - started >= timeout:
                timed_out = True
                if time.monotonic() - looked > POLL_INTERVAL:  # the summary says how it is now
                    down = _servers_down(store)
                    if bar is not None:
                        bar.show(ended, counts, down)
                break
            time.sleep(POLL_INTERVAL)
            counts = store.status_counts(run=run, job_ids=job_ids)
    except KeyboardInterrupt:
        interrupted = True  # the waiting stops; the worker thread goes on
    finally:
        if bar is not None:
            bar.close()
    ended = sum(counts.get(s, 0) for s in _ENDED)
    return WaitSummary(
        done=counts.get("completed", 0),
        failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0),
        pending=sum(counts.values()) - ended,
        seconds=round(time.monotonic() - started, 3),
        interrupted=interrupted,
        timed_out=timed_out,
        servers_down=down,
    )


def _servers_down(store: NotebookStore) -> tuple[str, ...]:
    """What the worker running the store's jobs says of its servers that are down."""
    if isinstance(store, ServedStore):
        with contextlib.suppress(StoreError):  # an older worker process serves no such call
            return tuple(store.servers_down_on_owner())
        return ()
    return tuple(servers_down(store))  # type: ignore[arg-type]  # a Store: its worker is here


def _target(jobs_or_run: Any) -> tuple[Run | str | None, list[int] | None]:
    """(run, None) or (None, job ids) for what ``wait`` was given."""
    if isinstance(jobs_or_run, Run | str):
        return jobs_or_run, None
    if isinstance(jobs_or_run, Job | int) and not isinstance(jobs_or_run, bool):
        jobs_or_run = [jobs_or_run]
    if isinstance(jobs_or_run, Iterable):
        ids = []
        for item in jobs_or_run:
            if isinstance(item, Job):
                ids.append(item.id)
            elif isinstance(item, int) and not isinstance(item, bool):
                ids.append(int(item))
            elif hasattr(item, "item") and isinstance(item.item(), int):  # numpy ints
                ids.append(int(item.item()))
            else:
                raise InvalidInput(f"wait takes jobs or job ids; got {item!r} in the list")
        return None, ids
    raise InvalidInput(
        "wait takes a Job, a job id, a list of them, a Run or a run name; "
        f"got {type(jobs_or_run).__name__} {jobs_or_run!r}"
    )


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)


def _in_jupyter() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _make_bar(total: int) -> _Bar:
    if _in_jupyter():
        try:
            return _WidgetBar(total)
        except ImportError:  # no ipywidgets: tqdm prints into the cell's output instead
            pass
    if not _is_terminal(sys.stderr):  # a log (CI, a pipe, a file): lines, not \r redraws
        return _LineBar(total, sys.stderr)
    return _TqdmBar(total)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _LineBar:
    """For a log: one line when the ended count or a server's state changes, at most every
    ``LOG_EVERY`` seconds, and the last one when the wait ends."""

    LOG_EVERY = 2.0

    def __init__(self, total: int, stream: Any) -> None:
        self._total, self._stream = total, stream
        self._said: tuple[int, tuple[str, ...]] | None = None
        self._said_at = float("-inf")
        self._last = self._written = ""

    def show(self, ended: int, counts: dict[str, int], down: tuple[str, ...] = ()) -> None:
        self._last = "jobs: " + _progress_text(ended, self._total, counts, down)
        now = time.monotonic()
        if (ended, down) != self._said and now - self._said_at >= self.LOG_EVERY:
            self._write()
            self._said, self._said_at = (ended, down), now

    def close(self) -> None:
        if self._last != self._written:  # how it ended, said once
            self._write()

    def _write(self) -> None:
        print(self._last, file=self._stream, flush=True)
        self._written = self._last


class _TqdmBar:
    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="job", desc="jobs", leave=True)

    def show(self, ended: int, counts: dict[str, int], down: tuple[str, ...] = ()) -> None:
        self._bar.n = ended
        text = " · ".join([_describe(counts), *(f"server {d}" for d in down)])
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


class _WidgetBar:
    """An ``IntProgress`` with a label; trait changes batched with ``hold_sync``."""

    def __init__(self, total: int) -> None:
        import ipywidgets
        from IPython.display import display

        self._total = total
        self._failed = False
        # max=0 would divide by zero in the browser; an empty wait shows a full bar of 1
        self._bar = ipywidgets.IntProgress(min=0, max=max(total, 1), value=0)
        self._label = ipywidgets.Label("")
        display(ipywidgets.HBox([self._bar, self._label]))  # type: ignore[no-untyped-call]

    def show(self, ended: int, counts: dict[str, int], down: tuple[str, ...] = ()) -> None:
        self._failed = bool(counts.get("failed"))
        with self._bar.hold_sync():
            self._bar.value = ended if self._total else self._bar.max
            self._bar.bar_style = "danger" if self._failed else "warning" if down else ""
        self._label.value = _progress_text(ended, self._total, counts, down)

    def close(self) -> None:
        if self._bar.value >= self._bar.max:
            self._bar.bar_style = "danger" if self._failed else "success"


def _progress_text(
    ended: int, total: int, counts: dict[str, int], down: tuple[str, ...] = ()
) -> str:
    """``"3/4 ended · 3 completed, 1 running"``; ``"0/0 ended"`` for no jobs; then each
    server down: ``"server http://127.0.0.1:9 down since 12:01:02: connection refused"``."""
    parts = (f"{ended}/{total} ended", _describe(counts), *(f"server {d}" for d in down))
    return " · ".join(part for part in parts if part)
