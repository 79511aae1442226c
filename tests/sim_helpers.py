"""Helpers for the simulator tests: capture reduction, a recording WebSocket, body shapes.

Raw httpx and the ``websockets`` library only (not the comfynb client), so these tests check
the server on its own.
"""

from __future__ import annotations

import atexit
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from conftest import load_capture
from websockets.sync.client import ClientConnection, connect

from comfynb.simulator import Simulator

# One keep-alive client for every test: ``httpx.get()`` builds a client (and an SSL context)
# per call, ~20 ms each.
HTTP = httpx.Client(timeout=10)
atexit.register(HTTP.close)

_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+)$")


def frame_type(frame: dict[str, Any]) -> str:
    """``"status"``, ``"executing"``… for a text frame, ``"binary:1"``/``"binary:4"`` for images."""
    if frame.get("frame") == "binary":
        return f"binary:{frame['binary']['event_type']}"
    return str(frame["msg"]["type"])


def capture_types(
    name: str, *, start: str | None = None, stop: str | None = None, skip_first: int = 0
) -> list[str]:
    """The server's message types in a WS capture, between client notes containing ``start``/``stop``."""
    frames = capture_frames(name, start=start, stop=stop, skip_first=skip_first)
    return [frame_type(frame) for frame in frames]


def capture_frames(
    name: str, *, start: str | None = None, stop: str | None = None, skip_first: int = 0
) -> list[dict[str, Any]]:
    """The server's frames in a WS capture, between client notes containing ``start``/``stop``."""
    frames: list[dict[str, Any]] = []
    recording = start is None
    for frame in load_capture(name):
        if frame["dir"] == "client":
            note = frame.get("note", "")
            if start is not None and start in note:
                recording = True
            elif stop is not None and stop in note and recording:
                break
            continue
        if recording:
            frames.append(frame)
    return frames[skip_first:]


def assert_same_messages(got: list[Message], frames: list[dict[str, Any]]) -> None:
    """Same types in the same order, and each text message's data of the captured shape."""
    kinds, expected = [m.kind for m in got], [frame_type(f) for f in frames]
    assert kinds == expected, f"message types\n  got      {kinds}\n  captured {expected}"
    for message, frame in zip(got, frames, strict=True):
        if frame.get("frame") == "text":
            differences = shape_diff(shape(message.data), shape(frame["msg"]["data"]))
            assert not differences, f"{message.kind}: {differences}"


def capture_prompt(name: str, key: str | None = None) -> dict[str, Any]:
    """The API prompt of a captured history entry (``history_*.json``)."""
    data = load_capture(name)
    if key is not None:
        data = data[key]
    entry = next(iter(data["body"].values()))
    prompt: dict[str, Any] = entry["prompt"][2]
    return prompt


@dataclass
class Message:
    """One frame received by a ``Recorder``: text frames decoded, binary kept as bytes."""

    kind: str  # the text message type, or "binary:<event type>"
    data: Any

    @property
    def node(self) -> Any:
        return self.data.get("node") if isinstance(self.data, dict) else None


@dataclass
class Recorder:
    """A WebSocket client that keeps every frame it reads."""

    conn: ClientConnection
    messages: list[Message] = field(default_factory=list)

    def read(self, timeout: float = 5.0) -> Message:
        raw = self.conn.recv(timeout=timeout)
        if isinstance(raw, bytes):
            message = Message(f"binary:{int.from_bytes(raw[:4], 'big')}", raw)
        else:
            decoded = json.loads(raw)
            message = Message(decoded["type"], decoded["data"])
        self.messages.append(message)
        return message

    def until(self, done: Callable[[Message], bool], timeout: float = 5.0) -> list[Message]:
        """Read until ``done(message)``; return the messages read by this call."""
        deadline = time.monotonic() + timeout
        start = len(self.messages)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message; got {self.types(self.messages[start:])}")
            if done(self.read(timeout=left)):
                return self.messages[start:]

    def until_idle(self, prompt_id: str | None = None, timeout: float = 5.0) -> list[Message]:
        """Read until ``executing {node: null}`` (of ``prompt_id`` when given)."""
        return self.until(
            lambda m: (
                m.kind == "executing"
                and m.data.get("node") is None
                and (prompt_id is None or m.data.get("prompt_id") == prompt_id)
            ),
            timeout,
        )

    def until_type(self, kind: str, timeout: float = 5.0) -> list[Message]:
        return self.until(lambda m: m.kind == kind, timeout)

    @staticmethod
    def types(messages: list[Message]) -> list[str]:
        return [m.kind for m in messages]


