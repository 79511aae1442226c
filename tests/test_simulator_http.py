"""The simulator answers the captured HTTP requests as the real ComfyUI did (older-version mode).

For each capture: the same request, the same status, the same content type, and a body of the
same shape (keys and value types, recursively; ids, times and counters may differ).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import load_capture, trivial_prompt
from PIL import Image
from sim_helpers import (
    HTTP,
    assert_same_shape,
    capture_prompt,
    history_of,
    post_prompt,
    recorder,
    release,
    start_blocker,
    wait_for,
)

from comfynb.simulator import Simulator

INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"


def send(sim: Simulator, request: dict[str, Any], path: str | None = None) -> httpx.Response:
    """Send a captured request (``json`` or ``raw_body``) to the simulator."""
    kwargs: dict[str, Any] = {}
    if "json" in request:
        kwargs["json"] = request["json"]
    elif "raw_body" in request:
        kwargs["content"] = request["raw_body"].encode()
    return HTTP.request(request["method"], sim.url + (path or request["path"]), **kwargs)


def assert_like(response: httpx.Response, captured: dict[str, Any]) -> None:
    """Same status, content type and body shape as the captured answer."""
    assert response.status_code == captured["status"], response.text
    assert response.headers.get("content-type") == captured["headers"].get("Content-Type")
    if "body" in captured:
        assert_same_shape(response.json(), captured["body"])
    elif "body_text" in captured:
        assert response.text == captured["body_text"]
    else:
        assert response.content[:4].hex() == captured["body_first_bytes_hex"][:8]  # the magic


def replay(
    sim: Simulator, captured: dict[str, Any], path: str | None = None, *, body: bool = True
) -> httpx.Response:
    """Send the captured request; check status, content type and (when ``body``) body shape."""
    response = send(sim, captured["request"], path)
    if body:
        assert_like(response, captured)
    else:
        assert response.status_code == captured["status"]
        assert response.headers.get("content-type") == captured["headers"].get("Content-Type")
    return response


# -- POST /prompt --------------------------------------------------------------------------------


def test_post_prompt_success(legacy_sim: Simulator) -> None:
    response = replay(legacy_sim, load_capture("post_prompt_success.json"))
    assert response.json()["node_errors"] == {}


def test_get_prompt_idle(legacy_sim: Simulator) -> None:
    replay(legacy_sim, load_capture("get_prompt_idle.json"))


def test_front_makes_number_negative_and_explicit_number_is_echoed(legacy_sim: Simulator) -> None:
    capture = load_capture("post_prompt_front_and_number.json")
    post_prompt(legacy_sim, trivial_prompt())
    post_prompt(legacy_sim, trivial_prompt())
    front = replay(legacy_sim, capture["front_true"]).json()
    assert front["number"] == -2
    given = replay(legacy_sim, capture["number_7.5"]).json()
    assert given["number"] == 7.5 and isinstance(given["number"], float)
    assert post_prompt(legacy_sim, trivial_prompt()).json()["number"] == 3


def test_number_counts_rejected_posts_too(legacy_sim: Simulator) -> None:
    assert post_prompt(legacy_sim, {}).status_code == 400
    assert post_prompt(legacy_sim, trivial_prompt()).json()["number"] == 1


VALIDATION_CASES = list(load_capture("post_prompt_validation_errors.json"))


@pytest.mark.parametrize("case", VALIDATION_CASES)
def test_validation_error_cases(legacy_sim: Simulator, case: str) -> None:
    captured = load_capture("post_prompt_validation_errors.json")[case]
    if case == "loadimage_missing_file":
        pass  # the file is missing here too
    response = replay(legacy_sim, captured)
    body = captured.get("body")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        assert response.json()["error"]["type"] == body["error"]["type"]
        assert set(response.json()["node_errors"]) == set(body["node_errors"])


def test_client_prompt_id_duplicates_and_int(legacy_sim: Simulator) -> None:
    capture = load_capture("post_prompt_client_prompt_id.json")
    blocker = start_blocker(legacy_sim)
    first = replay(legacy_sim, capture["first_submit"]).json()
    second = replay(legacy_sim, capture["second_submit_same_id"]).json()
    assert first["prompt_id"] == second["prompt_id"] == "my-own-id-0001"
    assert replay(legacy_sim, capture["int_prompt_id_12345"]).json()["prompt_id"] == "12345"
    queue = replay(legacy_sim, capture["queue_while_both_pending"]).json()
    assert [item[1] for item in queue["queue_running"]] == [blocker]
    assert sorted(item[1] for item in queue["queue_pending"]) == [
        "12345",
        "my-own-id-0001",
        "my-own-id-0001",
    ]
    replay(legacy_sim, capture["api_jobs_by_dup_id_while_pending"])
    release(legacy_sim, blocker)
    entry = history_of(legacy_sim, "12345")
    assert entry["prompt"][1] == "12345"
    wait_for(
        lambda: HTTP.get(f"{legacy_sim.url}/prompt").json()["exec_info"]["queue_remaining"] == 0
    )
    history = HTTP.get(f"{legacy_sim.url}/history/my-own-id-0001").json()
    assert_same_shape(history, capture["history_after_both_ran"]["body"])
    assert history["my-own-id-0001"]["prompt"][0] == second["number"]  # the last run's entry
    rows = {row["prompt_id"]: row["posts"] for row in legacy_sim.prompts()}
    assert rows["my-own-id-0001"] == 2 and rows["12345"] == 1


def test_delete_removes_one_pending_item_per_listed_id(legacy_sim: Simulator) -> None:
    blocker = start_blocker(legacy_sim)
    for _ in range(3):
        post_prompt(legacy_sim, trivial_prompt(), prompt_id="dup")
    HTTP.post(f"{legacy_sim.url}/queue", json={"delete": ["dup"]})
    pending = HTTP.get(f"{legacy_sim.url}/queue").json()["queue_pending"]
    assert [item[1] for item in pending] == ["dup", "dup"]
    HTTP.post(f"{legacy_sim.url}/queue", json={"delete": ["dup", "dup"]})
    assert HTTP.get(f"{legacy_sim.url}/queue").json()["queue_pending"] == []
    release(legacy_sim, blocker)


# -- queue, history, jobs while busy ---------------------------------------------------------------


def slow_prompt() -> dict[str, Any]:
    prompt = capture_prompt("history_after_interrupt.json")
    prompt["1"]["inputs"].update(width=32, height=32)
    prompt["3"]["inputs"].update(blur_radius=1, sigma=1.0)
    return prompt


def test_queue_history_and_jobs_while_busy(legacy_sim: Simulator) -> None:
    capture = load_capture("queue_pending_delete_clear.json")
    running = start_blocker(legacy_sim, slow_prompt(), client_id="cap-queue")
    pending = [
        post_prompt(legacy_sim, trivial_prompt(str(i)), client_id="cap-queue").json()["prompt_id"]
        for i in range(3)
    ]
    wait_for(lambda: HTTP.get(f"{legacy_sim.url}/queue").json()["queue_running"])
    replay(legacy_sim, capture["get_queue_running_and_pending"])
    assert replay(legacy_sim, capture["get_prompt_while_busy"]).json() == {
        "exec_info": {"queue_remaining": 4}
    }
    replay(legacy_sim, capture["get_history_of_pending_id"], f"/history/{pending[0]}")
    assert HTTP.get(f"{legacy_sim.url}/history/{running}").json() == {}  # running: {}
    replay(legacy_sim, capture["get_history_unknown_id"])
    jobs = replay(legacy_sim, capture["api_jobs_while_busy"]).json()["jobs"]
    assert [job["status"] for job in jobs] == ["pending", "pending", "pending", "in_progress"]
    replay(legacy_sim, capture["api_jobs_status_pending"])
    job = replay(legacy_sim, capture["api_jobs_by_pending_id"], f"/api/jobs/{pending[0]}").json()
    assert job["status"] == "pending"
    running_job = HTTP.get(f"{legacy_sim.url}/api/jobs/{running}").json()
    assert_same_shape(running_job, load_capture("api_jobs_by_id_in_progress.json")["body"])
    replay(legacy_sim, capture["api_jobs_unknown_id"])
    replay(legacy_sim, capture["api_jobs_bad_status"])
    replay(legacy_sim, capture["api_jobs_bad_limit"])
    replay(legacy_sim, capture["post_queue_delete_pending"], None)
    delete = {"method": "POST", "path": "/queue", "json": {"delete": [pending[0]]}}
    assert send(legacy_sim, delete).content == b""
    delete_running = {"method": "POST", "path": "/queue", "json": {"delete": [running]}}
    assert send(legacy_sim, delete_running).status_code == 200
    replay(legacy_sim, capture["post_queue_delete_unknown"])
    queue = HTTP.get(f"{legacy_sim.url}/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [running]  # not stopped
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted(pending[1:])
    replay(legacy_sim, capture["post_queue_clear"])
    assert HTTP.get(f"{legacy_sim.url}/queue").json()["queue_pending"] == []
    replay(legacy_sim, capture["post_queue_invalid_json"])
    replay(legacy_sim, capture["post_interrupt_no_body"])
    entry = history_of(legacy_sim, running)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    for gone in pending:
        assert HTTP.get(f"{legacy_sim.url}/history/{gone}").json() == {}


def test_queue_item_shape_while_running(legacy_sim: Simulator) -> None:
    blocker = start_blocker(legacy_sim, slow_prompt(), client_id="cap-interrupt")
    queue = HTTP.get(f"{legacy_sim.url}/queue").json()["queue_running"]
    assert_same_shape(
        {"queue_running": queue, "queue_pending": []},
        load_capture("queue_while_running.json")["body"],
    )
    release(legacy_sim, blocker)


# -- history entries and job details per outcome ---------------------------------------------------


def test_history_and_job_after_success(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_after_success.json")
    prompt_id = post_prompt(legacy_sim, prompt, client_id="cap-success").json()["prompt_id"]
    entry = history_of(legacy_sim, prompt_id)
    assert_same_shape({prompt_id: entry}, load_capture("history_after_success.json")["body"])
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    job = HTTP.get(f"{legacy_sim.url}/api/jobs/{prompt_id}").json()
    assert_same_shape(job, load_capture("api_jobs_by_id_completed.json")["body"])
    assert job["outputs"] == entry["outputs"] and job["execution_status"] == entry["status"]
    assert job["preview_output"]["nodeId"] == "5"


def test_history_and_job_after_execution_error(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_after_execution_error.json")
    prompt_id = post_prompt(legacy_sim, prompt, client_id="cap-error").json()["prompt_id"]
    entry = history_of(legacy_sim, prompt_id)
    captured = load_capture("history_after_execution_error.json")["body"]
    assert_same_shape({prompt_id: entry}, captured)
    job = HTTP.get(f"{legacy_sim.url}/api/jobs/{prompt_id}").json()
    assert_same_shape(job, load_capture("api_jobs_by_id_failed.json")["body"])
    assert job["status"] == "failed" and job["execution_error"]["node_id"] == "3"


def test_history_keeps_outputs_finished_before_an_error(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_execution_error_with_partial_outputs.json")
    prompt_id = post_prompt(legacy_sim, prompt, client_id="c").json()["prompt_id"]
    entry = history_of(legacy_sim, prompt_id)
    captured = load_capture("history_execution_error_with_partial_outputs.json")["body"]
    assert_same_shape({prompt_id: entry}, captured)
    assert entry["outputs"]["2"]["images"][0]["filename"] == "partial_ok_00001_.png"


def test_history_and_job_after_interrupt(legacy_sim: Simulator) -> None:
    prompt_id = start_blocker(legacy_sim, slow_prompt(), client_id="cap-interrupt")
    capture = load_capture("post_interrupt.json")
    replay(legacy_sim, capture["targeted_not_running"])
    replay(legacy_sim, capture["targeted_running"], None)
    assert HTTP.post(f"{legacy_sim.url}/interrupt", json={"prompt_id": prompt_id}).content == b""
    entry = history_of(legacy_sim, prompt_id)
    assert_same_shape({prompt_id: entry}, load_capture("history_after_interrupt.json")["body"])
    job = HTTP.get(f"{legacy_sim.url}/api/jobs/{prompt_id}").json()
    assert_same_shape(job, load_capture("api_jobs_by_id_interrupted.json")["body"])
    assert job["status"] == "failed" and "execution_error" not in job


def test_cached_rerun_history_with_and_without_client_id(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_cached_rerun_with_client_id.json")
    history_of(legacy_sim, post_prompt(legacy_sim, prompt, client_id="c").json()["prompt_id"])
    with_id = post_prompt(legacy_sim, prompt, client_id="c").json()["prompt_id"]
    with_entry = history_of(legacy_sim, with_id)
    without_id = post_prompt(legacy_sim, prompt).json()["prompt_id"]
    without_entry = history_of(legacy_sim, without_id)
    assert_same_shape(
        {with_id: with_entry}, load_capture("history_cached_rerun_with_client_id.json")["body"]
    )
    assert_same_shape(
        {without_id: without_entry}, load_capture("history_cached_rerun_without_client_id.json")
    )
    assert without_entry["outputs"] == {} and without_entry["meta"] == {}  # quirk 2 (0.8.0)
    assert with_entry["outputs"]["5"]["images"][0]["filename"] == "invert_blur_scale_00001_.png"


def test_cached_rerun_without_client_id_lists_outputs_on_0_33(sim: Simulator) -> None:
    prompt = capture_prompt("history_cached_rerun_with_client_id.json")
    history_of(sim, post_prompt(sim, prompt).json()["prompt_id"])
    entry = history_of(sim, post_prompt(sim, prompt).json()["prompt_id"])
    assert entry["status"]["messages"][1][1]["nodes"] == ["1", "2", "3", "4", "5"]
    assert entry["outputs"]["5"]["images"][0]["filename"] == "invert_blur_scale_00001_.png"
    assert list(entry["meta"]) == ["5"]


def test_history_of_saveimagewebsocket_has_no_outputs(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_saveimagewebsocket.json")
    prompt["1"]["inputs"].update(width=16, height=16)
    response = post_prompt(legacy_sim, prompt, client_id="c")
    entry = history_of(legacy_sim, response.json()["prompt_id"])
    captured = load_capture("history_saveimagewebsocket.json")["body"]
    assert_same_shape({"00000000-0000-0000-0000-000000000000": entry}, captured)
    assert entry["outputs"] == {}


def test_partially_valid_prompt_runs_only_valid_outputs(legacy_sim: Simulator) -> None:
    prompt = capture_prompt("history_partial_valid_prompt.json")
    response = post_prompt(legacy_sim, prompt)
    assert response.status_code == 200 and list(response.json()["node_errors"]) == ["5"]
    entry = history_of(legacy_sim, response.json()["prompt_id"])
    assert_same_shape(
        {"00000000-0000-0000-0000-000000000000": entry},
        load_capture("history_partial_valid_prompt.json")["body"],
    )
    assert sorted(entry["outputs"]) == ["2", "4"]
    assert entry["outputs"]["4"]["images"][0]["type"] == "temp"


def test_extra_data_secrets_workflow_id_free_and_partial_targets(legacy_sim: Simulator) -> None:
    capture = load_capture("extra_data_free_partial.json")
    prompt_id = replay(legacy_sim, capture["post_with_extra_data"]).json()["prompt_id"]
    entry = history_of(legacy_sim, prompt_id)
    extra = entry["prompt"][3]
    assert set(extra) == set(capture["history_extra_data_field"])
    assert extra["my_tag"] == "hello" and "api_key_comfy_org" not in extra
    assert len(entry["prompt"]) == capture["history_prompt_tuple_length"]
    jobs = replay(legacy_sim, capture["api_jobs_filter_workflow_id"]).json()["jobs"]
    assert [job["id"] for job in jobs] == [prompt_id]
    assert jobs[0]["workflow_id"] == "wf-demo-1"
    replay(legacy_sim, capture["post_free"])
    replay(legacy_sim, capture["post_free_empty_body"])
    partial = replay(legacy_sim, capture["post_partial_execution_targets"]).json()["prompt_id"]
    entry = history_of(legacy_sim, partial)
    assert list(entry["outputs"]) == ["2"] and entry["prompt"][4] == ["2"]


def test_history_paging_delete_clear_and_jobs_paging(legacy_sim: Simulator) -> None:
    capture = load_capture("history_list_delete_clear.json")
    ids = [post_prompt(legacy_sim, trivial_prompt(f"t{i}")).json()["prompt_id"] for i in range(6)]
    history_of(legacy_sim, ids[-1])
    url = legacy_sim.url
    assert list(HTTP.get(f"{url}/history").json()) == ids
    assert list(HTTP.get(f"{url}/history?max_items=2").json()) == ids[-2:]
    assert list(HTTP.get(f"{url}/history?max_items=2&offset=0").json()) == ids[:2]
    assert list(HTTP.get(f"{url}/history?max_items=2&offset=2").json()) == ids[2:4]
    assert HTTP.get(f"{url}/history?max_items=0").json() == {}
    bad = HTTP.get(f"{url}/history?max_items=abc")
    assert bad.status_code == 500 and bad.text == INTERNAL_ERROR
    replay(legacy_sim, capture["api_jobs_limit3"])
    # (the captured page held other kinds of jobs: compare the page, not the job shapes)
    page = replay(legacy_sim, capture["api_jobs_completed_asc_limit2_offset1"], body=False).json()
    assert [job["id"] for job in page["jobs"]] == ids[1:3]
    assert page["pagination"] == {"offset": 1, "limit": 2, "total": 6, "has_more": True}
    replay(legacy_sim, capture["post_history_delete_two"], None)
    HTTP.post(f"{url}/history", json={"delete": ids[:2]})
    assert list(HTTP.get(f"{url}/history").json()) == ids[2:]
    replay(legacy_sim, capture["post_history_delete_unknown"])
    replay(legacy_sim, capture["post_history_clear"])
    assert HTTP.get(f"{url}/history").json() == {}
    replay(legacy_sim, capture["post_history_invalid_json"])


def test_jobs_sort_by_duration_and_bad_params(legacy_sim: Simulator) -> None:
    url = legacy_sim.url
    ids = [post_prompt(legacy_sim, trivial_prompt(f"t{i}")).json()["prompt_id"] for i in range(3)]
    history_of(legacy_sim, ids[-1])
    body = HTTP.get(f"{url}/api/jobs?sort_by=execution_duration&sort_order=asc").json()
    assert sorted(job["id"] for job in body["jobs"]) == sorted(ids)
    for query in ("limit=x", "offset=-1", "sort_order=up", "sort_by=name", "status=done"):
        response = HTTP.get(f"{url}/api/jobs?{query}")
        assert response.status_code == 400 and isinstance(response.json()["error"], str)
    assert HTTP.get(f"{url}/api/api/jobs").status_code == 200  # every route also under /api


# -- /view ----------------------------------------------------------------------------------------


def _png(size: tuple[int, int] = (8, 8), mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 200) if mode == "RGBA" else (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_view_requests(legacy_sim: Simulator) -> None:
    capture = load_capture("view_requests.json")
    output = legacy_sim.root / "output"
    (output / "sub").mkdir(parents=True, exist_ok=True)
    (output / "two_out_a_00003_.png").write_bytes(_png())
    (output / "sub" / "two_out_b_00002_.png").write_bytes(_png())
    (legacy_sim.root / "temp" / "ComfyUI_temp_pebzl_00001_.png").write_bytes(_png())
    for name, captured in capture.items():
        response = replay(legacy_sim, captured)
        for header in ("Content-Disposition", "Etag", "Last-Modified", "Accept-Ranges"):
            assert (header in captured["headers"]) == (header in response.headers), (name, header)
    full = HTTP.get(f"{legacy_sim.url}/view?filename=two_out_a_00003_.png")
    assert full.content == (output / "two_out_a_00003_.png").read_bytes()
    alpha = HTTP.get(f"{legacy_sim.url}/view?filename=two_out_a_00003_.png&channel=a")
    assert Image.open(io.BytesIO(alpha.content)).getchannel("A").getextrema() == (200, 200)


# -- /upload/image ----------------------------------------------------------------------------------


def upload(sim: Simulator, name: str, data: bytes, **fields: str) -> httpx.Response:
    return HTTP.post(
        f"{sim.url}/upload/image", files={"image": (name, data, "image/png")}, data=fields
    )


def test_upload_image_requests(legacy_sim: Simulator) -> None:
    capture = load_capture("upload_image_requests.json")
    first, other = _png((4, 4)), _png((5, 5))

    def check(key: str, response: httpx.Response) -> dict[str, Any]:
        assert_like(response, capture[key])
        return response.json() if response.content else {}

    assert (
        check("upload_new", upload(legacy_sim, "probe_upload.png", first))["name"]
        == "probe_upload.png"
    )
    same = check("upload_same_name_same_content", upload(legacy_sim, "probe_upload.png", first))
    assert same["name"] == "probe_upload.png"
    renamed = check(
        "upload_same_name_different_content", upload(legacy_sim, "probe_upload.png", other)
    )
    assert renamed["name"] == "probe_upload (1).png"
    over = upload(legacy_sim, "probe_upload.png", other, overwrite="true")
    assert check("upload_overwrite_true", over)["name"] == "probe_upload.png"
    assert (legacy_sim.root / "input" / "probe_upload.png").read_bytes() == other
    sub = check(
        "upload_subfolder", upload(legacy_sim, "probe_upload.png", first, subfolder="mydir")
    )
    assert sub == {"name": "probe_upload.png", "subfolder": "mydir", "type": "input"}
    assert (
        check("upload_type_temp", upload(legacy_sim, "probe_upload.png", first, type="temp"))[
            "type"
        ]
        == "temp"
    )
    out = check(
        "upload_type_output", upload(legacy_sim, "uploaded_to_output.png", first, type="output")
    )
    assert (legacy_sim.root / "output" / out["name"]).is_file()
    check("upload_subfolder_traversal", upload(legacy_sim, "x.png", first, subfolder="../.."))
    check("upload_filename_traversal", upload(legacy_sim, "..%2Fevil.png", first))
    no_image = HTTP.post(f"{legacy_sim.url}/upload/image", data={"type": "input"})
    check("upload_without_image_field", no_image)
    assert (
        check("upload_non_image_bytes", upload(legacy_sim, "junk.png", b"not an image"))["name"]
        == "junk.png"
    )


def test_upload_raw_filenames(legacy_sim: Simulator) -> None:
    capture = load_capture("upload_image_raw_filenames.json")
    names = {
        "literal_dotdot_filename": "../evil2.png",
        "absolute_filename": "/tmp/abs_evil.png",
        "filename_with_subdir": "sub/inner.png",
        "plain": "raw_plain.png",
    }
    for key, name in names.items():
        assert_like(upload(legacy_sim, name, _png()), capture[key])
    assert not (legacy_sim.root / "evil2.png").exists()


def test_loadimage_after_upload_and_non_image_fails_at_execution(legacy_sim: Simulator) -> None:
    upload(legacy_sim, "probe_upload.png", _png((16, 16)))
    upload(legacy_sim, "inner.png", _png((16, 16)), subfolder="mydir")
    upload(legacy_sim, "junk.png", b"not an image")

    def loadimage(name: str) -> dict[str, Any]:
        return {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "from_upload"},
            },
        }

    by_name = history_of(
        legacy_sim, post_prompt(legacy_sim, loadimage("probe_upload.png")).json()["prompt_id"]
    )
    assert by_name["status"]["status_str"] == "success"
    by_path = history_of(
        legacy_sim, post_prompt(legacy_sim, loadimage("mydir/inner.png")).json()["prompt_id"]
    )
    assert by_path["outputs"]["3"]["images"][0]["filename"] == "from_upload_00002_.png"
    junk = history_of(
        legacy_sim, post_prompt(legacy_sim, loadimage("junk.png")).json()["prompt_id"]
    )
    assert junk["status"]["status_str"] == "error"
    captured = load_capture("loadimage_after_upload.json")["non_image_file"]["history_status"]
    assert (
        junk["status"]["messages"][-1][1]["exception_type"]
        == captured["messages"][-1][1]["exception_type"]
    )


# -- server info, origin guard ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["system_stats.json", "features.json"])
def test_server_info(legacy_sim: Simulator, name: str) -> None:
    replay(legacy_sim, load_capture(name))


def test_system_stats_and_features_on_0_33(sim: Simulator) -> None:
    stats = HTTP.get(f"{sim.url}/system_stats").json()["system"]
    assert stats["comfyui_version"] == "0.33.0"
    assert {"name", "installed", "required"} <= set(stats["comfy_package_versions"][0])
    assert isinstance(stats["deploy_environment"], str)
    features = HTTP.get(f"{sim.url}/features").json()
    assert {"supports_model_type_tags", "node_replacements", "assets"} <= set(features)
    legacy = load_capture("system_stats.json")["body"]["system"]
    assert set(legacy) < set(stats)


def test_object_info_routes(legacy_sim: Simulator) -> None:
    single = load_capture("object_info_single_class.json")
    for captured in single.values():
        if isinstance(captured, dict) and "request" in captured:
            replay(legacy_sim, captured)
    info = HTTP.get(f"{legacy_sim.url}/object_info").json()
    assert {"EmptyImage", "SaveImage", "KSampler", "LoadImage"} <= set(info)
    one = HTTP.get(f"{legacy_sim.url}/api/object_info/EmptyImage").json()
    assert one == {"EmptyImage": info["EmptyImage"]}
    assert HTTP.get(f"{legacy_sim.url}/object_info/NoSuchNode").json() == {}
    upload(legacy_sim, "listed.png", _png())
    images = HTTP.get(f"{legacy_sim.url}/object_info/LoadImage").json()["LoadImage"]
    assert "listed.png" in images["input"]["required"]["image"][0]


def test_foreign_origin_gets_403_on_http_and_ws(legacy_sim: Simulator) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    capture = load_capture("origin_header_check.json")
    port = legacy_sim.port
    foreign = {"Origin": "http://127.0.0.1:8888"}
    refused = HTTP.post(
        f"{legacy_sim.url}/prompt", json={"prompt": trivial_prompt()}, headers=foreign
    )
    assert_like(refused, capture["post_prompt_foreign_origin"])
    assert_like(
        HTTP.get(f"{legacy_sim.url}/queue", headers=foreign), capture["get_queue_foreign_origin"]
    )
    same = {"Origin": f"http://127.0.0.1:{port}"}
    assert_like(HTTP.get(f"{legacy_sim.url}/queue", headers=same), capture["get_queue_same_origin"])
    with pytest.raises(InvalidStatus) as refused_ws:
        connect(legacy_sim.ws_url, origin="http://127.0.0.1:8888")  # type: ignore[arg-type]
    assert refused_ws.value.response.status_code == 403
    assert legacy_sim.prompts() == []


def test_misc_bodies_are_json(legacy_sim: Simulator) -> None:
    for path in ("/api/prompt", "/api/queue", "/api/history", "/api/features", "/api/system_stats"):
        response = HTTP.get(legacy_sim.url + path)
        assert response.status_code == 200 and isinstance(response.json(), dict), path
    assert json.loads(HTTP.get(f"{legacy_sim.url}/api/jobs").text)["jobs"] == []


@pytest.mark.parametrize(
    "key", ["/embeddings", "/models", "/models/nope", "/extensions", "/internal/files/bogus"]
)
def test_misc_get_routes(legacy_sim: Simulator, key: str) -> None:
    # No frontend here: /extensions is an empty list (the captured one listed the frontend's files).
    replay(legacy_sim, load_capture("misc_get_routes.json")[key], body=key != "/extensions")


def test_model_lists_and_internal_files(legacy_sim: Simulator) -> None:
    checkpoints = HTTP.get(f"{legacy_sim.url}/api/models/checkpoints").json()
    info = HTTP.get(f"{legacy_sim.url}/object_info/CheckpointLoaderSimple").json()
    assert checkpoints == info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    first = post_prompt(legacy_sim, trivial_prompt("a")).json()["prompt_id"]
    history_of(legacy_sim, first)
    second = post_prompt(legacy_sim, trivial_prompt("b")).json()["prompt_id"]
    history_of(legacy_sim, second)
    files = HTTP.get(f"{legacy_sim.url}/internal/files/output").json()
    assert files[0] == "b_00001_.png" and "a_00001_.png" in files  # newest first
    assert HTTP.get(f"{legacy_sim.url}/api/internal/files/output").status_code == 404


def test_a_simulator_with_chosen_checkpoints_lists_only_those(tmp_path: Path) -> None:
    # as a ComfyUI whose models/checkpoints/ folder holds these files (none: a fresh install)
    for names in (["mine.safetensors"], []):
        with Simulator(root=tmp_path, checkpoints=names) as sim:
            assert HTTP.get(f"{sim.url}/api/models/checkpoints").json() == names
            for path in ("/object_info", "/object_info/CheckpointLoaderSimple"):
                info = HTTP.get(f"{sim.url}{path}").json()
                ckpt_name = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
                assert ckpt_name[0] == names


def test_history_while_running_and_interrupt_mid_node(legacy_sim: Simulator) -> None:
    from test_simulator_ws import ksampler_prompt

    legacy_sim.configure(step_seconds=0.01)
    with recorder(legacy_sim, "c") as ws:
        response = post_prompt(legacy_sim, ksampler_prompt(steps=500), client_id="c")
        prompt_id = response.json()["prompt_id"]
        ws.until(lambda m: m.kind == "progress")  # the sampler is ticking
        replay(legacy_sim, load_capture("history_while_running.json"), f"/history/{prompt_id}")
        replay(legacy_sim, load_capture("post_interrupt.json")["targeted_running"], None)
        HTTP.post(f"{legacy_sim.url}/interrupt", json={"prompt_id": prompt_id})
        ws.until_idle(prompt_id)
    entry = history_of(legacy_sim, prompt_id)
    captured = next(iter(load_capture("history_after_interrupt_mid_node.json")["body"].values()))
    for one in (entry, captured):  # another graph than the captured one: leave the prompt out
        one["prompt"][2] = {}
    assert_same_shape(entry, captured)
    interrupted = entry["status"]["messages"][-1]
    assert interrupted[0] == "execution_interrupted" and interrupted[1]["node_type"] == "KSampler"


def test_interrupt_when_idle_and_internal_files(legacy_sim: Simulator) -> None:
    replay(legacy_sim, load_capture("post_interrupt_when_idle.json"))
    upload(legacy_sim, "probe_upload.png", _png())
    replay(legacy_sim, load_capture("internal_files_input.json"))


def test_unknown_path_is_a_static_404(legacy_sim: Simulator) -> None:
    replay(legacy_sim, load_capture("misc_get_routes.json")["/no/such/route"])
    assert HTTP.get(f"{legacy_sim.url}/").headers["content-type"].startswith("text/html")
