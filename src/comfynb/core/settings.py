"""The settings a user gives through the environment, read in one place.

=====================  ==============================================================  =========
variable               what it sets                                                    default
=====================  ==============================================================  =========
``COMFYUI_URL``        the ComfyUI server(s): ``Client()``, ``Worker(store)``,         none
                       ``comfynb worker``, ``comfynb demo``, the notebooks. Several
                       servers: separated by commas or spaces.
``COMFYUI_TOKEN``      a bearer token sent to THOSE servers only (a ComfyUI behind an  none
                       authenticating proxy); never to a server named otherwise, never
                       logged or stored.
``COMFYNB_DB``         the store file: ``comfynb.open()``, ``comfynb worker``, the      none
                       notebooks (``comfynb demo`` keeps its own: ``--db``).
``COMFYNB_OUTPUT``     where images go (``output_dir``).                               beside
                                                                                       the file
=====================  ==============================================================  =========

An argument given in code or on the command line wins over the environment. Each call reads
the environment afresh, so a notebook cell that sets ``os.environ`` takes effect at once.

Example::

    >>> os.environ["COMFYUI_URL"] = "http://gpu1:8188, http://gpu2:8188"
    >>> settings().servers
    ('http://gpu1:8188', 'http://gpu2:8188')
    >>> comfynb.Worker(store).servers        # the same two, the token sent to them
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InvalidInput
from .urls import parse_server_url

__all__ = ["Settings", "settings"]

URL = "COMFYUI_URL"
TOKEN = "COMFYUI_TOKEN"
DB = "COMFYNB_DB"
OUTPUT = "COMFYNB_OUTPUT"


@dataclass(frozen=True)
class Settings:
    """What the environment says (``settings()`` reads it); ``None``/empty where unset."""

    #: the servers of ``COMFYUI_URL`` as written there (checked; ``user:password@`` kept for
    #: basic auth, so the repr shows only each one's spelling, ``core.urls``)
    servers: tuple[str, ...] = field(default=(), repr=False)
    #: ``COMFYUI_TOKEN`` (never shown: not in the repr)
    token: str | None = field(default=None, repr=False)
    #: ``COMFYNB_DB``, with ``~`` expanded
    db: str | None = None
    #: ``COMFYNB_OUTPUT``, with ``~`` expanded
    output: str | None = None

    def __repr__(self) -> str:
        shown = tuple(parse_server_url(url)[0] for url in self.servers)
        token = ", token='***'" if self.token else ""
        return f"Settings(servers={shown!r}{token}, db={self.db!r}, output={self.output!r})"

    def token_for(self, url: str) -> str | None:
        """The token to send to ``url``: ``COMFYUI_TOKEN`` if ``url`` is one of ``COMFYUI_URL``.

        Example::

            >>> Settings(servers=("http://gpu1:8188",), token="s3").token_for("http://GPU1:8188/")
            's3'
        """
        if self.token is None:
            return None
        try:
            ours = {parse_server_url(server)[0] for server in self.servers}
            return self.token if parse_server_url(url)[0] in ours else None
        except InvalidInput:
            return None


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in ``environ`` (``os.environ`` by default).

    Example::

        >>> settings({"COMFYUI_URL": "http://127.0.0.1:8188", "COMFYNB_DB": "~/lab.duckdb"})
        Settings(servers=('http://127.0.0.1:8188',), db='/home/me/lab.duckdb', output=None)

    Raises:
        InvalidInput: ``COMFYUI_URL`` holds something that is not a server URL; the message
            names the variable and shows what to write.
    """
    env = os.environ if environ is None else environ
    servers: list[str] = []
    for part in re.split(r"[\s,]+", env.get(URL, "").strip()):
        if not part:
            continue
        try:
            url = parse_server_url(part)[0]
        except InvalidInput as exc:
            raise InvalidInput(f"the environment variable {URL}: {exc}") from None
        if url not in {parse_server_url(s)[0] for s in servers}:
            servers.append(part)
    return Settings(
        servers=tuple(servers),
        token=env.get(TOKEN, "").strip() or None,
        db=_path(env.get(DB)),
        output=_path(env.get(OUTPUT)),
    )


def _path(value: str | None) -> str | None:
    value = (value or "").strip()
    return os.path.expanduser(value) if value else None
