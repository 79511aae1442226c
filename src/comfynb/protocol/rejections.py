"""ComfyUI's rejections of a prompt, in words: one sentence per node error, and ``PromptRejected``.

Example::

    >>> describe_node_error("3", "KSampler", {"type": "value_smaller_than_min", ...})
    'node "3" (KSampler) input "steps" = 0 is below the minimum 1; ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import (
    PromptRejected,
)

if TYPE_CHECKING:
    pass


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _options(config: Any) -> list[Any]:
    """Combo options from an input config in either spelling: ``[[...], {}]`` or ``["COMBO", {...}]``."""
    if isinstance(config, list) and config:
        if isinstance(config[0], list):
            return list(config[0])
        if len(config) > 1 and isinstance(config[1], dict):
            return list(config[1].get("options") or [])
    return []


def _limit(config: Any, key: str) -> Any:
    if isinstance(config, list) and len(config) > 1 and isinstance(config[1], dict):
        return config[1].get(key)
    return None


def _type_name(config: Any) -> str:
    return (
        str(config[0])
        if isinstance(config, list) and config and isinstance(config[0], str)
        else "?"
    )


def describe_node_error(node_id: str, class_type: str, error: Mapping[str, Any]) -> str:
    """One node error as a sentence naming node, class, input, what was wrong and the fix.

    Example::

        >>> describe_node_error("3", "KSampler", {"type": "value_smaller_than_min",
        ...     "extra_info": {"input_name": "steps", "received_value": 0,
        ...                    "input_config": ["INT", {"min": 1}]}})
        'node "3" (KSampler) input "steps" = 0 is below the minimum 1; set it to at least 1 and submit again'
    """
    kind = str(error.get("type"))
    info = _dict(error.get("extra_info"))
    name = info.get("input_name") or error.get("details") or "?"
    value = info.get("received_value")
    config = info.get("input_config")
    where = f'node "{node_id}" ({class_type}) input "{name}"'
    if kind == "required_input_missing":
        return f"{where} is required but missing; give it a value or a link and submit again"
    if kind == "value_smaller_than_min":
        low = _limit(config, "min")
        return f"{where} = {value!r} is below the minimum {low}; set it to at least {low} and submit again"
    if kind == "value_bigger_than_max":
        high = _limit(config, "max")
        return f"{where} = {value!r} is above the maximum {high}; set it to at most {high} and submit again"
    if kind == "invalid_input_type":
        wanted = _type_name(config)
        return (
            f"{where} = {value!r} is not a valid {wanted}; give a {wanted} value and submit again"
        )
    if kind == "value_not_in_list":
        options = _options(config)
        if not options:  # long lists come without input_config: "(list of length 44)"
            return (
                f"{where} = {value!r} is not one of the allowed values; pick one of those that "
                f'client.object_info("{class_type}") lists for it'
            )
        shown = ", ".join(repr(o) for o in options[:12]) + (", ..." if len(options) > 12 else "")
        return f"{where} = {value!r} is not one of the allowed values ({shown}); pick one of them"
    if kind == "return_type_mismatch":
        link = info.get("linked_node")
        source = (
            f'node "{link[0]}" output {link[1]}'
            if isinstance(link, list) and len(link) > 1
            else "its link"
        )
        return (
            f"{where} takes {_type_name(config)} but is linked to {source} of type "
            f"{info.get('received_type')}; link an output of the right type"
        )
    if kind == "exception_during_validation":
        return (
            f'node "{node_id}" ({class_type}) could not be validated: '
            f"{info.get('exception_type', 'error')} {error.get('details', '')}; check that its links "
            "point to existing nodes and outputs"
        )
    if kind == "custom_validation_failed":
        return (
            f'node "{node_id}" ({class_type}) was refused: {error.get("details", "")}; for a file '
            "input, upload it first (client.upload_image) or pick a file the server has"
        )
    text = "; ".join(str(p) for p in (error.get("message"), error.get("details")) if p)
    return f'node "{node_id}" ({class_type}) was refused ({kind}): {text}'


def describe_node_errors(node_errors: Mapping[str, Any]) -> list[str]:
    """Every error of a ``node_errors`` object, one sentence each."""
    lines: list[str] = []
    for node_id, entry in node_errors.items():
        entry = _dict(entry)
        class_type = str(entry.get("class_type") or "?")
        errors = entry.get("errors")
        for error in errors if isinstance(errors, list) else ():
            if isinstance(error, dict):
                lines.append(describe_node_error(str(node_id), class_type, error))
    return lines


def _describe_prompt_error(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type"))
    message = str(error.get("message") or "")
    details = str(error.get("details") or "")
    info = _dict(error.get("extra_info"))
    if kind == "missing_node_type":
        return (
            f'node "{info.get("node_id", "?")}" uses class_type {info.get("class_type")!r}, which '
            "the server does not have; install that custom node or fix the class_type"
        )
    if kind == "invalid_prompt":
        return f"{message} ({details}); fix the class_type of that node or install its custom node"
    if kind == "prompt_no_outputs":
        return (
            "the prompt has no output node; add one (SaveImage, PreviewImage...) and submit again"
        )
    if kind == "no_prompt":
        return "the request carried no prompt; pass the API-format prompt dict"
    if kind == "invalid_prompt_id":
        return f"{message}; leave prompt_id=None to get a fresh UUID4, or pass one"
    return f"{message} {details}".strip() or f"refused with error type {kind!r}"


def prompt_rejected(body: Any) -> PromptRejected:
    """A ``PromptRejected`` from a 400 answer of ``POST /prompt``, whatever its error type."""
    data = body if isinstance(body, dict) else {}
    error = _dict(data.get("error"))
    if not error and isinstance(data.get("error"), str):
        error = {"type": "unknown", "message": data["error"]}
    node_errors = _dict(data.get("node_errors"))
    kind = str(error.get("type") or "unknown")
    lines = describe_node_errors(node_errors) or [_describe_prompt_error(error)]
    message = "ComfyUI refused the prompt:" + (
        f" {lines[0]}" if len(lines) == 1 else "".join(f"\n  {line}" for line in lines)
    )
    return PromptRejected(message, error_type=kind, error=error, node_errors=node_errors)
