"""The WebSocket event stream of a client, blocking and asyncio: connect, catch up, reconnect."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from ..errors import TRANSIENT_ERRORS, JobNotFound, ServerUnreachable
from ..protocol.events import (
    FEATURE_FLAGS,
    MIN_RECONNECT_DELAY,
    RECONNECT,
    Event,
    EventTracker,
    parse_frame,
    terminal_for_lost_job,
    terminal_from_report,
)
from ..protocol.types import JobReport, RetryPolicy
from .ws import aconnect, connect


class BlockingSource(Protocol):
    """What a blocking stream needs of its client (``Client`` has it)."""

    timeout: float

    @property
    def ws_url(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...

    def job(self, prompt_id: str) -> JobReport: ...


class AsyncSource(Protocol):
    """What an asyncio stream needs of its client (``AsyncClient`` has it)."""

    timeout: float

    @property
    def ws_url(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...

    async def job(self, prompt_id: str) -> JobReport: ...


ClientT = TypeVar("ClientT", BlockingSource, AsyncSource)


class _StreamBase(Generic[ClientT]):
    """What both streams hold: the client, the followed jobs, events not yet handed out."""

    def __init__(
        self,
        client: ClientT,
        prompt_ids: Iterable[str] | None = None,
        *,
        poll_interval: float = 2.0,
        reconnect: RetryPolicy = RECONNECT,
    ) -> None:
        self._client: ClientT = client
        self._tracker = EventTracker(prompt_ids)
        self._pending: deque[Event] = deque()
        self._ws: Any = None
        self._closed = False
        self._entered = False
        self.poll_interval = poll_interval
        self.reconnect = reconnect
        self.reconnects = 0


class EventStream(_StreamBase[BlockingSource]):
    """The blocking event stream of a ``Client``: an iterator and a context manager.

    Entering the ``with`` block connects (do it before queueing, so no event is missed);
    iterating connects on first use otherwise. Without a ``with`` block, the stream closes when
    it ends or when a ``for`` loop over it is left early. ``reconnects`` counts the reconnects.

    Args:
        client: the ``Client`` whose ``client_id`` and auth the socket uses.
        prompt_ids: follow these jobs only, and end once each has ended.
        poll_interval: after this many silent seconds, read the followed jobs over HTTP.
        reconnect: the backoff between connection attempts; when it runs out, the stream raises
            ``ServerUnreachable``.
    """

    def __enter__(self) -> Self:
        self._entered = True
        self._connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        # a loop left with `break` closes a stream that no `with` block owns
        try:
            while True:
                try:
                    event = next(self)
                except StopIteration:
                    return
                yield event
        finally:
            if not self._entered:
                self.close()

    def follow(self, *prompt_ids: str) -> None:
        """Follow these jobs too; the stream ends once every followed job has ended."""
        self._tracker.follow(prompt_ids)

    @property
    def closed(self) -> bool:
        """True once the stream was closed (by ``close``, its end, or a ``with`` block)."""
        return self._closed

    def close(self) -> None:
        """Close the socket; iterating afterwards ends at once."""
        self._closed = True
        self._disconnect()

    def __next__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed or self._tracker.finished:
                self.close()
                raise StopIteration
            if self._ws is None:
                self._connect()
                continue
            event = self._receive()
            if event is not None and self._tracker.take(event):
                return event

    def _receive(self) -> Event | None:
        from websockets.exceptions import ConnectionClosed

        try:
            return parse_frame(self._ws.recv(timeout=self.poll_interval))
        except TimeoutError:
            self._catch_up()
        except ConnectionClosed:
            self._disconnect()
            self.reconnects += 1
        return None

    def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()  # returns once the closing handshake is over: the old id is released

    def _connect(self) -> None:
        delays = self.reconnect.delays()
        if self.reconnects:
            time.sleep(next(delays, MIN_RECONNECT_DELAY) + MIN_RECONNECT_DELAY)
        while True:
            try:
                self._ws = connect(
                    self._client.ws_url, self._client.headers, timeout=self._client.timeout
                )
                break
            except ServerUnreachable:
                delay = next(delays, None)
                if delay is None:
                    raise
                time.sleep(max(delay, MIN_RECONNECT_DELAY))
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(json.dumps(FEATURE_FLAGS))
        except ConnectionClosed:  # dropped at once (a restart): the next turn reconnects
            self._disconnect()
            self.reconnects += 1
            return
        self._catch_up()

    def _catch_up(self) -> None:
        for prompt_id in self._tracker.open_ids:
            try:
                event: Event | None = terminal_from_report(self._client.job(prompt_id))
            except JobNotFound:
                event = terminal_for_lost_job(prompt_id)
            except TRANSIENT_ERRORS:
                continue  # asked again after the next silence
            if event is not None and self._tracker.take(event):
                self._pending.append(event)


class AsyncEventStream(_StreamBase[AsyncSource]):
    """The asyncio twin of ``EventStream``: ``async with`` and ``async for``.

    Example::

        >>> async with client.events() as events:
        ...     queued = await client.queue_prompt(prompt)
        ...     events.follow(queued.prompt_id)
        ...     async for event in events:
        ...         print(event)
    """

    async def __aenter__(self) -> Self:
        self._entered = True
        await self._connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def __aiter__(self) -> AsyncIterator[Event]:
        # a loop left with `break` closes a stream that no `async with` block owns
        try:
            while True:
                try:
                    event = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            if not self._entered:
                await self.aclose()

    def follow(self, *prompt_ids: str) -> None:
        """Follow these jobs too; the stream ends once every followed job has ended."""
        self._tracker.follow(prompt_ids)

    @property
    def closed(self) -> bool:
        """True once the stream was closed (by ``aclose``, its end, or an ``async with`` block)."""
        return self._closed

    async def aclose(self) -> None:
        """Close the socket; iterating afterwards ends at once."""
        self._closed = True
        await self._disconnect()

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed or self._tracker.finished:
                await self.aclose()
                raise StopAsyncIteration
            if self._ws is None:
                await self._connect()
                continue
            event = await self._receive()
            if event is not None and self._tracker.take(event):
                return event

    async def _receive(self) -> Event | None:
        from websockets.exceptions import ConnectionClosed

        try:
            async with asyncio.timeout(self.poll_interval):
                frame = await self._ws.recv()  # cancelling recv() loses no data
            return parse_frame(frame)
        except TimeoutError:
            await self._catch_up()
        except ConnectionClosed:
            await self._disconnect()
            self.reconnects += 1
        return None

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def _connect(self) -> None:
        delays = self.reconnect.delays()
        if self.reconnects:
            await asyncio.sleep(next(delays, MIN_RECONNECT_DELAY) + MIN_RECONNECT_DELAY)
        while True:
            try:
                self._ws = await aconnect(
                    self._client.ws_url, self._client.headers, timeout=self._client.timeout
                )
                break
            except ServerUnreachable:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(max(delay, MIN_RECONNECT_DELAY))
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(json.dumps(FEATURE_FLAGS))
        except ConnectionClosed:  # dropped at once (a restart): the next turn reconnects
            await self._disconnect()
            self.reconnects += 1
            return
        await self._catch_up()

    async def _catch_up(self) -> None:
        for prompt_id in self._tracker.open_ids:
            try:
                event: Event | None = terminal_from_report(await self._client.job(prompt_id))
            except JobNotFound:
                event = terminal_for_lost_job(prompt_id)
            except TRANSIENT_ERRORS:
                continue
            if event is not None and self._tracker.take(event):
                self._pending.append(event)
