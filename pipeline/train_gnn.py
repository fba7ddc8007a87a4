"""Train the cross-configuration-attention GNN per collection, then score valid and test.

    python -m pipeline.train_gnn [collections=[layout:xla:random]] [epochs=20] [resume=true]
    python -m pipeline.train_gnn time_budget=60 [resume=true]       # at most an hour per collection
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
`models/<collection dir>/last.pt` every epoch and `best.pt` when validation improves (model,
optimizer, scheduler and scaler state, epoch, step, RNG states, history, and the resolved
config; with `swa_start`, from that fraction of the epochs on, the mean of the weights at the
epochs' ends is what is validated and what best.pt keeps); then `predictions/<name>/<split>.parquet` (+ `.yaml`: the config) for `splits`, all
collections of the run merged, from each collection's best.pt; in train mode finally the stamp
`models/.complete`. Under torchrun (gloo on CPU, nccl on GPU) each rank trains on its shard of the
graphs and DDP averages the gradients; validation and inference are sharded and gathered; rank
0 writes every file. On CPU without torchrun, `jobs` collections train at once, one process
each (`auto`: as many as the cores hold at `threads` each), with the results of a sequential
run. After a collection's first epoch the log says how long the rest will take;
`time_budget` (minutes per collection) stops training at a step boundary, saves last.pt there
and predicts with best.pt.
Invariants: every ORIGINAL config index of every graph gets a score (through `config_map`);
a run with `resume=true` continues from last.pt at the next epoch (or at the step where a
time budget stopped it) and, because every epoch's sampling derives from (seed, epoch, rank)
only, ends where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch
import torch.distributed as tdist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from models.gnn import GNNRanker
from models.metrics import config_order, graph_score
from pipeline.core.cli import stage
from pipeline.core.errors import DataError, where
from pipeline.core.logger import NullLogger
from pipeline.core.prefetch import Prefetch
from pipeline.core.progress import tqdm
from pipeline.gnn import memory
from pipeline.gnn.allocator import set_malloc
from pipeline.gnn.dataset import GraphData, feature_dims, graph_files, load_graphs, sample_rows
from pipeline.gnn.steps import build_batch, build_model, check_choices, configs_per_step, load_model, model_config, score_graph, train_step
from pipeline.gnn.training import (
    Dist,
    Precision,
    WeightAverage,
    epoch_order,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    rng_states,
    save_checkpoint,
    seed_everything,
    set_rng_states,
    setup_dist,
    shard,
)
from pipeline.io.catalog import collection_dir, collection_kind, wanted_collections
from pipeline.train import folds, trainer

log = logging.getLogger(__name__)
ESTIMATE_AFTER = 20  # steps before the first time estimate
LAST, BEST = "last.pt", "best.pt"


# ---------------------------------------------------------------------------- scoring


def validate(model: GNNRanker, graphs: list[GraphData], k: int, permutations: int, seed: int, prec: Precision,
             dist: Dist) -> tuple[float, dict[str, float]]:
    """Collection score (mean per-graph competition metric) over `graphs`, sharded over ranks."""
    mine = {}
    for g in shard(graphs, dist):
        with where(g.id):
            s = score_graph(model, g, k, permutations, seed, prec)
        mine[g.id] = graph_score(g.kind, config_order(g.kind, s), g.original_runtime)
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


@dataclass
class Training:
    """One collection's training run: the model, its optimizer state and where it stands."""

    collection: str
    out_dir: Path
    model: GNNRanker
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    prec: Precision
    model_config: dict
    k: int
    infer_k: int
    epochs: int
    steps_per_epoch: int
    train: list[GraphData]
    valid: list[GraphData]
    # epoch to run next, steps already done in it (a run stopped by time_budget), global step,
    # best valid score and its epoch, one record per finished epoch
    state: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "epoch_step": 0, "step": 0, "best": -math.inf,
                                                            "best_epoch": -1, "history": []})
    memory: dict | None = None  # what memory_budget chose (fit_memory)
    swa: WeightAverage | None = None  # swa_start: the weights averaged at the ends of epochs swa_from, swa_from + 1, ...
    swa_from: int = 0
    feed: dict = field(default_factory=dict)  # the last epoch's batch building: seconds built, waited for, of the steps
    started: tuple[float, int] = (0.0, 0)  # time.monotonic() and global step when this invocation began

    def checkpoint(self, cfg: DictConfig) -> dict:
        return {"collection": self.collection, "model_config": self.model_config,
                "config": OmegaConf.to_container(cfg, resolve=True), "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states(),
                "swa": None if self.swa is None else {"state": self.swa.state, "count": self.swa.count}, **self.state}


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


