"""Train the cross-configuration-attention GNN per collection, then score valid and test.

    python -m pipeline.train_gnn [collections=[layout:xla:random]] [epochs=20] [resume=true]
    python -m pipeline.train_gnn mode=predict [splits=[test]]       # best checkpoints, no training
    torchrun --nproc_per_node=N -m pipeline.train_gnn ...            # DDP, graphs sharded over ranks
    make train-gnn

Reads the extract stage's GNN tensors `data/<collection dir>/<split>/<stem>.npz`
(`${paths.processed}/gnn`). Per collection (`collections`, default every one with train
graphs), trains a `models.gnn.GNNRanker` (conf/arch/gnn.yaml): each step samples K unique
configs of one train graph (`k.default`, `k.random`, `k.tile`), ranking loss, AdamW, cosine
schedule after a linear warmup, gradient clipping, autocast (bf16, else fp16 with a grad
scaler) on CUDA only; every epoch it scores the valid graphs with the competition metric
(Kendall tau, tile score; permutation-averaged `predict_scores`). Writes
`out/<collection dir>/last.pt` every epoch and `best.pt` when validation improves (model,
optimizer, scheduler and scaler state, epoch, step, RNG states, history, and the resolved
config); then `predictions/<split>.parquet` (+ `.yaml`, the resolved config) for `splits`, all
collections of the run merged, from each collection's best.pt; in train mode finally the stamp
`out/.complete`. Under torchrun (gloo on CPU, nccl on GPU) each rank trains on its shard of the
graphs and DDP averages the gradients; validation and inference are sharded and gathered; rank
0 writes every file.
Invariants: every ORIGINAL config index of every graph gets a score (through `config_map`);
a run with `resume=true` continues from last.pt at the next epoch and, because every epoch's
sampling derives from (seed, epoch, rank) only, ends where an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch.distributed as tdist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from features.configs import unlearnable_reason
from models.gnn import GNNRanker
from models.metrics import graph_score, ranking
from pipeline.io.audit_json import exclusions
from pipeline.core.cli import stage
from pipeline.core.errors import DataError, where
from pipeline.core.gnn_steps import build_model, check_choices, configs_per_step, load_model, model_config, score_graph, train_step
from pipeline.core.progress import tqdm
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.core.training import (Dist, Precision, epoch_order, load_checkpoint, make_optimizer, make_scheduler,
                                    rng_states, save_checkpoint, seed_everything, set_rng_states, setup_dist, shard)
from pipeline.io.catalog import COLLECTIONS, collection_dir, collection_kind
from pipeline.io.gnn_tensors import GraphData, feature_dims, graph_files, load_graphs, sample_rows
from pipeline.io.predictions import predictions_path, write_predictions

log = logging.getLogger(__name__)
LAST, BEST = "last.pt", "best.pt"


# ---------------------------------------------------------------------------- scoring


def validate(model: GNNRanker, graphs: list[GraphData], k: int, permutations: int, seed: int, prec: Precision,
             dist: Dist) -> tuple[float, dict[str, float]]:
    """Collection score (mean per-graph competition metric) over `graphs`, sharded over ranks."""
    mine = {}
    for g in shard(graphs, dist):
        with where(g.id):
            s = score_graph(model, g, k, permutations, seed, prec)
        mine[g.id] = graph_score(g.kind, ranking(s), g.original_runtime)
    per = {gid: v for d in dist.gather(mine) for gid, v in d.items()}  # no nan: an undefined tau already counts 0
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def validation_view(graphs: list[GraphData], max_configs: int | None, seed: int) -> list[GraphData]:
    """Each valid graph capped at `max_configs` unique configs (a fixed random subset), so an
    epoch's validation stays bounded on graphs of 100k configs."""
    if not max_configs:
        return graphs
    out = []
    for i, g in enumerate(graphs):
        if g.num_configs > max_configs:
            rows = np.random.default_rng([seed, 7, i]).choice(g.num_configs, max_configs, replace=False)
            g = g.subset(rows)
        out.append(g)
    return out


# ---------------------------------------------------------------------------- training


