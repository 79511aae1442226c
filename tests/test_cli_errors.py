"""Every error path of the ``comfynb`` command: a message that says what to do, a non-zero exit,
never a traceback; each a real subprocess, as a user meets it.

``comfynb worker``'s other paths (signals, a second worker, bad URLs) are in
tests/test_cli_worker.py and tests/test_server_urls.py; the demo's interrupt, failed jobs and
missing checkpoint in tests/test_demo.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfynb.store import Store


def comfynb(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "COMFYUI_URL"},
        "PYTHONPATH": os.pathsep.join(sys.path),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "comfynb.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# (args, exit code, what stderr says); in tmp_path: file.txt (text), notes.duckdb (not DuckDB)
CASES = [
    pytest.param(
        ["demo", "--server", "not-a-url"],
        2,
        "argument --server: server URL 'not-a-url' has no scheme; write it 'http://not-a-url'",
        id="demo-bad-server-url",
    ),
    pytest.param(
        ["demo", "--server", "http://127.0.0.1:9"],
        1,
        "comfynb demo: ServerUnreachable: GET /system_stats: could not talk to "
        "http://127.0.0.1:9",
        id="demo-unreachable-server",
    ),
    pytest.param(
        ["demo", "--db", "file.txt/demo.duckdb"],
        1,
        "comfynb demo: cannot create the folder of --db file.txt/demo.duckdb: file.txt is a "
        "file, not a folder; pass a --db FILE in a folder you can write",
        id="demo-db-under-a-file",
    ),
    pytest.param(
        ["demo", "--db", "notes.duckdb"],
        1,
        "comfynb demo: NotAStore: notes.duckdb is not a DuckDB file, so not a comfynb store",
        id="demo-db-not-a-store",
    ),
    pytest.param(
        ["demo", "--out", "file.txt"],
        1,
        "comfynb demo: InvalidInput: output_dir 'file.txt' is a file; pass a folder",
        id="demo-out-is-a-file",
    ),
    pytest.param(
        ["demo", "--out", "file.txt/images"],
        1,
        "comfynb demo: ",
        id="demo-out-under-a-file",
    ),
    pytest.param(
        ["demo", "--steps", "0"], 2, "argument --steps: a whole number from 1, got '0'",
        id="demo-bad-steps",
    ),
    pytest.param(
        ["demo", "--ckpt", "nope.safetensors"],
        1,
        'model "nope.safetensors" (input "ckpt_name" of node "4", CheckpointLoaderSimple) is '
        "missing",
        id="demo-unknown-ckpt",
    ),
    pytest.param(
        ["worker", "--db", "notes.duckdb", "--server", "http://127.0.0.1:9", "--until-idle"],
        1,
        "notes.duckdb is not a DuckDB file, so not a comfynb store",
        id="worker-db-not-a-store",
    ),
    pytest.param(
        ["worker", "--db", "file.txt/x.duckdb", "--server", "http://127.0.0.1:9"],
        1,
        "the folder of file.txt/x.duckdb does not exist; create it first",
        id="worker-db-under-a-file",
    ),
    pytest.param(
        ["worker", "--db", "x.duckdb", "--server", "http://127.0.0.1:9", "--reroute-after", "-1"],
        2,
        "argument --reroute-after: a number of seconds from 0, got '-1'",
        id="worker-bad-reroute-after",
    ),
    pytest.param(
        ["simulator", "--faults", "{bad"], 2, "comfynb simulator: error: bad fault set",
        id="simulator-bad-faults",
    ),
    pytest.param(
        ["simulator", "--fault", "nope=1"], 2, "unknown fault key(s)", id="simulator-bad-fault"
    ),
    pytest.param(
        ["simulator", "--comfyui-version", "9.9"], 2, "argument --comfyui-version: invalid choice",
        id="simulator-bad-version",
    ),
    pytest.param(["bogus"], 2, "comfynb: error: argument command: invalid choice: 'bogus'",
                 id="unknown-command"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "said"), CASES)
def test_a_cli_error_says_what_to_do_and_exits_non_zero(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    (tmp_path / "file.txt").write_text("not a folder\n")
    (tmp_path / "notes.duckdb").write_text("my notes, not a database\n")
    done = comfynb(*args, cwd=tmp_path)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert said in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert (tmp_path / "notes.duckdb").read_text() == "my notes, not a database\n"  # untouched


def test_the_demo_takes_comfyui_url_as_its_server_and_checks_it(tmp_path: Path) -> None:
    bad = comfynb("demo", cwd=tmp_path, env={"COMFYUI_URL": "localhost:8188"})
    assert bad.returncode == 2
    assert "COMFYUI_URL: server URL 'localhost:8188'" in bad.stderr
    assert "write it 'http://localhost:8188'" in bad.stderr
    gone = comfynb("demo", cwd=tmp_path, env={"COMFYUI_URL": "http://127.0.0.1:9"})
    assert gone.returncode == 1
    assert "ServerUnreachable: GET /system_stats: could not talk to http://127.0.0.1:9" in (
        gone.stderr
    )
    assert "Traceback" not in bad.stderr + gone.stderr


def test_no_command_prints_the_commands(tmp_path: Path) -> None:
    done = comfynb(cwd=tmp_path)
    assert done.returncode == 2
    assert all(command in done.stdout for command in ("demo", "simulator", "worker"))
    assert "Start with: comfynb demo" in done.stdout and "``" not in done.stdout


def test_a_simulator_on_a_taken_port_says_so(tmp_path: Path, taken_port: int) -> None:
    done = comfynb("simulator", "--port", str(taken_port), cwd=tmp_path)
    assert done.returncode == 1
    assert f"comfynb simulator: cannot listen on 127.0.0.1:{taken_port}: " in done.stderr
    assert "pick another --port (0: a free one)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_demo_on_a_store_another_process_holds_says_so(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    with Store.open(db) as store:  # this process holds the file
        store.new_run("mine")
        done = comfynb("demo", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 1
    assert "comfynb demo: StoreLocked: " in done.stderr
    assert "Traceback" not in done.stderr
    with Store.open(db) as store:  # left as it was
        assert store.runs()["name"].tolist() == ["mine"]
