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


def to_json(value: Any, what: str) -> str | None:
    """Serialize a JSON column value, secrets stripped; bad values raise InvalidInput.

    Example::

        >>> to_json({"seed": 42, "api_key": "sk-1"}, "params")
        '{"seed":42}'
    """
    if value is None:
        return None
    try:
        # The common case, measured ~7x faster for a workflow: dump it as is, and strip only
        # when a key may be a secret. json.dumps escapes non-ASCII (ensure_ascii), so the
        # words are looked for in plain ASCII; an escape (\u...) takes the careful way.
        text = json.dumps(value, separators=_COMPACT, default=_json_default)
        lowered = text.lower()
        if "\\u" not in text and not any(word in lowered for word in _SECRET_WORDS):
            return text
    except (TypeError, ValueError):
        pass  # e.g. a value that is not JSON under a secret key: stripped, it may be
    try:
        return json.dumps(strip_secrets(value), separators=_COMPACT, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{what} must be JSON data (dicts, lists, str, numbers, bools, None): {exc}"
        ) from None


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
