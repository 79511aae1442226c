"""Each server's ``/object_info``, kept in the store when it first answers in a worker run.

The worker already fetches ``/object_info`` when a server comes up (its capabilities: which
jobs it can run), so keeping a copy costs no request: the dict is handed to one background
thread, which calls ``store.save_object_info`` (the store skips a copy that did not change).
A notebook then converts UI workflows offline, ``Workflow.load(path, object_info=store)``.
A copy that cannot be saved is logged and forgotten: the worker goes on.

Example (what the worker does)::

    copies = ObjectInfoCopies(store)
    copies.save(server.url, info)       # returns at once
    ...
    copies.close()                      # waits for the save under way (tens of ms)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["ObjectInfoCopies"]

logger = logging.getLogger("comfynb.worker")


class ObjectInfoCopies:
    """Saves servers' ``/object_info`` through the store on one thread of its own."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pool: ThreadPoolExecutor | None = None  # made at the first copy

    def save(self, url: str, info: Mapping[str, Any]) -> None:
        """Keep ``info`` as ``url``'s copy, on the background thread; returns at once."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfynb-objinfo")
        with contextlib.suppress(RuntimeError):  # closing: a later run's copy will do
            self._pool.submit(self._save, url, info)

    def _save(self, url: str, info: Mapping[str, Any]) -> None:
        start = time.perf_counter()
        try:
            written = self._store.save_object_info(url, info)
        except Exception as exc:  # never the worker's concern: it goes on
            logger.warning(
                "server %s: its /object_info (%d classes) was not kept in the store (%s: %s); "
                "the worker goes on",
                url,
                len(info),
                type(exc).__name__,
                exc,
            )
            return
        ms = (time.perf_counter() - start) * 1000
        if written:
            logger.info(
                "server %s: its /object_info (%d classes) kept in the store (%.0f ms)",
                url,
                len(info),
                ms,
            )
        else:
            logger.debug("server %s: its /object_info unchanged (%.0f ms)", url, ms)

    def close(self) -> None:
        """Wait for the copy being saved, if any (one write)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
