"""The worker's side: a store served on 127.0.0.1 to notebooks, named in ``<db>.worker.json``.

Example::

    >>> with comfynb.Store.open("lab.duckdb") as store, serve(store) as endpoint:
    ...     endpoint.url
    'http://127.0.0.1:40123'

What it serves, how and why: ``comfynb.service.remote`` (the notebook's side) and README.md,
"A notebook beside a worker process".
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import SHUT_RDWR, SHUT_WR, socket
from typing import TYPE_CHECKING, Any, Final

from ..core.models import Job
from ..errors import ComfynbError, InvalidInput, WorkerError, WorkerGone
from ..worker.running import servers_down
from .wire import ARROW, JSON, decode, encode, encode_error, frame_to_arrow, previews_to_frame

if TYPE_CHECKING:
    from ..client import ClientOptions
    from ..store import Store

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "Endpoint",
    "endpoint_file",
    "find_endpoint",
    "serve",
]

logger = logging.getLogger("comfynb.remote")

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
    # /object_info (1.6 MB for 0.33.0) travels as JSON text: the wire's walk of it took 0.2 s
    table["object_info"] = lambda server=None: json.dumps(store.object_info(server))
    table["save_object_info"] = lambda server, info: store.save_object_info(
        server, json.loads(info) if isinstance(info, str) else info
    )
    table["schema_version"] = lambda: store.schema_version
    # image bytes: as an Arrow binary column (the answer is a frame), never base64 in JSON
    table["previews"] = lambda run=None, after=0: previews_to_frame(store.previews(run, after))
    table["servers_down"] = lambda: servers_down(store)  # the worker's word, for wait()
    table["cancel"] = lambda *args, **kwargs: _cancel_on_worker(
        store, servers, client_options, *args, **kwargs
    )
    return table


def _method(store: Store, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(store, name)(*args, **kwargs)

    return call


#: the largest request body the endpoint reads (a notebook's RemoteStore splits a bigger
#: add_jobs into several requests): 10,000 txt2img jobs of ~740 bytes of JSON each are ~9 MB
MAX_BODY: Final = 64 * 2**20
#: connections served at once; more wait, unaccepted, in the kernel's queue until one ends
MAX_CONNECTIONS: Final = 64
#: seconds a connection may stay silent (idle keep-alive, or a half-sent request) before
#: it is closed; httpx drops an idle connection after 5 s, so a notebook never meets this
IDLE_TIMEOUT: Final = 30.0
#: seconds a refused request's unread body is read and thrown away (not kept), so that the
#: client reads the refusal instead of a reset connection
_LINGER: Final = 2.0
#: the longest error message an answer carries (a message may quote an argument)
_MESSAGE_CHARS: Final = 2000


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; store calls on a pool.

    Connections may idle (a notebook that re-ran ``comfynb.open`` keeps the old
    RemoteStore's keep-alive connection): each has its own thread, so none waits for
    another, and a connection silent for ``idle_timeout`` seconds is closed. With
    ``max_connections`` open, a new connection waits in the kernel's listen queue while the
    one idle the longest is closed to make room for it (a connection reading a request or
    waiting for its call is never closed): the threads stay bounded whatever connects, and
    idle connections, however many, never keep a call waiting. The
    store gives each thread that calls it a DuckDB cursor for the store's life, so the calls
    themselves go to ``calls``, a fixed pool: the number of cursors stays bounded.
    """

    daemon_threads = True
    block_on_close = False  # close_connections ends them; the store calls are waited for
    request_queue_size = 128  # connections beyond max_connections wait here, in the kernel

    def __init__(
        self,
        address: tuple[str, int],
        endpoint: Endpoint,
        threads: int,
        *,
        max_connections: int,
        idle_timeout: float,
        max_body: int,
    ) -> None:
        super().__init__(address, _Handler)
        self.endpoint = endpoint
        self.calls = ThreadPoolExecutor(threads, thread_name_prefix="comfynb-endpoint")
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket] = set()
        self._idle: dict[socket, float] = {}  # connections waiting for a request, since when
        self._open_guard = threading.Lock()

    def set_idle(self, request: socket, idle: bool) -> None:
        """Note that a connection waits for its next request (``idle``) or is reading one."""
        with self._open_guard:
            if not idle:
                self._idle.pop(request, None)
            elif request in self._open:
                self._idle[request] = time.monotonic()

    def get_request(self) -> tuple[socket, Any]:
        # a free slot first. Without one, the connection idle the longest is closed to make
        # room, and meanwhile the new one waits in the listen queue (the short wait keeps
        # serve_forever able to notice shutdown)
        if not self._slots.acquire(blocking=False):
            with self._open_guard:
                if self._idle:
                    oldest = min(self._idle, key=self._idle.__getitem__)
                    del self._idle[oldest]
                    with contextlib.suppress(OSError):
                        oldest.shutdown(SHUT_RDWR)  # its thread ends and frees its slot
            if not self._slots.acquire(timeout=0.05):
                raise OSError("every connection slot is taken")  # serve_forever tries again
        try:
            return super().get_request()
        except BaseException:
            self._slots.release()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_guard:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        # called once for each accepted connection, whichever way it ends
        with self._open_guard:
            self._open.discard(request)
            self._idle.pop(request, None)
        try:
            super().shutdown_request(request)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """End every open connection, then wait for the store calls under way."""
        with self._open_guard:
            for request in self._open:
                with contextlib.suppress(OSError):
                    request.shutdown(SHUT_RDWR)
        self.calls.shutdown(wait=True)


