"""The job lifecycle: every allowed and every forbidden move, against a real DuckDB file."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import comfynb
from comfynb import InvalidInput, InvalidTransition, JobNotInStore, JobStatus, Store
from comfynb.core.status import ALLOWED, NOW, JobState, plan_moves
from comfynb.jobs import enqueue
from comfynb.store.lifecycle import transition, transition_many

S = JobStatus
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
# How to reach each status from a fresh pending job.
PATHS: dict[JobStatus, list[JobStatus]] = {
    S.PENDING: [],
    S.SUBMITTED: [S.SUBMITTED],
    S.RUNNING: [S.SUBMITTED, S.RUNNING],
    S.COMPLETED: [S.SUBMITTED, S.COMPLETED],
    S.FAILED: [S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}
ALLOWED_PAIRS = [(a, b) for a in S for b in sorted(ALLOWED[a])]
FORBIDDEN_PAIRS = [(a, b) for a in S for b in S if b not in ALLOWED[a]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with comfynb.open(tmp_path / "lab.duckdb", output_dir=tmp_path / "out") as store:
        yield store


def job_at(store: Store, status: JobStatus) -> int:
    job = enqueue(store, WORKFLOW, run=store.new_run("r"), params={"EmptyImage.width": 32})
    for step in PATHS[status]:
        transition(store, job.id, step)
    assert store.job(job.id).status is status
    return job.id


def event_count(store: Store) -> int:
    return len(store.events())


def test_statuses_and_terminal() -> None:
    assert [s.value for s in S] == [
        "pending",
        "submitted",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert {s for s in S if s.is_terminal} == {S.COMPLETED, S.FAILED, S.CANCELLED}
    assert S.RUNNING == "running"
    assert S.parse("failed") is S.FAILED
    with pytest.raises(InvalidInput, match="use one of: pending"):
        S.parse("done")


@pytest.mark.parametrize(("start", "to"), ALLOWED_PAIRS, ids=lambda s: s.value)
def test_every_allowed_move_updates_the_job_and_writes_one_event(
    store: Store, start: JobStatus, to: JobStatus
) -> None:
    job_id = job_at(store, start)
    before = event_count(store)
    job = transition(store, job_id, to, detail={"why": "test"})
    assert job.status is to
    assert store.job(job_id) == job
    events = store.events(job=job_id)
    assert event_count(store) == before + 1
    last = events.iloc[-1]
    assert (last["from_status"], last["to_status"]) == (start.value, to.value)
    assert '"why":"test"' in last["detail"]


@pytest.mark.parametrize(("start", "to"), FORBIDDEN_PAIRS, ids=lambda s: s.value)
def test_every_forbidden_move_raises_and_changes_nothing(
    store: Store, start: JobStatus, to: JobStatus
) -> None:
    job_id = job_at(store, start)
    job, events = store.job(job_id), event_count(store)
    with pytest.raises(InvalidTransition) as caught:
        transition(store, job_id, to, error={"x": 1})
    assert caught.value.job_id == job_id
    assert f"from {start.value!r} to {to.value!r}" in str(caught.value)
    assert store.job(job_id) == job
    assert event_count(store) == events


def test_timestamps_follow_the_moves(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    submitted = transition(store, job_id, S.SUBMITTED, prompt_id="p1", server="http://a")
    assert submitted.submitted_at is not None and submitted.started_at is None
    assert (submitted.prompt_id, submitted.server) == ("p1", "http://a")
    running = transition(store, job_id, S.RUNNING, progress_value=3, progress_max=20)
    assert running.started_at is not None and running.finished_at is None
    assert (running.progress_value, running.progress_max) == (3, 20)
    done = transition(store, job_id, S.FAILED, error={"type": "OOM", "node": "3"})
    assert done.finished_at is not None and done.error == {"type": "OOM", "node": "3"}
    assert done.created_at <= done.submitted_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert done.finished_at.tzinfo is not None  # type: ignore[union-attr]


def test_back_to_pending_is_a_retry_with_a_fresh_claim(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    transition(store, job_id, S.SUBMITTED, prompt_id="old", server="http://a")
    transition(store, job_id, S.RUNNING, progress_value=5, progress_max=9)
    job = transition(store, job_id, S.PENDING, detail={"reason": "server forgot it"})
    assert job.status is S.PENDING and job.retries == 1
    assert job.prompt_id is None and job.claimed_at is None and job.submitted_at is None
    assert job.started_at is None and job.progress_value is None
    assert job.server == "http://a"  # stays pinned to its server
    detail = store.events(job=job_id).iloc[-1]["detail"]
    assert '"previous_prompt_id":"old"' in detail and "server forgot it" in detail


def test_bad_input_raises_and_changes_nothing(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    job, events = store.job(job_id), event_count(store)
    with pytest.raises(InvalidInput, match=r"unknown field.*status"):
        transition(store, job_id, S.SUBMITTED, status="running")
    with pytest.raises(InvalidInput, match="unknown job status 'done'"):
        transition(store, job_id, "done")
    with pytest.raises(JobNotInStore, match="no job 999"):
        transition(store, 999, S.SUBMITTED)
    with pytest.raises(InvalidInput, match="must be JSON"):
        transition(store, job_id, S.FAILED, error={"bad": object()})
    with pytest.raises(InvalidInput, match="retries must be an int from 0 or None, got -1"):
        transition(store, job_id, S.FAILED, retries=-1)
    with pytest.raises(InvalidInput, match="error must be a dict"):
        transition(store, job_id, S.FAILED, error="boom")
    with pytest.raises(InvalidInput, match="prompt_id must be a string"):
        transition(store, job_id, S.SUBMITTED, prompt_id=7)
    assert store.job(job_id) == job and event_count(store) == events


def test_transition_many_applies_all_in_order(store: Store) -> None:
    a, b, c = (job_at(store, S.PENDING) for _ in range(3))
    jobs = transition_many(
        store,
        [
            (a, S.SUBMITTED),
            (b, "cancelled"),
            (a, S.RUNNING, {"progress_value": 1}),
            (c, S.FAILED, {"error": {"type": "Rejected"}}, {"node": "2"}),
        ],
    )
    assert [(j.id, j.status) for j in jobs] == [
        (a, S.RUNNING),
        (b, S.CANCELLED),
        (a, S.RUNNING),
        (c, S.FAILED),
    ]
    assert store.job(a).submitted_at is not None and store.job(a).progress_value == 1
    events = store.events()
    assert list(zip(events["job_id"], events["to_status"], strict=True)) == [
        (a, "pending"),  # created
        (b, "pending"),
        (c, "pending"),
        (a, "submitted"),
        (b, "cancelled"),
        (a, "running"),
        (c, "failed"),
    ]
    assert transition_many(store, []) == []


def test_a_batch_of_mixed_moves_writes_the_rows_the_moves_one_at_a_time_write(
    tmp_path: Path,
) -> None:
    """Jobs that set different columns share one UPDATE: the rows come out the same."""
    moves: list[Any] = [
        (S.SUBMITTED, {"server": "http://a:1", "error": None}, S.PENDING),
        (S.RUNNING, {"progress_value": 3}, S.SUBMITTED),
        (S.FAILED, {"error": {"type": "OOM", "message": "out of memory"}}, S.RUNNING),
        (S.PENDING, {"server": None}, S.SUBMITTED),  # a requeue: prompt_id and claim cleared
        (S.COMPLETED, {}, S.RUNNING),
        (S.CANCELLED, {}, S.PENDING),
    ]
    rows = []
    for batched in (False, True):
        with comfynb.open(tmp_path / f"{batched}.duckdb", output_dir=tmp_path) as store:
            ids = [job_at(store, start) for _, _, start in moves]
            batch = [(i, to, fields) for i, (to, fields, _) in zip(ids, moves, strict=True)]
            if batched:
                transition_many(store, batch)
            else:
                for move in batch:
                    transition_many(store, [move])
            frame = store.jobs().drop(columns=["created_at"])
            stamps = ["submitted_at", "started_at", "finished_at", "claimed_at"]
            frame[stamps] = frame[stamps].notna()  # times differ between the files
            rows.append(frame)
    assert rows[1].equals(rows[0]), rows[1].compare(rows[0])
    assert rows[1]["status"].tolist() == [to.value for to, _, _ in moves]


def test_a_plan_made_from_states_that_changed_is_refused_and_writes_nothing(
    store: Store,
) -> None:
    """A writer planning from states it keeps (the worker's recorder) learns it was wrong."""
    from comfynb.errors import StaleStates

    a, b = job_at(store, S.SUBMITTED), job_at(store, S.SUBMITTED)
    kept = {a: JobState(S.SUBMITTED, 0, None), b: JobState(S.SUBMITTED, 0, None)}
    transition(store, b, S.CANCELLED)  # meanwhile, from the notebook
    events = event_count(store)
    with pytest.raises(StaleStates, match="changed status"), store.transaction() as tx:
        tx.apply_plan(plan_moves(kept, [(a, S.RUNNING, {}, None), (b, S.RUNNING, {}, None)]))
    assert store.job(a).status is S.SUBMITTED and store.job(b).status is S.CANCELLED
    assert event_count(store) == events


def test_transition_many_with_one_illegal_move_changes_nothing(store: Store) -> None:
    a, b = job_at(store, S.PENDING), job_at(store, S.COMPLETED)
    before = store.jobs()
    events = event_count(store)
    with pytest.raises(InvalidTransition, match=f"job {b} cannot move"):
        transition_many(store, [(a, S.SUBMITTED), (b, S.RUNNING)])
    assert store.jobs().equals(before) and event_count(store) == events
    with pytest.raises(InvalidInput, match="a move is"):
        transition_many(store, [(a,)])  # type: ignore[list-item]
    with pytest.raises(JobNotInStore):
        transition_many(store, [(a, S.SUBMITTED), (404, S.SUBMITTED)])
    assert store.job(a).status is S.PENDING


def test_a_transition_joins_the_callers_transaction(store: Store) -> None:
    job_id = job_at(store, S.PENDING)
    created = event_count(store)
    with pytest.raises(RuntimeError), store.transaction():
        transition(store, job_id, S.SUBMITTED)
        assert store.job(job_id).status is S.SUBMITTED  # visible inside
        raise RuntimeError("abandon")
    assert store.job(job_id).status is S.PENDING
    assert event_count(store) == created


def test_plan_moves_is_pure_and_checks_in_order() -> None:
    plan = plan_moves(
        {7: JobState(S.SUBMITTED, 0, "p")},
        [(7, S.RUNNING, {}, None), (7, S.PENDING, {}, None)],
    )
    before, columns = plan.updates[7]
    assert before is S.SUBMITTED
    assert columns["status"] == "pending" and columns["retries"] == 1
    assert columns["started_at"] is None and columns["prompt_id"] is None
    assert [(e[1], e[2]) for e in plan.events] == [(S.SUBMITTED, S.RUNNING), (S.RUNNING, S.PENDING)]
    assert (
        plan_moves({7: JobState(S.PENDING, 0, None)}, [(7, S.SUBMITTED, {}, None)]).updates[7][1][
            "submitted_at"
        ]
        is NOW
    )
    with pytest.raises(InvalidTransition):
        plan_moves({7: JobState(S.RUNNING, 0, None)}, [(7, S.SUBMITTED, {}, None)])


# --------------------------------------------------------------------------- one writer, read from the source

#: The only functions whose SQL may set jobs.status: the plan writer's two UPDATE forms, which
#: only ``Transaction.apply_plan`` calls (checked below), which only the lifecycle calls.
STATUS_WRITERS = {
    ("store/duckdb/transaction.py", "Transaction._update_group"),
    ("store/duckdb/transaction.py", "Transaction._update_merged"),
}
#: Functions whose UPDATE of jobs builds its SET list at run time, from a fixed list of columns
#: without ``status`` (none today).
DYNAMIC_NOT_STATUS: set[tuple[str, str]] = set()

_UPDATE_JOBS = re.compile(
    r"\bUPDATE\s+(?:\w+\.)?\"?jobs\"?(?:\s+(?:AS\s+)?(?!SET\b)\w+)?\s+SET\b(?P<set>.*?)"
    r"(?=\bFROM\b|\bWHERE\b|\bRETURNING\b|$)",
    re.IGNORECASE | re.DOTALL,
)
_INSERT_JOBS = re.compile(
    r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+(?:\w+\.)?\"?jobs\"?\s*(?P<columns>\([^)]*\))?",
    re.IGNORECASE,
)
_SETS_STATUS = re.compile(r"(?:^|[\s,.])\"?status\"?\s*=", re.IGNORECASE)


def _text(node: ast.AST) -> str | None:
    """The SQL a string expression holds, with ``{}`` for every part known only at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.replace("%s", "{}")
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "{}") + (right if right is not None else "{}")
    return None


def status_writes(sql: str) -> str | None:
    """``"literal"`` if ``sql`` sets jobs.status, ``"dynamic"`` if its SET list is built at
    run time (it may), None if it cannot write a status."""
    for found in _UPDATE_JOBS.finditer(sql):
        if _SETS_STATUS.search(found["set"]):
            return "literal"
        if "{}" in found["set"]:
            return "dynamic"
    for found in _INSERT_JOBS.finditer(sql):
        columns = found["columns"]
        if columns is None or "{}" in columns:  # every column, or columns chosen at run time
            return "dynamic" if columns else "literal"
        if re.search(r"\bstatus\b", columns, re.IGNORECASE):
            return "literal"
    if re.search(r"\bCOPY\s+jobs\b", sql, re.IGNORECASE):
        return "literal"
    return None


def status_problems(root: Path) -> tuple[list[str], set[tuple[str, str]]]:
    """Every call of ``apply_plan`` outside the lifecycle and every SQL text that may write a
    status outside :data:`STATUS_WRITERS`, in every module under ``root``; and the writers seen.
    """
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        for owner, node in _walk(tree, ""):
            where = f"{module}:{getattr(node, 'lineno', 0)} ({owner or 'module'})"
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else None
                if isinstance(node.func, ast.Name):
                    called = node.func.id
                if called == "apply_plan" and module != "store/lifecycle.py":
                    problems.append(f"{where} calls apply_plan")
                if called in ("_update_group", "_update_merged") and owner != (
                    "Transaction.apply_plan"
                ):
                    problems.append(f"{where} calls {called}, the plan writer's own SQL")
                continue
            sql = _text(node)
            kind = None if sql is None else status_writes(sql)
            if kind is None:
                continue
            if (module, owner) in STATUS_WRITERS:
                seen.add((module, owner))
            elif not (kind == "dynamic" and (module, owner) in DYNAMIC_NOT_STATUS):
                problems.append(f"{where} may write jobs.status ({kind}): {sql[:60]!r}")
    return problems, seen


def _walk(node: ast.AST, owner: str) -> Iterator[tuple[str, ast.AST]]:
    """Every node, with the qualified name of the function or class it is in."""
    for child in ast.iter_child_nodes(node):
        inner = owner
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inner = f"{owner}.{child.name}" if owner else child.name
        yield inner if child is not node else owner, child
        # a string inside a bigger string expression is that expression's part, not its own
        if _text(child) is None or isinstance(child, ast.Call):
            yield from _walk(child, inner)


def test_only_the_lifecycle_writes_a_status() -> None:
    """Principle 5: one writer of jobs.status; ``Transaction.apply_plan`` holds its only SQL,
    and only ``store/lifecycle.py`` calls it. Every module's source is read."""
    package = Path(comfynb.__file__).parent
    problems, seen = status_problems(package)
    assert problems == []
    assert seen == STATUS_WRITERS  # the checker found the one writer: it can see them
    assert "apply_plan(" in (package / "store" / "lifecycle.py").read_text()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"jobs/x.py": "def f(tx):\n    tx.apply_plan(plan)\n"},
            "jobs/x.py:2 (f) calls apply_plan",
        ),
        (
            {
                "worker/x.py": "def f(s):\n    s.fetch(\"UPDATE jobs SET a = 1, status = 'failed'\")\n"
            },
            "worker/x.py:2 (f) may write jobs.status (literal)",
        ),
        (
            {
                "store/duckdb/queue.py": "class Q:\n    def g(self, c):\n        q = f'UPDATE jobs j SET {c} = ?'\n"
            },
            "store/duckdb/queue.py:3 (Q.g) may write jobs.status (dynamic)",
        ),
        (
            {"jobs/y.py": "Q = 'INSERT INTO jobs (run_id, status) VALUES (?, ?)'\n"},
            "jobs/y.py:1 (module) may write jobs.status (literal)",
        ),
        (
            {"jobs/z.py": "def h(x):\n    return 'UPDATE jobs ' + 'SET status = ' + x\n"},
            "jobs/z.py:2 (h) may write jobs.status (literal)",
        ),
        (
            {"store/x.py": "def h(tx, m):\n    tx._update_group(m)\n"},
            "store/x.py:2 (h) calls _update_group, the plan writer's own SQL",
        ),
    ],
)
def test_the_status_checker_sees_each_kind_of_writer(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    problems, _ = status_problems(tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_status_checker_lets_other_writes_be() -> None:
    assert status_writes("UPDATE jobs SET retries = ? WHERE status = 'pending'") is None
    assert status_writes("UPDATE candidates SET status = 1") is None
    assert status_writes("INSERT INTO jobs (run_id, workflow) SELECT ?, ?") is None
    assert status_writes("INSERT INTO job_events (job_id, to_status) VALUES (?, ?)") is None
    assert status_writes("INSERT INTO jobs VALUES (?)") == "literal"
