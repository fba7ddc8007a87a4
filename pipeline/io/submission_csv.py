"""Submission CSVs: read, validate and write (docs/FORMAT.md, "Submission CSV").

A submission is `ID,TopConfigs`, one row per test file; TopConfigs are config indices joined by
`;`, fastest first: 5 for a tile row (all C if C < 5), every config for a layout row.

`validate_submission` checks a CSV (or rows in memory) and returns a `Report` of errors and
warnings, each naming the CSV line and the ID. With the split's files it also checks the rows
against them: one row per file, indices in range and the right number of them. Layout rows
that list at least min(C, 1000) but fewer than C configs are accepted with a warning: the
competition's own sample submission lists 1000 of 1001 configs for some graphs.

`write_submission` validates first and refuses (raises `DataError`, writes nothing) when
there is any error; the file appears atomically. `rows_from_predictions` turns a model's
scores into those rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from models.metrics import TILE_COPIES, config_order
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.io.catalog import COLLECTIONS, GraphFile, split_id
from pipeline.io.npz import read_member

HEADER = "ID,TopConfigs"
TILE_TOP_K = 5
LAYOUT_MIN_LISTED = 1000  # fewer than C but at least min(C, this) listed: a warning, not an error
MAX_SHOWN = 5  # problems quoted in a refusal message

Rows = Union[Mapping[str, Sequence[int]], Iterable[tuple[str, Sequence[int]]]]
_INDICES = re.compile(r"\d+(?:;\d+)*")


@dataclass(frozen=True)
class Problem:
    """One finding. `line` is the 1-based CSV line (1 = header), None for a row that is missing."""

    severity: str  # "error" or "warning"
    line: int | None
    id: str
    message: str

    def format(self, source: str | Path) -> str:
        """`<csv>:<line>: <ID>: <severity>: <message>` (no line for a missing row)."""
        where = f"{source}:{self.line}" if self.line is not None else f"{source}"
        return f"{where}: {self.id}: {self.severity}: {self.message}"


@dataclass
class Report:
    """The result of `validate_submission`. `rows` are the parsed rows (ID -> indices)."""

    source: str
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checked_files: int | None = None  # number of split files checked against; None = format only

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        """Rows per collection (rows with a valid ID only), in `COLLECTIONS` order."""
        n: dict[str, int] = {}
        for gid in self.rows:
            try:
                c = split_id(gid)[0]
            except ValueError:
                continue
            n[c] = n.get(c, 0) + 1
        return {c: n[c] for c in COLLECTIONS if c in n}

    def lines(self) -> list[str]:
        """Every problem, formatted, in line order (missing rows last)."""
        key = lambda p: (p.line is None, p.line or 0)  # noqa: E731
        return [p.format(self.source) for p in sorted(self.problems, key=key)]

    def summary(self) -> str:
        per = ", ".join(f"{c} {k}" for c, k in self.counts.items()) or "none"
        against = "format only" if self.checked_files is None else f"checked against {self.checked_files} files"
        verdict = "valid" if self.ok else "INVALID"
        return (f"{self.source}: {verdict}: {len(self.rows)} rows ({per}); {against}; "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")

    def _add(self, severity: str, line: int | None, gid: str, message: str) -> None:
        self.problems.append(Problem(severity, line, gid, message))


def count_configs(path: str | Path) -> int:
    """Number of configs C of a raw file (the length of `config_runtime`)."""
    return int(read_member(path, "config_runtime").shape[0])


def _parse_indices(text: str) -> tuple[np.ndarray | None, str | None]:
    """`0;4;2` -> array; or (None, why) for anything but non-negative integers joined by `;`."""
    if _INDICES.fullmatch(text):
        return np.array(text.split(";"), dtype=np.int64), None
    if not text.strip():
        return None, "TopConfigs is empty"
    for tok in text.split(";"):
        if not re.fullmatch(r"\d+", tok):
            if re.fullmatch(r"\s*[-+]?\d+\s*", tok):
                return None, f"'{tok}' is not a non-negative integer without sign or spaces"
            return None, f"'{tok}' is not an integer"
    return None, "malformed TopConfigs"


def _first_repeat(idx: np.ndarray) -> int | None:
    s = np.sort(idx)
    rep = np.flatnonzero(s[1:] == s[:-1])
    return int(s[rep[0]]) if rep.size else None


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "submission CSV not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a submission CSV") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return text.splitlines()


def _unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def read_submission(path: str | Path) -> dict[str, np.ndarray]:
    """Rows of a CSV (ID -> int64 indices, file order). Raises `DataError` if it is not a valid
    submission by format (see `validate_submission` for the report instead)."""
    rep = validate_submission(path)
    if not rep.ok:
        raise DataError(path, _refusal(rep, "not a valid submission"))
    return rep.rows


def _raw_rows(path_or_rows: str | Path | Rows, rep: Report) -> list[tuple[int, str, str | np.ndarray | None]]:
    """(line, ID, TopConfigs text or indices, or None if already reported) of every data row;
    header and field-count problems go to `rep`."""
    out: list[tuple[int, str, str | np.ndarray | None]] = []
    if isinstance(path_or_rows, (str, Path)):
        lines = _read_lines(Path(path_or_rows))
        if not lines:
            rep._add("error", 1, "(header)", f"file is empty; expected the header '{HEADER}'")
            return out
        if lines[0].rstrip("\r") != HEADER:
            rep._add("error", 1, "(header)", f"header is '{lines[0][:80]}', expected '{HEADER}'")
        for i, raw in enumerate(lines[1:], start=2):
            if not raw.strip():
                if i - 1 < len(lines) - 1:
                    rep._add("warning", i, "-", "blank line")
                continue
            fields = raw.rstrip("\r").split(",")
            if len(fields) != 2:
                rep._add("error", i, _unquote(fields[0]) or "-", f"{len(fields)} fields, expected 2 (ID,TopConfigs)")
                out.append((i, _unquote(fields[0]), None))  # reported; its ID still counts as present
                continue
            out.append((i, _unquote(fields[0]), _unquote(fields[1])))
        return out
    items = path_or_rows.items() if isinstance(path_or_rows, Mapping) else path_or_rows
    # In memory, line numbers are those the rows would have if written in the given order.
    for i, (gid, idx) in enumerate(items, start=2):
        out.append((i, str(gid), idx if isinstance(idx, str) else np.asarray(idx)))
    return out


def validate_submission(
    path_or_rows: str | Path | Rows,
    files: Sequence[GraphFile] | None = None,
    num_configs: Mapping[str, int] | None = None,
) -> Report:
    """Check a submission and report every problem (nothing is raised for a bad submission).

    Args:
        path_or_rows: a CSV path, or rows in memory (ID -> indices, or (ID, indices) pairs);
            in memory, line numbers are those the rows would get written in the given order.
        files: the split's files. None checks the format only: header, ID syntax, integer,
            distinct, non-negative indices, duplicate IDs, tile rows of at most 5.
            Given, also: one row per file (missing, duplicate, unknown IDs), indices in [0, C),
            tile rows of exactly min(5, C), layout rows of C (>= min(C, 1000): warning).
        num_configs: C per ID when already known (skips reading the files for it).

    Raises:
        DataError: only when the CSV cannot be read at all (missing, not text) or a split file
            cannot be read for its config count.
    """
    source = str(path_or_rows) if isinstance(path_or_rows, (str, Path)) else "<rows>"
    rep = Report(source=source, checked_files=None if files is None else len(files))
    by_id = None if files is None else {f.id: f for f in files}
    split_name = ", ".join(sorted({f.split for f in files})) if files else "checked"
    first_line: dict[str, int] = {}  # ID -> the line of its first row
    for line, gid, val in _raw_rows(path_or_rows, rep):
        accepted = _accept_row(rep, line, gid, val, first_line)
        if accepted is None:
            continue
        collection, idx = accepted
        if by_id is None:
            problem = _format_problem(idx, collection)
        else:
            problem = _file_problem(gid, idx, collection, by_id, split_name, num_configs)
        if problem is not None:
            rep._add(problem[0], line, gid, problem[1])
    if files is not None:
        _report_missing_rows(rep, files, first_line)
    return rep


def _accept_row(rep: Report, line: int, gid: str, val: str | np.ndarray | None,
                first_line: dict[str, int]) -> tuple[str, np.ndarray] | None:
    """Check a row's ID and indices by format: record it and return (collection, indices).

    A row with a bad ID, a repeated ID or malformed indices is reported in `rep` instead and
    gives None; `first_line` records where each ID was first seen.
    """
    if val is None:  # already reported by `_raw_rows`; its ID still counts as present
        first_line.setdefault(gid, line)
        return None
    try:
        collection, _ = split_id(gid)
    except ValueError:
        rep._add("error", line, gid,
                 "not a TpuGraphs ID (tile:xla:<name> or layout:<xla|nlp>:<default|random>:<name>)")
        return None
    if gid in first_line:
        rep._add("error", line, gid, f"duplicate ID (first on line {first_line[gid]})")
        return None
    first_line[gid] = line
    idx, why = _parse_indices(val) if isinstance(val, str) else _coerce_indices(val)
    if idx is None:
        rep._add("error", line, gid, why)
        return None
    rep.rows[gid] = idx
    return collection, idx


def _coerce_indices(val: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """In-memory indices as a non-empty 1-D int64 array of non-negative values; or (None, why)."""
    idx = val
    if idx.ndim != 1 or idx.size == 0:
        return None, "TopConfigs must be a non-empty list of config indices"
    if idx.dtype.kind not in "iu":
        if idx.dtype.kind == "f" and np.isfinite(idx).all() and (idx == np.round(idx)).all():
            idx = idx.astype(np.int64)
        else:
            return None, f"config indices must be integers, got {idx.dtype}"
    idx = idx.astype(np.int64, copy=False)
    if idx.min() < 0:
        return None, f"config index {int(idx.min())} is negative"
    return idx, None


def _format_problem(idx: np.ndarray, collection: str) -> tuple[str, str] | None:
    """The format-only problem of a row's indices, (severity, message), or None."""
    repeated = _first_repeat(idx)
    if repeated is not None:
        return "error", f"config index {repeated} listed more than once"
    if collection.split(":")[0] == "tile" and idx.size > TILE_TOP_K:
        return "error", f"tile row lists {idx.size} configs, expected {TILE_TOP_K}"
    return None


