"""Named points where the crash test kills a worker; a no-op unless ``COMFYNB_CRASHPOINT`` is set.

``COMFYNB_CRASHPOINT="submit.after_post:3"`` makes the third arrival at that point, in this
process, kill the process with SIGKILL: no ``finally`` block, no atexit hook, no flush runs,
as when the machine loses power or the kernel's OOM killer strikes. The variable is read once,
at import; without it ``reached`` returns at once.

The points:

* ``submit.before_post``: the prompt_id is recorded, the POST not sent yet
* ``submit.after_post``: the server queued the prompt, the store does not know yet
* ``download.write``: an image file is half written (its temporary ``.part`` file exists)
* ``result.transaction``: inside the transaction that records candidates and completes the job

Example::

    $ COMFYNB_CRASHPOINT=result.transaction:2 python worker.py   # dies completing its 2nd job
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "reached"]

POINTS = ("submit.before_post", "submit.after_post", "download.write", "result.transaction")


def _target(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    name, _, count = text.partition(":")
    if name not in POINTS:
        raise ValueError(f"COMFYNB_CRASHPOINT names an unknown point {name!r}; one of {POINTS}")
    return name, int(count or 1)


_TARGET = _target(os.environ.get("COMFYNB_CRASHPOINT"))
_seen = 0


def reached(name: str) -> None:
    """Mark that the code reached point ``name``; kill this process if the crash test says so."""
    global _seen
    if _TARGET is None or name != _TARGET[0]:
        return
    _seen += 1
    if _seen == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
