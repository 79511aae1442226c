"""The simulator's WebSocket fan-out: open sockets by client id, one publisher on the event loop.

The executor thread ``post``s frames into a deque and wakes the loop once per batch
(``call_soon_threadsafe``); one publisher task sends them in order, as ComfyUI's single
``publish_loop`` does, so every socket sees the messages in the order they were made.

Example::

    hub = Hub(loop)          # on the event loop
    hub.start()
    hub.send("status", {"status": {"exec_info": {"queue_remaining": 0}}}, None)  # any thread
    await hub.stop()
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Frame", "Hub", "Socket", "dumps"]


def dumps(kind: str, data: Any) -> str:
    """A text frame as ComfyUI sends it: ``{"type": kind, "data": data}``."""
    return json.dumps({"type": kind, "data": data})


@dataclass(eq=False)
class Socket:
    """One open ``/ws`` connection and what the server knows of it."""

    ws: Any  # aiohttp.web.WebSocketResponse
    metadata: bool = False  # the client sent feature_flags supports_preview_metadata
    dropped: bool = False  # the server closed it (restart, ws_drop fault)


_CORK = getattr(socket, "TCP_CORK", 0)  # Linux only; elsewhere frames go out one by one


# Frames the engine posts: ("text", target, text) | ("preview", target, progress_text|None,
# image, fmt, metadata) | ("close_all",). target None means every socket.
Frame = tuple[Any, ...]


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
        import asyncio

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

    def _kick(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _publish(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                self._scheduled = False
            corked = self._cork(True)
            try:
                while self._pending:
                    await self._deliver(self._pending.popleft())
            finally:
                self._cork(False, corked)

    def _cork(self, on: bool, socks: list[Any] | None = None) -> list[Any]:
        """Hold back partial TCP segments while a batch is written (one push per batch).

        A prompt sends ~15 small frames; without this each one is its own segment and wakes
        the reader, which costs more than the rest of the fan-out.
        """
        if not _CORK:
            return []
        if socks is None:
            socks = []
            for sock in self.sockets.values():
                transport = getattr(sock.ws, "_req", None) and sock.ws._req.transport
                raw = transport.get_extra_info("socket") if transport is not None else None
                if raw is not None:
                    socks.append(raw)
        for raw in socks:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)
        return socks

    def _targets(self, target: str | None) -> list[Socket]:
        if target is None:
            return list(self.sockets.values())
        sock = self.sockets.get(target)
        return [] if sock is None else [sock]

    async def _deliver(self, frame: Frame) -> None:
        if frame[0] == "close_all":
            await self.close_all()
            return
        for sock in self._targets(frame[1]):
            try:
                if frame[0] == "text":
                    await sock.ws.send_str(frame[2])
                else:
                    await self._send_preview(sock, frame)
            except Exception:
                pass

    async def _send_preview(self, sock: Socket, frame: Frame) -> None:
        _, _, progress_text, image, fmt, metadata = frame
        # Order as observed: metadata format sends the image before `progress`, legacy after.
        if sock.metadata:
            meta = json.dumps(metadata).encode()
            header = (4).to_bytes(4, "big") + len(meta).to_bytes(4, "big")
            await sock.ws.send_bytes(header + meta + image)
            if progress_text is not None:
                await sock.ws.send_str(progress_text)
        else:
            if progress_text is not None:
                await sock.ws.send_str(progress_text)
            code = 2 if fmt == "PNG" else 1
            await sock.ws.send_bytes((1).to_bytes(4, "big") + code.to_bytes(4, "big") + image)

    async def close_all(self) -> None:
        """Close every socket (a restart, or the ws_drop fault)."""
        socks = list(self.sockets.values())
        self.sockets.clear()
        for sock in socks:
            sock.dropped = True
        for sock in socks:
            with contextlib.suppress(Exception):
                await sock.ws.close()
