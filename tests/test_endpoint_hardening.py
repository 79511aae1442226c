"""The worker's endpoint against misbehaving clients, over real loopback sockets.

Each test serves a real store with ``comfynb.service.endpoint.Endpoint`` in this process and
talks to it with raw sockets (what a stray or hostile local process would send) or with a
real ``RemoteStore`` (what a notebook sends). ``bench/endpoint_rss.py`` measures the same
against a ``comfynb worker`` process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import trivial_prompt
from sim_helpers import wait_for

import comfynb
from comfynb import InvalidInput, WorkerError, WorkerGone
from comfynb.service.endpoint import MAX_BODY, Endpoint, serve
from comfynb.service.remote import RemoteStore, endpoint_file
from comfynb.store import Store

DOWN = "http://127.0.0.1:9"  # nothing listens there: a worker that waits for its server


def served(store: Store, **options: float) -> Endpoint:
    return Endpoint(store, **options).start()  # type: ignore[arg-type]


def address(endpoint: Endpoint) -> tuple[str, int]:
    host, _, port = endpoint.url.removeprefix("http://").partition(":")
    return host, int(port)


def token(endpoint: Endpoint) -> str:
    return str(json.loads(endpoint.file.read_text())["token"])


def exchange(endpoint: Endpoint, head: str, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send a raw request, then read the answer until the endpoint closes the connection."""
    with socket.create_connection(address(endpoint), timeout=timeout) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, object]:
    error: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    return error


@pytest.fixture
def endpoint(store: Store) -> Iterator[Endpoint]:
    with serve(store) as running:  # as a worker serves it
        yield running


# --------------------------------------------------------------------------- before the body


def test_a_request_without_the_token_is_refused_before_its_body_is_read(
    endpoint: Endpoint,
) -> None:
    # 1 GiB announced, none of it sent: the answer comes from the headers alone
    started = time.monotonic()
    head = "POST /call/runs HTTP/1.1\nHost: x\nContent-Length: 1073741824\n"
    answer = exchange(endpoint, head)  # read until the endpoint closes: it does
    assert status_of(answer) == 401
    assert b"Connection: close" in answer
    assert time.monotonic() - started < 3


def test_an_unauthorized_body_is_thrown_away_and_the_refusal_still_arrives(
    endpoint: Endpoint,
) -> None:
    body = b"x" * (4 * 2**20)  # more than the socket buffers hold
    head = f"POST /call/runs HTTP/1.1\nHost: x\nContent-Length: {len(body)}\n"
    assert status_of(exchange(endpoint, head, body)) == 401


def test_a_body_needs_a_length_within_the_limit(endpoint: Endpoint) -> None:
    auth = f"Authorization: Bearer {token(endpoint)}\nHost: x\n"
    none = exchange(endpoint, f"POST /call/runs HTTP/1.1\n{auth}")
    assert status_of(none) == 411
    assert "Content-Length" in str(body_of(none)["message"])
    chunked = exchange(endpoint, f"POST /call/runs HTTP/1.1\n{auth}Transfer-Encoding: chunked\n")
    assert status_of(chunked) == 411
    garbage = exchange(endpoint, f"POST /call/runs HTTP/1.1\n{auth}Content-Length: -5\n")
    assert status_of(garbage) == 400
    big = exchange(endpoint, f"POST /call/runs HTTP/1.1\n{auth}Content-Length: {2**40}\n")
    assert status_of(big) == 413
    error = body_of(big)
    assert error["type"] == "InvalidInput"
    assert str(error["message"]) == (
        "the arguments of store.runs() are 1024 GiB; the comfynb worker takes at most "
        "64 MiB per call: pass less per call"
    )
    # a body within the limit is read and answered, on a connection kept open
    fine = b'{"args":[],"kwargs":{}}'
    with socket.create_connection(address(endpoint), timeout=5) as conn:
        request = f"POST /call/runs HTTP/1.1\r\n{auth.replace(chr(10), chr(13) + chr(10))}"
        request += f"Content-Length: {len(fine)}\r\n\r\n"
        conn.sendall(request.encode() + fine)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")


# --------------------------------------------------------------------------- connections