def prepare(cfg: DictConfig, collection: str, train: list[GraphData], valid: list[GraphData], dist: Dist) -> Training:
    """Build the model, optimizer, schedule and scaler (seeded), fitted to `memory_budget`,
    resumed from last.pt if asked."""
    mcfg = model_config(cfg, feature_dims(train + valid), collection_kind(collection))
    seed_everything(int(cfg.seed))
    model = build_model(mcfg).to(dist.device)
    train = [g.to(dist.device) for g in train]
    prec = Precision.make(dist.device, bool(cfg.amp), str(cfg.amp_dtype))
    k = configs_per_step(cfg, collection)
    k, infer_k, plan = fit_memory(cfg, collection, model, train, k, int(cfg.infer_k or k), prec)
    steps_per_epoch = -(-len(train) * int(cfg.samples_per_graph) // dist.world)
    total = int(cfg.epochs) * steps_per_epoch
    swa_from = swa_start_epoch(cfg)
    opt = make_optimizer(model, cfg.optimizer)
    sched = make_scheduler(opt, cfg.scheduler, total)
    run = Training(collection, Path(cfg.models) / collection_dir(collection), model,
                   DistributedDataParallel(model) if dist.enabled else model, opt, sched, prec.scaler(), prec, mcfg, k,
                   infer_k, int(cfg.epochs), steps_per_epoch, train,
                   [g.to(dist.device) for g in validation_view(valid, cfg.valid_max_configs, int(cfg.seed))], memory=plan,
                   swa=None if swa_from is None else WeightAverage(), swa_from=swa_from or 0)
    if cfg.resume:
        resume(run)
    return run


def swa_start_epoch(cfg: DictConfig) -> int | None:
    """The first epoch whose end weights `swa_start` averages (None: off)."""
    if cfg.swa_start is None:
        return None
    frac = float(cfg.swa_start)
    if not 0 <= frac < 1:
        raise DataError(None, f"swa_start must be a fraction of the epochs in [0, 1) or null, got {cfg.swa_start}", key="swa_start")
    return int(math.floor(frac * int(cfg.epochs)))


def fit_memory(cfg: DictConfig, collection: str, model: GNNRanker, train: list[GraphData], k: int, infer_k: int,
               prec: Precision) -> tuple[int, int, dict | None]:
    """(K, inference group size, what was chosen) within `memory_budget` GB on the largest
    train graph (pipeline.gnn.memory; sets `model.checkpoint`), logged; unchanged without a
    budget. Every rank plans the same."""
    if cfg.memory_budget is None:
        return k, infer_k, None
    budget = float(cfg.memory_budget) * memory.GB
    g = max(train, key=lambda g: g.graph.num_nodes + g.graph.edge_index.shape[0])
    footprint = memory.measure(model, g, prec.autocast)
    try:
        chosen = memory.plan(budget, k, infer_k, footprint, model.checkpoint)
    except ValueError as e:
        raise DataError(None, f"{e} on {g.id} ({g.graph.num_nodes} nodes)", key="memory_budget") from None
    model.checkpoint = chosen.checkpoint
    log.info("%s: %s (largest train graph %s: %d nodes)", collection, chosen.describe(budget), g.id, g.graph.num_nodes)
    return chosen.k, chosen.infer_k, {"k": chosen.k, "checkpoint": chosen.checkpoint, "infer_k": chosen.infer_k,
                                      "train_gb": round(chosen.train_bytes / memory.GB, 3), "graph": g.id}


def resume(run: Training) -> None:
    """Continue from last.pt: the next epoch, or the rest of the epoch a time budget cut short."""
    last = run.out_dir / LAST
    if not last.is_file():
        log.info("%s: resume=true but no %s yet; starting from scratch", run.collection, last)
        return
    ck = load_checkpoint(last)
    if ck["collection"] != run.collection or ck["model_config"] != run.model_config:
        raise DataError(last, "was trained with another model config or collection; resume=false starts over")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])  # its lambda is rebuilt above: a longer run stretches the cosine
    run.scaler.load_state_dict(ck["scaler"])
    set_rng_states(ck["rng"])
    if run.swa is not None and ck.get("swa"):
        run.swa = WeightAverage({k: v.to(run.prec.device)
                                 for k, v in ck["swa"]["state"].items()}, int(ck["swa"]["count"]))
    run.state = {key: ck.get(key, 0) for key in run.state}
    if not run.state["epoch_step"]:  # last.pt of a finished epoch
        run.state["epoch"] += 1
    log.info("%s: resuming from %s at epoch %d, step %d", run.collection, last, run.state["epoch"] + 1, run.state["step"])


