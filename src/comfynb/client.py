"""``Client`` and ``AsyncClient``: ComfyUI over HTTP, with retries and typed errors.

Both clients drive the same flows from ``protocol.py``; they differ only in how they wait
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

import asyncio
import base64
import contextlib
import functools
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from . import files, protocol
from .errors import ComfynbError, ServerTimeout, ServerUnreachable
from .protocol import (
    TRANSIENT_ERRORS,
    Call,
    Flow,
    HistoryEntry,
    ImageRef,
    JobReport,
    QueuedPrompt,
    QueueState,
    RetryPolicy,
    SystemStats,
    UploadedImage,
)

if TYPE_CHECKING:
    from .events import AsyncEventStream, EventStream

__all__ = ["AsyncClient", "Client", "RetryPolicy"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8188"


@functools.cache
def _tls_context() -> ssl.SSLContext:
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


def _auth_headers(
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


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@``, and that pair (kept out of URLs that get logged)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url.rstrip("/"), None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare.rstrip("/"), (parts.username, parts.password or "")


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


def _advance(flow: Flow[T], outcome: httpx.Response | ComfynbError) -> Call | _Done[T]:
    """Hand a flow the response (or throw it the error); its next call, or its result."""
    try:
        if isinstance(outcome, ComfynbError):
            return flow.throw(outcome)
        return flow.send(outcome)
    except StopIteration as done:
        return _Done(done.value)


class _BaseClient:
    """Everything both clients share: configuration, request building and error mapping."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        client_id: str | None = None,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url, url_auth = _split_userinfo(url)
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._auth_kind = "bearer" if token else "basic" if (basic_auth or url_auth) else None
        self._headers = _auth_headers(token, basic_auth or url_auth, headers)
        self._jobs_api: bool | None = None

    def __repr__(self) -> str:
        # never the token, password or extra headers: only what kind of auth is in use
        auth = f", auth={self._auth_kind!r}" if self._auth_kind else ""
        return f"{type(self).__name__}({self.url!r}, client_id={self.client_id!r}{auth})"

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
            "verify": _tls_context(),
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
            "prompt_id": prompt_id or protocol.new_prompt_id(),
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

    def _checked(self, call: Call, response: httpx.Response) -> httpx.Response:
        """``response`` if its status is one ``call`` expects, else the typed error."""
        if response.status_code in call.expected:
            return response
        raise protocol.error_for(call, response.status_code, response.text)

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