def test_a_silent_connection_is_closed_after_the_idle_timeout(store: Store) -> None:
    with served(store, idle_timeout=0.3) as running:
        with socket.create_connection(address(running), timeout=5) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""  # closed by the endpoint, not by this timeout
            assert time.monotonic() - started < 3
        with socket.create_connection(address(running), timeout=5) as half:
            half.sendall(b"POST /call/runs HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert half.recv(1) == b""


def endpoint_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_beyond_the_connection_limit_the_longest_idle_make_room(store: Store) -> None:
    limit = 8  # idle connections are closed to make room, not after their 30 s timeout
    with served(store, max_connections=limit) as running, ExitStack() as idle:
        for _ in range(40):  # idle connections: more than the limit
            idle.enter_context(socket.create_connection(address(running), timeout=5))
        wait_for(lambda: endpoint_threads() == limit, timeout=3)
        most = 0
        with comfynb.open(store.path) as remote:  # behind the idle ones in the listen queue
            assert isinstance(remote, RemoteStore)
            done = threading.Event()

            def watch() -> None:
                nonlocal most
                while not done.is_set():
                    most = max(most, endpoint_threads())
                    time.sleep(0.005)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                started = time.monotonic()
                assert remote.new_run("after the crowd").name == "after the crowd"
                assert time.monotonic() - started < 2
            finally:
                done.set()
                watcher.join()
        assert most <= limit


# --------------------------------------------------------------------------- error answers


def test_error_answers_never_quote_the_request(endpoint: Endpoint) -> None:
    auth = f"Authorization: Bearer {token(endpoint)}\nHost: x\n"
    marker = "QUOTED-" * 50
    for body in (
        json.dumps({"args": [{"__type__": marker}], "kwargs": {}}),  # an unknown tag
        marker,  # not JSON
        json.dumps([marker]),  # JSON, not a call
    ):
        data = body.encode()
        head = f"POST /call/runs HTTP/1.1\n{auth}Content-Length: {len(data)}\nConnection: close\n"
        answer = exchange(endpoint, head, data)
        assert status_of(answer) == 400, answer[:200]
        assert b"QUOTED" not in answer
        assert body_of(answer)["type"] == "InvalidInput"
    # a malformed request line: a JSON refusal, not http.server's page quoting it
    answer = exchange(endpoint, f"GET /{marker} HTTP/1.1 extra\n")
    assert status_of(answer) == 400 and b"QUOTED" not in answer
    # an argument quoted by the store's own error is cut to a bounded length
    huge = "y" * 20_000
    big = json.dumps({"args": [huge], "kwargs": {}}).encode()
    head = f"POST /call/run HTTP/1.1\n{auth}Content-Length: {len(big)}\nConnection: close\n"
    answer = exchange(endpoint, head, big)
    assert status_of(answer) == 400 and body_of(answer)["type"] == "RunNotFound"
    assert len(answer) < 5000


# --------------------------------------------------------------------------- the notebook's side


def test_a_big_enqueue_many_goes_in_requests_under_the_limit(store: Store) -> None:
    with served(store, max_body=64 * 1024), comfynb.open(store.path) as remote:
        assert isinstance(remote, RemoteStore) and remote.max_body == 64 * 1024
        workflows = [trivial_prompt(f"p{i}-" + "w" * 200) for i in range(400)]  # ~150 KB
        params = [{"1.color": i} for i in range(400)]
        remote.new_run("big")
        jobs = comfynb.enqueue_many(remote, workflows, run="big", params=params)
        assert [job.params for job in jobs] == params
        ids = [job.id for job in jobs]
        assert ids == sorted(ids) and len(set(ids)) == 400
        frame = store.jobs(run="big")
        assert frame["id"].tolist() == ids and frame["1.color"].tolist() == list(range(400))
        # one job bigger than the limit: refused before anything is sent, naming it
        big = trivial_prompt("z")
        big["1"]["inputs"]["text"] = "z" * 75_000  # a long prompt text
        with pytest.raises(InvalidInput, match=r"job 3 alone is 7\d\.\d KiB .* Nothing was sent"):
            comfynb.enqueue_many(remote, [*workflows[:3], big, *workflows], run="big")
        assert len(store.jobs(run="big")) == 400
        # one argument bigger than the limit: refused here, before sending, and said why
        with pytest.raises(InvalidInput, match=r"are 68.\d KiB; .* at most 64 KiB per call"):
            remote.new_run("huge", notes="n" * 70_000)
        assert "huge" not in store.runs()["name"].tolist()
        # a client that thinks the limit higher: the worker's 413 arrives as the same error
        remote.max_body = 2**20
        with pytest.raises(InvalidInput, match=r"are 68.\d KiB; .* at most 64 KiB per call"):
            remote.new_run("huge", notes="n" * 70_000)
        assert remote.new_run("small").name == "small"  # on a new connection


def test_the_worker_says_how_much_it_takes(endpoint: Endpoint) -> None:
    with comfynb.open(endpoint.store.path) as remote:
        assert isinstance(remote, RemoteStore)
        assert remote.max_body == MAX_BODY == 64 * 2**20


# --------------------------------------------------------------------------- the endpoint file


def test_a_worker_that_cannot_write_its_endpoint_file_says_so_and_exits_1(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lab.duckdb"
    endpoint_file(db).mkdir()  # in the way (as root, a read-only folder would not stop it)
    finished = subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db), "--server", DOWN],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr
    assert f"cannot write {endpoint_file(db)}" in finished.stderr
    assert "Is a directory" in finished.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    with Store.open(db) as store:  # the worker let go of the file
        assert store.runs().empty


def test_serve_raises_a_typed_error_when_the_endpoint_file_cannot_be_written(
    store: Store,
) -> None:
    endpoint_file(store.path).mkdir()
    with pytest.raises(WorkerError, match=r"cannot write .*worker\.json"):
        serve(store)
    assert threading.active_count() < 50 and not [
        t for t in threading.enumerate() if t.name == "comfynb-endpoint"
    ]


def test_a_big_call_with_a_stale_token_hears_the_refusal(endpoint: Endpoint) -> None:
    # the refusal comes from the headers; the body still being sent is read and thrown away,
    # so the client reads the 401 (and follows a restarted worker) instead of a reset
    with comfynb.open(endpoint.store.path) as remote:
        assert isinstance(remote, RemoteStore) and remote._http is not None
        remote._http.headers["Authorization"] = "Bearer stale"
        with pytest.raises(WorkerGone, match="refused the token"):
            remote.new_run("big", notes="n" * (8 * 2**20))
    assert endpoint.store.runs().empty
