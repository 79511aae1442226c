"""``comfynb.Workflow``: an immutable ComfyUI API prompt, loaded from any format, set by name.

Example::

    >>> wf = comfynb.Workflow.load("default.png", object_info=client)
    >>> wf["3"]["seed"]
    156680208700286
    >>> wf2 = wf.set("KSampler.seed", 7).set("Positive.text", "a red fox")
    >>> wf2.to_api()["3"]["inputs"]["seed"], wf["3"]["seed"]     # wf is unchanged
    (7, 156680208700286)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ..errors import WorkflowError
from ..protocol.rejections import describe_node_error
from .check import check_workflow
from .load import fetch_object_info, load_source
from .values import check_value

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXAMPLES", "Workflow"]

#: The example workflows shipped in ``comfynb/workflows/data`` (``Workflow.example``).
EXAMPLES: Final = ("txt2img", "img2img")


def _object_info(source: object) -> dict[str, Any] | None:
    """``/object_info`` from what ``Workflow.load(object_info=...)`` takes.

    * the ``/object_info`` dict itself;
    * a server URL (``"http://127.0.0.1:8188"``): fetched once here (:func:`fetch_object_info`);
    * anything with an ``.object_info()`` method: a comfynb ``Client`` (asks the server), or a
      store (``comfynb.open(...)``: its newest stored copy, which works offline).

    Example::

        >>> _object_info("http://127.0.0.1:8188")["KSampler"]["input"]["required"]["steps"][0]
        'INT'
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, str):
        return fetch_object_info(source)
    method = getattr(source, "object_info", None)
    if callable(method):
        info = method()
        if isinstance(info, Mapping):
            return dict(info)
        raise WorkflowError(
            f"object_info(): {type(source).__name__}.object_info() returned "
            f"{type(info).__name__}, not the /object_info dict"
        )
    raise WorkflowError(
        "object_info must be the /object_info dict, a server URL ('http://127.0.0.1:8188'), "
        f"a comfynb Client or a store holding a copy; got {type(source).__name__}"
    )