def _file_problem(gid: str, idx: np.ndarray, collection: str, by_id: Mapping[str, GraphFile],
                  split_name: str, num_configs: Mapping[str, int] | None) -> tuple[str, str] | None:
    """The first problem of a row checked against its split file, (severity, message), or None."""
    graph_file = by_id.get(gid)
    if graph_file is None:
        return "error", f"no such file in the {split_name} split ({collection} has no '{split_id(gid)[1]}')"
    if num_configs is not None and gid in num_configs:
        num = num_configs[gid]
    else:
        num = count_configs(graph_file.path)
    return _config_count_problem(idx, collection.split(":")[0], num)


def _config_count_problem(idx: np.ndarray, kind: str, num: int) -> tuple[str, str] | None:
    """Whether a `kind` row's indices fit a file of `num` configs: (severity, message), or None."""
    if int(idx.max()) >= num:
        return "error", f"config index {int(idx.max())} out of range [0, {num})"
    counts = np.bincount(idx, minlength=num)
    if counts.max() > 1:
        return "error", f"config index {int(np.argmax(counts > 1))} listed more than once"
    if kind == "tile":
        want = min(TILE_TOP_K, num)
        if idx.size != want:
            return "error", f"tile row lists {idx.size} configs, expected {want} (the file has {num})"
    elif idx.size < num:
        floor = min(num, LAYOUT_MIN_LISTED)
        if idx.size >= floor:
            return "warning", (f"layout row lists {idx.size} of {num} configs; "
                               f"the {num - idx.size} unlisted are not ranked")
        return "error", f"layout row lists {idx.size} of {num} configs, expected all {num} (at least {floor})"
    return None


