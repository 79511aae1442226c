"""Reading only what changed: ``store.jobs(changed_since=n)`` and ``store.candidates(...)``.

Every write of a job or candidate row gives it the next change number (``change_seq``); a view
(``JobTable``, ``Gallery``) keeps the largest it saw and reads only the rows written after it.
Each test runs on a real DuckDB file, read locally and through a real endpoint (a
RemoteStore over loopback HTTP, as in tests/test_remote_store.py); the owner's writes (claims,
transitions, progress, results) are made on the local store, as the worker makes them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import trivial_prompt

import comfynb
from comfynb import InvalidInput, JobStatus
from comfynb.core.models import NewCandidate
from comfynb.jobs import record_results
from comfynb.store import MIGRATIONS, NotebookStore, Store
from comfynb.store.lifecycle import transition_many


def cursor_of(frame: pd.DataFrame, before: int) -> int:
    return int(frame["change_seq"].max()) if len(frame) else before


def test_only_the_jobs_written_after_the_cursor_come_back(
    view: NotebookStore, store: Store
) -> None:
    view.new_run("r"), view.new_run("other")
    ids = comfynb.enqueue_many(view, [trivial_prompt(f"p{i}") for i in range(6)], run="r")
    other = comfynb.enqueue(view, trivial_prompt("o"), run="other")
    first = view.jobs(run="r", changed_since=0)
    assert first["id"].tolist() == [j.id for j in ids]
    assert first["change_seq"].is_unique and (first["change_seq"] > 0).all()
    cursor = cursor_of(first, 0)
    nothing = view.jobs(run="r", changed_since=cursor)
    assert nothing.empty and "change_seq" in nothing.columns

    claimed = store.claim_next_job()  # a claim: the server and prompt_id are written
    assert claimed is not None and claimed.id == ids[0].id
    transition_many(store, [(ids[2].id, JobStatus.SUBMITTED), (other.id, JobStatus.SUBMITTED)])
    with store.transaction() as tx:
        tx.set_progress({ids[2].id: (3, 20)})
    comfynb.cancel(view, ids[4].id)
    changed = view.jobs(run="r", changed_since=cursor)
    assert changed["id"].tolist() == [ids[0].id, ids[2].id, ids[4].id]
    assert changed["status"].tolist() == ["pending", "submitted", "cancelled"]
    assert changed["progress_value"].tolist()[1] == 3
    assert changed["change_seq"].min() > cursor
    # the same rows, values and dtypes as a local read
    pd.testing.assert_frame_equal(changed, store.jobs(run="r", changed_since=cursor))
    # a whole-store read sees the other run's job too; a status filter applies to rows now
    assert view.jobs(changed_since=cursor)["id"].tolist() == [
        ids[0].id, ids[2].id, ids[4].id, other.id,
    ]  # fmt: skip
    assert view.jobs(run="r", status="submitted", changed_since=cursor)["id"].tolist() == [
        ids[2].id
    ]

    cursor = cursor_of(changed, cursor)
    new = comfynb.enqueue(view, trivial_prompt("late"), run="r")
    assert view.jobs(run="r", changed_since=cursor)["id"].tolist() == [new.id]
    # without changed_since, the frame is as it always was: every row, no change_seq
    assert "change_seq" not in view.jobs(run="r").columns
    assert len(view.jobs(run="r")) == 7


def test_new_candidates_picks_and_stars_come_back(view: NotebookStore, store: Store) -> None:
    view.new_run("r")
    jobs = comfynb.enqueue_many(view, [trivial_prompt(f"p{i}") for i in range(4)], run="r")
    transition_many(store, [(j.id, JobStatus.SUBMITTED) for j in jobs])
    record_results(store, {j.id: [NewCandidate("9", f"r/{j.id}.png")] for j in jobs[:3]})
    first = view.candidates(run="r", changed_since=0)
    assert len(first) == 3
    cursor = cursor_of(first, 0)
    assert view.candidates(run="r", changed_since=cursor).empty
    a, b, c = (int(i) for i in first["id"])

    view.pick(b)  # a pick made by another view (or a cell), read by a gallery
    view.star(c, 4)
    changed = view.candidates(run="r", changed_since=cursor)
    assert changed["id"].tolist() == [b, c]
    assert changed["picked"].tolist() == [True, False]
    assert changed["stars"].tolist()[1] == 4
    pd.testing.assert_frame_equal(changed, store.candidates(run="r", changed_since=cursor))

    cursor = cursor_of(changed, cursor)
    record_results(store, {jobs[3].id: [NewCandidate("9", f"r/{jobs[3].id}.png")]})
    new = view.candidates(run="r", changed_since=cursor)
    assert len(new) == 1 and int(new["job_id"].iloc[0]) == jobs[3].id
    assert a not in new["id"].tolist()


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_a_bad_cursor_is_refused_clearly(view: NotebookStore, bad: object) -> None:
    view.new_run("r")
    for read in (view.jobs, view.candidates):
        with pytest.raises(InvalidInput, match="changed_since is a change number"):
            read(run="r", changed_since=bad)  # type: ignore[operator]


def test_rows_of_a_store_made_before_the_change_numbers_get_them(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    # the migrations before the one that adds change numbers (whatever its number)
    at = next(i for i, m in enumerate(MIGRATIONS) if m.name.endswith("_change_seq"))
    before = MIGRATIONS[:at]
    with Store.open(path, migrations=before) as old:
        old.new_run("r")
        comfynb.enqueue_many(old, [trivial_prompt(f"p{i}") for i in range(3)], run="r")
    with Store.open(path) as store:
        frame = store.jobs(run="r", changed_since=0)
        assert len(frame) == 3 and frame["change_seq"].is_unique
        cursor = int(frame["change_seq"].max())
        comfynb.cancel(store, int(frame["id"].iloc[1]))
        assert store.jobs(changed_since=cursor)["id"].tolist() == [int(frame["id"].iloc[1])]


def test_every_update_of_jobs_and_candidates_takes_a_change_number() -> None:
    """A write that forgot it would be missed by every live view: read the store's SQL."""
    folder = Path(comfynb.__file__).parent / "store"
    found = 0
    for path in folder.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"UPDATE (jobs|candidates) SET(.{0,200})", text, re.S):
            found += 1
            statement = match.group(2).split("WHERE")[0]
            assert "change_seq = nextval('changes_seq')" in statement, (
                f"{path.name}: UPDATE {match.group(1)} without a change number"
            )
    assert found >= 9
