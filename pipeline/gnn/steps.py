"""The GNN's steps shared by `pipeline.train_gnn` and `pipeline.tools.bench_gnn`: config checks, the
model built from its config (and back from a checkpoint), one optimizer step, and scoring every
config of a graph.
"""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from models import gnn
from models.gnn import GNNRanker, predict_scores
from pipeline.core.errors import DataError
from pipeline.gnn.allocator import POLICIES
from pipeline.gnn.dataset import GraphData
from pipeline.gnn.training import AMP_DTYPES, Precision, load_checkpoint
from pipeline.io.catalog import collection_kind


def check_choices(cfg: DictConfig) -> None:
    """Fail with one sentence on a config choice the model or the stage does not know, before
    anything is loaded or built: the model's knobs through `models.gnn.GNNConfig` (their one
    check), the stage's own here."""
    try:
        gnn.GNNConfig.of(OmegaConf.to_container(cfg.model, resolve=True))
    except ValueError as e:
        raise DataError(None, f"model.{e}") from None
    budget = cfg.get("memory_budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise DataError(None, f"memory_budget={budget} must be a positive number of GB (or null)")
    if cfg.get("malloc") is not None and str(cfg.malloc) not in POLICIES:
        raise DataError(None, f"malloc={cfg.malloc} is not one of {', '.join(POLICIES)}")
    if cfg.get("amp_dtype") is not None and str(cfg.amp_dtype) not in AMP_DTYPES:
        raise DataError(None, f"amp_dtype={cfg.amp_dtype} is not one of {', '.join(AMP_DTYPES)}")


def configs_per_step(cfg: DictConfig, collection: str) -> int:
    """K for a collection: by search (`default`, `random`) or `tile`."""
    key = "tile" if collection_kind(collection) == "tile" else collection.split(":")[2]
    return int(cfg.k[key])


def model_config(cfg: DictConfig, dims: dict[str, int], kind: str) -> dict:
    """The resolved model config with the data-dependent widths filled in (stored in checkpoints,
    so `mode=predict` rebuilds exactly the trained architecture whatever conf/ says now)."""
    m = OmegaConf.to_container(cfg.model, resolve=True)
    m.update(dims, kind=kind)
    return m


def build_model(mcfg: dict) -> GNNRanker:
    return hydra.utils.instantiate(OmegaConf.create(mcfg))


def load_model(path: Path, device: torch.device) -> tuple[GNNRanker, dict]:
    ck = load_checkpoint(path)
    model = build_model(ck["model_config"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


def build_batch(g: GraphData, rows: np.ndarray) -> tuple[gnn.GraphBatch, Tensor]:
    """The batch of the unique configs `rows` of `g` (layouts completed, cost terms, on g's
    device) and its runtimes: the CPU work of a step, done ahead of it by `pipeline.core.prefetch`."""
    return g.select(rows), torch.from_numpy(g.runtime[rows]).to(g.device)


def train_step(net: torch.nn.Module, model: GNNRanker, batch: gnn.GraphBatch, target: Tensor, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, prec: Precision,
               grad_clip: float) -> Tensor:
    """One optimizer step on a batch of `build_batch`: forward under autocast (`net`: the model,
    or its DDP wrapper), ranking loss in fp32, scaled backward, gradient clipping (`grad_clip` >
    0), optimizer and scheduler step. Returns the detached loss."""
    with prec.autocast():
        scores = net(batch)
    loss = model.loss(scores.float(), target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return loss.detach()


def score_graph(model: GNNRanker, g: GraphData, k: int, permutations: int, seed: int, prec: Precision) -> np.ndarray:
    """(C,) scores of every original config of `g` (lower = predicted faster)."""
    gen = torch.Generator().manual_seed(seed)
    with prec.autocast():
        unique = predict_scores(model, g, k=k, permutations=permutations, generator=gen)
    return g.to_original(unique)
