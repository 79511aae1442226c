"""The simulator's WebSocket fan-out: open sockets by client id, one publisher on the event loop.

The executor thread ``post``s frames into a deque and wakes the loop once per batch
(``call_soon_threadsafe``); one publisher task sends them in order, as ComfyUI's single
``publish_loop`` does, so every socket sees the messages in the order they were made. The
publisher builds the WebSocket frames itself and writes each socket's share of a batch in one
``transport.write`` (a trivial prompt makes ~15 messages; one syscall each was the largest
cost of the whole simulator).

Example::

    hub = Hub(loop)          # on the event loop
    hub.start()
    hub.send("status", {"status": {"exec_info": {"queue_remaining": 0}}}, None)  # any thread
    await hub.stop()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Frame", "Hub", "Socket", "dumps", "ws_frame"]


def dumps(kind: str, data: Any) -> str:
    """A text frame as ComfyUI sends it: ``{"type": kind, "data": data}``."""
    return json.dumps({"type": kind, "data": data})


@dataclass(eq=False)
class Socket:
    """One open ``/ws`` connection and what the server knows of it."""

    ws: Any  # aiohttp.web.WebSocketResponse
    transport: Any = None  # its asyncio transport: the hub writes whole batches of frames to it
    metadata: bool = False  # the client sent feature_flags supports_preview_metadata
    dropped: bool = False  # the server closed it (restart, ws_drop fault)

    def writable(self) -> Any:
        """The transport to write frames to, or None once a close frame went either way."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return None
        return transport


# Frames the engine posts: ("text", target, text) | ("preview", target, progress_text|None,
# image, fmt, metadata) | ("close_all",). target None means every socket.
Frame = tuple[Any, ...]

# Above this many unsent bytes for one socket, the publisher waits for the client to read.
_HIGH_WATER = 4 * 1024 * 1024

_TEXT, _BINARY = 0x1, 0x2


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, uncompressed, final WebSocket frame (RFC 6455), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


def _preview_frames(sock: Socket, frame: Frame) -> list[bytes]:
    """A preview image (with the ``progress`` it belongs to) in the socket's binary format."""
    _, _, progress_text, image, fmt, metadata = frame
    progress = [] if progress_text is None else [ws_frame(_TEXT, progress_text.encode())]
    # As observed: the metadata format sends the image before `progress`, the legacy one after.
    if sock.metadata:
        meta = json.dumps(metadata).encode()
        header = struct.pack("!II", 4, len(meta))
        return [ws_frame(_BINARY, header + meta + image), *progress]
    header = struct.pack("!II", 1, 2 if fmt == "PNG" else 1)
    return [*progress, ws_frame(_BINARY, header + image)]


class Hub:
    """The open sockets by client id, and one publisher that sends frames to them in order."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.sockets: dict[str, Socket] = {}
        self._pending: collections.deque[Frame] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._wakeup: Any = None  # asyncio.Event, made on the loop
        self._task: Any = None

    def start(self) -> None:
        """Start the publisher; call on the event loop."""
        self._wakeup = asyncio.Event()
        self._task = self.loop.create_task(self._publish())

    async def stop(self) -> None:
        """Stop the publisher and close every socket; call on the event loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.close_all()

    def post(self, frame: Frame) -> None:
        """Queue a frame for sending; safe from any thread."""
        self._pending.append(frame)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._kick)

    def send(self, kind: str, data: Any, target: str | None) -> None:
        """Queue one JSON message for ``target`` (None: every socket)."""
        self.post(("text", target, dumps(kind, data)))

    def send_now(self, sock: Socket, kind: str, data: Any) -> None:
        """Write one JSON message to one socket at once, ahead of anything still queued.

        ComfyUI sends the greeting ``status``, the reconnect ``executing`` and the
        ``feature_flags`` reply this way, not through its message queue; call on the loop.
        """
        transport = sock.writable()
        if transport is not None:
            transport.write(ws_frame(_TEXT, dumps(kind, data).encode()))

    def _kick(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _publish(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                self._scheduled = False
            while self._pending:
                try:
                    await self._deliver_batch()
                except Exception:  # the publisher must outlive any one bad frame or socket
                    logging.getLogger(__name__).exception("could not deliver a WebSocket batch")

    async def _deliver_batch(self) -> None:
        """Send what is pending: all of a socket's frames of the batch in one write.

        A trivial prompt makes ~15 small messages; written one by one, each is a syscall and
        wakes the reader, which costs more than everything else the simulator does for it.
        """
        out: dict[int, tuple[Socket, list[bytes]]] = {}
        while self._pending:
            frame = self._pending.popleft()
            if frame[0] == "close_all":
                self._write(out)
                await self.close_all()
                return
            for sock in self._targets(frame[1]):
                chunks = out.setdefault(id(sock), (sock, []))[1]
                if frame[0] == "text":
                    chunks.append(ws_frame(_TEXT, frame[2].encode()))
                else:
                    chunks.extend(_preview_frames(sock, frame))
        self._write(out)
        await self._drain(sock for sock, _ in out.values())

    def _write(self, out: dict[int, tuple[Socket, list[bytes]]]) -> None:
        for sock, chunks in out.values():
            transport = sock.writable()
            if chunks and transport is not None:
                transport.write(b"".join(chunks))
        out.clear()

    async def _drain(self, socks: Iterable[Socket]) -> None:
        """Let a socket whose client reads slowly catch up before sending it more."""
        for sock in socks:
            while (
                transport := sock.writable()
            ) and transport.get_write_buffer_size() > _HIGH_WATER:
                await asyncio.sleep(0.005)

    def _targets(self, target: str | None) -> list[Socket]:
        if target is None:
            return list(self.sockets.values())
        sock = self.sockets.get(target)
        return [] if sock is None else [sock]

    async def close_all(self) -> None:
        """Close every socket (a restart, or the ws_drop fault)."""
        socks = list(self.sockets.values())
        self.sockets.clear()
        for sock in socks:
            sock.dropped = True
        # Concurrently: each close waits (up to the socket's close timeout) for the client's reply.
        await asyncio.gather(*(sock.ws.close() for sock in socks), return_exceptions=True)
