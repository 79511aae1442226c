"""The DuckDB store: schema and migrations, locking, reads, writes, threads, secrets.

Every test uses a real DuckDB file under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import comfynb
from comfynb import (
    CandidateNotFound,
    InvalidInput,
    InvalidTransition,
    JobNotInStore,
    JobStatus,
    RunNotFound,
    SchemaTooNew,
    StepNotFound,
    Store,
    StoreError,
    StoreLocked,
    WorkflowError,
    enqueue,
    select_next_job,
)
from comfynb.core.jsonio import is_secret_key, strip_secrets
from comfynb.core.models import NewCandidate
from comfynb.jobs import record_result, record_results, select_next_jobs
from comfynb.store import MIGRATIONS, Migration
from comfynb.store.lifecycle import retry, transition

S = JobStatus
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "out") as store:
        yield store


def seeded(seed: int | None = None, *, text: str | None = None, width: int = 64) -> dict[str, Any]:
    """WORKFLOW with a seed and a prompt text where the candidates' columns read them."""
    workflow = copy.deepcopy(WORKFLOW)
    workflow["1"]["inputs"]["width"] = width
    if seed is not None:
        workflow["1"]["inputs"]["seed"] = seed
    if text is not None:
        workflow["1"]["inputs"]["text"] = text
    return workflow


