"""The simulator's WebSocket stream replays the captured message orders of a real ComfyUI."""

from __future__ import annotations

import httpx
from conftest import trivial_prompt
from sim_helpers import capture_prompt, capture_types, history_of, post_prompt, recorder

from comfynb.simulator import Simulator


def test_success_order_matches_capture(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_after_success.json")
    with recorder(legacy_sim, "cap-success") as ws:
        response = post_prompt(legacy_sim, prompt, client_id="cap-success")
        assert response.status_code == 200
        got = ws.until_idle(response.json()["prompt_id"])
    expected = capture_types("ws_success.jsonl", start="POST /prompt returned")
    assert ws.types(got) == expected


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
    view = httpx.get(f"{sim.url}/view", params={"filename": "trivial_00001_.png"})
    assert view.status_code == 200
    assert view.content.startswith(b"\x89PNG")
    assert (sim.root / "output" / "trivial_00001_.png").read_bytes() == view.content
