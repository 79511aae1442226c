"""``JobTable``: a live table of a store's jobs in the notebook, with cancel and retry.

Example::

    >>> table = comfynb.JobTable(store, run="portraits")
    >>> table            # the last expression of a cell: the live table shows
    >>> table.stop()     # no more updates (closing the widget stops them too)

An anywidget (JupyterLab, Notebook 7, VS Code, Colab; no server extension). A thread polls
the store (``POLL_INTERVAL`` apart: through a ``comfynb worker`` endpoint each look is one
HTTP request) for the rows written since its last look only (``store.jobs(changed_since=...)``),
and sends the browser the changed rows of the page it shows, with the counts, all of one look
in one message. The kernel holds every job of the run and filters by status; the browser
holds one page (``page_size`` rows, 200 by default; "rows 1-200 of 10,000" and arrows to
page), so opening a table of 10,000 jobs costs one page. Clocks (queue and run times) tick in
the browser, not by messages. A running job's latest sampler preview (``store.previews``: only
those newer than the last look) shows beside its row, the images as binary comm buffers in one
message per look. Where no kernel runs (nbconvert, GitHub), the output holds a small static
HTML table.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anywidget
import pandas as pd
import traitlets

from ..core.models import Run
from ..errors import ComfynbError, InvalidInput
from ..jobs.cancel import cancel
from ..jobs.retry import retry_failed
from .watchers import Watchers

if TYPE_CHECKING:
    from ..store.base import NotebookStore

__all__ = ["JobTable"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the store (at most ~2 a second: remote stores pay HTTP).
POLL_INTERVAL = 0.5
#: Rows the browser holds and shows at once (one page), unless ``page_size`` says otherwise.
PAGE_SIZE = 200
#: Rows the static HTML (nbconvert, GitHub) shows at most.
STATIC_ROWS = 50
STATUSES = ("pending", "submitted", "running", "completed", "failed", "cancelled")
_COLOURS = {
    "pending": "#888",
    "submitted": "#b58900",
    "running": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#7f7f7f",
}
_TIMES = ("created_at", "submitted_at", "started_at", "finished_at")

_ESM = """
const COLOURS = __COLOURS__;
const STATUSES = __STATUSES__;
function fmt(s) {
  if (s == null || !isFinite(s)) return "";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s - 60 * m) + " s";
}
function render({ model, el }) {
  const rows = new Map();
  const trs = new Map();
  const previews = new Map();  // job id -> { url, img }: its latest sampler preview
  const selected = new Set();
  el.classList.add("comfynb-jobtable");
  const bar = document.createElement("div");
  bar.className = "cjt-bar";
  const statusSel = document.createElement("select");
  statusSel.className = "cjt-status";
  for (const s of ["all", ...STATUSES]) {
    const o = document.createElement("option"); o.value = s; o.textContent = s; statusSel.append(o);
  }
  const runSel = document.createElement("select");
  runSel.className = "cjt-run";
  const cancelBtn = document.createElement("button");
  cancelBtn.textContent = "Cancel selected"; cancelBtn.className = "cjt-cancel";
  const retryBtn = document.createElement("button");
  retryBtn.textContent = "Retry failed"; retryBtn.className = "cjt-retry";
  const note = document.createElement("span"); note.className = "cjt-note";
  const counts = document.createElement("span"); counts.className = "cjt-counts";
  const prevBtn = document.createElement("button");
  prevBtn.textContent = "\u2039"; prevBtn.className = "cjt-prev"; prevBtn.title = "previous page";
  const nextBtn = document.createElement("button");
  nextBtn.textContent = "\u203a"; nextBtn.className = "cjt-next"; nextBtn.title = "next page";
  const pageLabel = document.createElement("span"); pageLabel.className = "cjt-page";
  bar.append("status ", statusSel, " run ", runSel, cancelBtn, retryBtn, prevBtn, pageLabel,
    nextBtn, counts, note);
  let shown = { start: 0, total: 0 };
  function showPage() {
    const n = rows.size;
    pageLabel.textContent = n ? `rows ${(shown.start + 1).toLocaleString("en")}-` +
      `${(shown.start + n).toLocaleString("en")} of ${shown.total.toLocaleString("en")}` :
      `no rows of ${shown.total.toLocaleString("en")}`;
    prevBtn.disabled = shown.start <= 0;
    nextBtn.disabled = shown.start + model.get("page_size") >= shown.total;
  }
  function goTo(page) { model.set("page", Math.max(0, page)); model.save_changes(); }
  const shownPage = () => Math.floor(shown.start / model.get("page_size"));
  prevBtn.addEventListener("click", () => goTo(shownPage() - 1));
  nextBtn.addEventListener("click", () => goTo(shownPage() + 1));
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th></th><th>job</th><th>run</th><th>status</th>" +
    "<th>progress</th><th>server</th><th>queued</th><th>ran</th><th>retries</th>" +
    "<th>error</th></tr></thead>";
  const tbody = document.createElement("tbody");
  table.append(tbody);
  const scroll = document.createElement("div"); scroll.className = "cjt-scroll"; scroll.append(table);
  el.append(bar, scroll);

  function fillRuns() {
    const runs = model.get("runs");
    runSel.innerHTML = "";
    for (const [value, label] of [["", "all"], ...runs.map(r => [r, r])]) {
      const o = document.createElement("option"); o.value = value; o.textContent = label;
      runSel.append(o);
    }
    runSel.value = model.get("run");
  }
  fillRuns();
  model.on("change:runs", fillRuns);
  model.on("change:run", () => { runSel.value = model.get("run"); });
  runSel.addEventListener("change", () => { model.set("run", runSel.value); model.save_changes(); });
  statusSel.value = model.get("status") || "all";
  statusSel.addEventListener("change", () => {
    // the kernel filters every job of the run and sends the first page of those
    model.set("status", statusSel.value === "all" ? "" : statusSel.value); model.save_changes();
  });
  model.on("change:status", () => { statusSel.value = model.get("status") || "all"; });

  function showCounts(c) {  // every job of the run, counted by the kernel
    const all = STATUSES.reduce((n, s) => n + (c[s] || 0), 0);
    counts.textContent = " " + all + " jobs: " +
      STATUSES.filter(s => c[s]).map(s => c[s] + " " + s).join(", ");
  }
  function times(r, now) {
    const sent = r.submitted_at ?? r.started_at;
    const queued = r.created_at == null ? null : ((sent ?? r.finished_at ?? now) - r.created_at);
    const ran = r.started_at == null ? null : ((r.finished_at ?? now) - r.started_at);
    return [queued, ran];
  }
  function fill(tr, r) {
    tr.dataset.status = r.status;
    const now = Date.now() / 1000;
    const [queued, ran] = times(r, now);
    const c = tr.children;
    c[1].textContent = r.id;
    c[2].textContent = r.run;
    c[3].innerHTML = "";
    const badge = document.createElement("span");
    badge.className = "cjt-badge"; badge.textContent = r.status;
    badge.style.background = COLOURS[r.status] || "#888";
    c[3].append(badge);
    c[4].innerHTML = "";
    if (r.status === "running" && r.progress_max) {
      const p = document.createElement("progress");
      p.max = r.progress_max; p.value = r.progress_value || 0;
      c[4].append(p, " " + (r.progress_value || 0) + "/" + r.progress_max);
    }
    placePreview(r);
    c[5].textContent = r.server || "";
    c[6].textContent = fmt(queued);
    c[7].textContent = fmt(ran);
    c[8].textContent = r.retries ? r.retries + "/" + r.max_retries : "";
    c[9].innerHTML = "";
    if (r.error_line) {
      const d = document.createElement("details");
      const s = document.createElement("summary"); s.textContent = r.error_line;
      const pre = document.createElement("pre"); pre.textContent = r.error_full;
      d.append(s, pre); c[9].append(d);
    }
  }
  function dropPreview(id) {
    const p = previews.get(id);
    if (p) { URL.revokeObjectURL(p.url); p.img.remove(); previews.delete(id); }
  }
  function placePreview(r) {
    // a running row shows its preview beside the bar; a job no longer under way loses it
    if (r.status !== "running" && r.status !== "submitted") { dropPreview(r.id); return; }
    const p = previews.get(r.id), tr = trs.get(r.id);
    if (p && tr && r.status === "running" && p.img.parentNode !== tr.children[4]) {
      tr.children[4].append(p.img);
    }
  }
  function showPreviews(msg, buffers) {
    msg.previews.forEach((p, i) => {
      const old = previews.get(p.id);
      const img = old ? old.img : document.createElement("img");
      if (old) URL.revokeObjectURL(old.url);
      const url = URL.createObjectURL(new Blob([buffers[i]], { type: p.mime }));
      img.className = "cjt-preview"; img.alt = "preview of job " + p.id; img.src = url;
      previews.set(p.id, { url, img });
      const r = rows.get(p.id);
      if (r) placePreview(r);
    });
  }
  function upsert(r) {
    rows.set(r.id, r);
    let tr = trs.get(r.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.id = r.id;
      for (let i = 0; i < 10; i++) tr.append(document.createElement("td"));
      const box = document.createElement("input"); box.type = "checkbox";
      box.className = "cjt-select";
      box.checked = selected.has(r.id);
      box.addEventListener("change", () => { box.checked ? selected.add(r.id) : selected.delete(r.id); });
      tr.children[0].append(box);
      trs.set(r.id, tr);
      tbody.append(tr);
    }
    fill(tr, r);
  }
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "reset") {  // a page: these rows replace the ones shown
      rows.clear(); trs.clear(); tbody.innerHTML = "";
      for (const id of [...previews.keys()]) dropPreview(id);
    }
    if (msg.type === "reset" || msg.type === "rows") {
      for (const r of msg.rows) upsert(r);
      for (const id of msg.removed || []) {
        rows.delete(id); const tr = trs.get(id); if (tr) tr.remove(); trs.delete(id);
        dropPreview(id);
      }
      if (msg.counts) showCounts(msg.counts);
      if (msg.total != null) shown = { start: msg.start, total: msg.total };
      showPage();
    } else if (msg.type === "note") {
      note.textContent = "· " + msg.text;
    }
    if (msg.previews) showPreviews(msg, buffers);  // with the rows of the same look, or alone
  });
  cancelBtn.addEventListener("click", () => {
    model.send({ type: "cancel", ids: [...selected] }); selected.clear();
    for (const b of tbody.querySelectorAll("input.cjt-select")) b.checked = false;
  });
  retryBtn.addEventListener("click", () => {
    // the selected jobs that failed, or (none selected) every failed job of the run
    model.send(selected.size ? { type: "retry", ids: [...selected] } :
      { type: "retry", failed: true });
  });
  const clock = setInterval(() => {
    const now = Date.now() / 1000;
    for (const [id, r] of rows) {
      if (r.status !== "running" && r.status !== "submitted" && r.status !== "pending") continue;
      const [queued, ran] = times(r, now);
      const c = trs.get(id).children;
      c[6].textContent = fmt(queued); c[7].textContent = fmt(ran);
    }
  }, 1000);
  model.send({ type: "hello" });
  return () => {
    model.send({ type: "bye" });  // the output was cleared: the kernel may stop looking
    clearInterval(clock);
    for (const id of [...previews.keys()]) dropPreview(id);
  };
}
export default { render };
""".replace("__COLOURS__", json.dumps(_COLOURS)).replace("__STATUSES__", json.dumps(list(STATUSES)))

_CSS = """
.comfynb-jobtable { font: 12px/1.4 var(--jp-ui-font-family, sans-serif); }
.comfynb-jobtable .cjt-bar { margin-bottom: 4px; display: flex; flex-wrap: wrap; gap: 6px;
  align-items: center; }
