"""A worker for the crash test: recover, then run every pending job of the store to its end.

    python tests/crash_worker.py STORE OUTPUT_DIR SERVER_URL

It prints one JSON line with what ``recover`` did, then ``done``. The crash test runs it with
``COMFYNB_CRASHPOINT`` set, so it dies by SIGKILL at one of ``comfynb._crashpoints.POINTS``.
It is the lifecycle functions in the loop a worker runs, nothing of its own: claim and submit
every pending job, wait on the WebSocket until the server has ended them all, then poll each.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import comfynb
from comfynb import Client, RetryPolicy, poll_job_status, recover, select_next_job, submit_job


def main(store_path: str, output_dir: str, url: str) -> None:
    with (
        comfynb.open(store_path, output_dir=output_dir) as store,
        Client(url, retry=RetryPolicy(attempts=4, base=0.01, max_delay=0.05)) as client,
    ):
        summary = recover(store, client)
        print(json.dumps(dataclasses.asdict(summary), default=str), flush=True)
        while (job := select_next_job(store, server=client.url)) is not None:
            submit_job(store, client, job)
        waiting = [job.prompt_id for job in store.unsettled_jobs() if job.prompt_id]
        if waiting:
            with client.events(waiting, poll_interval=0.5) as events:
                for _ in events:
                    pass
        for job in store.unsettled_jobs():
            poll_job_status(store, client, job)
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