def sql(store: Store, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.transaction() as tx:
        return tx.fetch(query, params)


def completed_job(
    store: Store,
    run: str = "r",
    *,
    parent: int | None = None,
    n: int = 2,
    seed: int | None = None,
    **params: Any,
) -> list[int]:
    """A job run to completion with ``n`` images; returns the candidate ids.

    ``seed`` goes in the workflow (the candidates' seed column is read from it); the other
    keywords are the job's params as the store keeps them (``store.add_jobs``, past
    enqueue's rule that a param names an input), to test the frames' flattening.
    """
    workflow = seeded(seed)
    store.new_run(run)
    added = store.add_jobs(
        [json.dumps(workflow)],
        run=run,
        parent=parent,
        params_json=[json.dumps(params) if params else None],
    )
    job = store.job(added.ids[0])
    transition(store, job.id, S.SUBMITTED)
    images = [NewCandidate("2", f"{run}/{job.id}_{i}.png", width=64, height=64) for i in range(n)]
    return [c.id for c in record_result(store, job.id, images)]


# ----------------------------------------------------------------------------- schema


def test_open_creates_the_schema_and_the_output_folder(tmp_path: Path) -> None:
    with comfynb.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "imgs") as store:
        assert store.schema_version == len(MIGRATIONS)
        assert (tmp_path / "imgs").is_dir() and store.output_dir == tmp_path / "imgs"
        types = dict(
            sql(
                store,
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns",
            )
        )
    assert types["jobs.created_at"] == types["job_events.at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["jobs.workflow"] == types["candidates.params"] == "JSON"
    assert types["runs.metadata"] == types["job_events.detail"] == "JSON"
    for column in ("prompt_id", "server", "status", "priority", "retries", "max_retries"):
        assert f"jobs.{column}" in types
    for column in ("child_count", "sha256", "width", "bytes", "seed", "prompt", "picked", "stars"):
        assert f"candidates.{column}" in types


def test_default_output_folder_sits_beside_the_file(tmp_path: Path) -> None:
    with comfynb.open(tmp_path / "lab.duckdb") as store:
        assert store.output_dir == tmp_path / "outputs"


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lab.duckdb"
    with Store.open(path) as store:
        ids = completed_job(store, seed=3)
    with Store.open(path) as store:
        assert store.candidate(ids[0]).seed == 3
        assert store.schema_version == len(MIGRATIONS)


def test_an_older_file_migrates_forward_without_losing_a_row(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with Store.open(path, migrations=MIGRATIONS[:1]) as old:
        assert old.schema_version == 1
        sql(old, "INSERT INTO runs (name) VALUES ('kept')")
        sql(old, "INSERT INTO jobs (run_id, workflow) VALUES (1, '{}')")
        sql(
            old,
            "INSERT INTO candidates (job_id, run_id, node_id, path, seed) "
            "VALUES (1, 1, '2', 'kept/a.png', 11), (1, 1, '2', 'kept/b.png', 12)",
        )
    later = Migration(
        "099_candidate_tags",
        ("ALTER TABLE candidates ADD COLUMN tags VARCHAR[] DEFAULT []",),
    )
    newest = len(MIGRATIONS) + 1
    with Store.open(path, migrations=(*MIGRATIONS, later)) as new:
        assert new.schema_version == newest
        kept = new.candidates()
        assert kept["seed"].tolist() == [11, 12] and kept["cfg"].isna().all()
        assert sql(new, "SELECT count(*), min(tags::VARCHAR) FROM candidates") == [(2, "[]")]
        names = sql(new, "SELECT version, name FROM schema_migrations ORDER BY version")
        assert names == [
            *((i + 1, m.name) for i, m in enumerate(MIGRATIONS)),
            (newest, "099_candidate_tags"),
        ]
    # this comfynb knows fewer migrations: the newer file is refused and left as it was
    with pytest.raises(SchemaTooNew, match="upgrade comfynb"):
        Store.open(path)
    with Store.open(path, migrations=(*MIGRATIONS, later)) as again:
        assert again.schema_version == newest and len(again.candidates()) == 2


def test_a_file_with_foreign_migrations_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    with Store.open(path, migrations=(Migration("001_something_else", ()),)):
        pass
    with pytest.raises(StoreError, match="not a store this comfynb made"):
        Store.open(path)


def test_a_file_that_is_not_duckdb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"hello, this is not a database" * 200)
    with pytest.raises(StoreError, match="not a DuckDB file"):
        Store.open(path)
    assert path.read_bytes().startswith(b"hello")


def test_another_process_holding_the_file_raises_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    code = textwrap.dedent(
        f"""
        import sys, duckdb
        con = duckdb.connect({str(path)!r})
        print("ready", flush=True)
        sys.stdin.read()  # hold the file until the test closes our stdin
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked) as caught:
            Store.open(path)
        assert caught.value.pid == holder.pid
        message = str(caught.value)
        assert f"PID {holder.pid}" in message and "close the store there" in message
        assert isinstance(caught.value, StoreError)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    with Store.open(path) as store:  # free again once the holder is gone
        assert store.schema_version == len(MIGRATIONS)


def test_bad_paths_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist; create it first"):
        Store.open(tmp_path / "missing" / "lab.duckdb")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InvalidInput, match="is a file; pass a folder"):
        Store.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "afile")
    with pytest.raises(InvalidInput, match="must be a file path"):
        Store.open(42)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_sigkill_mid_results_leaves_whole_transactions_only(tmp_path: Path) -> None:
    """A worker killed while completing jobs: each job has all its candidates, or none."""
    path = tmp_path / "crash.duckdb"
    code = textwrap.dedent(
        f"""
        import comfynb
        from comfynb.jobs import enqueue, record_result
        from comfynb.store.lifecycle import transition
        from comfynb.core.models import NewCandidate
        wf = {WORKFLOW!r}
        store = comfynb.open({str(path)!r})
        run = store.new_run("r")
        root = enqueue(store, wf, run=run)
        transition(store, root.id, "submitted")
        parent = record_result(store, root.id, [NewCandidate("2", "r/root.png")])[0].id
        jobs = [enqueue(store, wf, run=run, parent=parent).id for _ in range(300)]
        for job_id in jobs:
            transition(store, job_id, "submitted")
        print("go", flush=True)
        for job_id in jobs:
            images = [NewCandidate("2", f"r/{{job_id}}_{{k}}.png") for k in range(4)]
            record_result(store, job_id, images)
            print(job_id, flush=True)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    try:
        assert worker.stdout.readline().strip() == "go"
        for _ in range(25):  # let it commit some, then kill it wherever it is
            assert worker.stdout.readline().strip().isdigit()
        worker.kill()
        worker.wait(timeout=30)
    finally:
        worker.stdout.close()
    with Store.open(path) as store:
        jobs = store.jobs()
        counts = store.candidates().groupby("job_id").size().to_dict()
        completed = jobs[jobs["status"] == "completed"]["id"].tolist()
        assert len(completed) >= 25 + 1
        for job_id, status in zip(jobs["id"], jobs["status"], strict=True):
            assert counts.get(job_id, 0) == (
                (4 if job_id != 1 else 1) if status == "completed" else 0
            )
        parent = store.candidate(1)
        assert parent.child_count == 4 * (len(completed) - 1)
        events = store.events()
        assert (events["to_status"] == "completed").sum() == len(completed)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "lab.duckdb")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="is closed; open it again"):
        store.runs()


# ----------------------------------------------------------------------------- runs and steps


def test_new_run_returns_the_existing_run_of_that_name(store: Store) -> None:
    first = store.new_run("portraits", notes="cfg sweep", metadata={"owner": "me"})
    again = store.new_run("portraits", notes="ignored")
    assert again == first and again.notes == "cfg sweep" and again.metadata == {"owner": "me"}
    assert store.run("portraits") == store.run(first.id) == first
    assert first.created_at.tzinfo is not None
    assert len(store.runs()) == 1


