"""The settings a user gives through the environment (COMFYUI_URL, COMFYUI_TOKEN, COMFYNB_DB,
COMFYNB_OUTPUT), as ``Client()``, ``Worker(store)``, ``comfynb.open()`` and ``comfynb worker``
see them."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import trivial_prompt

import comfynb
from comfynb.core.settings import settings
from comfynb.errors import InvalidInput
from comfynb.simulator import Simulator

ENV = ("COMFYUI_URL", "COMFYUI_TOKEN", "COMFYNB_DB", "COMFYNB_OUTPUT")


def test_several_servers_one_spelling_each_and_nothing_secret_in_the_repr() -> None:
    env = settings(
        {
            "COMFYUI_URL": " http://gpu1:8188, https://me:pw@GPU2.lan/  http://localhost:8188",
            "COMFYUI_TOKEN": "s3cret",
            "COMFYNB_DB": "~/lab.duckdb",
        }
    )
    assert len(env.servers) == 3
    assert env.servers[1] == "https://me:pw@GPU2.lan/"  # as written: the client's basic auth
    shown = repr(env)
    assert "'https://gpu2.lan'" in shown and "'http://127.0.0.1:8188'" in shown
    assert "s3cret" not in shown and "pw" not in shown
    assert env.db == str(Path("~/lab.duckdb").expanduser())
    assert env.token_for("http://127.0.0.1:8188/") == "s3cret"
    assert env.token_for("http://elsewhere:8188") is None  # never to a server named otherwise


def test_a_bad_url_names_the_variable_and_what_to_write() -> None:
    with pytest.raises(InvalidInput, match=r"COMFYUI_URL.*'http://localhost:8188'"):
        settings({"COMFYUI_URL": "localhost:8188"})


class _Headers(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"system": {"comfyui_version": "0.33.0"}, "devices": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def header_server() -> Iterator[str]:
    _Headers.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Headers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_goes_to_comfyui_url_with_the_token_and_other_servers_get_none(
    monkeypatch: pytest.MonkeyPatch, header_server: str
) -> None:
    monkeypatch.setenv("COMFYUI_URL", header_server)
    monkeypatch.setenv("COMFYUI_TOKEN", "s3cret")
    with comfynb.Client() as client:
        assert client.url == header_server
        client.system_stats()
        assert "s3cret" not in repr(client)
    assert _Headers.seen == ["Bearer s3cret"]
    monkeypatch.setenv("COMFYUI_URL", "http://127.0.0.1:9")  # another server is named now
    with comfynb.Client(header_server) as client:
        client.system_stats()
    assert _Headers.seen[-1] is None


def test_open_and_worker_take_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Simulator
) -> None:
    monkeypatch.setenv("COMFYNB_DB", str(tmp_path / "lab.duckdb"))
    monkeypatch.setenv("COMFYNB_OUTPUT", str(tmp_path / "images"))
    monkeypatch.setenv("COMFYUI_URL", sim.url)
    with comfynb.open() as store:
        assert Path(store.path) == tmp_path / "lab.duckdb"
        assert store.output_dir == tmp_path / "images"
        job = comfynb.enqueue(store, trivial_prompt("env"), run=store.new_run("env"))
        summary = comfynb.Worker(store).run()
        assert summary.completed == 1
        (path,) = [store.image_path(int(i)) for i in store.candidates(job=job)["id"]]
        assert path.is_relative_to(tmp_path / "images")


def test_nothing_set_says_what_to_pass_or_set() -> None:
    with pytest.raises(InvalidInput, match="COMFYNB_DB"):
        comfynb.open()
    store = comfynb.open(":memory:")
    with pytest.raises(InvalidInput, match="COMFYUI_URL"):
        comfynb.Worker(store)  # type: ignore[arg-type]


def _worker_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "worker", "--until-idle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_the_worker_command_runs_from_the_environment_alone(tmp_path: Path, sim: Simulator) -> None:
    import os

    db = tmp_path / "lab.duckdb"
    with comfynb.open(db) as store:
        comfynb.enqueue(store, trivial_prompt("cli-env"), run=store.new_run("env"))
    base = {k: v for k, v in os.environ.items() if k not in ENV}
    done = _worker_cli(env={**base, "COMFYNB_DB": str(db), "COMFYUI_URL": sim.url})
    assert done.returncode == 0, done.stderr
    with comfynb.open(db) as store:
        assert store.status_counts() == {"completed": 1}

    missing = _worker_cli(env=base)
    assert missing.returncode == 2
    assert "--db FILE, or set COMFYNB_DB" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_server = _worker_cli(env={**base, "COMFYNB_DB": str(db)})
    assert no_server.returncode == 2 and "or set COMFYUI_URL" in no_server.stderr
    bad = _worker_cli(env={**base, "COMFYNB_DB": str(db), "COMFYUI_URL": "gpu1:8188"})
    assert bad.returncode == 2 and "COMFYUI_URL" in bad.stderr and "Traceback" not in bad.stderr
