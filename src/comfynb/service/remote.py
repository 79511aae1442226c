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
    >>> job = comfynb.enqueue(store, workflow, run="portraits", params={"KSampler.seed": 42})
    >>> store.jobs(run="portraits")[["id", "status"]]
       id     status
    0   1  completed

How (see README.md, "A notebook beside a worker process"; the worker's half is in
``comfynb.service.endpoint``, the values on the wire in ``comfynb.service.wire``):

* The endpoint listens on 127.0.0.1 on a free port and answers only requests that carry its
  random token (``Authorization: Bearer``). Its address and token are in ``<db>.worker.json``
  beside the database (mode 0600), written once the endpoint answers and removed when the
  worker exits cleanly. A file whose process is dead is ignored, and replaced by the next
  worker. The token is never logged and never shown in a repr.
* Standard library ``http.server`` (a thread per connection, at most 64; a request is
  refused from its headers: token, ``Content-Length`` up to 64 MiB) with the store's calls on a
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

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from ..core.models import Candidate, Job, NewStep, Preview, Run, Step
from ..core.status import JobStatus
from ..errors import InvalidInput, StoreError, StoreLocked, WorkerGone
from ..store.base import AddedJobs, ServedStore
from ..store.export import write_export
from .endpoint import MAX_BODY, Endpoint, endpoint_file, find_endpoint, serve, size_text
from .wire import ARROW, JSON, arrow_to_frame, decode, decode_error, encode, frame_to_previews

if TYPE_CHECKING:
    import httpx
    import pandas as pd

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

#: how long a notebook's call may take before it is reported as unanswered
CALL_TIMEOUT: Final = 120.0

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


