"""Values on the wire between a notebook and a worker's endpoint: tagged JSON, Arrow, errors.

Example::

    >>> decode(json.loads(json.dumps(encode(store.job(7))))) == store.job(7)
    True

Arguments and results travel as JSON, with ``Run``, ``Step``, ``Job``, ``Candidate``,
``NewCandidate``, ``AddedJobs``, ``JobStatus``, ``datetime`` and ``Path`` tagged so they come
back as themselves; DataFrames as Arrow IPC (dtypes survive); previews (image bytes) as Arrow
too, a binary column (never base64 in JSON); errors as their comfynb type, message and
attributes.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import errors as _errors
from ..core.models import Candidate, Job, NewCandidate, NewStep, Preview, Run, Step
from ..core.status import JobStatus
from ..errors import ComfynbError, InvalidInput, StoreError
from ..store.base import AddedJobs

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ARROW",
    "JSON",
    "arrow_to_frame",
    "decode",
    "decode_error",
    "encode",
    "encode_error",
    "frame_to_arrow",
    "frame_to_previews",
    "previews_to_frame",
]

ARROW: Final = "application/vnd.apache.arrow.stream"
JSON: Final = "application/json"

_TYPE: Final = "__type__"
_DATACLASSES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (Run, Step, NewStep, Job, Candidate, NewCandidate, AddedJobs)
}
# builtin errors a store call may raise (a wrong argument); anything else is a StoreError
_BUILTIN_ERRORS: Final = ("TypeError", "ValueError", "KeyError", "LookupError")


def encode(value: Any) -> Any:
    """A JSON-ready form of a call argument or result; dataclasses, dates and enums are tagged."""
    if isinstance(value, JobStatus):
        return {_TYPE: "JobStatus", "value": value.value}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_TYPE: type(value).__name__, "fields": fields}
    if isinstance(value, datetime):
        return {_TYPE: "datetime", "value": value.isoformat()}
    if isinstance(value, Path):
        return {_TYPE: "Path", "value": str(value)}
    if isinstance(value, Mapping):
        items = {str(k): encode(v) for k, v in value.items()}
        return {_TYPE: "dict", "items": items} if _TYPE in items else items
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars, e.g. an id read from a DataFrame
    if callable(item):
        return encode(item())
    raise InvalidInput(
        f"{type(value).__name__} cannot be sent to the worker process; pass plain values "
        "(ints, strings, dicts, lists) or comfynb's Run, Step, Job and Candidate"
    )


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TYPE)
    if kind is None:
        return {k: decode(v) for k, v in value.items()}
    if kind == "dict":
        return {k: decode(v) for k, v in value["items"].items()}
    if kind == "JobStatus":
        return JobStatus(value["value"])
    if kind == "datetime":
        return datetime.fromisoformat(value["value"])
    if kind == "Path":
        return Path(value["value"])
    cls = _DATACLASSES.get(kind)
    if cls is None:
        raise StoreError(f"the worker sent a value of unknown type {kind!r}; upgrade comfynb")
    return cls(**{k: decode(v) for k, v in value["fields"].items()})


def encode_error(exc: BaseException) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, attr in vars(exc).items():
        with contextlib.suppress(InvalidInput):
            attrs[name] = encode(attr)
    return {"type": type(exc).__name__, "message": str(exc), "attrs": attrs}


def decode_error(body: Mapping[str, Any], call: str) -> Exception:
    """The exception the worker raised, as the same comfynb type with the same attributes."""
    name, message = str(body.get("type", "")), str(body.get("message", ""))
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ComfynbError):
        # built without __init__: each error class has its own signature, and the message is
        # already composed; the attributes (``key``, ``pid``, ``job_id``...) are set as sent
        exc: Exception = cls.__new__(cls)
        Exception.__init__(exc, message)
        for attr, value in dict(body.get("attrs") or {}).items():
            setattr(exc, attr, decode(value))
        return exc
    if name in _BUILTIN_ERRORS:
        error_class: type[Exception] = getattr(builtins, name)
        return error_class(message)
    return StoreError(
        f"the worker process failed on {call}: {name}: {message}; its log has the traceback"
    )


def frame_to_arrow(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def arrow_to_frame(data: bytes) -> pd.DataFrame:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all().to_pandas()


def previews_to_frame(previews: list[Preview]) -> pd.DataFrame:
    """Previews as a frame, so their bytes travel as an Arrow binary column."""
    import pandas as pd

    columns = ("job_id", "seq", "mime", "image", "at")
    return pd.DataFrame(
        {name: [getattr(p, name) for p in previews] for name in columns}, columns=list(columns)
    )


def frame_to_previews(frame: pd.DataFrame) -> list[Preview]:
    """The inverse of :func:`previews_to_frame`."""
    return [
        Preview(int(job_id), int(seq), str(mime), bytes(image), at.to_pydatetime().astimezone(UTC))
        for job_id, seq, mime, image, at in frame[
            ["job_id", "seq", "mime", "image", "at"]
        ].itertuples(index=False, name=None)
    ]