.comfynb-jobtable .cjt-counts, .comfynb-jobtable .cjt-note { white-space: nowrap; }
.comfynb-jobtable .cjt-scroll { max-height: 420px; overflow: auto; }
.comfynb-jobtable table { border-collapse: collapse; }
.comfynb-jobtable th, .comfynb-jobtable td { padding: 2px 8px; text-align: left;
  border-bottom: 1px solid #ddd; vertical-align: top; }
.comfynb-jobtable th { position: sticky; top: 0; background: var(--jp-layout-color1, #fff); }
.comfynb-jobtable .cjt-badge { color: #fff; border-radius: 3px; padding: 0 6px; }
.comfynb-jobtable details pre { white-space: pre-wrap; max-width: 60em; margin: 2px 0; }
.comfynb-jobtable progress { width: 80px; }
.comfynb-jobtable img.cjt-preview { display: block; width: 64px; height: 64px;
  object-fit: contain; margin-top: 2px; border-radius: 2px; }
.comfynb-jobtable .cjt-page, .comfynb-jobtable .cjt-bar button { white-space: nowrap; }
"""


def _epoch(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value.timestamp())


def _text(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(value)


def _error_lines(error: Any) -> tuple[str | None, str | None]:
    """(first line, the whole error) of a job's stored error (a JSON text)."""
    text = _text(error)
    if not text:
        return None, None
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    if isinstance(parsed, dict):
        kind, message = parsed.get("type"), parsed.get("message")
        head = ": ".join(str(p) for p in (kind, message) if p) or text
        full = json.dumps(parsed, indent=2, default=str)
    else:
        head, full = str(parsed), str(parsed)
    first = head.strip().splitlines()[0] if head.strip() else head
    return first[:200], full


#: the columns of ``store.jobs()`` a row shows, in the order ``_row`` reads them
_COLUMNS = (
    "id", "run_id", "status", "server", "retries", "max_retries", "progress_value",
    "progress_max", "error", *_TIMES,
)  # fmt: skip


def _row(values: tuple[Any, ...], run_names: dict[int, str]) -> dict[str, Any]:
    """One job's row (a plain dict the browser reads) from its ``_COLUMNS`` values."""
    job_id, run_id, status, server, retries, max_retries, value, most, error, *times = values
    line, full = _error_lines(error)
    row: dict[str, Any] = {
        "id": int(job_id),
        "run": run_names.get(int(run_id), str(run_id)),
        "status": str(status),
        "server": _text(server),
        "retries": _int(retries) or 0,
        "max_retries": _int(max_retries) or 0,
        "progress_value": _int(value),
        "progress_max": _int(most),
        "error_line": line,
        "error_full": full,
    }
    for name, at in zip(_TIMES, times, strict=True):
        row[name] = _epoch(at)
    return row


class JobTable(anywidget.AnyWidget):
    """A live table of jobs: status, progress, server, times, retries, errors; cancel, retry.

    Example::

        >>> worker = comfynb.Worker(store, servers=[url]).start()
        >>> table = comfynb.JobTable(store, run="portraits")
        >>> table                       # shows the table; it follows the worker as it runs
        >>> table.status = "failed"     # only failed jobs (the browser's filter too)
        >>> table.page = 2              # the third page of rows (the arrows in the browser)
        >>> len(table.rows()), len(table.page_rows())
        (10000, 200)
        >>> table.cancel([12, 13]); table.retry([9])
        >>> table.stop()

    Works on a local store and through a ``comfynb worker`` endpoint alike. The kernel holds
    every job of the run (:meth:`rows`) and filters them by ``status``; the browser holds one
    page of them (:meth:`page_rows`, ``page_size`` rows). Cancel and retry go through
    ``comfynb.cancel`` and ``comfynb.retry_failed``; a running job of a local store is
    cancelled on its server with a client made for it.

    Args:
        store: the store (``comfynb.open``).
        run: only this run's jobs (a Run, id or name); ``None`` for all.
        interval: seconds between two looks at the store (at least 0.2).
        page_size: rows per page in the browser (1 to 5,000).
    """

    _esm = _ESM
    _css = _CSS
    run = traitlets.Unicode("").tag(sync=True)
    runs = traitlets.List(traitlets.Unicode()).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    #: the page the browser shows, from 0 (``page_size`` rows each)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(PAGE_SIZE).tag(sync=True)

    def __init__(
        self,
        store: NotebookStore,
        run: Run | int | str | None = None,
        *,
        interval: float = POLL_INTERVAL,
        page_size: int = PAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 0.2:
            raise InvalidInput(f"interval is seconds, at least 0.2; got {interval!r}")
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not (1 <= page_size <= 5000)
        ):
            raise InvalidInput(f"page_size is rows per page, 1 to 5000; got {page_size!r}")
        self._store = store
        self._interval = float(interval)
        self._lock = threading.Lock()
        # one look (or a new page, filter or run) at a time: each reads and moves the cursor
        self._busy = threading.RLock()
        self._known: dict[int, dict[str, Any]] = {}
        self._cursor = 0  # the largest change number read (store.jobs(changed_since=...))
        self._counts: dict[str, int] = {}
        self._shown: list[int] = []  # the ids of the page the browser holds, in order
        self._shown_head: tuple[Any, ...] = ()  # what it was told of counts and the page
        self._run_names: dict[int, str] = {}
        self._preview_seq = 0  # the highest preview ``seq`` sent (``store.previews(after=)``)
        self._previews_off = False  # the store cannot give previews (an older worker)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchers = Watchers()
        #: comm messages this widget sent to the browser (the bench reads it)
        self.messages_sent = 0
        self.updater_cpu_seconds = 0.0
        self._run_names = self._read_runs()
        name = "" if run is None else self._run_name(run)
        super().__init__(
            run=name, runs=list(self._run_names.values()), page_size=page_size, **kwargs
        )
        self.on_msg(self._on_message)
        self.observe(self._on_run, names="run")
        self.observe(self._on_view, names=["status", "page", "page_size"])
        self._look()  # the rows as they are now (for the static table and the first view)
        with self._lock:  # what a view gets when it opens (its "hello"); changes follow it
            self._shown = self._page_ids()[0]
        self.start()

    # ------------------------------------------------------------------ Python API

    def start(self) -> JobTable:
        """Start following the store (the constructor does); returns the table."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._follow, name="comfynb-jobtable", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following the store; the table keeps what it shows."""
        stop = getattr(self, "_stop", None)
        if stop is None:  # the constructor refused its arguments
            return
        stop.set()
        self._watchers.release()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def close(self) -> None:
        """Stop following the store and close the widget."""
        self.stop()
        super().close()

    def rows(self) -> list[dict[str, Any]]:
        """Every row the table holds now: each job of its run (all pages, whatever the status
        filter), one dict per job, oldest first."""
        with self._lock:
            return [dict(self._known[k]) for k in sorted(self._known)]

    def page_rows(self) -> list[dict[str, Any]]:
        """The rows of the page the browser shows: ``status`` filter and ``page`` applied.

        Example::

            >>> table.status, table.page = "failed", 0
            >>> [r["id"] for r in table.page_rows()]
            [9, 31]
        """
        with self._lock:
            ids, _start, _total = self._page_ids()
            return [dict(self._known[i]) for i in ids]

    def cancel(self, job_ids: Iterable[int]) -> list[str]:
        """Cancel these jobs through ``comfynb.cancel``; returns one line per job that failed."""
        problems = []
        for job_id in job_ids:
            try:
                self._cancel_one(int(job_id))
            except ComfynbError as exc:
                problems.append(f"job {job_id}: {exc}")
        self.refresh()
        return problems

    def retry(self, job_ids: Iterable[int]) -> list[str]:
        """Queue these failed jobs again (``comfynb.retry_failed``); lines for those refused."""
        problems = []
        for job_id in job_ids:
            try:
                retry_failed(self._store, int(job_id))
            except ComfynbError as exc:
                problems.append(f"job {job_id}: {exc}")
        self.refresh()
        return problems

    def refresh(self) -> None:
        """Look at the store now and send what changed."""
        with self._busy:
            self._send_changes(self._look())

    # ------------------------------------------------------------------ the updater

    @property
    def watched(self) -> bool:
        """True while the table shows in a notebook (or before it first showed): it looks at
        the store only then. Its output cleared (the cell run again), it rests until shown
        again."""
        return self._watchers.watched

    def _follow(self) -> None:
        while not self._stop.wait(self._interval):
            self._watchers.park(self._stop)  # no view open: rest until one opens
            if self._stop.is_set():
                return
            started = time.thread_time()
            try:
                self.refresh()
            except ComfynbError as exc:  # the store closed, the worker process ended
                self._note(f"stopped following the store: {exc}")
                return
            except Exception as exc:  # a bug here must not end the updates silently
                logger.exception("JobTable could not update")
                self._note(f"could not update: {type(exc).__name__}: {exc}")
            finally:
                self.updater_cpu_seconds += time.thread_time() - started

    def _look(self) -> dict[int, dict[str, Any]]:
        """Read the jobs written since the last look; keep them; return the changed rows."""
        run = self.run or None
        frame = self._store.jobs(run=run, changed_since=self._cursor)
        if frame.empty:
            return {}
        if not set(frame["run_id"].unique()) <= set(self._run_names):  # a run made since
            self._refresh_runs()
        # pd.NA (a null int) compares to nothing without raising: None instead
        changed = {
            int(values[0]): _row(tuple(None if v is pd.NA else v for v in values), self._run_names)
            for values in frame[list(_COLUMNS)].itertuples(index=False, name=None)
        }
        with self._lock:
            top, unordered = max(self._known, default=-1), False
            for job_id, row in changed.items():  # in id order
                known = self._known.get(job_id)
                if known is not None:
                    self._counts[known["status"]] -= 1
                else:  # a new job: after the others, unless an id below one held
                    unordered = unordered or job_id < top
                    top = max(top, job_id)
                self._counts[row["status"]] = self._counts.get(row["status"], 0) + 1
                self._known[job_id] = row
            if unordered:  # rows are kept in id order (_page_ids pages them as they are)
                self._known = dict(sorted(self._known.items()))
            self._cursor = max(self._cursor, int(frame["change_seq"].max()))
        return changed

    def _page_ids(self) -> tuple[list[int], int, int]:
        """(the ids of the shown page, its first row's index, how many rows pass the filter);
        call with ``_lock`` held."""
        status = self.status
        ids = [i for i, r in self._known.items() if r["status"] == status] if status else None
        total = len(self._known) if ids is None else len(ids)
        size = max(1, self.page_size)
        start = min(max(0, self.page), max(0, (total - 1) // size)) * size
        if ids is None:
            keys = list(self._known)  # in id order (see _look)
            return keys[start : start + size], start, total
        return ids[start : start + size], start, total

    def _send_changes(self, changed: dict[int, dict[str, Any]], *, reset: bool = False) -> None:
        """Send the browser the page's changed rows, the counts and the new previews, in ONE
        message (the images as its binary buffers); the whole page when the rows on it are no
        longer the same ones (a filter, a new page, new jobs)."""
        message = self._rows_message(changed, reset=reset)
        previews, images = self._new_previews()
        if previews:
            message = message or {"type": "previews"}
            message["previews"] = previews
        if message is not None and self.comm is not None:
            self.send(message, buffers=images or None)

    def _rows_message(
        self, changed: dict[int, dict[str, Any]], *, reset: bool
    ) -> dict[str, Any] | None:
        if not changed and not reset:
            return None
        with self._lock:
            ids, start, total = self._page_ids()
            counts = {k: v for k, v in self._counts.items() if v}
            head = (start, total, tuple(sorted(counts.items())))
            shown = self._shown
            if reset or ids[: len(shown)] != shown:
                rows = [self._known[i] for i in ids]
                kind = "reset"
                self._preview_seq = 0  # the browser drops its previews: all of them again
            else:  # the same rows, maybe new ones after them (new jobs on the last page)
                rows = [self._known[i] for i in ids if i in changed or i not in set(shown)]
                if not rows and head == self._shown_head:
                    return None  # nothing the browser shows changed
                kind = "rows"
            self._shown, self._shown_head = ids, head
        return {
            "type": kind, "rows": rows, "removed": [], "start": start, "total": total,
            "counts": counts,
        }  # fmt: skip

    def _new_previews(self) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The previews written since the last look: (what each is, its image bytes)."""
        if self._previews_off:
            return [], []
        with self._lock:
            after = self._preview_seq
        try:
            fresh = self._store.previews(run=self.run or None, after=after)
        except (AttributeError, ComfynbError) as exc:
            # a worker of an older comfynb serves no previews: the rows go on without them
            # (a closed store is found by the rows' own look, which comes first)
            self._previews_off = True
            logger.info("JobTable shows no previews: %s", exc)
            return [], []
        if not fresh:
            return [], []
        with self._lock:
            self._preview_seq = max(self._preview_seq, *(p.seq for p in fresh))
        return [{"id": p.job_id, "mime": p.mime} for p in fresh], [p.image for p in fresh]

    def _emit(self, message: dict[str, Any]) -> None:
        if self.comm is None:  # closed
            return
        self.send(message)

    def _send(self, msg: dict[str, Any], buffers: Any = None) -> None:
        """Every comm message (custom ones and trait syncs) passes here: count them."""
        self.messages_sent = getattr(self, "messages_sent", 0) + 1
        super()._send(msg, buffers=buffers)

    def _note(self, text: str) -> None:
        with contextlib.suppress(Exception):
            self._emit({"type": "note", "text": text})

    def _read_runs(self) -> dict[int, str]:
        runs = self._store.runs()
        return {int(i): str(n) for i, n in zip(runs["id"], runs["name"], strict=True)}

    def _refresh_runs(self) -> None:
        self._run_names = self._read_runs()
        names = list(self._run_names.values())
        if self.runs != names:
            self.runs = names

    def _run_name(self, run: Run | int | str) -> str:
        if isinstance(run, Run):
            return run.name
        return self._store.run(run).name

    def _on_run(self, _change: Any) -> None:
        with self._busy:
            with self._lock:  # another run: read its jobs from the start
                self._known, self._counts, self._cursor = {}, {}, 0
            changed = self._look()
            if self.page:
                self.page = 0  # its observer sends the first page
            else:
                self._send_changes(changed, reset=True)

    def _on_view(self, change: Any) -> None:
        """A new status filter, page or page size: the browser gets that page."""
        with self._busy:
            if change["name"] != "page" and self.page:
                self.page = 0  # a new filter starts at its first page (sends it itself)
                return
            self._send_changes({}, reset=True)

    def _send_snapshot(self) -> None:
        with self._busy:
            self._send_changes(self._look(), reset=True)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "hello":
            self._watchers.hello()
            self._send_snapshot()
        elif kind == "bye":
            self._watchers.bye()
        elif kind in ("cancel", "retry"):
            ids = [int(i) for i in content.get("ids") or [] if isinstance(i, int)]
            if kind == "retry":  # the failed ones of those selected, or every failed job
                with self._lock:
                    failed = [i for i, r in self._known.items() if r["status"] == "failed"]
                ids = failed if content.get("failed") else [i for i in ids if i in set(failed)]
            act = self.cancel if kind == "cancel" else self.retry
            problems = act(ids)
            done = len(ids) - len(problems)
            verb = "cancelled" if kind == "cancel" else "queued again"
            self._note(f"{done} {verb}" + ("; " + "; ".join(problems) if problems else ""))

    def _cancel_one(self, job_id: int) -> None:
        from ..store.base import ServedStore

        job = self._store.job(job_id)
        if isinstance(self._store, ServedStore) or job.status.value not in (
            "submitted",
            "running",
        ):
            cancel(self._store, job)
            return
        from ..client import Client

        with Client(job.server or "") as client:
            cancel(self._store, job, client=client)

    # ------------------------------------------------------------------ outside a kernel

    def _repr_html_(self) -> str:
        """A static table (at most ``STATIC_ROWS`` rows) for nbconvert and GitHub."""
        rows = self.rows()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
        head = "".join(
            f"<th>{h}</th>" for h in ("job", "run", "status", "server", "retries", "error")
        )
        body = []
        for row in rows[:STATIC_ROWS]:
            colour = _COLOURS.get(row["status"], "#888")
            cells = [
                str(row["id"]),
                html.escape(row["run"]),
                f'<span style="color:{colour}">{html.escape(row["status"])}</span>',
                html.escape(row["server"] or ""),
                str(row["retries"] or ""),
                html.escape(row["error_line"] or ""),
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        more = len(rows) - STATIC_ROWS
        tail = f"<p>… and {more} more jobs</p>" if more > 0 else ""
        return (
            f'<div class="comfynb-jobtable-static"><p>{len(rows)} jobs: {summary}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"{tail}</div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if bundle is not None else ({"text/plain": repr(self)}, {})
        data["text/html"] = self._repr_html_()
        return data, metadata

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
        return f"JobTable(run={self.run or None!r}, {summary or 'no jobs'})"
