"""``comfynb demo``: a sweep of ComfyUI's default txt2img graph and a refine of the best image.

It starts the embedded ComfyUI simulator (or talks to ``--server URL``, default
``$COMFYUI_URL`` when set), opens or creates a
store (``--db``, default ``comfynb-demo/demo.duckdb``; images in ``--out``, default
``outputs`` beside it), and in the store's run ``"demo"``:

1. sweeps the default txt2img graph over 3 seeds x 2 cfg values (``comfynb.sweep``: one
   step, 6 jobs);
2. refines the best candidate of the sweep, img2img (``comfynb.refine``: one step, 1 job).
   The best is the first candidate of the sweep (in the order queued) that is picked (in
   the gallery, say), else the first one (seed 1, cfg 5), which the demo then picks;

a worker runs the jobs while ``comfynb.wait`` shows a progress bar. Then it prints the
candidates (id, seed, cfg, parent, picked, path), writes a contact sheet of them with their
params (``Gallery.save``, ``demo-sheet.png`` beside the store), and prints where the store and the images are and the Python lines
that open them in a notebook.

Run it again on the same store and it continues: a step already queued is not queued again;
its jobs that a previous demo left unfinished (interrupted) run now, and its failed jobs are
queued again (``comfynb.retry_failed``: a copy each; the failed job stays, with its error).
A finished demo adds nothing.

Before queueing anything it checks that the server has what the graph needs (its
``/object_info``: the checkpoint above all); if not, it says what is missing and what to do
(which file to put where, or ``--ckpt NAME`` with the ones the server has) and exits 1. Jobs
that fail anyway: each distinct reason is printed, exit 1. Ctrl-C: exit 130, the store
consistent; run it again to finish.

Example::

    $ comfynb demo                                     # the embedded simulator, a few seconds
    $ comfynb demo --server http://127.0.0.1:8188 --ckpt v1-5-pruned-emaonly.safetensors
    $ comfynb demo --db lab/demo.duckdb --out lab/images
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .workflows.workflow import Workflow

if TYPE_CHECKING:
    import pandas as pd

    from .core.models import Run
    from .store import Store
    from .views.wait import WaitSummary

DEFAULT_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
DEFAULT_DB = "comfynb-demo/demo.duckdb"
SD15_URL = (
    "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
    + DEFAULT_CHECKPOINT
)
#: The run the demo works in; its steps are found again on the next ``comfynb demo``.
RUN = "demo"
SEEDS = (1, 2, 3)
CFGS = (5.0, 8.0)
REFINE = {"KSampler.seed": 7}
DENOISE = 0.5
#: Seconds per sampler step on the embedded simulator (20 steps: 0.1 s an image).
SIMULATOR_STEP_SECONDS = 0.005

# ComfyUI's default txt2img graph (the frontend's classic default workflow), in API format: the
# one comfynb ships (``comfynb.Workflow.example("txt2img")``), saving as "demo".
TXT2IMG: dict[str, Any] = Workflow.example("txt2img").to_api()
TXT2IMG["9"]["inputs"]["filename_prefix"] = "demo"


def txt2img(
    seed: int,
    *,
    steps: int = 20,
    prompt: str | None = None,
    size: int = 512,
    sampler: str = "euler",
    checkpoint: str = DEFAULT_CHECKPOINT,
    prefix: str = "demo",
) -> dict[str, Any]:
    """Return ComfyUI's default txt2img graph (API format) with the given inputs.

    Example::

        >>> graph = txt2img(42, steps=8, size=64)
        >>> graph["3"]["inputs"]["seed"], graph["5"]["inputs"]["width"]
        (42, 64)
    """
    graph = copy.deepcopy(TXT2IMG)
    graph["3"]["inputs"].update(seed=seed, steps=steps, sampler_name=sampler)
    graph["4"]["inputs"]["ckpt_name"] = checkpoint
    graph["5"]["inputs"].update(width=size, height=size)
    graph["9"]["inputs"]["filename_prefix"] = prefix
    if prompt is not None:
        graph["6"]["inputs"]["text"] = prompt
    return graph


#: Lines go out at once (``comfynb demo | tee``, a test reading the pipe).
_say = functools.partial(print, flush=True)


class DemoStopped(Exception):
    """The demo cannot go on; the message says why and what to do (exit 1, no traceback)."""


@dataclass(frozen=True)
class Paths:
    """Where the demo's store, images and contact sheet are."""

    db: Path
    out: Path | None  # None: ``outputs`` beside the store
    sheet: Path


