"""Write a plural read to a Parquet or CSV file, whole or not at all; any store's export.

Example::

    >>> write_export({"runs": store.runs}, "runs.parquet", "runs", {})
    PosixPath('/home/me/runs.parquet')

``Store.export`` passes its own reads; a ``RemoteStore`` passes its reads through the worker,
and the file is written on the notebook's side.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["write_export"]


def write_export(
    reads: Mapping[str, Callable[..., pd.DataFrame]],
    path: str | os.PathLike[str],
    what: str,
    filters: Mapping[str, Any],
) -> Path:
    """Write ``reads[what](**filters)`` to ``path`` (``.parquet`` or ``.csv``); return it resolved.

    The file is written beside its target, then renamed: a reader never sees half of it.

    Raises:
        InvalidInput: another suffix, a ``what`` that is not in ``reads``, or a folder that
            does not exist (it is not made: a typo would scatter files).
    """
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InvalidInput(
            f"export writes .parquet or .csv files, got {target.name!r}; "
            "e.g. store.export('runs.parquet')"
        )
    if what not in reads:
        raise InvalidInput(f"export what= is one of {', '.join(reads)}, got {what!r}")
    folder = target.resolve().parent
    if not folder.is_dir():
        raise InvalidInput(
            f"cannot export to {str(target)!r}: the folder {str(folder)!r} does not exist; "
            f"create it first (Path({str(folder)!r}).mkdir(parents=True))"
        )
    frame = reads[what](**filters)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        if suffix == ".parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.resolve()
