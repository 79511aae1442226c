"""A server's WebSocket, read on a thread of its own: the frames the loop needs, as events.

The reader writes nothing and decides nothing. It puts ``(index, event)`` on the loop's queue:
``SocketUp``/``SocketDown`` when the connection opens or is lost, and the events of our jobs
(``ExecutionStart``, ``Executed``, ``Progress``, ``ExecutionSuccess``, ``ExecutionError``,
``ExecutionInterrupted``). The server's queue length (``status`` frames) is kept on the reader
(``queue_remaining``) rather than queued: the loop only shows it. So are the sampler previews
(binary frames): the latest image of each prompt waits in ``previews`` (:class:`Previews`)
until the loop takes it with the progress it hands, a newer frame replacing an older one, so a
preview never wakes the loop.

Example (what the worker does)::

    socket = Socket(0, client, events).start()
    index, event = events.get()          # (0, SocketUp()), then (0, ExecutionStart(...)), ...
    socket.stop(); socket.join()
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..client.ws import connect as ws_connect
from ..core.models import MAX_PREVIEW_BYTES
from ..errors import ServerUnreachable
from ..protocol.events import (
    FEATURE_FLAGS,
    MIN_RECONNECT_DELAY,
    Event,
    Executed,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    PreviewImage,
    Progress,
    Status,
    parse_binary,
    parse_frame,
)
from .servers import MAX_BACKOFF

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["WANTED", "Previews", "Socket", "SocketDown", "SocketUp", "needed"]


@dataclass(frozen=True)
class SocketUp:
    """The server's socket is open (again): its jobs are polled once, then followed by it."""


@dataclass(frozen=True)
class SocketDown:
    """The server's socket is lost; its jobs are polled with backoff until it is back."""

    reason: str


#: The events the loop acts on; a ``Status`` only updates ``queue_remaining``.
WANTED = (
    ExecutionStart,
    Executed,
    Progress,
    ExecutionSuccess,
    ExecutionError,
    ExecutionInterrupted,
)
#: Frames the loop never needs, told by how ComfyUI's ``json.dumps`` starts them: most of a
#: job's ~13 frames (0.33.0 sends ``progress_state`` 4 times per 2-node job). Skipping them
#: unparsed saves a third of the socket thread's CPU; a frame written otherwise is parsed.
_UNNEEDED = ('{"type": "progress_state"', '{"type": "executing"', '{"type": "execution_cached"')


def needed(frame: str | bytes) -> Event | None:
    """The event a frame stands for, or None for one the loop never needs (told unparsed).

    Example::

        >>> needed('{"type": "executing", "data": {"node": "3"}}') is None
        True
    """
    if isinstance(frame, bytes) or frame.startswith(_UNNEEDED):
        return None  # previews (kept apart: ``Previews``), and node-by-node news
    return parse_frame(frame)


#: A preview frame starts with its type (4 bytes): type 1 then has the image format (4 bytes:
#: 1 JPEG, 2 PNG) and the image; type 4 the metadata's length, the metadata, the image.
_TYPE_1, _TYPE_4 = b"\x00\x00\x00\x01", b"\x00\x00\x00\x04"
_LEGACY_MIMES = {b"\x00\x00\x00\x01": "image/jpeg", b"\x00\x00\x00\x02": "image/png"}
#: A type-4 frame's metadata is a few hundred bytes: a frame longer than the largest preview
#: kept plus this is dropped unread.
_MAX_METADATA = 64 * 1024
_ENDED = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)


