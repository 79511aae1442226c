"""`comfynb demo` as a user runs it: a real subprocess, on the embedded simulator or a server.

What a user sees (stdout, stderr, the exit code) and what the store holds after (rows counted
in the DuckDB file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from comfynb.simulator import Simulator
from comfynb.store import Store

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"


def clean_env() -> dict[str, str]:
    """This environment, without a COMFYUI_URL of the machine's (the demo would use it)."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_URL"}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path)}


def demo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "comfynb.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def counts(db: Path) -> dict[str, int]:
    with Store.open(db) as store:
        runs = store.runs()
        jobs = store.jobs()
        steps = {int(s) for s in jobs["step_id"].dropna()}
        return {
            "runs": len(runs),
            "steps": len(steps),
            "jobs": len(jobs),
            "candidates": len(store.candidates()),
        }


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.fixture
def bare_sim(tmp_path: Path) -> Iterator[str]:
    """A ComfyUI without model files (a fresh install), as ``comfynb simulator`` runs one:
    it lists no checkpoint. Yields its URL."""
    with subprocess.Popen(
        [sys.executable, "-m", "comfynb.cli", "simulator", "--port", "0", "--checkpoints", ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "comfynb simulator (ComfyUI …) on URL, root DIR"
            assert " on http://" in line, line
            yield line.split(" on ", 1)[1].split(",", 1)[0]
        finally:
            process.terminate()
            process.communicate(timeout=10)


def test_demo_with_no_arguments_on_a_fresh_machine(tmp_path: Path) -> None:
    result = demo(cwd=tmp_path)  # the README's command, in an empty folder
    assert result.returncode == 0, result.stderr
    assert_clean(result)
    out = result.stdout
    db = tmp_path / "comfynb-demo" / "demo.duckdb"
    assert "ComfyUI 0.33.0 at http://127.0.0.1:" in out
    assert "new store comfynb-demo/demo.duckdb, run 'demo'" in out
    assert "sweep 3 seeds x 2 cfg: queued 6 jobs (seed 1, 2, 3; cfg 5, 8)" in out
    assert (
        "refine of candidate 1 (the first picked, else the first of the sweep): queued 1 job" in out
    )
    # the summary table: a header and one row per candidate, the refined one names its parent
    header = next(line for line in out.splitlines() if line.split()[:3] == ["id", "seed", "cfg"])
    assert header.split() == ["id", "seed", "cfg", "parent", "picked", "path"]
    rows = out.split(header, 1)[1].strip().split("\n\n", 1)[0].splitlines()
    cells = [row.split() for row in rows]  # in the order queued: seed, then cfg
    assert [c[1:3] for c in cells] == [
        ["1", "5"], ["1", "8"], ["2", "5"], ["2", "8"], ["3", "5"], ["3", "8"], ["7", "5"],
    ]  # fmt: skip
    assert cells[0][3] == "True", "the refined one is picked"
    assert cells[6][3:5] == [cells[0][0], "False"], "the refine names its parent"
    assert all(c[-1].endswith(".png") for c in cells)
    # where things are, and the lines that open them in a notebook
    assert f"store:         {db}" in out
    assert f"images:        {tmp_path / 'comfynb-demo' / 'outputs'}" in out
    assert f'    store = comfynb.open("{db}")' in out
    assert '    comfynb.Gallery(store, run="demo")' in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .startswith("done: 7 candidates (6 from the sweep, 1 refined) in demo.duckdb")
    )
    sheet = tmp_path / "comfynb-demo" / "demo-sheet.png"
    assert f"contact sheet: {sheet}" in out
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width > 6 * 150  # six tiles a row, captioned

    with Store.open(db) as store:
        frame = store.candidates().sort_values("job_id").reset_index(drop=True)
        assert frame["seed"].tolist() == [1, 1, 2, 2, 3, 3, 7]
        assert frame["cfg"].tolist() == [5, 8, 5, 8, 5, 8, 5]
        assert frame["picked"].tolist() == [True] + [False] * 6
        assert frame["parent_candidate_id"].tolist()[6] == frame["id"][0]
        assert store.run("demo").name == "demo"
        files = [store.image_path(int(i)) for i in frame["id"]]
    digests = set()
    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.size == (512, 512)
        digests.add(path.read_bytes())
    assert len(digests) == 7, "every seed, cfg and the refine give a different picture"


def test_the_command_line_defaults_are_the_demos() -> None:
    from comfynb import cli
    from comfynb import demo as module

    assert (cli.DEMO_DB, cli.DEMO_CHECKPOINT) == (module.DEFAULT_DB, module.DEFAULT_CHECKPOINT)


def test_demo_twice_on_one_store_adds_nothing_the_second_time(tmp_path: Path) -> None:
    db = tmp_path / "lab" / "demo.duckdb"
    first = demo("--db", str(db), "--out", str(tmp_path / "images"))
    assert first.returncode == 0, first.stderr
    before = counts(db)
    assert before == {"runs": 1, "steps": 2, "jobs": 7, "candidates": 7}

    second = demo("--db", str(db), "--out", str(tmp_path / "images"))
    assert second.returncode == 0, second.stderr
    assert_clean(second)
    assert "sweep 3 seeds x 2 cfg: already done by an earlier run (6 jobs), nothing added" in (
        second.stdout
    )
    assert "refine of candidate 1: already done by an earlier run (1 job), nothing added" in (
        second.stdout
    )
    assert "queued" not in second.stdout
    assert f"existing store {db}, run 'demo'" in second.stdout
    assert counts(db) == before
    images = tmp_path / "images"
    assert f'comfynb.open("{db}", output_dir="{images}")' in second.stdout
    assert second.stdout.rstrip().splitlines()[-1].startswith("done: 7 candidates")


def test_ctrl_c_mid_sweep_then_the_next_demo_finishes_without_duplicates(
    tmp_path: Path,
) -> None:
    db = tmp_path / "demo.duckdb"
    env = clean_env()
    # a slow server (0.1 s a step, 2 s an image), gone after the interrupt, as the embedded
    # simulator of an interrupted demo is
    with Simulator(root=tmp_path / "slow", step_seconds=0.1) as slow:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfynb.cli", "demo", "--db", str(db), "--server", slow.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        for line in process.stdout:  # interrupt once the sweep is queued
            if "queued 6 jobs" in line:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted: the store is consistent; run the same `comfynb demo` again" in err
    assert "Traceback" not in err
    interrupted = counts(db)
    assert interrupted["jobs"] == 6 and interrupted["candidates"] < 6

    again = demo("--db", str(db))  # the embedded simulator: the old server is gone
    assert again.returncode == 0, again.stderr
    assert_clean(again)
    assert "sweep 3 seeds x 2 cfg: continuing an earlier run" in again.stdout
    assert "(the first picked, else the first of the sweep): queued 1 job" in again.stdout
    assert counts(db) == {"runs": 1, "steps": 2, "jobs": 7, "candidates": 7}
    with Store.open(db) as store:  # the refine started from the sweep's first job's image
        frame = store.candidates().sort_values("job_id")
        first, refined = frame.iloc[0], frame.iloc[-1]
        assert (first["seed"], first["cfg"], bool(first["picked"])) == (1, 5, True)
        assert refined["parent_candidate_id"] == first["id"]


def test_failed_jobs_print_each_reason_and_the_next_demo_queues_them_again(
    tmp_path: Path,
) -> None:
    db = tmp_path / "demo.duckdb"
    oom = {
        "node_id": "3",
        "message": "CUDA out of memory",
        "exception_type": "torch.OutOfMemoryError",
        "next": 2,
    }
    with Simulator(root=tmp_path / "oom", faults={"fail_node": oom}) as sim:
        failed = demo("--db", str(db), "--server", sim.url)
    assert failed.returncode == 1
    assert_clean(failed)
    assert "comfynb demo: sweep: 4 done, 2 failed, 0 cancelled, 0 left" in failed.stderr
    assert (
        "  2 jobs: ExecutionError in node 3 (KSampler): torch.OutOfMemoryError: CUDA out of "
        "memory" in failed.stderr
    )
    assert "run the same `comfynb demo` again: it continues" in failed.stderr
    assert counts(db) == {"runs": 1, "steps": 1, "jobs": 6, "candidates": 4}

    again = demo("--db", str(db))
    assert again.returncode == 0, again.stderr
    assert "continuing an earlier run: 4 done, 0 left, 2 failed queued again" in again.stdout
    # the two failed jobs stay (their story), each copied once; no new sweep
    assert counts(db) == {"runs": 1, "steps": 2, "jobs": 9, "candidates": 7}
    third = demo("--db", str(db))
    assert third.returncode == 0 and "nothing added" in third.stdout
    assert counts(db)["jobs"] == 9


def test_a_server_without_the_checkpoint_is_refused_before_anything_is_queued(
    tmp_path: Path, bare_sim: str
) -> None:
    db = tmp_path / "demo.duckdb"
    result = demo("--db", str(db), "--server", bare_sim)
    assert result.returncode == 1
    assert_clean(result)
    err = result.stderr
    assert (
        f'model "{CKPT}" (input "ckpt_name" of node "4", CheckpointLoaderSimple) is missing' in err
    )
    assert f"ComfyUI/models/checkpoints/{CKPT} on that server" in err
    assert "it lists no checkpoint at all" in err
    assert "Nothing was queued." in err
    assert counts(db)["jobs"] == 0


def test_the_message_lists_the_checkpoints_the_server_has_and_ckpt_uses_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "demo.duckdb"
    with Simulator(root=tmp_path / "sdxl", checkpoints=["sd_xl_base_1.0.safetensors"]) as sim:
        refused = demo("--db", str(db), "--server", sim.url)
        assert refused.returncode == 1
        assert_clean(refused)
        assert "--ckpt NAME, one of: sd_xl_base_1.0.safetensors" in refused.stderr

        ran = demo("--db", str(db), "--server", sim.url, "--ckpt", "sd_xl_base_1.0.safetensors")
    assert ran.returncode == 0, ran.stderr
    with Store.open(db) as store:
        jobs = store.jobs()
        assert len(jobs) == 7
        assert {store.job(int(i)).workflow["4"]["inputs"]["ckpt_name"] for i in jobs["id"]} == {
            "sd_xl_base_1.0.safetensors"
        }
