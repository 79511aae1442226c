"""Every error comfynb raises, in one tree.

* ComfynbError
  + ServerError                  something went wrong talking to a ComfyUI server
    - ServerUnreachable          could not connect (refused, reset, DNS)
    - ServerTimeout              connected, but no answer in time
    - ServerFailed               the server answered 5xx; ``.status`` and ``.body`` hold what it said
    - PromptRejected             HTTP 400 on ``POST /prompt``; ``.node_errors`` says why
    - JobNotFound                the server does not know that prompt_id
    - UnexpectedResponse         an answer whose shape we cannot read
  + OutputError                  an output image we refuse to keep
    - UnsafePath                 a server-named file would land outside the output folder
    - CorruptImage               downloaded bytes that are not a whole image

Catch ``ComfynbError`` to catch them all; each message says what was wrong and what to do.
"""

from __future__ import annotations

from typing import Any

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


class ComfynbError(Exception):
    """Base of every comfynb error."""


class ServerError(ComfynbError):
    """Talking to a ComfyUI server failed."""


class ServerUnreachable(ServerError):
    """No connection could be made (refused, reset before an answer, unknown host)."""


class ServerTimeout(ServerError):
    """The server took longer than the client's timeout to answer."""


class ServerFailed(ServerError):
    """The server answered with a 5xx status.

    ``status`` is the HTTP status and ``body`` the text it sent (ComfyUI sends
    ``500 Internal Server Error\\n\\nServer got itself in trouble`` for malformed input).
    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class PromptRejected(ServerError):
    """ComfyUI refused the workflow (HTTP 400); nothing was queued.

    ``error_type`` is ComfyUI's ``error.type`` as sent (unknown types from newer servers are
    kept as they come), ``error`` the whole ``error`` object and ``node_errors`` the per-node
    errors keyed by node id.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        error: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error = error or {}
        self.node_errors = node_errors or {}


class JobNotFound(ServerError):
    """The server knows no job with this prompt_id (never queued, deleted, or lost in a restart)."""

    def __init__(self, prompt_id: str) -> None:
        super().__init__(
            f"the server knows no job {prompt_id!r}: it was never queued, was deleted, "
            "or the server restarted and forgot it; queue it again"
        )
        self.prompt_id = prompt_id


class UnexpectedResponse(ServerError):
    """The server answered with something we cannot read (a newer or foreign server?)."""


class OutputError(ComfynbError):
    """An output image that comfynb refuses to keep."""


class UnsafePath(OutputError):
    """A file name from the server would land outside the output folder."""


class CorruptImage(OutputError):
    """Downloaded bytes are not a whole, decodable image (truncated or not an image)."""
