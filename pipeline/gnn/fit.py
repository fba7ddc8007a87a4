"""One collection's GNN training and inference: the model, optimizer and schedule built and
fitted to a memory budget, epochs of sampled steps with validation, checkpoints, and scores of
every original config from the best checkpoint.

Invariants: every ORIGINAL config index of every graph gets a score (through `config_map`);
a run with `resume=true` continues from last.pt at the next epoch (or at the step where a time
budget stopped it) and, because every epoch's sampling derives from (seed, epoch, rank) only,
ends where an uninterrupted run would; under torchrun rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from models.gnn import GNNRanker
from models.metrics import config_order, graph_score
from pipeline.core.errors import DataError, where
from pipeline.core.prefetch import Prefetch
from pipeline.core.progress import tqdm
from pipeline.gnn import memory
from pipeline.gnn.dataset import GraphData, feature_dims, graph_files, load_graphs, sample_rows
from pipeline.gnn.steps import build_batch, build_model, configs_per_step, load_model, model_config, score_graph, train_step
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
    shard,
)
from pipeline.io.catalog import collection_dir, collection_kind

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


def train_collection(cfg: DictConfig, collection: str, train: list[GraphData], dist: Dist, logger) -> dict:
    """Train one collection on `train` (its graphs kept for training) for `epochs` (less
    `stop_after` epochs, or within `time_budget` minutes); returns its summary."""
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
