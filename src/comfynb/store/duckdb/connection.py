"""The DuckDB boundary: opening a file, a cursor per thread, one writer, errors translated.

Example::

    >>> store = comfynb.Store.open("lab.duckdb")      # a Connection underneath
    >>> with store.transaction():                      # the writer lock, BEGIN ... COMMIT
    ...     store.pick(12)

Threads: one DuckDB connection per store, one cursor per thread, and one writer at a time
(a lock per file shared by every store on it in this process, :class:`FileState`), so two
threads never conflict on an update. Readers never wait for the writer; they see committed
data.

Processes: DuckDB lets one process own a file. Opening a file another process holds raises
``StoreLocked`` naming that process (:func:`map_error`, the one place DuckDB errors become
comfynb's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import duckdb

from ...errors import (
    InvalidInput,
    NotAStore,
    SchemaTooNew,
    StoreError,
    StoreLocked,
    StoreWriteFailed,
)
from ..base import ChangeCounts
from .migrations import MIGRATIONS, Migration

__all__ = ["Connection", "FileState", "file_state", "map_error"]

# --------------------------------------------------------------------------- errors

logger = logging.getLogger("comfynb.store")

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")
_SURROGATE = re.compile(r"cannot encode str as UTF-8, surrogate ('.+?') at position (\d+)")


def map_error(exc: duckdb.Error, path: str) -> StoreError:
    """Translate a DuckDB error into the comfynb tree (the one place this happens)."""
    text = str(exc)
    if "Could not set lock on file" in text or "Conflicting lock" in text:
        found = _LOCK_HOLDER.search(text)
        if found:
            return StoreLocked(path, pid=int(found.group(2)), holder=found.group(1))
        return StoreLocked(path, pid=None)
    if isinstance(exc, duckdb.TransactionException) and "onflict" in text:
        return StoreError(
            f"two writers changed the same row of {path} at once ({text.splitlines()[0]}); "
            "write through one Store per process and retry the call"
        )
    if "not a valid DuckDB database file" in text or "is not a valid DuckDB" in text:
        return NotAStore(
            f"{path} is not a DuckDB file, so not a comfynb store; pass the path of a .duckdb "
            "file comfynb made, or a new file name (it is left as it is)",
            path=path,
        )
    if isinstance(exc, duckdb.IOException) or "Failed to commit" in text:
        return StoreWriteFailed(
            f"DuckDB could not read or write {path}: {text.splitlines()[0]} ({_write_hint(text)}); "
            "nothing of the failed call was kept",
            path=path,
        )
    surrogate = _SURROGATE.search(text)
    if surrogate:  # a str argument DuckDB could not encode as UTF-8
        return InvalidInput(
            f"a text argument holds a lone surrogate {surrogate.group(1)} at position "
            f"{surrogate.group(2)}: it is not valid Unicode (often a file name read with "
            "errors='surrogateescape'); remove or replace that character"
        )
    if isinstance(exc, duckdb.ConstraintException):
        return StoreError(f"the store refused a row in {path}: {text}")
    return StoreError(f"DuckDB failed on {path}: {text}")


def _write_hint(text: str) -> str:
    lowered = text.lower()
    if "no space left" in lowered or "disk quota" in lowered:
        return "the disk is full: free some space, then call again"
    if "permission denied" in lowered or "read-only" in lowered:
        return "no permission to write there: make the file and its folder writable"
    if "file too large" in lowered:
        return "a file size limit stopped it (ulimit -f): raise it"
    return "the reason is the system's"


# --------------------------------------------------------------------------- opening

# what a file holds: its tables, views and sequences, by name
_OBJECTS = (
    "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
    "UNION ALL SELECT sequence_name FROM duckdb_sequences() "
    "WHERE database_name = current_database()"
)


def _check_file(path: str) -> None:
    """Refuse, before DuckDB opens it, a path that cannot be a store; clear an empty file.

    A named pipe would hang the open, a folder or a device gives DuckDB's riddles; a missing
    folder would be created by nothing. An empty file (``touch``, a fresh temporary file) is
    removed for DuckDB to make the store there.
    """
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise InvalidInput(
            f"the folder of {path} does not exist; create it first "
            f"(Path({str(folder)!r}).mkdir(parents=True))"
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(info.st_mode):
        if info.st_size == 0:
            Path(path).unlink()
        return
    what = (
        "a folder"
        if stat.S_ISDIR(info.st_mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(info.st_mode)
        else "a socket"
        if stat.S_ISSOCK(info.st_mode)
        else "a device"
    )
    inside = f", e.g. {str(Path(path) / 'lab.duckdb')!r}" if stat.S_ISDIR(info.st_mode) else ""
    raise NotAStore(
        f"{path} is {what}, not a file; pass the path of a store's file{inside}",
        path=path,
    )


# --------------------------------------------------------------------------- process-wide locks

_LOCKS_GUARD = threading.Lock()


@dataclass
class FileState:
    """What every Store open on one file in this process shares: the writer lock, and counts
    a worker reads to skip queries (they only grow, once what they count is committed)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    queue_changes: int = 0  # jobs may have become claimable: enqueued, requeued, released
    cancellations: int = 0  # jobs were cancelled
    #: the file may hold job previews (None: not known yet): a job that settles has its preview
    #: removed, a statement saved when there are none (no worker wrote one in this process)
    previews: bool | None = None
    # Counted by the transaction under way (the writer holds ``lock``), shown only once it
    # committed: a reader that sees a count move must then see the change it counts (a worker
    # that saw a cancel counted, then read the job still pending, posted a cancelled job).
    _held: list[int] = field(default_factory=lambda: [0, 0])

    def note(self, *, queue_changes: bool = False, cancellations: bool = False) -> None:
        """Count a change of the transaction under way; shown when it commits (``publish``)."""
        self._held[0] += queue_changes
        self._held[1] += cancellations

    def publish(self, *, committed: bool) -> None:
        """The transaction ended: show what it counted if it committed; forget it either way."""
        if committed:
            self.queue_changes += self._held[0]
            self.cancellations += self._held[1]
        self._held[:] = [0, 0]