class Workflow:
    """An API-format ComfyUI prompt you can read and change by name; never changed in place.

    Load one with :meth:`load` (path, dict, JSON text, or a PNG/WebP ComfyUI saved; API or UI
    format). Read ``wf["3"]["seed"]``; :meth:`set` returns a new workflow; :meth:`to_api`
    gives the dict that is posted; :meth:`inputs` lists what can be set.

    Example::

        >>> wf = Workflow.load({"1": {"class_type": "EmptyImage", "inputs": {"width": 64}}})
        >>> wf.set("EmptyImage.width", 128)["1"]["width"]
        128
    """

    __slots__ = ("_info", "_prompt", "_ui", "source")

    _prompt: dict[str, Any]
    _info: dict[str, Any] | None
    _ui: dict[str, Any] | None
    #: Where the prompt came from, e.g. ``"out.png: the PNG's 'prompt' text chunk (API format;
    #: its 'workflow' text chunk is not needed)"``.
    source: str

    def __init__(
        self,
        prompt: Mapping[str, Any],
        *,
        object_info: Any = None,
        source: str = "the dict given (API format)",
        ui: Mapping[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "_prompt", copy.deepcopy(dict(prompt)))
        object.__setattr__(self, "_info", _object_info(object_info))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_ui", copy.deepcopy(dict(ui)) if ui is not None else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Workflow is immutable: wf.set(name, value) returns a new one")

    @classmethod
    def load(cls, source: Any, object_info: Any = None) -> Workflow:
        """Load a workflow from a path, a dict, JSON text, or PNG/WebP bytes, in any format.

        A UI-format workflow (what ComfyUI's "Save" writes) is converted as ComfyUI's frontend
        does; that needs the server's ``/object_info``, as ``object_info``:

        * a server URL, ``"http://127.0.0.1:8188"`` (one ``GET /object_info``);
        * a comfynb ``Client`` (it asks its server);
        * a store (``comfynb.open("lab.duckdb")``, local or through a worker): the copy of
          ``/object_info`` a worker saved there when its server first answered (the newest
          one). It works with the server down: offline;
        * the ``/object_info`` dict itself.

        ``wf.source`` says what was read (for a PNG with both chunks: the ``prompt`` one).

        Example::

            >>> wf = Workflow.load("my_workflow.json", object_info="http://127.0.0.1:8188")
            >>> wf.source
            'my_workflow.json (UI format, converted)'
            >>> store = comfynb.open("lab.duckdb")      # a worker ran on the server once
            >>> wf = Workflow.load("my_workflow.json", object_info=store)   # server down: fine

        Raises:
            WorkflowError: an unknown format (saying what was recognised), an API prompt of
                the wrong shape (``check_workflow``), a node class that ``object_info`` lacks
                (naming the node and what to install), a bad file, a server URL that does
                not answer (naming it).
            ObjectInfoNotFound: ``object_info=store`` and the store holds no copy yet (the
                message says how to get one).
        """
        if isinstance(source, Workflow):
            return source  # immutable: nothing to copy
        info = _object_info(object_info)
        loaded = load_source(source, info)
        check_workflow(loaded.prompt)
        if info is not None:
            _check_classes(loaded.prompt, info)
        if isinstance(source, Mapping):  # the caller keeps theirs: copy
            return cls(loaded.prompt, object_info=info, source=loaded.source, ui=loaded.ui)
        return cls._owning(loaded.prompt, info, loaded.source, loaded.ui)

    @classmethod
    def example(cls, name: str) -> Workflow:
        """A workflow shipped with comfynb: ``"txt2img"`` (ComfyUI's default graph) or
        ``"img2img"`` (the same graph starting from ``LoadImage("example.png")`` ->
        ``VAEEncode``, denoise 0.6). Both use the checkpoint
        ``v1-5-pruned-emaonly-fp16.safetensors``; ``wf.ui`` is its UI format (open it in
        ComfyUI), ``wf.to_api()`` what is posted.

        Example::

            >>> wf = comfynb.Workflow.example("txt2img").set("KSampler.seed", 7)
            >>> comfynb.enqueue(store, wf, run="first")
            >>> comfynb.Workflow.example("img2img")["Load Image"]["image"]
            'example.png'

        Raises:
            WorkflowError: no example of that name (the message lists them).
        """
        if name not in EXAMPLES:
            raise WorkflowError(
                f"comfynb ships the example workflows {', '.join(map(repr, EXAMPLES))}; "
                f"got {name!r}"
            )
        data = resources.files(__package__).joinpath("data")
        prompt = json.loads(data.joinpath(f"{name}.api.json").read_text("utf-8"))
        ui = json.loads(data.joinpath(f"{name}.ui.json").read_text("utf-8"))
        return cls._owning(prompt, None, f"comfynb's example {name!r} (API format)", ui)

    @classmethod
    def _owning(
        cls,
        prompt: dict[str, Any],
        info: dict[str, Any] | None,
        source: str,
        ui: dict[str, Any] | None,
    ) -> Workflow:
        """A workflow around dicts no one else holds (no copies)."""
        self = object.__new__(cls)
        object.__setattr__(self, "_prompt", prompt)
        object.__setattr__(self, "_info", info)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_ui", ui)
        return self

    @property
    def ui(self) -> dict[str, Any] | None:
        """The UI-format workflow it was loaded from (a copy), if there was one: the file's,
        or a PNG's ``workflow`` chunk. ``None`` for an API-format source."""
        return copy.deepcopy(self._ui)

    # -- reading ---------------------------------------------------------------------------

    def __getitem__(self, node: str) -> Mapping[str, Any]:
        """The inputs of a node (by id, title or class), read-only: ``wf["3"]["seed"]``."""
        node_id = self._node(str(node))
        return MappingProxyType(copy.deepcopy(self._prompt[node_id]["inputs"]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._prompt)

    def __len__(self) -> int:
        return len(self._prompt)

    def __contains__(self, node: object) -> bool:
        return node in self._prompt

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Workflow):
            return NotImplemented
        return self._prompt == other._prompt

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        classes = sorted({str(n.get("class_type")) for n in self._prompt.values()})
        shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
        return f"<Workflow: {len(self._prompt)} nodes ({shown}); from {self.source}>"

    def to_api(self) -> dict[str, Any]:
        """The API prompt, exactly as it is posted (a fresh copy: change it freely).

        Example::

            >>> client.queue_prompt(wf.to_api())
        """
        return copy.deepcopy(self._prompt)

    def title(self, node_id: str) -> str:
        """A node's title (``_meta.title``; its class when it has none)."""
        node = self._prompt[self._node(node_id)]
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) else None
        return str(title or node.get("class_type"))

    def inputs(self) -> pd.DataFrame:
        """Every settable input (literal values, not links), one row each.

        Columns: ``node`` (id), ``title``, ``class``, ``name``, ``value``, ``type`` and
        ``range`` (``(min, max)`` for numbers, the options for a combo, else ``None``), from
        ``object_info`` when the workflow has it.

        Example::

            >>> wf.inputs().query("name == 'seed'")[["node", "title", "value"]]
        """
        import pandas as pd

        rows = []
        for node_id, node in self._prompt.items():
            for name, value in node.get("inputs", {}).items():
                if _is_link(value):
                    continue
                kind, span = self._describe(node, name)
                rows.append(
                    {
                        "node": node_id,
                        "title": self.title(node_id),
                        "class": node.get("class_type"),
                        "name": name,
                        "value": value,
                        "type": kind,
                        "range": span,
                    }
                )
        columns = ["node", "title", "class", "name", "value", "type", "range"]
        return pd.DataFrame(rows, columns=columns)

    # -- changing --------------------------------------------------------------------------

    def set(self, name: str, value: Any) -> Workflow:
        """A new workflow with one input changed; this one is unchanged.

        ``name`` is ``"NODE.input"`` where NODE is a node id (``"3.seed"``), a class
        (``"KSampler.seed"``) or a title (``"Positive.text"``). The value is checked against
        ``object_info`` (type, min/max, combo options) as ComfyUI would, so a bad value fails
        here, not after queueing.

        Example::

            >>> wf.set("KSampler.steps", 30)["3"]["steps"]
            30

        Raises:
            WorkflowError: an unknown or ambiguous name (listing the candidates), an input that
                is a link, or a value ComfyUI would refuse (worded as ``PromptRejected``).
        """
        node_id, input_name, value = self.check(name, value)
        prompt = copy.deepcopy(self._prompt)
        prompt[node_id].setdefault("inputs", {})[input_name] = copy.deepcopy(value)
        return Workflow._owning(prompt, self._info, self.source, self._ui)

    def check(self, name: str, value: Any) -> tuple[str, str, Any]:
        """Where ``name`` points and the value as it would be set, without setting it.

        The checks of :meth:`set`: the name resolves to one input that is not a link, and the
        value is one ComfyUI would take (with ``object_info``). Returns ``(node id, input
        name, value)``, the value converted as ComfyUI would (an int for a FLOAT stays as
        given; a list is wrapped as the frontend does).

        Example::

            >>> wf.check("KSampler.seed", 7)
            ('3', 'seed', 7)

        Raises:
            WorkflowError: as :meth:`set`.
        """
        node_id, input_name = self._resolve(name)
        node = self._prompt[node_id]
        class_type = str(node.get("class_type"))
        current = node.get("inputs", {}).get(input_name)
        if _is_link(current):
            raise WorkflowError(
                f'node "{node_id}" ({class_type}) input "{input_name}" is linked to node '
                f'"{current[0]}" output {current[1]}; change that node instead',
                node_id=node_id,
                input_name=input_name,
            )
        if isinstance(value, list):  # as the frontend: a list value is not a link
            value = {"__value__": value}
        spec = self._spec(class_type, input_name, node.get("inputs", {}))
        if spec is not None and not isinstance(value, dict):
            converted, error = check_value(input_name, value, spec)
            if error is not None:
                raise WorkflowError(
                    describe_node_error(node_id, class_type, error),
                    node_id=node_id,
                    input_name=input_name,
                )
            value = converted
        return node_id, input_name, value

    # -- names -----------------------------------------------------------------------------

    def _node(self, ref: str) -> str:
        ids = self._nodes_named(ref)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise WorkflowError(
                f"no node {ref!r}: name a node by id, title or class; the nodes are "
                f"{self._list_nodes(self._prompt)}"
            )
        raise WorkflowError(
            f"{ref!r} names {len(ids)} nodes: {self._list_nodes(ids)}; use one's id or title"
        )

    def _nodes_named(self, ref: str) -> list[str]:
        if ref in self._prompt:
            return [ref]
        by_title = [i for i in self._prompt if self.title(i) == ref]
        if by_title:
            return by_title
        return [i for i, n in self._prompt.items() if n.get("class_type") == ref]

    def _list_nodes(self, ids: Any) -> str:
        return ", ".join(
            f'"{i}" ({self._prompt[i].get("class_type")}, "{self.title(i)}")' for i in ids
        )

    def _resolve(self, name: str) -> tuple[str, str]:
        if not isinstance(name, str) or "." not in name:
            raise WorkflowError(
                f"name inputs as 'NODE.input' (NODE: an id, class or title), e.g. "
                f"'KSampler.seed'; got {name!r}"
            )
        found: list[tuple[str, str]] = []
        known_node: list[str] = []
        parts = name.split(".")
        for cut in range(1, len(parts)):
            ref, input_name = ".".join(parts[:cut]), ".".join(parts[cut:])
            for node_id in self._nodes_named(ref):
                known_node.append(node_id)
                if input_name in self._settable(node_id):
                    found.append((node_id, input_name))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listed = ", ".join(f'"{i}.{n}" ({self.title(i)})' for i, n in found)
            raise WorkflowError(
                f"{name!r} is ambiguous: it matches {listed}; use the node's id or title"
            )
        if known_node:
            node_id = known_node[0]
            options = ", ".join(sorted(self._settable(node_id)))
            raise WorkflowError(
                f'{name!r}: node "{node_id}" ({self._prompt[node_id].get("class_type")}) has '
                f"no input {name.split('.', 1)[1]!r}; its inputs are: {options}",
                node_id=node_id,
            )
        raise WorkflowError(
            f"{name!r}: no node {parts[0]!r}; name a node by id, class or title. The nodes "
            f"are {self._list_nodes(self._prompt)}"
        )

    def _settable(self, node_id: str) -> AbstractSet[str]:
        node = self._prompt[node_id]
        names: AbstractSet[str] = frozenset(node.get("inputs", {}))
        spec = self._class_spec(str(node.get("class_type")))
        if spec is not None:
            for category in ("required", "optional"):
                names |= frozenset((spec.get("input") or {}).get(category) or {})
        return names

    def _class_spec(self, class_type: str) -> Mapping[str, Any] | None:
        if self._info is None:
            return None
        spec = self._info.get(class_type)
        return spec if isinstance(spec, Mapping) else None

    def _spec(self, class_type: str, input_name: str, values: Mapping[str, Any]) -> Any:
        spec = self._class_spec(class_type)
        if spec is None:
            return None
        inputs = spec.get("input") or {}
        for category in ("required", "optional"):
            declared = inputs.get(category) or {}
            if input_name in declared:
                return declared[input_name]
        return _dynamic_spec(inputs, input_name, values, "")

    def _describe(self, node: Mapping[str, Any], name: str) -> tuple[Any, Any]:
        spec = self._spec(str(node.get("class_type")), name, node.get("inputs", {}))
        if spec is None:
            return None, None
        raw = spec[0] if isinstance(spec, list | tuple) and spec else spec
        options = spec[1] if isinstance(spec, list | tuple) and len(spec) > 1 else {}
        if isinstance(raw, list):
            return "COMBO", list(raw)
        if raw == "COMBO":
            return "COMBO", list(options.get("options") or [])
        if "min" in options or "max" in options:
            return raw, (options.get("min"), options.get("max"))
        return raw, None


