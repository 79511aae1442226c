"""A store with 1,000,000 candidates: what the DataFrame reads and lineage cost, and the file size.

Run: ``python bench/store_scale.py [--candidates 1000000] [--repeat 3]``. Prints its figures.

The rows are generated in SQL inside a fresh store (1,000 runs of 1,000 candidates, 4 per
job, params JSON with seed, cfg, steps, sampler; in each run a chain of 10 refinements so a
candidate has 10 generations of ancestors). Then:

- ``store.candidates()``: every row to a DataFrame, params flattened into columns (s);
- ``store.candidates(run=...)``: one run's 1,000 rows (ms);
- ``store.lineage(id)``: 11 candidates, 10 generations deep (ms);
- the file size after a checkpoint;
- the raw DuckDB query of the same rows (``SELECT * FROM candidates [WHERE run_id = ?]``
  then ``.df()``, and through Arrow): the ratio store / raw shows what the store adds
  (flattened params, nullable dtypes, the structure pass over params).

Medians over ``--repeat`` runs (20 for the millisecond figures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfynb
from comfynb import Store

RUN_SIZE = 1000


def median_time(work: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def fill(store: Store, candidates: int) -> None:
    """Runs, completed jobs and candidates generated in SQL, in insertion order by run."""
    runs, jobs = candidates // RUN_SIZE, candidates // 4
    with store.transaction() as tx:
        tx.fetch(
            "INSERT INTO runs (id, name) SELECT range + 1, 'run-' || (range + 1) FROM range(?)",
            [runs],
        )
        tx.fetch(
            "INSERT INTO jobs (id, run_id, prompt_id, status, workflow, params, submitted_at, "
            "started_at, finished_at) SELECT range + 1, range * 4 // ? + 1, md5(range::VARCHAR), "
            '\'completed\', \'{"1":{"class_type":"EmptyImage","inputs":{}}}\', '
            "json_object('seed', range), now(), now(), now() FROM range(?)",
            [RUN_SIZE, jobs],
        )
        # the candidate at position k (1..10) of each run refines the one before it
        tx.fetch(
            "INSERT INTO candidates (id, job_id, run_id, parent_candidate_id, node_id, path, "
            "sha256, width, height, bytes, seed, prompt, params, stars) "
            "SELECT range + 1, range // 4 + 1, range // ? + 1, "
            "CASE WHEN range % ? BETWEEN 1 AND 10 THEN range END, '9', "
            "'run-' || (range // ? + 1) || '/cnb_' || lpad((range + 1)::VARCHAR, 7, '0') || '_.png', "
            "md5(range::VARCHAR) || md5((range + 1)::VARCHAR), 512, 512, 400000 + range % 9000, "
            "range, 'a photo of a cat, variation ' || (range % 97), "
            "json_object('seed', range, 'cfg', 4 + (range % 10) * 0.5, 'steps', 20 + range % 3, "
            "'sampler', 'euler'), CASE WHEN range % 7 = 0 THEN range % 6 END FROM range(?)",
            [RUN_SIZE, RUN_SIZE, RUN_SIZE, candidates],
        )
        # explicit ids above: move the sequences past them
        for table, n in (("runs", runs), ("jobs", jobs), ("candidates", candidates)):
            tx.fetch(f"SELECT max(nextval('{table}_id_seq')) FROM range(?)", [n])
    store._fetch("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # DuckDB's .df() warns under pandas 3.1 on TIMESTAMPTZ (the raw baseline uses it)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.duckdb"
        with comfynb.open(path, output_dir=Path(folder) / "out") as store:
            start = time.perf_counter()
            fill(store, args.candidates)
            print(
                f"{args.candidates:,} candidates generated in {time.perf_counter() - start:.1f} s"
            )
            report(store, path, args.repeat)


def report(store: Store, path: Path, repeat: int) -> None:
    run = store.run(f"run-{len(store.runs()) // 2}")
    deep = store.candidates(run=run)["id"].iloc[10]  # position 10: ten ancestors
    cursor = store._cursor()  # the same connection, without the store's work

    full, frame = median_time(store.candidates, repeat)
    raw_full, raw = median_time(lambda: cursor.execute("SELECT * FROM candidates").df(), repeat)
    arrow_full, _ = median_time(
        lambda: cursor.sql("SELECT * FROM candidates").to_arrow_table().to_pandas(), repeat
    )
    one, one_frame = median_time(lambda: store.candidates(run=run), 20)
    raw_one, raw_frame = median_time(
        lambda: cursor.execute("SELECT * FROM candidates WHERE run_id = ?", [run.id]).df(), 20
    )
    lineage, chain = median_time(lambda: store.lineage(int(deep)), 20)
    raw_lineage, _ = median_time(
        lambda: cursor.execute(
            "WITH RECURSIVE up(id, parent) AS (SELECT id, parent_candidate_id FROM candidates "
            "WHERE id = ? UNION ALL SELECT c.id, c.parent_candidate_id FROM candidates c "
            "JOIN up ON c.id = up.parent) SELECT * FROM up",
            [int(deep)],
        ).fetchall(),
        20,
    )
    assert len(frame) == len(raw) and len(one_frame) == len(raw_frame) == RUN_SIZE
    assert len(chain) == 11, len(chain)
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("*.wal"))
    print(f"store.candidates() -> DataFrame     {full:8.2f} s   ({len(frame.columns)} columns)")
    print(
        f"  raw SELECT * .df()               {raw_full:8.2f} s   store/raw {full / raw_full:.1f}x"
    )
    print(
        f"  raw SELECT * via Arrow           {arrow_full:8.2f} s   store/raw {full / arrow_full:.1f}x"
    )
    print(f"store.candidates(run=...) 1,000    {one * 1000:8.1f} ms")
    print(
        f"  raw SELECT ... WHERE run_id .df(){raw_one * 1000:8.1f} ms   store/raw {one / raw_one:.1f}x"
    )
    print(
        f"store.lineage(), 10 deep           {lineage * 1000:8.1f} ms   ({len(chain)} candidates)"
    )
    print(f"  raw recursive CTE (ids only)     {raw_lineage * 1000:8.1f} ms")
    print(f"file size                          {size / 1e6:8.1f} MB")
    print(f"flattened param columns: {sorted(set(frame.columns) - set(raw.columns))}")


if __name__ == "__main__":
    main()
