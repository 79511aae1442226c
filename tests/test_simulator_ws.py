"""The simulator's WebSocket stream replays the captured message orders of a real ComfyUI.

Each test runs the captured workflow (shrunk where the real one was slow on purpose) and
compares the sequence of message types with the capture's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import trivial_prompt
from sim_helpers import (
    HTTP,
    Recorder,
    assert_same_messages,
    capture_frames,
    capture_prompt,
    capture_types,
    history_of,
    post_prompt,
    recorder,
)

from comfynb import demo
from comfynb.simulator import Simulator


def small_slow_blur() -> dict[str, Any]:
    """The captured ``slow_blur`` graph at 64x64: EmptyImage -> AddNoise -> Blur -> SaveImage."""
    prompt = capture_prompt("history_after_interrupt.json")
    prompt["1"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(blur_radius=3, sigma=1.0)
    return prompt


def ws_save_prompt(batch: int = 4) -> dict[str, Any]:
    """The captured ``progress_ws_save`` graph: EmptyImage(batch) -> AddNoise -> SaveImageWebsocket."""
    prompt = capture_prompt("history_saveimagewebsocket.json")
    prompt["1"]["inputs"].update(width=32, height=32, batch_size=batch)
    return prompt


def run(sim: Simulator, ws: Recorder, prompt: dict[str, Any], client_id: str) -> list[str]:
    """Post ``prompt`` for ``client_id`` and return the message types up to its end."""
    response = post_prompt(sim, prompt, client_id=client_id)
    assert response.status_code == 200, response.text
    return ws.types(ws.until_idle(response.json()["prompt_id"]))


def test_success_order_matches_capture(legacy_sim: Simulator) -> None:
    with recorder(legacy_sim, "cap-success") as ws:
        run(legacy_sim, ws, capture_prompt("history_after_success.json"), "cap-success")
    frames = capture_frames("ws_success.jsonl", start="POST /prompt returned")
    assert_same_messages(ws.messages[1:], frames)
    assert_same_messages(ws.messages[:1], capture_frames("ws_success.jsonl")[:1])


def test_trivial_prompt_round_trip(sim: Simulator) -> None:
    with recorder(sim, "c1") as ws:
        prompt_id = post_prompt(sim, trivial_prompt(), client_id="c1").json()["prompt_id"]
        messages = ws.until_idle(prompt_id)
    executed = [m for m in messages if m.kind == "executed"]
    assert executed[0].data["output"] == {
        "images": [{"filename": "trivial_00001_.png", "subfolder": "", "type": "output"}]
    }
    entry = history_of(sim, prompt_id)
    assert entry["status"]["status_str"] == "success"
    view = HTTP.get(f"{sim.url}/view", params={"filename": "trivial_00001_.png"})
    assert view.status_code == 200
    assert (sim.root / "output" / "trivial_00001_.png").read_bytes() == view.content


def test_cached_rerun_with_and_without_client_id(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_cached_rerun_with_client_id.json")
    with recorder(legacy_sim, "cap-cached") as ws:
        first = post_prompt(legacy_sim, prompt, client_id="cap-cached").json()["prompt_id"]
        ws.until_idle(first)
        files = sorted((legacy_sim.root / "output").iterdir())
        again = post_prompt(legacy_sim, prompt, client_id="cap-cached").json()["prompt_id"]
        with_client = ws.until_idle(again)
        post_prompt(legacy_sim, prompt)  # no client_id: this socket only sees broadcasts
        without_client = ws.until(
            lambda m: m.kind == "status" and m.data["status"]["exec_info"]["queue_remaining"] == 0
        )
    assert_same_messages(
        with_client,
        capture_frames("ws_cached_rerun.jsonl", start="client_id set", stop="NO client_id"),
    )
    assert_same_messages(
        without_client, capture_frames("ws_cached_rerun.jsonl", start="NO client_id")
    )
    cached = next(m for m in with_client if m.kind == "execution_cached")
    assert cached.data["nodes"] == ["1", "2", "3", "4", "5"]
    executed = next(m for m in with_client if m.kind == "executed")
    assert executed.data["output"]["images"][0]["filename"] == "invert_blur_scale_00001_.png"
    assert sorted((legacy_sim.root / "output").iterdir()) == files  # no new file


def test_execution_error_order_and_message(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_after_execution_error.json")
    with recorder(legacy_sim, "cap-error") as ws:
        run(legacy_sim, ws, prompt, "cap-error")
        error = next(m for m in ws.messages if m.kind == "execution_error").data
    frames = capture_frames("ws_execution_error.jsonl", start="POST /prompt returned")
    assert_same_messages(ws.messages[1:], frames)
    captured = next(
        f["msg"]["data"]
        for f in _frames("ws_execution_error.jsonl")
        if f.get("msg", {}).get("type") == "execution_error"
    )
    assert set(error) == set(captured)
    assert error["node_id"] == "3" and error["node_type"] == "SaveImage"
    assert "Saving image outside the output folder is not allowed" in error["exception_message"]
    assert error["executed"] == ["1", "2"]


def test_error_after_one_output_keeps_that_output(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_execution_error_with_partial_outputs.json")
    with recorder(legacy_sim, "cap-partial-err") as ws:
        response = post_prompt(legacy_sim, prompt, client_id="cap-partial-err")
        got = ws.until_idle(response.json()["prompt_id"])
    frames = capture_frames("ws_execution_error_after_one_output_saved.jsonl", start="POST /prompt")
    assert_same_messages(got, frames)
    entry = history_of(legacy_sim, response.json()["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert list(entry["outputs"]) == ["2"]
    assert list(entry["meta"]) == ["2"]


def test_interrupt_takes_effect_at_next_node(legacy_sim: Simulator) -> None:
    legacy_sim.configure(node_seconds_by_id={"3": 30})  # node 3 runs until interrupted
    with recorder(legacy_sim, "cap-interrupt") as ws:
        response = post_prompt(legacy_sim, small_slow_blur(), client_id="cap-interrupt")
        prompt_id = response.json()["prompt_id"]
        ws.until(lambda m: m.kind == "executing" and m.node == "3")
        HTTP.post(f"{legacy_sim.url}/interrupt", json={"prompt_id": "not-running-id"})
        HTTP.post(f"{legacy_sim.url}/interrupt", json={"prompt_id": prompt_id})
        ws.until_idle(prompt_id)
    assert_same_messages(
        ws.messages[1:], capture_frames("ws_interrupt.jsonl", start="POST /prompt")
    )
    interrupted = next(m for m in ws.messages if m.kind == "execution_interrupted").data
    assert interrupted["node_id"] == "4" and interrupted["node_type"] == "SaveImage"
    assert sorted(interrupted["executed"]) == ["1", "2", "3"]
    entry = history_of(legacy_sim, prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


def _frames(name: str) -> list[dict[str, Any]]:
    from conftest import load_capture

    frames: list[dict[str, Any]] = load_capture(name)
    return frames


def _ticks_folded(types: list[str]) -> list[str]:
    """Fold repeated progress ticks (``progress_state, progress``) into one, to compare shapes."""
    out: list[str] = []
    for kind in types:
        if out[-2:] == ["progress_state", "progress"] and kind == "progress_state":
            out.append("~")
        elif out[-1:] == ["~"] and kind == "progress":
            out[-1:] = []
        else:
            out.append(kind)
    return [k for k in out if k != "~"]


def ksampler_prompt(steps: int = 20, seed: int = 1) -> dict[str, Any]:
    """ComfyUI's default txt2img graph (simulated models), small latent."""
    return demo.txt2img(seed, steps=steps, size=64, prefix="ComfyUI")