_FILE_STATES: dict[str, FileState] = {}


def file_state(key: str) -> FileState:
    """One shared state per file in this process, whichever Store is open on it."""
    with _LOCKS_GUARD:
        state = _FILE_STATES.get(key)
        if state is None:
            state = _FILE_STATES[key] = FileState()
        return state


# --------------------------------------------------------------------------- Connection


class Connection:
    """A DuckDB file opened by this process: cursors, the writer lock, errors, migrations.

    ``Store`` is this plus its reads and writes (``records``, ``queue``, ``frames``).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        output_dir: Path,
        shared: FileState,
    ) -> None:
        self._con = con
        self.path = path
        self.output_dir = output_dir
        self._shared = shared
        self._lock = shared.lock
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_guard = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------- opening, closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        output_dir: str | os.PathLike[str] | None = None,
        *,
        migrations: Sequence[Migration] | None = None,
    ) -> Self:
        """Open or create the store at ``path``, bringing its schema up to date in place.

        Example::

            >>> store = comfynb.Store.open("~/lab.duckdb", output_dir="outputs")
            >>> store.schema_version
            1

        Args:
            path: the DuckDB file (created if missing or empty; ``~`` is your home), or
                ``":memory:"``.
            output_dir: where image files live; default ``outputs`` beside the file. Created
                if missing.
            migrations: the ordered migrations to apply; None (the default) is this comfynb's
                schema, ``comfynb.store.MIGRATIONS`` (tests and forks pass their own).

        Raises:
            StoreLocked: another process holds the file.
            SchemaTooNew: the file was written by a newer comfynb; nothing changed.
            NotAStore: the path is not a comfynb store: not a DuckDB file, another program's
                DuckDB database, a folder, a named pipe...; it is left as it is.
            StoreError: the file cannot be opened.
        """
        if not isinstance(path, str | os.PathLike):
            raise InvalidInput(f"path must be a file path, got {path!r}; e.g. 'lab.duckdb'")
        text = os.fspath(path)
        memory = text == ":memory:"
        if not memory:
            text = os.path.expanduser(text)
            _check_file(text)
        folder = Path.cwd() if memory else Path(text).resolve().parent
        outputs = Path(output_dir).expanduser() if output_dir is not None else folder / "outputs"
        key = f"memory:{uuid.uuid4()}" if memory else str(Path(text).resolve())
        if outputs.exists() and not outputs.is_dir():
            raise InvalidInput(f"output_dir {str(outputs)!r} is a file; pass a folder")
        try:
            con = duckdb.connect(text, config={"autoinstall_known_extensions": False})
        except duckdb.Error as exc:
            raise map_error(exc, text) from exc
        store = cls(con, text, outputs.resolve(), file_state(key))
        try:
            store._migrate(MIGRATIONS if migrations is None else migrations)
        except (NotAStore, SchemaTooNew):
            # leave the file as it was: closing would otherwise fold its log into it
            with contextlib.suppress(StoreError):
                store._fetch("PRAGMA disable_checkpoint_on_shutdown")
            store.close()
            raise
        except BaseException:
            store.close()
            raise
        try:
            outputs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            store.close()
            raise InvalidInput(
                f"cannot create the output folder {str(outputs)!r} ({exc.strerror or exc}); "
                "pass output_dir= a folder you can write to"
            ) from exc
        return store

    def close(self) -> None:
        """Close the store; other processes may open the file afterwards. Closing twice is fine.

        Example::

            >>> store.close()
        """
        if self._closed:
            return
        self._closed = True
        with self._cursors_guard:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """How many migrations the file has had.

        Example::

            >>> store.schema_version
            1
        """
        rows = self._fetch("SELECT count(*) FROM schema_migrations")
        return int(rows[0][0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Bring the schema up to date; refuse a file comfynb did not make, changing nothing."""
        with self._lock:
            names = {name for (name,) in self._fetch(_OBJECTS)}
            applied: list[tuple[Any, ...]] = []
            if "schema_migrations" in names:
                applied = self._fetch(
                    "SELECT version, name FROM schema_migrations ORDER BY version"
                )
            if not applied and names - {"schema_migrations"}:
                shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
                raise NotAStore(
                    f"{self.path} is a DuckDB database that comfynb did not make (it holds "
                    f"{shown}); comfynb keeps its store in a file of its own: pass a new file "
                    "name, e.g. 'lab.duckdb' (the file is left as it is)",
                    path=self.path,
                )
            for version, name in applied:
                if version > len(migrations):
                    raise SchemaTooNew(
                        f"{self.path} has schema version {len(applied)} ({name!r}) but this "
                        f"comfynb knows {len(migrations)}; upgrade comfynb to open it "
                        "(the file is unchanged)"
                    )
                if migrations[version - 1].name != name:
                    raise NotAStore(
                        f"{self.path} had migration {version} {name!r} where this comfynb has "
                        f"{migrations[version - 1].name!r}; it is not a store this comfynb "
                        "made. Open another file (this one is left as it is)",
                        path=self.path,
                    )
            for version in range(len(applied) + 1, len(migrations) + 1):
                migration = migrations[version - 1]
                with self._atomic():  # the record of the schema is made with its first change
                    self._fetch(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                        "KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT "
                        "now())"
                    )
                    for statement in migration.statements:
                        self._fetch(statement)
                    self._fetch(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [version, migration.name],
                    )

    def change_counts(self) -> ChangeCounts:
        """How often jobs may have become claimable, and were cancelled, in this process.

        Counts every Store open on the file in this process; they only grow. A worker reads
        them to skip a claim or a cancel check when nothing changed since it last looked.

        Example::

            >>> store.change_counts()
            ChangeCounts(queue_changes=3, cancellations=0)
        """
        return ChangeCounts(self._shared.queue_changes, self._shared.cancellations)

    # ----------------------------------------------------------------- the DuckDB boundary

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections must not be shared between threads)."""
        if self._closed:
            raise StoreError(
                f"the store {self.path} is closed; open it again with comfynb.open(path)"
            )
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursors_guard:
                cursor = self._con.cursor()
                self._cursors.append(cursor)
            self._execute(cursor, lambda c: c.execute("SET TimeZone = 'UTC'").fetchall())
            self._local.cursor = cursor
        return cursor

    def _execute(self, cursor: duckdb.DuckDBPyConnection, call: Any) -> Any:
        """Run ``call(cursor)``, translating DuckDB errors: the one boundary for them."""
        try:
            return call(cursor)
        except duckdb.Error as exc:
            raise map_error(exc, self.path) from exc
        except RuntimeError as exc:
            # Ctrl-C (the kernel's stop button) while DuckDB runs a query: DuckDB swallows the
            # KeyboardInterrupt and raises this instead; give the caller its interrupt back
            # (comfynb.wait returns its summary on one).
            if str(exc) != "Query interrupted":
                raise
            raise KeyboardInterrupt from exc

    def _fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Execute one statement on this thread's cursor and fetch every row."""
        rows: list[tuple[Any, ...]] = self._execute(
            self._cursor(), lambda c: c.execute(sql, params).fetchall()
        )
        return rows

    def _write(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """One statement under the writer lock (its own transaction unless inside one)."""
        with self._lock:
            return self._fetch(sql, params)

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """The writer lock and one DuckDB transaction: ``Store.transaction`` without its handle.

        Only one thread writes at a time; others wait here. A transaction inside another on
        the same thread joins the outer one (which commits or rolls back the lot).
        """
        with self._lock:
            cursor = self._cursor()
            if getattr(self._local, "depth", 0):
                self._local.depth += 1
                try:
                    yield
                finally:
                    self._local.depth -= 1
                return
            self._execute(cursor, lambda c: c.execute("BEGIN TRANSACTION").fetchall())
            self._local.depth = 1
            committed = False
            try:
                try:
                    yield
                except BaseException:
                    self._local.depth = 0
                    self._end_failed(cursor, "ROLLBACK")
                    raise
                self._local.depth = 0
                try:
                    self._execute(cursor, lambda c: c.execute("COMMIT").fetchall())
                    committed = True
                except StoreError:
                    # DuckDB usually ended the transaction itself; its "cannot rollback - no
                    # transaction is active" must not hide why the COMMIT failed
                    self._end_failed(cursor, "ROLLBACK")
                    raise
            finally:
                self._shared.publish(committed=committed)  # counts shown once visible

    def _end_failed(self, cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
        """Roll back after a failure; an error doing so is logged, never raised over it."""
        try:
            self._execute(cursor, lambda c: c.execute(sql).fetchall())
        except StoreError as exc:
            if "no transaction is active" not in str(exc):
                logger.warning("%s: %s after a failed transaction: %s", self.path, sql, exc)
