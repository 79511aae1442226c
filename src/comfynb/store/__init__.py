"""Layer 2: the store (one DuckDB file today) and the one writer of job statuses.

Example::

    >>> from comfynb.store import Store
    >>> store = Store.open("lab.duckdb", output_dir="outputs")

``comfynb.store.base`` (the interface every store has: ``NotebookStore``, ``ServedStore``) and
``comfynb.store.lifecycle`` need no DuckDB: the DuckDB store is imported on first use of
``Store``, so ``import comfynb`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AddedJobs, ChangeCounts, NotebookStore, ServedStore

if TYPE_CHECKING:
    from .duckdb.store import MIGRATIONS as MIGRATIONS
    from .duckdb.store import Migration as Migration
    from .duckdb.store import Store as Store
    from .duckdb.store import Transaction as Transaction

__all__ = [
    "MIGRATIONS",
    "AddedJobs",
    "ChangeCounts",
    "Migration",
    "NotebookStore",
    "ServedStore",
    "Store",
    "Transaction",
]

_DUCKDB = ("MIGRATIONS", "Migration", "Store", "Transaction")


def __getattr__(name: str) -> Any:
    if name in _DUCKDB:
        from .duckdb import store

        return getattr(store, name)
    raise AttributeError(f"module 'comfynb.store' has no attribute {name!r}")