def test_progress_ticks_and_interrupt_mid_node(legacy_sim: Simulator) -> None:
    legacy_sim.configure(step_seconds=0.02)
    with recorder(legacy_sim, "cap-int-mid") as ws:
        response = post_prompt(legacy_sim, ksampler_prompt(steps=200), client_id="cap-int-mid")
        prompt_id = response.json()["prompt_id"]
        ws.until(lambda m: m.kind == "progress" and m.data["value"] == 3)
        HTTP.post(f"{legacy_sim.url}/interrupt")
        ws.until_idle(prompt_id)
    got = ws.types(ws.messages[1:])
    expected = capture_types("ws_interrupt_mid_node_progress.jsonl", start="POST /prompt")
    # Another graph than the captured one: compare from the ticking node's `executing` on.
    tail = got[_last_index(got, "executing", before="progress") :]
    expected_tail = expected[_last_index(expected, "executing", before="progress") :]
    assert _ticks_folded(tail) == _ticks_folded(expected_tail)
    progress = [m.data for m in ws.messages if m.kind == "progress"]
    assert [p["value"] for p in progress[:3]] == [1, 2, 3]
    assert {p["max"] for p in progress} == {200} and {p["node"] for p in progress} == {"3"}


def _last_index(types: list[str], kind: str, *, before: str) -> int:
    stop = types.index(before)
    return max(i for i, t in enumerate(types[:stop]) if t == kind)


