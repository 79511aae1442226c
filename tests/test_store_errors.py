"""The store's own errors: failed writes, foreign files, paths that are no store.

Real files throughout. A failed COMMIT is provoked for real: a subprocess lowers its file size
limit (``RLIMIT_FSIZE``, which binds root too) so that DuckDB's write-ahead log cannot grow,
as on a full disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import comfynb
from comfynb.store import Store

FULL_DISK = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, EFBIG
    from comfynb.store import Store
    store = Store.open(sys.argv[1])
    store.new_run("before")
    limit = os.path.getsize(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        with store.transaction():
            store.new_run("lost", notes="n" * 100_000)
    except Exception as exc:
        failed = {"type": type(exc).__name__, "message": str(exc), "path": getattr(exc, "path", None)}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    store.new_run("after")  # the store goes on once the file can be written
    store.close()
    print(json.dumps(failed))
    """
)


def test_a_failed_commit_raises_its_real_cause(tmp_path: Path) -> None:
    db = tmp_path / "lab.duckdb"
    finished = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    failed = json.loads(finished.stdout)
    assert failed["type"] == "StoreWriteFailed"
    assert "File too large" in failed["message"] and "ulimit -f" in failed["message"]
    assert "cannot rollback" not in failed["message"]
    assert failed["path"] == str(db)
    assert issubclass(comfynb.StoreWriteFailed, comfynb.StoreError)
    with Store.open(db) as store:
        assert store.runs()["name"].tolist() == ["before", "after"]


def test_a_failed_statement_inside_a_transaction_is_not_hidden_by_its_rollback(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "lab.duckdb") as store:
        try:
            with store.transaction():
                store.new_run("kept?")
                store._fetch("SELECT * FROM no_such_table")
        except comfynb.StoreError as exc:
            assert "no_such_table" in str(exc)
        assert store.runs().empty
        assert store.new_run("then").name == "then"


def test_the_new_errors_are_in_the_tree() -> None:
    for name in ("StoreWriteFailed", "NotAStore"):
        assert name in comfynb.__all__ and issubclass(getattr(comfynb, name), comfynb.StoreError)
