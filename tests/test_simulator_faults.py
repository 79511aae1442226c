"""The simulator's faults, restart, reset, prompt log and 0.33.0 differences."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from conftest import trivial_prompt
from sim_helpers import (
    HTTP,
    history_of,
    post_prompt,
    recorder,
    release,
    start_blocker,
    wait_for,
)

from comfynb.simulator import Simulator
from comfynb.simulator.faults import Faults, parse_fault_args

INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"


# -- HTTP faults ---------------------------------------------------------------------------------


def test_http_500_next_only_on_chosen_routes(sim: Simulator) -> None:
    active = sim.set_faults(http_500_next=2, routes=["/prompt"])
    assert active == {"http_500_next": 2, "routes": ["/prompt"]}
    assert HTTP.get(f"{sim.url}/queue").status_code == 200  # another route: untouched
    for path in ("/prompt", "/api/prompt"):
        response = HTTP.get(sim.url + path)
        assert response.status_code == 500 and response.text == INTERNAL_ERROR
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert HTTP.get(f"{sim.url}/prompt").status_code == 200
    assert HTTP.get(f"{sim.url}/_sim/faults").json()["http_500_next"] == 0


def test_http_500_before_handling_queues_nothing(sim: Simulator) -> None:
    sim.set_faults(http_500_next=1)
    assert post_prompt(sim, trivial_prompt()).status_code == 500
    assert sim.prompts() == []


def test_http_500_rate_is_deterministic_under_a_seed(sim: Simulator) -> None:
    def pattern() -> list[int]:
        HTTP.post(f"{sim.url}/_sim/faults", json={"http_500_rate": 0.5, "seed": 7})
        return [HTTP.get(f"{sim.url}/prompt").status_code for _ in range(20)]

    first, second = pattern(), pattern()
    assert first == second
    assert {200, 500} == set(first)


def test_reset_next_closes_the_connection_after_handling(sim: Simulator) -> None:
    sim.set_faults(reset_next=1, routes=["/prompt"])
    prompt_id = str(uuid.uuid4())
    with httpx.Client() as client, pytest.raises(httpx.TransportError):
        client.post(f"{sim.url}/prompt", json={"prompt": trivial_prompt(), "prompt_id": prompt_id})
    # The prompt was queued although the answer was lost: the reason to ask before retrying.
    assert [row["prompt_id"] for row in sim.prompts()] == [prompt_id]
    assert history_of(sim, prompt_id)["status"]["status_str"] == "success"
    with httpx.Client() as client:
        assert client.get(f"{sim.url}/prompt").status_code == 200


def test_slow_next_delays_answers(sim: Simulator) -> None:
    sim.set_faults(slow_seconds=0.2, slow_next=1)
    with httpx.Client(timeout=0.05) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{sim.url}/queue")
        assert client.get(f"{sim.url}/queue").status_code == 200


def test_sim_routes_are_never_faulted(sim: Simulator) -> None:
    sim.set_faults(http_500_rate=1.0)
    assert HTTP.get(f"{sim.url}/_sim/prompts").json() == {"prompts": []}
    assert HTTP.post(f"{sim.url}/_sim/faults", json={}).json() == {}
    assert HTTP.get(f"{sim.url}/queue").status_code == 200


def test_unknown_fault_key_is_refused(sim: Simulator) -> None:
    response = HTTP.post(f"{sim.url}/_sim/faults", json={"http_500_sometimes": 1})
    assert response.status_code == 400 and "http_500_sometimes" in response.json()["error"]
    with pytest.raises(ValueError, match="unknown fault"):
        sim.set_faults(nope=1)


def test_fault_args_parse() -> None:
    parsed = parse_fault_args(["http_500_rate=0.1", 'routes=["/prompt"]', "hostile_names=nul"])
    assert parsed == {"http_500_rate": 0.1, "routes": ["/prompt"], "hostile_names": "nul"}
    assert Faults().set(parsed)["hostile_next"] == 1
    with pytest.raises(ValueError):
        parse_fault_args(["http_500_rate"])


# -- engine faults ------------------------------------------------------------------------------


def test_truncated_view(sim: Simulator) -> None:
    prompt_id = post_prompt(sim, trivial_prompt()).json()["prompt_id"]
    name = history_of(sim, prompt_id)["outputs"]["2"]["images"][0]["filename"]
    whole = (sim.root / "output" / name).read_bytes()
    sim.set_faults(truncate_view_next=1)
    cut = HTTP.get(f"{sim.url}/view", params={"filename": name})
    assert cut.status_code == 200 and cut.content == whole[: len(whole) // 2]
    assert int(cut.headers["content-length"]) == len(whole) // 2
    assert HTTP.get(f"{sim.url}/view", params={"filename": name}).content == whole


def test_fail_node(sim: Simulator) -> None:
    sim.set_faults(fail_node={"node_id": "2", "message": "boom", "exception_type": "RuntimeError"})
    with recorder(sim, "c") as ws:
        failed = post_prompt(sim, trivial_prompt(), client_id="c").json()["prompt_id"]
        messages = ws.until_idle(failed)
        error = next(m.data for m in messages if m.kind == "execution_error")
        assert error["node_id"] == "2" and error["exception_type"] == "RuntimeError"
        assert "boom" in error["exception_message"]
        assert history_of(sim, failed)["status"]["status_str"] == "error"
        ok = post_prompt(sim, trivial_prompt("other"), client_id="c").json()["prompt_id"]
        assert history_of(sim, ok)["status"]["status_str"] == "success"  # only `next` prompts


@pytest.mark.parametrize(
    ("kind", "name"),
    [("dotdot", "../../x.png"), ("absolute", "/tmp/comfynb-evil.png"), ("nul", "x\u0000.png")],
)
def test_hostile_names(sim: Simulator, kind: str, name: str) -> None:
    sim.set_faults(hostile_names=kind)
    with recorder(sim, "c") as ws:
        prompt_id = post_prompt(sim, trivial_prompt(), client_id="c").json()["prompt_id"]
        executed = next(m.data for m in ws.until_idle(prompt_id) if m.kind == "executed")
    assert executed["output"]["images"][0]["filename"] == name
    assert history_of(sim, prompt_id)["outputs"]["2"]["images"][0]["filename"] == name
    job = HTTP.get(f"{sim.url}/api/jobs/{prompt_id}").json()
    assert job["preview_output"]["filename"] == name
    assert not (sim.root / "tmp").exists()
    nxt = post_prompt(sim, trivial_prompt("again")).json()["prompt_id"]
    assert history_of(sim, nxt)["outputs"]["2"]["images"][0]["filename"] != name


def test_ws_drop_closes_sockets_after_first_executing(sim: Simulator) -> None:
    from websockets.exceptions import ConnectionClosed

    sim.set_faults(ws_drop_next=1)
    with recorder(sim, "c") as ws:
        prompt_id = post_prompt(sim, trivial_prompt(), client_id="c").json()["prompt_id"]
        with pytest.raises(ConnectionClosed):
            ws.until_idle(prompt_id)
    assert [m.kind for m in ws.messages][-1] == "executing"
    assert history_of(sim, prompt_id)["status"]["status_str"] == "success"
    with recorder(sim, "c") as again:  # the next prompt is not dropped
        other = post_prompt(sim, trivial_prompt("b"), client_id="c").json()["prompt_id"]
        again.until_idle(other)


# -- restart, reset, prompt log -----------------------------------------------------------------------


def test_restart_forgets_queue_history_and_running_prompt(sim: Simulator) -> None:
    from websockets.exceptions import ConnectionClosed

    done = post_prompt(sim, trivial_prompt("done")).json()["prompt_id"]
    history_of(sim, done)
    (sim.root / "temp" / "ComfyUI_temp_abcde_00001_.png").write_bytes(b"x")
    with recorder(sim, "c") as ws:
        running = start_blocker(sim, client_id="c")
        pending = post_prompt(sim, trivial_prompt("pending")).json()["prompt_id"]
        assert HTTP.post(f"{sim.url}/_sim/restart").status_code == 200
        with pytest.raises(ConnectionClosed):
            ws.until(lambda m: False, timeout=5)
    assert HTTP.get(f"{sim.url}/history").json() == {}
    assert HTTP.get(f"{sim.url}/queue").json() == {"queue_running": [], "queue_pending": []}
    for prompt_id in (done, running, pending):
        assert HTTP.get(f"{sim.url}/api/jobs/{prompt_id}").status_code == 404
    assert not list((sim.root / "temp").iterdir())
    assert {row["prompt_id"] for row in sim.prompts()} == {done, running, pending}
    sim.configure(node_seconds=0)
    after = post_prompt(sim, trivial_prompt("after")).json()["prompt_id"]
    assert history_of(sim, after)["status"]["status_str"] == "success"
    assert HTTP.get(f"{sim.url}/history/{running}").json() == {}


def test_reset_empties_everything(sim: Simulator) -> None:
    sim.set_faults(http_500_rate=0.0, ws_drop_next=3)
    prompt_id = post_prompt(sim, trivial_prompt()).json()["prompt_id"]
    history_of(sim, prompt_id)
    sim.reset(version="0.8.0")
    assert HTTP.get(f"{sim.url}/system_stats").json()["system"]["comfyui_version"] == "0.8.0"
    assert HTTP.get(f"{sim.url}/history").json() == {}
    assert HTTP.get(f"{sim.url}/_sim/faults").json() == {}
    assert sim.prompts() == []
    assert not list((sim.root / "output").iterdir())
    assert post_prompt(sim, trivial_prompt()).json()["number"] == 0
    response = HTTP.post(f"{sim.url}/_sim/reset", json={"version": "0.33.0"})
    assert response.json()["version"] == "0.33.0"


def test_prompt_log_counts_posts_of_each_prompt_id(legacy_sim: Simulator) -> None:
    for _ in range(2):
        post_prompt(legacy_sim, trivial_prompt(), prompt_id="same")
    post_prompt(legacy_sim, {})  # rejected: not logged
    rows = HTTP.get(f"{legacy_sim.url}/_sim/prompts").json()["prompts"]
    assert [(row["prompt_id"], row["posts"], row["number"]) for row in rows] == [("same", 2, 0)]
    assert isinstance(rows[0]["time"], float)
    assert rows[0]["lives"] == 1  # both POSTs reached the same life of the server


def test_prompt_log_counts_the_server_lives_a_prompt_id_was_posted_in(
    legacy_sim: Simulator,
) -> None:
    """A restart forgets the prompts: a prompt_id posted again after it is not queued twice."""
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="before")
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="again")
    legacy_sim.restart()
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="again")
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="again")
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="after")
    legacy_sim.restart()
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="before")
    rows = {row["prompt_id"]: (row["posts"], row["lives"]) for row in legacy_sim.prompts()}
    assert rows == {"before": (2, 2), "again": (3, 2), "after": (1, 1)}
    legacy_sim.reset(version="0.8.0")
    post_prompt(legacy_sim, trivial_prompt(), prompt_id="before")
    assert [(row["posts"], row["lives"]) for row in legacy_sim.prompts()] == [(1, 1)]


def test_config_route(sim: Simulator) -> None:
    config = HTTP.post(f"{sim.url}/_sim/config", json={"node_seconds": 0.5}).json()
    assert config == {
        "node_seconds": 0.5,
        "node_seconds_by_id": {},
        "step_seconds": 0.0,
        "version": "0.33.0",
    }
    held = HTTP.post(f"{sim.url}/_sim/config", json={"node_seconds_by_id": {"3": 9}}).json()
    assert held["node_seconds_by_id"] == {"3": 9.0} and held["node_seconds"] == 0.5
    assert HTTP.post(f"{sim.url}/_sim/config", json={"version": "9"}).status_code == 400
    assert HTTP.post(f"{sim.url}/_sim/config", json={"speed": 1}).status_code == 400


def test_history_is_capped_dropping_the_oldest(sim: Simulator) -> None:
    sim._server.engine.history_limit = 3  # the real limit, 10 000 (+1), takes 10 s to fill
    ids = [post_prompt(sim, trivial_prompt(f"t{i}")).json()["prompt_id"] for i in range(6)]
    history_of(sim, ids[-1])
    assert list(HTTP.get(f"{sim.url}/history").json()) == ids[-4:]


# -- 0.33.0 -----------------------------------------------------------------------------------------


def test_0_33_requires_a_canonical_uuid_prompt_id(sim: Simulator) -> None:
    for bad in ("my-own-id", 12345, str(uuid.uuid4()).upper()):
        response = post_prompt(sim, trivial_prompt(), prompt_id=bad)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_prompt_id"
        assert response.json()["error"]["message"] == "prompt_id must be a valid UUID"
    good = str(uuid.uuid4())
    assert post_prompt(sim, trivial_prompt(), prompt_id=good).json()["prompt_id"] == good
    assert post_prompt(sim, trivial_prompt(), prompt_id=good).json()["prompt_id"] == good


def test_0_33_unknown_class_is_missing_node_type(sim: Simulator, legacy_sim: Any) -> None:
    prompt = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    del legacy_sim  # same server: it is 0.8.0 now
    assert post_prompt(sim, prompt).json()["error"]["type"] == "invalid_prompt"
    sim.reset(version="0.33.0")
    assert post_prompt(sim, prompt).json()["error"]["type"] == "missing_node_type"


def test_0_33_jobs_have_previewable_count_and_cancel_routes(sim: Simulator) -> None:
    done = post_prompt(sim, trivial_prompt()).json()["prompt_id"]
    history_of(sim, done)
    job = HTTP.get(f"{sim.url}/api/jobs/{done}").json()
    assert job["previewable_outputs_count"] == 1
    blocker = start_blocker(sim)
    pending = str(uuid.uuid4())
    post_prompt(sim, trivial_prompt("p"), prompt_id=pending)
    assert HTTP.post(f"{sim.url}/api/jobs/{pending}/cancel").json() == {"cancelled": True}
    assert HTTP.post(f"{sim.url}/api/jobs/{pending}/cancel").json() == {"cancelled": False}
    bad = HTTP.post(f"{sim.url}/api/jobs/cancel", json={"job_ids": ["not-a-uuid"]})
    assert bad.status_code == 400
    many = HTTP.post(f"{sim.url}/api/jobs/cancel", json={"job_ids": [blocker]}).json()
    assert many == {"cancelled": [blocker]}
    entry = history_of(sim, blocker)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    release(sim, blocker)


def test_cancel_routes_do_not_exist_on_0_8(legacy_sim: Simulator) -> None:
    assert HTTP.post(f"{legacy_sim.url}/api/jobs/x/cancel").status_code == 404
    job_id = post_prompt(legacy_sim, trivial_prompt()).json()["prompt_id"]
    history_of(legacy_sim, job_id)
    assert "previewable_outputs_count" not in HTTP.get(f"{legacy_sim.url}/api/jobs/{job_id}").json()


# -- life cycle, CLI ---------------------------------------------------------------------------------


def test_temp_files_are_deleted_at_start(tmp_path: Any) -> None:
    (tmp_path / "temp").mkdir()
    (tmp_path / "temp" / "old.png").write_bytes(b"x")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "kept.png").write_bytes(b"x")
    with Simulator(root=tmp_path) as sim:
        assert HTTP.get(f"{sim.url}/prompt").status_code == 200
    assert not (tmp_path / "temp" / "old.png").exists()
    assert (tmp_path / "output" / "kept.png").exists()


def test_history_is_lost_on_a_new_server(tmp_path: Any) -> None:
    with Simulator(root=tmp_path) as first:
        prompt_id = post_prompt(first, trivial_prompt()).json()["prompt_id"]
        history_of(first, prompt_id)
    with Simulator(root=tmp_path) as second:
        assert HTTP.get(f"{second.url}/history/{prompt_id}").json() == {}
        # the counter continues after the files already there, as ComfyUI's does
        nxt = post_prompt(second, trivial_prompt()).json()["prompt_id"]
        name = history_of(second, nxt)["outputs"]["2"]["images"][0]["filename"]
    assert name == "trivial_00002_.png"


def test_command_line_serves_until_interrupted(tmp_path: Any) -> None:
    import signal

    command = [sys.executable, "-m", "comfynb.simulator", "--port", "0", "--root", str(tmp_path)]
    command += ["--comfyui-version", "0.8.0", "--fault", "http_500_next=1", "--seed", "3"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split(",")[0]
        with httpx.Client() as client:
            assert client.get(f"{url}/prompt").status_code == 500  # the fault from the command line
            stats = client.get(f"{url}/system_stats").json()
        assert stats["system"]["comfyui_version"] == "0.8.0"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


def test_command_line_refuses_unknown_faults(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "comfynb.simulator", "--root", str(tmp_path), "--fault", "x=1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "unknown fault" in result.stderr


def test_stop_leaves_no_thread(tmp_path: Any) -> None:
    import threading

    before = set(threading.enumerate())
    with Simulator(root=tmp_path) as sim, recorder(sim, "c") as ws:
        post_prompt(sim, trivial_prompt(), client_id="c")
        ws.until_idle()
    wait_for(lambda: set(threading.enumerate()) <= before)


def test_shorter_node_seconds_lets_a_waiting_node_finish(sim: Simulator) -> None:
    prompt_id = start_blocker(sim)
    sim.configure(node_seconds=0)  # the waiting node re-decides: no interrupt, a success
    assert history_of(sim, prompt_id)["status"]["status_str"] == "success"


def test_a_new_node_time_set_as_a_node_starts_waiting_is_not_lost(sim: Simulator) -> None:
    """``configure(node_seconds=0)`` landing between a node's reading its time and its wait.

    The race behind a worker test that timed out once on a loaded machine: the node read
    30 s, the test set 0 (waking it), the node then cleared the wake-up and waited 30 s.
    Here the other thread's set is made to land exactly in that window (the node's first
    look at its times starts it and gives it 0.2 s, long enough unless it must wait for the
    lock the node holds while it reads).
    """
    import threading

    engine = sim._server.engine
    done = threading.Event()

    class SetMeanwhile(dict[str, float]):
        def get(self, key: str, default: Any = None) -> Any:
            if not hasattr(self, "thread"):  # the first look only
                self.thread = threading.Thread(
                    target=lambda: (engine.set_node_seconds(0), done.set()), daemon=True
                )
                self.thread.start()
                done.wait(0.2)
            return super().get(key, default)

    sim.configure(node_seconds=30)
    engine.node_seconds_by_id = SetMeanwhile()
    prompt_id = post_prompt(sim, trivial_prompt("race")).json()["prompt_id"]
    assert history_of(sim, prompt_id)["status"]["status_str"] == "success"


def test_main_serves_until_stop_is_set(tmp_path: Any) -> None:
    import threading

    from comfynb.simulator.__main__ import main

    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["--port", "0", "--root", str(tmp_path)], stop=stop))
    )
    thread.start()
    wait_for(lambda: (tmp_path / "output").is_dir())
    stop.set()
    thread.join(timeout=20)
    assert codes == [0]


def test_restart_does_not_hang_on_a_client_that_never_reads(sim: Simulator) -> None:
    import base64
    import os
    import socket
    import time

    with socket.create_connection(("127.0.0.1", sim.port)) as raw:
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            (
                f"GET /ws?clientId=mute HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert raw.recv(12) == b"HTTP/1.1 101"
        started = time.monotonic()
        sim.restart()  # waits for the mute client's close reply only up to the close timeout
        assert time.monotonic() - started < 5


def test_reset_restores_the_start_times(tmp_path: Any) -> None:
    with Simulator(root=tmp_path, step_seconds=0.005, version="0.8.0") as sim:
        sim.configure(node_seconds=3, step_seconds=1)
        sim.reset()
        assert HTTP.get(f"{sim.url}/_sim/config").json() == {
            "node_seconds": 0.0,
            "node_seconds_by_id": {},
            "step_seconds": 0.005,
            "version": "0.8.0",
        }


def test_start_and_stop_are_idempotent(tmp_path: Any) -> None:
    sim = Simulator(root=tmp_path, version="0.8.0")
    assert "stopped" in repr(sim)
    assert sim.start() is sim.start()
    assert repr(sim) == f"<Simulator {sim.url} ComfyUI 0.8.0 running>"
    sim.stop()
    sim.stop()
    with pytest.raises(RuntimeError, match="not running"):
        sim.reset()


def test_restart_in_the_middle_of_a_burst_leaves_a_working_server(sim: Simulator) -> None:
    from contextlib import ExitStack

    from websockets.exceptions import ConnectionClosed

    with ExitStack() as stack:
        sockets = [stack.enter_context(recorder(sim, f"c{i}")) for i in range(4)]
        for index in range(40):
            post_prompt(sim, trivial_prompt(f"p{index}"), client_id=f"c{index % 4}")
        sim.restart()
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                ws.until(lambda m: False)
    with recorder(sim, "after") as ws:
        prompt_id = post_prompt(sim, trivial_prompt("after"), client_id="after").json()["prompt_id"]
        ws.until_idle(prompt_id)
    queue = HTTP.get(f"{sim.url}/queue").json()
    assert queue == {"queue_running": [], "queue_pending": []}
    assert len(sim.prompts()) == 41


def test_fail_node_hits_a_prompt_that_would_be_cached(sim: Simulator) -> None:
    history_of(sim, post_prompt(sim, trivial_prompt()).json()["prompt_id"])
    sim.set_faults(fail_node={"node_id": "1", "message": "boom"})
    entry = history_of(sim, post_prompt(sim, trivial_prompt()).json()["prompt_id"])
    assert entry["status"]["messages"][-1][1]["exception_message"] == "boom"
    assert entry["status"]["messages"][-1][1]["exception_type"] == "RuntimeError"


@pytest.mark.parametrize("body", [[1], {"seed": "x"}, {"http_500_rate": None}, {"routes": "/p"}])
def test_bad_fault_sets_are_refused(sim: Simulator, body: Any) -> None:
    response = HTTP.post(f"{sim.url}/_sim/faults", json=body)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


def test_a_simulator_never_stopped_is_stopped_at_exit() -> None:
    code = "from comfynb.simulator import Simulator\nsim = Simulator().start()\nprint(sim.root)\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == ""
    from pathlib import Path

    assert not Path(result.stdout.strip()).exists()  # the temporary root is gone