def run_epoch(cfg: DictConfig, run: Training, epoch: int, dist: Dist, deadline: float) -> list[float]:
    """The epoch's steps from `state.epoch_step` on; stops early at the step boundary where
    `deadline` (time.monotonic()) passes, with `state.epoch_step` the steps done. Steps skipped on
    resume still draw their configs, so the rest of the epoch samples what it would have."""
    run.model.train()
    rng = np.random.default_rng([int(cfg.seed), 2, epoch, dist.rank])
    order = epoch_order(len(run.train), int(cfg.samples_per_graph), int(cfg.seed), epoch, dist)
    skip, losses = run.state["epoch_step"], []
    # every step's configs are drawn up front, in order, the skipped steps' too: the batches then
    # depend on their step alone, and are built `prefetch` steps ahead by `prefetch_workers` threads
    draws = [(i, gi, sample_rows(run.train[gi].num_configs, run.k, rng)) for i, gi in enumerate(order)]

    def build(draw: tuple) -> tuple:
        with where(run.train[draw[1]].id):
            return build_batch(run.train[draw[1]], draw[2])

    feed = Prefetch(draws[skip:], build, int(cfg.prefetch), int(cfg.prefetch_workers))
    batches = iter(feed)
    bar = tqdm(batches, total=len(order) - skip, desc=f"{run.collection} {epoch + 1}/{run.epochs}", unit="step",
               leave=False, disable=not (cfg.progress and dist.main), dynamic_ncols=True)
    t_epoch = time.perf_counter()
    for (i, gi, _rows), (batch, target) in bar:
        with where(run.train[gi].id):
            loss = train_step(run.net, run.model, batch, target, run.opt, run.sched, run.scaler, run.prec,
                              float(cfg.grad_clip or 0))
        run.state["step"] += 1
        run.state["epoch_step"] = i + 1
        if run.state["step"] - run.started[1] == ESTIMATE_AFTER and dist.main:
            log_step_estimate(run)
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if past(deadline, dist) and i + 1 < len(order):
            break
    else:
        run.state["epoch_step"] = 0
    bar.close()
    batches.close()  # a loop left early (time budget) stops the builder thread here
    run.feed = {"build_s": round(feed.build_s, 3), "waited_s": round(feed.waited_s, 3),
                "steps_s": round(time.perf_counter() - t_epoch, 3)}
    return losses


def past(deadline: float, dist: Dist) -> bool:
    """Whether the deadline has passed, agreed by every rank (rank 0's clock decides)."""
    if deadline == math.inf:
        return False
    now = time.monotonic() > deadline
    return bool(dist.gather(now)[0]) if dist.enabled else now


