"""``Client`` and ``AsyncClient``: ComfyUI over HTTP, with retries and typed errors.

Both clients drive the same flows from ``comfynb.protocol.flows``; they differ only in how they wait
(``time.sleep`` and blocking I/O versus ``await``). Every httpx error and unexpected status is
translated into the ``comfynb.errors`` tree in one place, ``_send``.

Example::

    >>> from comfynb import Client
    >>> with Client("http://127.0.0.1:8188") as client:
    ...     queued = client.queue_prompt(prompt)
    ...     for event in client.events([queued.prompt_id]):
    ...         print(type(event).__name__)
    ...     client.job(queued.prompt_id).outputs
    (ImageRef(filename='trivial_00001_.png', subfolder='', type='output', node_id='2'),)

Retries: idempotent calls are retried on unreachable, timeout and 5xx answers along one
``RetryPolicy``. ``POST /prompt`` always carries a prompt_id (a UUID4 unless the caller chose one),
and before each retry the client asks the server whether that prompt_id already arrived, so a
retry never queues a prompt twice.

Auth for servers behind a proxy: ``token=`` (bearer), ``basic_auth=(user, password)`` or
``headers=``; they go on every HTTP request and on the WebSocket, never into a repr or a log.
No ``Origin`` header is sent (ComfyUI answers 403 to a foreign one).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import ssl
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from .. import files
from ..core.settings import settings
from ..core.urls import parse_server_url
from ..errors import ComfynbError, ServerTimeout, ServerUnreachable
from ..protocol import flows, parse
from ..protocol.types import Call, Flow, ImageRef, RetryPolicy

__all__ = ["DEFAULT_URL", "ClientOptions"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8188"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi, ``SSL_CERT_FILE``...), made once per process.

    httpx makes one per client otherwise, ~16 ms each here; a worker makes two clients per
    server, and a notebook one per ``Client(...)`` cell. An ``SSLContext`` is safe to share.
    """
    return httpx.create_ssl_context()


class ClientOptions(TypedDict, total=False):
    """The keyword options of ``Client`` and ``AsyncClient`` (see ``Client``)."""

    client_id: str | None
    token: str | None
    basic_auth: tuple[str, str] | None
    headers: Mapping[str, str] | None
    timeout: float
    retry: RetryPolicy | None


def auth_headers(
    token: str | None, basic_auth: tuple[str, str] | None, headers: Mapping[str, str] | None
) -> dict[str, str]:
    result = dict(headers or {})
    if token is not None and basic_auth is not None:
        raise ValueError("give token= or basic_auth=, not both")
    if token is not None:
        result["Authorization"] = f"Bearer {token}"
    if basic_auth is not None:
        pair = f"{basic_auth[0]}:{basic_auth[1]}".encode()
        result["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return result


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` checked and in its one spelling (``core.urls``), without ``user:password@``,
    and that pair (kept out of URLs that get logged).

    Raises:
        InvalidInput: not ``http(s)://host[:port]``; the message shows the URL to write.
    """
    return parse_server_url(url)


@dataclass(frozen=True)
class FlowDone(Generic[T]):
    value: T


def advance_flow(flow: Flow[T], outcome: httpx.Response | ComfynbError) -> Call | FlowDone[T]:
    """Hand a flow the response (or throw it the error); its next call, or its result."""
    try:
        if isinstance(outcome, ComfynbError):
            return flow.throw(outcome)
        return flow.send(outcome)
    except StopIteration as done:
        return FlowDone(done.value)


class BaseClient:
    """Everything both clients share: configuration, request building and error mapping."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client_id: str | None = None,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        env = settings()
        if url is None:  # COMFYUI_URL's first server, else ComfyUI's own default
            url = env.servers[0] if env.servers else DEFAULT_URL
        self.url, url_auth = split_userinfo(url)
        if token is None and basic_auth is None and url_auth is None:
            token = env.token_for(url)  # COMFYUI_TOKEN goes to COMFYUI_URL's servers only
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._auth_kind = "bearer" if token else "basic" if (basic_auth or url_auth) else None
        self._headers = auth_headers(token, basic_auth or url_auth, headers)
        self._jobs_api: bool | None = None

    def __repr__(self) -> str:
        # never the token, password or extra headers: only what kind of auth is in use
        auth = f", auth={self._auth_kind!r}" if self._auth_kind else ""
        return f"{type(self).__name__}({self.url!r}, client_id={self.client_id!r}{auth})"

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request and the WebSocket carry (auth included: never log them)."""
        return dict(self._headers)

    @property
    def ws_url(self) -> str:
        """The WebSocket URL for this client's ``client_id``."""
        scheme = "wss" if self.url.startswith("https") else "ws"
        rest = self.url[self.url.index(":") :]
        return f"{scheme}{rest}/ws?clientId={quote(self.client_id, safe='')}"

    def _http_options(self) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "headers": self._headers,
            "timeout": httpx.Timeout(self.timeout),
            "follow_redirects": False,
            "verify": tls_context(),
        }

    def _prompt_body(
        self,
        prompt: Mapping[str, Any],
        prompt_id: str | None,
        front: bool,
        extra_data: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": dict(prompt),
            "client_id": self.client_id,
            "prompt_id": prompt_id or flows.new_prompt_id(),
        }
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = dict(extra_data)
        return body

    @staticmethod
    def _upload_args(image: str | os.PathLike[str] | bytes, name: str | None) -> tuple[str, bytes]:
        if isinstance(image, bytes):
            return name or "upload.png", image
        path = Path(image)
        return name or path.name, path.read_bytes()

    @staticmethod
    def _request_args(call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"method": call.method, "url": call.path}
        if call.params is not None:
            args["params"] = dict(call.params)
        if call.json is not None:
            args["json"] = call.json
        if call.content is not None:
            args["content"] = call.content
        if call.files is not None:
            args["files"] = dict(call.files)
            args["data"] = dict(call.data or {})
        return args

    @staticmethod
    def _download_call(image: ImageRef, dest_dir: str | os.PathLike[str]) -> tuple[Call, Path]:
        """The request for an output image and where it goes, checked before anything is sent.

        Raises:
            UnsafePath: the server-given name would land outside ``dest_dir``.
        """
        target = files.safe_output_path(dest_dir, image.subfolder, image.filename)
        return flows.view_call(image), target

    @staticmethod
    def _saved(writer: files.AtomicImageWriter) -> tuple[Path, files.ImageFacts]:
        """The path and facts of an image whose bytes all arrived: checked, synced, renamed."""
        path = writer.commit()
        assert writer.facts is not None
        return path, writer.facts

    def _checked(self, call: Call, response: httpx.Response) -> httpx.Response:
        """``response`` if its status is one ``call`` expects, else the typed error."""
        if response.status_code in call.expected:
            return response
        raise parse.error_for(call, response.status_code, response.text)

    @contextlib.contextmanager
    def _transport_errors(self, call: Call) -> Iterator[None]:
        """Translate httpx's transport errors (the only place they are caught)."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ServerTimeout(
                f"{call.method} {call.path}: {self.url} did not answer within {self.timeout} s "
                f"({type(exc).__name__}); is it busy? raise timeout= or try later"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"{call.method} {call.path}: could not talk to {self.url} ({type(exc).__name__}: "
                f"{exc}); is ComfyUI running there?"
            ) from exc

    def _delays(self, call: Call) -> Iterator[float]:
        return self.retry.delays() if call.idempotent else iter(())
