"""Graph pruning: keep every configurable node and its k-hop neighbourhood.

    python -m pipeline.prune data=<npz root> hops=1 bridge=false jobs=0

Reads the raw tree under `data` (every collection and split present; absent ones are named as
skipped). Writes the same tree under `out` (`<collection dir>/<split>/<stem>.npz`, raw format,
readable by `pipeline.io.npz.read_graph`), then `out/.complete`. Each file keeps the raw keys,
remapped (`edge_index`, `node_config_ids`, `node_splits`), and adds `node_ids` (N',) original id
of each kept node, `original_size` [N, E], and for layout files `config_pairs` (P, 3)
producer-consumer pairs among configurable nodes through chains of at most `pair_depth` other
nodes of the full graph, as positions into `node_config_ids`, with the consumer's group the
producer is read under (`features.prune.config_node_pairs`; operands told apart by
`features.operands`).
Invariant: every configurable node is kept, in order; `config_runtime` (and the tile
`config_feat`, `config_runtime_normalizers`) and `node_config_feat` are the raw ones;
node_config_feat is copied still compressed (no inflate, no deflate: a multi-GB member costs a
file copy), and its values are checked where they are first inflated, by `pipeline.extract`.
Tile graphs pass through whole.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from omegaconf import DictConfig

from features.operands import infer_operands
from features.prune import config_node_pairs, prune
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.runner import Task, begin_stage, config_hash, finish_stage, run_tasks
from pipeline.io.catalog import discover, rel_path
from pipeline.io.npz import LAZY_KEY, read_graph, write_npz

log = logging.getLogger(__name__)
VERSION = 3  # bump when the output format changes, so finished outputs are redone


def prune_file(src: str, dst: str, split: str, hops: int, bridge: bool, pair_depth: int | None) -> dict:
    g = read_graph(src, split=split)
    e = g.edge_index
    p = prune(g.num_nodes, e, g.node_config_ids, g.node_splits, hops=hops, bridge=bridge)
    arrays = {
        "node_feat": g.node_feat[p.node_ids],
        "node_opcode": g.node_opcode[p.node_ids],
        "edge_index": p.edge_index,
        "config_runtime": g.config_runtime,
        "node_ids": p.node_ids,
        "original_size": np.array([g.num_nodes, e.shape[0]], dtype=np.int64),
    }
    if g.kind == "tile":
        arrays["config_feat"] = g.config_feat
        arrays["config_runtime_normalizers"] = g.config_runtime_normalizers
        write_npz(dst, arrays)
    else:
        arrays["node_config_ids"] = p.node_config_ids
        arrays["node_splits"] = p.node_splits
        operands = infer_operands(g.node_feat, g.node_opcode, e, g.node_config_ids)
        arrays["config_pairs"] = config_node_pairs(e, g.num_nodes, operands, pair_depth)
        # node_config_feat is unchanged: copied still compressed (extract validates it as it streams)
        write_npz(dst, arrays, copy_from=(src, [LAZY_KEY]))
    return {"nodes": [g.num_nodes, int(p.node_ids.size)], "edges": [int(e.shape[0]), int(p.edge_index.shape[0])],
            "bridges": p.num_bridges, "configs": g.num_configs}


def run(cfg: DictConfig) -> dict[str, dict]:
    files = discover(cfg.data, cfg.collections, cfg.splits, announce=True)
    if not files:
        raise DataError(cfg.data, "no .npz files to prune")
    out = begin_stage(cfg.out)
    rels = [rel_path(f.collection, f.split, f.stem) for f in files]
    tasks = [
        Task(str(rel), [f.path], [out / rel],
             dict(src=str(f.path), dst=str(out / rel), split=f.split,
                  hops=int(cfg.hops), bridge=bool(cfg.bridge),
                  pair_depth=None if cfg.pair_depth is None else int(cfg.pair_depth)))
        for f, rel in zip(files, rels)
    ]
    h = config_hash({"hops": cfg.hops, "bridge": cfg.bridge, "pair_depth": cfg.pair_depth}, VERSION)
    results = run_tasks(prune_file, tasks, out, h, cfg.jobs, desc="prune")
    per: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(5, dtype=np.int64))
    for f, rel in zip(files, rels):
        r = results[str(rel)]
        per[f.collection] += [1, *r["nodes"], *r["edges"]]
    for c, (n, n0, n1, e0, e1) in per.items():
        log.info("%s: %d graphs, nodes %d -> %d (%.1f%%), edges %d -> %d (%.1f%%)",
                 c, n, n0, n1, 100 * n1 / max(n0, 1), e0, e1, 100 * e1 / max(e0, 1))
    finish_stage(out, {"files": len(files), "hash": h})
    return results


@stage("prune")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
