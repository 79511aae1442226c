"""The simulator's engine: the queue, one executor thread, the cache and the history.

Like ComfyUI's prompt worker, one thread takes the prompt with the smallest ``number`` from a
heap, runs its nodes in ComfyUI's order (skipping what the cache holds) and reports each step
as a WebSocket message through the ``Hub`` (:mod:`.hub`).

Example (what ``Simulator`` does)::

    hub = Hub(loop)                       # on the event loop
    engine = Engine(root, hub, faults=Faults())
    engine.start()                        # the executor thread
    engine.submit(task)                   # from a request handler
    engine.stop()
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import nodes as _nodes
from .faults import Faults
from .hub import Hub, dumps

__all__ = ["HISTORY_LIMIT", "Engine", "Task", "execution_order", "now_ms", "signatures"]

# ComfyUI drops the oldest entry before adding one past 10 000, so 10 001 entries stay.
HISTORY_LIMIT = 10_000

Json = dict[str, Any]


def now_ms() -> int:
    """Milliseconds since the epoch, ComfyUI's ``timestamp``/``create_time`` unit."""
    return int(time.time() * 1000)


@dataclass(eq=False)
class Task:
    """One queued prompt: ComfyUI's queue item ``[number, prompt_id, prompt, extra_data, outputs]``."""

    number: float
    prompt_id: str
    prompt: Json
    extra_data: Json
    outputs: list[str]
    seq: int = 0
    epoch: int = 0

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return None if cid is None else str(cid)

    def item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


# ---------------------------------------------------------------------------------------------
# Graph helpers (pure).