def _report_missing_rows(rep: Report, files: Sequence[GraphFile], first_line: Mapping[str, int]) -> None:
    """Report an error for every split file that has no row."""
    for f in files:
        if f.id not in first_line:
            rep._add("error", None, f.id, f"no row for this {f.split} file ({f.path})")


def _refusal(rep: Report, what: str) -> str:
    errs = rep.errors
    shown = "; ".join(f"line {p.line}: {p.id}: {p.message}" if p.line else f"{p.id}: {p.message}" for p in errs[:MAX_SHOWN])
    more = f"; and {len(errs) - MAX_SHOWN} more" if len(errs) > MAX_SHOWN else ""
    return f"{what}: {len(errs)} errors: {shown}{more}"


def write_submission(
    path: str | Path,
    rows: Rows,
    files: Sequence[GraphFile] | None,
    num_configs: Mapping[str, int] | None = None,
) -> Report:
    """Validate `rows` against `files` and write the CSV atomically, rows in the order of `files`.

    Returns the validation `Report` (its warnings are the caller's to log). With `files` None
    the format alone is checked and rows keep their given order.

    Raises:
        DataError: naming `path` and the first problems, if the rows are invalid; nothing is
            written and an existing file at `path` is left untouched.
    """
    rep = validate_submission(rows, files, num_configs)
    if not rep.ok:
        raise DataError(path, _refusal(rep, "refusing to write an invalid submission"))
    ids = list(rep.rows) if files is None else [f.id for f in files]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fp:
        fp.write(HEADER + "\n")
        for gid in ids:
            fp.write(f"{gid},{';'.join(map(str, rep.rows[gid].tolist()))}\n")
    rep.source = str(path)
    return rep


def rows_from_predictions(predictions: dict, files: list[GraphFile], tile_top: int = 5,
                          tile_copies: str = "once") -> dict[str, list[int]]:
    """`{id: config indices fastest first}` for the files that have predictions (tile rows by
    `models.metrics.config_order`: each config once in the first `tile_top` unless `tile_copies="all"`)."""
    if tile_copies not in TILE_COPIES:
        raise DataError(None, f"tile_copies={tile_copies} is not one of {', '.join(TILE_COPIES)}", key="tile_copies")
    rows = {}
    for f in files:
        if f.id in predictions:
            order = config_order(f.kind, predictions[f.id], tile_top, tile_copies)
            rows[f.id] = order[:tile_top].tolist() if f.kind == "tile" else order.tolist()
    return rows
