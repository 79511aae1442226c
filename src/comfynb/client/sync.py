"""The blocking ComfyUI client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

import httpx

from .. import files
from ..errors import TRANSIENT_ERRORS, ComfynbError
from ..protocol import flows
from ..protocol.types import (
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
    from .streams import EventStream


from .base import BaseClient, ClientOptions, T, advance_flow


class Client(BaseClient):
    """A blocking ComfyUI client (use it from notebooks and scripts).

    Example::

        >>> with Client("http://127.0.0.1:8188", token="secret") as client:
        ...     queued = client.queue_prompt(prompt)
        ...     client.job(queued.prompt_id).status
        <PromptStatus.PENDING: 'pending'>

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8188"`` (``user:password@`` becomes basic auth);
            by default the first of ``COMFYUI_URL``, else ``http://127.0.0.1:8188``.
            ``http(s)://host[:port]``, kept in its one spelling as ``client.url``
            (``comfynb.core.urls``: ``http://localhost:8188/`` is ``http://127.0.0.1:8188``).
        client_id: the id sent with every prompt and used on the WebSocket (a new one by default).
        token: a bearer token for a proxy in front of ComfyUI (by default ``COMFYUI_TOKEN`` if
            ``url`` is one of ``COMFYUI_URL``'s servers).
        basic_auth: ``(user, password)`` for a proxy.
        headers: more headers for every request.
        timeout: seconds to wait for each answer.
        retry: how to retry transient errors (``RetryPolicy()`` by default).

    Raises:
        InvalidInput: ``url`` is not ``http(s)://host[:port]`` (``"localhost:8188"``); the
            message shows the URL to write.
    """

    def __init__(self, url: str | None = None, **options: Unpack[ClientOptions]) -> None:
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
            step = advance_flow(flow, outcome)
            if not isinstance(step, Call):
                return step.value
            call = step

    def _has_jobs_api(self) -> bool:
        if self._jobs_api is None:  # asked once per client, then remembered
            self._jobs_api = self._drive(flows.jobs_api_probe_flow())
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
        flow = flows.queue_prompt_flow(body, jobs_api=self._jobs_api, retry=self.retry)
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
        return self._drive(flows.job_flow(prompt_id, jobs_api=self._has_jobs_api()))

    def history(
        self, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, HistoryEntry]:
        """Finished prompts by id, oldest first (``max_items``: only the newest N).

        Example::

            >>> list(client.history(max_items=1).values())[0].report.status
            <PromptStatus.COMPLETED: 'completed'>
        """
        return self._drive(flows.history_flow(max_items, offset))

    def queue(self) -> QueueState:
        """The running and pending prompts.

        Example::

            >>> queued.prompt_id in client.queue()
            True
        """
        return self._drive(flows.queue_flow())

    def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (a running one is not stopped: use ``interrupt``).

        Example::

            >>> client.delete_from_queue([queued.prompt_id])
        """
        self._drive(flows.post_flow("/queue", {"delete": list(prompt_ids)}))

    def clear_queue(self) -> None:
        """Remove every pending prompt.

        Example::

            >>> client.clear_queue()
        """
        self._drive(flows.post_flow("/queue", {"clear": True}))

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only if it is ``prompt_id``, when given).

        Example::

            >>> client.interrupt(queued.prompt_id)
        """
        body = {} if prompt_id is None else {"prompt_id": prompt_id}
        # a global interrupt sent twice could stop the next prompt: retry targeted ones only
        self._drive(flows.post_flow("/interrupt", body, idempotent=prompt_id is not None))

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
        return self.download_with_facts(image, dest_dir)[0]

    def download_with_facts(
        self, image: ImageRef, dest_dir: str | os.PathLike[str]
    ) -> tuple[Path, files.ImageFacts]:
        """``download``, with the facts of the image written (size, digest, pixel size).

        Example::

            >>> path, facts = client.download_with_facts(ref, "out")
            >>> facts.width, facts.height
            (512, 512)
        """
        call, target = self._download_call(image, dest_dir)
        return self._retrying(call, lambda: self._download_once(call, target))

    def _download_once(self, call: Call, target: Path) -> tuple[Path, files.ImageFacts]:
        with self._transport_errors(call):
            args = self._request_args(call)
            with self._http.stream(args.pop("method"), args.pop("url"), **args) as response:
                if response.status_code not in call.expected:
                    response.read()
                    self._checked(call, response)
                writer = files.AtomicImageWriter(target)
                try:
                    for chunk in response.iter_bytes():
                        writer.write(chunk)
                except BaseException:
                    writer.discard()
                    raise
        return self._saved(writer)

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
        flow = flows.upload_image_flow(
            filename, content, subfolder=subfolder, type=type, overwrite=overwrite
        )
        return self._drive(flow)

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """Node definitions: all, or one class (``{}`` if the server lacks it).

        Example::

            >>> client.object_info("EmptyImage")["EmptyImage"]["input"]["required"]["width"]
            ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}]
        """
        return self._drive(flows.object_info_flow(class_type))

    def system_stats(self) -> SystemStats:
        """Server versions and resources.

        Example::

            >>> client.system_stats().comfyui_version
            '0.33.0'
        """
        return self._drive(flows.system_stats_flow())

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Ask the server to unload models and/or free memory after the current job.

        Example::

            >>> client.free(unload_models=True, free_memory=True)
        """
        body = {"unload_models": unload_models, "free_memory": free_memory}
        self._drive(flows.post_flow("/free", body))

    def events(
        self,
        prompt_ids: Iterable[str] | None = None,
        *,
        poll_interval: float = 2.0,
        reconnect: RetryPolicy | None = None,
    ) -> EventStream:
        """The WebSocket as typed events; see ``comfynb.client.streams.EventStream``.

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
        from .streams import EventStream

        options = {} if reconnect is None else {"reconnect": reconnect}
        return EventStream(self, prompt_ids, poll_interval=poll_interval, **options)
