"""A server as the worker knows it: health, capabilities, what its socket said, our jobs on it.

* :class:`Capabilities` (pure): what a server's ``/object_info`` can run, and
  :func:`missing_capability`, what it lacks for a workflow.
* :class:`Server`: one server's state: up or down (health checks on ``/system_stats`` with
  :class:`Backoff`), its capabilities, its socket (up, epoch, when last heard, polls with
  backoff while it is down), the jobs of ours it holds (:class:`PostedJob`, by prompt_id) and
  those claimed for it but not yet posted (:class:`~comfynb.worker.claims.Claims`).
* :class:`ServerStatus`: a snapshot of it for ``worker.status()``.

Only the loop's thread changes a ``Server`` (``worker.status()`` reads it from any thread).

Example::

    >>> caps = capabilities(client.object_info())
    >>> missing_capability({"4": {"class_type": "UNETLoader", "inputs": {}}}, caps)
    'node "4" (UNETLoader) is not installed'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ..core.status import JobStatus
from ..errors import ServerFailed, ServerTimeout, ServerUnreachable
from ..protocol.events import MIN_RECONNECT_DELAY
from .claims import Claims

if TYPE_CHECKING:
    from ..client import Client
    from ..core.models import Job
    from ..protocol.types import ImageRef

__all__ = [
    "MAX_BACKOFF",
    "MODEL_SUFFIXES",
    "SILENCE",
    "Backoff",
    "Capabilities",
    "PostedJob",
    "Server",
    "ServerStatus",
    "brief",
    "capabilities",
    "clock",
    "missing_capability",
]

logger = logging.getLogger("comfynb.worker")

#: Errors that mean the server is down (after the client's own retries), not just unwell.
DOWN: Final = (ServerUnreachable, ServerTimeout)
#: The longest pause between health checks of a down server, and between polls.
MAX_BACKOFF = 2.0
#: Seconds without a word from a server's socket, jobs in flight, before they are polled (the
#: real server's reconnect race can leave a socket deaf; a long node also stays silent).
SILENCE = 2.0

# --------------------------------------------------------------------------- capabilities (pure)

#: Input values ending so are model files; a job naming one goes only where the file is.
MODEL_SUFFIXES: Final = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


@dataclass(frozen=True)
class Capabilities:
    """What a server can run: its node classes and the options of each combo input.

    Example::

        >>> caps = capabilities(client.object_info())
        >>> "KSampler" in caps.classes, "v1-5.safetensors" in caps.combos["CheckpointLoaderSimple", "ckpt_name"]
        (True, True)
    """

    classes: frozenset[str]
    combos: Mapping[tuple[str, str], frozenset[str]] = field(repr=False)


def _combo_options(spec: Any) -> list[str] | None:
    """The options of a combo input spec in either spelling, else None."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    first = spec[0]
    if isinstance(first, list):  # older nodes: [["a", "b"], {...}]
        return [str(option) for option in first]
    if first == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):  # v3 nodes
        options = spec[1].get("options")
        return [str(o) for o in options] if isinstance(options, list) else None
    return None


def capabilities(object_info: Mapping[str, Any]) -> Capabilities:
    """Read a server's ``/object_info`` into :class:`Capabilities`; pure.

    Example::

        >>> capabilities({"EmptyImage": {"input": {"required": {}}}}).classes
        frozenset({'EmptyImage'})
    """
    combos: dict[tuple[str, str], frozenset[str]] = {}
    for class_type, entry in object_info.items():
        inputs = entry.get("input") if isinstance(entry, dict) else None
        for section in ("required", "optional"):
            specs = inputs.get(section) if isinstance(inputs, dict) else None
            for name, spec in (specs or {}).items():
                options = _combo_options(spec)
                if options is not None:
                    combos[class_type, name] = frozenset(options)
    return Capabilities(frozenset(object_info), combos)


def missing_capability(workflow: Mapping[str, Any], caps: Capabilities) -> str | None:
    """What a server with ``caps`` lacks to run ``workflow`` (a node class, a model), or None.

    Example::

        >>> missing_capability({"4": {"class_type": "UNETLoader", "inputs": {}}}, caps)
        'node "4" (UNETLoader) is not installed'
    """
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        if class_type not in caps.classes:
            return f'node "{node_id}" ({class_type}) is not installed'
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                options = caps.combos.get((class_type, name))
                if options is not None and value not in options:
                    return (
                        f'model "{value}" (input "{name}" of node "{node_id}", {class_type}) '
                        "is missing"
                    )
    return None


# --------------------------------------------------------------------------- what went wrong, said


