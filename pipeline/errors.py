"""The one error type for bad input, and how command-line entry points report it."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad input: a file that does not follow the TpuGraphs format, a bad submission, a missing
    artifact. The message is one sentence naming the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str, key: str | None = None):
        self.path = None if path is None else str(path)
        self.key = key
        self.problem = problem
        where = "" if path is None else f"{path}: "
        what = "" if key is None else f"key '{key}': "
        super().__init__(f"{where}{what}{problem}")

    def __reduce__(self):
        # crosses process boundaries intact (worker pools re-raise it in the parent)
        return (DataError, (self.path, self.problem, self.key))
