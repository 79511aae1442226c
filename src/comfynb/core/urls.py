"""A ComfyUI server's URL: checked, and written one way, wherever it enters.

:func:`parse_server_url` is the one place that reads a server URL; ``Client``, ``Worker``, the
``comfynb`` command and the store's ``jobs.server`` writes all go through it, so a server has
one spelling in logs, in ``worker.status()`` and in the store, and two spellings of the same
server compare equal.

What is "the same server": the scheme, the host (lowercased) and the port, with the scheme's
default port written as nothing (``http://gpu1:80`` is ``http://gpu1``) and no trailing slash.
``localhost`` over http is written ``127.0.0.1`` (what it resolves to on almost every machine,
and where ComfyUI listens by default); over https the name stays, since the certificate names
it. ``[::1]`` stays itself: a server listening on 127.0.0.1 does not answer there.

A server URL has no path, query or fragment: ComfyUI's routes hang off its root (a path such as
``/prompt`` is a route, not the server). ``user:password@`` is kept apart (basic auth), never in
the URL that is shown or stored.

Example::

    >>> server_url("http://LOCALHOST:8188/")
    'http://127.0.0.1:8188'
    >>> server_url("localhost:8188")
    Traceback (most recent call last):
    comfynb.errors.InvalidInput: server URL 'localhost:8188' has no scheme; write it 'http://localhost:8188'
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import InvalidInput

__all__ = ["parse_server_url", "same_server", "server_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _hide_password(text: str) -> str:
    return re.sub(r"((?:^|//)[^/@:\s]*:)[^/@\s]*@", r"\1***@", text)


def _refuse(url: str, why: str, fix: str | None) -> InvalidInput:
    """The error for a bad server URL: what is wrong and the URL to write (no password)."""
    hint = f"; write it {_hide_password(fix)!r}" if fix else "; e.g. 'http://127.0.0.1:8188'"
    return InvalidInput(f"server URL {_hide_password(url)!r} {why}{hint}")


def parse_server_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """A server URL in its one spelling, and its ``user:password@`` pair (or None).

    Example::

        >>> parse_server_url("https://me:secret@GPU1.lan:443/")
        ('https://gpu1.lan', ('me', 'secret'))

    Raises:
        InvalidInput: not ``http(s)://host[:port]``; the message shows the URL to write.
    """
    if not isinstance(url, str):
        raise InvalidInput(f"a server URL is a string such as 'http://127.0.0.1:8188', got {url!r}")
    text = url.strip()
    if "://" not in text:
        fix = "http://" + text.lstrip("/") if text.strip("/:") else None
        raise _refuse(url, "has no scheme", fix)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # a port that is no number, or out of range
        raise _refuse(url, f"is not a URL ({exc})", None) from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    rest = text.split("://", 1)[1]
    if scheme not in _DEFAULT_PORTS:
        fix = f"http://{rest}" if scheme in ("ws", "") else None
        fix = f"https://{rest}" if scheme == "wss" else fix
        raise _refuse(url, f"has scheme {parts.scheme!r}; a ComfyUI server is http or https", fix)
    if not host:
        raise _refuse(url, "has no host", None)
    root = f"{scheme}://{host if ':' not in host else f'[{host}]'}" + (
        f":{port}" if port is not None else ""
    )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        junk = parts.path + (f"?{parts.query}" if parts.query else "")
        junk += f"#{parts.fragment}" if parts.fragment else ""
        raise _refuse(url, f"has {junk!r} after the server; a server URL ends at its port", root)
    if port == 0:
        raise _refuse(url, "has port 0", None)
    if scheme == "http" and host == "localhost":
        host = "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    credentials = (parts.username, parts.password or "") if parts.username is not None else None
    return f"{scheme}://{netloc}", credentials


def server_url(url: str) -> str:
    """A server URL in its one spelling, without credentials (see the module's rules).

    Example::

        >>> server_url("http://localhost:8188/")
        'http://127.0.0.1:8188'

    Raises:
        InvalidInput: not ``http(s)://host[:port]``; the message shows the URL to write.
    """
    return parse_server_url(url)[0]


def same_server(a: str | None, b: str | None) -> bool:
    """True if two server URLs name the same server (None is no server: never the same).

    A value that is no server URL (an old row) is the same only as itself.

    Example::

        >>> same_server("http://localhost:8188/", "http://127.0.0.1:8188")
        True
    """
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        return server_url(a) == server_url(b)
    except InvalidInput:
        return False
