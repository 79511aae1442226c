"""Read a workflow from wherever users have one: a path, a dict, JSON text, PNG or WebP bytes.

The only I/O of the workflows layer. Formats recognised:

* the API format, ``{"3": {"class_type": "KSampler", "inputs": {...}}}`` (ComfyUI's
  "Export (API)", or ``/history``'s prompt);
* the UI format the frontend saves (``nodes``, ``links``, ``widgets_values``,
  ``definitions.subgraphs``), converted with ``/object_info`` by :mod:`.convert`;
* an image ComfyUI wrote: a PNG's ``prompt`` (API format) and ``workflow`` (UI format) text
  chunks, or a WebP's EXIF entries ``prompt:{...}`` / ``workflow:{...}``. ``prompt`` wins when
  both are there (it is what ran), and :attr:`Loaded.source` says so.

A UI workflow's ``/object_info`` may come from a server URL: :func:`fetch_object_info` is
one ``GET`` with the standard library (the workflows layer uses no client).

Example::

    >>> loaded = load_source("ComfyUI_00001_.png", object_info)
    >>> loaded.source
"ComfyUI_00001_.png: the PNG's 'prompt' text chunk (API format; its 'workflow' chunk is not needed)"
"""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.urls import parse_server_url
from ..errors import InvalidInput, WorkflowError
from .convert import ui_to_api

