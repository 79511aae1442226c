"""Shared fixtures: a real simulator on loopback, real files under tmp_path.

One simulator per test session per server version (starting one costs a thread and a port);
``sim.reset()`` before each test empties its queue, history, faults and files, as rq's
``flushdb()`` does for Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from comfynb.simulator import Simulator

SHARED = (
    Path(os.environ.get("COMFYNB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "comfyui-protocol"
)
CAPTURES = SHARED / "captures"


def load_capture(name: str) -> Any:
    """Return a capture file from the fact sheet: JSON for ``.json``, a list of frames for ``.jsonl``."""
    path = CAPTURES / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def _sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    from comfynb.simulator import Simulator

    with Simulator(root=tmp_path_factory.mktemp("sim")) as server:
        yield server


@pytest.fixture
def sim(_sim_server: Simulator) -> Simulator:
    """The simulator as ComfyUI 0.33.0, reset to empty for this test."""
    _sim_server.reset(version="0.33.0")
    return _sim_server


@pytest.fixture
def legacy_sim(_sim_server: Simulator) -> Simulator:
    """The same simulator switched to the older captured ComfyUI (0.8.0), reset to empty."""
    _sim_server.reset(version="0.8.0")
    return _sim_server


def trivial_prompt(prefix: str = "trivial", size: int = 64) -> dict[str, Any]:
    """EmptyImage -> SaveImage: the fact sheet's trivial prompt."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }
