"""One bad job fails alone; the worker and the other jobs go on (issue 11, section 1).

Each poison job is written into the store past ``enqueue``'s checks, as a store written by an
older version (or by hand) holds it: ``store.add_jobs`` with a hand-made JSON text. The worker
is the real one, in this process or as the ``comfynb worker`` command, against the simulator
over loopback.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import HTTP, wait_for

from comfynb import Client, JobStatus, Worker, enqueue, select_next_job, submit_job
from comfynb.core.models import NewCandidate
from comfynb.core.status import Move
from comfynb.errors import OutputError, ServerUnreachable
from comfynb.files import NAME_MAX, PART_GLOB, AtomicImageWriter, safe_output_path
from comfynb.jobs.results import Collected
from comfynb.simulator import Simulator
from comfynb.store import Store
from comfynb.store.lifecycle import transition
from comfynb.worker.recorder import Record, Recorder, Result

S = JobStatus
GOOD = 10  # good jobs around each poison one


def good_jobs(store: Store, count: int = GOOD, run: str = "r") -> list[int]:
    if run not in set(store.runs()["name"]):
        store.new_run(run)
    ids = []
    for i in range(count):
        prompt = trivial_prompt(f"good{i}")
        ids.append(enqueue(store, prompt, run=run, params={"1.color": 1000 + i}).id)  # no cache
    return ids


def poison(store: Store, text: str, *, params: str | None = None, run: str = "r") -> int:
    """A job written past enqueue's checks (an older version's store, raw SQL)."""
    if run not in set(store.runs()["name"]):
        store.new_run(run)
    [job_id] = store.add_jobs([text], run=run, params_json=[params]).ids
    return job_id


def prompt_text(prefix: str = "poison", color: str = "7") -> str:
    """trivial_prompt's JSON text, with ``color`` as raw JSON (``NaN``, ``Infinity``...)."""
    prompt = trivial_prompt(prefix)
    prompt["1"]["inputs"]["color"] = "@COLOR@"
    return json.dumps(prompt).replace('"@COLOR@"', color)


def assert_good_completed(store: Store, ids: list[int]) -> None:
    statuses = {i: store.job(i).status for i in ids}
    assert set(statuses.values()) == {S.COMPLETED}, statuses
    assert set(store.candidates()["job_id"]) >= set(ids)


def failed_event(store: Store, job_id: int) -> dict[str, Any]:
    events = store.events(job_id)
    last = events.iloc[-1]
    assert last["to_status"] == "failed"
    detail = last["detail"]
    return json.loads(detail) if isinstance(detail, str) else dict(detail)


# ----------------------------------------------------------------------------- 1. NaN / inf


@pytest.mark.parametrize(
    "text", ['{"1": {"class_type": "EmptyImage", "inputs": {"color": nan}}}', '{"1": 2,}']
)
def test_a_workflow_python_cannot_read_fails_alone_and_never_stops_a_claim(
    sim: Simulator, store: Store, text: str
) -> None:
    """Text DuckDB's JSON takes but Python's does not (lowercase nan, a trailing comma),
    written by hand: reading the job never raises; the worker fails it, naming why."""
    bad = poison(store, prompt_text(color="1"))
    with store.transaction() as tx:  # raw SQL, as a hand edit would
        tx.fetch("UPDATE jobs SET workflow = ?::JSON WHERE id = ?", [text, bad])
    assert store.job(bad).workflow == text  # shown as the text it is
    good = good_jobs(store)
    summary = Worker(store, [sim.url]).run()
    assert (summary.completed, summary.failed) == (GOOD, 1)
    assert_good_completed(store, good)
    job = store.job(bad)
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "UnsendablePrompt"
    assert job.error["message"].startswith("the stored workflow is not JSON Python can read")


def test_nan_and_infinity_in_a_workflow_fail_alone_in_the_worker_round(
    sim: Simulator, store: Store
) -> None:
    good = good_jobs(store)
    nan = poison(store, prompt_text(color="NaN"))
    inf = poison(store, prompt_text(color="-Infinity"))
    summary = Worker(store, [sim.url]).run()
    assert (summary.completed, summary.failed) == (GOOD, 2)
    assert_good_completed(store, good)
    for job_id, shown in ((nan, "is nan"), (inf, "is -inf")):
        job = store.job(job_id)
        assert job.status is S.FAILED
        assert job.error is not None and job.error["type"] == "UnsendablePrompt"
        assert f'input "color" of node "1" {shown}' in job.error["message"]
        assert failed_event(store, job_id)["error"]["type"] == "UnsendablePrompt"
    assert len(sim.prompts()) == GOOD  # nothing of the poison ones reached the server