def train_collection(cfg: DictConfig, collection: str, dist: Dist, logger) -> dict | None:
    out_dir = Path(cfg.out) / collection_dir(collection)
    train = []
    excluded = exclusions(cfg.exclude, cfg.audit)
    for g in load_graphs(cfg.data, collection, "train"):
        reason = unlearnable_reason(g.runtime) or excluded.get(g.id)
        if reason is None:
            train.append(g)
        else:
            log.info("%s: %s set aside from training: %s", collection, g.id, reason)
    if not train:
        log.warning("%s: no train graph has an order to learn under %s; not trained", collection, cfg.data)
        return None
    valid = load_graphs(cfg.data, collection, "valid")
    kind = collection_kind(collection)
    dims = feature_dims(train + valid)
    mcfg = model_config(cfg, dims, kind)
    seed = int(cfg.seed)
    seed_everything(seed)
    device, prec = dist.device, Precision.make(dist.device, bool(cfg.amp), str(cfg.amp_dtype))
    model = build_model(mcfg).to(device)
    k = configs_per_step(cfg, collection)
    steps_per_epoch = -(-len(train) * int(cfg.samples_per_graph) // dist.world)
    epochs = int(cfg.epochs)
    total = epochs * steps_per_epoch
    warmup = max(1, int(float(cfg.warmup) * total))
    opt = make_optimizer(model, cfg.optimizer)
    sched = make_scheduler(opt, total, warmup, float(cfg.min_lr_ratio))
    scaler = prec.scaler()
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "history": []}
    last = out_dir / LAST
    if cfg.resume and last.is_file():
        ck = load_checkpoint(last)
        if ck["collection"] != collection or ck["model_config"] != mcfg:
            raise DataError(last, "was trained with another model config or collection; resume=false starts over")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])  # its lambda is rebuilt above: a longer run stretches the cosine
        scaler.load_state_dict(ck["scaler"])
        set_rng_states(ck["rng"])
        state = {key: ck[key] for key in state}
        state["epoch"] = ck["epoch"] + 1
        log.info("%s: resuming from %s at epoch %d, step %d", collection, last, state["epoch"], state["step"])
    elif cfg.resume:
        log.info("%s: resume=true but no %s yet; starting from scratch", collection, last)
    net = DistributedDataParallel(model) if dist.enabled else model
    train = [g.to(device) for g in train]
    valid_v = [g.to(device) for g in validation_view(valid, cfg.valid_max_configs, seed)]
    infer_k = int(cfg.infer_k or k)
    log.info("%s: %d train graphs, %d valid, K=%d, %d epochs x %d steps, %d parameters, device %s%s",
             collection, len(train), len(valid), k, epochs, steps_per_epoch,
             sum(p.numel() for p in model.parameters()), device, f", {dist.world} ranks" if dist.enabled else "")
    t0 = time.monotonic()
    ran = 0
    for epoch in range(state["epoch"], epochs):
        if cfg.stop_after is not None and ran >= int(cfg.stop_after):
            log.info("%s: stopping after %d epochs as asked (stop_after); resume=true continues", collection, ran)
            break
        model.train()
        rng = np.random.default_rng([seed, 2, epoch, dist.rank])
        losses = []
        bar = tqdm(epoch_order(len(train), int(cfg.samples_per_graph), seed, epoch, dist), desc=f"{collection} {epoch + 1}/{epochs}",
                   unit="step", leave=False, disable=not (cfg.progress and dist.main), dynamic_ncols=True)
        for gi in bar:
            with where(train[gi].id):
                loss = train_step(net, model, train[gi], sample_rows(train[gi].num_configs, k, rng), opt, sched, scaler,
                                  prec, float(cfg.grad_clip or 0))
            state["step"] += 1
            losses.append(float(loss))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        train_loss = dist.mean(float(np.mean(losses)))
        if valid_v:
            metric, _ = validate(model, valid_v, infer_k, int(cfg.valid_permutations), seed, prec, dist)
            improved = metric > state["best"]
        else:
            metric, improved = float("nan"), True  # nothing to validate on: the latest model is the best
        if improved:
            state["best"], state["best_epoch"] = metric, epoch
        rec = {"epoch": epoch, "step": state["step"], "train_loss": train_loss, "valid": metric if valid_v else None,
               "lr": sched.get_last_lr()[0], "seconds": time.monotonic() - t0}
        state["history"].append(rec)
        logger.log({f"{collection}/train_loss": train_loss, f"{collection}/valid": metric, f"{collection}/lr": rec["lr"]}, step=state["step"])
        log.info("%s epoch %d/%d: loss %.4f, valid %s%s", collection, epoch + 1, epochs, train_loss,
                 f"{metric:.4f}" if valid_v else "-", " (best)" if improved else "")
        if dist.main:
            ck = {"collection": collection, "model_config": mcfg, "config": OmegaConf.to_container(cfg, resolve=True),
                  "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "scaler": scaler.state_dict(), "rng": rng_states(), **state, "epoch": epoch}
            save_checkpoint(last, ck)
            if improved:
                save_checkpoint(out_dir / BEST, ck)
        dist.barrier()
        ran += 1
    if not (out_dir / BEST).is_file():
        raise DataError(out_dir, "no epoch finished, so there is no best checkpoint (epochs must be >= 1)")
    return {"best": state["best"] if valid_v else None, "best_epoch": state["best_epoch"], "epochs": len(state["history"]),
            "steps": state["step"], "seconds": round(time.monotonic() - t0, 1),
            "train_loss": [h["train_loss"] for h in state["history"]]}


# ---------------------------------------------------------------------------- inference


def predict(cfg: DictConfig, collections: list[str], dist: Dist) -> dict[str, int]:
    """Score every original config of every graph of `splits` with each collection's best.pt;
    one predictions file per split (all collections merged), written by rank 0."""
    prec = Precision.make(dist.device, bool(cfg.amp), str(cfg.amp_dtype))
    models: dict[str, tuple[GNNRanker, int]] = {}
    for c in collections:
        model, ck = load_model(Path(cfg.out) / collection_dir(c) / BEST, dist.device)
        models[c] = (model, int(cfg.infer_k or configs_per_step(OmegaConf.create(ck["config"]), c)))
    written = {}
    for split in cfg.splits:
        jobs = [(c, p) for c in collections for p in graph_files(cfg.data, c, split)]
        if not jobs:
            log.info("no %s graphs under %s for %s, skipped", split, cfg.data, ", ".join(collections))
            continue
        mine: dict[str, np.ndarray] = {}
        for c, p in tqdm(shard(jobs, dist), desc=f"predict {split}", unit="graph", disable=not (cfg.progress and dist.main)):
            with where(f"{c}: {p}"):
                g = load_graphs(cfg.data, c, split, [p])[0].to(dist.device)
                model, k = models[c]
                mine[g.id] = score_graph(model, g, k, int(cfg.infer_permutations), int(cfg.seed), prec)
        parts = dist.gather(mine)
        if dist.main:
            scores = {gid: s for d in parts for gid, s in d.items()}
            out = predictions_path(cfg.predictions, "gnn", split)
            write_predictions(out, dict(sorted(scores.items())), cfg)
            log.info("wrote %s (%d graphs, %d configs)", out, len(scores), sum(s.size for s in scores.values()))
            written[split] = len(scores)
        dist.barrier()
    return written


def wanted_collections(cfg: DictConfig) -> list[str]:
    """`collections`, or every collection when null."""
    return list(cfg.collections) if cfg.collections is not None else list(COLLECTIONS)


def run(cfg: DictConfig) -> dict:
    """Train (mode=train) and/or predict (both modes); returns {collection: training summary}."""
    if cfg.mode not in ("train", "predict"):
        raise DataError(None, f"unknown mode '{cfg.mode}' (train or predict)")
    check_choices(cfg)
    if not Path(cfg.data).is_dir():
        raise DataError(cfg.data, "GNN tensors not found (run the extract stage first: make extract)")
    dist = setup_dist(cfg)
    try:
        summary: dict[str, dict] = {}
        if cfg.mode == "train":
            collections = [c for c in wanted_collections(cfg) if graph_files(cfg.data, c, "train")]
            if not collections:
                log.warning("%s: no train graphs for the requested collections; nothing trained", cfg.data)
            if dist.main:
                begin_stage(cfg.out)
                for split in cfg.splits:  # a collection no longer trained must not leave stale predictions
                    predictions_path(cfg.predictions, "gnn", split).unlink(missing_ok=True)
            dist.barrier()
            logger = hydra.utils.instantiate(cfg.logger, run_config=OmegaConf.to_container(cfg, resolve=True), _recursive_=False) if dist.main else None
            logger = logger or hydra.utils.instantiate({"_target_": "pipeline.core.logger.NullLogger"})
            try:
                for c in collections:
                    with where(c):
                        s = train_collection(cfg, c, dist, logger)
                    if s is not None:
                        summary[c] = s
            finally:
                logger.finish()
            trained = list(summary)
        else:
            trained = [c for c in wanted_collections(cfg) if (Path(cfg.out) / collection_dir(c) / BEST).is_file()]
            if not trained:
                raise DataError(cfg.out, "no best.pt checkpoints for the requested collections (train first: make train-gnn)")
        if cfg.stop_after is None or all(s["epochs"] >= int(cfg.epochs) for s in summary.values()):
            predict(cfg, trained, dist)
            if cfg.mode == "train" and dist.main:
                finish_stage(cfg.out, {c: {k: v for k, v in s.items() if k != "train_loss"} for c, s in summary.items()})
        for c, s in summary.items():
            log.info("%s: best valid %s at epoch %d (%d steps, %.0f s)", c,
                     "-" if s["best"] is None else f"{s['best']:.4f}", s["best_epoch"] + 1, s["steps"], s["seconds"])
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


@stage("train_gnn")
def main(cfg: DictConfig) -> float:
    return valid_metric(run(cfg))


if __name__ == "__main__":
    main()
