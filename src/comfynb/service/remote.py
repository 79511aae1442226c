"""A store served by the process that owns its file, and reached from other processes.

DuckDB lets one process hold a file, and processes taking turns on it are slow and have lost
committed transactions (``duckdb-facts.md``). So the process that runs ``comfynb worker`` is
the only one that opens the file: it serves the store on a local endpoint, and a notebook's
``comfynb.open("lab.duckdb")`` finds that endpoint and returns a :class:`RemoteStore` with the
methods a notebook uses.

Example::

    $ comfynb worker --db lab.duckdb --server http://127.0.0.1:8188      # in a terminal

    >>> store = comfynb.open("lab.duckdb")          # in the notebook
    >>> store
    <RemoteStore lab.duckdb via comfynb worker PID 4242>
    >>> job = comfynb.enqueue(store, workflow, run="portraits", params={"seed": 42})
    >>> store.jobs(run="portraits")[["id", "status"]]
       id     status
    0   1  completed

How (see README.md, "A notebook beside a worker process"):

* The endpoint listens on 127.0.0.1 on a free port and answers only requests that carry its
  random token (``Authorization: Bearer``). Its address and token are in ``<db>.worker.json``
  beside the database (mode 0600), written once the endpoint answers and removed when the
  worker exits cleanly. A file whose process is dead is ignored, and replaced by the next
  worker. The token is never logged and never shown in a repr.
* Standard library ``http.server`` (a thread per connection) with the store's calls on a
  fixed pool of 8 threads, ``httpx`` as the client: the Store is blocking and thread-safe
  with one DuckDB cursor per calling thread, kept for its life, so long-lived call threads
  serve it directly and the number of cursors stays bounded, while idle keep-alive
  connections (a re-run ``comfynb.open`` cell) never make a call wait. An asyncio server
  would hand every call to threads anyway.
* One POST per call: ``/call/<name>`` with the arguments as JSON. DataFrames come back as
  Arrow IPC (dtypes survive: ``Int64``, ``str``, ``boolean``, timestamps), frozen dataclasses
  as tagged JSON, and errors as their comfynb type, message and attributes: a ``RunNotFound``
  in the worker is a ``RunNotFound`` here.
* A call whose endpoint is gone raises ``WorkerGone``, which says what to do.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import SHUT_RDWR, socket
from typing import TYPE_CHECKING, Any, Final, Self

from .. import errors as _errors
from ..core.models import Candidate, Job, NewCandidate, Run, Step
from ..core.status import JobStatus
from ..errors import ComfynbError, InvalidInput, StoreError, StoreLocked, WorkerGone
from ..store.base import AddedJobs, ServedStore
from ..store.export import write_export

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from ..client import ClientOptions
    from ..store import Store
    from ..store.base import NotebookStore

__all__ = [
    "Endpoint",
    "RemoteStore",
    "connect",
    "endpoint_file",
    "find_endpoint",
    "open_local_or_remote",
    "serve",
]

logger = logging.getLogger("comfynb.remote")

ARROW: Final = "application/vnd.apache.arrow.stream"
JSON: Final = "application/json"
#: how long a notebook's call may take before it is reported as unanswered
CALL_TIMEOUT: Final = 120.0

# --------------------------------------------------------------------------- the endpoint file


def endpoint_file(db_path: str | os.PathLike[str]) -> Path:
    """The file beside a database that names the worker serving it: ``lab.duckdb.worker.json``.

    Example::

        >>> endpoint_file("lab.duckdb")
        PosixPath('/home/me/lab.duckdb.worker.json')
    """
    db = Path(db_path).resolve()
    return db.with_name(db.name + ".worker.json")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def find_endpoint(db_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The endpoint file's contents if a live process wrote it; None if absent or stale.

    A file whose pid is dead, or that cannot be read as one, is ignored (the next worker on
    the file replaces it).

    Example::

        >>> find_endpoint("lab.duckdb")["url"]
        'http://127.0.0.1:40123'
    """
    path = endpoint_file(db_path)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not all(k in info for k in ("pid", "url", "token")):
        return None
    if not isinstance(info["pid"], int) or not _pid_alive(info["pid"]):
        return None
    return info


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte; whole or not at all."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- values on the wire