def close_epoch(cfg: DictConfig, run: Training, epoch: int, losses: list[float], dist: Dist, logger, t0: float) -> None:
    """Validate, record, log and checkpoint a finished epoch (last.pt, and best.pt when it
    improved). From epoch `swa_from` on (`swa_start`), the weights averaged so far are what is
    validated and what best.pt keeps; last.pt keeps the trained weights and the average."""
    train_loss = dist.mean(float(np.mean(losses))) if losses else float("nan")
    averaged = run.swa is not None and epoch >= run.swa_from
    if averaged:
        run.swa.update(run.model)
    with run.swa.swapped_in(run.model) if averaged else contextlib.nullcontext():
        if run.valid:
            metric, _ = validate(run.model, run.valid, run.infer_k, int(cfg.valid_permutations), int(cfg.seed), run.prec, dist)
            improved = metric > run.state["best"]
        else:
            metric, improved = float("nan"), True  # nothing to validate on: the latest model is the best
    if improved:
        run.state["best"], run.state["best_epoch"] = metric, epoch
    rec = {"epoch": epoch, "step": run.state["step"], "train_loss": train_loss, "valid": metric if run.valid else None,
           "lr": run.sched.get_last_lr()[0], "seconds": time.monotonic() - t0,
           "averaged_epochs": run.swa.count if averaged else 0, "feed": dict(run.feed)}
    run.state["history"].append(rec)
    c = run.collection
    logger.log({f"{c}/train_loss": train_loss, f"{c}/valid": metric, f"{c}/lr": rec["lr"]}, step=run.state["step"])
    feed = run.feed
    log.info("%s epoch %d/%d: loss %.4f, valid %s%s%s%s", c, epoch + 1, run.epochs, train_loss,
             f"{metric:.4f}" if run.valid else "-", f" (weights averaged over {run.swa.count} epochs)" if averaged else "",
             " (best)" if improved else "",
             f"; batches built in {feed['build_s']:.1f} s, the steps waited {feed['waited_s']:.1f} s of {feed['steps_s']:.1f} s"
             if feed.get("steps_s") else "")
    if dist.main:
        ck = {**run.checkpoint(cfg), "epoch": epoch}
        save_checkpoint(run.out_dir / LAST, ck)
        if improved:
            save_checkpoint(run.out_dir / BEST, {**ck, "model": run.swa.state} if averaged else ck)
    dist.barrier()


def save_interrupted(cfg: DictConfig, run: Training, epoch: int, dist: Dist) -> None:
    """last.pt in the middle of `epoch` (resume=true runs the rest of it); best.pt too when no
    epoch has finished yet, so the collection still predicts."""
    if dist.main:
        ck = {**run.checkpoint(cfg), "epoch": epoch}
        save_checkpoint(run.out_dir / LAST, ck)
        if not (run.out_dir / BEST).is_file():
            save_checkpoint(run.out_dir / BEST, ck)
    dist.barrier()


def log_step_estimate(run: Training) -> None:
    """After the first ESTIMATE_AFTER steps of this invocation: the time per step and the
    training time left at that pace (validation not counted)."""
    t0, step0 = run.started
    per_step = (time.monotonic() - t0) / (run.state["step"] - step0)
    left = run.epochs * run.steps_per_epoch - run.state["step"]
    log.info("%s: %.3g s per step; about %.1f min for the %d steps left (validation not counted)",
             run.collection, per_step, per_step * left / 60, left)


def log_estimate(run: Training, first_epoch: int, epoch: int, t0: float) -> None:
    """After the first epoch of this invocation: the time per epoch and what is left."""
    per_epoch = (time.monotonic() - t0) / (epoch + 1 - first_epoch)
    left = run.epochs - epoch - 1
    log.info("%s: %.1f min per epoch (validation included); about %.1f min left for %d epochs",
             run.collection, per_epoch / 60, per_epoch * left / 60, left)


