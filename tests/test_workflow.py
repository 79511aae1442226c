"""comfynb.Workflow: load any format, read and set inputs by name, checked as ComfyUI would."""

from __future__ import annotations

import copy
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sim_helpers import HTTP, history_of, post_prompt

import comfynb
from comfynb import Workflow, WorkflowError
from comfynb.protocol.rejections import describe_node_error
from comfynb.simulator import Simulator
from comfynb.simulator.validation import validate_prompt
from comfynb.workflows.values import check_value

DATA = Path(__file__).parent / "data"


def _gz(path: Path) -> Any:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


OBJECT_INFO: dict[str, Any] = _gz(DATA / "object_info_0.33.0.json.gz")
UI = _gz(DATA / "ui-to-api" / "default_sd15_ui.ui.json.gz")
API = _gz(DATA / "ui-to-api" / "default_sd15_ui.api.json.gz")


class FakeClient:
    """Duck-typed like comfynb.Client: only .object_info() is used."""

    def __init__(self) -> None:
        self.calls = 0

    def object_info(self) -> dict[str, Any]:
        self.calls += 1
        return OBJECT_INFO


@pytest.fixture
def wf() -> Workflow:
    return Workflow.load(UI, object_info=OBJECT_INFO)


def test_workflow_is_exported() -> None:
    assert comfynb.Workflow is Workflow


# -- loading -------------------------------------------------------------------------------


def test_load_a_ui_dict_converts_it(wf: Workflow) -> None:
    assert wf.to_api() == API
    assert wf.source == "the dict given (UI format, converted)"
    assert wf.ui == UI


def test_load_a_path_json_text_and_an_api_dict(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(UI))
    from_path = Workflow.load(path, object_info=FakeClient())
    assert from_path.to_api() == API
    assert from_path.source == "graph.json (UI format, converted)"
    assert Workflow.load(str(path), OBJECT_INFO) == from_path
    assert Workflow.load(json.dumps(API)).to_api() == API
    api = Workflow.load(API)
    assert api.source == "the dict given (API format)" and api.ui is None


def test_an_api_prompt_is_checked_on_load() -> None:
    broken = copy.deepcopy(API)
    broken["3"]["inputs"]["model"] = ["99", 0]
    with pytest.raises(
        WorkflowError, match=r'node "3" \(KSampler\) input "model" links to node "99"'
    ):
        Workflow.load(broken)
    custom = copy.deepcopy(API)
    custom["9"]["class_type"] = "SaveImageExtended"
    Workflow.load(custom)  # without object_info nothing says the class is unknown
    with pytest.raises(WorkflowError, match=r'node "9" "Save Image" has class .SaveImageExtended.'):
        Workflow.load(custom, OBJECT_INFO)


def test_loading_a_workflow_gives_it_back(wf: Workflow) -> None:
    assert Workflow.load(wf) is wf


def test_a_ui_workflow_without_object_info_says_what_to_pass() -> None:
    with pytest.raises(WorkflowError, match="needs the server's /object_info"):
        Workflow.load(UI)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"version": 1, "extra": {}},
            r"unknown workflow format: a dict with keys 'version', 'extra'",
        ),
        (
            {"3": {"class_type": "KSampler", "inputs": {}}, "x": 1},
            r"1 of its 2 entries look like API nodes",
        ),
        ({}, "empty dict"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00binary", "neither JSON text nor a PNG/WebP"),
        (42, "cannot load a workflow from int"),
        ("/nonexistent/workflow.json", "no file"),
    ],
)
def test_bad_sources_are_typed_errors_saying_what_was_seen(source: Any, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        Workflow.load(source, OBJECT_INFO)


def _png(texts: dict[str, str]) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_a_png_prefers_its_prompt_chunk_and_says_so() -> None:
    edited = copy.deepcopy(API)
    edited["3"]["inputs"]["seed"] = 5  # the prompt that ran differs from the saved graph
    both = Workflow.load(
        _png({"prompt": json.dumps(edited), "workflow": json.dumps(UI)}), OBJECT_INFO
    )
    assert both["3"]["seed"] == 5
    assert both.source == (
        "the bytes given: the PNG's 'prompt' text chunk (API format; its 'workflow' text chunk "
        "is not needed)"
    )
    assert both.ui == UI
    only_ui = Workflow.load(_png({"workflow": json.dumps(UI)}), OBJECT_INFO)
    assert only_ui.to_api() == API
    assert "'workflow' text chunk (UI format, converted; no 'prompt'" in only_ui.source
    with pytest.raises(WorkflowError, match="without a 'prompt' or 'workflow' text chunk"):
        Workflow.load(_png({}), OBJECT_INFO)


def test_a_webp_with_comfyuis_exif_entries_loads() -> None:
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(API)  # as ComfyUI's SaveAnimatedWEBP writes them
    exif[0x010F] = "workflow:" + json.dumps(UI)
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "WEBP", exif=exif.tobytes())
    loaded = Workflow.load(out.getvalue(), OBJECT_INFO)
    assert loaded.to_api() == API
    assert "WebP's 'prompt' EXIF entry" in loaded.source


