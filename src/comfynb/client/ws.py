"""The one WebSocket opener: the blocking and asyncio event streams and the worker all use it.

It connects with the client's auth headers (never logged: websockets logs the handshake, and
``RedactingLogger`` hides their values), no frame size limit (previews can be large), and maps
every way a connection can fail to ``ServerUnreachable``. Reconnecting is each caller's own
policy: the streams back off with a ``RetryPolicy``, the worker until it is stopped.

Example::

    >>> ws = connect(client.ws_url, client.headers, timeout=5.0)
    >>> ws.recv(timeout=1.0)
    '{"type": "status", ...}'
    >>> ws.close()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ServerUnreachable

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection

__all__ = ["RedactingLogger", "aconnect", "connect"]


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """websockets' logger, minus the values of our auth headers (it logs the handshake)."""

    def __init__(self, secret_headers: Iterable[str]) -> None:
        super().__init__(logging.getLogger("websockets.client"), {})
        self._secret = {name.lower() for name in secret_headers}

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg == "> %s: %s" and len(args) == 2 and str(args[0]).lower() in self._secret:
            args = (args[0], "<hidden>")
        super().log(level, msg, *args, **kwargs)


def _options(headers: Mapping[str, str], timeout: float) -> dict[str, Any]:
    return {
        "additional_headers": dict(headers),
        "open_timeout": timeout,
        "max_size": None,
        "logger": RedactingLogger(headers),
    }


def connect(url: str, headers: Mapping[str, str], *, timeout: float) -> ClientConnection:
    """Open a blocking WebSocket to ``url``; close it with ``.close()``.

    Raises:
        ServerUnreachable: refused, timed out, or the handshake failed (the cause is chained).
    """
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect as ws_connect

    try:
        # websockets >= 17.1 wants `with connect()`; entering by hand works on every version
        # (close() is its __exit__) and lets the caller keep the socket
        connection: ClientConnection = ws_connect(url, **_options(headers, timeout)).__enter__()
        return connection
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ServerUnreachable(f"could not open the WebSocket {url} ({exc})") from exc


async def aconnect(url: str, headers: Mapping[str, str], *, timeout: float) -> AsyncConnection:
    """Open an asyncio WebSocket to ``url``; close it with ``await .close()``.

    Raises:
        ServerUnreachable: refused, timed out, or the handshake failed (the cause is chained).
    """
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidHandshake

    try:
        return await ws_connect(url, **_options(headers, timeout))
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ServerUnreachable(f"could not open the WebSocket {url} ({exc})") from exc
