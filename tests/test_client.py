"""Client and AsyncClient against the simulator over loopback: every method, error and fault.

Each test runs twice, through ``Client`` and through ``AsyncClient`` (the ``make_client`` fixture).
"""

from __future__ import annotations

import inspect
import io
import logging
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import trivial_prompt as _trivial_prompt
from PIL import Image
from sim_helpers import wait_for

from comfynb import demo, errors
from comfynb.client import AsyncClient, Client, RetryPolicy
from comfynb.protocol.types import ImageRef, PromptStatus
from comfynb.simulator import Simulator

MakeClient = Callable[..., Any]


_colors = iter(range(1, 1 << 24))


def trivial_prompt(prefix: str = "trivial", size: int = 64) -> dict[str, Any]:
    """The trivial prompt with a color of its own: no two prompts share a cached node."""
    prompt = _trivial_prompt(prefix, size)
    prompt["1"]["inputs"]["color"] = next(_colors)
    return prompt


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy, failing after ``timeout`` s."""
    return wait_for(predicate, timeout=timeout)


def finished(client: Any, prompt_id: str) -> Any:
    """The job's report once it is terminal."""
    return wait_until(lambda: (r := client.job(prompt_id)).status.is_terminal and r)


def png_bytes(size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 20, 90)).save(out, "PNG")
    return out.getvalue()


