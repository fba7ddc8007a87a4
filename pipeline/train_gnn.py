"""Train the cross-configuration-attention GNN per collection, then score valid and test.

    python -m pipeline.train_gnn [collections=[layout:xla:random]] [epochs=20] [resume=true]
    python -m pipeline.train_gnn time_budget=60 [resume=true]       # at most an hour per collection
    python -m pipeline.train_gnn mode=predict [splits=[test]]       # best checkpoints, no training
    torchrun --nproc_per_node=N -m pipeline.train_gnn ...            # DDP, graphs sharded over ranks
    make train-gnn

The GNN's trainer stage: reads the extract stage's GNN tensors (`data=`), trains a
`models.gnn.GNNRanker` (conf/arch/gnn.yaml) per collection through the trainer skeleton
(pipeline/train/trainer.py: collections in `jobs` processes on CPU, torchrun ranks sharing one
collection), and writes `models/<collection dir>/{last,best}.pt`, then
`predictions/<name>/<split>.parquet` from each collection's best.pt, then the stamp. The
training itself (epochs, validation, checkpoints, memory budget, resume) is `pipeline.gnn.fit`.
Invariants: every ORIGINAL config index of every graph gets a score; a run with `jobs` > 1
gives the results of a sequential one; a run stopped by `stop_after` predicts nothing and
writes no stamp (`resume=true` continues); rank 0 alone writes.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import hydra.utils
import numpy as np
import torch.distributed as tdist
from omegaconf import DictConfig, OmegaConf

from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.logger import NullLogger
from pipeline.gnn.allocator import set_malloc
from pipeline.gnn.dataset import GraphData, graph_files, load_graphs
from pipeline.gnn.fit import BEST, score_split, train_collection
from pipeline.gnn.steps import check_choices
from pipeline.gnn.training import Dist, Precision, setup_dist
from pipeline.io.catalog import collection_dir, wanted_collections
from pipeline.train import folds, trainer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- training graphs


def training_graphs(cfg: DictConfig, collection: str) -> list[GraphData]:
    """The collection's train graphs, less those without an order to learn and those the audit
    excludes (each logged with the reason)."""
    train = []
    excluded = trainer.audit_exclusions(cfg)
    for g in load_graphs(cfg.data, collection, "train"):
        reason = trainer.set_aside_reason(g.id, g.runtime, excluded)
        if reason is None:
            train.append(g)
        else:
            trainer.log_set_aside(collection, g.id, reason)
    return train


# ---------------------------------------------------------------------------- collections at once


def parallel_jobs(cfg: DictConfig, collections: int, dist: Dist) -> int:
    """Collections trained at once, each in its own process: `jobs`, or with `auto` as many as
    the CPU cores hold at `threads` each; 1 on a GPU or under torchrun."""
    if dist.enabled or dist.device.type != "cpu":
        return 1
    if str(cfg.jobs) == "auto":
        threads = int(cfg.threads)
        jobs = (os.cpu_count() or 1) // threads if threads > 0 else 1
    else:
        jobs = int(cfg.jobs)
    return max(1, min(jobs, collections))


def use_malloc(cfg: DictConfig, dist: Dist) -> None:
    """The C allocator policy `malloc` for CPU training (pipeline.gnn.allocator)."""
    if dist.device.type == "cpu" and set_malloc(str(cfg.malloc)):
        log.info("malloc=%s: freed memory is kept for the next steps (malloc=system for glibc's defaults)", cfg.malloc)


_WORKER: dict = {}  # a worker process's config and devices, set up once


def _worker(config: dict) -> tuple[DictConfig, Dist]:
    if "cfg" not in _WORKER:
        cfg = OmegaConf.create(config)
        dist = setup_dist(cfg)
        use_malloc(cfg, dist)
        _WORKER.update(cfg=cfg, dist=dist)
    return _WORKER["cfg"], _WORKER["dist"]


def fit_collection(cfg: DictConfig, collection: str, dist: Dist, logger) -> dict | None:
    """One collection trained on its train graphs less those set aside; None when none is left."""
    train = training_graphs(cfg, collection)
    if not train:
        log.warning("%s: no train graph has an order to learn under %s; not trained", collection, cfg.data)
        return None
    return train_collection(cfg, collection, train, dist, logger)


def fit_in_worker(config: dict, collection: str) -> dict | None:
    """One collection trained in a worker process of `jobs` (pipeline.train.trainer)."""
    cfg, dist = _worker(config)
    return fit_collection(cfg, collection, dist, NullLogger())


def predict_in_worker(config: dict, collection: str, split: str) -> dict[str, np.ndarray]:
    cfg, dist = _worker(config)
    return score_split(cfg, collection, split, dist, Precision.make(dist.device, bool(cfg.amp), str(cfg.amp_dtype)))


def complete(summary: dict[str, dict]) -> bool:
    """A run stopped by `stop_after` predicts nothing and writes no stamp (resume=true continues)."""
    return not any(s["stopped"] == "stop_after" for s in summary.values())


def stamp(summary: dict[str, dict]) -> dict:
    return {c: {k: v for k, v in s.items() if k not in ("train_loss", "history")} for c, s in summary.items()}


def run(cfg: DictConfig) -> dict:
    """Train (mode=train) and/or predict (both modes) through the trainer skeleton
    (pipeline.train.trainer); returns {collection: training summary}."""
    cfg = trainer.check(cfg)
    check_choices(cfg)
    if not Path(cfg.data).is_dir():
        raise DataError(cfg.data, "GNN tensors not found (run the extract stage first: make extract)")
    dist = setup_dist(cfg)
    use_malloc(cfg, dist)
    try:
        if cfg.mode == "train":
            collections = [c for c in wanted_collections(cfg.collections) if graph_files(cfg.data, c, "train")]
            if not collections:
                log.warning("%s: no train graphs for the requested collections; nothing trained", cfg.data)
        else:
            collections = [c for c in wanted_collections(cfg.collections) if (Path(cfg.models) / collection_dir(c) / BEST).is_file()]
            if not collections:
                raise DataError(cfg.models, "no best.pt checkpoints for the requested collections (train first: make train-gnn)")
        jobs = parallel_jobs(cfg, len(collections), dist) if cfg.mode == "train" else 1
        logger = None
        if cfg.mode == "train" and dist.main:
            logger = hydra.utils.instantiate(cfg.logger, run_config=OmegaConf.to_container(cfg, resolve=True), _recursive_=False)
        logger = logger or NullLogger()
        try:
            if jobs > 1:
                config = OmegaConf.to_container(cfg, resolve=True)
                config["progress"] = False  # bars of several processes would interleave on one terminal
                fit, predict = functools.partial(fit_in_worker, config), functools.partial(predict_in_worker, config)
            else:
                prec = Precision.make(dist.device, bool(cfg.amp), str(cfg.amp_dtype))

                def fit(c: str) -> dict | None:
                    return fit_collection(cfg, c, dist, logger)

                def predict(c: str, split: str) -> dict[str, np.ndarray]:
                    return score_split(cfg, c, split, dist, prec)

            summary = trainer.run_collections(
                cfg, collections, fit, predict, desc="train-gnn", stamp=stamp, ranks=dist, jobs=jobs, complete=complete,
                size=lambda c: sum(p.stat().st_size for p in graph_files(cfg.data, c, "train")))
            if jobs > 1:  # epoch records reach the logger when a collection finishes
                for c, s in summary.items():
                    for rec in s["history"]:
                        logger.log({f"{c}/train_loss": rec["train_loss"], f"{c}/valid": rec["valid"], f"{c}/lr": rec["lr"]},
                                   step=rec["step"])
        finally:
            logger.finish()
        for c, s in summary.items():
            log.info("%s: best valid %s at epoch %d (%d steps, %.3f s)%s", c,
                     "-" if s["best"] is None else f"{s['best']:.4f}", s["best_epoch"] + 1, s["steps"], s["seconds"],
                     f", stopped by {s['stopped']}" if s["stopped"] else "")
        # ranks tear the process group down together: a rank that leaves while another still
        # writes can abort in gloo's teardown (SIGABRT at exit)
        dist.barrier()
        return summary
    finally:
        if dist.enabled and tdist.is_initialized():
            tdist.destroy_process_group()


def valid_metric(summary: dict[str, dict]) -> float:
    """The mean best valid score over the collections trained (what a sweep maximizes);
    -inf when none was validated."""
    best = [s["best"] for s in summary.values() if s.get("best") is not None]
    return float(np.mean(best)) if best else float("-inf")


def final_overrides(fold_summaries: list[dict]) -> dict:
    """A final fit trains for the fold models' median epoch count (best epoch + 1)."""
    return {"epochs": folds.median_int([s["best_epoch"] + 1 for s in fold_summaries], 0)} if fold_summaries else {}


TRAINER = trainer.Trainer("train_gnn", run, valid_metric, final_overrides, seeds_inside=False)


@stage("train_gnn")
def main(cfg: DictConfig) -> float:
    return TRAINER.main(cfg)


if __name__ == "__main__":
    main()