def _to_json(value: Any) -> bytes:
    """JSON that carries any argument as it is (NaN, a lone surrogate as an escape), so the
    store behind the endpoint judges it exactly as a local store would: one typed error for
    a bad value, whichever way the store is reached."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode()


def _encode_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """A call's request body, as sent: its arguments as compact JSON."""
    return _to_json({"args": encode(list(args)), "kwargs": encode(kwargs)})


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
        self.max_body = MAX_BODY
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
        self.max_body = int(hello.get("max_body", MAX_BODY))

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
            if method == "GET":
                response = http.get(path)
            else:
                response = http.post(path, content=body, headers={"Content-Type": JSON})
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
            raise decode_error(error, what)
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

    def _body(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        """The request of one call, as sent; refused here when the worker would refuse it."""
        data = _encode_call(args, kwargs)
        if len(data) > self.max_body:
            raise InvalidInput(
                f"the arguments of store.{name}() are {size_text(len(data))}; the comfynb "
                f"worker (PID {self.pid}) takes at most {size_text(self.max_body)} per call: "
                "pass less per call. Nothing was sent"
            )
        return data

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        body = self._body(name, args, kwargs)
        return self._send(name, body)

    def _send(self, name: str, body: bytes) -> Any:
        response = self._request("POST", f"/call/{name}", f"store.{name}()", body)
        if response.headers.get("Content-Type") == ARROW:
            return arrow_to_frame(response.content)
        return decode(response.json()["result"])

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
        step: Step | NewStep | int | None = None,
        parent: Candidate | int | None = None,
        params_json: Sequence[str | None] | None = None,
        priority: int = 0,
        max_retries: int = 3,
        metadata_json: str | None = None,
    ) -> AddedJobs:
        """Write checked pending jobs in one transaction, in ONE request (see ``Store.add_jobs``).

        A request holds at most ``max_body`` bytes (64 MiB: ~70,000 txt2img jobs of ~740
        bytes of JSON). Beyond that the jobs go in consecutive requests, each under it and
        written in its own transaction, ids ascending in the order given; if one of them
        fails, the error's note says which jobs the ones before it wrote.
        """
        workflows = list(workflows_json)
        params = None if params_json is None else list(params_json)
        common: dict[str, Any] = {
            "run": run,
            "step": step,
            "parent": parent,
            "priority": priority,
            "max_retries": max_retries,
            "metadata_json": metadata_json,
        }
        whole = _encode_call([workflows], {**common, "params_json": params})
        if len(whole) <= self.max_body:
            added: AddedJobs = self._send("add_jobs", whole)
            return added
        # the request without its lists, then each job's share of it
        room = self.max_body - len(_encode_call([[]], {**common, "params_json": []}))
        sizes = [
            len(_to_json(w)) + (0 if params is None else len(_to_json(params[i]))) + 2
            for i, w in enumerate(workflows)
        ]
        biggest = max(range(len(sizes)), key=sizes.__getitem__)
        if sizes[biggest] > room:
            raise InvalidInput(
                f"job {biggest} alone is {size_text(sizes[biggest])} of JSON; the comfynb worker "
                f"(PID {self.pid}) takes at most {size_text(self.max_body)} per call. Nothing "
                "was sent"
            )
        parts: list[AddedJobs] = []
        start = 0
        while start < len(workflows):
            end, used = start, 0
            while end < len(workflows) and used + sizes[end] <= room:
                used += sizes[end]
                end += 1
            chunk = {**common, "params_json": None if params is None else params[start:end]}
            try:
                body = self._body("add_jobs", [workflows[start:end]], chunk)
                parts.append(self._send("add_jobs", body))
                if isinstance(step, NewStep):  # made by the first request: the rest join it
                    common["step"] = parts[0].step_id
            except BaseException as exc:
                if parts:
                    ids = [i for part in parts for i in part.ids]
                    exc.add_note(
                        f"the first {len(ids)} of these {len(workflows)} jobs were written "
                        f"before this failure (ids {ids[0]}..{ids[-1]}, pending); the rest "
                        "were not"
                    )
                raise
            start = end
        first = parts[0]
        return AddedJobs(
            run_id=first.run_id,
            step_id=first.step_id,
            parent_candidate_id=first.parent_candidate_id,
            ids=tuple(i for part in parts for i in part.ids),
            created_at=tuple(t for part in parts for t in part.created_at),
        )

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

    def lineage(self, candidate: Candidate | int) -> pd.DataFrame:
        """A candidate's ancestors, itself and its descendants, with depth (see ``Store.lineage``)."""
        frame: pd.DataFrame = self._call("lineage", candidate)
        return frame

    def runs(self) -> pd.DataFrame:
        """All runs (see ``Store.runs``)."""
        return self._call("runs")

    def jobs(
        self,
        run: Run | int | str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        *,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Jobs, one row each, params as columns; with ``changed_since``, only the rows
        changed since (see ``Store.jobs``): one small request a look for ``JobTable``."""
        if status is not None and not isinstance(status, str):
            status = list(status)
        if changed_since is None:  # as before: an older worker's endpoint takes it too
            return self._call("jobs", run, status)
        return self._call("jobs", run, status, changed_since=changed_since)

    def candidates(
        self,
        run: Run | int | str | None = None,
        step: Step | int | None = None,
        picked: bool | None = None,
        *,
        job: Job | int | None = None,
        changed_since: int | None = None,
    ) -> pd.DataFrame:
        """Image candidates, one row each, params as columns; ``changed_since`` as in
        :meth:`jobs` (see ``Store.candidates``)."""
        if changed_since is None:
            return self._call("candidates", run, step, picked, job=job)
        return self._call("candidates", run, step, picked, job=job, changed_since=changed_since)

    def events(self, job: Job | int | None = None) -> pd.DataFrame:
        """Status changes, oldest first (see ``Store.events``)."""
        return self._call("events", job)

    def previews(self, run: Run | int | str | None = None, after: int = 0) -> list[Preview]:
        """The latest sampler preview of each running job newer than ``after`` (see
        ``Store.previews``); the image bytes travel as Arrow, not JSON.

        Example::

            >>> [p.job_id for p in remote.previews(run="portraits")]
            [12]
        """
        return frame_to_previews(self._call("previews", run, after))

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

    def object_info(self, server: str | None = None) -> dict[str, Any]:
        """The store's ``/object_info`` copy of a server, or the newest (see
        ``Store.object_info``); ``Workflow.load(path, object_info=store)`` uses it."""
        info: dict[str, Any] = json.loads(self._call("object_info", server))  # sent as text
        return info

    def save_object_info(self, server: str, info: Mapping[str, Any]) -> bool:
        """Keep ``info`` as the server's ``/object_info`` copy (see ``Store.save_object_info``)."""
        sent: Any = info
        if isinstance(info, Mapping):  # as JSON text (fast); anything else for the store to judge
            with contextlib.suppress(TypeError, ValueError):
                sent = json.dumps(info, separators=(",", ":"))
        return bool(self._call("save_object_info", server, sent))

    def cancel_on_owner(self, job: Job | int) -> Job:
        """``comfynb.cancel`` run in the worker process, with its client for the job's server."""
        cancelled: Job = self._call("cancel", job)
        return cancelled

    def servers_down_on_owner(self) -> list[str]:
        """What the worker process says of its servers that are down (``comfynb.wait``)."""
        return [str(trouble) for trouble in self._call("servers_down")]


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