@contextmanager
def recorder(
    sim: Simulator, client_id: str | None = None, *, metadata: bool = False
) -> Iterator[Recorder]:
    """Open ``/ws`` (with ``clientId`` when given), read the greeting ``status``, yield a Recorder."""
    url = sim.ws_url + (f"?clientId={client_id}" if client_id else "")
    with connect(url, max_size=None) as conn:
        rec = Recorder(conn)
        if metadata:
            payload = {"supports_preview_metadata": True}
            conn.send(json.dumps({"type": "feature_flags", "data": payload}))
        rec.until_type("status")
        if metadata:
            rec.until_type("feature_flags")
        yield rec


def post_prompt(sim: Simulator, prompt: dict[str, Any], **body: Any) -> httpx.Response:
    return HTTP.post(f"{sim.url}/prompt", json={"prompt": prompt, **body})


def wait_for(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def history_of(sim: Simulator, prompt_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Wait for the history entry of ``prompt_id`` and return it."""

    def entry() -> Any:
        return HTTP.get(f"{sim.url}/history/{prompt_id}").json().get(prompt_id)

    result: dict[str, Any] = wait_for(entry, timeout)
    return result


def shape(value: Any) -> Any:
    """Keys and value types, recursively; id-like keys (UUIDs, node ids) fold into one ``<id>``."""
    if isinstance(value, dict):
        if value and all(_ID.match(str(key)) for key in value):
            return {"<id>": _merge([shape(v) for v in value.values()])}
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        # Tuple-like lists (a queue item: number, id, prompt, ...) compare position by position;
        # lists of one kind of thing compare by their first element.
        if len({_kind(v) for v in value}) > 1:
            return [shape(v) for v in value]
        return [shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return repr(value) if value is None else "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _merge(shapes: list[Any]) -> Any:
    return shapes[0] if shapes else {}


def shape_diff(got: Any, expected: Any, path: str = "$") -> list[str]:
    """Where two shapes differ, as readable paths (empty when they agree)."""
    if isinstance(got, dict) and isinstance(expected, dict):
        out = [f"{path}.{key}: missing" for key in expected if key not in got]
        out += [f"{path}.{key}: unexpected" for key in got if key not in expected]
        for key in got:
            if key in expected:
                out += shape_diff(got[key], expected[key], f"{path}.{key}")
        return out
    if isinstance(got, list) and isinstance(expected, list):
        if len(got) != len(expected):
            return [f"{path}: {len(got)} element shapes, expected {len(expected)}"]
        return [
            d
            for i, (g, e) in enumerate(zip(got, expected, strict=True))
            for d in shape_diff(g, e, f"{path}[{i}]")
        ]
    return [] if got == expected else [f"{path}: {got!r}, expected {expected!r}"]


def assert_same_shape(got: Any, expected: Any) -> None:
    """Assert that a body has the captured body's shape; the message lists the differences."""
    differences = shape_diff(shape(got), shape(expected))
    assert not differences, "\n".join(differences)


def start_blocker(sim: Simulator, prompt: dict[str, Any] | None = None, **body: Any) -> str:
    """Start a prompt that keeps running until ``release``; return its prompt_id.

    Every node of it waits 30 s, cut short by an interrupt: tests see a running prompt and
    pending ones behind it for as long as they need, and pay nothing for it.
    """
    sim.configure(node_seconds=30)
    prompt_id: str = post_prompt(sim, prompt or blocker_prompt(), **body).json()["prompt_id"]
    wait_for(lambda: HTTP.get(f"{sim.url}/queue").json()["queue_running"])
    return prompt_id


def blocker_prompt() -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, with a color no other prompt uses (never cached).

    An interrupt while its first node runs takes effect when the second starts.
    """
    color = uuid.uuid4().int % 0xFFFFFF
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "blocker"},
        },
    }


def release(sim: Simulator, prompt_id: str) -> None:
    """End a blocker (interrupted) and let the rest of the queue run at full speed."""
    sim.configure(node_seconds=0)
    HTTP.post(f"{sim.url}/interrupt", json={"prompt_id": prompt_id})