def test_bad_run_arguments_raise_and_write_nothing(store: Store) -> None:
    for bad in ("", "   ", None, 3):
        with pytest.raises(InvalidInput, match="run name"):
            store.new_run(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="metadata must be JSON"):
        store.new_run("x", metadata={"f": {1, 2}})
    with pytest.raises(RunNotFound, match=r"no run 'nope'.*new_run"):
        store.run("nope")
    with pytest.raises(RunNotFound, match="no run 42"):
        store.run(42)
    assert store.runs().empty


def test_new_step_checks_kind_workflow_and_parent(store: Store) -> None:
    run = store.new_run("r")
    step = store.new_step(run, "sweep", WORKFLOW, params_spec={"cfg": [4, 7]})
    assert store.step(step.id) == step and step.params_spec == {"cfg": [4, 7]}
    with pytest.raises(InvalidInput, match="'generate', 'sweep' or 'refine'"):
        store.new_step(run, "polish", WORKFLOW)
    with pytest.raises(WorkflowError, match='node "2"'):
        store.new_step(run, "generate", {"2": {"class_type": "SaveImage"}})
    with pytest.raises(CandidateNotFound, match="no candidate 77"):
        store.new_step(run, "refine", WORKFLOW, parent_candidate=77)
    with pytest.raises(StepNotFound):
        store.step(99)
    assert sql(store, "SELECT count(*) FROM steps") == [(1,)]


# ----------------------------------------------------------------------------- enqueue


@pytest.mark.parametrize(
    ("workflow", "node", "message"),
    [
        ([], None, "non-empty dict of nodes"),
        ({}, None, "non-empty dict of nodes"),
        ({"nodes": [], "links": []}, None, "Export \\(API\\)"),
        ({"3": "KSampler"}, "3", 'node "3" must be a dict'),
        ({"3": {"inputs": {}}}, "3", 'node "3" has no "class_type"'),
        ({"3": {"class_type": "KSampler"}}, "3", 'node "3" \\(KSampler\\) has no "inputs"'),
        (
            {"3": {"class_type": "KSampler", "inputs": {"model": ["4"]}}},
            "3",
            "input \"model\" is \\['4'\\]; a list input is a link",
        ),
        (
            {"3": {"class_type": "KSampler", "inputs": {"model": ["4", 0]}}},
            "3",
            'links to node "4", which is not in the workflow',
        ),
        (
            {"3": {"class_type": "KSampler", "inputs": {"model": ["3", -1]}}},
            "3",
            "output index is an int from 0",
        ),
        ({3: {"class_type": "KSampler", "inputs": {}}}, "3", "must be a string"),
    ],
)
def test_enqueue_refuses_a_bad_workflow_naming_the_node(
    store: Store, workflow: Any, node: str | None, message: str
) -> None:
    run = store.new_run("r")
    with pytest.raises(WorkflowError, match=message) as caught:
        enqueue(store, workflow, run=run)
    assert caught.value.node_id == node
    assert store.jobs().empty


def test_enqueue_writes_a_pending_job(store: Store) -> None:
    run = store.new_run("r")
    step = store.new_step(run, "generate", WORKFLOW)
    job = enqueue(store, WORKFLOW, run="r", step=step, params={"EmptyImage.width": 32}, priority=2)
    assert job == store.job(job.id)
    assert (job.status, job.run_id, job.step_id, job.priority) == (S.PENDING, run.id, step.id, 2)
    assert job.workflow == seeded(width=32) and job.params == {"EmptyImage.width": 32}
    assert job.max_retries == 3 and WORKFLOW["1"]["inputs"]["width"] == 64  # not changed
    assert job.prompt_id is None and job.created_at.tzinfo is not None


