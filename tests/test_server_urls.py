"""A server URL is checked where it enters and has one spelling (issue 11, section 2).

``comfynb worker --server localhost:8188`` printed a websockets traceback and exited 0; now
every URL is read by ``core.urls.parse_server_url``, and a bad one is refused with the URL to
write (exit 2 on the command line).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt
from test_cli_worker import STARTUP

from comfynb import Client, InvalidInput, Worker, enqueue
from comfynb.core.urls import parse_server_url, same_server, server_url
from comfynb.store import Store


def unique(index: int) -> dict[str, Any]:
    prompt = trivial_prompt("said")
    prompt["1"]["inputs"]["color"] = index
    return prompt


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ("localhost:8188", "http://localhost:8188"),
        ("ws://127.0.0.1:8188", "http://127.0.0.1:8188"),
        ("http://127.0.0.1:8188/prompt", "http://127.0.0.1:8188"),
    ],
)
def test_a_bad_server_url_is_refused_at_start_with_the_fix(
    tmp_path: Path, given: str, fix: str
) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "comfynb.cli", "worker", "--db", str(tmp_path / "x.duckdb")),
            *("--server", "http://127.0.0.1:8188", "--server", given),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=STARTUP,
    )
    assert done.returncode == 2, done.stderr
    assert f"write it {fix!r}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.duckdb").exists()  # refused before anything was opened


def test_one_spelling_per_server() -> None:
    assert server_url("http://localhost:8188/") == "http://127.0.0.1:8188"
    assert server_url("HTTP://GPU1.lan:80") == "http://gpu1.lan"
    assert server_url("https://gpu1:443/") == "https://gpu1"
    assert server_url("https://localhost:8443") == "https://localhost:8443"  # the cert's name
    assert server_url("http://[::1]:8188") == "http://[::1]:8188"  # another address
    assert parse_server_url("http://me:secret@gpu1:8188") == ("http://gpu1:8188", ("me", "secret"))
    assert same_server("http://localhost:8188", "http://127.0.0.1:8188/")
    assert not same_server("http://127.0.0.1:8188", "http://127.0.0.1:8189")
    with pytest.raises(InvalidInput, match="'http://me:\\*\\*\\*@gpu1:8188'") as caught:
        server_url("me:secret@gpu1:8188")
    assert "secret" not in str(caught.value)
    for bad in ("http://gpu1:8188?x=1", "ftp://gpu1", "http://:8188", "http://gpu1:99999"):
        with pytest.raises(InvalidInput, match="server URL"):
            server_url(bad)


def test_every_entry_takes_the_one_spelling(store: Store) -> None:
    with pytest.raises(InvalidInput, match="write it 'http://localhost:8188'"):
        Client("localhost:8188")
    assert Client("http://LOCALHOST:8188/").url == "http://127.0.0.1:8188"
    with pytest.raises(InvalidInput, match="write it 'http://localhost:8188'"):
        Worker(store, ["localhost:8188"])
    with pytest.raises(InvalidInput, match="more than once"):
        Worker(store, ["http://localhost:8188", "http://127.0.0.1:8188/"])
    store.new_run("r")
    job = enqueue(store, unique(1), run="r")
    claimed = store.claim_next_job(server="http://localhost:8188/")
    assert claimed is not None and claimed.id == job.id
    assert claimed.server == "http://127.0.0.1:8188"
    assert store.claimable(["http://localhost:8188"]) == 0
