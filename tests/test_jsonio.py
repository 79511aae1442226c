"""JSON as the store writes it (comfynb.core.jsonio): the fast path keeps every secret out."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfynb import InvalidInput
from comfynb.core.jsonio import strip_secrets, to_json

KEYS = [
    # secrets, as is_secret_key sees them
    "api_key",
    "apiKey",
    "X-Api-Key",
    "HF_TOKEN",
    "auth_token",
    "password",
    "client_secret",
    "Authorization",
    "accessToken",
    "private_key",
    "cookie",
    "credentials",
    "PassWd",
    "api_\u212aey",  # a KELVIN SIGN: lowercases to "k", escaped as \u212a in the dump
    # not secrets, some holding a secret word
    "max_tokens",
    "token_normalization",
    "keyframes",
    "monkey",
    "seed",
    "cfg",
    "prompt",
    "class_type",
    "inputs",
    "text",
    "caf\u00e9",
]
VALUES: list[Any] = [1, 2.5, "x", "a token of love", None, True, [1, "key"], ("t", 2)]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.45:
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 3 and roll < 0.6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(VALUES)


def test_the_fast_path_writes_what_stripping_first_writes() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = random_value(rng)
        if value is None:  # a NULL column, not JSON null
            continue
        expected = json.dumps(strip_secrets(value), separators=(",", ":"))
        assert to_json(value, "x") == expected, value


def test_secrets_are_stripped_and_bad_values_refused() -> None:
    assert to_json({"seed": 42, "api_key": "sk-1"}, "params") == '{"seed":42}'
    assert to_json({"api_\u212aey": "sk-1", "n": 1}, "params") == '{"n":1}'
    # a value that is not JSON under a secret key: dropped with its key, as before
    assert to_json({"token": object(), "n": np.int64(3), "p": Path("/a")}, "x") == (
        '{"n":3,"p":"/a"}'
    )
    with pytest.raises(InvalidInput, match="params must be JSON data"):
        to_json({"n": object()}, "params")
    assert to_json(None, "x") is None