def test_progress_of_a_whole_ksampler_run(legacy_sim: Simulator) -> None:
    with recorder(legacy_sim, "cap-upscale") as ws:
        run(legacy_sim, ws, ksampler_prompt(steps=16), "cap-upscale")
    got = ws.types(ws.messages[1:])
    expected = capture_types("ws_progress_upscale_tiny_model.jsonl", start="POST /prompt")
    ticking = _last_index(got, "executing", before="progress")
    captured = _last_index(expected, "executing", before="progress")
    # The ticking node: `executing`, 16 x (progress_state, progress), its progress_state(finished).
    assert got[ticking : ticking + 34] == expected[captured : captured + 34]
    assert got[ticking + 33 :].count("progress") == 0
    assert got[-4:] == expected[-4:]  # ... executed (the output), progress_state, success, end


@pytest.mark.parametrize(
    ("metadata", "capture", "binary"),
    [
        (False, "ws_progress_saveimagewebsocket_legacy.jsonl", "binary:1"),
        (True, "ws_progress_saveimagewebsocket_preview_metadata.jsonl", "binary:4"),
    ],
)
def test_binary_previews_in_both_formats(
    legacy_sim: Simulator, metadata: bool, capture: str, binary: str
) -> None:
    with recorder(legacy_sim, "cap-progress", metadata=metadata) as ws:
        response = post_prompt(legacy_sim, ws_save_prompt(), client_id="cap-progress")
        prompt_id = response.json()["prompt_id"]
        got = ws.until_idle(prompt_id)
    assert_same_messages(got, capture_frames(capture, start="POST /prompt"))
    frames = [m.data for m in ws.messages if m.kind == binary]
    assert len(frames) == 4
    if metadata:
        size = int.from_bytes(frames[0][4:8], "big")
        meta = json.loads(frames[0][8 : 8 + size])
        assert meta == {
            "node_id": "3",
            "prompt_id": prompt_id,
            "display_node_id": "3",
            "parent_node_id": None,
            "real_node_id": "3",
            "image_type": "image/png",
        }
        assert frames[0][8 + size :].startswith(b"\x89PNG")
    else:
        assert frames[0][4:8] == (2).to_bytes(4, "big")  # PNG
        assert frames[0][8:].startswith(b"\x89PNG")
    assert history_of(legacy_sim, prompt_id)["outputs"] == {}


