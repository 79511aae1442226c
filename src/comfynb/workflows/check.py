"""Check that a workflow is a ComfyUI API prompt before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    InvalidInput,
    WorkflowError,
)

_UI_HINT = (
    "this looks like a UI workflow (it has 'nodes' and 'links'); in ComfyUI use "
    "'Export (API)' and pass that file's JSON"
)


def check_workflow(workflow: object) -> None:
    """Check that ``workflow`` is a ComfyUI API prompt; raise ``WorkflowError`` naming the node.

    The shape: a non-empty dict of node ids to ``{"class_type": str, "inputs": dict}``,
    where a list input is a link ``[node_id, output_index]`` to a node in the workflow.

    Example::

        >>> check_workflow({"1": {"class_type": "EmptyImage", "inputs": {"width": 64}}})
        >>> check_workflow({"2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}})
        Traceback (most recent call last):
        comfynb.errors.WorkflowError: node "2" (SaveImage) input "images" links to node "9", ...
    """
    if not isinstance(workflow, Mapping) or not workflow:
        raise WorkflowError(
            "a workflow is a non-empty dict of nodes in ComfyUI's API format, "
            f'{{"3": {{"class_type": "KSampler", "inputs": {{...}}}}}}; got {_short(workflow)}'
        )
    if "nodes" in workflow and "links" in workflow:
        raise WorkflowError(_UI_HINT)
    for node_id, node in workflow.items():
        _check_node(workflow, node_id, node)


def _check_node(workflow: Mapping[Any, Any], node_id: object, node: object) -> None:
    if not isinstance(node_id, str):
        raise WorkflowError(
            f"node id {node_id!r} must be a string (JSON object keys are); use {str(node_id)!r}",
            node_id=str(node_id),
        )
    if not isinstance(node, Mapping):
        raise WorkflowError(
            f'node "{node_id}" must be a dict with "class_type" and "inputs", got {_short(node)}',
            node_id=node_id,
        )
    class_type = node.get("class_type")
    if not isinstance(class_type, str) or not class_type:
        raise WorkflowError(
            f'node "{node_id}" has no "class_type" (the node\'s type, e.g. "KSampler"); add it',
            node_id=node_id,
        )
    inputs = node.get("inputs")
    if not isinstance(inputs, Mapping):
        raise WorkflowError(
            f'node "{node_id}" ({class_type}) has no "inputs" dict; add "inputs": {{}} '
            "if it takes none",
            node_id=node_id,
        )
    for name, value in inputs.items():
        if isinstance(value, list):
            _check_link(workflow, node_id, class_type, str(name), value)
        elif name == "filename_prefix" and isinstance(value, str):
            _check_prefix(node_id, class_type, value)


#: What ComfyUI's SaveImage adds to a prefix's last part: ``_00001_.png``.
_SAVED_SUFFIX = len("_00001_.webp")
_NAME_MAX = 255  # bytes in one file name, on Linux, macOS and Windows file systems


def _check_prefix(node_id: str, class_type: str, prefix: str) -> None:
    """A prefix ComfyUI would save under but could not serve back, or could not save at all."""
    where = f'node "{node_id}" ({class_type}) input "filename_prefix"'
    control = next((c for c in prefix if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:
        raise WorkflowError(
            f"{where} holds a control character {control!r}: ComfyUI would save the image but "
            "could not send it back (its /view drops the request); remove it",
            node_id=node_id,
            input_name="filename_prefix",
        )
    for part in prefix.replace("\\", "/").split("/"):
        size = len(part.encode("utf-8", "surrogatepass")) + _SAVED_SUFFIX
        if size > _NAME_MAX:
            raise WorkflowError(
                f"{where} makes file names of {size} bytes ({part[:20]!r}... and the counter); "
                f"a file name holds at most {_NAME_MAX} bytes: shorten it to "
                f"{_NAME_MAX - _SAVED_SUFFIX} bytes or fewer, or split it into folders with '/'",
                node_id=node_id,
                input_name="filename_prefix",
            )


def _check_link(
    workflow: Mapping[Any, Any], node_id: str, class_type: str, name: str, value: list[Any]
) -> None:
    where = f'node "{node_id}" ({class_type}) input "{name}"'
    if len(value) != 2 or not isinstance(value[0], str) or isinstance(value[1], bool):
        raise WorkflowError(
            f'{where} is {value!r}; a list input is a link [node_id, output_index], e.g. ["4", 0]',
            node_id=node_id,
            input_name=name,
        )
    if not isinstance(value[1], int) or value[1] < 0:
        raise WorkflowError(
            f"{where} links to output {value[1]!r} of node {value[0]!r}; an output index is "
            "an int from 0",
            node_id=node_id,
            input_name=name,
        )
    if value[0] not in workflow:
        raise WorkflowError(
            f'{where} links to node "{value[0]}", which is not in the workflow; '
            "add that node or fix the link",
            node_id=node_id,
            input_name=name,
        )


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_int(value: object, what: str, minimum: int, maximum: int = 2**31 - 1) -> int:
    """Return ``value`` if it is an int from ``minimum`` to ``maximum`` (the store's INTEGER).

    Example::

        >>> check_int(5, "priority", -(2**31))
        5
        >>> check_int(2**40, "priority", -(2**31))
        Traceback (most recent call last):
        comfynb.errors.InvalidInput: priority must be an int from -2147483648 to 2147483647, ...
    """
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be an int from {minimum} to {maximum}, got {value!r}")
    return value
