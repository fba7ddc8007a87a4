"""Measured runtimes of a split, and scoring orders against them with the competition metric.

`load_runtimes(files)` reads each graph's runtimes once (tile: divided by the normalizers);
`score_rows` scores validated orders against them; `score_submission` validates rows first
(used by `pipeline.evaluate`, the ensemble and the report). Metric and conventions: `models.metrics`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from models import metrics
from pipeline.core.errors import DataError
from pipeline.io.catalog import COLLECTIONS, GraphFile, split_id
from pipeline.io.npz import read_members
from pipeline.io.submission_csv import Rows, validate_submission


def load_runtimes(files: Sequence[GraphFile]) -> dict[str, np.ndarray]:
    """Measured runtime of every config, by graph ID: (C,) float64, tile ones already divided
    by `config_runtime_normalizers`. Reads only those members (not the graph). Raises
    `DataError` for a file without runtimes (test) or with a non-positive one."""
    out: dict[str, np.ndarray] = {}
    for f in files:
        keys = ["config_runtime"] + (["config_runtime_normalizers"] if f.kind == "tile" else [])
        a = read_members(f.path, keys, what=f"{f.kind} file with runtimes")
        r = a["config_runtime"].astype(np.float64)
        # all zero first: a test file would otherwise fail as "non-positive runtime"
        if not r.any():
            raise DataError(f.path, "config_runtime is all zero (a test file?): nothing to score against; evaluate a split with runtimes")
        if not (r > 0).all():
            raise DataError(f.path, f"non-positive runtime in the {f.split} split", "config_runtime")
        if f.kind == "tile":
            n = a["config_runtime_normalizers"].astype(np.float64)
            if n.shape != r.shape:
                raise DataError(f.path, f"length {n.shape[0] if n.ndim else 0} does not match {r.size} configs", "config_runtime_normalizers")
            if not (n > 0).all():
                raise DataError(f.path, "non-positive normalizer", "config_runtime_normalizers")
            r = r / n
        out[f.id] = r
    return out


def score_rows(rows: Mapping[str, Sequence[int] | np.ndarray], runtimes: Mapping[str, np.ndarray]) -> dict:
    """Score valid rows (ID -> order, fastest first) against `runtimes` (from `load_runtimes`).

    Every ID of `runtimes` is scored; the rows must have been validated (see `score_submission`).
    Returns `{"collections": {c: mean}, "score": mean of the collections present,
    "graphs": {c: n}, "per_graph": {ID: score}, "undefined_tau": [IDs counted as 0]}`.
    """
    per_graph: dict[str, float] = {}
    collection_of: dict[str, str] = {}
    undefined: list[str] = []
    for gid, r in runtimes.items():
        collection = split_id(gid)[0]
        order = np.asarray(rows[gid], dtype=np.int64)
        if collection.startswith("tile"):
            s = metrics.tile_score(order, r)
        else:
            s = metrics.layout_score(order, r, nan_as=None)
            if np.isnan(s):
                undefined.append(gid)
                s = metrics.UNDEFINED_TAU_SCORE
        per_graph[gid] = s
        collection_of[gid] = collection
    means = metrics.collection_means(per_graph, collection_of)
    collections = {c: means[c] for c in COLLECTIONS if c in means}
    graphs = {c: sum(1 for v in collection_of.values() if v == c) for c in collections}
    return {"collections": collections, "score": metrics.overall_score(collections), "graphs": graphs,
            "per_graph": per_graph, "undefined_tau": undefined}


def score_submission(
    rows: Rows,
    files: Sequence[GraphFile],
    runtimes: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Validate `rows` against `files` and score them (see `score_rows` for the result).

    Args:
        rows: ID -> order (fastest first), or (ID, order) pairs; one per file.
        files: the split's files (with runtimes: train or valid).
        runtimes: from `load_runtimes(files)`, to skip reading the files again.

    Raises:
        DataError: invalid rows (with the first problem), or files without runtimes.
    """
    runtimes = load_runtimes(files) if runtimes is None else runtimes
    rep = validate_submission(rows, files, num_configs={k: v.shape[0] for k, v in runtimes.items()})
    if not rep.ok:
        first = rep.errors[0]
        raise DataError(None, f"rows cannot be scored: {len(rep.errors)} errors, first: {first.id}: {first.message}")
    return score_rows(rep.rows, {f.id: runtimes[f.id] for f in files})
