"""JSON as the store writes it: secret-looking keys stripped, bad values a typed error."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import InvalidInput

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SECRET_KEY = re.compile(
    r"^(api_?key|apikey)"  # api_key, api_key_comfy_org, apikey
    r"|(^|_)(api_?key|token|secret|password|passwd|authorization|cookie|credentials?"
    r"|(secret|private|access)_key)$"  # auth_token, hf_token, x_api_key, client_secret
)


def is_secret_key(key: str) -> bool:
    """True for a key that names a secret: ``api_key*``, ``*_token``, ``*password``, ...

    Keys such as ``max_tokens`` or ``token_normalization`` are not secrets.

    Example::

        >>> is_secret_key("api_key_comfy_org"), is_secret_key("HF_TOKEN"), is_secret_key("max_tokens")
        (True, True, False)
    """
    normal = _CAMEL.sub("_", key).replace("-", "_").lower()
    return bool(_SECRET_KEY.search(normal))


def strip_secrets(value: Any) -> Any:
    """Return ``value`` without secret-looking keys, at any depth; the input is not changed.

    Example::

        >>> strip_secrets({"extra_data": {"api_key_comfy_org": "sk-1", "client": "nb"}})
        {'extra_data': {'client': 'nb'}}
    """
    if isinstance(value, Mapping):
        return {
            k: strip_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and is_secret_key(k))
        }
    if isinstance(value, list | tuple):
        return [strip_secrets(v) for v in value]
    return value


_COMPACT: Final = (",", ":")


def _json_default(value: object) -> object:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


#: Every secret-looking key holds one of these, lowercased (``is_secret_key`` only adds
#: underscores and lowercases): a text without any of them has no secret to strip.
_SECRET_WORDS: Final = ("key", "token", "secret", "passw", "authorization", "cookie", "credential")


#: The integers every column and ComfyUI can hold: int64 and uint64 (a seed goes up to 2**64-1).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
_LONG_NUMBER: Final = re.compile(r"\d{19}")  # 19+ digits: a number that may be out of range
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def to_json(value: Any, what: str) -> str | None:
    """Serialize a JSON column value, secrets stripped; a value JSON or the store cannot
    hold (NaN, infinity, an int beyond 64 bits, text with a lone surrogate, an object)
    raises InvalidInput naming where it is.

    Example::

        >>> to_json({"seed": 42, "api_key": "sk-1"}, "params")
        '{"seed":42}'
        >>> to_json({"cfg": float("nan")}, "params")
        Traceback (most recent call last):
        comfynb.errors.InvalidInput: params["cfg"] is nan: JSON has no NaN or infinity; ...
    """
    if value is None:
        return None
    try:
        # The common case, measured ~7x faster for a workflow: dump it as is, and strip only
        # when a key may be a secret. json.dumps escapes non-ASCII (ensure_ascii), so the
        # words are looked for in plain ASCII; an escape (\u..., maybe a lone surrogate) or a
        # long number (maybe beyond 64 bits) takes the careful way.
        text = json.dumps(value, separators=_COMPACT, default=_json_default, allow_nan=False)
        lowered = text.lower()
        if (
            "\\u" not in text
            and not any(word in lowered for word in _SECRET_WORDS)
            and not _LONG_NUMBER.search(text)
        ):
            return text
    except (TypeError, ValueError):
        pass  # e.g. a value that is not JSON under a secret key: stripped, it may be
    stripped = strip_secrets(value)
    problem = unstorable(stripped, what)
    if problem is not None:
        raise InvalidInput(problem)
    try:
        return json.dumps(stripped, separators=_COMPACT, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{what} must be JSON data (dicts, lists, str, numbers, bools, None): {exc}"
        ) from None


def unstorable(value: Any, where: str, *, prompt: bool = False) -> str | None:
    """Say what in ``value`` JSON or the store cannot hold, and where; None if nothing.

    NaN and infinity (JSON has none), an int beyond 64 bits (no column, and no ComfyUI
    input, holds one), text with a lone surrogate (not valid Unicode), an object that is
    not JSON. ``prompt``: ``value`` is an API prompt, and an input is named the way
    ComfyUI's errors name it.

    Example::

        >>> unstorable({"seed": 2**70}, "params")
        'params["seed"] is 1180591620717411303424: beyond the 64-bit range ComfyUI and ...'
        >>> unstorable({"1": {"inputs": {"color": float("nan")}}}, "the workflow", prompt=True)
        'input "color" of node "1" is nan: JSON has no NaN or infinity; use a finite ...'
    """
    found = _find(value, ())
    if found is None:
        return None
    keys, problem = found
    return f"{_path(where, keys, prompt)}{problem.replace('@WHAT@', where)}"


def _find(value: Any, keys: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """The keys to the first value that cannot be held, and what is wrong with it."""
    if isinstance(value, bool) or value is None:
        return None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and not isinstance(value, int | float | str):
        value = item()
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return keys, (
                f" is {value!r}: JSON has no NaN or infinity; use a finite number "
                "(or None for no value)"
            )
        return None
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            return keys, (
                f" is {value}: beyond the 64-bit range ComfyUI and the store hold "
                "(-2**63 to 2**64-1); e.g. a seed is from 0 to 2**64-1"
            )
        return None
    if isinstance(value, str):
        problem = _surrogate(value)
        return None if problem is None else (keys, problem)
    if isinstance(value, Mapping):
        if len(keys) > 100:
            return keys, " is nested more than 100 levels deep"
        for key, inner in value.items():
            if not isinstance(key, str):
                return keys, f" has a key {key!r} that is not a string"
            if problem := _surrogate(key):
                return keys, f" key {key!r}{problem}"
            if found := _find(inner, (*keys, key)):
                return found
        return None
    if isinstance(value, list | tuple):
        if len(keys) > 100:
            return keys, " is nested more than 100 levels deep"
        for index, inner in enumerate(value):
            if found := _find(inner, (*keys, index)):
                return found
        return None
    if isinstance(value, Path):
        return None
    return (
        keys,
        f" is a {type(value).__name__}: @WHAT@ must be JSON data (dicts, lists, str, numbers, bools, None)",
    )


def _path(where: str, keys: tuple[Any, ...], prompt: bool) -> str:
    if prompt and len(keys) >= 3 and keys[1] == "inputs":
        rest = "".join(f"[{json.dumps(k)}]" for k in keys[3:])
        return f'input "{keys[2]}"{rest} of node "{keys[0]}"'
    if prompt and keys:
        rest = "".join(f"[{json.dumps(k)}]" for k in keys[1:])
        return f'node "{keys[0]}"{rest}'
    return where + "".join(f"[{json.dumps(k)}]" for k in keys)


def _surrogate(text: str) -> str | None:
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f" holds a lone surrogate {found.group()!r} at position {found.start()}: it is "
        "not valid Unicode (often a file name read with errors='surrogateescape'); remove or "
        "replace that character"
    )


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
