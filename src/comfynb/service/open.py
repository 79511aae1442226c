"""``comfynb.open``: a store, local or served by a running ``comfynb worker`` process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .remote import RemoteStore


from ..core.settings import DB, settings
from ..errors import InvalidInput
from ..store import Store
from .remote import RemoteStore


# comfynb.open shadows the builtin on purpose, as the issue's `comfynb.open("lab.duckdb")` asks
def open(
    path: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> Store | RemoteStore:
    """Open or create a store: ``comfynb.open("lab.duckdb", output_dir="outputs")``.

    When a ``comfynb worker`` process owns the file (it names itself in
    ``lab.duckdb.worker.json``), this returns a ``RemoteStore`` that reaches the same store
    through that process, with the same methods, results and errors (README.md, "A notebook
    beside a worker process"). Otherwise it opens the file.

    Example::

        >>> store = comfynb.open("~/experiments/lab.duckdb", output_dir="outputs")
        >>> store.new_run("portraits").name
        'portraits'

    With no ``path``, the file ``COMFYNB_DB`` names; with no ``output_dir``, ``COMFYNB_OUTPUT``
    (else ``outputs`` beside the file).

    A missing or empty file becomes a new store; a file that is not a comfynb store (another
    program's DuckDB database, a folder, a named pipe) raises ``NotAStore`` and is left as
    it is. See ``Store.open`` for the arguments and errors; also ``WorkerGone``: the worker process
    named beside the file holds it but does not answer.
    """
    env = settings()
    if path is None:
        if env.db is None:
            raise InvalidInput(f"no store: pass a file, comfynb.open('lab.duckdb'), or set {DB}")
        path = env.db
    if output_dir is None:
        output_dir = env.output
    if isinstance(path, str | os.PathLike) and os.fspath(path) != ":memory:":
        from .remote import open_local_or_remote

        return open_local_or_remote(os.path.expanduser(os.fspath(path)), output_dir)
    return Store.open(path, output_dir)
