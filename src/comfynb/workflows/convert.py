"""UI workflow -> API prompt: ComfyUI frontend's ``graphToPrompt``, in Python (pure: data in, data out).

A UI workflow (what ComfyUI's frontend saves: ``nodes``, ``links``, ``widgets_values``,
``definitions.subgraphs``) names each widget value by position only; ``/object_info`` gives
the positions. This module rebuilds each node's widgets from ``/object_info`` as the frontend
1.49 does, then resolves every link through reroutes, primitives, bypassed nodes and subgraphs,
and returns the exact prompt the frontend's Queue button would POST. The rules, with the
frontend code they come from, are in docs/workflows.md.

Example::

    >>> prompt = ui_to_api(ui_workflow, object_info)
    >>> prompt["3"]["class_type"], prompt["3"]["inputs"]["model"]
    ('KSampler', ['4', 0])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import WorkflowError

__all__ = ["VIRTUAL_NODES", "Widget", "node_widgets", "ui_to_api"]

#: Node types the frontend defines itself: they never reach the server.
VIRTUAL_NODES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})

_MUTED = 2  # LGraphEventMode.NEVER
_BYPASS = 4  # LGraphEventMode.BYPASS
_INPUT_NODE = -10  # a subgraph's input IO node
_OUTPUT_NODE = -20  # a subgraph's output IO node

#: Inputs the frontend adds a widget for when the type is one of these (value types).
_VALUE_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: Frontend widgets for custom types that always send one value, whatever the node holds.
_FIXED_WIDGETS: dict[str, Any] = {"IMAGECOMPARE": ["", ""]}
#: Custom types the frontend draws a widget for (its value is sent as the node holds it); any
#: other type gets a widget only when its spec has ``socketless`` (true: no socket; false: a
#: socket too, e.g. ``CreateBoundingBoxes.editor_state``).
_CUSTOM_WIDGETS = frozenset(
    {
        "COLOR",
        "CURVE",
        "COMPOSITOR",
        "BOUNDING_BOXES",
        "AUDIO_RECORD",
        "LOAD_3D",
        "WEBCAM",
        "PAINTER",
        "COLORS",
    }
)
#: How many frontend-only widgets (not sent) an upload option adds after its combo.
_UPLOAD_WIDGETS = {
    "image_upload": 1,
    "video_upload": 1,
    "audio_upload": 2,
    "animated_image_upload": 1,
    "file_upload": 3,  # Load3D: upload model, upload extra resources, clear
}
_SEED_NAMES = frozenset({"seed", "noise_seed"})
#: Widgets a frontend extension adds after a class's own (the 3D viewer's "image").
_EXTRA_WIDGETS: dict[str, tuple[tuple[str, Any], ...]] = {
    "SaveGLB": (("image", ""),),
    "Preview3D": (("image", ""),),
}
#: Titles the frontend's bundled English locale gives where ``/object_info``'s
#: ``display_name`` says otherwise (observed with frontend 1.49.6 on ComfyUI 0.33.0).
_LOCALE_TITLES = {
    "LTXVConcatAVLatent": "LTXVConcatAVLatent",
    "LTXVSeparateAVLatent": "LTXVSeparateAVLatent",
}


@dataclass
class Widget:
    """One widget of a node as the frontend builds it: ``serialize=False`` widgets hold a
    position in ``widgets_values`` but are not sent (``control_after_generate``, upload
    buttons)."""

    name: str
    value: Any
    serialize: bool = True
    type: str = ""
    spec: list[Any] = field(default_factory=list)
    fixed: bool = False  # a value the frontend always sends (IMAGECOMPARE's ["", ""])


def _input_type(spec: Any) -> str:
    raw = spec[0] if isinstance(spec, list | tuple) and spec else spec
    if isinstance(raw, list):
        return "COMBO"
    return str(raw)


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, list | tuple) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def _combo_options(spec: Any) -> list[Any]:
    raw = spec[0] if isinstance(spec, list | tuple) and spec else None
    if isinstance(raw, list):
        return raw
    return list(_options(spec).get("options") or [])


def _default(kind: str, spec: Any) -> Any:
    options = _options(spec)
    if "default" in options:
        return options["default"]
    if kind == "COMBO":
        combo = _combo_options(spec)
        return combo[0] if combo else None
    if kind in ("INT", "FLOAT"):
        low = options.get("min")
        return max(0, low) if isinstance(low, int | float) else 0
    if kind == "STRING":
        return ""
    if kind == "BOOLEAN":
        return False
    return None


def _ordered_inputs(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, input spec) in the class's order: required then optional, by ``input_order``."""
    inputs = spec.get("input") or {}
    order = spec.get("input_order") or {}
    out: list[tuple[str, Any]] = []
    for category in ("required", "optional"):
        declared = inputs.get(category) or {}
        names = [n for n in order.get(category, []) if n in declared]
        names += [n for n in declared if n not in names]
        out += [(name, declared[name]) for name in names]
    return out