def test_observer_sees_only_broadcasts_of_prompts_without_client_id(legacy_sim: Simulator) -> None:
    observer_capture = "ws_observer_prompts_without_client_id.jsonl"
    with recorder(legacy_sim, "cap-observer") as ws:
        post_prompt(legacy_sim, capture_prompt("history_after_success.json"))
        success = ws.until(_queue_empty)
        post_prompt(legacy_sim, capture_prompt("history_after_execution_error.json"))
        error = ws.until(_queue_empty)
        legacy_sim.configure(node_seconds_by_id={"3": 30})
        mark = len(ws.messages)
        post_prompt(legacy_sim, small_slow_blur())
        ws.until(lambda m: m.kind == "progress_state" and "3" in m.data["nodes"])
        HTTP.post(f"{legacy_sim.url}/interrupt")
        ws.until(_queue_empty)
        interrupted = ws.messages[mark:]
    frames = capture_frames(observer_capture, start="invert_blur", stop="exec error")
    assert_same_messages(success, frames)
    assert_same_messages(
        error, capture_frames(observer_capture, start="exec error", stop="slow_blur")
    )
    assert_same_messages(interrupted, capture_frames(observer_capture, start="slow_blur"))


def _remaining(message: Any) -> int | None:
    """``queue_remaining`` of a ``status`` message, None for other messages."""
    if message.kind != "status":
        return None
    remaining: int = message.data["status"]["exec_info"]["queue_remaining"]
    return remaining


def _queue_empty(message: Any) -> bool:
    return bool(
        message.kind == "status" and message.data["status"]["exec_info"]["queue_remaining"] == 0
    )