_TYPE: Final = "__type__"
_DATACLASSES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (Run, Step, Job, Candidate, NewCandidate, AddedJobs)
}
# builtin errors a store call may raise (a wrong argument); anything else is a StoreError
_BUILTIN_ERRORS: Final = ("TypeError", "ValueError", "KeyError", "LookupError")


def _encode(value: Any) -> Any:
    """A JSON-ready form of a call argument or result; dataclasses, dates and enums are tagged."""
    if isinstance(value, JobStatus):
        return {_TYPE: "JobStatus", "value": value.value}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_TYPE: type(value).__name__, "fields": fields}
    if isinstance(value, datetime):
        return {_TYPE: "datetime", "value": value.isoformat()}
    if isinstance(value, Path):
        return {_TYPE: "Path", "value": str(value)}
    if isinstance(value, Mapping):
        items = {str(k): _encode(v) for k, v in value.items()}
        return {_TYPE: "dict", "items": items} if _TYPE in items else items
    if isinstance(value, list | tuple | set | frozenset):
        return [_encode(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars, e.g. an id read from a DataFrame
    if callable(item):
        return _encode(item())
    raise InvalidInput(
        f"{type(value).__name__} cannot be sent to the worker process; pass plain values "
        "(ints, strings, dicts, lists) or comfynb's Run, Step, Job and Candidate"
    )


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TYPE)
    if kind is None:
        return {k: _decode(v) for k, v in value.items()}
    if kind == "dict":
        return {k: _decode(v) for k, v in value["items"].items()}
    if kind == "JobStatus":
        return JobStatus(value["value"])
    if kind == "datetime":
        return datetime.fromisoformat(value["value"])
    if kind == "Path":
        return Path(value["value"])
    cls = _DATACLASSES.get(kind)
    if cls is None:
        raise StoreError(f"the worker sent a value of unknown type {kind!r}; upgrade comfynb")
    return cls(**{k: _decode(v) for k, v in value["fields"].items()})


def _encode_error(exc: BaseException) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, attr in vars(exc).items():
        with contextlib.suppress(InvalidInput):
            attrs[name] = _encode(attr)
    return {"type": type(exc).__name__, "message": str(exc), "attrs": attrs}


def _decode_error(body: Mapping[str, Any], call: str) -> Exception:
    """The exception the worker raised, as the same comfynb type with the same attributes."""
    name, message = str(body.get("type", "")), str(body.get("message", ""))
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ComfynbError):
        # built without __init__: each error class has its own signature, and the message is
        # already composed; the attributes (``key``, ``pid``, ``job_id``...) are set as sent
        exc: Exception = cls.__new__(cls)
        Exception.__init__(exc, message)
        for attr, value in dict(body.get("attrs") or {}).items():
            setattr(exc, attr, _decode(value))
        return exc
    if name in _BUILTIN_ERRORS:
        error_class: type[Exception] = getattr(builtins, name)
        return error_class(message)
    return StoreError(
        f"the worker process failed on {call}: {name}: {message}; its log has the traceback"
    )