def node_widgets(spec: Mapping[str, Any], values: list[Any] | None) -> list[Widget]:
    """The widgets the frontend gives a node of this ``/object_info`` class, with ``values``
    (the node's ``widgets_values``) loaded in order; missing values keep their defaults.

    Example::

        >>> [(w.name, w.value) for w in node_widgets(object_info["KSampler"],
        ...     [7, "fixed", 20, 8, "euler", "normal", 1]) if w.serialize][:2]
        [('seed', 7), ('steps', 20)]
    """
    values = list(values or [])
    widgets: list[Widget] = []
    _add_widgets(widgets, _ordered_inputs(spec), "", values)
    name = spec.get("name")
    if name == "CustomCombo":  # the frontend's combo editor: index, then one widget per option
        has, value = _take(values, widgets)
        widgets.append(Widget("index", value if has else 0, type="INT"))
        for number in range(1, len(values) - len(widgets) + 1):
            has, value = _take(values, widgets)
            widgets.append(Widget(f"option{number}", value, type="STRING"))
    for extra, default in _EXTRA_WIDGETS.get(str(name), ()):
        has, value = _take(values, widgets)
        widgets.append(Widget(extra, value if has else default))
    return widgets


def _take(values: list[Any], widgets: list[Widget]) -> tuple[bool, Any]:
    index = len(widgets)
    if index < len(values):
        return True, values[index]
    return False, None


def _add_widgets(
    widgets: list[Widget], inputs: list[tuple[str, Any]], prefix: str, values: list[Any]
) -> None:
    for name, spec in inputs:
        full = f"{prefix}{name}"
        kind = _input_type(spec)
        options = _options(spec)
        if kind == "COMFY_DYNAMICCOMBO_V3":
            choices = options.get("options") or []
            keys = [c.get("key") for c in choices if isinstance(c, dict)]
            has, value = _take(values, widgets)
            if not has or value not in keys:
                value = options.get("default", keys[0] if keys else None)
            widgets.append(Widget(full, value, type="COMBO", spec=[keys, options]))
            chosen = next((c for c in choices if c.get("key") == value), None)
            if chosen is not None:
                sub = _ordered_inputs({"input": chosen.get("inputs") or {}})
                _add_widgets(widgets, sub, f"{full}.", values)
            continue
        if kind in _FIXED_WIDGETS:
            has, value = _take(values, widgets)
            widgets.append(
                Widget(full, _FIXED_WIDGETS[kind], type=kind, spec=list(spec), fixed=True)
            )
            continue
        widget_kind = str(options.get("widgetType") or kind)
        if options.get("forceInput"):
            continue
        if widget_kind in _CUSTOM_WIDGETS or (
            widget_kind not in _VALUE_TYPES and "socketless" in options
        ):
            has, value = _take(values, widgets)
            widgets.append(
                Widget(
                    full,
                    value if has else options.get("default"),
                    type=widget_kind,
                    spec=list(spec),
                )
            )
            continue
        if widget_kind not in _VALUE_TYPES:
            continue
        has, value = _take(values, widgets)
        widgets.append(
            Widget(
                full,
                value if has else _default(widget_kind, spec),
                type=widget_kind,
                spec=list(spec),
            )
        )
        control = options.get("control_after_generate")
        if widget_kind == "INT" and (control or (control is None and full in _SEED_NAMES)):
            has, value = _take(values, widgets)
            default = control if isinstance(control, str) else "randomize"
            widgets.append(
                Widget("control_after_generate", value if has else default, serialize=False)
            )
        for upload, count in _UPLOAD_WIDGETS.items():
            if options.get(upload) and widget_kind == "COMBO":
                for _ in range(count):
                    has, value = _take(values, widgets)
                    widgets.append(Widget("upload", value, serialize=False))


