"""The one error type for bad input, and where a failure happened.

`DataError` is bad input (a file that does not follow the TpuGraphs format, a bad submission,
a missing artifact): one sentence naming the file and the problem. Any other exception raised
inside a stage is reported the same way by `pipeline.core.cli`, with the place it happened: code
that works on a collection or a graph wraps that work in `where(...)`, which labels an escaping
exception (outermost label first) without catching it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

DEBUG_ENV = "PIPELINE_DEBUG"  # set by `debug=true`; worker processes inherit it


class DataError(Exception):
    """Bad input; the message is one sentence naming the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str, key: str | None = None):
        self.path = None if path is None else str(path)
        self.key = key
        self.problem = problem
        where_ = "" if path is None else f"{path}: "
        what = "" if key is None else f"key '{key}': "
        super().__init__(f"{where_}{what}{problem}")

    def __reduce__(self):
        # crosses process boundaries intact (worker pools re-raise it in the parent)
        return (DataError, (self.path, self.problem, self.key))


def debug_enabled() -> bool:
    """True when failures should show their full traceback (`debug=true` or HYDRA_FULL_ERROR=1)."""
    return os.environ.get(DEBUG_ENV) == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextlib.contextmanager
def where(label: str) -> Iterator[None]:
    """Label an exception escaping the block with `label` (a collection, a graph id or a file)."""
    try:
        yield
    except Exception as e:
        labels = getattr(e, "pipeline_where", [])
        if label not in labels:
            e.pipeline_where = [label] + labels  # type: ignore[attr-defined]
        raise


def describe(e: BaseException) -> str:
    """One line for an unexpected exception: where it happened, its type and its first line."""
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    labels = getattr(e, "pipeline_where", [])
    return ": ".join([*labels, msg])