def test_a_claimed_nan_job_fails_alone_in_recover(sim: Simulator, store: Store) -> None:
    nan = poison(store, prompt_text(color="NaN"))
    claimed = select_next_job(store, server=sim.url)  # a crash left it claimed, maybe posted
    assert claimed is not None and claimed.id == nan and claimed.prompt_id
    good = good_jobs(store)
    summary = Worker(store, [sim.url]).run()
    assert summary.completed == GOOD
    assert_good_completed(store, good)
    job = store.job(nan)
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "UnsendablePrompt"


@pytest.mark.parametrize(
    ("text", "says"),
    [("[1, 2]", "non-empty dict of nodes"), ('{"1": 5}', 'node "1" must be a dict')],
)
def test_a_stored_workflow_that_is_not_an_api_prompt_fails_alone(
    sim: Simulator, store: Store, text: str, says: str
) -> None:
    bad = poison(store, text)
    claimed = poison(store, text)
    assert select_next_job(store, server=sim.url) is not None  # one claimed: recover meets it
    good = good_jobs(store)
    summary = Worker(store, [sim.url]).run()
    assert (summary.completed, summary.failed) == (GOOD, 1)  # recover's are not counted
    assert_good_completed(store, good)
    for job_id in (bad, claimed):
        error = store.job(job_id).error
        assert error is not None and error["type"] == "WorkflowError" and says in error["message"]