__all__ = ["OBJECT_INFO_TIMEOUT", "Loaded", "detect_format", "fetch_object_info", "load_source"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Seconds :func:`fetch_object_info` waits for the server (to connect, and between reads).
OBJECT_INFO_TIMEOUT = 30.0


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_source` read: the API prompt, the UI workflow if there was one, and a
    sentence saying where the prompt came from."""

    prompt: dict[str, Any]
    ui: dict[str, Any] | None
    source: str


def fetch_object_info(url: str, timeout: float = OBJECT_INFO_TIMEOUT) -> dict[str, Any]:
    """``GET {url}/object_info``: the server's node definitions, fetched once.

    ``url`` is a server URL as ``comfynb.Client`` takes it (``user:password@`` is sent as
    basic auth, never shown).

    Example::

        >>> info = fetch_object_info("http://127.0.0.1:8188")
        >>> "KSampler" in info
        True

    Raises:
        WorkflowError: not a server URL, no answer within ``timeout`` seconds, an HTTP error,
            or an answer that is not the ``/object_info`` dict; the message names the URL.
    """
    try:
        root, credentials = parse_server_url(url)
    except InvalidInput as exc:
        raise WorkflowError(f"object_info={url!r}: {exc}") from None
    where = f"{root}/object_info"
    request = urllib.request.Request(where, headers={"Accept": "application/json"})
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context() if root.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise WorkflowError(
            f"GET {where} answered HTTP {exc.code} {exc.reason}; is it a ComfyUI server?"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkflowError(
            f"GET {where} failed ({reason}); is the ComfyUI server up? To convert offline, "
            "pass object_info=store (a store a worker saved a copy in) or the /object_info dict"
        ) from None
    try:
        info = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"GET {where} did not answer JSON ({exc}); is it ComfyUI?") from None
    if not isinstance(info, dict):
        raise WorkflowError(
            f"GET {where} answered {type(info).__name__}, not the /object_info dict; is it ComfyUI?"
        )
    return info


def detect_format(data: object) -> str:
    """``"api"``, ``"ui"``, or a ``WorkflowError`` saying what was recognised.

    Example::

        >>> detect_format({"3": {"class_type": "KSampler", "inputs": {}}})
        'api'
        >>> detect_format({"nodes": [], "links": []})
        'ui'
    """
    if not isinstance(data, Mapping):
        raise WorkflowError(
            f"a workflow is a JSON object (dict); got {type(data).__name__}: {_short(data)}"
        )
    if isinstance(data.get("nodes"), list):
        return "ui"
    if data and all(isinstance(node, Mapping) and "class_type" in node for node in data.values()):
        return "api"
    if not data:
        raise WorkflowError("the workflow is an empty dict: it has no nodes")
    keys = ", ".join(repr(k) for k in list(data)[:8]) + (", ..." if len(data) > 8 else "")
    nodes = sum(1 for n in data.values() if isinstance(n, Mapping) and "class_type" in n)
    seen = (
        f"{nodes} of its {len(data)} entries look like API nodes (they have 'class_type'), "
        "the others do not"
        if nodes
        else "no entry has a 'class_type' and there is no 'nodes' list"
    )
    raise WorkflowError(
        f"unknown workflow format: a dict with keys {keys}; {seen}. Expected the API format "
        '({"3": {"class_type": "KSampler", "inputs": {...}}}, from "Export (API)") or the UI '
        "format the ComfyUI frontend saves (with 'nodes' and 'links')"
    )


def load_source(source: object, object_info: Mapping[str, Any] | None) -> Loaded:
    """Read ``source`` (a path, a dict, JSON text, or PNG/WebP bytes) into an API prompt.

    ``object_info`` (``/object_info``) is needed only for the UI format.

    Raises:
        WorkflowError: a source that is none of these, an unknown format, or a UI workflow
            without ``object_info`` or with a class it lacks.
    """
    if isinstance(source, Mapping):
        return _from_data(dict(source), object_info, "the dict given")
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source), object_info, "the bytes given")
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return _from_data(
            _parse_json(source, "the JSON text given"), object_info, "the JSON text given"
        )
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise WorkflowError(
                f"no file {str(path)!r}; pass a path to a workflow JSON, a PNG/WebP ComfyUI "
                "saved, a dict, or JSON text"
            ) from None
        except OSError as exc:
            raise WorkflowError(f"cannot read {str(path)!r}: {exc}") from None
        return _from_bytes(raw, object_info, path.name)
    raise WorkflowError(
        f"cannot load a workflow from {type(source).__name__}; pass a path, a dict, JSON text, "
        "or the bytes of a PNG/WebP ComfyUI saved"
    )


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{where} is not valid JSON: {exc}") from None


def _from_bytes(raw: bytes, object_info: Mapping[str, Any] | None, where: str) -> Loaded:
    if raw.startswith(_PNG_MAGIC) or (raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"):
        return _from_image(raw, object_info, where)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowError(
            f"{where} is neither JSON text nor a PNG/WebP image (it starts with {raw[:8]!r})"
        ) from None
    return _from_data(_parse_json(text, where), object_info, where)


def _from_data(data: Any, object_info: Mapping[str, Any] | None, where: str) -> Loaded:
    kind = detect_format(data)
    if kind == "api":
        return Loaded(data, None, f"{where} (API format)")
    return Loaded(_convert(data, object_info, where), data, f"{where} (UI format, converted)")


def _convert(
    ui: dict[str, Any], object_info: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    if object_info is None:
        raise WorkflowError(
            f"{where} is a UI workflow: converting it needs the server's /object_info; pass "
            "object_info= a server URL ('http://127.0.0.1:8188'), a comfynb Client, a store "
            "holding a copy (offline), or the /object_info dict"
        )
    return ui_to_api(ui, object_info)


def image_chunks(raw: bytes) -> dict[str, str]:
    """The ``prompt``/``workflow`` texts ComfyUI wrote into a PNG (tEXt) or WebP (EXIF).

    Example::

        >>> sorted(image_chunks(open("ComfyUI_00001_.png", "rb").read()))
        ['prompt', 'workflow']
    """
    from PIL import Image  # imported here: only images need it

    try:
        with Image.open(io.BytesIO(raw)) as image:
            texts = {k: v for k, v in image.info.items() if isinstance(v, str)}
            exif = image.getexif()
    except Exception as exc:
        raise WorkflowError(f"cannot read the image: {exc}") from None
    for value in exif.values():  # SaveAnimatedWEBP: "prompt:{...}", "workflow:{...}"
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and ":" in value:
            key, _, text = value.partition(":")
            if key in ("prompt", "workflow") and key not in texts:
                texts[key] = text
    return {k: v for k, v in texts.items() if k in ("prompt", "workflow")}


def _from_image(raw: bytes, object_info: Mapping[str, Any] | None, where: str) -> Loaded:
    kind = "PNG" if raw.startswith(_PNG_MAGIC) else "WebP"
    chunks = image_chunks(raw)
    place = "text chunk" if kind == "PNG" else "EXIF entry"
    if not chunks:
        raise WorkflowError(
            f"{where} is a {kind} image without a 'prompt' or 'workflow' {place}: it was not "
            "saved by ComfyUI's SaveImage (or the metadata was stripped); load the workflow JSON"
        )
    ui = None
    if "workflow" in chunks:
        ui = _parse_json(chunks["workflow"], f"the {kind}'s 'workflow' {place}")
    if "prompt" in chunks:
        prompt = _parse_json(chunks["prompt"], f"the {kind}'s 'prompt' {place}")
        if detect_format(prompt) != "api":
            raise WorkflowError(
                f"{where}: the {kind}'s 'prompt' {place} is not in the API format; "
                "it was not written by ComfyUI"
            )
        also = f"; its 'workflow' {place} is not needed" if "workflow" in chunks else ""
        saved = ui if isinstance(ui, dict) else None
        return Loaded(prompt, saved, f"{where}: the {kind}'s 'prompt' {place} (API format{also})")
    if detect_format(ui) == "api":
        assert isinstance(ui, dict)
        return Loaded(ui, None, f"{where}: the {kind}'s 'workflow' {place} (API format)")
    assert isinstance(ui, dict)
    return Loaded(
        _convert(ui, object_info, where),
        ui,
        f"{where}: the {kind}'s 'workflow' {place} (UI format, converted; no 'prompt' {place})",
    )


def _short(value: object) -> str:
    text = repr(value)
    return text[:60] + ("..." if len(text) > 60 else "")