def brief(exc: BaseException) -> str:
    """Why a call to a server failed, in a few words: ``"connection refused"``.

    The transport's own words (the cause of a ``ServerUnreachable``), without errno numbers;
    a timeout says so; anything else is its type and message.

    Example::

        >>> brief(ServerUnreachable("..."))      # raised from httpx.ConnectError
        'connection refused'
    """
    cause = exc.__cause__
    if isinstance(exc, ServerTimeout):
        return f"no answer in time ({type(cause).__name__ if cause else 'timeout'})"
    if isinstance(exc, ServerUnreachable) and cause is not None:
        words = re.sub(r"^\[Errno -?\d+\]\s*", "", str(cause)).strip()
        if words:
            return words[0].lower() + words[1:]
        return type(cause).__name__
    return f"{type(exc).__name__}: {exc}"


def clock(when: datetime) -> str:
    """A time as this machine's clock shows it: ``12:01:02`` today, with the date otherwise."""
    local = when.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- a server's state


@dataclass(frozen=True)
class ServerStatus:
    """One server as the worker sees it.

    ``queue_depth`` is the server's own count of queued and running prompts (all clients),
    ``in_flight`` this worker's jobs on it; ``done``/``failed`` count this worker's jobs.

    Example::

        >>> worker.status().servers[0].up
        True
    """

    url: str
    up: bool
    queue_depth: int | None
    in_flight: int
    done: int
    failed: int
    last_error: str | None
    #: when it went down (or the worker started, if it never answered); None while up
    down_since: datetime | None = None
    #: not one of the worker's servers: jobs left in flight there by an earlier worker
    adopted: bool = False

    def trouble(self) -> str | None:
        """``"http://gpu1:8188 down since 12:01:02: connection refused"``; None while up.

        Example::

            >>> [s.trouble() for s in worker.status().servers if not s.up]
            ['http://127.0.0.1:9 down since 12:01:02: connection refused']
        """
        if self.up:
            return None
        since = f" since {clock(self.down_since)}" if self.down_since is not None else ""
        return f"{self.url} down{since}: {self.last_error or 'not reached yet'}"


class Backoff:
    """When to try something again: ``due`` (a ``time.monotonic()``), and the next pause,
    doubling from ``MIN_RECONNECT_DELAY`` (50 ms) up to ``MAX_BACKOFF`` (2 s)."""

    def __init__(self) -> None:
        self.due = 0.0
        self.delay = MIN_RECONNECT_DELAY

    def wait(self, now: float) -> None:
        """It failed (or must wait) at ``now``: due after the pause, which doubles."""
        self.due = now + self.delay
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def reset(self) -> None:
        """It worked: the next pause is the shortest again."""
        self.delay = MIN_RECONNECT_DELAY


@dataclass
class PostedJob:
    """A job of ours posted to a server: what its socket said of it so far."""

    server: Server
    job: Job
    status: JobStatus  # after every change handed to the recorder
    epoch: int  # the socket connection it was posted under (-1: none, read the report)
    recorded: JobStatus = JobStatus.PENDING  # as the store has it (the recorder's outcomes)
    images: list[ImageRef] = field(default_factory=list)
    progress: tuple[int, int] | None = None
    progress_written: tuple[int, int] | None = None
    progress_at: float = 0.0
    preview: tuple[str, bytes] | None = None  # its latest (mime, image), not yet handed
    ended: bool = False  # its end was seen: it no longer holds a place on the server
    fetching: bool = False  # its images are being downloaded
    started: bool = False  # its socket said it started: it left the server's queue

    @property
    def settled(self) -> bool:
        """Every change handed for it is recorded: the store can be asked about it."""
        return self.recorded is self.status

    @property
    def is_current(self) -> bool:
        """Still the server's job of that prompt_id (not rerouted, not polled to its end)."""
        return self.server.posted.get(self.job.prompt_id or "") is self


