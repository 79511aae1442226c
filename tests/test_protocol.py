"""protocol.py against the real server's captured answers: no server needed.

Every captured HTTP answer is parsed the way the client would read it (typed result or typed
error, never a KeyError); the flows are driven with responses built from captures.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import CAPTURES
from PIL import Image

from comfynb import errors
from comfynb.protocol import events as events
from comfynb.protocol import flows, parse, rejections, types
from comfynb.protocol.types import Call, ImageRef, PromptStatus


def capture(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def frames(name: str) -> list[dict[str, Any]]:
    lines = (CAPTURES / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def exchanges(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``{request, status, ...}`` object anywhere in a capture."""
    if isinstance(node, dict):
        if "request" in node and "status" in node:
            yield node
        else:
            for value in node.values():
                yield from exchanges(value)
    elif isinstance(node, list):
        for value in node:
            yield from exchanges(value)


def route_of(request: dict[str, Any]) -> tuple[str, str]:
    path = urlsplit(request["path"]).path
    while path.startswith("/api/"):
        path = path[len("/api") :]
    return request["method"], path


def read_captured(exchange: dict[str, Any]) -> Any:
    """What the client makes of one captured answer: a parsed value or a typed error."""
    method, path = route_of(exchange["request"])
    status = exchange["status"]
    body = exchange.get("body")
    if status != 200:
        text = exchange.get("body_text") or (json.dumps(body) if body is not None else "")
        job_id = path.rsplit("/", 1)[-1] if path.startswith("/jobs/") else None
        call = Call(method, path, job_id=job_id, submit=(method, path) == ("POST", "/prompt"))
        return parse.error_for(call, status, text)
    if body is None:
        return None  # empty 200 bodies, /view bytes
    if isinstance(body, str) and body.startswith("<dict with"):
        return body  # the capture kept only a summary of this body
    if (method, path) == ("POST", "/prompt"):
        return parse.parse_queued(body)
    if path == "/queue":
        return parse.parse_queue(body)
    if path.startswith("/history"):
        return parse.parse_history(body)
    if path.startswith("/jobs/"):
        return parse.report_from_job(path.rsplit("/", 1)[-1], body)
    if path == "/jobs":
        return [parse.report_from_job(job["id"], job) for job in body["jobs"]]
    if path == "/system_stats":
        return parse.parse_system_stats(body)
    if path == "/upload/image":
        return parse.parse_upload(body)
    return body


ALL_EXCHANGES = [
    pytest.param(exchange, id=f"{path.name}:{i}")
    for path in sorted(CAPTURES.glob("*.json"))
    for i, exchange in enumerate(exchanges(json.loads(path.read_text())))
]


def test_the_captures_hold_many_exchanges() -> None:
    assert len(ALL_EXCHANGES) > 100


@pytest.mark.parametrize("exchange", ALL_EXCHANGES)
def test_every_captured_answer_is_read_without_a_crash(exchange: dict[str, Any]) -> None:
    result = read_captured(exchange)
    if exchange["status"] != 200:
        assert isinstance(result, errors.ServerError)
        assert str(result)


