"""The fold plan: which fold every labelled graph of a collection falls in.

Invariants: assignment is by graph, deterministic for (`folds`, `fold_seed`, the labelled
splits), identical graphs (same structure and node features, whatever their names) share a
fold, and the folds of a collection differ in size by one group at most. The plan is cached in
`<processed>/folds/k<K>_s<seed>[_<splits>]/plan.json` and rebuilt, views included, when the
extract stage has run again since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.io.catalog import COLLECTIONS, SPLITS, collection_dir, graph_id

log = logging.getLogger(__name__)

LABELLED = ("train", "valid")
PLAN = "plan.json"


def assign_folds(groups: Mapping[str, str], k: int, seed: int) -> dict[str, int]:
    """Graph id -> fold in [0, min(k, number of groups)): graphs sharing a group key (identical
    graphs) share a fold. Groups are ordered by a hash of (seed, key) and dealt round-robin, so
    the folds differ in size by one group at most and the result depends on nothing else."""
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    keys = sorted(set(groups.values()), key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    n = min(k, len(keys))
    fold_of = {g: i % n for i, g in enumerate(keys)} if n else {}
    return {gid: fold_of[g] for gid, g in sorted(groups.items())}


def fingerprint(path: Path) -> str:
    """A hash of a graph's structure and node features (the extract stage's GNN tensors):
    equal for identical graphs, whatever their names."""
    h = hashlib.sha1()
    try:
        with np.load(path) as z:
            for key in ("node_opcode", "edge_index", "node_feat"):
                a = np.ascontiguousarray(z[key])
                h.update(key.encode() + str(a.shape).encode() + a.tobytes())
    except (OSError, KeyError, ValueError) as e:
        raise DataError(path, f"cannot read the graph for its fold ({e})") from None
    return h.hexdigest()


@dataclass
class Plan:
    """The fold of every labelled graph, per collection, and where the views live."""

    root: Path  # <processed>/folds/k<K>_s<seed>[_<splits>]
    processed: Path
    labelled: list[str]  # the splits dealt into folds (fold_splits)
    folds: dict[str, int]  # collection -> number of folds (>= 2)
    fold: dict[str, dict[str, int]]  # collection -> {graph id: fold}
    split: dict[str, str]  # graph id -> its split, every graph
    files: dict[str, str]  # graph id -> file stem
    skipped: dict[str, str]  # collection -> why it has no folds

    def ids(self, collection: str, fold: int | None = None) -> list[str]:
        return sorted(g for g, f in self.fold.get(collection, {}).items() if fold is None or f == fold)

    @property
    def max_folds(self) -> int:
        return max(self.folds.values(), default=0)

    def role(self, gid: str, collection: str, fold: int | None) -> str | None:
        """Where a graph sits in the view of `fold` (None: the final fit's): train, valid (the
        held-out fold), test (every graph outside the labelled splits), or None (left out)."""
        if self.split[gid] not in self.labelled:
            return "test"
        if fold is None:
            return "train"
        if collection not in self.fold:
            return None
        return "valid" if self.fold[collection][gid] == fold else "train"

    def to_json(self) -> dict:
        return {"labelled": self.labelled, "folds": self.folds, "fold": self.fold, "split": self.split,
                "files": self.files, "skipped": self.skipped}


def _source_stamp(processed: Path) -> str:
    s = processed / ".complete"
    return str(s.stat().st_mtime_ns) if s.is_file() else "none"


def make_plan(processed: str | Path, k: int, seed: int, labelled: list[str] | tuple[str, ...] = LABELLED) -> Plan:
    """The fold plan of the extract stage's output `processed` (its GNN tensors give each
    graph's identity): the graphs of the `labelled` splits dealt into `k` folds per collection.
    Cached in `<processed>/folds/k<K>_s<seed>[_<splits>]/plan.json` and rebuilt, views
    included, when the extract stage has run again since."""
    processed, labelled = Path(processed), [str(s) for s in labelled]
    bad = [s for s in labelled if s not in LABELLED]
    if bad or not labelled:
        raise DataError(None, f"fold_splits must be a non-empty subset of {list(LABELLED)}, got {labelled}", key="fold_splits")
    suffix = "" if sorted(labelled) == sorted(LABELLED) else "_" + "-".join(labelled)
    root = processed / "folds" / f"k{k}_s{seed}{suffix}"
    cached = root / PLAN
    stamp = _source_stamp(processed)
    if cached.is_file():
        doc = json.loads(cached.read_text())
        if doc.get("source") == stamp and "labelled" in doc:
            return Plan(root, processed, doc["labelled"], doc["folds"], doc["fold"], doc["split"], doc["files"],
                        doc["skipped"])
        shutil.rmtree(root)
    gnn = processed / "gnn"
    if not gnn.is_dir():
        raise DataError(gnn, "GNN tensors not found: folds are assigned from them (run the extract stage first)")
    plan = Plan(root, processed, labelled, {}, {}, {}, {}, {})
    for c in COLLECTIONS:
        groups = {}
        for split in SPLITS:
            for p in sorted((gnn / collection_dir(c) / split).glob("*.npz")):
                gid = graph_id(c, p.stem)
                plan.split[gid], plan.files[gid] = split, p.stem
                if split in labelled:
                    groups[gid] = fingerprint(p)
        if not groups:
            continue
        distinct = len(set(groups.values()))
        if distinct < 2:
            plan.skipped[c] = f"{distinct} distinct labelled graph{'s' if distinct != 1 else ''}: no folds"
            log.warning("%s: %s (a final fit, final=true, still trains on it)", c, plan.skipped[c])
            continue
        plan.fold[c] = assign_folds(groups, k, seed)
        plan.folds[c] = min(k, distinct)
        if distinct < k:
            log.warning("%s: %d distinct labelled graphs, fewer than folds=%d: %d folds", c, distinct, k, distinct)
        same = len(groups) - distinct
        log.info("%s: %d labelled graphs (%s) in %d folds%s", c, len(groups), "+".join(labelled), plan.folds[c],
                 f" ({same} identical to another, kept in its fold)" if same else "")
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, json.dumps({"source": stamp, **plan.to_json()}, indent=1) + "\n")
    return plan