def test_a_png_the_simulator_saved_loads_back_to_the_same_workflow(
    sim: Simulator, wf: Workflow, tmp_path: Path
) -> None:
    """Over a real socket: queue the converted graph with the UI workflow in extra_pnginfo (as
    the frontend does); the saved PNG's chunks load back to the same workflow."""
    posted = post_prompt(sim, wf.to_api(), extra_data={"extra_pnginfo": {"workflow": UI}})
    assert posted.status_code == 200, posted.text
    entry = history_of(sim, posted.json()["prompt_id"], timeout=30)
    image = entry["outputs"]["9"]["images"][0]
    raw = HTTP.get(f"{sim.url}/view", params=image).content
    (tmp_path / "out.png").write_bytes(raw)
    again = Workflow.load(tmp_path / "out.png", OBJECT_INFO)
    assert again == wf
    assert again.ui == UI
    assert again.source.startswith("out.png: the PNG's 'prompt' text chunk")


# -- reading and setting ---------------------------------------------------------------------


def test_getitem_reads_inputs_by_id_title_or_class_and_is_read_only(wf: Workflow) -> None:
    assert wf["3"]["seed"] == 156680208700286
    assert wf["KSampler"]["steps"] == 20
    assert wf["Empty Latent Image"]["width"] == 512
    with pytest.raises(TypeError):
        wf["3"]["seed"] = 1  # type: ignore[index]
    with pytest.raises(WorkflowError, match="names 2 nodes"):
        wf["CLIPTextEncode"]


def test_set_returns_a_new_workflow_and_leaves_this_one(wf: Workflow) -> None:
    titled = Workflow.load(_retitle(UI, 6, "Positive"), OBJECT_INFO)
    changed = titled.set("KSampler.seed", 7).set("Positive.text", "a red fox").set("5.width", 768)
    api = changed.to_api()
    assert api["3"]["inputs"]["seed"] == 7
    assert api["6"]["inputs"]["text"] == "a red fox"
    assert api["5"]["inputs"]["width"] == 768
    assert titled["3"]["seed"] == 156680208700286
    with pytest.raises(AttributeError, match="immutable"):
        wf.source = "x"  # type: ignore[misc]
    copied = wf.to_api()
    copied["3"]["inputs"]["seed"] = 1
    assert wf["3"]["seed"] == 156680208700286


def _retitle(ui: dict[str, Any], node_id: int, title: str) -> dict[str, Any]:
    ui = copy.deepcopy(ui)
    for node in ui["nodes"]:
        if node["id"] == node_id:
            node["title"] = title
    return ui


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("CLIPTextEncode.text", r"ambiguous: it matches \"7.text\" .*\"6.text\""),
        ("Sampler.seed", r"no node 'Sampler'.*\"3\" \(KSampler, \"KSampler\"\)"),
        ("KSampler.sead", r"has no input 'sead'; its inputs are: cfg, denoise.*seed, steps"),
        ("KSampler.model", r"input \"model\" is linked to node \"4\" output 0"),
        ("seed", r"name inputs as 'NODE.input'"),
    ],
)
def test_bad_names_list_the_candidates(wf: Workflow, name: str, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        wf.set(name, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KSampler.steps", 0),
        ("KSampler.cfg", 101.5),
        ("KSampler.seed", "abc"),
        ("KSampler.sampler_name", "eulerr"),
        ("Empty Latent Image.batch_size", 5000),
    ],
)
def test_values_are_checked_with_the_words_of_prompt_rejected(
    wf: Workflow, name: str, value: Any
) -> None:
    node_id, input_name = wf._resolve(name)
    spec = OBJECT_INFO[wf.to_api()[node_id]["class_type"]]["input"]["required"][input_name]
    _, error = check_value(input_name, value, spec)
    assert error is not None
    expected = describe_node_error(node_id, wf.to_api()[node_id]["class_type"], error)
    with pytest.raises(WorkflowError) as info:
        wf.set(name, value)
    assert str(info.value) == expected
    assert (info.value.node_id, info.value.input_name) == (node_id, input_name)