def _check_classes(prompt: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Every node's class is one ``/object_info`` lists (what the server would refuse)."""
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type in info:
            continue
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) else None
        named = f' "{title}"' if title and title != class_type else ""
        raise WorkflowError(
            f'node "{node_id}"{named} has class {class_type!r}, which this server\'s '
            "/object_info does not list; it comes from a custom node package (search "
            "ComfyUI-Manager for the class name) or a newer ComfyUI: install or update, restart "
            "ComfyUI and load /object_info again",
            node_id=str(node_id),
        )


def _dynamic_spec(
    inputs: Mapping[str, Any], name: str, values: Mapping[str, Any], prefix: str
) -> Any:
    """The spec of ``"combo.sub"`` inside a dynamic combo (``COMFY_DYNAMICCOMBO_V3``), for the
    option the node has chosen (its ``"combo"`` input)."""
    head, _, rest = name.partition(".")
    if not rest:
        return None
    for category in ("required", "optional"):
        spec = (inputs.get(category) or {}).get(head)
        if not isinstance(spec, list) or not spec or spec[0] != "COMFY_DYNAMICCOMBO_V3":
            continue
        chosen = values.get(f"{prefix}{head}")
        for choice in (spec[1] if len(spec) > 1 else {}).get("options") or []:
            if choice.get("key") != chosen:
                continue
            sub = choice.get("inputs") or {}
            for sub_category in ("required", "optional"):
                if rest in (sub.get(sub_category) or {}):
                    return sub[sub_category][rest]
            return _dynamic_spec(sub, rest, values, f"{prefix}{head}.")
    return None


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
