"""A ``Worker`` for the worker crash test: recover, then run the store's jobs until idle.

    python tests/crash_worker_loop.py STORE OUTPUT_DIR SERVER_URL

It prints the ``RunSummary`` as one JSON line, then ``done``; the worker's log goes to stderr.
tests/test_worker_crash.py runs it with ``COMFYNB_CRASHPOINT`` set, so it dies by SIGKILL at
one of ``comfynb._crashpoints.POINTS``: on the loop's thread (the POST), on a download thread
(a half-written file) or on the recorder's thread (inside a commit).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

from comfynb import RetryPolicy, Store, Worker


def main(store_path: str, output_dir: str, url: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(relativeCreated)6.0f %(message)s"
    )
    retry = RetryPolicy(attempts=4, base=0.01, max_delay=0.05)
    with Store.open(store_path, output_dir=output_dir) as store:
        worker = Worker(store, [url], target_depth=2, client_options={"retry": retry})
        summary = worker.run()
    print(json.dumps(dataclasses.asdict(summary)), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