def run_demo(
    *,
    db: str | os.PathLike[str] = DEFAULT_DB,
    out: str | os.PathLike[str] | None = None,
    server: str | None = None,
    ckpt: str = DEFAULT_CHECKPOINT,
    steps: int = 20,
) -> int:
    """Run the demo and print what it did; returns the exit code.

    0: the sweep and the refine are done (now or by an earlier run); 1: it could not go on
    (the message on stderr says why and what to do); 130: interrupted (Ctrl-C), the store
    consistent; run it again to finish.

    Example::

        >>> run_demo(db="comfynb-demo/demo.duckdb")     # what ``comfynb demo`` runs
        0
    """
    from .errors import ComfynbError

    db_path = Path(db).expanduser()
    paths = Paths(
        db=db_path,
        out=None if out is None else Path(out).expanduser(),
        sheet=db_path.with_name(f"{db_path.stem}-sheet.png"),
    )
    try:
        return _demo(paths, server=server, ckpt=ckpt, steps=steps)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the store is consistent; run the same `comfynb demo` again to "
            "finish the jobs left",
            file=sys.stderr,
        )
        return 130
    except DemoStopped as exc:
        print(f"comfynb demo: {exc}", file=sys.stderr)
        return 1
    except ComfynbError as exc:
        print(f"comfynb demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder it must write (the store's, the images') cannot be
        print(f"comfynb demo: cannot write: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: said in one line; COMFYNB_DEBUG=1 shows the traceback
        if os.environ.get("COMFYNB_DEBUG"):
            raise
        print(
            f"comfynb demo: unexpected {type(exc).__name__}: {exc}\n"
            "This is a bug in comfynb; run again with COMFYNB_DEBUG=1 for the traceback and "
            "report it.",
            file=sys.stderr,
        )
        return 1


def _demo(paths: Paths, *, server: str | None, ckpt: str, steps: int) -> int:
    from .client import Client
    from .store import Store
    from .worker.worker import Worker

    graph = txt2img(SEEDS[0], steps=steps, checkpoint=ckpt)
    try:  # what is wrong here is said before a server is started or asked
        paths.db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((p for p in paths.db.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file, not a folder" if blocking else exc.strerror or str(exc)
        raise DemoStopped(
            f"cannot create the folder of --db {paths.db}: {why}; "
            "pass a --db FILE in a folder you can write"
        ) from None
    existed = paths.db.is_file() and paths.db.stat().st_size > 0
    with Store.open(paths.db, paths.out) as store:
        _say(f"{'existing' if existed else 'new'} store {store.path}, run {RUN!r}")
        with _server_url(server) as url:
            with Client(url) as client:
                _say(f"ComfyUI {client.system_stats().comfyui_version} at {url}")
                _check_server(client.object_info(), graph, url=url)
            # jobs an earlier demo left on its embedded simulator (gone now) are rerouted soon
            worker = Worker(store, servers=[url], reroute_after=1.0 if server is None else 10.0)
            worker.start()
            try:
                run = _run(store)
                sweep_step, sweep_jobs = _sweep(store, run, graph)
                _wait(store, sweep_jobs, "sweep")
                best = _best(store, run, sweep_step)
                refine_jobs = _refine(store, run, best)
                _wait(store, refine_jobs, "refine")
            finally:
                worker.stop()
        _report(store, run, paths)
    return 0


def _check_server(info: Mapping[str, Any], graph: Mapping[str, Any], *, url: str) -> None:
    """Refuse, before anything is queued, a server that lacks what ``graph`` needs."""
    from .worker.servers import capabilities, missing_capability

    caps = capabilities(info)
    missing = missing_capability(graph, caps)
    if missing is None:
        return
    ckpt = graph["4"]["inputs"]["ckpt_name"]
    lines = [f"the server at {url} cannot run the demo's graph: {missing}."]
    if ckpt in missing:
        have = sorted(caps.combos.get(("CheckpointLoaderSimple", "ckpt_name"), ()))
        where = f"ComfyUI/models/checkpoints/{ckpt}"
        lines.append(f"What to do: put the checkpoint file at {where} on that server")
        if ckpt == DEFAULT_CHECKPOINT:
            lines.append(f"  (it is at {SD15_URL}),")
        lines.append("  restart ComfyUI, and run the same command again;")
        if have:
            lines.append(
                "  or use a checkpoint the server has: --ckpt NAME, one of: " + ", ".join(have)
            )
        else:
            lines.append(
                "  (it lists no checkpoint at all: ComfyUI/models/checkpoints/ is empty there)"
            )
    else:
        lines.append("What to do: install what is missing on that server, or use another one.")
    lines.append("Nothing was queued.")
    raise DemoStopped("\n".join(lines))


def _run(store: Store) -> Run:
    from .errors import RunNotFound

    try:
        return store.run(RUN)
    except RunNotFound:
        return store.new_run(RUN, notes="comfynb demo: a seed x cfg sweep, then a refine")


def _steps_of(store: Store, run: Run, kind: str) -> tuple[pd.DataFrame, list[int]]:
    """The run's jobs and the ids of its steps of ``kind``, oldest first."""
    jobs = store.jobs(run=run)
    step_ids = sorted({int(s) for s in jobs["step_id"].dropna()})
    return jobs, [s for s in step_ids if store.step(s).kind == kind]


def _live(jobs: pd.DataFrame) -> pd.DataFrame:
    """The jobs no retry replaced (a failed job queued again is followed by its copy)."""
    from .jobs.retry import replaced_by_retries

    return jobs[~jobs["id"].isin(replaced_by_retries(jobs["metadata"]))]


def _continue(store: Store, jobs: pd.DataFrame, what: str) -> list[int]:
    """The ids of a step's jobs as they stand, its failed ones queued again once."""
    from .jobs import retry_failed

    live = _live(jobs)
    failed = [int(i) for i in live.loc[live["status"] == "failed", "id"]]
    done = int((live["status"] == "completed").sum())
    left = len(live) - done - len(failed)
    ids = [int(i) for i in live["id"] if int(i) not in failed]
    if not failed and not left:
        _say(f"{what}: already done by an earlier run ({_jobs(done)}), nothing added")
        return ids
    again = [retry_failed(store, job_id).id for job_id in failed]
    _say(
        f"{what}: continuing an earlier run: {done} done, {left} left"
        + (f", {len(failed)} failed queued again" if failed else "")
    )
    return ids + again


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _sweep(store: Store, run: Run, graph: Mapping[str, Any]) -> tuple[int, list[int]]:
    """The sweep step's id and its jobs to wait for: queued now, or an earlier run's."""
    from .jobs.sweep import sweep

    jobs, steps = _steps_of(store, run, "sweep")
    what = f"sweep {len(SEEDS)} seeds x {len(CFGS)} cfg"
    if steps:
        return steps[0], _continue(store, jobs[jobs["step_id"] == steps[0]], what)
    grid: dict[str, list[Any]] = {"KSampler.seed": [*SEEDS], "KSampler.cfg": [*CFGS]}
    queued = sweep(store, graph, grid, run=run)
    seeds = ", ".join(str(s) for s in SEEDS)
    cfgs = ", ".join(f"{c:g}" for c in CFGS)
    _say(f"{what}: queued {_jobs(len(queued))} (seed {seeds}; cfg {cfgs})")
    step_id = queued[0].step_id
    assert step_id is not None  # a sweep's jobs belong to its step
    return step_id, [job.id for job in queued]


def _best(store: Store, run: Run, step_id: int) -> int:
    """The sweep's first picked candidate, else its first one (picked now); in job order."""
    found = store.candidates(run=run, step=step_id)
    if found.empty:
        raise DemoStopped("the sweep made no image; nothing to refine")
    found = found.sort_values(["job_id", "id"])  # the sweep's order (ids: completion order)
    picked = found[found["picked"].astype(bool)]
    if not picked.empty:
        return int(picked["id"].iloc[0])
    first = int(found["id"].iloc[0])
    store.pick(first)
    return first


def _refine(store: Store, run: Run, best: int) -> list[int]:
    from .jobs import refine

    jobs, steps = _steps_of(store, run, "refine")
    what = "refine"
    if steps:
        step = store.step(steps[0])
        return _continue(
            store,
            jobs[jobs["step_id"] == step.id],
            f"{what} of candidate {step.parent_candidate_id}",
        )
    queued = refine(store, best, params=REFINE, denoise=DENOISE)
    _say(
        f"{what} of candidate {best} (the first picked, else the first of the sweep): "
        f"queued {_jobs(len(queued))} "
        f"(img2img, denoise {DENOISE:g}, seed {REFINE['KSampler.seed']})"
    )
    return [job.id for job in queued]


def _wait(store: Store, job_ids: Sequence[int], what: str) -> WaitSummary:
    """Wait for the jobs with a bar; stop with each distinct reason if any failed."""
    from .views.wait import wait

    summary = wait(store, list(job_ids))
    if summary.interrupted:
        raise KeyboardInterrupt
    if summary.failed or summary.cancelled or summary.pending:
        jobs = store.jobs(status=["failed", "cancelled"])
        jobs = jobs[jobs["id"].isin(list(job_ids))]
        reasons = collections.Counter(_reason(error) for error in jobs["error"])
        lines = [
            f"{what}: {summary.done} done, {summary.failed} failed, "
            f"{summary.cancelled} cancelled, {summary.pending} left",
            *(f"  {_jobs(n)}: {reason}" for reason, n in sorted(reasons.items())),
            *(f"  server {down}" for down in summary.servers_down),
            "Fix what is said above, then run the same `comfynb demo` again: it continues.",
        ]
        raise DemoStopped("\n".join(lines))
    return summary


def _reason(error: Any) -> str:
    """A stored job error in one line: ``ExecutionError in node 3 (KSampler): OOM: ...``."""
    if isinstance(error, str):
        with contextlib.suppress(ValueError):
            error = json.loads(error)
    if not isinstance(error, Mapping):
        return "cancelled" if error is None else str(error)
    kind = str(error.get("type") or "error")
    if error.get("node_id") is not None:
        kind += f" in node {error['node_id']}"
        if error.get("node_type"):
            kind += f" ({error['node_type']})"
    message = str(error.get("message") or "").strip()
    if error.get("exception_type"):
        message = f"{error['exception_type']}: {message}"
    return f"{kind}: {message}" if message else kind


def _report(store: Store, run: Run, paths: Paths) -> None:
    import pandas as pd

    from .views.gallery import Gallery

    frame = store.candidates(run=run).sort_values(["job_id", "id"])  # the order queued
    table = frame[["id", "seed", "cfg", "parent_candidate_id", "picked", "path"]].rename(
        columns={"parent_candidate_id": "parent"}
    )
    table["parent"] = ["" if pd.isna(p) else int(p) for p in table["parent"]]
    table["cfg"] = table["cfg"].map(lambda c: f"{c:g}")
    _say()
    _say(table.to_string(index=False))
    _say()
    gallery = Gallery(store, run=run, poll=None)
    try:
        sheet = gallery.save(paths.sheet)
    finally:
        gallery.close()
    db = Path(store.path).resolve()
    images = store.output_dir.resolve()
    _say(f"store:         {db}")
    _say(f"images:        {images}")
    _say(f"contact sheet: {sheet.resolve()}")
    _say()
    _say("In a notebook:")
    opened = (  # JSON's quoting is Python's too (a Windows path's backslashes escaped)
        f"store = comfynb.open({json.dumps(str(db))})"
        if images == (db.parent / "outputs")
        else f"store = comfynb.open({json.dumps(str(db))}, output_dir={json.dumps(str(images))})"
    )
    _say("    import comfynb")
    _say(f"    {opened}")
    _say(f'    comfynb.Gallery(store, run="{RUN}")')
    _say()
    refined = int(frame["parent_candidate_id"].notna().sum())
    _say(
        f"done: {len(frame)} candidates ({len(frame) - refined} from the sweep, "
        f"{refined} refined) in {db.name}; open the contact sheet or the notebook lines above"
    )


@contextlib.contextmanager
def _server_url(server: str | None) -> Iterator[str]:
    if server is not None:
        yield server
        return
    from .simulator import Simulator

    with Simulator(step_seconds=SIMULATOR_STEP_SECONDS) as sim:  # a temp root, removed at stop
        yield sim.url