def test_enqueue_bad_references_raise_and_write_nothing(store: Store) -> None:
    r1, r2 = store.new_run("one"), store.new_run("two")
    step = store.new_step(r1, "generate", WORKFLOW)
    with pytest.raises(InvalidInput, match=f"step {step.id} belongs to run {r1.id}"):
        enqueue(store, WORKFLOW, run=r2, step=step)
    with pytest.raises(RunNotFound):
        enqueue(store, WORKFLOW, run="three")
    with pytest.raises(StepNotFound):
        enqueue(store, WORKFLOW, run=r1, step=50)
    with pytest.raises(CandidateNotFound):
        enqueue(store, WORKFLOW, run=r1, parent=50)
    with pytest.raises(InvalidInput, match="max_retries"):
        enqueue(store, WORKFLOW, run=r1, max_retries=-1)
    with pytest.raises(InvalidInput, match="priority"):
        enqueue(store, WORKFLOW, run=r1, priority="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="params"):
        enqueue(store, WORKFLOW, run=r1, params=[1, 2])  # type: ignore[arg-type]
    assert store.jobs().empty


def test_a_refine_step_passes_its_parent_to_its_jobs(store: Store) -> None:
    parent = completed_job(store, n=1)[0]
    step = store.new_step("r", "refine", WORKFLOW, parent_candidate=parent)
    job = enqueue(store, WORKFLOW, run="r", step=step)
    assert job.parent_candidate_id == parent


# ----------------------------------------------------------------------------- claiming


def test_select_next_job_takes_priority_then_oldest(store: Store) -> None:
    low = enqueue(store, WORKFLOW, run=store.new_run("r"))
    high = enqueue(store, WORKFLOW, run="r", priority=5)
    low2 = enqueue(store, WORKFLOW, run="r")
    order = [select_next_job(store) for _ in range(4)]
    assert [j.id if j else None for j in order] == [high.id, low.id, low2.id, None]
    claimed = order[0]
    assert claimed is not None and claimed.status is S.PENDING
    assert claimed.prompt_id and claimed.claimed_at is not None


def test_select_next_job_is_fair_between_runs(store: Store) -> None:
    a = [enqueue(store, WORKFLOW, run=store.new_run("a")).id for _ in range(3)]
    b = [enqueue(store, WORKFLOW, run=store.new_run("b")).id for _ in range(3)]
    taken = []
    while (job := select_next_job(store)) is not None:
        taken.append(job.id)
    assert taken == [a[0], b[0], a[1], b[1], a[2], b[2]]


def test_select_next_jobs_claims_a_batch_in_the_same_fair_order(store: Store) -> None:
    a = [enqueue(store, WORKFLOW, run=store.new_run("a")).id for _ in range(3)]
    b = [enqueue(store, WORKFLOW, run=store.new_run("b")).id for _ in range(2)]
    urgent = enqueue(store, WORKFLOW, run="b", priority=1).id
    first = select_next_jobs(store, 4, server="http://a")
    assert [j.id for j in first] == [urgent, a[0], b[0], a[1]]
    assert all(j.status is S.PENDING and j.prompt_id and j.server == "http://a" for j in first)
    assert len({j.prompt_id for j in first}) == 4
    rest = select_next_jobs(store, 10)
    assert [j.id for j in rest] == [b[1], a[2]]
    assert select_next_jobs(store, 3) == [] and select_next_job(store) is None
    with pytest.raises(InvalidInput, match="an int from 1"):
        select_next_jobs(store, 0)


def test_select_next_job_respects_and_pins_the_server(store: Store) -> None:
    run = store.new_run("r")
    job = enqueue(store, WORKFLOW, run=run)
    assert select_next_job(store, server="http://b") == store.job(job.id)  # pinned to b
    transition(store, job.id, S.SUBMITTED)
    retry(store, job.id, reason="b forgot it")  # back to pending, still b's
    assert (store.job(job.id).status, store.job(job.id).server) == (S.PENDING, "http://b")
    assert select_next_job(store, server="http://a") is None
    free = enqueue(store, WORKFLOW, run=run)
    claimed = select_next_job(store, server="http://a")
    assert claimed is not None and (claimed.id, claimed.server) == (free.id, "http://a")
    other = select_next_job(store, server="http://b")
    assert other is not None and other.id == job.id


def test_two_threads_never_claim_the_same_job(store: Store) -> None:
    run = store.new_run("r")
    for _ in range(120):
        enqueue(store, WORKFLOW, run=run)
    start = threading.Barrier(3)
    claims: list[list[int]] = [[], [], []]
    errors: list[BaseException] = []

    def worker(mine: list[int]) -> None:
        try:
            start.wait()
            while (job := select_next_job(store)) is not None:
                mine.append(job.id)
                mine.extend(j.id for j in select_next_jobs(store, 3))
        except BaseException as exc:  # surface in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    everything = [i for c in claims for i in c]
    assert sorted(everything) == sorted(set(everything)) and len(everything) == 120
    prompt_ids = sql(store, "SELECT count(DISTINCT prompt_id) FROM jobs")
    assert prompt_ids == [(120,)]


def test_record_intent_and_unsettled_jobs(store: Store) -> None:
    run = store.new_run("r")
    quiet, claimed, sent, done = (enqueue(store, WORKFLOW, run=run) for _ in range(4))
    store.record_intent(claimed.id, prompt_id="p-claimed", server="http://a")
    assert store.record_intent(claimed.id, prompt_id="p-claimed").prompt_id == "p-claimed"
    transition(store, sent.id, S.SUBMITTED, prompt_id="p-sent")
    transition(store, done.id, S.SUBMITTED)
    transition(store, done.id, S.COMPLETED)
    assert [j.id for j in store.unsettled_jobs()] == [claimed.id, sent.id]
    with pytest.raises(StoreError, match="only a pending job without one"):
        store.record_intent(claimed.id, prompt_id="another")
    with pytest.raises(StoreError, match="is submitted"):
        store.record_intent(sent.id, prompt_id="p-sent")
    with pytest.raises(JobNotInStore):
        store.record_intent(999, prompt_id="x")
    assert store.job(quiet.id).prompt_id is None


def test_record_result_completes_in_one_transaction(store: Store) -> None:
    parent = completed_job(store, n=1)[0]
    job = enqueue(store, seeded(9, text="a cat"), run="r", parent=parent)
    transition(store, job.id, S.SUBMITTED)
    transition(store, job.id, S.RUNNING)
    images = [NewCandidate("2", f"r/x{i}.png", sha256="ab", width=8, bytes=10) for i in range(4)]
    made = record_result(store, job.id, images)
    assert [c.path for c in made] == [f"r/x{i}.png" for i in range(4)]
    assert {(c.seed, c.prompt, c.parent_candidate_id) for c in made} == {(9, "a cat", parent)}
    assert store.job(job.id).status is S.COMPLETED
    assert store.candidate(parent).child_count == 4
    events = store.events(job=job.id)
    assert events["to_status"].tolist() == ["pending", "submitted", "running", "completed"]
    # again: nothing changes
    assert record_result(store, job.id, images) == made
    assert store.candidate(parent).child_count == 4
    assert len(store.candidates(job=job.id)) == 4 and len(store.events(job=job.id)) == 4


def test_record_result_failures_leave_nothing_behind(store: Store) -> None:
    parent = completed_job(store, n=1)[0]
    pending = enqueue(store, WORKFLOW, run="r", parent=parent)
    with pytest.raises(InvalidTransition, match="from 'pending' to 'completed'"):
        record_result(store, pending.id, [NewCandidate("2", "r/a.png")])
    running = enqueue(store, WORKFLOW, run="r", parent=parent)
    transition(store, running.id, S.SUBMITTED)
    for bad in ("../escape.png", "/etc/passwd", ""):
        with pytest.raises(InvalidInput, match="relative to the output folder"):
            record_result(
                store, running.id, [NewCandidate("2", "r/ok.png"), NewCandidate("2", bad)]
            )
    assert store.job(pending.id).status is S.PENDING
    assert store.job(running.id).status is S.SUBMITTED
    assert store.candidate(parent).child_count == 0
    assert len(store.candidates()) == 1


def test_record_results_completes_many_jobs_in_one_transaction(store: Store) -> None:
    parent = completed_job(store, n=1)[0]
    jobs = [enqueue(store, seeded(i), run="r", parent=parent) for i in range(3)]
    done_before = completed_job(store, n=1)
    for job in jobs:
        transition(store, job.id, S.SUBMITTED)
    pending = enqueue(store, WORKFLOW, run="r")
    images = {j.id: [NewCandidate("2", f"r/{j.id}_{k}.png") for k in range(j.id % 3)] for j in jobs}
    with pytest.raises(InvalidTransition, match=f"job {pending.id} cannot move"):
        record_results(store, {**images, pending.id: [NewCandidate("2", "r/p.png")]})
    assert len(store.candidates()) == 2 and store.candidate(parent).child_count == 0
    old_job = store.candidate(done_before[0]).job_id
    made = record_results(store, {**images, old_job: [NewCandidate("2", "r/ignored.png")]})
    assert {j: [c.path for c in cs] for j, cs in made.items() if j != old_job} == {
        j: [i.path for i in imgs] for j, imgs in images.items()
    }
    assert [c.id for c in made[old_job]] == done_before  # already completed: unchanged
    assert [store.job(j.id).status for j in jobs] == [S.COMPLETED] * 3
    assert [c.seed for c in made[jobs[1].id]] == [1] * len(images[jobs[1].id])
    total = sum(len(v) for v in images.values())
    assert store.candidate(parent).child_count == total
    assert len(store.candidates()) == 2 + total
    assert store.events()["detail"].str.contains('"candidates"').sum() == 2 + 3


def test_the_last_statement_failing_rolls_back_the_whole_transaction(store: Store) -> None:
    job = enqueue(store, WORKFLOW, run=store.new_run("r"), parent=None)
    transition(store, job.id, S.SUBMITTED)
    with pytest.raises(CandidateNotFound), store.transaction() as tx:
        tx.insert_candidates_many([(store.job(job.id), NewCandidate("2", "r/a.png"))])
        tx.add_child_count(4040, 1)  # no such parent: the insert above must vanish too
    assert store.candidates().empty


# ----------------------------------------------------------------------------- DataFrames


def test_candidates_frame_flattens_params_with_nullable_dtypes(store: Store) -> None:
    completed_job(store, "a", seed=1, scale=7.5, label="a cat")
    completed_job(store, "b", n=1, count=20, method="euler", extra={"nested": True})
    frame = store.candidates()
    assert len(frame) == 3 and frame["id"].is_monotonic_increasing
    for column in ("scale", "count", "method", "extra", "seed", "cfg", "steps", "sampler"):
        assert column in frame.columns
    assert "params" not in frame.columns
    assert str(frame["id"].dtype) == "Int64" and str(frame["run_id"].dtype) == "Int64"
    assert str(frame["parent_candidate_id"].dtype) == "Int64"
    assert str(frame["picked"].dtype) == "boolean" and str(frame["stars"].dtype) == "Int16"
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert frame["scale"].tolist()[:2] == [7.5, 7.5] and pd.isna(frame["scale"].iloc[2])
    assert frame["count"].isna().tolist() == [True, True, False]
    assert frame["cfg"].isna().all()  # the candidates' own: the workflow has no cfg
    assert frame["seed"].tolist()[:2] == [1, 1]
    assert frame["extra"].iloc[2] == '{"nested":true}'


def test_params_of_mixed_types_become_the_widest_column(store: Store) -> None:
    completed_job(store, "a", n=1, seed=1, scale=7, note="x", tags=["a"])
    completed_job(store, "b", n=1, seed=2, scale=7.5, note=3)
    frame = store.candidates()
    assert frame["scale"].tolist() == [7.0, 7.5]
    assert frame["note"].tolist() == ['"x"', "3"]  # text mixed with numbers stays JSON text
    assert frame["tags"].iloc[0] == '["a"]' and pd.isna(frame["tags"].iloc[1])


def test_candidates_filters(store: Store) -> None:
    a = completed_job(store, "a", seed=1)
    completed_job(store, "b", seed=2)
    step = store.new_step("a", "generate", WORKFLOW)
    store.pick(a[1])
    assert store.candidates(run="a")["id"].tolist() == a
    assert store.candidates(run=store.run("a"), picked=True)["id"].tolist() == [a[1]]
    assert len(store.candidates(picked=False)) == 3
    assert store.candidates(step=step).empty
    assert store.candidates(job=store.candidate(a[0]).job_id)["id"].tolist() == a
    with pytest.raises(RunNotFound):
        store.candidates(run="zzz")
    with pytest.raises(StepNotFound):
        store.candidates(step=99)
    with pytest.raises(JobNotInStore):
        store.candidates(job=99)
    empty = Store.open(":memory:")
    try:
        frame = empty.candidates()
        assert frame.empty and "path" in frame.columns
        assert str(frame["id"].dtype) == "Int64"
    finally:
        empty.close()


def test_jobs_and_events_frames(store: Store) -> None:
    run = store.new_run("r")
    one = enqueue(store, WORKFLOW, run=run, params={"1.width": 32, "1.height": 16})
    two = enqueue(store, WORKFLOW, run=run, params={"1.width": 48})
    transition(store, two.id, S.CANCELLED)
    frame = store.jobs()
    assert frame["id"].tolist() == [one.id, two.id] and "workflow" not in frame.columns
    assert frame["1.width"].tolist() == [32, 48]
    assert frame["1.height"].tolist()[0] == 16 and pd.isna(frame["1.height"].iloc[1])
    assert frame["status"].tolist() == ["pending", "cancelled"]
    assert str(frame["retries"].dtype) == "Int32" and str(frame["id"].dtype) == "Int64"
    assert str(frame["finished_at"].dtype) == "datetime64[us, UTC]"
    assert store.jobs(status="cancelled")["id"].tolist() == [two.id]
    assert len(store.jobs(run="r", status=[S.PENDING, "cancelled"])) == 2
    with pytest.raises(InvalidInput, match="unknown job status 'done'"):
        store.jobs(status="done")
    events = store.events()
    assert events[["job_id", "to_status"]].values.tolist() == [
        [one.id, "pending"],  # created
        [two.id, "pending"],
        [two.id, "cancelled"],
    ]
    assert events["from_status"].isna().tolist() == [True, True, False]
    assert str(events["at"].dtype) == "datetime64[us, UTC]"
    assert store.events(job=one.id)["to_status"].tolist() == ["pending"]
    runs = store.runs()
    assert runs[["name", "jobs", "candidates"]].values.tolist() == [["r", 2, 0]]


def test_pick_and_star_validate_and_change_only_that_candidate(store: Store) -> None:
    ids = completed_job(store)
    assert store.pick(ids[0]).picked is True
    assert store.pick(ids[0], picked=False).picked is False
    assert store.star(ids[1], 5).stars == 5
    assert store.star(ids[1], None).stars is None
    for bad in (6, -1, 2.5, True, "4"):
        with pytest.raises(InvalidInput, match="0 to 5"):
            store.star(ids[1], bad)  # type: ignore[arg-type]
    with pytest.raises(CandidateNotFound, match="no candidate 999"):
        store.star(999, 3)
    with pytest.raises(CandidateNotFound):
        store.pick(999)
    frame = store.candidates()
    assert frame["picked"].tolist() == [False, False] and frame["stars"].isna().all()


def test_ids_read_from_a_dataframe_are_accepted(store: Store) -> None:
    completed_job(store)
    frame = store.candidates()
    first = frame["id"][0]  # a numpy integer, as a notebook user gets it
    assert store.pick(first).picked is True
    assert store.star(frame["id"][1], 3).stars == 3
    assert store.candidate(first).id == int(first)
    assert store.job(store.jobs()["id"][0]).id == int(store.jobs()["id"][0])


def test_image_path_is_under_the_output_folder(store: Store) -> None:
    cid = completed_job(store, n=1)[0]
    assert store.image_path(cid) == store.output_dir / store.candidate(cid).path
    assert store.image_path(store.candidate(cid)).is_relative_to(store.output_dir)
    with pytest.raises(CandidateNotFound):
        store.image_path(999)


def test_lineage_is_the_family_with_depth(store: Store) -> None:
    root = completed_job(store, n=1)[0]
    child = completed_job(store, parent=root, n=1)[0]
    sibling = completed_job(store, parent=root, n=1)[0]
    grandchildren = completed_job(store, parent=child, n=2)
    family = store.lineage(grandchildren[1])
    assert family[["id", "depth"]].values.tolist() == [
        [root, -2],
        [child, -1],
        [grandchildren[1], 0],
    ]
    down = store.lineage(root)
    assert down[["id", "depth"]].values.tolist() == [
        [root, 0],
        [child, 1],
        [sibling, 1],
        [grandchildren[0], 2],
        [grandchildren[1], 2],
    ]
    assert down.set_index("id").loc[child, "child_count"] == 2
    assert down.set_index("id").loc[root, "child_count"] == 2
    middle = store.lineage(child)
    assert middle["depth"].tolist() == [-1, 0, 1, 1]  # no sibling: only ancestors and descendants
    assert list(middle.columns) == [
        *store.candidates().columns[: list(store.candidates().columns).index("child_count") + 1],
        "depth",
        *store.candidates().columns[list(store.candidates().columns).index("child_count") + 1 :],
    ]
    with pytest.raises(CandidateNotFound):
        store.lineage(12345)


def test_export_parquet_and_csv(store: Store, tmp_path: Path) -> None:
    completed_job(store, seed=4, scale=6.0)
    parquet = store.export(tmp_path / "c.parquet", run="r")
    back = pd.read_parquet(parquet)
    assert (
        back["scale"].tolist() == [6.0, 6.0]
        and back["seed"].tolist() == [4, 4]
        and str(back["created_at"].dtype).endswith("UTC]")
    )
    csv = store.export(tmp_path / "jobs.csv", "jobs")
    assert pd.read_csv(csv)["status"].tolist() == ["completed"]
    with pytest.raises(InvalidInput, match=r"\.parquet or \.csv"):
        store.export(tmp_path / "c.xlsx")
    with pytest.raises(InvalidInput, match="what= is one of"):
        store.export(tmp_path / "c.csv", "steps")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".parquet")) == [
        "c.parquet",
        "jobs.csv",
    ]


