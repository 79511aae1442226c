"""A job's input images: named by content in the stored workflow, uploaded where it is posted.

``comfynb.refine`` stores its jobs with ``LoadImage.image = "comfynb/<sha256 prefix>.png"``: the
name says which bytes, not which server has them, so the stored workflow is exactly what is
posted on every server (and what ``comfynb.reproduce`` gives back). Before a POST, the one
submit path (``jobs.submit.post_prompt``: the worker, ``submit_job``, ``recover``) calls
:func:`upload_inputs`, which finds each such image among the store's candidates (by its
sha256), checks the file still has those bytes, and uploads it to that server's input folder
(subfolder ``comfynb``, overwriting). What a client has uploaded is remembered in memory, so a
refine with 8 children uploads its image once per server.

Example::

    >>> input_name(store.candidate(12))
    'comfynb/3f2a9c0d1e2f3a4b.png'
    >>> upload_inputs(store, client, job.workflow)     # None: every input is on the server
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from ..core.models import Candidate
from ..errors import InvalidInput
from ..workflows.graph import class_of, inputs_of

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store

__all__ = [
    "INPUT_SUBFOLDER",
    "forget_uploads",
    "input_name",
    "input_names",
    "refused_inputs",
    "upload_inputs",
    "uploaded_before",
]

#: The subfolder of the server's input folder that comfynb's uploads go to.
INPUT_SUBFOLDER: Final = "comfynb"

#: How many hex digits of the sha256 name an image (64 bits: no two images of a store meet).
PREFIX_DIGITS: Final = 16

_NAME: Final = re.compile(r"comfynb/([0-9a-f]{16,64})\.(png|jpg|jpeg|webp)")

# What each client (one per server: the worker keeps one per server for its life) has
# uploaded. A weak key: a client closed and dropped takes its memory with it.
_uploaded: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def input_name(candidate: Candidate) -> str:
    """The ``LoadImage`` input that names ``candidate``'s image by content.

    Example::

        >>> input_name(store.candidate(12))
        'comfynb/3f2a9c0d1e2f3a4b.png'

    Raises:
        InvalidInput: the candidate has no sha256 recorded (a row written by hand).
    """
    if not candidate.sha256:
        raise InvalidInput(
            f"candidate {candidate.id} has no sha256 recorded, so its image cannot be named by "
            "content; refine a candidate recorded by a worker, or upload the image yourself "
            "(client.upload_image) and enqueue an img2img workflow naming it"
        )
    suffix = PurePosixPath(candidate.path).suffix.lower().lstrip(".")
    if suffix not in ("png", "jpg", "jpeg", "webp"):
        suffix = "png"
    return f"{INPUT_SUBFOLDER}/{candidate.sha256[:PREFIX_DIGITS]}.{suffix}"


def input_names(workflow: Any) -> list[str]:
    """The ``LoadImage`` inputs of ``workflow`` named by content (``comfynb/<hash>.<ext>``).

    Example::

        >>> input_names({"10": {"class_type": "LoadImage",
        ...                     "inputs": {"image": "comfynb/3f2a9c0d1e2f3a4b.png"}}})
        ['comfynb/3f2a9c0d1e2f3a4b.png']
    """
    if not isinstance(workflow, Mapping):
        return []
    found = {
        value
        for node in workflow.values()
        if class_of(node) == "LoadImage"
        and isinstance(value := inputs_of(node).get("image"), str)
        and _NAME.fullmatch(value)
    }
    return sorted(found)


def upload_inputs(
    store: Store, client: Client, workflow: Any, *, again: bool = False
) -> dict[str, Any] | None:
    """Upload each image ``workflow`` names by content that ``client``'s server may lack.

    Returns None when all are there, or a job's error (``MissingInputImage``) when an image
    is not in the store or its file is gone or changed: the same every time, so the job
    fails rather than retries. ``again``: upload even those remembered as uploaded (the server
    refused the prompt: its input folder may have been emptied). An upload's own failure
    (the server unreachable, ...) is raised, as a POST's would be.

    Example::

        >>> upload_inputs(store, client, job.workflow)
        >>> upload_inputs(store, client, {"1": {"class_type": "LoadImage",
        ...               "inputs": {"image": "comfynb/00000000deadbeef.png"}}})
        {'type': 'MissingInputImage', 'message': 'the input image comfynb/00000000deadbeef.png ...'}
    """
    names = input_names(workflow)
    if not names:
        return None
    with _lock:
        done = _uploaded.setdefault(client, set())
        todo = list(names) if again else [n for n in names if n not in done]
    for name in todo:
        content, problem = _local_bytes(store, name)
        if problem is not None:
            return {"type": "MissingInputImage", "message": problem, "image": name}
        assert content is not None
        folder, _, filename = name.partition("/")
        client.upload_image(content, name=filename, subfolder=folder, overwrite=True)
        with _lock:
            _uploaded.setdefault(client, set()).add(name)
    return None


def uploaded_before(client: Client, workflow: Any) -> bool:
    """True if some image ``workflow`` names by content was taken as already on the server."""
    names = input_names(workflow)
    with _lock:
        done = _uploaded.get(client, set())
        return any(name in done for name in names)


def refused_inputs(workflow: Any, node_errors: Mapping[str, Any]) -> bool:
    """True if ComfyUI's ``node_errors`` name a ``LoadImage`` of ``workflow`` that loads an
    image named by content: the server lacks the file (its input folder was emptied).

    Example::

        >>> refused_inputs(job.workflow, {"10": {"errors": [...], "class_type": "LoadImage"}})
        True
    """
    if not isinstance(workflow, Mapping):
        return False
    return any(
        class_of(node := workflow.get(str(node_id))) == "LoadImage"
        and isinstance(value := inputs_of(node).get("image"), str)
        and _NAME.fullmatch(value) is not None
        for node_id in node_errors
    )


def forget_uploads(client: Client | None = None) -> None:
    """Forget what ``client`` (or every client) uploaded: the next post uploads again.

    Example::

        >>> forget_uploads(client)
    """
    with _lock:
        if client is None:
            _uploaded.clear()
        else:
            _uploaded.pop(client, None)


def _local_bytes(store: Store, name: str) -> tuple[bytes | None, str | None]:
    """The bytes of the candidate image ``name`` names, or why there are none."""
    match = _NAME.fullmatch(name)
    assert match is not None
    prefix = match.group(1)
    found = store.candidates_by_sha256(prefix)
    if not found:
        return None, (
            f"the input image {name} is no candidate of this store (no image with sha256 "
            f"{prefix}...); refine a candidate of this store, or upload the image yourself "
            "(client.upload_image) and name it in the workflow"
        )
    tried = []
    for candidate in found:
        path = store.image_path(candidate)
        try:
            content = path.read_bytes()
        except OSError as exc:
            tried.append(f"candidate {candidate.id}: {path}: {exc.strerror or exc}")
            continue
        if hashlib.sha256(content).hexdigest().startswith(prefix):
            return content, None
        tried.append(f"candidate {candidate.id}: {path} was changed since it was recorded")
    return None, (
        f"the input image {name} cannot be read from the store's output folder ("
        + "; ".join(tried)
        + "); put the file back, or refine another candidate"
    )
