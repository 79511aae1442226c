"""The event streams against the simulator over loopback, through both clients.

Covers the message order of each outcome, binary previews, following and filtering, and the
reconnect faults: a dropped socket and a server restart never lose the end of a followed job.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import trivial_prompt as _trivial_prompt
from PIL import Image

from comfynb.errors import ServerUnreachable
from comfynb.protocol import events as events
from comfynb.protocol.types import PromptStatus, RetryPolicy
from comfynb.simulator import Simulator

MakeClient = Callable[..., Any]

_colors = iter(range(1, 1 << 24))


def trivial_prompt(prefix: str = "ev") -> dict[str, Any]:
    """The trivial prompt with a color of its own: no two prompts share a cached node."""
    prompt = _trivial_prompt(prefix)
    prompt["1"]["inputs"]["color"] = next(_colors)
    return prompt


def run_and_collect(client: Any, prompt: dict[str, Any]) -> tuple[str, list[events.Event]]:
    """Open the stream, queue ``prompt``, follow it to its end; its id and every event."""
    with client.events() as stream:
        queued = client.queue_prompt(prompt)
        stream.follow(queued.prompt_id)
        return queued.prompt_id, list(stream)


def kinds(seen: list[events.Event]) -> list[str]:
    return [
        type(e).__name__ for e in seen if not isinstance(e, events.Status | events.ProgressState)
    ]


@pytest.mark.parametrize("version", ["0.33.0", "0.8.0"])
def test_success_in_the_real_order(
    _sim_server: Simulator, make_client: MakeClient, version: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    prompt_id, seen = run_and_collect(client, trivial_prompt())
    assert kinds(seen) == [
        "ExecutionStart",
        "ExecutionCached",
        "Executing",
        "Executing",
        "Executed",
        "ExecutionSuccess",
    ]
    assert all(e.prompt_id in (None, prompt_id) for e in seen)
    executed = next(e for e in seen if isinstance(e, events.Executed))
    assert executed.images == client.job(prompt_id).outputs
    end = seen[-1]
    assert isinstance(end, events.ExecutionSuccess) and not end.synthesized


def test_cached_rerun_replays_outputs(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    prompt = trivial_prompt()
    run_and_collect(client, prompt)
    _, seen = run_and_collect(client, prompt)
    assert kinds(seen) == ["ExecutionStart", "ExecutionCached", "Executed", "ExecutionSuccess"]
    cached = next(e for e in seen if isinstance(e, events.ExecutionCached))
    assert set(cached.nodes) == {"1", "2"}


def test_execution_error_event(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.set_faults(fail_node={"node_id": "2", "message": "boom", "exception_type": "RuntimeError"})
    _, seen = run_and_collect(client, trivial_prompt())
    end = seen[-1]
    assert isinstance(end, events.ExecutionError) and not end.synthesized
    assert (end.error.node_id, end.error.exception_type, end.error.message) == (
        "2",
        "RuntimeError",
        "boom",
    )


def test_interrupt_event(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.configure(node_seconds=0.3)
    with client.events() as stream:
        queued = client.queue_prompt(trivial_prompt())
        stream.follow(queued.prompt_id)
        for event in stream:
            if isinstance(event, events.Executing) and event.node is not None:
                client.interrupt()
        end = event
    assert isinstance(end, events.ExecutionInterrupted) and not end.synthesized
    assert client.job(queued.prompt_id).status is PromptStatus.INTERRUPTED


def test_progress_and_preview_images(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": next(_colors)},
        },
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id, seen = run_and_collect(client, prompt)
    ticks = [(e.value, e.max) for e in seen if isinstance(e, events.Progress)]
    assert ticks == [(0, 3), (1, 3), (2, 3)]
    previews = [e for e in seen if isinstance(e, events.PreviewImage)]
    assert len(previews) == 3
    for preview in previews:  # the metadata format, which the stream asks for
        assert preview.format == "PNG" and preview.prompt_id == prompt_id
        assert preview.node_id == "2" and preview.metadata["image_type"] == "image/png"
        with Image.open(io.BytesIO(preview.image)) as image:
            assert image.size == (32, 24)


def test_following_filters_other_jobs(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    with client.events() as stream:
        other = client.queue_prompt(trivial_prompt("other"))
        mine = client.queue_prompt(trivial_prompt("mine"))
        stream.follow(mine.prompt_id)
        seen = list(stream)
    assert {e.prompt_id for e in seen} <= {None, mine.prompt_id}
    assert other.prompt_id != mine.prompt_id


def test_following_a_finished_job_ends_at_once_with_a_synthesized_end(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    prompt_id, _ = run_and_collect(client, trivial_prompt())
    with client.events([prompt_id]) as stream:
        seen = list(stream)
    (end,) = seen
    assert isinstance(end, events.ExecutionSuccess) and end.synthesized
    assert end.prompt_id == prompt_id


@pytest.mark.parametrize("version", ["0.33.0", "0.8.0"])
def test_a_dropped_socket_still_ends_the_job(
    _sim_server: Simulator, make_client: MakeClient, version: str
) -> None:
    _sim_server.reset(version=version)
    client = make_client(_sim_server.url)
    _sim_server.configure(node_seconds=0.05)
    _sim_server.set_faults(ws_drop_next=1)
    with client.events() as stream:
        queued = client.queue_prompt(trivial_prompt())
        stream.follow(queued.prompt_id)
        seen = list(stream)
        assert stream.reconnects == 1
    ends = [e for e in seen if isinstance(e, events.TERMINAL)]
    assert len(ends) == 1 and isinstance(ends[0], events.ExecutionSuccess)
    assert client.job(queued.prompt_id).status is PromptStatus.COMPLETED


def test_a_reconnect_keeps_receiving_the_next_jobs(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.set_faults(ws_drop_next=1)
    with client.events() as stream:
        first = client.queue_prompt(trivial_prompt("first"))
        stream.follow(first.prompt_id)
        list(stream)
    with client.events() as stream:  # the same clientId after the old socket closed fully
        second = client.queue_prompt(trivial_prompt("second"))
        stream.follow(second.prompt_id)
        seen = list(stream)
    assert "Executed" in kinds(seen)  # real messages, not only a synthesized end
    assert isinstance(seen[-1], events.ExecutionSuccess) and not seen[-1].synthesized


def test_a_restart_mid_job_ends_it_as_lost(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    sim.configure(node_seconds=0.3)
    with client.events() as stream:
        queued = client.queue_prompt(trivial_prompt())
        stream.follow(queued.prompt_id)
        for event in stream:
            if isinstance(event, events.ExecutionStart):
                sim.restart()
        end = event
    assert isinstance(end, events.ExecutionError) and end.synthesized
    assert end.error.exception_type == "JobNotFound"
    assert stream.reconnects >= 1


def test_a_silent_socket_is_caught_up_by_polling(sim: Simulator, make_client: MakeClient) -> None:
    client = make_client(sim.url)
    # a prompt queued under another client_id: this socket hears nothing of it
    other = make_client(sim.url)
    queued = other.queue_prompt(trivial_prompt())
    with client.events(poll_interval=0.05) as stream:
        stream.follow(queued.prompt_id)
        seen = list(stream)
    assert isinstance(seen[-1], events.ExecutionSuccess) and seen[-1].synthesized


def test_a_drop_mid_job_keeps_hearing_it_on_the_same_client_id(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    sim.configure(node_seconds=0.5)  # still running when the stream is back
    sim.set_faults(ws_drop_next=1)
    with client.events() as stream:
        queued = client.queue_prompt(trivial_prompt())
        stream.follow(queued.prompt_id)
        seen = list(stream)
        assert stream.reconnects == 1
    assert "Executed" in kinds(seen)  # heard after the reconnect, under the same clientId
    assert isinstance(seen[-1], events.ExecutionSuccess) and not seen[-1].synthesized


def test_an_unreachable_websocket_ends_in_a_typed_error(make_client: MakeClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = make_client(url)
    started = time.monotonic()
    fast = RetryPolicy(attempts=3, base=0.01, seed=0)
    with pytest.raises(ServerUnreachable, match="WebSocket"), client.events(reconnect=fast):
        pass
    assert time.monotonic() - started < 3


def test_a_loop_left_early_closes_a_stream_that_no_with_owns(
    sim: Simulator, make_client: MakeClient
) -> None:
    client = make_client(sim.url)
    queued = client.queue_prompt(trivial_prompt())
    stream = client.events([queued.prompt_id])
    for _ in stream:
        break
    assert stream.closed
    with client.events() as owned:
        second = client.queue_prompt(trivial_prompt())
        owned.follow(second.prompt_id)
        for _ in owned:
            break
        assert not owned.closed  # the with block owns it: the next loop goes on
        assert isinstance(list(owned)[-1], events.ExecutionSuccess)
    assert owned.closed


def test_two_streams_on_one_client_id_both_end_the_job(
    sim: Simulator, make_client: MakeClient
) -> None:
    # the second socket with the same clientId replaces the first, which hears nothing more;
    # polling over HTTP still ends the job on the deaf one. The one that hears polls only
    # after 30 silent s: the server writes its history before it sends execution_success, and
    # a poll in between (a 0.1 s silence, on a loaded machine) ended it first, synthesized.
    client = make_client(sim.url)
    sim.configure(node_seconds=0.05)
    with client.events(poll_interval=0.1) as first, client.events(poll_interval=30) as second:
        queued = client.queue_prompt(trivial_prompt())
        first.follow(queued.prompt_id)
        second.follow(queued.prompt_id)
        heard = list(second)
        deaf = list(first)
    assert isinstance(heard[-1], events.ExecutionSuccess) and not heard[-1].synthesized
    assert isinstance(deaf[-1], events.ExecutionSuccess) and deaf[-1].synthesized
