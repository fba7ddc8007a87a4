"""Feature padding and normalization.

    python -m pipeline.pad data=<pruned root> jobs=0

Reads the pruned tree under `data` (output of `pipeline.prune`). First fits, per collection,
normalization statistics of node_feat (and of the tile config_feat) on the `fit_split` files
only, whatever `splits` are padded (a collection without them is left out with a warning, so
only training-free models serve it, unless `fit_fallback=true` lets it fit on the splits
present), and writes them to `stats` (JSON; `features.pad.Normalizer.from_dict` reads an entry back). Then
writes the same tree under `out`, then `out/.complete`. Each file keeps every key of its pruned
input, with node_feat layout columns 134-139 set to -1 beyond the tensor's rank (so a node's
own layout and the config layouts share the vocabulary -1..5), and adds:
- `node_feat_norm` (N, K) float32: constant columns dropped, wide-range columns log-transformed,
  standardized (layout columns excluded: they are categorical);
- `node_layout` (N, 6) int8: the node's own layout, -1 padded (the extract stage and the models
  let a configurable node's chosen layout stand in for it: `features.completion.complete_layout`);
- tile: `config_feat_norm` (C, K') float32.
With `stats_from=<stats.json>` nothing is fitted: the statistics saved by an earlier run (the
training run's `stats`) are applied as they are, and copied to `stats` (inference on test files
only, e.g. the Kaggle notebook).
Invariant: node ids, edges, configs and runtimes are those of the input (node_config_feat is
copied still compressed); statistics never see a file outside `fit_split` unless the
collection has none.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from features.layout import NODE_FEAT_DIM, TILE_CONFIG_DIM
from features.pad import LAYOUT_COLS, Moments, Normalizer, fit_normalizer, node_layout, pad_layout
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import Task, begin_stage, config_hash, finish_stage, run_tasks
from pipeline.io.catalog import GraphFile, collection_kind, discover, rel_path
from pipeline.io.npz import LAZY_KEY, SCHEMA, read_graph, read_member, read_members, write_npz

log = logging.getLogger(__name__)
VERSION = 2
LAYOUT_IDX = np.arange(NODE_FEAT_DIM)[LAYOUT_COLS]


def _file_sig(files: list[GraphFile]) -> list:
    return [[str(f.path), f.path.stat().st_size, f.path.stat().st_mtime_ns] for f in files]


def fit_files(data: str | Path, files: list[GraphFile], fit_split: str, fallback: bool) -> dict[str, list[GraphFile]]:
    """Per collection to pad: the files its statistics are fitted on, `fit_split` only.

    Fitting looks at `fit_split` whatever splits are being padded. A collection without it is
    left out (logged: it is not padded, so only training-free models serve it), unless
    `fallback` allows fitting on the files being padded (logged as a warning).
    """
    collections = sorted({f.collection for f in files})
    fit: dict[str, list[GraphFile]] = defaultdict(list)
    for f in discover(data, collections, [fit_split]):
        fit[f.collection].append(f)
    for c in collections:
        if fit[c]:
            continue
        if not fallback:
            del fit[c]
            log.warning("%s: no '%s' files to fit normalization statistics on; not padded, so only the "
                        "training-free baseline serves it (stats_from=<stats.json> applies saved statistics, "
                        "fit_fallback=true fits on the splits present)", c, fit_split)
            continue
        fit[c] = [f for f in files if f.collection == c]
        log.warning("%s: no '%s' files; fitting normalization statistics on %s instead (fit_fallback=true)",
                    c, fit_split, ", ".join(sorted({f.split for f in fit[c]})))
    return dict(fit)


def fit_stats(by_collection: dict[str, list[GraphFile]], log_min_abs: float) -> dict[str, dict]:
    """Per collection: the normalizers of node_feat and (tile) config_feat, and what they saw."""
    stats: dict[str, dict] = {}
    for c, fit in sorted(by_collection.items()):
        node = Moments(NODE_FEAT_DIM)
        cfg = Moments(TILE_CONFIG_DIM)
        for f in fit:
            node.add(read_member(f.path, "node_feat"))
            if f.kind == "tile":
                cfg.add(read_member(f.path, "config_feat"))
        entry = {"fitted_on": sorted({f.split for f in fit}), "files": len(fit), "rows": node.n,
                 "node_feat": fit_normalizer(node, log_min_abs, exclude=LAYOUT_IDX).to_dict()}
        if cfg.n:
            entry["config_feat"] = fit_normalizer(cfg, log_min_abs).to_dict()
        stats[c] = entry
    return stats


def pad_file(src: str, dst: str, split: str, node_norm: dict, config_norm: dict | None) -> dict:
    g = read_graph(src, split=split)
    padded = pad_layout(g.node_feat)
    arrays = dict(g.arrays())
    arrays["node_feat"] = padded
    arrays.update(read_members(src, skip=SCHEMA[g.kind], what="pruned file"))  # extra keys of the prune stage pass through
    arrays["node_feat_norm"] = Normalizer.from_dict(node_norm).apply(padded)
    arrays["node_layout"] = node_layout(padded)
    if g.kind == "tile":
        arrays["config_feat_norm"] = Normalizer.from_dict(config_norm).apply(g.config_feat)
        write_npz(dst, arrays)
    else:
        # node_config_feat is unchanged: copied still compressed (extract validates it as it streams)
        write_npz(dst, arrays, copy_from=(src, [LAZY_KEY]))
    return {"nodes": g.num_nodes, "configs": g.num_configs}


def load_stats(path: str | Path) -> dict[str, dict]:
    """The fitted statistics by collection (as written by this stage)."""
    try:
        return json.loads(Path(path).read_text())["collections"]
    except FileNotFoundError:
        raise DataError(path, "normalization statistics not found (run the pad stage)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(path, "not a statistics file written by the pad stage (no 'collections' entry)") from None


def saved_stats(path: str | Path, collections: list[str]) -> dict[str, dict]:
    """Statistics saved by an earlier run (`stats_from`), checked to cover every collection to pad."""
    stats = load_stats(path)
    missing = [c for c in collections if c not in stats]
    if missing:
        raise DataError(path, f"no normalization statistics for {missing[0]} (it has {', '.join(stats) or 'none'})")
    for c in collections:
        if "node_feat" not in stats[c] or (collection_kind(c) == "tile" and "config_feat" not in stats[c]):
            raise DataError(path, f"statistics of {c} lack node_feat or config_feat")
    return stats


def run(cfg: DictConfig) -> dict[str, dict]:
    files = discover(cfg.data, cfg.collections, cfg.splits, announce=True)
    if not files:
        raise DataError(cfg.data, "no .npz files to pad (run the prune stage first)")
    out = begin_stage(cfg.out)
    stats_path = Path(cfg.stats)
    try:
        cached = json.loads(stats_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        cached = {}
    if cfg.stats_from:
        stats = saved_stats(cfg.stats_from, sorted({f.collection for f in files}))
        if Path(cfg.stats_from).resolve() != stats_path.resolve():
            # `inputs: null` never matches a fitted signature: a later run without stats_from refits
            write_text_atomic(stats_path, json.dumps({"inputs": None, "applied_from": str(cfg.stats_from), "collections": stats}, indent=1))
        log.info("applying saved normalization statistics from %s (nothing fitted)", cfg.stats_from)
    else:
        fit = fit_files(cfg.data, files, cfg.fit_split, bool(cfg.fit_fallback))
        if not fit:
            raise DataError(cfg.data, f"no collection has '{cfg.fit_split}' files to fit normalization statistics on "
                                      "(stats_from=<stats.json> applies saved ones, fit_fallback=true fits on the splits present)")
        files = [f for f in files if f.collection in fit]
        sig = config_hash({"fit_split": cfg.fit_split, "log_min_abs": cfg.log_min_abs}, VERSION,
                          {c: _file_sig(fs) for c, fs in sorted(fit.items())})
        if cached.get("inputs") == sig:
            stats = cached["collections"]
            log.info("normalization statistics up to date: %s", stats_path)
        else:
            stats = fit_stats(fit, float(cfg.log_min_abs))
            write_text_atomic(stats_path, json.dumps({"inputs": sig, "fit_split": cfg.fit_split, "collections": stats}, indent=1))
        for c, s in stats.items():
            log.info("%s: statistics fitted on %s (%d files, %d nodes); node_feat keeps %d columns, %d log-scaled",
                     c, "+".join(s["fitted_on"]), s["files"], s["rows"], len(s["node_feat"]["keep"]), sum(s["node_feat"]["log"]))
    tasks = []
    for f in files:
        rel = rel_path(f.collection, f.split, f.stem)
        s = stats[f.collection]
        tasks.append(Task(str(rel), [f.path], [out / rel], dict(
            src=str(f.path), dst=str(out / rel), split=f.split, node_norm=s["node_feat"],
            config_norm=s.get("config_feat"))))
    stats_digest = hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest()
    h = config_hash({}, VERSION, stats_digest)
    results = run_tasks(pad_file, tasks, out, h, cfg.jobs, desc="pad")
    finish_stage(out, {"files": len(files), "hash": h})
    return results


@stage("pad")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
