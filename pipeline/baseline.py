"""Score every config of every valid and test graph with the training-free baseline rankers.

    python -m pipeline.baseline [splits=[valid,test]] [data=<npz root>]
    make baseline

Reads the raw npz files; writes `<predictions>/<name>/<split>.parquet` (see
pipeline.io.predictions), then the stamp `<predictions>/<name>/.complete` (make's file target).
It needs no training, so it serves every collection, including those no model could train on.
Graphs are scored `jobs` at a time, one process each (0 = every core); layout configs are
streamed in chunks, so memory is bounded by `chunk_configs` per process, not by the file. Scores are indexed by original config, as in the raw file.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from models.baseline import LayoutCopyCost, tile_padding_cost
from pipeline.core.cli import stage
from pipeline.core.runner import begin_stage, finish_stage, parallel_map
from pipeline.io.catalog import GraphFile, discover
from pipeline.io.npz import iter_node_config_feat, read_graph
from pipeline.io.predictions import predictions_path, write_predictions

log = logging.getLogger(__name__)


def baseline_scores(f: GraphFile, chunk_configs: int) -> np.ndarray:
    g = read_graph(f.path, split=f.split)
    if g.kind == "tile":
        return tile_padding_cost(g.node_feat, g.config_feat)
    cost = LayoutCopyCost(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids)
    out = np.empty(g.num_configs)
    for start, chunk in iter_node_config_feat(g, chunk_configs):
        out[start : start + chunk.shape[0]] = cost(chunk)
    return out


def run(cfg: DictConfig) -> dict[str, int]:
    """Score every graph of `splits` (and `oof` with folds); returns the graphs written per split."""
    stamp_dir = begin_stage(predictions_path(cfg.predictions, cfg.name, "any").parent)
    written = {}
    oof = predictions_path(cfg.predictions, cfg.name, "oof")
    oof.unlink(missing_ok=True)
    for split in [*cfg.splits, *(["oof"] if int(cfg.folds) > 0 else [])]:
        # oof (folds=K): every labelled graph, as the trained members' out-of-fold predictions
        # cover them; the baseline learns nothing, so its scores are out of fold as they are
        files = discover(cfg.data, cfg.collections, list(cfg.fold_splits) if split == "oof" else [split], announce=split != "oof")
        if not files:
            continue
        # one process per graph at a time (jobs=0: every core), results in file order
        got = parallel_map(baseline_scores, [{"f": f, "chunk_configs": int(cfg.chunk_configs)} for f in files],
                           [str(f.path) for f in files], int(cfg.jobs), desc=f"baseline {split}")
        scores = {f.id: s for f, s in zip(files, got)}
        out = predictions_path(cfg.predictions, cfg.name, split)
        write_predictions(out, scores, cfg)
        log.info("wrote %s (%d graphs)", out, len(scores))
        written[split] = len(scores)
    finish_stage(stamp_dir, written)
    return written


@stage("baseline")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