# ----------------------------------------------------------------------------- secrets


def test_secret_keys() -> None:
    for key in ("api_key", "api_key_comfy_org", "apiKey", "X-Api-Key", "HF_TOKEN", "auth_token"):
        assert is_secret_key(key), key
    for key in ("password", "client_secret", "Authorization", "accessToken", "private_key"):
        assert is_secret_key(key), key
    for key in ("max_tokens", "token_normalization", "tokenizer", "seed", "keyframes", "prompt"):
        assert not is_secret_key(key), key
    given = {"a": [{"token": "t", "b": 1}], "password": "p"}
    assert strip_secrets(given) == {"a": [{"b": 1}]}
    assert given["password"] == "p"  # the input is not changed


def test_secrets_are_never_stored(store: Store) -> None:
    secret = "sk-SECRET-123"
    run = store.new_run("r", metadata={"api_key": secret, "note": "ok"})
    with_token = copy.deepcopy(WORKFLOW)
    with_token["1"]["inputs"]["hf_token"] = "placeholder"
    job = enqueue(
        store,
        with_token,
        run=run,
        params={"1.width": 32, "1.hf_token": secret},
        metadata={"extra_data": {"api_key_comfy_org": secret, "client_id": "nb"}},
    )
    transition(
        store, job.id, S.SUBMITTED, detail={"headers": {"Authorization": f"Bearer {secret}"}}
    )
    transition(store, job.id, S.FAILED, error={"message": "boom", "password": secret})
    assert store.job(job.id).metadata == {"extra_data": {"client_id": "nb"}}
    dump = sql(
        store,
        "SELECT string_agg(t, '') FROM ("
        "SELECT metadata::VARCHAR AS t FROM runs UNION ALL "
        "SELECT concat(workflow, params, error, metadata) FROM jobs UNION ALL "
        "SELECT detail::VARCHAR FROM job_events)",
    )[0][0]
    assert secret not in dump and "nb" in dump and "boom" in dump