# -- the happy paths --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.33.0", "0.8.0"])
def test_queue_follow_and_download(
    _sim_server: Simulator, make_client: MakeClient, tmp_path: Path, version: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    queued = client.queue_prompt(trivial_prompt("hello"))
    assert uuid.UUID(queued.prompt_id).version == 4 and queued.node_errors == {}
    report = finished(client, queued.prompt_id)
    assert report.status is PromptStatus.COMPLETED
    (image,) = report.outputs
    assert image.filename.startswith("hello_") and image.node_id == "2"
    path = client.download(image, tmp_path)
    assert path == tmp_path / image.filename
    with Image.open(path) as png:
        assert png.size == (64, 64)
    entry = client.history()[queued.prompt_id]
    assert entry.extra_data["client_id"] == client.client_id  # always sent
    assert [row["posts"] for row in _sim_server.prompts()] == [1]


def test_older_server_without_jobs_api_uses_history_and_queue(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    client._jobs_api = False  # as a server without /api/jobs would make the probe decide
    sim.configure(node_seconds=0.2)
    first = client.queue_prompt(trivial_prompt("a"))
    second = client.queue_prompt(trivial_prompt("b"))
    wait_until(lambda: client.job(first.prompt_id).status is PromptStatus.RUNNING)
    assert client.job(second.prompt_id).status is PromptStatus.PENDING
    sim.configure(node_seconds=0.0)
    assert finished(client, second.prompt_id).status is PromptStatus.COMPLETED
    with pytest.raises(errors.JobNotFound):
        client.job(str(uuid.uuid4()))


def test_own_prompt_id_front_and_extra_data(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    mine = str(uuid.uuid4())
    first = client.queue_prompt(trivial_prompt())
    queued = client.queue_prompt(
        trivial_prompt(), prompt_id=mine, front=True, extra_data={"my_tag": "x"}
    )
    assert queued.prompt_id == mine and queued.number < 0 <= first.number
    finished(client, mine)
    assert client.history()[mine].extra_data["my_tag"] == "x"


def test_queue_delete_clear_and_interrupt(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.configure(node_seconds=0.5)
    running, a, b, c = (client.queue_prompt(trivial_prompt(str(i))) for i in range(4))
    wait_until(lambda: client.queue().is_running(running.prompt_id))
    state = client.queue()
    assert [item.prompt_id for item in state.pending] == [a.prompt_id, b.prompt_id, c.prompt_id]
    assert client.job(a.prompt_id).status is PromptStatus.PENDING
    client.delete_from_queue([a.prompt_id])
    with pytest.raises(errors.JobNotFound):
        client.job(a.prompt_id)
    client.clear_queue()
    assert client.queue().pending == ()
    client.interrupt(running.prompt_id)
    report = finished(client, running.prompt_id)
    assert report.status is PromptStatus.INTERRUPTED and report.error is None


def test_failed_job_carries_the_error(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.set_faults(fail_node={"node_id": "2", "message": "boom", "exception_type": "RuntimeError"})
    queued = client.queue_prompt(trivial_prompt())
    report = finished(client, queued.prompt_id)
    assert report.status is PromptStatus.FAILED and report.error is not None
    assert (report.error.node_id, report.error.exception_type) == ("2", "RuntimeError")
    assert "boom" in report.error.message


def test_history_paging(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    ids = [client.queue_prompt(trivial_prompt(f"h{i}")).prompt_id for i in range(4)]
    finished(client, ids[-1])
    assert list(client.history()) == ids
    assert all(e.report.status is PromptStatus.COMPLETED for e in client.history().values())
    assert list(client.history(max_items=2)) == ids[2:]
    assert list(client.history(max_items=2, offset=1)) == ids[1:3]


def test_upload_then_load_image(sim: Simulator, make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(sim.url)
    source = tmp_path / "ref.png"
    source.write_bytes(png_bytes())
    uploaded = client.upload_image(source, subfolder="refs")
    assert (uploaded.name, uploaded.subfolder, uploaded.type) == ("ref.png", "refs", "input")
    assert client.upload_image(source.read_bytes(), name="ref.png", subfolder="refs") == uploaded
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded.as_input}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    }
    report = finished(client, client.queue_prompt(prompt).prompt_id)
    assert report.status is PromptStatus.COMPLETED
    with Image.open(client.download(report.outputs[0], tmp_path / "out")) as image:
        assert image.size == (16, 16)


@pytest.mark.parametrize("version", ["0.33.0", "0.8.0"])
def test_object_info_system_stats_and_free(
    _sim_server: Simulator, make_client: MakeClient, version: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    width = client.object_info("EmptyImage")["EmptyImage"]["input"]["required"]["width"]
    assert width[0] == "INT" and width[1]["min"] == 1
    assert client.object_info("NoSuchNode") == {}
    assert "SaveImage" in client.object_info()
    stats = client.system_stats()
    assert stats.comfyui_version == version and stats.devices
    client.free(unload_models=True, free_memory=True)  # an empty 200: nothing to decode


# -- typed errors -----------------------------------------------------------------------------


def test_rejected_prompt_names_node_input_and_fix(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    prompt = trivial_prompt()
    prompt["1"]["inputs"]["width"] = 0
    with pytest.raises(errors.PromptRejected) as caught:
        client.queue_prompt(prompt)
    assert 'node "1" (EmptyImage) input "width" = 0 is below the minimum 1' in str(caught.value)
    assert caught.value.error_type == "prompt_outputs_failed_validation"
    assert set(caught.value.node_errors) == {"1"}
    assert sim.prompts() == []  # nothing queued, not retried


@pytest.mark.parametrize(
    ("version", "error_type"), [("0.33.0", "missing_node_type"), ("0.8.0", "invalid_prompt")]
)
def test_unknown_class_per_server_version(
    _sim_server: Simulator, make_client: MakeClient, version: str, error_type: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    prompt = trivial_prompt()
    prompt["1"]["class_type"] = "NoSuchNode"
    with pytest.raises(errors.PromptRejected) as caught:
        client.queue_prompt(prompt)
    assert caught.value.error_type == error_type
    assert "NoSuchNode" in str(caught.value)


def test_newer_server_refuses_a_prompt_id_that_is_not_a_uuid(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    with pytest.raises(errors.PromptRejected) as caught:
        client.queue_prompt(trivial_prompt(), prompt_id="my-own-id")
    assert caught.value.error_type == "invalid_prompt_id"
    assert "leave prompt_id=None" in str(caught.value)


def test_unknown_job_is_job_not_found(sim: Simulator, make_client: MakeClient) -> None:
    with pytest.raises(errors.JobNotFound) as caught:
        make_client(sim.url).job("no-such-id")
    assert caught.value.prompt_id == "no-such-id"


def test_a_foreign_origin_header_is_refused_with_advice(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url, headers={"Origin": "http://127.0.0.1:8888"})
    with pytest.raises(errors.UnexpectedResponse, match="Origin"):
        client.queue()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_server_fails_fast_and_typed(make_client: MakeClient) -> None:
    client = make_client(closed_port_url())
    started = time.monotonic()
    with pytest.raises(errors.ServerUnreachable, match="is ComfyUI running there"):
        client.system_stats()
    with pytest.raises(errors.ServerUnreachable):
        client.queue_prompt(trivial_prompt())
    assert time.monotonic() - started < 5


# -- faults -----------------------------------------------------------------------------------


def test_transient_500s_and_resets_are_retried_to_success(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    sim.set_faults(http_500_next=2)
    assert client.queue().pending == ()
    sim.set_faults(reset_next=2)
    assert client.system_stats().comfyui_version == "0.33.0"


def test_permanent_500s_end_in_server_failed_with_the_body(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    sim.set_faults(http_500_rate=1.0)
    started = time.monotonic()
    with pytest.raises(errors.ServerFailed) as caught:
        client.history()
    assert caught.value.status == 500 and "Server got itself in trouble" in caught.value.body
    assert time.monotonic() - started < 5


def test_slow_answers_end_in_server_timeout(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url, timeout=0.1, retry=RetryPolicy(attempts=2, base=0.01, seed=0))
    sim.set_faults(slow_seconds=0.5, slow_next=0)
    started = time.monotonic()
    with pytest.raises(errors.ServerTimeout, match=r"did not answer within 0\.1 s"):
        client.queue()
    assert time.monotonic() - started < 3


def test_a_slow_answer_once_is_retried(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url, timeout=0.2)
    sim.set_faults(slow_seconds=0.5, slow_next=1)
    assert client.queue().running == ()


@pytest.mark.parametrize("version", ["0.33.0", "0.8.0"])
def test_prompt_retried_after_a_lost_answer_is_queued_once(
    _sim_server: Simulator, make_client: MakeClient, version: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    # the server queues the prompt, then the connection drops before the answer
    _sim_server.set_faults(reset_next=1, routes=["/prompt"])
    queued = client.queue_prompt(trivial_prompt())
    assert [(row["prompt_id"], row["posts"]) for row in _sim_server.prompts()] == [
        (queued.prompt_id, 1)
    ]
    assert finished(client, queued.prompt_id).status is PromptStatus.COMPLETED


def test_prompt_whose_answer_was_lost_as_the_server_restarted_is_queued_once_per_life(
    sim: Simulator,
) -> None:
    """The flake of the worker's 500-job test, step by step (one flow for both clients).

    The server queues the prompt and the connection drops before the answer; the server
    restarts (forgetting it) before the client's check: the check finds nothing, so the retry
    posts the same prompt_id again. The new life of the server gets it once, and runs it once.
    """
    import threading

    sim.set_faults(reset_next=1, routes=["/prompt"])
    # seed 0: the one pause before the retry is 0.84 s, time enough to restart the server
    with Client(sim.url, retry=RetryPolicy(attempts=2, base=1.0, seed=0)) as client:
        queued: list[Any] = []
        posting = threading.Thread(
            target=lambda: queued.append(client.queue_prompt(trivial_prompt()))
        )
        posting.start()
        try:
            wait_for(lambda: sim.prompts(), timeout=10)
            sim.restart()
        finally:
            posting.join(timeout=30)
        assert len(queued) == 1
        prompt_id = queued[0].prompt_id
        rows = [(row["prompt_id"], row["posts"], row["lives"]) for row in sim.prompts()]
        assert rows == [(prompt_id, 2, 2)]
        assert finished(client, prompt_id).status is PromptStatus.COMPLETED
        assert list(client.history()) == [prompt_id]


def test_prompt_retried_after_a_500_is_posted_again(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    sim.set_faults(http_500_next=1, routes=["/prompt"])  # refused before queueing
    queued = client.queue_prompt(trivial_prompt())
    assert [(row["prompt_id"], row["posts"]) for row in sim.prompts()] == [(queued.prompt_id, 1)]


def test_truncated_download_is_corrupt_and_leaves_nothing(
    sim: Simulator, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client(sim.url)
    report = finished(client, client.queue_prompt(trivial_prompt(size=256)).prompt_id)
    sim.set_faults(truncate_view_next=1)
    dest = tmp_path / "out"
    with pytest.raises(errors.CorruptImage):
        client.download(report.outputs[0], dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    client.download(report.outputs[0], dest)  # the next answer is whole
    assert [p.name for p in dest.iterdir()] == [report.outputs[0].filename]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nul"])
def test_hostile_output_names_are_never_written(
    sim: Simulator, make_client: MakeClient, tmp_path: Path, kind: str
) -> None:
    client = make_client(sim.url)
    sim.set_faults(hostile_names=kind)
    report = finished(client, client.queue_prompt(trivial_prompt()).prompt_id)
    dest = tmp_path / "deep" / "out"
    with pytest.raises(errors.UnsafePath):
        client.download(report.outputs[0], dest)
    assert list(tmp_path.rglob("*")) == []
    assert not Path("/tmp/comfynb-evil.png").exists()


def test_restart_forgets_jobs(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    queued = client.queue_prompt(trivial_prompt())
    finished(client, queued.prompt_id)
    sim.restart()
    with pytest.raises(errors.JobNotFound):
        client.job(queued.prompt_id)
    assert client.history() == {}


# -- auth and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"token": "tok-SECRET-1"},
        {"basic_auth": ("ann", "pw-SECRET-2")},
        {"headers": {"X-Api-Key": "key-SECRET-3"}},
    ],
)
def test_secrets_stay_out_of_repr_and_logs(
    sim: Simulator,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(sim.url, **options)
    report = finished(client, client.queue_prompt(trivial_prompt()).prompt_id)
    assert report.status is PromptStatus.COMPLETED
    with client.events([report.prompt_id]) as stream:
        assert [type(e).__name__ for e in stream][-1] == "ExecutionSuccess"
    shown = repr(client) + str(client) + caplog.text
    assert "SECRET" not in shown and caplog.records  # httpx did log the requests


def test_password_in_the_url_becomes_basic_auth(sim: Simulator) -> None:
    url = sim.url.replace("http://", "http://ann:pw-SECRET@")
    with Client(url) as client:
        assert client.url == sim.url and "SECRET" not in repr(client)
        assert client.queue().pending == ()


def test_image_ref_download_path_keeps_the_subfolder(
    sim: Simulator, make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client(sim.url)
    prompt = trivial_prompt("sub/deep")
    report = finished(client, client.queue_prompt(prompt).prompt_id)
    (ref,) = report.outputs
    assert ref.subfolder == "sub"
    assert client.download(ref, tmp_path) == tmp_path / "sub" / ref.filename
    with pytest.raises(errors.UnexpectedResponse):
        client.download(ImageRef("missing.png"), tmp_path)


def test_prompt_retry_on_an_older_server_asks_queue_and_history(
    legacy_sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(legacy_sim.url)
    client._jobs_api = False  # as if the probe had found no /api/jobs
    legacy_sim.set_faults(reset_next=1, routes=["/prompt"])
    queued = client.queue_prompt(trivial_prompt())
    assert [(row["prompt_id"], row["posts"]) for row in legacy_sim.prompts()] == [
        (queued.prompt_id, 1)
    ]


def test_random_500s_and_resets_never_lose_or_double_a_prompt(
    sim: Simulator, make_client: MakeClient
) -> None:
    patient = RetryPolicy(attempts=12, base=0.001, max_delay=0.01, seed=0)
    client = make_client(sim.url, retry=patient)
    sim.set_faults(seed=7, http_500_rate=0.2, reset_rate=0.1)
    ids = [client.queue_prompt(trivial_prompt(f"chaos{i}")).prompt_id for i in range(10)]
    reports = [finished(client, prompt_id) for prompt_id in ids]
    sim.set_faults()
    assert {report.status for report in reports} == {PromptStatus.COMPLETED}
    posts = {row["prompt_id"]: row["posts"] for row in sim.prompts()}
    assert posts == dict.fromkeys(ids, 1)


def test_both_clients_have_the_same_methods_and_parameters() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
        return {name: inspect.signature(getattr(cls, name)) for name in names}

    sync, both = methods(Client), methods(AsyncClient)
    assert set(sync) - {"close"} == set(both) - {"aclose"}
    for name in set(sync) - {"close"}:
        assert sync[name].parameters == both[name].parameters, name
        if name != "events":  # events() returns an async iterator, not a coroutine
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def txt2img(steps: int, sampler: str = "euler") -> dict[str, Any]:
    """ComfyUI's default txt2img graph, as the simulator runs it."""
    return demo.txt2img(1, steps=steps, sampler=sampler, size=64)


def test_rejections_of_the_default_graph_read_as_advice(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    with pytest.raises(errors.PromptRejected) as caught:
        client.queue_prompt(txt2img(steps=0, sampler="no-such-sampler"))
    message = str(caught.value)
    assert 'node "3" (KSampler) input "steps" = 0 is below the minimum 1; set it to at least 1' in (
        message
    )
    assert (
        "input \"sampler_name\" = 'no-such-sampler' is not one of the allowed values; pick one "
        'of those that client.object_info("KSampler") lists for it'
    ) in message
    report = finished(client, client.queue_prompt(txt2img(steps=3)).prompt_id)
    assert report.status is PromptStatus.COMPLETED and report.outputs[0].node_id == "9"
