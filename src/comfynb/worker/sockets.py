"""A server's WebSocket, read on a thread of its own: the frames the loop needs, as events.

The reader writes nothing and decides nothing. It puts ``(index, event)`` on the loop's queue:
``SocketUp``/``SocketDown`` when the connection opens or is lost, and the events of our jobs
(``ExecutionStart``, ``Executed``, ``Progress``, ``ExecutionSuccess``, ``ExecutionError``,
``ExecutionInterrupted``). The server's queue length (``status`` frames) is kept on the reader
(``queue_remaining``) rather than queued: the loop only shows it.

Example (what the worker does)::

    socket = Socket(0, client, events).start()
    index, event = events.get()          # (0, SocketUp()), then (0, ExecutionStart(...)), ...
    socket.stop(); socket.join()
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..client.ws import connect as ws_connect
from ..errors import ServerUnreachable
from ..protocol.events import (
    MIN_RECONNECT_DELAY,
    Event,
    Executed,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
    Status,
    parse_frame,
)
from .servers import MAX_BACKOFF

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["WANTED", "Socket", "SocketDown", "SocketUp", "needed"]


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
        return None  # previews, and node-by-node news
    return parse_frame(frame)


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
            try:
                while not self._stop.is_set():
                    try:
                        frame = ws.recv(timeout=0.1)
                    except TimeoutError:
                        continue
                    event = needed(frame)
                    if isinstance(event, WANTED):
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
