"""Prompt validation as ComfyUI's ``execution.validate_prompt`` does it: same checks, same order,
same error shapes and messages.

The code follows the real one closely on purpose, down to the Python operations that raise:
a link to a missing node raises a real ``KeyError('99')`` and a bad output index a real
``IndexError('tuple index out of range')``, which become ``exception_during_validation`` errors
with the same ``details`` as on the real server. Where the real server crashes (a node that is
not an object, an unhashable ``class_type``), ``validate_prompt`` raises too, and the app answers
500 as the real one does.

Two deliberate differences: inputs are checked in ``input_order`` and outputs in prompt order
(the real server walks Python sets, whose order changes between runs), so errors come out in a
stable order; and the simulator knows only the node classes of :mod:`.specs`.

Example::

    >>> from comfynb.simulator import specs
    >>> prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8,
    ...           "batch_size": 1, "color": 0}},
    ...           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
    ...           "filename_prefix": "x"}}}
    >>> v = validate_prompt(prompt, specs.object_info(), version="0.33.0",
    ...                     input_exists=lambda name: False)
    >>> v.error["type"], v.node_errors["1"]["errors"][0]["message"]
    ('prompt_outputs_failed_validation', 'Value 0 smaller than min of 1')
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Validation", "full_type_name", "validate_prompt"]

# The node classes that validate an input themselves (ComfyUI's VALIDATE_INPUTS); for those
# inputs the type, min/max and combo checks are skipped, as in the real server.
_CUSTOM_VALIDATED = {"LoadImage": ("image",)}

_Result = tuple[bool, list[dict[str, Any]]]


@dataclass(frozen=True)
class Validation:
    """The outcome of :func:`validate_prompt`.

    ``error`` is ``None`` when the prompt is accepted; ``node_errors`` may still be non-empty
    then (a partially valid prompt: only ``outputs`` run).
    """

    error: dict[str, Any] | None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def validate_prompt(
    prompt: dict[str, Any],
    specs: dict[str, dict[str, Any]],
    *,
    version: str,
    input_exists: Callable[[str], bool],
    partial_execution_targets: list[str] | None = None,
) -> Validation:
    """Validate an API-format prompt as the real server does before queueing it.

    Like ComfyUI, this converts accepted literal values in place (``"64"`` becomes ``64`` for an
    INT input), so the prompt that is queued, executed and stored in history holds the
    converted values.

    Example::

        >>> v = validate_prompt({}, specs, version="0.33.0", input_exists=lambda n: True)
        >>> v.error["type"]
        'prompt_no_outputs'

    Args:
        prompt: the ``prompt`` of the ``POST /prompt`` body (known to be a dict).
        specs: ``class_type -> /object_info entry``, from :func:`.specs.object_info`.
        version: ``"0.33.0"`` or ``"0.8.0"``: how an unknown or missing ``class_type`` is told.
        input_exists: whether an input file exists, given ``LoadImage``'s ``image`` value as
            sent (``"name.png"``, ``"sub/name.png"``, ``"name.png [output]"``).
        partial_execution_targets: only these output node ids run (``None``: all).

    Returns:
        a :class:`Validation`; rejected when ``error`` is not ``None``.

    Raises:
        Exception: whatever the real server raises on a prompt it cannot even read (a node
            that is not an object...): the app answers 500 then.
    """
    outputs: list[str] = []
    for node_id in prompt:
        error = _class_error(prompt, node_id, specs, version)
        if error is not None:
            return Validation(error)
        spec = specs[prompt[node_id]["class_type"]]
        if spec.get("output_node") is True and (
            partial_execution_targets is None or node_id in partial_execution_targets
        ):
            outputs.append(node_id)
    if not outputs:
        return Validation(_prompt_error("prompt_no_outputs", "Prompt has no outputs", ""))
    return _validate_outputs(_Walk(prompt, specs, input_exists), outputs)


def full_type_name(klass: type) -> str:
    """Return an exception class's name as ComfyUI reports it (``KeyError``, ``PIL.Foo``).

    Example::

        >>> full_type_name(KeyError)
        'KeyError'
    """
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return f"{module}.{klass.__qualname__}"


def _prompt_error(type_: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


def _class_error(
    prompt: dict[str, Any], node_id: str, specs: dict[str, Any], version: str
) -> dict[str, Any] | None:
    node = prompt[node_id]
    # `in` on purpose, as the real server: a list or a string node passes this test or fails it
    # the same way, and an int raises TypeError (the real server answers 500).
    if "class_type" not in node:
        if version == "0.8.0":
            message = "Cannot execute because a node is missing the class_type property."
            return _prompt_error("invalid_prompt", message, f"Node ID '#{node_id}'")
        title = node.get("_meta", {}).get("title")
        message = (
            f"Node '{title or f'ID #{node_id}'}' has no class_type. "
            "The workflow may be corrupted or a custom node is missing."
        )
        return _prompt_error(
            "missing_node_type",
            message,
            f"Node ID '#{node_id}'",
            node_id=node_id,
            class_type=None,
            node_title=title,
        )
    class_type = node["class_type"]
    if specs.get(class_type) is not None:
        return None
    if version == "0.8.0":
        message = f"Cannot execute because node {class_type} does not exist."
        return _prompt_error("invalid_prompt", message, f"Node ID '#{node_id}'")
    title = node.get("_meta", {}).get("title", class_type)
    return _prompt_error(
        "missing_node_type",
        f"Node '{title}' not found. The custom node may not be installed.",
        f"Node ID '#{node_id}'",
        node_id=node_id,
        class_type=class_type,
        node_title=title,
    )


@dataclass
class _Walk:
    """One validation pass: the prompt, the specs and the per-node results so far."""

    prompt: dict[str, Any]
    specs: dict[str, dict[str, Any]]
    input_exists: Callable[[str], bool]
    validated: dict[str, _Result] = field(default_factory=dict)


def _exception_reason(type_: str, message: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "message": message,
        "details": str(exc),
        "extra_info": {
            **extra,
            "exception_type": full_type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
        },
    }


def _validate_outputs(walk: _Walk, outputs: list[str]) -> Validation:
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons = _validate_inputs(walk, output)
        except Exception as exc:
            valid = False
            reasons = [
                _exception_reason(
                    "exception_during_validation", "Exception when validating node", exc
                )
            ]
            walk.validated[output] = (False, reasons)
        if valid:
            good.append(output)
            continue
        failed.append((output, reasons))
        # As the real server: every invalid node seen so far (not only this output's
        # ancestors) gets this output in its dependent_outputs.
        for node_id, (node_valid, node_reasons) in walk.validated.items():
            if node_valid or not node_reasons:
                continue  # downstream of an error: invalid, but reported at the error's node
            if node_id not in node_errors:
                node_errors[node_id] = {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": walk.prompt[node_id]["class_type"],
                }
            node_errors[node_id]["dependent_outputs"].append(output)
    if good:
        return Validation(None, node_errors, good)
    details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons)
    error = _prompt_error(
        "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
    )
    return Validation(error, node_errors, [])


def _input_specs(spec: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    """(name, "required"|"optional", spec) of a class's inputs, in the class's input order."""
    inputs = spec.get("input", {})
    order = spec.get("input_order", {})
    out: list[tuple[str, str, list[Any]]] = []
    for category in ("required", "optional"):
        declared = inputs.get(category, {})
        names = [n for n in order.get(category, []) if n in declared]
        names += [n for n in declared if n not in names]
        out += [(name, category, declared[name]) for name in names]
    return out


def _validate_inputs(walk: _Walk, node_id: str) -> _Result:
    if node_id in walk.validated:
        return walk.validated[node_id]
    node = walk.prompt[node_id]
    inputs = node["inputs"]
    class_type = node["class_type"]
    custom = _CUSTOM_VALIDATED.get(class_type, ())
    errors: list[dict[str, Any]] = []
    valid = True
    for name, category, input_spec in _input_specs(walk.specs[class_type]):
        if name not in inputs:
            if category == "required":
                errors.append(_reason("required_input_missing", "Required input is missing", name))
            continue
        info = [input_spec[0], input_spec[1] if len(input_spec) > 1 else {}]
        value = inputs[name]
        if isinstance(value, list):
            error, upstream_valid = _check_link(walk, name, info, value)
            if error is not None:
                errors.append(error)
            valid = valid and upstream_valid
            continue
        error = _check_value(inputs, name, info, checks=name not in custom)
        if error is not None:
            errors.append(error)
    errors += _custom_validation(walk, class_type, inputs)
    result: _Result = (False, errors) if errors or not valid else (True, [])
    walk.validated[node_id] = result
    return result


def _reason(type_: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "message": message,
        "details": details,
        "extra_info": {"input_name": details, **extra},
    }


def _check_link(
    walk: _Walk, name: str, info: list[Any], link: list[Any]
) -> tuple[dict[str, Any] | None, bool]:
    """Check a linked input; returns (its error or None, whether the upstream node is valid)."""
    if len(link) != 2:
        message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
        return _reason(
            "bad_linked_input", message, name, input_config=info, received_value=link
        ), True
    source_id = link[0]
    # These lookups raise KeyError / IndexError / TypeError exactly where the real server's do.
    source_class = walk.prompt[source_id]["class_type"]
    return_types = tuple(walk.specs[source_class].get("output", []))
    received_type = return_types[link[1]]
    input_type = info[0]
    any_enum = received_type == [] and isinstance(input_type, list | tuple)
    if not _types_match(received_type, input_type) and not any_enum:
        details = f"{name}, received_type({received_type}) mismatch input_type({input_type})"
        error = {
            "type": "return_type_mismatch",
            "message": "Return type mismatch between linked nodes",
            "details": details,
            "extra_info": {
                "input_name": name,
                "input_config": info,
                "received_type": received_type,
                "linked_node": link,
            },
        }
        return error, True
    try:
        upstream_valid, _ = _validate_inputs(walk, source_id)
    except Exception as exc:
        reasons = [
            _exception_reason(
                "exception_during_inner_validation",
                "Exception when validating inner node",
                exc,
                input_name=name,
                input_config=info,
                exception_message=str(exc),
                linked_node=link,
            )
        ]
        walk.validated[source_id] = (False, reasons)
        return None, False
    return None, upstream_valid


def _types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input``: equal, ``*`` on either side, or overlapping unions."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    received_types = {t.strip() for t in received.split(",")}
    expected_types = {t.strip() for t in expected.split(",")}
    if "*" in received_types or "*" in expected_types:
        return True
    return not received_types.isdisjoint(expected_types)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "INT": int,
    "FLOAT": float,
    "STRING": str,
    "BOOLEAN": bool,
}


def _check_value(
    inputs: dict[str, Any], name: str, info: list[Any], *, checks: bool
) -> dict[str, Any] | None:
    """Convert a literal input in place and check it against min, max and the combo options."""
    value = inputs[name]
    if isinstance(value, dict) and "__value__" in value:  # a list widget value, wrapped
        value = value["__value__"]
        inputs[name] = value
    input_type, options = info
    convert = _CONVERTERS.get(input_type) if isinstance(input_type, str) else None
    if convert is not None:
        try:
            value = convert(value)
        except Exception as exc:
            return {
                "type": "invalid_input_type",
                "message": f"Failed to convert an input value to a {input_type} value",
                "details": f"{name}, {value}, {exc}",
                "extra_info": {
                    "input_name": name,
                    "input_config": info,
                    "received_value": value,
                    "exception_message": str(exc),
                },
            }
        inputs[name] = value
    if not checks:
        return None
    if "min" in options and value < options["min"]:
        message = f"Value {value} smaller than min of {options['min']}"
        return _reason(
            "value_smaller_than_min", message, name, input_config=info, received_value=value
        )
    if "max" in options and value > options["max"]:
        message = f"Value {value} bigger than max of {options['max']}"
        return _reason(
            "value_bigger_than_max", message, name, input_config=info, received_value=value
        )
    return _check_combo(name, info, value)


def _check_combo(name: str, info: list[Any], value: Any) -> dict[str, Any] | None:
    input_type, options = info
    if isinstance(input_type, list):
        combo = input_type
    elif input_type == "COMBO":  # the newer (v3) spelling: ["COMBO", {"options": [...]}]
        combo = list(options.get("options", []))
    else:
        return None
    if isinstance(value, str) and "\\" in value:
        value = value.replace("\\", "/")  # ComfyUI compares canonical paths
    if all(isinstance(item, str) for item in combo):
        combo = [item.replace("\\", "/") for item in combo]
    if value in combo:
        return None
    config: list[Any] | None = info
    listed = str(combo)
    if len(combo) > 20:  # as ComfyUI: no gigantic lists in error bodies
        listed = f"(list of length {len(combo)})"
        config = None
    return {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": f"{name}: '{value}' not in {listed}",
        "extra_info": {"input_name": name, "input_config": config, "received_value": value},
    }


def _custom_validation(
    walk: _Walk, class_type: str, inputs: dict[str, Any]
) -> list[dict[str, Any]]:
    """The VALIDATE_INPUTS of the classes that have one: LoadImage checks that its file exists."""
    errors: list[dict[str, Any]] = []
    for name in _CUSTOM_VALIDATED.get(class_type, ()):
        if name not in inputs:
            continue  # already reported as required_input_missing
        value = inputs[name]
        value = None if isinstance(value, list) else value  # a link is not resolved yet
        if isinstance(value, str) and walk.input_exists(value):
            continue
        errors.append(
            {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"{name} - Invalid image file: {value}",
                "extra_info": {"input_name": name},
            }
        )
    return errors