def _frame_to_arrow(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _arrow_to_frame(data: bytes) -> pd.DataFrame:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all().to_pandas()


# --------------------------------------------------------------------------- the server


def _cancel_on_worker(
    store: Store,
    servers: Mapping[str, str],
    client_options: Mapping[str, Any],
    job: Job | int,
    client: object = None,
) -> Job:
    """``comfynb.cancel`` run in the worker process, with a client for the job's server.

    The notebook has no client; the worker's process makes one for the server the job was
    claimed for or sent to (a claimed job may be on its way there), from the URL the worker
    was given (``user:password@`` included) and its client options.
    """
    from ..client import Client
    from ..jobs import cancel

    del client  # the notebook's client (if any) stays there: this process talks to the server
    job_id = job.id if isinstance(job, Job) else job
    for _ in range(2):
        current = store.job(job_id)
        if current.server is None or current.prompt_id is None or current.status.is_terminal:
            try:
                return cancel(store, current)
            except InvalidInput:
                continue  # claimed and submitted meanwhile: again, with a client
        url = servers.get(current.server, current.server)
        with Client(url, **client_options) as server:
            return cancel(store, current, client=server)
    return cancel(store, job_id)


def _calls(
    store: Store, servers: Mapping[str, str], client_options: Mapping[str, Any]
) -> dict[str, Callable[..., Any]]:
    """What a notebook may call, by name: the Store's reads and notebook writes, add_jobs, cancel.

    Worker-side writes (claims, transitions, ``transaction``) are left out on purpose: the
    worker in this process owns them (a RemoteStore refuses them before sending anything).
    """
    names = (
        "new_run run new_step step add_jobs job jobs runs candidates candidate events pick "
        "star lineage unsettled_jobs status_counts"
    )
    table: dict[str, Callable[..., Any]] = {name: _method(store, name) for name in names.split()}
    table["schema_version"] = lambda: store.schema_version
    table["cancel"] = lambda *args, **kwargs: _cancel_on_worker(
        store, servers, client_options, *args, **kwargs
    )
    return table


def _method(store: Store, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(store, name)(*args, **kwargs)

    return call


class _Server(ThreadingHTTPServer):
    """A thread per connection; the store's calls run on a small fixed pool of threads.

    Connections are cheap and may idle (a notebook that re-ran ``comfynb.open`` keeps the
    old RemoteStore's keep-alive connection): each has its own thread, so none waits for
    another. The store gives each thread that calls it a DuckDB cursor for the store's
    life, so the calls themselves go to ``calls``, a fixed pool: the number of cursors stays
    bounded.
    """

    daemon_threads = True
    block_on_close = False  # close_connections ends them; the store calls are waited for

    def __init__(self, address: tuple[str, int], endpoint: Endpoint, threads: int) -> None:
        super().__init__(address, _Handler)
        self.endpoint = endpoint
        self.calls = ThreadPoolExecutor(threads, thread_name_prefix="comfynb-endpoint")
        self._open: set[socket] = set()
        self._open_guard = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_guard:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_guard:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """End every open connection, then wait for the store calls under way."""
        with self._open_guard:
            for request in self._open:
                with contextlib.suppress(OSError):
                    request.shutdown(SHUT_RDWR)
        self.calls.shutdown(wait=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a notebook's calls reuse one connection
    # headers and body are two writes: with Nagle on, the body waits for the client's delayed
    # ACK, ~40 ms per call
    disable_nagle_algorithm = True
    server: _Server
    timeout = 300  # an idle connection's thread ends after this long (httpx drops it first)

    def log_message(self, format: str, *args: Any) -> None:
        # the request line only (never headers, so never the token)
        logger.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes, content_type: str = JSON) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reply_json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value, separators=(",", ":")).encode())

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.endpoint._token}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._reply_json(401, {"error": {"type": "Unauthorized", "message": "wrong token"}})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path != "/hello":
            self._reply_json(404, {"error": {"type": "NotFound", "message": self.path}})
            return
        self._reply_json(200, self.server.endpoint.hello())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self._authorized():
            return
        name = self.path.removeprefix("/call/")
        call = self.server.endpoint._calls.get(name)
        if not self.path.startswith("/call/") or call is None:
            message = f"the worker serves no call {name!r}"
            self._reply_json(404, {"error": {"type": "StoreError", "message": message}})
            return
        self._answer(name, call, body)

    def _answer(self, name: str, call: Callable[..., Any], body: bytes) -> None:
        import pandas as pd

        try:
            request = json.loads(body or b"{}")
            args, kwargs = _decode(request.get("args", [])), _decode(request.get("kwargs", {}))
            try:
                future = self.server.calls.submit(call, *args, **kwargs)
            except RuntimeError:  # the endpoint is closing: nothing was run
                self._reply_json(503, {"error": self.server.endpoint.gone("it is stopping")})
                return
            result = future.result()
            if isinstance(result, pd.DataFrame):
                self._reply(200, _frame_to_arrow(result), ARROW)
            else:
                self._reply_json(200, {"result": _encode(result)})
        except (ComfynbError, TypeError, ValueError, LookupError) as exc:
            self._reply_json(400, {"error": _encode_error(exc)})
        except Exception as exc:
            logger.exception("store.%s() failed in the endpoint", name)
            self._reply_json(500, {"error": _encode_error(exc)})


