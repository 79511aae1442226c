"""Reading an API prompt's graph: links, a node's inputs, class and title (pure helpers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["class_of", "inputs_of", "is_link", "title_of"]


def is_link(value: Any) -> TypeGuard[list[Any]]:
    """True for an input wired from another node: ``[node_id, output_index]``.

    Example::

        >>> is_link(["4", 0]), is_link([4, 0]), is_link([1.5, 2]), is_link("4")
        (True, True, False, False)
    """
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def inputs_of(node: Any) -> Mapping[str, Any]:
    """A node's ``inputs`` dict, or an empty one for a node without (or not a node)."""
    inputs = node.get("inputs") if isinstance(node, Mapping) else None
    return inputs if isinstance(inputs, Mapping) else {}


def class_of(node: Any) -> str | None:
    """A node's ``class_type``, or None."""
    found = node.get("class_type") if isinstance(node, Mapping) else None
    return found if isinstance(found, str) else None


def title_of(node: Any) -> str:
    """A node's title as the UI shows it: ``_meta.title``, else its class."""
    meta = node.get("_meta") if isinstance(node, Mapping) else None
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return str(title or class_of(node))