def is_link(value: Any) -> bool:
    """True for ``["node_id", output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _inputs(node: Any) -> Json:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def signatures(prompt: Json, input_dir: Path) -> dict[str, str]:
    """Each node's cache key: class + inputs, links replaced by their source's key, recursively."""
    memo: dict[str, str] = {}

    def sig(node_id: str, seen: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt.get(node_id)
        if not isinstance(node, dict) or node_id in seen:
            return f"missing:{node_id}"
        parts: list[Any] = [node.get("class_type")]
        for name, value in sorted(_inputs(node).items()):
            if is_link(value):
                parts.append((name, sig(str(value[0]), seen | {node_id}), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=str)))
        if node.get("class_type") == "LoadImage":
            parts.append(_file_stamp(input_dir, _inputs(node).get("image")))
        digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()
        memo[node_id] = digest
        return digest

    for node_id in prompt:
        sig(node_id, frozenset())
    return memo


def _file_stamp(input_dir: Path, name: Any) -> str:
    # LoadImage's IS_CHANGED hashes the file; its size and mtime tell the same here.
    if not isinstance(name, str):
        return ""
    try:
        stat = (input_dir / name.split(" [")[0]).stat()
    except (OSError, ValueError):
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def execution_order(
    prompt: Json, outputs: list[str], cached: set[str], is_output: Callable[[str], bool]
) -> list[str]:
    """The order ComfyUI's execution list runs nodes in: output nodes and uncached ancestors.

    Nodes enter the pending list depth first from each output node; among the nodes whose inputs
    are ready, an output node goes first, then one that feeds an output node (directly or through
    one node), else the earliest pending one (ComfyUI's ``ux_friendly_pick_node``).
    """
    pending: dict[str, None] = {}
    blocking: dict[str, set[str]] = {}
    block_count: dict[str, int] = {}
    for output in outputs:
        _add_pending(prompt, output, cached, pending, blocking, block_count)

    def feeds_output(node_id: str, depth: int) -> bool:
        return any(
            is_output(nxt) or (depth > 1 and feeds_output(nxt, depth - 1))
            for nxt in blocking[node_id]
        )

    order: list[str] = []
    while pending:
        ready = [node_id for node_id in pending if block_count[node_id] == 0]
        if not ready:
            break  # a cycle: validation lets none through
        pick = next((n for n in ready if is_output(n)), None)
        pick = pick or next((n for n in ready if feeds_output(n, 1)), None)
        pick = pick or next((n for n in ready if feeds_output(n, 2)), ready[0])
        del pending[pick]
        for blocked in blocking[pick]:
            block_count[blocked] -= 1
        order.append(pick)
    return order


def _add_pending(
    prompt: Json,
    root: str,
    cached: set[str],
    pending: dict[str, None],
    blocking: dict[str, set[str]],
    block_count: dict[str, int],
) -> None:
    stack = [root]
    links: list[tuple[str, str]] = []
    while stack:
        node_id = stack.pop()
        if node_id in pending or node_id not in prompt:
            continue
        pending[node_id] = None
        block_count[node_id] = 0
        blocking[node_id] = set()
        for value in _inputs(prompt[node_id]).values():
            if is_link(value) and str(value[0]) in prompt:
                source = str(value[0])
                if source not in cached:
                    stack.append(source)
                    links.append((source, node_id))
    for source, target in links:
        if source in pending and target not in blocking[source]:
            blocking[source].add(target)
            block_count[target] += 1


# ---------------------------------------------------------------------------------------------
# The engine.


@dataclass
class _Cached:
    values: tuple[Any, ...]
    ui: Json | None


class _Stop(BaseException):
    """The prompt was abandoned by a restart: report nothing.

    A BaseException, so that node code catching ``Exception`` lets it through.
    """


class _Failed(Exception):
    def __init__(self, node_id: str, exception_type: str, message: str, tb: list[str]) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.exception_type = exception_type
        self.message = message
        self.tb = tb


class _Interrupt(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


@dataclass
class _Run:
    """The state of the prompt being executed."""

    task: Task
    cid: str | None
    states: dict[str, Json] = field(default_factory=dict)
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: Json = field(default_factory=dict)
    meta: Json = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    pending_progress: str | None = None
    ws_drop: bool = False
    hostile: str | None = None
    node_id: str | None = None
    start_checked: bool = False  # the running node's start-of-node interrupt check is done


class Engine:
    """Queue, executor thread, cache and history of one simulated ComfyUI server."""

    def __init__(
        self,
        root: Path,
        hub: Hub,
        *,
        faults: Faults,
        version: str = "0.33.0",
        node_seconds: float = 0.0,
        step_seconds: float = 0.0,
    ) -> None:
        self.root = root
        self.hub = hub
        self.faults = faults
        self.version = version
        self.node_seconds = node_seconds
        # Per node id, overriding node_seconds: a test holds one node of a prompt, e.g. {"3": 30}.
        self.node_seconds_by_id: dict[str, float] = {}
        self.step_seconds = step_seconds
        self.output_dir = root / "output"
        self.input_dir = root / "input"
        self.temp_dir = root / "temp"
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Task]] = []
        self._running: Task | None = None
        self._history: dict[str, Json] = {}
        self._cache: dict[str, _Cached] = {}
        self._seq = 0
        self._epoch = 0
        self._interrupted = False
        self._wake = threading.Event()  # cuts a node_seconds wait short
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_node_id: str | None = None
        self.history_limit = HISTORY_LIMIT

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._work, name="comfynb-sim-executor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._epoch += 1
            self._interrupted = True
            self._wake.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def forget(self, *, clear_cache: bool = True) -> None:
        """Forget the queue, the history and the running prompt (a crash and restart)."""
        with self._cond:
            self._epoch += 1
            self._heap.clear()
            self._history.clear()
            self._interrupted = True
            self._wake.set()
            if clear_cache:
                self._cache.clear()
            # Wait for an abandoned prompt to let go, so a reset sees an idle engine.
            deadline = time.monotonic() + 10
            while self._running is not None and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self.last_node_id = None

    # -- queue --------------------------------------------------------------------------------

    def submit(self, task: Task) -> int:
        """Queue a validated prompt and broadcast the new queue size.

        Returns the life of the engine the prompt was queued in (each ``forget``, a restart,
        starts a new one): the prompt log counts the lives a prompt_id was posted in.
        """
        with self._cond:
            self._seq += 1
            task.seq = self._seq
            heapq.heappush(self._heap, (task.number, task.seq, task))
            self._cond.notify()
            remaining = self._remaining()
            life = self._epoch
        self._status(remaining)
        return life

    def _remaining(self) -> int:
        return len(self._heap) + (1 if self._running is not None else 0)

    def queue_remaining(self) -> int:
        with self._cond:
            return self._remaining()

    def _status(self, remaining: int) -> None:
        self.hub.send("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)

    def queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """``(running items, pending items)``; pending in heap order, as ComfyUI lists them."""
        with self._cond:
            running = [self._running.item()] if self._running is not None else []
            pending = [entry[2].item() for entry in self._heap]
        return running, pending

    def delete_pending(self, prompt_ids: list[Any]) -> None:
        """Remove one pending item per listed id (quirk 3), then broadcast the queue size."""
        with self._cond:
            changed = False
            for prompt_id in prompt_ids:
                for index, entry in enumerate(self._heap):
                    if entry[2].prompt_id == prompt_id:
                        self._heap.pop(index)
                        heapq.heapify(self._heap)
                        changed = True
                        break
            remaining = self._remaining()
        if changed:
            self._status(remaining)

    def clear_pending(self) -> None:
        with self._cond:
            self._heap.clear()
            remaining = self._remaining()
        self._status(remaining)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is ``prompt_id`` when given)."""
        with self._cond:
            if self._running is None:
                # ComfyUI sets the flag anyway; the next prompt resets it on start.
                self._interrupted = prompt_id is None
                return False
            if prompt_id is not None and self._running.prompt_id != prompt_id:
                return False
            self._interrupted = True
            self._wake.set()
            return True

    def running_prompt(self) -> tuple[str | None, str | None]:
        """``(client_id, last_node_id)`` of the running prompt, for a socket that reconnects."""
        with self._cond:
            if self._running is None:
                return None, None
            return self._running.client_id, self.last_node_id

    # -- history ------------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> Json:
        """All entries oldest first; ``max_items`` the newest N, or N from ``offset``."""
        with self._cond:
            items = list(self._history.items())
        if max_items is not None or offset >= 0:
            start = offset if offset >= 0 else max(len(items) - (max_items or 0), 0)
            end = len(items) if max_items is None else start + max_items
            items = items[start:end]
        return dict(items)

    def history_entry(self, prompt_id: str) -> Json:
        with self._cond:
            entry = self._history.get(prompt_id)
        return {} if entry is None else {prompt_id: entry}

    def delete_history(self, prompt_ids: list[Any]) -> None:
        with self._cond:
            for prompt_id in prompt_ids:
                self._history.pop(prompt_id, None)

    def clear_history(self) -> None:
        with self._cond:
            self._history.clear()

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]], dict[str, Json]]:
        """Running items, pending items and history, for the jobs view."""
        with self._cond:
            running = [self._running.item()] if self._running is not None else []
            pending = [entry[2].item() for entry in self._heap]
            return running, pending, dict(self._history)

    # -- the executor thread ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                task = heapq.heappop(self._heap)[2]
                task.epoch = self._epoch
                self._running = task
                self._interrupted = False
                self._wake.clear()
                remaining = self._remaining()
            self._status(remaining)
            try:
                self._execute(task)
            except _Stop:
                pass
            except Exception:  # the executor must outlive a bug in one prompt
                logging.getLogger(__name__).exception("prompt %s failed", task.prompt_id)
            finally:
                with self._cond:
                    self._running = None
                    self.last_node_id = None
                    self._cond.notify_all()

    def _send(self, run: _Run, kind: str, data: Json, *, broadcast: bool = False) -> None:
        """Send a prompt's message: to its client, or to everyone when ``broadcast`` and no client."""
        if run.task.epoch != self._epoch:
            raise _Stop
        self._flush_progress(run)
        target = run.cid
        if target is None and not broadcast:
            return
        self.hub.post(("text", target, dumps(kind, data)))

    def _flush_progress(self, run: _Run) -> None:
        if run.pending_progress is not None:
            text, run.pending_progress = run.pending_progress, None
            if run.cid is not None:
                self.hub.post(("text", run.cid, text))

    def _record(self, run: _Run, kind: str, data: Json) -> None:
        """Send a message that also goes into history's ``status.messages``."""
        run.messages.append([kind, data])
        self._send(run, kind, data)

    def _progress_state(self, run: _Run) -> None:
        data = {"prompt_id": run.task.prompt_id, "nodes": dict(run.states)}
        self._send(run, "progress_state", data, broadcast=True)

    def _node_state(
        self, run: _Run, node_id: str, value: float, maximum: float, state: str
    ) -> Json:
        return {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.task.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def _execute(self, task: Task) -> None:
        prompt = task.prompt
        run = _Run(task=task, cid=task.client_id)
        run.ws_drop = self.faults.take_ws_drop()
        run.hostile = self.faults.take_hostile()
        fail = self.faults.take_fail_node(set(prompt))
        sigs = signatures(prompt, self.input_dir)
        with self._cond:
            wanted = set(sigs.values())
            self._cache = {key: hit for key, hit in self._cache.items() if key in wanted}
            cache = self._cache
        # A prompt hit by fail_node or ws_drop runs uncached, so that the fault really happens.
        uncached = fail is not None or run.ws_drop
        cached = set() if uncached else {node_id for node_id, key in sigs.items() if key in cache}

        def is_output(node_id: str) -> bool:
            return _nodes.is_output_node(_class_of(prompt, node_id))

        for node_id in cached:  # inputs of uncached nodes read these without running them
            run.outputs[node_id] = cache[sigs[node_id]].values
        pid = task.prompt_id
        self._record(run, "execution_start", {"prompt_id": pid, "timestamp": now_ms()})
        cached_list = [node_id for node_id in prompt if node_id in cached]
        self._record(
            run, "execution_cached", {"nodes": cached_list, "prompt_id": pid, "timestamp": now_ms()}
        )
        outcome = "success"
        try:
            for node_id in execution_order(prompt, task.outputs, cached, is_output):
                if node_id in cached:
                    self._replay_cached(run, node_id, cache[sigs[node_id]])
                else:
                    self._run_node(run, node_id, sigs[node_id], fail)
        except _Interrupt as stop:
            outcome = "interrupted"
            self._finish(run, outcome, stop)
            return
        except _Failed as failure:
            self._finish(run, "error", failure)
            return
        except Exception as exc:  # a bug of the simulator: report it as ComfyUI would, go on
            bug = _Failed(run.node_id or "", type(exc).__name__, str(exc), _traceback(exc))
            self._finish(run, "error", bug)
            return
        self._finish(run, outcome, None)

    def _replay_cached(self, run: _Run, node_id: str, hit: _Cached) -> None:
        run.outputs[node_id] = hit.values
        if run.cid is not None or self.version != "0.8.0":
            if hit.ui:
                ui = self._reported_ui(run, hit.ui)
                run.ui[node_id] = ui
                run.meta[node_id] = self._meta(node_id)
            if run.cid is not None:
                output = self._reported_ui(run, hit.ui) if hit.ui else None
                self._send(run, "executed", self._executed(run, node_id, output))
        run.states[node_id] = self._node_state(run, node_id, 1, 1, "finished")
        self._progress_state(run)

    def _meta(self, node_id: str) -> Json:
        return {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }

    def _executed(self, run: _Run, node_id: str, output: Any) -> Json:
        return {
            "node": node_id,
            "display_node": node_id,
            "output": output,
            "prompt_id": run.task.prompt_id,
        }

    def _reported_ui(self, run: _Run, ui: Json) -> Json:
        if run.hostile is None or "images" not in ui:
            return ui
        images = [{**image, "filename": run.hostile} for image in ui["images"]]
        return {**ui, "images": images}

    def _run_node(self, run: _Run, node_id: str, key: str, fail: Json | None) -> None:
        task = run.task
        node = task.prompt[node_id]
        class_type = node["class_type"]
        run.node_id = node_id
        # ComfyUI checks the interrupt flag when a node starts, just after announcing it. The
        # flag is read before the announcement here (the messages are the same), so that once a
        # client saw the node start, an interrupt it sends takes effect at the next node.
        interrupted = self._interrupt_pending(run)
        run.start_checked = True
        run.states[node_id] = self._node_state(run, node_id, 0.0, 1.0, "running")
        self._progress_state(run)
        with self._cond:
            self.last_node_id = node_id
        data = {"node": node_id, "display_node": node_id, "prompt_id": task.prompt_id}
        self._send(run, "executing", data)
        if run.ws_drop:
            run.ws_drop = False
            self.hub.post(("close_all",))
        if interrupted:
            raise _Interrupt(node_id)
        inputs = self._resolve(run, node)
        if fail is not None and fail["node_id"] == node_id:
            raise _Failed(node_id, fail["exception_type"], fail["message"], _fake_traceback())
        try:
            result = _nodes.execute(class_type, inputs, self._context(run, node_id))
        except _nodes.Interrupted:
            raise _Interrupt(node_id) from None
        except _Stop:
            raise
        except _nodes.NodeExecutionError as exc:
            # The real server's exception_message ends with a newline (captures).
            tb = list(getattr(exc, "traceback", None) or _traceback(exc))
            raise _Failed(node_id, exc.exception_type, exc.message + "\n", tb) from None
        except Exception as exc:
            raise _Failed(node_id, type(exc).__name__, str(exc), _traceback(exc)) from None
        run.start_checked = False
        # The node's simulated work: after ComfyUI's start-of-node interrupt check, so an
        # interrupt takes effect at the next node (it only cuts the waiting short).
        self._simulate_work(run, node_id)
        self._flush_progress(run)
        values = tuple(result.values)
        run.outputs[node_id] = values
        run.executed.append(node_id)
        ui = result.ui or None
        with self._cond:
            if task.epoch == self._epoch:
                self._cache[key] = _Cached(values, ui)
        if ui:
            reported = self._reported_ui(run, ui)
            run.ui[node_id] = reported
            run.meta[node_id] = self._meta(node_id)
            self._send(run, "executed", self._executed(run, node_id, reported))
        maximum = run.states[node_id]["max"]
        run.states[node_id] = self._node_state(run, node_id, maximum, maximum, "finished")
        self._progress_state(run)

    def _simulate_work(self, run: _Run, node_id: str) -> None:
        """Wait the node's time; new times, an interrupt or a restart re-decide.

        The time is read under the lock that ``set_node_seconds`` takes, in the same hold as
        the ``_wake.clear()``: a new time set between the read and the clear would otherwise
        be cleared unseen, and the node would wait out the old time (30 s for a test that
        held it, then released it with ``node_seconds=0``).
        """
        started = time.monotonic()
        while True:
            with self._cond:
                seconds = self.node_seconds_by_id.get(node_id, self.node_seconds)
                left = started + seconds - time.monotonic()
                if left <= 0 or self._interrupted or run.task.epoch != self._epoch:
                    return
                self._wake.clear()
            self._wake.wait(left)

    def set_node_seconds(
        self, seconds: float | None = None, by_id: dict[str, float] | None = None
    ) -> None:
        """Change the time per node (or per node id); a node waiting now re-decides."""
        with self._cond:
            if seconds is not None:
                self.node_seconds = seconds
            if by_id is not None:
                self.node_seconds_by_id = {str(k): float(v) for k, v in by_id.items()}
            self._wake.set()

    def _resolve(self, run: _Run, node: Json) -> Json:
        out: Json = {}
        for name, value in _inputs(node).items():
            if is_link(value):
                source = run.outputs.get(str(value[0]))
                if source is None or value[1] >= len(source):
                    raise _Failed(run.node_id or "", "KeyError", str(value[0]), _fake_traceback())
                out[name] = source[value[1]]
            else:
                out[name] = value
        return out

    def _interrupt_pending(self, run: _Run) -> bool:
        with self._cond:
            if run.task.epoch != self._epoch:
                raise _Stop
            return self._interrupted

    def _check_interrupt(self, run: _Run) -> None:
        with self._cond:
            if run.task.epoch != self._epoch:
                raise _Stop
            if self._interrupted:
                raise _Interrupt(run.node_id or "")

    def _context(self, run: _Run, node_id: str) -> Any:
        def progress(value: int, maximum: int) -> None:
            run.start_checked = False
            try:
                self._check_interrupt(run)
            except _Interrupt:
                raise _nodes.Interrupted() from None
            self._flush_progress(run)
            run.states[node_id] = self._node_state(run, node_id, value, maximum, "running")
            self._progress_state(run)
            data = {
                "value": value,
                "max": maximum,
                "prompt_id": run.task.prompt_id,
                "node": node_id,
            }
            run.pending_progress = dumps("progress", data)

        def send_preview(image: bytes, fmt: str) -> None:
            text, run.pending_progress = run.pending_progress, None
            if run.cid is None:
                return
            metadata = {
                "node_id": node_id,
                "prompt_id": run.task.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": "image/png" if fmt == "PNG" else "image/jpeg",
            }
            self.hub.post(("preview", run.cid, text, image, fmt, metadata))

        def check_interrupt() -> None:
            if run.start_checked:  # nodes.execute's own start check: already done above
                run.start_checked = False
                return
            try:
                self._check_interrupt(run)
            except _Interrupt:
                raise _nodes.Interrupted() from None

        return _nodes.NodeContext(
            node_id=node_id,
            prompt_id=run.task.prompt_id,
            prompt=run.task.prompt,
            extra_pnginfo=run.task.extra_data.get("extra_pnginfo"),
            output_dir=self.output_dir,
            input_dir=self.input_dir,
            temp_dir=self.temp_dir,
            progress=progress,
            send_preview=send_preview,
            check_interrupt=check_interrupt,
            step_seconds=self.step_seconds,
            preview_method="none" if self.version == "0.8.0" else "auto",
        )

    def _finish(self, run: _Run, outcome: str, error: Exception | None) -> None:
        task = run.task
        pid = task.prompt_id
        if isinstance(error, _Interrupt):
            data = {
                "prompt_id": pid,
                "node_id": error.node_id,
                "node_type": _class_of(task.prompt, error.node_id),
                "executed": list(run.executed),
                "timestamp": now_ms(),
            }
            run.messages.append(["execution_interrupted", data])
            self._send(run, "execution_interrupted", data, broadcast=True)
        elif isinstance(error, _Failed):
            data = self._error_data(run, error)
            run.messages.append(["execution_error", data])
            self._send(run, "execution_error", data)
        else:
            self._flush_progress(run)
            run.messages.append(["execution_success", {"prompt_id": pid, "timestamp": now_ms()}])
        entry = {
            "prompt": task.item(),
            "outputs": run.ui,
            "status": {
                "status_str": "success" if outcome == "success" else "error",
                "completed": outcome == "success",
                "messages": run.messages,
            },
            "meta": run.meta,
        }
        with self._cond:
            if task.epoch != self._epoch:
                raise _Stop
            if len(self._history) > self.history_limit:
                self._history.pop(next(iter(self._history)))
            self._history[pid] = entry
            self._running = None
            self.last_node_id = None
            remaining = self._remaining()
            self._cond.notify_all()
        if outcome == "success":
            self._send(run, "execution_success", run.messages[-1][1])
        self._status(remaining)
        if run.cid is not None:
            self.hub.send("executing", {"node": None, "prompt_id": pid}, run.cid)

    def _error_data(self, run: _Run, error: _Failed) -> Json:
        node = run.task.prompt.get(error.node_id, {})
        current_inputs: Json = {name: [_describe(value)] for name, value in _inputs(node).items()}
        for hidden in _hidden_inputs(self.version, node.get("class_type")):
            # ComfyUI lists the hidden inputs it filled in (SaveImage: prompt, extra_pnginfo).
            if hidden == "prompt":
                current_inputs["prompt"] = [repr(run.task.prompt)]
            elif hidden == "extra_pnginfo":
                current_inputs["extra_pnginfo"] = [run.task.extra_data.get("extra_pnginfo")]
        return {
            "prompt_id": run.task.prompt_id,
            "node_id": error.node_id,
            "node_type": _class_of(run.task.prompt, error.node_id),
            "executed": list(run.executed),
            "exception_message": error.message,
            "exception_type": error.exception_type,
            "traceback": error.tb,
            "current_inputs": current_inputs,
            "current_outputs": list(run.outputs),
            "timestamp": now_ms(),
        }


def _hidden_inputs(version: str, class_type: Any) -> list[str]:
    from . import specs

    entry = specs.object_info(version).get(class_type) if isinstance(class_type, str) else None
    hidden = (entry or {}).get("input", {}).get("hidden", {})
    return [name for name in hidden if name in ("prompt", "extra_pnginfo")]


def _class_of(prompt: Json, node_id: str) -> str:
    node = prompt.get(node_id)
    return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def _describe(value: Any) -> str:
    if is_link(value):
        return f"output {value[1]} of node {value[0]}"
    return repr(value)


def _traceback(exc: BaseException) -> list[str]:
    return traceback.format_tb(exc.__traceback__) or _fake_traceback()


def _fake_traceback() -> list[str]:
    return ['  File "execution.py", line 1, in execute\n    raise\n']