def response(status: int, body: Any = None, *, text: str | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://comfy.test/x")
    if text is not None:
        return httpx.Response(status, text=text, request=request)
    if body is None:
        return httpx.Response(status, request=request)
    return httpx.Response(status, json=body, request=request)


def run_flow(flow: types.Flow[Any], answers: list[httpx.Response | Exception]) -> Any:
    """Drive a flow by hand with canned answers; returns (result, calls made)."""
    calls = [next(flow)]
    try:
        for answer in answers:
            if isinstance(answer, Exception):
                calls.append(flow.throw(answer))
            else:
                calls.append(flow.send(answer))
    except StopIteration as done:
        return done.value, calls
    raise AssertionError(f"the flow wants more answers after {calls}")


# -- POST /prompt ----------------------------------------------------------------------------


def test_queued_prompt_reads_number_and_node_errors() -> None:
    queued = parse.parse_queued(capture("post_prompt_success.json")["body"])
    assert queued == types.QueuedPrompt("7c3c3fae-2b83-4ebd-89cc-6cfe070efd67", 15.0, {})
    front = capture("post_prompt_front_and_number.json")
    assert parse.parse_queued(front["front_true"]["body"]).number == -16
    assert parse.parse_queued(front["number_7.5"]["body"]).number == 7.5
    ids = capture("post_prompt_client_prompt_id.json")
    assert parse.parse_queued(ids["int_prompt_id_12345"]["body"]).prompt_id == "12345"


def test_partially_valid_prompt_keeps_its_node_errors_and_says_them() -> None:
    case = capture("post_prompt_validation_errors.json")["partial_one_output_invalid_accepted"]
    queued = parse.parse_queued(case["body"])
    assert set(queued.node_errors) == {"5"}
    assert queued.problems == [
        "node \"5\" (SaveImage) could not be validated: KeyError '99'; check that its links "
        "point to existing nodes and outputs"
    ]


REJECTIONS = {
    "unknown_node_class": ("invalid_prompt", "NoSuchNode does not exist"),
    "missing_required_input": ("prompt_outputs_failed_validation", 'node "1" (EmptyImage) input "width" is required'),
    "bad_value_type_int_given_string": ("prompt_outputs_failed_validation", "input \"width\" = 'abc' is not a valid INT"),
    "value_below_min": ("prompt_outputs_failed_validation", 'input "width" = 0 is below the minimum 1; set it to at least 1'),
    "value_above_max": ("prompt_outputs_failed_validation", 'input "width" = 99999 is above the maximum 16384'),
    "bad_combo_value_v1_node": ("prompt_outputs_failed_validation", "'no-such-method' is not one of the allowed values ('nearest-exact', 'bilinear'"),
    "bad_combo_value_v3_node": ("prompt_outputs_failed_validation", "'nope' is not one of the allowed values ('normal', 'multiply'"),
    "link_to_missing_node": ("prompt_outputs_failed_validation", 'node "2" (SaveImage) could not be validated: KeyError'),
    "link_bad_output_index": ("prompt_outputs_failed_validation", "IndexError tuple index out of range"),
    "link_type_mismatch_mask_to_image": ("prompt_outputs_failed_validation", 'input "images" takes IMAGE but is linked to node "1" output 0 of type MASK'),
    "node_missing_class_type": ("invalid_prompt", "missing the class_type property"),
    "empty_prompt_object": ("prompt_no_outputs", "has no output node"),
    "no_output_node": ("prompt_no_outputs", "has no output node"),
    "body_without_prompt_key": ("no_prompt", "carried no prompt"),
    "body_is_json_list": ("no_prompt", "carried no prompt"),
    "loadimage_missing_file": ("prompt_outputs_failed_validation", "Invalid image file: does_not_exist.png; for a file input, upload it"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_each_captured_rejection_names_what_to_fix(case: str) -> None:
    answer = capture("post_prompt_validation_errors.json")[case]
    assert answer["status"] == 400
    error = parse.error_for(Call("POST", "/prompt", submit=True), 400, json.dumps(answer["body"]))
    assert isinstance(error, errors.PromptRejected)
    kind, words = REJECTIONS[case]
    assert error.error_type == kind
    assert words in str(error)
    assert error.node_errors == answer["body"]["node_errors"]


NEWER_REJECTIONS = [
    (
        {
            "type": "missing_node_type",
            "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
            "details": "Node ID '#1'",
            "extra_info": {"node_id": "1", "class_type": "NoSuchNode", "node_title": "x"},
        },
        "node \"1\" uses class_type 'NoSuchNode', which the server does not have",
    ),
    (
        {"type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID", "details": "", "extra_info": {}},
        "prompt_id must be a valid UUID; leave prompt_id=None",
    ),
    (
        {"type": "a_type_from_the_future", "message": "Something new", "details": "d", "extra_info": {}},
        "Something new d",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("error", "words"), NEWER_REJECTIONS)
def test_newer_and_unknown_rejections_are_kept_as_they_come(
    error: dict[str, Any], words: str
) -> None:
    body = json.dumps({"error": error, "node_errors": {}})
    rejected = parse.error_for(Call("POST", "/prompt", submit=True), 400, body)
    assert isinstance(rejected, errors.PromptRejected)
    assert rejected.error_type == error["type"]
    assert rejected.error == error
    assert words in str(rejected)


def test_an_unknown_node_error_type_is_described_not_crashed() -> None:
    node_errors = {
        "7": {
            "class_type": "Foo",
            "errors": [{"type": "brand_new", "message": "M", "details": "D"}],
        }
    }
    assert rejections.describe_node_errors(node_errors) == [
        'node "7" (Foo) was refused (brand_new): M; D'
    ]


def test_a_rejection_with_a_non_json_body_is_still_typed() -> None:
    rejected = parse.error_for(Call("POST", "/prompt", submit=True), 400, "<html>proxy</html>")
    assert isinstance(rejected, errors.PromptRejected)
    assert rejected.error_type == "unknown"


def test_500_text_bodies_become_server_failed_with_the_body() -> None:
    answer = capture("post_prompt_validation_errors.json")["invalid_json_body"]
    error = parse.error_for(Call("POST", "/prompt", submit=True), 500, answer["body_text"])
    assert isinstance(error, errors.ServerFailed)
    assert error.status == 500
    assert error.body == "500 Internal Server Error\n\nServer got itself in trouble"


def test_a_404_on_a_job_is_job_not_found_and_elsewhere_unexpected() -> None:
    answer = capture("queue_pending_delete_clear.json")["api_jobs_unknown_id"]
    body = json.dumps(answer["body"])
    assert isinstance(
        parse.error_for(Call("GET", "/api/jobs/x", job_id="x"), 404, body), errors.JobNotFound
    )
    assert isinstance(parse.error_for(Call("GET", "/nope"), 404, ""), errors.UnexpectedResponse)
    assert "Origin" in str(parse.error_for(Call("GET", "/queue"), 403, ""))


# -- jobs and history -------------------------------------------------------------------------


def only_entry(name: str) -> types.HistoryEntry:
    data = capture(name)
    body = data.get("body", data) if "request" in data else data
    (entry,) = parse.parse_history(body).values()
    return entry


def test_history_outcomes_are_told_apart() -> None:
    success = only_entry("history_after_success.json").report
    assert success.status is PromptStatus.COMPLETED
    assert success.outputs == (ImageRef("invert_blur_scale_00002_.png", "", "output", "5"),)
    assert success.started_at is not None and success.ended_at is not None
    assert success.number == 42

    failed = only_entry("history_after_execution_error.json").report
    assert failed.status is PromptStatus.FAILED
    assert failed.error is not None
    assert (failed.error.node_id, failed.error.node_type, failed.error.exception_type) == (
        "3",
        "SaveImage",
        "Exception",
    )
    assert "outside the output folder" in failed.error.message and failed.error.traceback

    for name in ("history_after_interrupt.json", "history_after_interrupt_mid_node.json"):
        interrupted = only_entry(name).report
        assert interrupted.status is PromptStatus.INTERRUPTED
        assert interrupted.server_status == "error" and interrupted.error is None
        assert interrupted.interrupted_at is not None


def test_failed_run_keeps_the_outputs_saved_before_the_error() -> None:
    report = only_entry("history_execution_error_with_partial_outputs.json").report
    assert report.status is PromptStatus.FAILED and report.outputs


def test_cached_rerun_without_client_id_has_no_outputs_but_succeeded() -> None:
    with_id = only_entry("history_cached_rerun_with_client_id.json").report
    without = only_entry("history_cached_rerun_without_client_id.json").report
    assert with_id.status is without.status is PromptStatus.COMPLETED
    assert with_id.outputs and without.outputs == ()
    assert only_entry("history_saveimagewebsocket.json").report.outputs == ()


def test_history_while_running_is_empty() -> None:
    assert parse.parse_history(capture("history_while_running.json")["body"]) == {}


def test_jobs_api_states() -> None:
    def job(name: str) -> types.JobReport:
        body = capture(name)["body"]
        return parse.report_from_job(body["id"], body)

    completed = job("api_jobs_by_id_completed.json")
    assert completed.status is PromptStatus.COMPLETED and completed.outputs[0].node_id == "5"
    failed = job("api_jobs_by_id_failed.json")
    assert failed.status is PromptStatus.FAILED and failed.error and failed.error.node_id == "3"
    assert job("api_jobs_by_id_in_progress.json").status is PromptStatus.RUNNING
    interrupted = job("api_jobs_by_id_interrupted.json")
    assert interrupted.status is PromptStatus.INTERRUPTED and interrupted.interrupted_at == "4"
    pending = capture("queue_pending_delete_clear.json")["api_jobs_by_pending_id"]["body"]
    assert parse.report_from_job(pending["id"], pending).status is PromptStatus.PENDING


def test_failed_without_error_or_messages_is_an_interrupt_and_new_states_are_unknown() -> None:
    assert parse.report_from_job("a", {"status": "failed"}).status is PromptStatus.INTERRUPTED
    future = parse.report_from_job("a", {"status": "cancelled", "shiny": 1})
    assert future.status is PromptStatus.UNKNOWN and future.server_status == "cancelled"


def test_queue_in_run_order() -> None:
    body = capture("queue_pending_delete_clear.json")["get_queue_running_and_pending"]["body"]
    state = parse.parse_queue(body)
    assert len(state.running) == 1 and len(state.pending) >= 2
    numbers = [item.number for item in state.pending]
    assert numbers == sorted(numbers)
    assert state.running[0].prompt_id in state and state.is_running(state.running[0].prompt_id)
    assert "nope" not in state


def test_system_stats_and_upload() -> None:
    stats = parse.parse_system_stats(capture("system_stats.json")["body"])
    assert stats.comfyui_version == "0.8.0" and stats.devices[0].name == "cpu"
    up = parse.parse_upload(capture("upload_image_requests.json")["upload_subfolder"]["body"])
    assert up.as_input == "mydir/probe_upload.png"


def test_a_body_of_the_wrong_shape_is_unexpected_response() -> None:
    with pytest.raises(errors.UnexpectedResponse):
        parse.parse_queue(["not", "an", "object"])
    with pytest.raises(errors.UnexpectedResponse):
        parse.parse_queued({"number": 1})
    with pytest.raises(errors.UnexpectedResponse):
        parse.read_json(response(200, text="<html>"))
    assert parse.read_json(response(200)) is None  # empty 200 bodies are not JSON-decoded


# -- flows ------------------------------------------------------------------------------------


def test_job_flow_on_an_older_server_asks_history_then_queue() -> None:
    running = capture("queue_while_running.json")["body"]
    pid = running["queue_running"][0][1]
    report, calls = run_flow(
        flows.job_flow(pid, jobs_api=False), [response(200, {}), response(200, running)]
    )
    assert [c.path for c in calls] == [f"/history/{pid}", "/queue"]
    assert report.status is PromptStatus.RUNNING


def test_job_flow_unknown_everywhere_is_job_not_found() -> None:
    empty_queue = {"queue_running": [], "queue_pending": []}
    flow = flows.job_flow("gone", jobs_api=False)
    with pytest.raises(errors.JobNotFound):
        run_flow(flow, [response(200, {}), response(200, empty_queue), response(200, {})])


def test_prompt_retry_asks_first_and_never_posts_twice() -> None:
    body = {"prompt": {}, "prompt_id": "p-1", "client_id": "c"}
    flow = flows.queue_prompt_flow(body, jobs_api=True, retry=types.RetryPolicy(seed=0))
    lost = errors.ServerUnreachable("reset")
    arrived = response(200, {"id": "p-1", "status": "pending", "priority": 7})
    queued, calls = run_flow(flow, [lost, arrived])
    assert [(c.method, c.path) for c in calls] == [("POST", "/prompt"), ("GET", "/api/jobs/p-1")]
    assert calls[1].delay > 0
    assert queued == types.QueuedPrompt("p-1", 7.0)


def test_prompt_retry_posts_again_when_it_did_not_arrive() -> None:
    body = {"prompt": {}, "prompt_id": "p-1", "client_id": "c"}
    flow = flows.queue_prompt_flow(body, jobs_api=False, retry=types.RetryPolicy(seed=0))
    empty_queue = response(200, {"queue_running": [], "queue_pending": []})
    ok = response(200, {"prompt_id": "p-1", "number": 3, "node_errors": {}})
    queued, calls = run_flow(
        flow, [errors.ServerTimeout("slow"), empty_queue, response(200, {}), ok]
    )
    assert [c.path for c in calls] == ["/prompt", "/queue", "/history/p-1", "/prompt"]
    assert queued.number == 3


def test_prompt_retry_gives_up_after_the_policy() -> None:
    body = {"prompt": {}, "prompt_id": "p-1"}
    flow = flows.queue_prompt_flow(body, jobs_api=True, retry=types.RetryPolicy(attempts=2, seed=0))
    not_there = response(404, {"error": "Job not found"})
    with pytest.raises(errors.ServerFailed):
        run_flow(
            flow,
            [
                errors.ServerFailed("x", status=500, body=""),
                not_there,
                errors.ServerFailed("y", status=500, body=""),
            ],
        )


def test_retry_policy_is_full_jitter_capped_and_repeatable() -> None:
    policy = types.RetryPolicy(attempts=6, base=0.1, max_delay=0.3, seed=42)
    delays = list(policy.delays())
    assert delays == list(policy.delays())
    assert len(delays) == 5
    assert all(0 <= d <= min(0.3, 0.1 * 2**n) for n, d in enumerate(delays))
    assert list(types.RetryPolicy(attempts=1).delays()) == []


def test_new_prompt_ids_are_canonical_uuid4() -> None:
    import uuid

    pid = flows.new_prompt_id()
    assert str(uuid.UUID(pid)) == pid and uuid.UUID(pid).version == 4


# -- WebSocket frames -------------------------------------------------------------------------

WS_CAPTURES = sorted(p.name for p in CAPTURES.glob("ws_*.jsonl"))


@pytest.mark.parametrize("name", WS_CAPTURES)
def test_every_captured_text_frame_becomes_a_known_event(name: str) -> None:
    for frame in frames(name):
        if frame.get("frame") == "text":
            event = events.parse_message(frame["msg"])
            if frame["msg"]["type"] == "feature_flags":
                assert isinstance(event, events.Unknown)
            else:
                assert not isinstance(event, events.Unknown), frame


def test_success_sequence_reads_as_typed_events() -> None:
    parsed = [
        events.parse_message(f["msg"])
        for f in frames("ws_success.jsonl")
        if f.get("frame") == "text"
    ]
    kinds = [type(e).__name__ for e in parsed]
    assert kinds[:4] == ["Status", "Status", "Status", "ExecutionStart"]
    assert kinds[-3:] == ["ExecutionSuccess", "Status", "Executing"]
    executed = next(e for e in parsed if isinstance(e, events.Executed))
    assert executed.images == (ImageRef("invert_blur_scale_00002_.png", "", "output", "5"),)
    last = parsed[-1]
    assert isinstance(last, events.Executing) and last.node is None and last.prompt_id
    assert isinstance(parsed[0], events.Status) and parsed[0].sid == "cap-success"


def test_error_and_interrupt_frames() -> None:
    error = next(
        events.parse_message(f["msg"]) for f in frames("ws_execution_error.jsonl")
        if f.get("msg", {}).get("type") == "execution_error"
    )  # fmt: skip
    assert isinstance(error, events.ExecutionError)
    assert error.error.node_type == "SaveImage" and error.executed == ("1", "2")
    interrupted = next(
        events.parse_message(f["msg"]) for f in frames("ws_interrupt.jsonl")
        if f.get("msg", {}).get("type") == "execution_interrupted"
    )  # fmt: skip
    assert isinstance(interrupted, events.ExecutionInterrupted) and interrupted.node_id == "4"


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, "PNG")
    return out.getvalue()


def test_binary_preview_frames_in_both_formats() -> None:
    png = tiny_png()
    legacy = events.parse_binary(struct.pack(">II", 1, 2) + png)
    assert isinstance(legacy, events.PreviewImage)
    assert (legacy.format, legacy.image, legacy.metadata) == ("PNG", png, {})

    captured = next(
        f
        for f in frames("ws_progress_saveimagewebsocket_preview_metadata.jsonl")
        if f.get("frame") == "binary"
    )
    metadata = json.dumps(captured["binary"]["metadata"]).encode()
    assert bytes.fromhex(captured["binary"]["first_16_bytes_hex"])[:4] == struct.pack(">I", 4)
    modern = events.parse_binary(struct.pack(">II", 4, len(metadata)) + metadata + png)
    assert isinstance(modern, events.PreviewImage)
    assert modern.format == "PNG" and modern.image == png and modern.node_id == "3"
    assert modern.prompt_id == captured["binary"]["metadata"]["prompt_id"]
    with Image.open(io.BytesIO(modern.image)) as image:
        assert image.size == (4, 4)


def test_unknown_frames_are_kept() -> None:
    assert events.parse_binary(struct.pack(">II", 9, 0) + b"x") == events.Unknown(
        type="binary:9", data=struct.pack(">II", 9, 0) + b"x"
    )
    assert events.parse_frame("not json") == events.Unknown(type="text", data="not json")
    odd = events.parse_message({"type": "new_thing", "data": {"prompt_id": "p", "k": 1}})
    assert odd == events.Unknown(prompt_id="p", type="new_thing", data={"prompt_id": "p", "k": 1})
    assert isinstance(events.parse_message({"type": "status"}), events.Unknown)


def test_terminal_events_synthesized_from_reports() -> None:
    done = events.terminal_from_report(types.JobReport("p", PromptStatus.COMPLETED))
    assert done == events.ExecutionSuccess(prompt_id="p", synthesized=True)
    stopped = events.terminal_from_report(
        types.JobReport("p", PromptStatus.INTERRUPTED, interrupted_at="4")
    )
    assert (
        isinstance(stopped, events.ExecutionInterrupted)
        and stopped.node_id == "4"
        and stopped.synthesized
    )
    assert events.terminal_from_report(types.JobReport("p", PromptStatus.RUNNING)) is None
    lost = events.terminal_for_lost_job("p")
    assert lost.error.exception_type == "JobNotFound" and lost.synthesized


def test_a_long_combo_without_input_config_points_to_object_info() -> None:
    error = {
        "type": "value_not_in_list",
        "details": "sampler_name: 'nope' not in (list of length 44)",
        "extra_info": {
            "input_name": "sampler_name",
            "input_config": None,
            "received_value": "nope",
        },
    }
    assert rejections.describe_node_error("3", "KSampler", error) == (
        'node "3" (KSampler) input "sampler_name" = \'nope\' is not one of the allowed values; '
        'pick one of those that client.object_info("KSampler") lists for it'
    )