# ----------------------------------------------------------------------------- threads


def test_a_reader_thread_sees_committed_data_while_a_writer_works(store: Store) -> None:
    run = store.new_run("r")
    jobs = [enqueue(store, WORKFLOW, run=run).id for _ in range(40)]
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(len(store.jobs(status="completed")))
                store.candidates()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for job_id in jobs:
            transition(store, job_id, S.SUBMITTED)
            record_result(store, job_id, [NewCandidate("2", f"r/{job_id}_{i}.png") for i in (0, 1)])
    finally:
        done.set()
        reader.join(timeout=60)
    assert errors == []
    assert seen == sorted(seen)  # committed work only grows
    assert len(store.candidates()) == 80


def test_two_threads_and_two_stores_writing_one_row_never_conflict(tmp_path: Path) -> None:
    path = tmp_path / "lab.duckdb"
    first = Store.open(path)
    second = Store.open(path)  # same file, same process: they share the writer lock
    try:
        job = enqueue(first, WORKFLOW, run=first.new_run("r"))
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def bump(store: Store) -> None:
            try:
                start.wait()
                for _ in range(50):
                    with store.transaction():  # a read, then a write on it: not torn
                        retries = store.job(job.id).retries
                        retry(store, job.id, reason=f"bump {retries}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(s,)) for s in (first, second) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert first.job(job.id).retries == second.job(job.id).retries == 200
    finally:
        first.close()
        second.close()


def test_a_job_shows_in_a_cell_without_its_whole_workflow(store: Store) -> None:
    job = enqueue(store, WORKFLOW, run=store.new_run("r"), params={"1.width": 32})
    assert "class_type" not in repr(job)
    assert "params={'1.width': 32}" in repr(job)
    assert store.job(job.id).workflow == seeded(width=32)


def test_a_ctrl_c_during_a_query_reaches_the_caller_as_a_keyboard_interrupt(store: Store) -> None:
    # DuckDB 2.0 turns a SIGINT that arrives while a query runs into RuntimeError("Query
    # interrupted") (13 of 200 interrupts of a status_counts loop, measured), which made
    # comfynb.wait raise instead of returning its summary. When a signal lands inside a query
    # cannot be arranged in a test, so the cursor call raises what DuckDB raises.
    def raising(message: str) -> Any:
        def call(cursor: Any) -> None:
            raise RuntimeError(message)

        return call

    with pytest.raises(KeyboardInterrupt):
        store._execute(store._cursor(), raising("Query interrupted"))
    with pytest.raises(RuntimeError, match="something else"):  # other errors stay themselves
        store._execute(store._cursor(), raising("something else"))


def test_param_columns_come_in_the_order_the_rows_first_hold_them(store: Store) -> None:
    """DISTINCT has no order: without one, two reads (local, through an endpoint) differed."""
    store.new_run("r")
    names = [f"1.p{i}" for i in range(12)]
    for name in names:
        store.add_jobs(['{"1": {"class_type": "X", "inputs": {}}}'], run="r",
                       params_json=[json.dumps({name: 1})])  # fmt: skip
    for _ in range(5):
        columns = list(store.jobs().columns)
        assert columns[columns.index("metadata") + 1 :] == names
