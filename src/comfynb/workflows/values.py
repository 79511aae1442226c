"""ComfyUI's check of one literal input value against its ``/object_info`` spec (pure).

The same rule, order and error objects as ``execution.validate_inputs`` on ComfyUI 0.33.0: convert
to the declared type (``int``, ``float``, ``str``, ``bool``), then min, max, then the combo
options. The simulator (a leaf: it imports nothing of comfynb) keeps its own copy in
``simulator/validation.py``; ``tests/test_workflow.py`` checks that both give the same answers.

Example::

    >>> check_value("steps", 0, ["INT", {"min": 1, "max": 10000}])
    (0, {'type': 'value_smaller_than_min', 'message': 'Value 0 smaller than min of 1', ...})
    >>> check_value("steps", "20", ["INT", {"min": 1}])
    (20, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["check_value"]

_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "INT": int,
    "FLOAT": float,
    "STRING": str,
    "BOOLEAN": bool,
}


def _reason(type_: str, message: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "message": message,
        "details": name,
        "extra_info": {"input_name": name, **extra},
    }


def check_value(name: str, value: Any, spec: Any) -> tuple[Any, dict[str, Any] | None]:
    """Return ``(converted value, None)``, or ``(value, error)`` with ComfyUI's error object.

    ``spec`` is the input's ``/object_info`` entry, ``[type, options]``; a value wrapped as
    ``{"__value__": [...]}`` (a list widget value) is checked unwrapped.
    """
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    info = [
        spec[0] if isinstance(spec, list | tuple) and spec else spec,
        spec[1] if isinstance(spec, list | tuple) and len(spec) > 1 else {},
    ]
    input_type, options = info
    convert = _CONVERTERS.get(input_type) if isinstance(input_type, str) else None
    if convert is not None:
        try:
            value = convert(value)
        except Exception as exc:
            return value, {
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
    if "min" in options and value < options["min"]:
        message = f"Value {value} smaller than min of {options['min']}"
        return value, _reason(
            "value_smaller_than_min", message, name, input_config=info, received_value=value
        )
    if "max" in options and value > options["max"]:
        message = f"Value {value} bigger than max of {options['max']}"
        return value, _reason(
            "value_bigger_than_max", message, name, input_config=info, received_value=value
        )
    return value, _check_combo(name, info, value)


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