class Previews:
    """The latest preview image of each prompt a socket heard, until the loop takes it.

    A type-4 frame (the socket asks for them with ``FEATURE_FLAGS``) names its prompt in its
    metadata; a type-1 frame (a server that ignores the flags) names none and belongs to the
    prompt the socket last heard start: ComfyUI runs one prompt at a time, and sends a
    prompt's previews only to the socket whose client posted it. An image over
    ``MAX_PREVIEW_BYTES`` is dropped. The socket's thread writes, the loop's thread takes;
    each step is one dict operation (atomic under the GIL), so no lock.

    Example::

        >>> previews = Previews()
        >>> previews.heard(ExecutionStart(prompt_id="p1"))
        >>> previews.frame(b"\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x02" + png)   # type 1
        >>> previews.take()
        {'p1': ('image/png', b'\\x89PNG...')}
    """

    def __init__(self) -> None:
        self._latest: dict[str, tuple[str, bytes]] = {}
        self._running: str | None = None  # the prompt the socket last heard start

    def heard(self, event: Event) -> None:
        """Follow which prompt runs: a start names it, its end (or a reconnect) forgets it."""
        if isinstance(event, ExecutionStart):
            self._running = event.prompt_id
        elif isinstance(event, _ENDED) and event.prompt_id == self._running:
            self._running = None

    def lost(self) -> None:
        """The socket reconnected: what ran meanwhile is not known until the next start."""
        self._running = None

    def frame(self, frame: bytes) -> None:
        """Keep a binary frame's image as its prompt's latest; anything else is dropped."""
        if len(frame) > MAX_PREVIEW_BYTES + _MAX_METADATA:
            return  # too big to keep: not even read
        kind = frame[:4]
        if kind == _TYPE_1:
            prompt_id, mime, image = self._running, _LEGACY_MIMES.get(frame[4:8]), frame[8:]
        elif kind == _TYPE_4:
            event = parse_binary(frame)
            if not isinstance(event, PreviewImage):
                return
            prompt_id, image = event.prompt_id, event.image
            mime = str(event.metadata.get("image_type") or "") or None
        else:
            return
        if prompt_id and mime and 0 < len(image) <= MAX_PREVIEW_BYTES:
            self._latest[prompt_id] = (mime, image)

    def take(self) -> dict[str, tuple[str, bytes]]:
        """The latest preview of each prompt heard since the last take, by prompt_id."""
        latest = self._latest
        if not latest:
            return {}
        taken: dict[str, tuple[str, bytes]] = {}
        for prompt_id in list(latest):
            item = latest.pop(prompt_id, None)
            if item is not None:
                taken[prompt_id] = item
        return taken


class Socket:
    """Reads one server's WebSocket on a thread, turning the frames the loop needs into events.

    It reconnects with the client's own ``clientId`` (prompts were posted with it) after a
    drop, with backoff, and tells the loop when the socket goes up or down; the loop polls
    meanwhile.
    """

    def __init__(self, index: int, client: Client, events: queue.Queue[Any]) -> None:
        self._index = index
        self._client = client
        self._events = events
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"comfynb-worker-ws-{index}", daemon=True
        )
        self._lock = threading.Lock()
        self._ws: Any = None  # the open connection, closed by ``stop`` to wake the reader
        #: The server's queued and running prompts (all clients), as its last ``status`` said.
        self.queue_remaining: int | None = None
        #: The latest preview of each prompt, for the loop to take (``Previews.take``).
        self.previews = Previews()

    def start(self) -> Socket:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the reader to end; an open connection is closed at once (``recv`` then ends)."""
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()  # websockets' sync connection may be closed from another thread

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        client = self._client
        delay = MIN_RECONNECT_DELAY
        while not self._stop.is_set():
            try:
                ws = ws_connect(client.ws_url, client.headers, timeout=min(client.timeout, 5.0))
            except ServerUnreachable as exc:
                self._events.put((self._index, SocketDown(f"WebSocket: {exc.__cause__}")))
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = MIN_RECONNECT_DELAY
            with self._lock:
                self._ws = ws
            if self._stop.is_set():  # stopped while connecting
                ws.close()
            self._events.put((self._index, SocketUp()))
            previews = self.previews
            previews.lost()
            try:
                ws.send(json.dumps(FEATURE_FLAGS))  # previews name their prompt (type 4)
                while not self._stop.is_set():
                    try:
                        frame = ws.recv(timeout=0.1)
                    except TimeoutError:
                        continue
                    if isinstance(frame, bytes):
                        previews.frame(frame)
                        continue
                    event = needed(frame)
                    if isinstance(event, WANTED):
                        previews.heard(event)
                        self._events.put((self._index, event))
                    elif isinstance(event, Status) and event.queue_remaining is not None:
                        self.queue_remaining = event.queue_remaining
            except ConnectionClosed:
                pass
            finally:
                with self._lock:
                    self._ws = None
                ws.close()  # returns once the closing handshake is over: the id is released
            if not self._stop.is_set():
                self._events.put((self._index, SocketDown("WebSocket closed")))
                self._stop.wait(MIN_RECONNECT_DELAY)