# --- the graph ------------------------------------------------------------------------------


@dataclass
class _Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: Any


@dataclass
class _Graph:
    """One graph level: the root workflow or a subgraph definition."""

    nodes: dict[int, dict[str, Any]]
    links: dict[int, _Link]
    inputs: list[dict[str, Any]] = field(default_factory=list)  # a subgraph's inputs
    outputs: list[dict[str, Any]] = field(default_factory=list)  # a subgraph's outputs


def _links(raw: Any) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    for item in raw or []:
        if isinstance(item, list) and len(item) >= 5:
            link = _Link(
                item[0], item[1], item[2], item[3], item[4], item[5] if len(item) > 5 else "*"
            )
        elif isinstance(item, dict):
            link = _Link(
                item.get("id"),  # type: ignore[arg-type]
                item.get("origin_id"),  # type: ignore[arg-type]
                item.get("origin_slot"),  # type: ignore[arg-type]
                item.get("target_id"),  # type: ignore[arg-type]
                item.get("target_slot"),  # type: ignore[arg-type]
                item.get("type", "*"),
            )
        else:
            continue
        links[link.id] = link
    return links


def _graph(raw: Mapping[str, Any]) -> _Graph:
    nodes: dict[int, dict[str, Any]] = {}
    for node in raw.get("nodes") or []:
        if isinstance(node, dict) and "id" in node:
            nodes[node["id"]] = node
    return _Graph(
        nodes,
        _links(raw.get("links")),
        list(raw.get("inputs") or []),
        list(raw.get("outputs") or []),
    )


def _valid_connection(type_a: Any, type_b: Any) -> bool:
    """litegraph's ``LiteGraph.isValidConnection``."""
    a = 0 if type_a in ("", "*") else type_a
    b = 0 if type_b in ("", "*") else type_b
    if not a or not b or a == b:
        return True
    sa, sb = str(a).lower(), str(b).lower()
    if "," not in sa and "," not in sb:
        return sa == sb
    return any(_valid_connection(x, y) for x in sa.split(",") for y in sb.split(","))


@dataclass
class _Resolved:
    origin_id: str = ""
    origin_slot: int = -1
    widget: tuple[Any] | None = None  # (value,) when the input resolves to a widget value