def size_text(size: int) -> str:
    """A byte count as people read it: ``size_text(64 * 2**20) == '64 MiB'``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message}


def _bounded(error: dict[str, Any]) -> dict[str, Any]:
    """An error answer of bounded size: a message may quote a (huge) argument; never all."""
    message = str(error.get("message", ""))
    if len(message) > _MESSAGE_CHARS:
        error = {**error, "message": message[:_MESSAGE_CHARS] + "... (cut)"}
    attrs = error.get("attrs")
    if attrs:
        # an attribute too big to send (e.g. the key a RecordNotFound was asked) comes as None
        kept = {k: v if len(json.dumps(v)) <= _MESSAGE_CHARS else None for k, v in attrs.items()}
        error = {**error, "attrs": kept}
    return error


class _Handler(BaseHTTPRequestHandler):
    """One connection: its requests, one after another (keep-alive).

    A request is checked in this order, each refusal answered at once and the connection
    closed, before anything more of it is read: the token (401), a known call (404), a
    ``Content-Length`` (411) within ``max_body`` (413). Only then is the body read. Error
    answers never quote the request.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: a notebook's calls reuse one connection
    # headers and body are two writes: with Nagle on, the body waits for the client's delayed
    # ACK, ~40 ms per call
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # every read and write on it

    def log_message(self, format: str, *args: Any) -> None:
        # the request line only (never headers, so never the token)
        logger.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        self.server.set_idle(self.connection, True)  # until its request line comes
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.server.set_idle(self.connection, False)
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a malformed request line or headers): JSON, and without
        # the HTML page that quotes the request
        del message, explain
        self.request_version = self.protocol_version  # answer with a status line, whatever came
        self._refuse(code, _error("BadRequest", f"the endpoint cannot read this request ({code})"))

    def _reply(self, status: int, body: bytes, content_type: str = JSON) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _reply_json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value, separators=(",", ":")).encode())

    def _refuse(self, status: int, error: dict[str, Any]) -> None:
        """Answer ``error`` and close the connection; the unread rest of the request is dropped.

        The rest is read for up to ``_LINGER`` seconds and thrown away (a 64 KiB buffer, never
        kept): closing a socket with unread bytes resets it, and the client would lose the
        answer. A client still sending after that meets a closed connection.
        """
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._reply_json(status, {"error": error})
            self.wfile.flush()
            self.connection.shutdown(SHUT_WR)
            self.connection.settimeout(0.25)
            buffer = bytearray(65536)
            ends = time.monotonic() + _LINGER
            while time.monotonic() < ends and self.connection.recv_into(buffer):
                pass

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.endpoint._token}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._refuse(401, _error("Unauthorized", "wrong token"))
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path != "/hello":
            self._refuse(404, _error("NotFound", "the endpoint serves GET /hello only"))
            return
        self._reply_json(200, self.server.endpoint.hello())

    def do_POST(self) -> None:
        if not self._authorized():  # before reading any of the body
            return
        name = self.path.removeprefix("/call/")
        call = self.server.endpoint._calls.get(name)
        if not self.path.startswith("/call/") or call is None:
            shown = name if len(name) <= 64 else name[:64] + "..."
            message = f"the worker serves no call {shown!r}"
            self._refuse(404, _error("StoreError", message))
            return
        body = self._read_body(name)
        if body is not None:
            self._answer(name, call, body)

    def _read_body(self, name: str) -> bytes | None:
        """The request's body, once its announced size is known and allowed; else refused."""
        limit = self.server.max_body
        if "Transfer-Encoding" in self.headers:
            self._refuse(411, _error("InvalidInput", "send a Content-Length, not chunks"))
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            self._refuse(411, _error("InvalidInput", "a call needs a Content-Length header"))
            return None
        if not text.isdigit():
            self._refuse(400, _error("InvalidInput", "the Content-Length is not a number"))
            return None
        if int(text) > limit:
            message = (
                f"the arguments of store.{name}() are {size_text(int(text))}; the comfynb "
                f"worker takes at most {size_text(limit)} per call: pass less per call"
            )
            self._refuse(413, _error("InvalidInput", message))
            return None
        body = self.rfile.read(int(text))
        if len(body) < int(text):  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _answer(self, name: str, call: Callable[..., Any], body: bytes) -> None:
        import pandas as pd

        try:
            request = json.loads(body or b"{}")
            args = decode(request.get("args", []))
            kwargs = decode(request.get("kwargs", {}))
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("args must be a list, kwargs an object")
        except Exception as exc:  # nothing of the request in the answer
            message = (
                f"the request for store.{name}() is not a comfynb call "
                f"({type(exc).__name__}); use comfynb.open(path) to reach the worker"
            )
            self._reply_json(400, {"error": _error("InvalidInput", message)})
            return
        try:
            try:
                future = self.server.calls.submit(call, *args, **kwargs)
            except RuntimeError:  # the endpoint is closing: nothing was run
                self._reply_json(503, {"error": self.server.endpoint.gone("it is stopping")})
                return
            result = future.result()
            if isinstance(result, pd.DataFrame):
                self._reply(200, frame_to_arrow(result), ARROW)
            else:
                self._reply_json(200, {"result": encode(result)})
        except (ComfynbError, TypeError, ValueError, LookupError) as exc:
            self._reply_json(400, {"error": _bounded(encode_error(exc))})
        except Exception as exc:
            logger.exception("store.%s() failed in the endpoint", name)
            self._reply_json(500, {"error": _bounded(encode_error(exc))})


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
        max_connections: connections served at once; more wait to be accepted.
        idle_timeout: seconds a silent connection is kept open.
        max_body: the largest request body read, in bytes (a bigger one is refused, 413).
    """

    def __init__(
        self,
        store: Store,
        *,
        servers: Sequence[str] = (),
        client_options: ClientOptions | None = None,
        threads: int = 8,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        from ..client.base import split_userinfo

        if store.path == ":memory:":
            raise InvalidInput("an in-memory store cannot be served; open a file")
        self.store = store
        self.file = endpoint_file(store.path)
        self._token = secrets.token_urlsafe(32)
        given = {split_userinfo(url)[0]: url for url in servers}
        self._calls = _calls(store, given, dict(client_options or {}))
        self._server = _Server(
            ("127.0.0.1", 0),
            self,
            threads,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            max_body=max_body,
        )
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
            "max_body": self._server.max_body,
        }

    def gone(self, reason: str) -> dict[str, Any]:
        """The ``WorkerGone`` error a notebook gets from a call this endpoint did not run."""
        return encode_error(
            WorkerGone(self.store.path, pid=os.getpid(), url=self.url, reason=reason)
        )

    def start(self) -> Endpoint:
        """Answer calls on a daemon thread, then write the endpoint file (replacing a stale one).

        Raises:
            WorkerError: the endpoint file cannot be written (a read-only folder, a full
                disk); nothing is served.
        """
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
        except OSError as exc:  # e.g. a read-only folder, a full disk
            self.close()  # serve nothing nobody can find
            raise WorkerError(
                f"cannot write {self.file}, the file that tells notebooks where this worker "
                f"serves {self.store.path} ({exc.strerror or exc}); the worker writes it beside "
                "the database: make that folder writable (or free some space), or remove what "
                "is in the way, and start the worker again"
            ) from exc
        except BaseException:
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
