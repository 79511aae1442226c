"""The asyncio ComfyUI client: ``Client``'s methods, awaited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
    from .streams import AsyncEventStream


from .base import BaseClient, ClientOptions, T, advance_flow


class AsyncClient(BaseClient):
    """The asyncio twin of ``Client``: same methods, awaited; ``aclose`` instead of ``close``.

    Example::

        >>> async with AsyncClient("http://127.0.0.1:8188") as client:
        ...     queued = await client.queue_prompt(prompt)
        ...     async for event in client.events([queued.prompt_id]):
        ...         print(event)
    """

    def __init__(self, url: str | None = None, **options: Unpack[ClientOptions]) -> None:
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
            step = advance_flow(flow, outcome)
            if not isinstance(step, Call):
                return step.value
            call = step

    async def _has_jobs_api(self) -> bool:
        if self._jobs_api is None:  # asked once per client, then remembered
            self._jobs_api = await self._drive(flows.jobs_api_probe_flow())
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
        flow = flows.queue_prompt_flow(body, jobs_api=self._jobs_api, retry=self.retry)
        return await self._drive(flow)

    async def job(self, prompt_id: str) -> JobReport:
        """What the server knows about one job; see ``Client.job``."""
        return await self._drive(flows.job_flow(prompt_id, jobs_api=await self._has_jobs_api()))

    async def history(
        self, max_items: int | None = None, offset: int | None = None
    ) -> dict[str, HistoryEntry]:
        """Finished prompts by id, oldest first; see ``Client.history``."""
        return await self._drive(flows.history_flow(max_items, offset))

    async def queue(self) -> QueueState:
        """The running and pending prompts; see ``Client.queue``."""
        return await self._drive(flows.queue_flow())

    async def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts; see ``Client.delete_from_queue``."""
        await self._drive(flows.post_flow("/queue", {"delete": list(prompt_ids)}))

    async def clear_queue(self) -> None:
        """Remove every pending prompt; see ``Client.clear_queue``."""
        await self._drive(flows.post_flow("/queue", {"clear": True}))

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt; see ``Client.interrupt``."""
        body = {} if prompt_id is None else {"prompt_id": prompt_id}
        await self._drive(flows.post_flow("/interrupt", body, idempotent=prompt_id is not None))

    async def download(self, image: ImageRef, dest_dir: str | os.PathLike[str]) -> Path:
        """Save an output image under ``dest_dir``; see ``Client.download``."""
        return (await self.download_with_facts(image, dest_dir))[0]

    async def download_with_facts(
        self, image: ImageRef, dest_dir: str | os.PathLike[str]
    ) -> tuple[Path, files.ImageFacts]:
        """``download``, with the facts of the image written; see ``Client.download_with_facts``."""
        call, target = self._download_call(image, dest_dir)
        return await self._retrying(call, lambda: self._download_once(call, target))

    async def _download_once(self, call: Call, target: Path) -> tuple[Path, files.ImageFacts]:
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
        return await asyncio.to_thread(self._saved, writer)

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
        flow = flows.upload_image_flow(
            filename, content, subfolder=subfolder, type=type, overwrite=overwrite
        )
        return await self._drive(flow)

    async def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """Node definitions; see ``Client.object_info``."""
        return await self._drive(flows.object_info_flow(class_type))

    async def system_stats(self) -> SystemStats:
        """Server versions and resources; see ``Client.system_stats``."""
        return await self._drive(flows.system_stats_flow())

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Unload models and/or free memory; see ``Client.free``."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._drive(flows.post_flow("/free", body))

    def events(
        self,
        prompt_ids: Iterable[str] | None = None,
        *,
        poll_interval: float = 2.0,
        reconnect: RetryPolicy | None = None,
    ) -> AsyncEventStream:
        """The WebSocket as typed events, for ``async for``; see ``comfynb.client.streams``."""
        from .streams import AsyncEventStream

        options = {} if reconnect is None else {"reconnect": reconnect}
        return AsyncEventStream(self, prompt_ids, poll_interval=poll_interval, **options)