def train_collection(cfg: DictConfig, collection: str, dist: Dist, logger) -> dict | None:
    """Train one collection for `epochs` (less `stop_after` epochs, or within `time_budget`
    minutes); returns its summary, or None when no train graph has an order to learn."""
    train = training_graphs(cfg, collection)
    if not train:
        log.warning("%s: no train graph has an order to learn under %s; not trained", collection, cfg.data)
        return None
    run = prepare(cfg, collection, train, load_graphs(cfg.data, collection, "valid"), dist)
    log.info("%s: %d train graphs, %d valid, K=%d, %d epochs x %d steps, %d parameters, device %s%s", collection,
             len(run.train), len(run.valid), run.k, run.epochs, run.steps_per_epoch,
             sum(p.numel() for p in run.model.parameters()), dist.device,
             f", {dist.world} rank{'s' if dist.world > 1 else ''} on {tdist.get_backend()}" if dist.enabled else "")
    t0 = time.monotonic()
    run.started = (t0, run.state["step"])
    deadline = t0 + 60 * float(cfg.time_budget) if cfg.time_budget is not None else math.inf
    first, stopped = run.state["epoch"], None
    for epoch in range(first, run.epochs):
        if cfg.stop_after is not None and epoch - first >= int(cfg.stop_after):
            stopped = "stop_after"
            log.info("%s: stopping after %d epochs as asked (stop_after); resume=true continues", collection, epoch - first)
            break
        losses = run_epoch(cfg, run, epoch, dist, deadline)
        if run.state["epoch_step"]:
            stopped = "time_budget"
            save_interrupted(cfg, run, epoch, dist)
            log.warning("%s: time_budget=%s min reached at step %d of epoch %d; predicting with the best checkpoint "
                        "(resume=true continues)", collection, cfg.time_budget, run.state["epoch_step"], epoch + 1)
            break
        close_epoch(cfg, run, epoch, losses, dist, logger, t0)
        run.state["epoch"] = epoch + 1
        if epoch == first and epoch + 1 < run.epochs:
            log_estimate(run, first, epoch, t0)
    if not (run.out_dir / BEST).is_file():
        raise DataError(run.out_dir, "no epoch finished, so there is no best checkpoint (epochs must be >= 1)")
    history = run.state["history"]
    return {"best": run.state["best"] if run.valid else None, "best_epoch": run.state["best_epoch"],
            "epochs": len(history), "steps": run.state["step"], "seconds": round(time.monotonic() - t0, 3),
            "stopped": stopped, "memory": run.memory, "train_loss": [h["train_loss"] for h in history], "history": history}


# ---------------------------------------------------------------------------- inference


def score_split(cfg: DictConfig, collection: str, split: str, dist: Dist, prec: Precision) -> dict[str, np.ndarray]:
    """Scores of every original config of every `split` graph of `collection` (this rank's
    shard gathered on every rank), from the collection's best.pt."""
    model, ck = load_model(Path(cfg.models) / collection_dir(collection) / BEST, dist.device)
    k = int(cfg.infer_k or configs_per_step(OmegaConf.create(ck["config"]), collection))
    paths = graph_files(cfg.data, collection, split)
    # labelled graphs (valid, out of fold) carry every config (60k on real layout graphs): fewer permutations there
    perms = int(cfg.infer_permutations if split == "test" or cfg.labelled_permutations is None else cfg.labelled_permutations)
    mine: dict[str, np.ndarray] = {}
    bar = tqdm(shard(paths, dist), desc=f"predict {collection} {split}", unit="graph", leave=False,
               disable=not (cfg.progress and dist.main))
    for p in bar:
        with where(f"{collection}: {p}"):
            g = load_graphs(cfg.data, collection, split, [p])[0].to(dist.device)
            mine[g.id] = score_graph(model, g, infer_group(cfg, model, g, k, prec), perms, int(cfg.seed), prec)
    return {gid: s for d in dist.gather(mine) for gid, s in d.items()}


def infer_group(cfg: DictConfig, model: GNNRanker, g: GraphData, k: int, prec: Precision) -> int:
    """Configs per inference pass on `g`: `k`, or fewer where `memory_budget` says so (logged)."""
    if cfg.memory_budget is None:
        return k
    budget = float(cfg.memory_budget) * memory.GB
    group = memory.infer_group(budget, k, memory.measure(model, g, prec.autocast, train=False).infer)
    if group < k:
        log.info("%s: inference in groups of %d configs instead of %d to fit memory_budget=%s GB", g.id, group, k,
                 cfg.memory_budget)
    return group


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


def fit_in_worker(config: dict, collection: str) -> dict | None:
    """One collection trained in a worker process of `jobs` (pipeline.train.trainer)."""
    cfg, dist = _worker(config)
    return train_collection(cfg, collection, dist, NullLogger())


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
                    return train_collection(cfg, c, dist, logger)

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