def test_an_unforeseen_error_of_one_post_fails_that_job_without_its_secrets(
    sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a POST raises, it is one job's: counted as attempts (it may have arrived),
    then the job fails with the exception's type and message, the API key cut out."""
    secret = "sk-comfy-0123456789"
    queue_prompt = Client.queue_prompt

    def odd(self: Client, prompt: dict[str, Any], **options: Any) -> Any:
        if prompt["1"]["inputs"]["color"] == 66:
            raise KeyError(f"no slot for {options['extra_data']['api_key_comfy_org']}")
        return queue_prompt(self, prompt, **options)

    monkeypatch.setattr(Client, "queue_prompt", odd)
    good = good_jobs(store)
    bad = poison(store, prompt_text(color="66"))
    worker = Worker(store, [sim.url], extra_data={"api_key_comfy_org": secret})
    summary = worker.run()
    assert (summary.completed, summary.failed) == (GOOD, 1)
    assert_good_completed(store, good)
    job = store.job(bad)
    assert job.status is S.FAILED and job.error is not None and job.retries == job.max_retries
    assert job.error["type"] == "KeyError"
    assert "no slot for ***" in job.error["message"] and "no retries left" in job.error["message"]
    assert secret not in store.events().to_csv() + store.jobs().to_csv()


# ----------------------------------------------------------------------------- 2. a seed of 2**70


def test_a_seed_beyond_64_bits_fails_its_job_alone_and_the_others_are_recorded(
    sim: Simulator, store: Store
) -> None:
    """params={"seed": 2**70} stored before enqueue refused it: the store cannot hold it in
    the candidate's row, so the job fails naming it; every other job is recorded."""
    good = good_jobs(store)
    big = poison(store, prompt_text(color="11"), params=json.dumps({"seed": 2**70}))
    summary = Worker(store, [sim.url]).run()
    assert (summary.completed, summary.failed) == (GOOD, 1)
    assert_good_completed(store, good)
    job = store.job(big)
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "InvalidInput"
    assert (
        'params["seed"] is 1180591620717411303424: beyond the 64-bit range'
        in (job.error["message"])
    )
    assert store.candidates(job=big).empty
    assert sorted(store.candidates()["1.color"].dropna().astype(int)) == [
        1000 + i for i in range(GOOD)
    ]


def test_the_recorder_fails_alone_a_job_whose_row_the_store_refuses(store: Store) -> None:
    """A batch holding one result the store cannot hold: that job fails with the reason,
    the other jobs of the same batch are recorded as handed."""
    store.new_run("r")
    ids = [enqueue(store, trivial_prompt(f"r{i}"), run="r").id for i in range(3)]
    jobs = []
    for job_id in ids:
        claimed = select_next_job(store)
        assert claimed is not None
        transition(store, job_id, "submitted", server="http://gpu:8188")
        jobs.append(transition(store, job_id, "running"))
    folder = store.output_dir / "r"
    folder.mkdir()

    def image(name: str, **numbers: int) -> NewCandidate:
        (folder / name).write_bytes(b"png")
        return NewCandidate("2", f"r/{name}", width=numbers.get("width", 8), height=8)

    recorder = Recorder(store, wake=lambda: None).start()
    try:
        for tag, job, width in (("a", jobs[0], 8), ("b", jobs[1], 2**40), ("c", jobs[2], 8)):
            made = image(f"{tag}.png", width=width)
            collected = Collected(images=(made,), written=(store.output_dir / made.path,))
            recorder.hand(Result(tag, job, collected))
        recorder.flush()
        outcomes = recorder.outcomes()
    finally:
        recorder.stop()
    assert all(o.error is None for o in outcomes)
    moves = dict(move for o in outcomes for move in o.moves)
    assert moves == {"a": S.COMPLETED, "b": S.FAILED, "c": S.COMPLETED}
    bad = store.job(ids[1])
    assert bad.error is not None and bad.error["type"] == "InvalidInput"
    assert "its result could not be recorded" in bad.error["message"]
    assert "width=1099511627776" in bad.error["message"]
    assert not (folder / "b.png").exists()  # no candidate points to it: removed
    assert sorted(store.candidates()["job_id"]) == [ids[0], ids[2]]


def test_a_move_the_store_refuses_fails_its_job_alone_and_the_round_goes_on(
    store: Store,
) -> None:
    """An error text the store's JSON cannot hold (a lone surrogate: a server's message about
    an undecodable file name) in one job's failed move: that job fails with a clean error."""
    store.new_run("r")
    ids = [enqueue(store, trivial_prompt(f"m{i}"), run="r").id for i in range(2)]
    for _ in ids:
        select_next_job(store)
    recorder = Recorder(store, wake=lambda: None).start()
    try:
        bad = {"type": "RuntimeError", "message": "cannot open '\udcff.png'"}
        recorder.hand(Record("bad", Move(ids[0], S.FAILED, {"error": bad})))
        recorder.hand(Record("ok", Move(ids[1], S.SUBMITTED, {"server": "http://gpu"})))
        recorder.flush()
        outcomes = recorder.outcomes()
    finally:
        recorder.stop()
    assert [o.error for o in outcomes] == [None]
    assert dict(m for o in outcomes for m in o.moves) == {"bad": S.FAILED, "ok": S.SUBMITTED}
    error = store.job(ids[0]).error
    assert error is not None and error["type"] == "InvalidInput"  # a StoreError
    assert error["message"].startswith("its move to failed could not be recorded: ")
    assert "\n" not in error["message"]  # the first line: no SQL echoed


def test_a_job_whose_end_the_store_refuses_fails_alone_on_the_server_and_in_recover(
    sim: Simulator, store: Store
) -> None:
    """A node's error message with a lone surrogate (a file name Python could not decode):
    the failed move cannot be stored; the job fails with a clean error, in the worker round
    and in ``recover`` alike."""
    message = "cannot read 'in\udcffput.png'"
    sim.set_faults(fail_node={"node_id": "1", "message": message, "next": 2})
    store.new_run("r")
    first = enqueue(store, trivial_prompt("bad1"), run="r").id
    with Client(sim.url) as client:  # posted before a crash: recover meets it
        posted = submit_job(store, client, select_next_job(store, server=sim.url) or first)
        wait_for(lambda: client.job(posted.prompt_id or "").status.is_terminal)
    second = enqueue(store, trivial_prompt("bad2"), run="r").id  # fails in the round
    good = good_jobs(store)
    summary = Worker(store, [sim.url]).run()
    assert summary.completed == GOOD
    assert_good_completed(store, good)
    for job_id in (first, second):
        job = store.job(job_id)
        assert job.status is S.FAILED and job.error is not None, job
        assert job.error["type"] == "InvalidInput"  # a StoreError: text it cannot hold
        assert "could not be recorded" in job.error["message"] or "recover" in job.error["message"]


# ----------------------------------------------------------------------------- 3. long names


def test_a_240_character_prefix_is_downloaded_through_a_short_temporary_name(
    sim: Simulator, store: Store
) -> None:
    good = good_jobs(store)
    long = poison(store, prompt_text("p" * 240, color="12"))
    summary = Worker(store, [sim.url]).run()
    assert (summary.completed, summary.failed) == (GOOD + 1, 0)
    assert_good_completed(store, [*good, long])
    [path] = store.candidates(job=long)["path"]
    assert Path(path).name == "p" * 240 + "_00001_.png"  # 251 bytes: the name as served
    assert not list(store.output_dir.rglob("*.part"))


def test_temporary_names_are_short_and_recover_still_finds_them(tmp_path: Path) -> None:
    target = tmp_path / "out" / ("x" * 250 + ".png")
    writer = AtomicImageWriter(target)
    temps = list(target.parent.glob(PART_GLOB))
    assert [p.name.startswith(".comfynb-") for p in temps] == [True]
    assert len(temps[0].name) < 32
    assert list(target.parent.rglob(".*.part")) == temps  # recover's pattern
    writer.discard()
    assert not list(target.parent.iterdir())


def test_a_name_longer_than_file_systems_take_is_a_clear_output_error(tmp_path: Path) -> None:
    name = "é" * 126 + ".png"  # 256 bytes
    with pytest.raises(OutputError, match=f"of 256 bytes.*at most {NAME_MAX} bytes"):
        safe_output_path(tmp_path, "", name)
    with pytest.raises(OutputError, match="subfolder of 300 bytes"):
        safe_output_path(tmp_path, "a/" + "s" * 300, "x.png")
    assert safe_output_path(tmp_path, "", "é" * 125 + ".png").name == "é" * 125 + ".png"


# ----------------------------------------------------------------------------- 4. a newline


def test_the_simulator_drops_the_connection_on_a_file_name_with_a_newline(
    sim: Simulator, store: Store
) -> None:
    """As real ComfyUI does: /view puts the name in a Content-Disposition header, which
    aiohttp refuses to send; the client sees the connection closed, the server is fine."""
    with Client(sim.url) as client:
        queued = client.queue_prompt(trivial_prompt("a\nb"))
        wait_for(lambda: client.job(queued.prompt_id).status.is_terminal)
        [ref] = client.job(queued.prompt_id).outputs
        assert ref.filename == "a\nb_00001_.png"
        with pytest.raises(ServerUnreachable, match="disconnected"):
            client.download(ref, store.output_dir)
        assert client.system_stats()  # it answers everything else


def test_a_file_the_server_cannot_send_fails_its_job_and_never_marks_the_server_down(
    sim: Simulator, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    good = good_jobs(store)
    newline = poison(store, prompt_text("bad\nname", color="13"))
    with caplog.at_level(logging.INFO, logger="comfynb.worker"):
        summary = Worker(store, [sim.url]).run()  # --until-idle ends
    assert (summary.completed, summary.failed) == (GOOD, 1)
    assert_good_completed(store, good)
    job = store.job(newline)
    assert job.status is S.FAILED and job.error is not None
    assert job.error["type"] == "ServerUnreachable"
    fetched = "image 'bad\\nname_00001_.png' (output) could not be fetched 3 times while"
    assert job.error["message"].startswith(fetched)
    assert "answered other requests: GET /view" in job.error["message"]
    lines = [r.getMessage() for r in caplog.records if r.name == "comfynb.worker"]
    assert not [line for line in lines if " down: " in line]
    assert len([line for line in lines if f"server {sim.url} up" in line]) == 1


def test_after_a_restart_a_file_the_server_cannot_send_fails_its_job(
    sim: Simulator, store: Store
) -> None:
    """A job finished on the server before a crash, its file unsendable: ``recover`` leaves
    it in progress (the server answers), the worker tries it a few times and fails it."""
    store.new_run("r")
    job_id = poison(store, prompt_text("crash\nname", color="9"))  # enqueue refuses it now
    with Client(sim.url) as client:
        posted = submit_job(store, client, select_next_job(store, server=sim.url) or job_id)
        wait_for(lambda: client.job(posted.prompt_id or "").status.is_terminal)
    good = good_jobs(store)
    worker = Worker(store, [sim.url]).start()
    try:
        wait_for(lambda: store.job(job_id).status.is_terminal, timeout=15)
        wait_for(lambda: all(store.job(i).status.is_terminal for i in good), timeout=15)
    finally:
        worker.stop()
    assert worker.status().error is None
    assert store.job(job_id).status is S.FAILED
    assert_good_completed(store, good)


# ----------------------------------------------------------------------------- the command


def test_the_worker_command_ends_every_poison_job_and_a_restart_does_not_trip(
    sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "lab.duckdb"
    with Store.open(db) as store:
        good = good_jobs(store)
        poisons = {
            "nan": poison(store, prompt_text(color="NaN")),
            "seed": poison(store, prompt_text(color="21"), params=json.dumps({"seed": 2**70})),
            "long": poison(store, prompt_text("q" * 240, color="22")),
            "newline": poison(store, prompt_text("n\nl", color="23")),
        }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "comfynb.cli", "worker", "--db", str(db)]
    command += ["--server", sim.url, "--until-idle"]
    for _ in range(2):  # the second start finds nothing to trip on
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    with Store.open(db) as store:
        assert_good_completed(store, good)
        ends = {name: store.job(i).status for name, i in poisons.items()}
    assert ends == {"nan": S.FAILED, "seed": S.FAILED, "long": S.COMPLETED, "newline": S.FAILED}
    assert HTTP.get(f"{sim.url}/system_stats").status_code == 200
