"""Score a submission-format CSV on a split with measured runtimes (the competition metric).

    python -m pipeline.evaluate submission=<csv> data=<npz root> split=valid report=<json>

Reads the CSV and the `split` files under `data` (runtimes; tile normalizers); writes the JSON
report `report` atomically: `{"collections": {"tile:xla": ..., ...}, "score": ...,
"split": ..., "submission": ..., "graphs": {collection: n}, "per_graph": {ID: score},
"undefined_tau": [ID, ...]}`, and prints a table of the collection scores and the overall one.
Invariant: only a CSV that `pipeline.validate` would accept for this split is scored (else
the problems are printed and the exit status is 1); the test split, whose runtimes are all
zero, is refused. Metric and conventions: `models.metrics`.

`score_submission(rows, files)` is the same scoring without a CSV (ensemble, reports);
`load_runtimes` + `score_rows` let a caller read the runtimes once and score many candidates.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from models import metrics
from pipeline.catalog import COLLECTIONS, GraphFile, discover, split_id
from pipeline.cli import stage
from pipeline.errors import DataError
from pipeline.fsutil import write_text_atomic
from pipeline.npz import read_members
from pipeline.submission_csv import Rows, validate_submission

log = logging.getLogger(__name__)


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


def format_table(result: dict) -> str:
    """The collection scores and the overall one, as a small text table."""
    lines = [f"{'collection':<20} {'graphs':>6} {'score':>8}"]
    for c, s in result["collections"].items():
        lines.append(f"{c:<20} {result['graphs'][c]:>6} {s:>8.4f}")
    n = len(result["collections"])
    lines.append(f"{f'overall (mean of {n})':<20} {sum(result['graphs'].values()):>6} {result['score']:>8.4f}")
    return "\n".join(lines)


def run(submission: str | Path, data: str | Path, split: str, report: str | Path | None) -> dict:
    """Validate and score `submission` on `split` under `data`; write `report` if given."""
    submission = Path(submission)
    if split == "test":
        raise DataError(None, "the test split has no measured runtimes (all zero): evaluate split=valid or split=train")
    if not submission.is_file():
        raise DataError(submission, "submission CSV not found")
    files = discover(data, splits=[split], announce=True)
    if not files:
        raise DataError(data, f"no .npz files in the '{split}' split to score against")
    log.info("scoring %s against %d %s files under %s", submission, len(files), split, data)
    runtimes = load_runtimes(files)
    rep = validate_submission(submission, files, num_configs={k: v.shape[0] for k, v in runtimes.items()})
    for line in rep.lines():
        print(line, file=sys.stderr)
    if not rep.ok:
        raise DataError(submission, f"{len(rep.errors)} errors (listed above); not scored")
    result = score_rows(rep.rows, runtimes)
    if result["undefined_tau"]:
        log.warning("%d layout graphs have constant runtimes (tau undefined), counted as %s: %s",
                    len(result["undefined_tau"]), metrics.UNDEFINED_TAU_SCORE, ", ".join(result["undefined_tau"]))
    out = {"collections": result["collections"], "score": result["score"], "split": split,
           "submission": str(submission), "graphs": result["graphs"], "per_graph": result["per_graph"],
           "undefined_tau": result["undefined_tau"]}
    if report is not None:
        write_text_atomic(report, json.dumps(out, indent=2) + "\n")
        log.info("report written to %s", report)
    return out


@stage("evaluate")
def main(cfg: DictConfig) -> float:
    out = run(cfg.submission, cfg.data, cfg.split, cfg.report)
    print(format_table(out), flush=True)
    return out["score"]


if __name__ == "__main__":
    main()
