"""What made an image, read from the prompt that was posted: seed, cfg, steps, sampler, prompt.

A candidate's ``seed``, ``cfg``, ``steps``, ``sampler`` and ``prompt`` columns come from here,
never from a label: the values are the inputs of the nodes upstream of the node that saved the
image. The rule, for each output node:

- walk the graph upstream from the output node, breadth first (nearest node first; a node's
  inputs in the order they are written);
- ``seed`` is the first int input named ``seed`` or ``noise_seed``; ``cfg`` the first number
  named ``cfg``; ``steps`` the first int named ``steps``; ``sampler`` the first string named
  ``sampler_name``. So the sampler that made the image wins over an earlier pass
  (a hires-fix's second KSampler), and a ``SamplerCustomAdvanced`` finds its values on its
  ``RandomNoise``, ``CFGGuider``, ``BasicScheduler`` and ``KSamplerSelect`` nodes;
- ``prompt`` is the text of the positive conditioning: the first string input named ``text``
  (or ``text_g``, ``prompt``) found upstream of the first ``positive`` input, else (a node
  with no conditioning, such as an API node) the first such string upstream of the output.

A value given as a link is a fact only for the prompt text, where a ``Primitive*`` node's
``value`` wired into a ``text`` input counts; numbers must be literal inputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .graph import is_link

__all__ = ["GenerationFacts", "generation_facts"]

_SEED_NAMES: Final = ("seed", "noise_seed")
_TEXT_NAMES: Final = ("text", "text_g", "prompt")


@dataclass(frozen=True, slots=True)
class GenerationFacts:
    """The facts of one output node's image; None where the prompt has no such input."""

    seed: int | None = None
    cfg: float | None = None
    steps: int | None = None
    sampler: str | None = None
    prompt: str | None = None


def generation_facts(prompt: Mapping[str, Any], output_node: str | None = None) -> GenerationFacts:
    """Read seed, cfg, steps, sampler and positive prompt from an API prompt.

    ``output_node`` is the id of the node that saved the image (a candidate's ``node_id``);
    None starts from every node no other node reads (the outputs), in id order.

    Example::

        >>> facts = generation_facts(default_txt2img, "9")
        >>> facts.seed, facts.cfg, facts.steps, facts.sampler
        (156680208700286, 8, 20, 'euler')
        >>> facts.prompt[:20]
        'beautiful scenery na'
    """
    starts = [output_node] if output_node is not None else _sinks(prompt)
    found: dict[str, Any] = {}
    positive: list[Any] = []
    for _, inputs in _upstream(prompt, starts):
        for name, value in inputs.items():
            if is_link(value):
                if name == "positive" and not positive:
                    positive.append(value[0])
                continue
            _take(found, name, value)
    text = None
    if positive:
        text = next(_texts(prompt, positive), None)
    if text is None:
        text = next(_texts(prompt, starts), None)
    return GenerationFacts(
        seed=found.get("seed"),
        cfg=found.get("cfg"),
        steps=found.get("steps"),
        sampler=found.get("sampler"),
        prompt=text,
    )


def _take(found: dict[str, Any], name: str, value: Any) -> None:
    if name in _SEED_NAMES:
        if _is_int(value):
            found.setdefault("seed", value)
    elif name == "cfg":
        if _is_int(value) or isinstance(value, float):
            found.setdefault("cfg", value)
    elif name == "steps":
        if _is_int(value):
            found.setdefault("steps", value)
    elif name == "sampler_name" and isinstance(value, str):
        found.setdefault("sampler", value)


def _texts(prompt: Mapping[str, Any], starts: list[Any]) -> Iterator[str]:
    for node_id, inputs in _upstream(prompt, starts, positive_only=True):
        names: tuple[str, ...] = _TEXT_NAMES
        if str(prompt[node_id].get("class_type", "")).startswith("Primitive"):
            names = ("value",)  # a PrimitiveStringMultiline wired into a text input
        for name in names:
            value = inputs.get(name)
            if isinstance(value, str):
                yield value


def _upstream(
    prompt: Mapping[str, Any], starts: list[Any], *, positive_only: bool = False
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each node from ``starts`` upstream once, nearest first, with its inputs.

    ``positive_only``: never follow a ``negative`` input, and where a node has a
    ``positive`` input follow only that one (``LTXVConditioning``, ``InstructPixToPix...``
    pass both through; their first output is the positive).
    """
    seen: set[str] = set()
    queue = deque(str(s) for s in starts)
    while queue:
        node_id = queue.popleft()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = prompt.get(node_id)
        if not isinstance(node, Mapping):
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping):
            continue
        yield node_id, inputs
        links = {name: v for name, v in inputs.items() if is_link(v)}
        if positive_only:
            if "positive" in links:
                links = {"positive": links["positive"]}
            else:
                links = {n: v for n, v in links.items() if "negative" not in str(n)}
        queue.extend(str(v[0]) for v in links.values())


def _sinks(prompt: Mapping[str, Any]) -> list[str]:
    """The nodes no other node reads, in id order (numeric ids by number)."""
    read = {
        str(value[0])
        for node in prompt.values()
        if isinstance(node, Mapping) and isinstance(node.get("inputs"), Mapping)
        for value in node["inputs"].values()
        if is_link(value)
    }
    return sorted((n for n in prompt if n not in read), key=_id_order)


def _id_order(node_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in node_id.split(":"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