class _Dto:
    """``ExecutableNodeDTO``: one node, at a path through subgraph instances."""

    def __init__(
        self,
        conv: _Converter,
        node: dict[str, Any],
        graph: _Graph,
        path: tuple[str, ...],
        subgraph_node: _Dto | None,
    ) -> None:
        self.conv = conv
        self.node = node
        self.graph = graph
        self.path = path
        self.subgraph_node = subgraph_node  # the DTO of the subgraph instance holding this node
        self.id = ":".join([*path, str(node["id"])])
        self.type = str(node.get("type"))
        self.mode = node.get("mode", 0)
        self.inputs: list[dict[str, Any]] = [
            i for i in node.get("inputs") or [] if isinstance(i, dict)
        ]
        self.outputs: list[dict[str, Any]] = [
            o for o in node.get("outputs") or [] if isinstance(o, dict)
        ]
        self.subgraph: _Graph | None = conv.subgraphs.get(self.type)
        self.virtual = self.type in VIRTUAL_NODES
        self.widgets: list[Widget] = []
        self.spec: Mapping[str, Any] | None = None

    # -- ExecutableNodeDTO.resolveInput
    def resolve_input(self, slot: int, visited: set[str], type_: Any = None) -> _Resolved | None:
        key = f"{self.path}:{self.node['id']}[I]{slot}"
        if key in visited:
            raise self.conv.error(f"node {self.id} ({self.type}): a circular link at input {slot}")
        visited.add(key)
        if slot >= len(self.inputs) or slot < 0:
            return None
        inp = self.inputs[slot]
        link_id = inp.get("link")
        if link_id is None:
            return None
        link = self.graph.links.get(link_id)
        if link is None:
            return None
        sub = self.subgraph_node
        if sub is not None and link.origin_id == _INPUT_NODE:
            return sub.resolve_subgraph_input(link.origin_slot, visited)
        origin = self.conv.dto_at(self.path, link.origin_id)
        if origin is None:
            return None
        return origin.resolve_output(
            link.origin_slot, type_ if type_ is not None else inp.get("type"), visited
        )

    def resolve_subgraph_input(self, slot: int, visited: set[str]) -> _Resolved | None:
        """An inner node's input linked to this subgraph instance's input ``slot``."""
        assert self.subgraph is not None
        if slot >= len(self.subgraph.inputs):
            return None
        name = self.subgraph.inputs[slot].get("name")
        index = next((i for i, x in enumerate(self.inputs) if x.get("name") == name), None)
        outer = self.inputs[index] if index is not None else None
        if outer is None or outer.get("link") is None:
            widget = self.promoted_widget(slot)
            if widget is None:
                return None
            return _Resolved(self.id, -1, widget)
        assert index is not None
        return self.resolve_input(index, visited)

    def promoted_widget(self, slot: int) -> tuple[Any] | None:
        return self.conv.promoted_value(self, slot)

    # -- ExecutableNodeDTO.resolveOutput
    def resolve_output(self, slot: int, type_: Any, visited: set[str]) -> _Resolved | None:
        key = f"{self.path}:{self.node['id']}[O]{slot}"
        if key in visited:
            raise self.conv.error(f"node {self.id} ({self.type}): a circular link at output {slot}")
        visited.add(key)
        if self.mode == _BYPASS:
            index = self._bypass_slot(slot, type_)
            if index == -1:
                return None
            return self.resolve_input(index, visited)
        if self.subgraph is not None:
            return self._resolve_subgraph_output(slot, type_, visited)
        if self.virtual:
            if slot < len(self.inputs):
                return self.resolve_input(slot, visited, type_)
            return None
        return _Resolved(self.id, slot)

    def _bypass_slot(self, slot: int, type_: Any) -> int:
        inputs = self.inputs
        output_type = self.outputs[slot].get("type") if slot < len(self.outputs) else None
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        opposite = inputs[slot] if slot < len(inputs) else None
        if (
            opposite is not None
            and _valid_connection(opposite.get("type"), output_type)
            and _valid_connection(opposite.get("type"), type_)
        ):
            return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == type_:
                return i
        for i, inp in enumerate(inputs):
            if _valid_connection(inp.get("type"), output_type) and _valid_connection(
                inp.get("type"), type_
            ):
                return i
        return -1

    def _resolve_subgraph_output(
        self, slot: int, type_: Any, visited: set[str]
    ) -> _Resolved | None:
        assert self.subgraph is not None
        if slot >= len(self.subgraph.outputs):
            return None
        link_ids = self.subgraph.outputs[slot].get("linkIds") or []
        link = next(
            (
                self.subgraph.links[i]
                for i in link_ids
                if i in self.subgraph.links and self.subgraph.links[i].target_id == _OUTPUT_NODE
            ),
            None,
        )
        if link is None:
            return None
        inner_path = (*self.path, str(self.node["id"]))
        if link.origin_id == _INPUT_NODE:
            return self.resolve_subgraph_input(link.origin_slot, visited)
        inner = self.conv.dto_at(inner_path, link.origin_id)
        if inner is None:
            return None
        return inner.resolve_output(link.origin_slot, type_, visited)


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.object_info = object_info
        definitions = workflow.get("definitions") or {}
        self.subgraphs: dict[str, _Graph] = {}
        self.subgraph_raw: dict[str, Mapping[str, Any]] = {}
        for raw in definitions.get("subgraphs") or [] if isinstance(definitions, dict) else []:
            if isinstance(raw, dict) and "id" in raw:
                self.subgraphs[str(raw["id"])] = _graph(raw)
                self.subgraph_raw[str(raw["id"])] = raw
        self.root = _graph(workflow)
        self.dtos: dict[str, _Dto] = {}
        self.order: list[_Dto] = []
        self.promoted: dict[str, dict[int, tuple[Any]]] = {}  # instance id -> slot -> (value,)

    def error(self, message: str, node_id: str | None = None) -> WorkflowError:
        return WorkflowError(message, node_id=node_id)

    def dto_at(self, path: tuple[str, ...], node_id: Any) -> _Dto | None:
        return self.dtos.get(":".join([*path, str(node_id)]))

    def build(self, graph: _Graph, path: tuple[str, ...], parent: _Dto | None, depth: int) -> None:
        if depth > 32:
            raise self.error("subgraphs nest more than 32 deep (a subgraph that contains itself?)")
        for node in graph.nodes.values():
            dto = _Dto(self, node, graph, path, parent)
            if parent is not None and parent.mode in (_MUTED, _BYPASS):
                dto.mode = parent.mode  # a muted or bypassed instance runs none of its nodes
            self.dtos[dto.id] = dto
            self.order.append(dto)
            if dto.subgraph is not None:
                self.build(dto.subgraph, (*path, str(node["id"])), dto, depth + 1)
                self.promote(dto)
            elif not dto.virtual:
                spec = self.object_info.get(dto.type)
                if not isinstance(spec, Mapping):
                    raise _unknown_class(dto)
                dto.spec = spec
                values = node.get("widgets_values")
                if isinstance(values, dict):
                    dto.widgets = node_widgets(spec, [])
                    for widget in dto.widgets:
                        if widget.name in values:
                            widget.value = values[widget.name]
                else:
                    dto.widgets = node_widgets(spec, values if isinstance(values, list) else [])

    def promoted_value(self, sub: _Dto, slot: int) -> tuple[Any] | None:
        """The value of the subgraph instance's widget for its input ``slot``, if it has one."""
        return self.promoted.get(sub.id, {}).get(slot)

    def promote(self, sub: _Dto) -> None:
        """``SubgraphNode``'s promoted widgets, as configure leaves them: one per subgraph input
        that feeds a widget inside (its first such link), valued from the interior widget, then
        from the instance's ``widgets_values`` in input order (a longer list holds an extra
        slot after each widget with a ``control_after_generate`` companion)."""
        assert sub.subgraph is not None
        promoted: list[tuple[int, Any, bool]] = []  # (slot, interior value, has a control)
        for slot in range(len(sub.subgraph.inputs)):
            found = self._interior_widget(sub, slot)
            if found is not None:
                promoted.append((slot, *found))
        values = sub.node.get("widgets_values")
        values = values if isinstance(values, list) else []
        props = sub.node.get("properties") or {}
        quarantine: dict[str, Any] = {}
        for entry in reversed(props.get("proxyWidgetErrorQuarantine") or []):
            original = entry.get("originalEntry") if isinstance(entry, dict) else None
            if (
                isinstance(original, list)
                and len(original) == 2
                and original[0] == "-1"
                and "hostValue" in entry
            ):
                quarantine.setdefault(original[1], entry["hostValue"])
        with_controls = len(values) > len(promoted)
        table: dict[int, tuple[Any]] = {}
        index = 0
        for slot, value, control in promoted:
            name = sub.subgraph.inputs[slot].get("name")
            if name in quarantine:
                value = quarantine[name]
            elif index < len(values):
                value = values[index]
            table[slot] = (value,)
            index += 1
            if with_controls and control:
                index += 1
        self.promoted[sub.id] = table

    def _interior_widget(self, sub: _Dto, slot: int) -> tuple[Any, bool] | None:
        """(value, has a control widget) of the first widget the subgraph input ``slot`` feeds."""
        assert sub.subgraph is not None
        graph = sub.subgraph
        for link_id in graph.inputs[slot].get("linkIds") or []:
            link = graph.links.get(link_id)
            if link is None:
                continue
            inner = self.dto_at((*sub.path, str(sub.node["id"])), link.target_id)
            if inner is None or link.target_slot >= len(inner.inputs):
                continue
            inp = inner.inputs[link.target_slot]
            wname = (inp.get("widget") or {}).get("name")
            if inner.subgraph is not None:  # nested promotion: the inner instance's widget
                index = next(
                    (
                        i
                        for i, x in enumerate(inner.subgraph.inputs)
                        if x.get("name") == inp.get("name")
                    ),
                    None,
                )
                nested = self.promoted.get(inner.id, {}).get(index) if index is not None else None
                if nested is not None:
                    return nested[0], False
                continue
            if wname is None:
                continue
            for i, widget in enumerate(inner.widgets):
                if widget.name == wname:
                    following = inner.widgets[i + 1] if i + 1 < len(inner.widgets) else None
                    control = following is not None and following.name == "control_after_generate"
                    return widget.value, control
        return None

    def apply_primitives(self) -> None:
        """``PrimitiveNode.applyToGraph``: its value goes into every widget it feeds."""
        for dto in self.order:
            if dto.type != "PrimitiveNode":
                continue
            values = dto.node.get("widgets_values")
            if not isinstance(values, list) or not values or not dto.outputs:
                continue
            for link_id in dto.outputs[0].get("links") or []:
                link = dto.graph.links.get(link_id)
                if link is None:
                    continue
                target = self.dto_at(dto.path, link.target_id)
                if target is None or link.target_slot >= len(target.inputs):
                    continue
                wname = (target.inputs[link.target_slot].get("widget") or {}).get("name")
                widget = next((w for w in target.widgets if w.name == wname), None)
                if widget is not None:
                    widget.value = values[0]

    def convert(self) -> dict[str, Any]:
        self.build(self.root, (), None, 0)
        self.apply_primitives()
        output: dict[str, Any] = {}
        for dto in self.order:
            if dto.virtual or dto.subgraph is not None or dto.mode in (_MUTED, _BYPASS):
                continue
            inputs: dict[str, Any] = {}
            for widget in dto.widgets:
                if widget.serialize:
                    inputs[widget.name] = _wrap(widget.value)
            for i, inp in enumerate(dto.inputs):
                resolved = dto.resolve_input(i, set())
                if resolved is None:
                    continue
                if resolved.widget is not None:
                    inputs[inp["name"]] = _wrap(resolved.widget[0])
                    continue
                inputs[inp["name"]] = [resolved.origin_id, resolved.origin_slot]
            assert dto.spec is not None
            title = dto.node.get("title")
            if title is None:
                title = _LOCALE_TITLES.get(dto.type) or dto.spec.get("display_name") or dto.type
            output[dto.id] = {
                "inputs": inputs,
                "class_type": dto.type,
                "_meta": {"title": title},
            }
        for node in output.values():
            inputs = node["inputs"]
            for name in list(inputs):
                value = inputs[name]
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del inputs[name]
        return output