def test_connect_without_client_id_gets_a_hex_sid(sim: Simulator) -> None:
    with recorder(sim) as ws:
        sid = ws.messages[0].data["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0


def test_second_socket_with_same_id_replaces_the_first(sim: Simulator) -> None:
    with recorder(sim, "shared-id") as first, recorder(sim, "shared-id") as second:
        prompt_id = post_prompt(sim, trivial_prompt(), client_id="shared-id").json()["prompt_id"]
        second.until_idle(prompt_id)
        with pytest.raises(TimeoutError):
            first.read(timeout=0.05)  # the older socket got nothing more


def test_after_older_socket_closes_the_newer_one_gets_nothing(sim: Simulator) -> None:
    older = recorder(sim, "shared-id")
    older.__enter__()
    with recorder(sim, "shared-id") as newer, recorder(sim, "observer") as observer:
        older.__exit__(None, None, None)  # the server now forgets "shared-id" (fact sheet)
        post_prompt(sim, trivial_prompt(), client_id="shared-id")
        observer.until(_queue_empty)  # every frame of that prompt was published by now
        with pytest.raises(TimeoutError):
            newer.read(timeout=0.05)


def test_reconnect_during_execution_gets_executing_without_prompt_id(legacy_sim: Simulator) -> None:
    legacy_sim.configure(node_seconds_by_id={"3": 30})  # node 3 runs until released
    with recorder(legacy_sim, "reconnector") as ws:
        prompt_id = post_prompt(legacy_sim, small_slow_blur(), client_id="reconnector").json()[
            "prompt_id"
        ]
        before = ws.until(lambda m: m.kind == "executing" and m.node == "3")
    assert_same_messages(before, capture_frames("ws_reconnect_before.jsonl", start="POST /prompt"))
    with recorder(legacy_sim, "reconnector") as again:
        greeting = again.messages[0]
        legacy_sim.configure(node_seconds_by_id={})  # node 3 finishes now
        rest = again.until_idle(prompt_id)
    assert greeting.data["status"]["exec_info"]["queue_remaining"] == 1
    assert rest[0].kind == "executing" and rest[0].data == {"node": "3"}
    frames = capture_frames("ws_reconnect_after_during_execution.jsonl")
    assert_same_messages(again.messages, frames)


def test_interrupt_while_idle_does_not_touch_the_next_prompt(legacy_sim: Simulator) -> None:
    assert HTTP.post(f"{legacy_sim.url}/interrupt").status_code == 200
    with recorder(legacy_sim, "cap-after-idle-int") as ws:
        run(legacy_sim, ws, trivial_prompt(), "cap-after-idle-int")
    assert_same_messages(ws.messages, capture_frames("ws_prompt_after_idle_interrupt.jsonl"))


def test_status_broadcasts_on_queue_delete_and_clear(legacy_sim: Simulator) -> None:
    legacy_sim.configure(node_seconds_by_id={"3": 30})  # the first prompt holds at its node 3
    with recorder(legacy_sim, "cap-queue") as ws:
        ids = [post_prompt(legacy_sim, small_slow_blur(), client_id="cap-queue").json()]
        ids += [post_prompt(legacy_sim, trivial_prompt(str(i))).json() for i in range(3)]
        # The first prompt must be running (held at node 3) before the queue is cleared.
        seen = ws.until(lambda m: m.kind == "executing" and m.node == "3")
        if not any(_remaining(m) == 4 for m in seen):
            ws.until(lambda m: _remaining(m) == 4)
        HTTP.post(f"{legacy_sim.url}/queue", json={"delete": [ids[1]["prompt_id"]]})
        ws.until(
            lambda m: m.kind == "status" and m.data["status"]["exec_info"]["queue_remaining"] == 3
        )
        HTTP.post(f"{legacy_sim.url}/queue", json={"clear": True})
        ws.until(
            lambda m: m.kind == "status" and m.data["status"]["exec_info"]["queue_remaining"] == 1
        )
        HTTP.post(f"{legacy_sim.url}/interrupt")
        ws.until_idle(ids[0]["prompt_id"])
    for deleted in ids[1:]:
        assert HTTP.get(f"{legacy_sim.url}/history/{deleted['prompt_id']}").json() == {}


def test_cached_node_feeds_an_uncached_one(sim: Simulator) -> None:
    from PIL import Image

    first = trivial_prompt("plain")
    first["1"]["inputs"]["color"] = 0x102030
    history_of(sim, post_prompt(sim, first).json()["prompt_id"])
    second = {
        "1": first["1"],
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "inv"}},
    }
    with recorder(sim, "c") as ws:
        prompt_id = post_prompt(sim, second, client_id="c").json()["prompt_id"]
        messages = ws.until_idle(prompt_id)
    assert next(m for m in messages if m.kind == "execution_cached").data["nodes"] == ["1"]
    assert [m.node for m in messages if m.kind == "executing"] == ["3", "2", None]
    name = history_of(sim, prompt_id)["outputs"]["2"]["images"][0]["filename"]
    with Image.open(sim.root / "output" / name) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0xEF, 0xDF, 0xCF)


def test_large_preview_frames_arrive_whole(sim: Simulator) -> None:
    import io

    from PIL import Image

    prompt = ws_save_prompt(batch=2)
    prompt["1"]["inputs"].update(width=300, height=300)  # noisy PNGs of ~270 kB: 64-bit lengths
    with recorder(sim, "big", metadata=True) as ws:
        prompt_id = post_prompt(sim, prompt, client_id="big").json()["prompt_id"]
        messages = ws.until_idle(prompt_id)
    frames = [m.data for m in messages if m.kind == "binary:4"]
    assert len(frames) == 2 and len(frames[0]) > 65536
    size = int.from_bytes(frames[0][4:8], "big")
    with Image.open(io.BytesIO(frames[0][8 + size :])) as image:
        assert image.size == (300, 300)


def test_another_client_sees_only_status_broadcasts(sim: Simulator) -> None:
    with recorder(sim, "a") as mine, recorder(sim, "b") as other:
        prompt_id = post_prompt(sim, trivial_prompt(), client_id="a").json()["prompt_id"]
        assert "execution_success" in mine.types(mine.until_idle(prompt_id))
        seen = other.until(_queue_empty)
    assert {m.kind for m in seen} == {"status"}
