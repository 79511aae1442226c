"""The store's own errors: failed writes, foreign files, paths that are no store.

Real files throughout. A failed COMMIT is provoked for real: a subprocess lowers its file size
limit (``RLIMIT_FSIZE``, which binds root too) so that DuckDB's write-ahead log cannot grow,
as on a full disk.
"""

from __future__ import annotations

import inspect
import json
import os
import pydoc
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

import comfynb
from comfynb import CorruptImage, InvalidInput, NotAStore
from comfynb.files import write_image_atomic
from comfynb.store import MIGRATIONS, Store

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


# --------------------------------------------------------------------------- foreign files


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``folder``: its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def foreign_file(path: Path, table: str, *, keep_log: bool = False) -> None:
    con = duckdb.connect(str(path))
    if keep_log:  # as a program that stopped without a checkpoint leaves it: a .wal beside
        con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute(f"CREATE TABLE {table} (id INTEGER, x VARCHAR)")
    con.execute(f"INSERT INTO {table} VALUES (1, 'theirs')")
    con.close()


@pytest.mark.parametrize(
    ("table", "keep_log"),
    [("measurements", False), ("jobs", False), ("measurements", True)],
    ids=["their-tables", "their-jobs-table", "with-their-wal"],
)
def test_another_programs_duckdb_file_is_refused_and_left_unchanged(
    tmp_path: Path, table: str, keep_log: bool
) -> None:
    path = tmp_path / "theirs.duckdb"
    foreign_file(path, table, keep_log=keep_log)
    assert (tmp_path / "theirs.duckdb.wal").exists() == keep_log
    before = snapshot(tmp_path)
    for opening in (comfynb.open, Store.open):
        with pytest.raises(NotAStore, match="comfynb did not make") as refused:
            opening(path)
        assert str(path) in str(refused.value) and table in str(refused.value)
        assert refused.value.path == str(path)
        assert snapshot(tmp_path) == before  # byte for byte, and no outputs folder either
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    finally:
        con.close()
    assert tables == [(table,)]


def test_a_missing_or_empty_file_becomes_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    for path in (empty, tmp_path / "missing.duckdb"):
        with comfynb.open(path) as store:
            assert isinstance(store, Store) and store.schema_version == len(MIGRATIONS)
            store.new_run("r")
        with comfynb.open(path) as store:
            assert store.runs()["name"].tolist() == ["r"]


def test_a_folder_or_a_named_pipe_is_refused_before_opening(tmp_path: Path) -> None:
    with pytest.raises(NotAStore, match=r"is a folder, not a file; .* e\.g\. '.*lab\.duckdb'"):
        comfynb.open(tmp_path)
    pipe = tmp_path / "pipe.duckdb"
    os.mkfifo(pipe)
    # in a subprocess: the open that hung stays there, not in this test process
    code = (
        "import sys, comfynb\n"
        "try:\n    comfynb.open(sys.argv[1])\n"
        "except comfynb.NotAStore as exc:\n    print(exc)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code, str(pipe)], capture_output=True, text=True, timeout=20
    )
    assert finished.stdout.strip() == (
        f"{pipe} is a named pipe (FIFO), not a file; pass the path of a store's file"
    )


# --------------------------------------------------------------------------- smaller ones


def test_a_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with comfynb.open("~/lab.duckdb") as store:
        assert Path(store.path) == tmp_path / "lab.duckdb"
        assert store.output_dir == tmp_path / "outputs"
    with Store.open("~/lab.duckdb", output_dir="~/images") as store:
        assert store.output_dir == tmp_path / "images"
    assert (tmp_path / "lab.duckdb").is_file() and not Path("~").exists()
    with pytest.raises(InvalidInput, match="does not exist") as missing:
        comfynb.open("~/nope/lab.duckdb")
    assert str(tmp_path / "nope") in str(missing.value) and "'~" not in str(missing.value)


def test_export_into_a_missing_folder_says_which_folder(store: Store, tmp_path: Path) -> None:
    store.new_run("r")
    target = tmp_path / "reports" / "runs.csv"
    with pytest.raises(InvalidInput, match="does not exist") as missing:
        store.export(target, "runs")
    assert f"the folder {str(tmp_path / 'reports')!r} does not exist" in str(missing.value)
    assert not (tmp_path / "reports").exists()
    (tmp_path / "reports").mkdir()
    assert store.export(target, "runs") == target


def test_the_signature_of_store_open_is_short() -> None:
    signature = str(inspect.signature(Store.open))
    assert "CREATE" not in signature and len(signature) < 200, signature
    assert "CREATE TABLE" not in pydoc.render_doc(Store.open, renderer=pydoc.plaintext)


def test_a_corrupt_download_names_the_image_not_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "ComfyUI_00001_.png"
    with pytest.raises(CorruptImage) as corrupt:
        write_image_atomic(target, b"\x89PNG\r\n\x1a\n but cut short")
    message = str(corrupt.value)
    assert ".part" not in message and repr(str(target)) in message
    assert list(target.parent.iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InvalidInput, match="cannot create the output folder"):
        Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "a-file" / "images")
    with Store.open(tmp_path / "lab.duckdb") as store:  # the file was let go
        assert store.runs().empty