class Endpoint:
    """Serve a store on 127.0.0.1 to other processes, and name it in ``<db>.worker.json``.

    Example::

        >>> with comfynb.Store.open("lab.duckdb") as store, serve(store) as endpoint:
        ...     endpoint.url
        'http://127.0.0.1:40123'

    Args:
        store: the open store this process owns.
        servers: the worker's server URLs as given (``cancel`` talks to them).
        client_options: ``comfynb.Client`` options for the servers (``cancel`` uses them).
        threads: how many store calls run at once (each such thread keeps a DuckDB cursor).
    """

    def __init__(
        self,
        store: Store,
        *,
        servers: Sequence[str] = (),
        client_options: ClientOptions | None = None,
        threads: int = 8,
    ) -> None:
        from ..client.base import split_userinfo

        if store.path == ":memory:":
            raise InvalidInput("an in-memory store cannot be served; open a file")
        self.store = store
        self.file = endpoint_file(store.path)
        self._token = secrets.token_urlsafe(32)
        given = {split_userinfo(url)[0]: url for url in servers}
        self._calls = _calls(store, given, dict(client_options or {}))
        self._server = _Server(("127.0.0.1", 0), self, threads)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Endpoint {self.store.path} at {self.url}>"  # never the token

    def hello(self) -> dict[str, Any]:
        """What a notebook checks first: which process, which file, where the images go."""
        return {
            "pid": os.getpid(),
            "db": str(Path(self.store.path).resolve()),
            "output_dir": str(self.store.output_dir),
        }

    def gone(self, reason: str) -> dict[str, Any]:
        """The ``WorkerGone`` error a notebook gets from a call this endpoint did not run."""
        return _encode_error(
            WorkerGone(self.store.path, pid=os.getpid(), url=self.url, reason=reason)
        )

    def start(self) -> Endpoint:
        """Answer calls on a daemon thread, then write the endpoint file (replacing a stale one)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="comfynb-endpoint",
            daemon=True,
        )
        self._thread.start()
        info = {"pid": os.getpid(), "url": self.url, "token": self._token, "db": self.hello()["db"]}
        try:
            _write_private(self.file, json.dumps(info))
        except BaseException:  # e.g. a read-only folder: serve nothing nobody can find
            self.close()
            raise
        logger.info("serving %s to notebooks at %s (%s)", self.store.path, self.url, self.file)
        return self

    def close(self) -> None:
        """Remove the endpoint file (if still ours), stop answering, end open connections."""
        info = find_endpoint(self.store.path)
        if info is not None and info.get("token") == self._token:
            self.file.unlink(missing_ok=True)
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    store: Store,
    *,
    servers: Sequence[str] = (),
    client_options: ClientOptions | None = None,
) -> Endpoint:
    """Start serving ``store`` to notebooks; close the returned endpoint to stop.

    Example::

        >>> with serve(store) as endpoint:
        ...     worker.run(until_idle=False, stop=stop)
    """
    return Endpoint(store, servers=servers, client_options=client_options).start()


# --------------------------------------------------------------------------- the notebook's side


def connect(
    db_path: str | os.PathLike[str],
    info: Mapping[str, Any],
    output_dir: str | os.PathLike[str] | None = None,
) -> RemoteStore:
    """A RemoteStore on the endpoint ``info`` (from :func:`find_endpoint`), checked to answer.

    Raises:
        WorkerGone: the endpoint does not answer.
        InvalidInput: ``output_dir`` is not the folder the worker writes images to.
    """
    store = RemoteStore(os.fspath(db_path), info)
    try:
        if output_dir is not None and Path(output_dir).resolve() != store.output_dir:
            raise InvalidInput(
                f"the comfynb worker (PID {store.pid}) serving {store.path} writes images to "
                f"{store.output_dir}; open it without output_dir, or start the worker with "
                f"--output-dir {output_dir}"
            )
    except BaseException:
        store.close()
        raise
    return store


class _NotSent(Exception):
    """The endpoint refused the connection or the token: the call surely was not run."""


class RemoteStore(ServedStore):
    """The store of a running ``comfynb worker``, reached through its local endpoint.

    ``comfynb.open(path)`` returns one when a worker process owns the file. It has the
    methods a notebook uses (``comfynb.store.base.NotebookStore``), with the same arguments,
    results (DataFrames with the same dtypes, frozen dataclasses) and errors as
    :class:`comfynb.Store`; ``comfynb.enqueue``, ``comfynb.enqueue_many``, ``comfynb.cancel``
    and ``comfynb.wait`` accept it. Calls are answered by the worker's process; ``close()``
    closes this side only. What the worker does itself (claims, ``transaction()``, ...)
    raises ``OwnedByWorker`` here, before anything is sent.

    Example::

        >>> store = comfynb.open("lab.duckdb")
        >>> store.pick(12).picked
        True

    A worker restarted on the same file is followed to its new endpoint (only a call the old
    one refused unseen is sent again, so nothing is done twice).

    Raises (any call):
        WorkerGone: the worker process has exited; open the store again.
    """

    def __init__(self, path: str, info: Mapping[str, Any]) -> None:
        self.path = path
        self.url = ""
        self.pid = 0
        self.output_dir = Path()
        self._http: httpx.Client | None = None
        self._info: dict[str, Any] = {}
        self._attach_lock = threading.Lock()
        self._closed = False
        self._attach(info)

    def _attach(self, info: Mapping[str, Any]) -> None:
        """Reach the endpoint ``info`` names, checked with ``/hello``; then drop the old one."""
        import httpx

        from ..client.base import tls_context

        http = httpx.Client(
            base_url=str(info["url"]),
            headers={"Authorization": f"Bearer {info['token']}"},
            timeout=httpx.Timeout(CALL_TIMEOUT, connect=5.0),
            trust_env=False,  # never through an HTTP_PROXY: the endpoint is on this machine
            verify=tls_context(),  # plain HTTP; a made-once context spares ~16 ms per attach
        )
        try:
            hello = self._exchange(http, "GET", "/hello", "open", None).json()
        except _NotSent as refused:
            http.close()
            raise WorkerGone(
                self.path, pid=int(info["pid"]), url=str(info["url"]), reason=str(refused)
            ) from None
        except BaseException:
            http.close()
            raise
        if Path(hello["db"]) != Path(self.path).resolve():
            http.close()
            raise StoreError(
                f"the endpoint named in {endpoint_file(self.path)} serves {hello['db']}, not "
                f"{Path(self.path).resolve()}; delete that file and open the store again"
            )
        if self._http is not None:
            self._http.close()
        self._http, self._info = http, dict(info)
        self.url, self.pid = str(info["url"]), int(hello["pid"])
        self.output_dir = Path(hello["output_dir"])

    def __repr__(self) -> str:
        return f"<RemoteStore {self.path} via comfynb worker PID {self.pid}>"

    def close(self) -> None:
        """Close this side's connection; the worker and its store keep running."""
        self._closed = True
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- the wire

    def _exchange(
        self, http: httpx.Client, method: str, path: str, what: str, body: Any
    ) -> httpx.Response:
        """One request; ``_NotSent`` when the endpoint surely did nothing (refused, 401)."""
        import httpx

        try:
            response = http.get(path) if method == "GET" else http.post(path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _NotSent(f"{what}: {exc}") from exc
        except RuntimeError as exc:  # httpx refuses before sending: another thread followed
            raise _NotSent(f"{what}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise StoreError(
                f"the comfynb worker (PID {self.pid}) serving {self.path} did not answer "
                f"{what} within {CALL_TIMEOUT:.0f} s; is it stuck? (see its log)"
            ) from exc
        except httpx.TransportError as exc:
            raise WorkerGone(
                self.path,
                pid=self.pid,
                url=self.url,
                reason=f"the connection broke during {what} ({exc}); it may have been done: "
                "look (e.g. store.jobs()) before repeating it",
            ) from exc
        if response.status_code == 401:
            raise _NotSent(f"{what}: the endpoint refused the token")
        if response.status_code != 200:
            error = response.json().get("error", {})
            raise _decode_error(error, what)
        return response

    def _request(self, method: str, path: str, what: str, body: Any = None) -> httpx.Response:
        """Send a call; if the worker was restarted meanwhile, follow it to its new endpoint.

        Only a call the old endpoint surely did not run (connection refused, token refused) is
        sent again, so nothing is ever done twice.
        """
        http, used = self._http, self._info
        if self._closed or http is None:
            raise StoreError(
                f"this RemoteStore is closed; open {self.path} again with comfynb.open(path)"
            )
        try:
            return self._exchange(http, method, path, what, body)
        except _NotSent as refused:
            with self._attach_lock:  # threads refused together follow the restart once
                if self._info is used:
                    info = find_endpoint(self.path)
                    if info is None or info == used:
                        raise WorkerGone(
                            self.path, pid=self.pid, url=self.url, reason=str(refused)
                        ) from None
                    old = self.pid
                    self._attach(info)
                    logger.info(
                        "%s: the worker restarted (PID %d, was %d)", self.path, self.pid, old
                    )
                http = self._http
        assert http is not None
        try:
            return self._exchange(http, method, path, what, body)
        except _NotSent as refused:
            raise WorkerGone(self.path, pid=self.pid, url=self.url, reason=str(refused)) from None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        body = {"args": _encode(list(args)), "kwargs": _encode(kwargs)}
        response = self._request("POST", f"/call/{name}", f"store.{name}()", body)
        if response.headers.get("Content-Type") == ARROW:
            return _arrow_to_frame(response.content)
        return _decode(response.json()["result"])

    # ----------------------------------------------------------------- the Store's methods

    @property
    def schema_version(self) -> int:
        """How many migrations the file has had (see ``Store.schema_version``)."""
        return int(self._call("schema_version"))

    def new_run(
        self, name: str, notes: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Run:
        """Create a run or return the one called ``name`` (see ``Store.new_run``)."""
        run: Run = self._call("new_run", name, notes, metadata)
        return run

    def run(self, id_or_name: int | str) -> Run:
        """The run with this id or name (see ``Store.run``)."""
        run: Run = self._call("run", id_or_name)
        return run

    def new_step(
        self,
        run: Run | int | str,
        kind: str,
        workflow: Mapping[str, Any],
        params_spec: Mapping[str, Any] | None = None,
        parent_candidate: Candidate | int | None = None,
    ) -> Step:
        """Add a step to a run (see ``Store.new_step``)."""
        step: Step = self._call("new_step", run, kind, workflow, params_spec, parent_candidate)
        return step

    def step(self, step_id: int) -> Step:
        """The step with this id (see ``Store.step``)."""
        step: Step = self._call("step", step_id)
        return step

    def add_jobs(
        self,
        workflows_json: Sequence[str],
        *,
        run: Run | int | str,
        step: Step | int | None = None,
        parent: Candidate | int | None = None,
        params_json: Sequence[str | None] | None = None,
        priority: int = 0,
        max_retries: int = 3,
        metadata_json: str | None = None,
    ) -> AddedJobs:
        """Write checked pending jobs in one transaction, in ONE request (see ``Store.add_jobs``)."""
        added: AddedJobs = self._call(
            "add_jobs",
            list(workflows_json),
            run=run,
            step=step,
            parent=parent,
            params_json=None if params_json is None else list(params_json),
            priority=priority,
            max_retries=max_retries,
            metadata_json=metadata_json,
        )
        return added

    def job(self, job_id: int) -> Job:
        """The job with this id, as stored now (see ``Store.job``)."""
        job: Job = self._call("job", job_id)
        return job

    def status_counts(
        self, *, run: Run | int | str | None = None, job_ids: Iterable[int] | None = None
    ) -> dict[str, int]:
        """How many jobs are in each status (see ``Store.status_counts``); ``wait`` polls it."""
        ids = None if job_ids is None else list(job_ids)
        counts: dict[str, int] = self._call("status_counts", run=run, job_ids=ids)
        return counts

    def unsettled_jobs(self) -> list[Job]:
        """Jobs caught between states (see ``Store.unsettled_jobs``)."""
        jobs: list[Job] = self._call("unsettled_jobs")
        return jobs

    def candidate(self, candidate_id: int) -> Candidate:
        """The image candidate with this id (see ``Store.candidate``)."""
        candidate: Candidate = self._call("candidate", candidate_id)
        return candidate

    def image_path(self, candidate: Candidate | int) -> Path:
        """The absolute path of a candidate's image (see ``Store.image_path``)."""
        found = candidate if isinstance(candidate, Candidate) else self.candidate(candidate)
        return self.output_dir / found.path

    def pick(self, candidate: Candidate | int, picked: bool = True) -> Candidate:
        """Mark a candidate as picked, or not (see ``Store.pick``)."""
        result: Candidate = self._call("pick", candidate, picked)
        return result

    def star(self, candidate: Candidate | int, stars: int | None) -> Candidate:
        """Rate a candidate from 0 to 5 stars (see ``Store.star``)."""
        result: Candidate = self._call("star", candidate, stars)
        return result

    def lineage(self, candidate: Candidate | int) -> list[Candidate]:
        """The candidate and its ancestors (see ``Store.lineage``)."""
        chain: list[Candidate] = self._call("lineage", candidate)
        return chain

    def runs(self) -> pd.DataFrame:
        """All runs (see ``Store.runs``)."""
        return self._call("runs")

    def jobs(
        self,
        run: Run | int | str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
    ) -> pd.DataFrame:
        """Jobs, one row each, params as columns (see ``Store.jobs``)."""
        if status is not None and not isinstance(status, str):
            status = list(status)
        return self._call("jobs", run, status)

    def candidates(
        self,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        picked: bool | None = None,
        *,
        job: Job | int | None = None,
    ) -> pd.DataFrame:
        """Image candidates, one row each, params as columns (see ``Store.candidates``)."""
        return self._call("candidates", run, step, picked, job=job)

    def events(self, job: Job | int | None = None) -> pd.DataFrame:
        """Status changes, oldest first (see ``Store.events``)."""
        return self._call("events", job)

    def export(
        self, path: str | os.PathLike[str], what: str = "candidates", **filters: Any
    ) -> Path:
        """Write a table as Parquet or CSV on this side (see ``Store.export``)."""
        reads: dict[str, Callable[..., pd.DataFrame]] = {
            "candidates": self.candidates,
            "jobs": self.jobs,
            "runs": self.runs,
            "events": self.events,
        }
        return write_export(reads, path, what, filters)

    def cancel_on_owner(self, job: Job | int) -> Job:
        """``comfynb.cancel`` run in the worker process, with its client for the job's server."""
        cancelled: Job = self._call("cancel", job)
        return cancelled


if TYPE_CHECKING:

    def _has_the_interface(store: RemoteStore) -> NotebookStore:
        return store  # mypy checks that RemoteStore has every method of NotebookStore


def open_local_or_remote(
    path: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None
) -> Store | RemoteStore:
    """``comfynb.open``: the worker's endpoint if one serves the file, else the file itself.

    The DuckDB lock is the truth about who owns the file: an endpoint that does not answer
    while the file opens locally was stale (its file is removed); one that does not answer
    while the file is locked is reported as ``WorkerGone``.
    """
    from ..store import Store

    info = find_endpoint(path)
    if info is not None:
        try:
            return connect(path, info, output_dir)
        except WorkerGone as gone:
            try:
                store = Store.open(path, output_dir)
            except StoreLocked:
                raise gone from None
            endpoint_file(path).unlink(missing_ok=True)
            return store
    try:
        return Store.open(path, output_dir)
    except StoreLocked:
        # a worker that took the lock a moment ago has written its endpoint file by now
        info = find_endpoint(path)
        if info is None:
            raise
        return connect(path, info, output_dir)
