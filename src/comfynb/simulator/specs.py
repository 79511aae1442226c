"""Node input specs (``/object_info``) of the classes the simulator runs, per server version.

The entries are real: ``data/object_info.json`` holds the 0.33.0 entries of these classes as
taken from the fact sheet's ``object_info_0.33.0.json.gz``, and ``data/object_info_0.8.0.json``
the entries the older captured server (0.8.0) served (``object_info_used_nodes.json``). Three
gaps are filled in code, each marked below: the model nodes were not captured on 0.8.0, the
``SaveImageWebsocket`` custom node is not in the 0.33.0 dump, and the file-name combos
(checkpoints, input images) depend on the simulator's files, not on the server version.

Example::

    >>> from comfynb.simulator import specs
    >>> specs.object_info()["EmptyImage"]["input"]["required"]["width"]
    ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}]
    >>> specs.object_info("0.8.0", input_files=["cat.png"])["LoadImage"]["input"]["required"]["image"]
    [['cat.png'], {'image_upload': True}]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

SERVER_VERSIONS: tuple[str, ...] = ("0.33.0", "0.8.0")
DEFAULT_VERSION = "0.33.0"

# The checkpoint files the simulator "has". The first is the one ComfyUI's default SD 1.5
# graph loads (shared/comfyui-protocol/workflows/default_sd15_ui.json).
CHECKPOINTS: tuple[str, ...] = (
    "v1-5-pruned-emaonly-fp16.safetensors",
    "v1-5-pruned-emaonly.safetensors",
    "sd_xl_base_1.0.safetensors",
)

_DATA = Path(__file__).parent / "data"
_FILES = {"0.33.0": "object_info.json", "0.8.0": "object_info_0.8.0.json"}

# Entry keys that 0.33.0 added (fact sheet, "A newer real server"); 0.8.0 entries lack them.
_KEYS_NEW_IN_0_33 = (
    "is_input_list",
    "has_intermediate_output",
    "search_aliases",
    "dev_only",
    "price_badge",
    "essentials_category",
)


def object_info(
    version: str = DEFAULT_VERSION,
    *,
    input_files: Iterable[str] = (),
    checkpoints: Iterable[str] = CHECKPOINTS,
) -> dict[str, dict[str, Any]]:
    """Return ``class_type -> entry`` exactly as ``GET /object_info`` serves it, as a fresh copy.

    Example::

        >>> info = object_info("0.33.0")
        >>> info["KSampler"]["input"]["required"]["steps"][1]["min"]
        1

    Args:
        version: ``"0.33.0"`` (default) or ``"0.8.0"``.
        input_files: names of the images in the input folder, as the real server lists them in
            ``LoadImage``'s ``image`` combo (sorted here).
        checkpoints: the checkpoint files the server has (``CheckpointLoaderSimple``'s
            ``ckpt_name`` choices), ``CHECKPOINTS`` by default; ``()`` for a server without
            model files.

    Raises:
        ValueError: an unknown version.
    """
    entries = copy.deepcopy(_entries(version))
    entries["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(checkpoints)
    entries["LoadImage"]["input"]["required"]["image"][0] = sorted(input_files)
    return entries


def class_names(version: str = DEFAULT_VERSION) -> tuple[str, ...]:
    """Return the node classes the simulator knows at ``version``.

    Example::

        >>> "SaveImage" in class_names()
        True
    """
    return tuple(_entries(version))


@cache
def _entries(version: str) -> dict[str, dict[str, Any]]:
    if version not in _FILES:
        raise ValueError(f"unknown ComfyUI version {version!r}; choose one of {SERVER_VERSIONS}")
    newer = _load(_FILES["0.33.0"])
    older = _load(_FILES["0.8.0"])
    if version == "0.33.0":
        # Derived: SaveImageWebsocket is a custom node, absent from the 0.33.0 dump; its 0.8.0
        # entry plus the keys 0.33.0 gives every classic (v1) node.
        newer["SaveImageWebsocket"] = _as_0_33(older["SaveImageWebsocket"])
        return newer
    # Derived: the model nodes were not captured on 0.8.0; their 0.33.0 entries without the
    # keys 0.33.0 added.
    for name, entry in newer.items():
        if name not in older:
            older[name] = {k: v for k, v in entry.items() if k not in _KEYS_NEW_IN_0_33}
    older["LoadImage"]["input"]["required"]["image"][
        0
    ] = []  # captured names were that server's files
    return older


def _as_0_33(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        out[key] = value
        if key == "input_order":
            out["is_input_list"] = False
    out["has_intermediate_output"] = False
    out["search_aliases"] = []
    return out


def _load(name: str) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((_DATA / name).read_text(encoding="utf-8"))
    return data