class Client(_BaseClient):
    """A blocking ComfyUI client (use it from notebooks and scripts).

    Example::

        >>> with Client("http://127.0.0.1:8188", token="secret") as client:
        ...     queued = client.queue_prompt(prompt)
        ...     client.job(queued.prompt_id).status
        <PromptStatus.PENDING: 'pending'>

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8188"`` (``user:password@`` becomes basic auth).
        client_id: the id sent with every prompt and used on the WebSocket (a new one by default).
        token: a bearer token for a proxy in front of ComfyUI.
        basic_auth: ``(user, password)`` for a proxy.
        headers: more headers for every request.
        timeout: seconds to wait for each answer.
        retry: how to retry transient errors (``RetryPolicy()`` by default).
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Unpack[ClientOptions]) -> None:
        super().__init__(url, **options)
        self._http = httpx.Client(**self._http_options())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (the ``with`` block does it for you)."""
        self._http.close()

    # -- the I/O shell ---------------------------------------------------------------------

    def _retrying(self, call: Call, attempt: Callable[[], T]) -> T:
        delays = self._delays(call)
        while True:
            try:
                return attempt()
            except TRANSIENT_ERRORS:
                delay = next(delays, None)
                if delay is None:
                    raise
                time.sleep(delay)

    def _send_once(self, call: Call) -> httpx.Response:
        with self._transport_errors(call):
            response = self._http.request(**self._request_args(call))
        return self._checked(call, response)

    def _send(self, call: Call) -> httpx.Response:
        if call.delay:
            time.sleep(call.delay)
        return self._retrying(call, lambda: self._send_once(call))

    def _drive(self, flow: Flow[T]) -> T:
        call = next(flow)
        while True:
            try:
                outcome: httpx.Response | ComfynbError = self._send(call)
            except ComfynbError as exc:  # the flow may catch it (POST /prompt retries)
                outcome = exc
            step = _advance(flow, outcome)
            if not isinstance(step, Call):
                return step.value
            call = step

    def _has_jobs_api(self) -> bool:
        if self._jobs_api is None:  # asked once per client, then remembered
            self._jobs_api = self._drive(protocol.jobs_api_probe_flow())
        return self._jobs_api

    # -- the API ---------------------------------------------------------------------------

    def queue_prompt(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: Mapping[str, Any] | None = None,
    ) -> QueuedPrompt:
        """Queue an API-format prompt; its id and queue number.

        Example::

            >>> queued = client.queue_prompt(prompt)
            >>> queued.prompt_id
            '6f1c2b8e-…'

        Args:
            prompt: the API-format prompt (``{node_id: {"class_type", "inputs"}}``).
            prompt_id: a UUID4 of your own (one is made for you otherwise); retries reuse it.
            front: run it before everything pending.
            extra_data: passed through to the server (``extra_pnginfo`` lands in saved PNGs).

        Raises:
            PromptRejected: the server refused the prompt; its message says which input to fix.
            ServerUnreachable, ServerTimeout, ServerFailed: still failing after the retries.

        A retry never queues twice after a lost answer (reset, 5xx); after a *timeout* the first
        request may still be in flight, see ``docs/client.md``.
        """
        body = self._prompt_body(prompt, prompt_id, front, extra_data)
        flow = protocol.queue_prompt_flow(body, jobs_api=self._jobs_api, retry=self.retry)
        return self._drive(flow)

    def job(self, prompt_id: str) -> JobReport:
        """What the server knows about one job: status, outputs, error.

        Uses ``/api/jobs/{id}``; on servers without it, ``/history/{id}`` and ``/queue``.

        Example::

            >>> client.job(queued.prompt_id).status
            <PromptStatus.COMPLETED: 'completed'>

        Raises:
            JobNotFound: the server does not know ``prompt_id`` (never queued, deleted from the
                queue, or lost in a restart).
        """
        return self._drive(protocol.job_flow(prompt_id, jobs_api=self._has_jobs_api()))

    def history(
        self, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, HistoryEntry]:
        """Finished prompts by id, oldest first (``max_items``: only the newest N).

        Example::

            >>> list(client.history(max_items=1).values())[0].report.status
            <PromptStatus.COMPLETED: 'completed'>
        """
        return self._drive(protocol.history_flow(max_items, offset))

    def queue(self) -> QueueState:
        """The running and pending prompts.

        Example::

            >>> queued.prompt_id in client.queue()
            True
        """
        return self._drive(protocol.queue_flow())

    def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (a running one is not stopped: use ``interrupt``).

        Example::

            >>> client.delete_from_queue([queued.prompt_id])
        """
        self._drive(protocol.post_flow("/queue", {"delete": list(prompt_ids)}))

    def clear_queue(self) -> None:
        """Remove every pending prompt.

        Example::

            >>> client.clear_queue()
        """
        self._drive(protocol.post_flow("/queue", {"clear": True}))

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only if it is ``prompt_id``, when given).

        Example::

            >>> client.interrupt(queued.prompt_id)
        """
        body = {} if prompt_id is None else {"prompt_id": prompt_id}
        # a global interrupt sent twice could stop the next prompt: retry targeted ones only
        self._drive(protocol.post_flow("/interrupt", body, idempotent=prompt_id is not None))

    def download(self, image: ImageRef, dest_dir: str | os.PathLike[str]) -> Path:
        """Save an output image under ``dest_dir`` (keeping its subfolder); the path written.

        The bytes stream into a temporary file next to the target, are checked to decode as an
        image, synced and renamed in one step: no partial file is ever left.

        Example::

            >>> client.download(client.job(queued.prompt_id).outputs[0], "out")
            PosixPath('out/trivial_00001_.png')

        Raises:
            UnsafePath: the server-given name would land outside ``dest_dir`` (nothing is sent).
            CorruptImage: the body is not a whole image (nothing is written).
        """
        return self._save(image, dest_dir)[0]

    def _save(
        self, image: ImageRef, dest_dir: str | os.PathLike[str]
    ) -> tuple[Path, files.ImageFacts]:
        """``download``, with the facts of the image written (size, digest, pixel size)."""
        target = files.safe_output_path(dest_dir, image.subfolder, image.filename)
        call = protocol.view_call(image)
        return self._retrying(call, lambda: self._download_once(call, target))

    def _download_once(self, call: Call, target: Path) -> tuple[Path, files.ImageFacts]:
        with self._transport_errors(call):
            args = self._request_args(call)
            with self._http.stream(args.pop("method"), args.pop("url"), **args) as response:
                if response.status_code not in call.expected:
                    response.read()
                    self._checked(call, response)
                with files.atomic_image_file(target) as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        assert f.facts is not None
        return target, f.facts

    def upload_image(
        self,
        image: str | os.PathLike[str] | bytes,
        *,
        name: str | None = None,
        subfolder: str = "",
        type: str = "input",
        overwrite: bool = False,
    ) -> UploadedImage:
        """Upload an image file (or bytes) for ``LoadImage``; where the server put it.

        Example::

            >>> client.upload_image("cat.png").as_input
            'cat.png'
        """
        filename, content = self._upload_args(image, name)
        flow = protocol.upload_image_flow(
            filename, content, subfolder=subfolder, type=type, overwrite=overwrite
        )
        return self._drive(flow)

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """Node definitions: all, or one class (``{}`` if the server lacks it).

        Example::

            >>> client.object_info("EmptyImage")["EmptyImage"]["input"]["required"]["width"]
            ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}]
        """
        return self._drive(protocol.object_info_flow(class_type))

    def system_stats(self) -> SystemStats:
        """Server versions and resources.

        Example::

            >>> client.system_stats().comfyui_version
            '0.33.0'
        """
        return self._drive(protocol.system_stats_flow())

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Ask the server to unload models and/or free memory after the current job.

        Example::

            >>> client.free(unload_models=True, free_memory=True)
        """
        body = {"unload_models": unload_models, "free_memory": free_memory}
        self._drive(protocol.post_flow("/free", body))

    def events(
        self,
        prompt_ids: Iterable[str] | None = None,
        *,
        poll_interval: float = 2.0,
        reconnect: RetryPolicy | None = None,
    ) -> EventStream:
        """The WebSocket as typed events; see ``comfynb.events.EventStream``.

        With ``prompt_ids`` the stream follows those jobs and ends once each has ended; after
        ``poll_interval`` silent seconds it reads the followed jobs over HTTP. ``reconnect``
        is the backoff between connection attempts (``events.RECONNECT`` by default).

        Example::

            >>> with client.events() as events:
            ...     queued = client.queue_prompt(prompt)
            ...     events.follow(queued.prompt_id)
            ...     [type(e).__name__ for e in events][-1]
            'ExecutionSuccess'
        """
        from .events import EventStream

        options = {} if reconnect is None else {"reconnect": reconnect}
        return EventStream(self, prompt_ids, poll_interval=poll_interval, **options)


class AsyncClient(_BaseClient):
    """The asyncio twin of ``Client``: same methods, awaited; ``aclose`` instead of ``close``.

    Example::

        >>> async with AsyncClient("http://127.0.0.1:8188") as client:
        ...     queued = await client.queue_prompt(prompt)
        ...     async for event in client.events([queued.prompt_id]):
        ...         print(event)
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Unpack[ClientOptions]) -> None:
        super().__init__(url, **options)
        self._http = httpx.AsyncClient(**self._http_options())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (the ``async with`` block does it for you)."""
        await self._http.aclose()

    # -- the I/O shell ---------------------------------------------------------------------

    async def _retrying(self, call: Call, attempt: Callable[[], Awaitable[T]]) -> T:
        delays = self._delays(call)
        while True:
            try:
                return await attempt()
            except TRANSIENT_ERRORS:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _send_once(self, call: Call) -> httpx.Response:
        with self._transport_errors(call):
            response = await self._http.request(**self._request_args(call))
        return self._checked(call, response)

    async def _send(self, call: Call) -> httpx.Response:
        if call.delay:
            await asyncio.sleep(call.delay)
        return await self._retrying(call, lambda: self._send_once(call))

    async def _drive(self, flow: Flow[T]) -> T:
        call = next(flow)
        while True:
            try:
                outcome: httpx.Response | ComfynbError = await self._send(call)
            except ComfynbError as exc:  # the flow may catch it (POST /prompt retries)
                outcome = exc
            step = _advance(flow, outcome)
            if not isinstance(step, Call):
                return step.value
            call = step

    async def _has_jobs_api(self) -> bool:
        if self._jobs_api is None:  # asked once per client, then remembered
            self._jobs_api = await self._drive(protocol.jobs_api_probe_flow())
        return self._jobs_api

    # -- the API (docstrings: see Client) --------------------------------------------------

    async def queue_prompt(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: Mapping[str, Any] | None = None,
    ) -> QueuedPrompt:
        """Queue an API-format prompt; see ``Client.queue_prompt``."""
        body = self._prompt_body(prompt, prompt_id, front, extra_data)
        flow = protocol.queue_prompt_flow(body, jobs_api=self._jobs_api, retry=self.retry)
        return await self._drive(flow)

    async def job(self, prompt_id: str) -> JobReport:
        """What the server knows about one job; see ``Client.job``."""
        return await self._drive(protocol.job_flow(prompt_id, jobs_api=await self._has_jobs_api()))

    async def history(
        self, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, HistoryEntry]:
        """Finished prompts by id, oldest first; see ``Client.history``."""
        return await self._drive(protocol.history_flow(max_items, offset))

    async def queue(self) -> QueueState:
        """The running and pending prompts; see ``Client.queue``."""
        return await self._drive(protocol.queue_flow())

    async def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts; see ``Client.delete_from_queue``."""
        await self._drive(protocol.post_flow("/queue", {"delete": list(prompt_ids)}))

    async def clear_queue(self) -> None:
        """Remove every pending prompt; see ``Client.clear_queue``."""
        await self._drive(protocol.post_flow("/queue", {"clear": True}))

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt; see ``Client.interrupt``."""
        body = {} if prompt_id is None else {"prompt_id": prompt_id}
        await self._drive(protocol.post_flow("/interrupt", body, idempotent=prompt_id is not None))

    async def download(self, image: ImageRef, dest_dir: str | os.PathLike[str]) -> Path:
        """Save an output image under ``dest_dir``; see ``Client.download``."""
        target = files.safe_output_path(dest_dir, image.subfolder, image.filename)
        call = protocol.view_call(image)
        return await self._retrying(call, lambda: self._download_once(call, target))

    async def _download_once(self, call: Call, target: Path) -> Path:
        with self._transport_errors(call):
            args = self._request_args(call)
            async with self._http.stream(args.pop("method"), args.pop("url"), **args) as response:
                if response.status_code not in call.expected:
                    await response.aread()
                    self._checked(call, response)
                writer = files.AtomicImageWriter(target)
                try:
                    async for chunk in response.aiter_bytes():
                        writer.write(chunk)
                except BaseException:
                    writer.discard()
                    raise
        # decoding the whole image takes a while for big ones: not on the event loop
        return await asyncio.to_thread(writer.commit)

    async def upload_image(
        self,
        image: str | os.PathLike[str] | bytes,
        *,
        name: str | None = None,
        subfolder: str = "",
        type: str = "input",
        overwrite: bool = False,
    ) -> UploadedImage:
        """Upload an image for ``LoadImage``; see ``Client.upload_image``."""
        filename, content = self._upload_args(image, name)
        flow = protocol.upload_image_flow(
            filename, content, subfolder=subfolder, type=type, overwrite=overwrite
        )
        return await self._drive(flow)

    async def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """Node definitions; see ``Client.object_info``."""
        return await self._drive(protocol.object_info_flow(class_type))

    async def system_stats(self) -> SystemStats:
        """Server versions and resources; see ``Client.system_stats``."""
        return await self._drive(protocol.system_stats_flow())

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Unload models and/or free memory; see ``Client.free``."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._drive(protocol.post_flow("/free", body))

    def events(
        self,
        prompt_ids: Iterable[str] | None = None,
        *,
        poll_interval: float = 2.0,
        reconnect: RetryPolicy | None = None,
    ) -> AsyncEventStream:
        """The WebSocket as typed events, for ``async for``; see ``comfynb.events``."""
        from .events import AsyncEventStream

        options = {} if reconnect is None else {"reconnect": reconnect}
        return AsyncEventStream(self, prompt_ids, poll_interval=poll_interval, **options)
