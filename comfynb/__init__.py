"""comfynb: drive a ComfyUI server from a Jupyter notebook as an experiment.

Example::

    >>> import comfynb
    >>> with comfynb.Simulator() as sim, comfynb.Client(sim.url) as client:
    ...     queued = client.queue_prompt(prompt)
    ...     client.job(queued.prompt_id).status
    'completed'

Importing comfynb is cheap and quiet: no threads, no sockets, no widget libraries. The
simulator (aiohttp) is imported on first use of ``comfynb.Simulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ComfynbError,
    CorruptImage,
    JobNotFound,
    OutputError,
    PromptRejected,
    ServerError,
    ServerFailed,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedResponse,
    UnsafePath,
)

if TYPE_CHECKING:
    from .simulator import Simulator as Simulator

__version__ = "0.1.0"

__all__ = [
    "ComfynbError",
    "CorruptImage",
    "JobNotFound",
    "OutputError",
    "PromptRejected",
    "ServerError",
    "ServerFailed",
    "ServerTimeout",
    "ServerUnreachable",
    "UnexpectedResponse",
    "UnsafePath",
]

# Names whose modules are heavy (aiohttp, widget libraries): imported on first use.
_LAZY = {"Simulator": ".simulator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'comfynb' has no attribute {name!r}")
