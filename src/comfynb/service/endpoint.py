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
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import SHUT_RDWR, socket
from typing import TYPE_CHECKING, Any

from ..core.models import Job
from ..errors import ComfynbError, InvalidInput, WorkerGone
from ..worker.running import servers_down
from .wire import ARROW, JSON, decode, encode, encode_error, frame_to_arrow

if TYPE_CHECKING:
    from ..client import ClientOptions
    from ..store import Store

__all__ = ["Endpoint", "endpoint_file", "find_endpoint", "serve"]

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
    table["schema_version"] = lambda: store.schema_version
    table["servers_down"] = lambda: servers_down(store)  # the worker's word, for wait()
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
            args, kwargs = decode(request.get("args", [])), decode(request.get("kwargs", {}))
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
            self._reply_json(400, {"error": encode_error(exc)})
        except Exception as exc:
            logger.exception("store.%s() failed in the endpoint", name)
            self._reply_json(500, {"error": encode_error(exc)})


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
        return encode_error(
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