def _wrap(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def _unknown_class(dto: _Dto) -> WorkflowError:
    props = dto.node.get("properties") or {}
    package = props.get("cnr_id") or props.get("aux_id")
    title = dto.node.get("title")
    where = f" inside subgraph node {':'.join(dto.path)}" if dto.path else ""
    named = f' "{title}"' if title else ""
    if dto.type.startswith(("workflow>", "workflow/")):
        hint = (
            "it is a group node of the older frontend (extra.groupNodes), which this "
            "conversion does not expand: open the workflow in ComfyUI, convert the group node "
            "to a subgraph, and save it again"
        )
    elif package and package != "comfy-core":
        hint = (
            f"install the custom node package {package!r} (ComfyUI-Manager finds it by that "
            "name), restart ComfyUI and load /object_info again"
        )
    else:
        hint = (
            "it comes from a custom node package (search ComfyUI-Manager for the class name) "
            "or a newer ComfyUI: install or update, restart ComfyUI and load /object_info again"
        )
    return WorkflowError(
        f'node "{dto.id}"{named}{where} has class {dto.type!r}, which this server\'s '
        f"/object_info does not list; {hint}",
        node_id=dto.id,
    )


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to the API prompt ComfyUI's frontend would queue.

    ``object_info`` is the server's ``/object_info`` (class name -> definition): it gives each
    node's widget order. Muted and bypassed nodes, notes, reroutes and primitives are left out;
    links through them are resolved as the frontend does; subgraph instances are flattened into
    nodes ``"outer:inner"``.

    Example::

        >>> prompt = ui_to_api(json.load(open("default.json")), object_info)
        >>> prompt["3"]["inputs"]["seed"]
        156680208700286

    Raises:
        WorkflowError: a node class ``object_info`` lacks (naming the node and what to
            install), or a graph that cannot be read.
    """
    if not isinstance(workflow, Mapping) or not isinstance(workflow.get("nodes"), list):
        raise WorkflowError("a UI workflow has a 'nodes' list; this one has none")
    _check_graph(workflow, "the workflow")
    definitions = workflow.get("definitions")
    if definitions is not None:
        _expect(definitions, dict, "the workflow's 'definitions'")
        subgraphs = definitions.get("subgraphs")
        if subgraphs is not None:
            _expect(subgraphs, list, "'definitions.subgraphs'")
            for index, subgraph in enumerate(subgraphs):
                where = f"subgraph #{index}"
                _expect(subgraph, dict, where)
                _expect(subgraph.get("id"), str, f"{where}'s 'id'")
                _check_graph(subgraph, f"subgraph {subgraph['id']!r}")
    try:
        return _Converter(workflow, object_info).convert()
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
        # A shape the checks above do not cover: still a WorkflowError, never a crash.
        raise WorkflowError(
            f"the UI workflow is malformed ({type(exc).__name__}: {exc}); save it again from "
            "ComfyUI, or export it with 'Export (API)'"
        ) from exc


_ID = (int, str)


def _expect(value: Any, kind: type | tuple[type, ...], where: str, *, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise WorkflowError(
            f"the UI workflow is malformed: {where} is {_short(value)}, expected {names}; save it "
            "again from ComfyUI"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text[:40] + ("..." if len(text) > 40 else "")


def _check_graph(graph: Mapping[str, Any], where: str) -> None:
    """The fields the conversion reads, with the types the frontend writes."""
    _expect(graph.get("nodes"), list, f"{where}'s 'nodes'")
    for node in graph["nodes"]:
        _expect(node, dict, f"a node of {where}")
        _expect(node.get("id"), _ID, f"a node id in {where}")
        at = f"node {node['id']} of {where}"
        _expect(node.get("type"), str, f"{at}: 'type'")
        _expect(node.get("mode"), int, f"{at}: 'mode'", none=True)
        _expect(node.get("title"), str, f"{at}: 'title'", none=True)
        _expect(node.get("properties"), dict, f"{at}: 'properties'", none=True)
        _expect(node.get("widgets_values"), (list, dict), f"{at}: 'widgets_values'", none=True)
        for key in ("inputs", "outputs"):
            _expect(node.get(key), list, f"{at}: {key!r}", none=True)
        for slot in node.get("inputs") or []:
            _expect(slot, dict, f"{at}: an input")
            _expect(slot.get("name"), str, f"{at}: an input's 'name'")
            _expect(slot.get("link"), int, f"{at}: input {slot['name']!r} 'link'", none=True)
            _expect(slot.get("widget"), dict, f"{at}: input {slot['name']!r} 'widget'", none=True)
        for slot in node.get("outputs") or []:
            _expect(slot, dict, f"{at}: an output")
            _expect(slot.get("links"), list, f"{at}: an output's 'links'", none=True)
            for link in slot.get("links") or []:
                _expect(link, int, f"{at}: an output's link id")
    _expect(graph.get("links"), list, f"{where}'s 'links'", none=True)
    for link in graph.get("links") or []:
        if isinstance(link, list):
            if len(link) < 5:
                raise WorkflowError(
                    f"the UI workflow is malformed: a link of {where} is {_short(link)}; a link "
                    "is [id, origin_id, origin_slot, target_id, target_slot, type]"
                )
            fields = link[:5]
        else:
            _expect(link, (list, dict), f"a link of {where}")
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
            fields = [link.get(k) for k in keys]
        _expect(fields[0], int, f"a link id of {where}")
        for value, name in zip(
            fields[1:], ("origin_id", "origin_slot", "target_id", "target_slot"), strict=True
        ):
            _expect(
                value, _ID if name.endswith("_id") else int, f"link {fields[0]} of {where}: {name}"
            )
    for key in ("inputs", "outputs"):
        _expect(graph.get(key), list, f"{where}'s {key!r}", none=True)
        for slot in graph.get(key) or []:
            _expect(slot, dict, f"{where}: a subgraph {key[:-1]}")
            _expect(slot.get("name"), str, f"{where}: a subgraph {key[:-1]}'s 'name'")
            _expect(
                slot.get("linkIds"),
                list,
                f"{where}: {key[:-1]} {slot['name']!r} 'linkIds'",
                none=True,
            )
            for link in slot.get("linkIds") or []:
                _expect(link, int, f"{where}: {key[:-1]} {slot['name']!r} link id")