class Server:
    """One server: its clients, health, capabilities, socket, and our jobs on it.

    ``client`` posts, polls and downloads (with the client's retries); ``probe`` is the same
    server without retries, for health checks: a dead server must never stall the loop.
    """

    def __init__(self, url: str, client: Client, probe: Client, *, target_depth: int) -> None:
        self.url = url
        self.client = client
        self.probe = probe
        self.caps: Capabilities | None = None
        #: called with its ``/object_info`` each time it is read (the server came up)
        self.on_object_info: Callable[[str, Mapping[str, Any]], None] | None = None
        # health
        self.up = False
        self.down_since: float | None = time.monotonic()
        self.down_at: datetime | None = datetime.now(UTC)  # down_since, on the wall clock
        self.last_error: str | None = None
        self.said_down = False  # "down" was logged since it was last up
        self.adopted = False  # not one of the worker's servers (jobs left there earlier)
        self.checks = Backoff()  # health checks while down; due at once when in trouble
        self.recovered = False  # ``recover`` ran for it
        self.rerouted = False  # down for too long: its jobs went to the others
        # what its socket said
        self.socket_up = False
        self.epoch = 0  # one more at each socket up or down
        self.last_heard = time.monotonic()
        self.polls = Backoff()  # polls of its jobs while its socket is down
        self.catch_up = False  # poll its jobs once (a socket back, a download that failed)
        # our jobs
        self.posted: dict[str, PostedJob] = {}  # by prompt_id
        self.claims = Claims(target_depth)
        self.done = 0
        self.failed = 0

    def status(self, queue_depth: int | None) -> ServerStatus:
        return ServerStatus(
            url=self.url,
            up=self.up,
            queue_depth=queue_depth,
            in_flight=len(self.posted),
            done=self.done,
            failed=self.failed,
            last_error=self.last_error,
            down_since=None if self.up else self.down_at,
            adopted=self.adopted,
        )

    def waiting(self) -> int:
        """Our jobs waiting in its queue (not started, as far as its socket said)."""
        return sum(1 for p in self.posted.values() if not p.ended and not p.started)

    def can_run(self, workflow: Mapping[str, Any]) -> bool:
        return self.caps is not None and missing_capability(workflow, self.caps) is None

    def missing(self, workflow: Mapping[str, Any]) -> str | None:
        """What it lacks to run ``workflow`` (None: nothing, or its capabilities unknown)."""
        return None if self.caps is None else missing_capability(workflow, self.caps)

    # ----------------------------------------------------------------- health

    def trouble(self, exc: Exception) -> None:
        """A call failed after the client's retries: check its health soon."""
        self.last_error = brief(exc)
        self.checks.due = 0.0
        if isinstance(exc, DOWN) and self.up:
            self.mark_down(self.last_error)

    def mark_down(self, reason: str) -> None:
        """Down (or still down) for ``reason``; said once in the log, when it goes down (a
        server that never answered included)."""
        if not self.said_down:
            logger.warning("server %s down: %s", self.url, reason)
            self.said_down = True
        self.up = False
        self.last_error = reason
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.down_at = datetime.now(UTC)

    def check(self, recover: Callable[[Server], None]) -> None:
        """Health check (``/system_stats``); on the way up, capabilities and ``recover``."""
        try:
            self.probe.system_stats()
            if self.caps is None or not self.up:
                info = self.probe.object_info()
                self.caps = capabilities(info)
                if self.on_object_info is not None:
                    self.on_object_info(self.url, info)  # kept in the store, in the background
            if not self.recovered:
                recover(self)
        except DOWN as exc:
            self.mark_down(brief(exc))
            self.checks.wait(time.monotonic())
            return
        except ServerFailed as exc:  # it answers, badly: up, try again soon
            self.last_error = brief(exc)
            self.checks.wait(time.monotonic())
            return
        if not self.up:
            logger.info("server %s up", self.url)
        self.up, self.down_since, self.down_at, self.rerouted = True, None, None, False
        self.said_down = False
        self.checks.reset()
        self.checks.due = float("inf")

    def is_overdue(self, now: float, after: float) -> bool:
        """Down for more than ``after`` seconds, its jobs not rerouted yet."""
        return (
            not self.up
            and not self.rerouted
            and self.down_since is not None
            and now - self.down_since > after
        )

    # ----------------------------------------------------------------- its socket

    def socket_opened(self, now: float) -> None:
        self.socket_up, self.epoch, self.catch_up = True, self.epoch + 1, True
        self.polls.reset()
        self.last_heard = now
        if not self.up:
            self.checks.due = 0.0

    def socket_closed(self, reason: str) -> None:
        if self.socket_up:
            logger.info("server %s: socket down (%s); polling", self.url, reason)
            self.epoch += 1
        self.socket_up = False

    def poll_due(self, now: float) -> bool:
        """Its jobs are to be polled now: its socket is down (with backoff), silent for
        ``SILENCE`` with jobs on it, or just back (a catch-up)."""
        silent = bool(self.posted) and now - self.last_heard > SILENCE
        if not (self.catch_up or silent or (not self.socket_up and now >= self.polls.due)):
            return False
        if not self.socket_up and not self.catch_up:
            self.polls.wait(now)
        self.catch_up = False
        self.last_heard = now
        return True