def test_a_value_is_converted_as_comfyui_does(wf: Workflow) -> None:
    assert wf.set("KSampler.steps", "30")["3"]["steps"] == 30


VALUES = [0, 1, 64, 16384, 16385, -3, "12", "x", 1.5, True, None, "bilinear", 2**70]


@pytest.mark.parametrize("value", VALUES)
def test_the_value_rule_agrees_with_the_simulators(value: Any) -> None:
    """workflows.values.check_value and the simulator's validation (a leaf, with its own copy)
    give the same error objects for the same values: INT range, FLOAT, and a combo."""
    info = {k: OBJECT_INFO[k] for k in ("EmptyImage", "ImageScale", "SaveImage")}
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": value, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": value,
                "width": 8,
                "height": 8,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    try:
        result = validate_prompt(
            copy.deepcopy(prompt), info, version="0.33.0", input_exists=lambda name: True
        )
        sim_errors = {
            node_id: [_plain(e) for e in entry["errors"]]
            for node_id, entry in result.node_errors.items()
        }
    except Exception as exc:  # the real server fails the same way on an unhashable value
        sim_errors = {"raised": [type(exc).__name__]}
    ours: dict[str, list[Any]] = {}
    try:
        for node_id, name in (("1", "width"), ("2", "upscale_method")):
            spec = info[prompt[node_id]["class_type"]]["input"]["required"][name]
            _, error = check_value(name, value, spec)
            if error is not None:
                ours.setdefault(node_id, []).append(_plain(error))
    except Exception as exc:
        ours = {"raised": [type(exc).__name__]}
    if "1" in ours and "1" not in sim_errors and "raised" not in sim_errors:
        pytest.fail(f"only ours refuses {value!r}: {ours}")
    assert {k: v for k, v in ours.items() if k in sim_errors} == {
        k: v for k, v in sim_errors.items() if k in ours
    }


def _plain(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k != "extra_info"} | {
        "extra_info": {k: v for k, v in error.get("extra_info", {}).items() if k != "traceback"}
    }


def test_inputs_lists_every_settable_input(wf: Workflow) -> None:
    table = wf.inputs()
    assert list(table.columns) == ["node", "title", "class", "name", "value", "type", "range"]
    seed = table[(table["node"] == "3") & (table["name"] == "seed")].iloc[0]
    assert (seed["title"], seed["class"], seed["value"], seed["type"]) == (
        "KSampler",
        "KSampler",
        156680208700286,
        "INT",
    )
    assert seed["range"] == (0, 18446744073709551615)
    sampler = table[table["name"] == "sampler_name"].iloc[0]
    assert sampler["type"] == "COMBO" and "euler" in sampler["range"]
    assert "model" not in set(table["name"])  # links are not settable
    assert len(table) == 13


def test_repr_is_short(wf: Workflow) -> None:
    text = repr(wf)
    assert text.startswith("<Workflow: 7 nodes (CLIPTextEncode, CheckpointLoaderSimple")
    assert len(text) < 200


def test_a_client_is_asked_for_object_info_once() -> None:
    client = FakeClient()
    loaded = Workflow.load(UI, object_info=client)
    loaded.set("KSampler.steps", 4).set("KSampler.cfg", 2.0)
    assert client.calls == 1


def test_dynamic_combo_inputs_are_set_by_their_dotted_name() -> None:
    ui = _gz(DATA / "ui-to-api" / "api_grok_imagine_image_2_image_edit.ui.json.gz")
    loaded = Workflow.load(ui, OBJECT_INFO)
    node = next(i for i, n in loaded.to_api().items() if n["class_type"] == "GrokImageEditNodeV2")
    changed = loaded.set("GrokImageEditNodeV2.model.quality", "low")
    assert changed[node]["model.quality"] == "low"
    with pytest.raises(WorkflowError, match=r"not one of the allowed values \('medium', 'low'\)"):
        loaded.set("GrokImageEditNodeV2.model.quality", "high")  # not for the chosen model


def test_a_list_value_is_sent_wrapped_as_the_frontend_does(wf: Workflow) -> None:
    changed = wf.set("Save Image.filename_prefix", "x").set("7.text", ["a", "b"])
    assert changed["7"]["text"] == {"__value__": ["a", "b"]}
