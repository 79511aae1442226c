"""Switchable faults of the simulator, deterministic under a seed.

A test (or ``--faults`` on the command line) switches a fault set on; the HTTP middleware, the
engine and ``/view`` ask it, at the moment they could misbehave, whether they should.

Example::

    >>> faults = Faults()
    >>> faults.set({"http_500_next": 1, "routes": ["/prompt"]})["http_500_next"]
    1
    >>> faults.http_fault("/api/prompt").error
    True
    >>> faults.http_fault("/api/prompt").error
    False
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["HOSTILE_NAMES", "INTERNAL_ERROR_TEXT", "Faults", "HttpFault", "parse_fault_args"]

# What aiohttp answers, as text/plain, when a handler raises (ComfyUI's answer to malformed JSON).
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"

# The file names that ``hostile_names`` reports instead of the real ones.
HOSTILE_NAMES = {"dotdot": "../../x.png", "absolute": "/tmp/comfynb-evil.png", "nul": "x\u0000.png"}

_FLOAT_KEYS = ("http_500_rate", "reset_rate", "slow_seconds")
_INT_KEYS = (
    "seed",
    "http_500_next",
    "reset_next",
    "slow_next",
    "ws_drop_next",
    "truncate_view_next",
    "hostile_next",
)
_FAIL_NODE_KEYS = {"node_id", "message", "exception_type", "next"}


@dataclass(frozen=True)
class HttpFault:
    """What the HTTP middleware must do to one request."""

    delay: float = 0.0  # seconds to wait before answering
    error: bool = False  # answer 500 text/plain instead of handling the request
    reset: bool = False  # handle the request, then close the connection without answering


def _check(config: dict[str, Any]) -> dict[str, Any]:
    """Return a normalized copy of a fault set, or raise ValueError naming the bad key."""
    known = {*_FLOAT_KEYS, *_INT_KEYS, "routes", "fail_node", "hostile_names"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown fault key(s) {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for key, kind in [*((k, float) for k in _FLOAT_KEYS), *((k, int) for k in _INT_KEYS)]:
        if key in config:
            try:
                out[key] = kind(config[key])
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a number, got {config[key]!r}") from None
    if "routes" in config:
        routes = config["routes"]
        if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
            raise ValueError("routes must be a list of path prefixes such as ['/prompt']")
        out["routes"] = list(routes)
    if "fail_node" in config:
        fail = config["fail_node"]
        if not isinstance(fail, dict) or "node_id" not in fail or set(fail) - _FAIL_NODE_KEYS:
            raise ValueError(
                f"fail_node must be a dict with node_id and optional {_FAIL_NODE_KEYS}"
            )
        out["fail_node"] = {
            "node_id": str(fail["node_id"]),
            "message": str(fail.get("message", "simulated failure")),
            "exception_type": str(fail.get("exception_type", "RuntimeError")),
            "next": int(fail.get("next", 1)),
        }
    if "hostile_names" in config:
        kind = config["hostile_names"]
        if kind not in HOSTILE_NAMES:
            raise ValueError(f"hostile_names must be one of {sorted(HOSTILE_NAMES)}")
        out["hostile_names"] = kind
        out.setdefault("hostile_next", 1)
    return out


class Faults:
    """The active fault set; thread-safe (the engine thread and the event loop both ask it)."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._default_seed = seed
        self._config: dict[str, Any] = {}
        self._slow_every = True
        self._rng = random.Random(seed)

    def set(self, config: dict[str, Any]) -> dict[str, Any]:
        """Replace the fault set (``{}`` clears it) and return the active set.

        Raises:
            ValueError: an unknown key or a value of the wrong shape.
        """
        checked = _check(config)
        with self._lock:
            self._config = checked
            # slow_next 0 (or absent) means every request; a positive count runs down.
            self._slow_every = checked.get("slow_next", 0) == 0
            self._rng = random.Random(checked.get("seed", self._default_seed))
            return copy.deepcopy(self._config)

    def active(self) -> dict[str, Any]:
        """Return the active fault set, with the ``*_next`` counters as they stand now."""
        with self._lock:
            return copy.deepcopy(self._config)

    def _take(self, key: str) -> bool:
        """Consume one unit of a ``*_next`` counter; True when there was one."""
        left = self._config.get(key, 0)
        if left <= 0:
            return False
        self._config[key] = left - 1
        return True

    def _applies(self, path: str) -> bool:
        if path.startswith("/api/"):
            path = path[4:]
        if path.startswith("/_sim") or path == "/ws":
            return False
        routes = self._config.get("routes")
        return routes is None or any(path.startswith(route) for route in routes)

    def http_fault(self, path: str) -> HttpFault:
        """Decide the fate of one HTTP request to ``path``."""
        with self._lock:
            if not self._config or not self._applies(path):
                return HttpFault()
            delay = 0.0
            if self._slow_every or self._take("slow_next"):
                delay = self._config.get("slow_seconds", 0.0)
            error = self._take("http_500_next") or self._hit("http_500_rate")
            reset = not error and (self._take("reset_next") or self._hit("reset_rate"))
            return HttpFault(delay=delay, error=error, reset=reset)

    def _hit(self, key: str) -> bool:
        rate = float(self._config.get(key, 0.0))
        return rate > 0 and self._rng.random() < rate

    def take_ws_drop(self) -> bool:
        """True when the prompt starting now must drop every WebSocket after its first ``executing``."""
        with self._lock:
            return self._take("ws_drop_next")

    def take_truncate_view(self) -> bool:
        """True when this ``/view`` answer must carry only the first half of the file."""
        with self._lock:
            return self._take("truncate_view_next")

    def take_hostile(self) -> str | None:
        """The hostile file name this prompt must report for its images, or None."""
        with self._lock:
            kind = self._config.get("hostile_names")
            if kind is None or not self._take("hostile_next"):
                return None
            return HOSTILE_NAMES[kind]

    def take_fail_node(self, node_ids: Collection[str]) -> dict[str, Any] | None:
        """The node failure this prompt must raise (if it has that node), consuming one use."""
        with self._lock:
            fail = self._config.get("fail_node")
            if not fail or fail["next"] <= 0 or fail["node_id"] not in node_ids:
                return None
            fail["next"] -= 1
            return dict(fail)


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fault_args(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["http_500_rate=0.1", "routes=[\\"/prompt\\"]"]`` into a fault set.

    Example::

        >>> parse_fault_args(["http_500_rate=0.1", "hostile_names=dotdot"])
        {'http_500_rate': 0.1, 'hostile_names': 'dotdot'}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--fault takes key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out
