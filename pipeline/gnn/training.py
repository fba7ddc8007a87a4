"""Training machinery shared by the training stages and their benchmarks: the torchrun process
group and device (`Dist`, `setup_dist`), RNG seeding and states, mixed precision (`Precision`),
the optimizer and the LR schedule built from config nodes (`warmup_cosine`), weight averaging
(`WeightAverage`), checkpoints, and dealing work out to ranks.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch
import torch.distributed as tdist
from omegaconf import DictConfig

from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path


@dataclass
class Dist:
    """Where this process stands: rank of world (1 without torchrun) and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    launched: bool = False  # started by torchrun: a process group even with one rank

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.launched

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        return float(np.mean(self.gather(value)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(None, f"device={name} asked for but CUDA is not available here (use device=cpu or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def setup_dist(cfg: DictConfig) -> Dist:
    """Join the torchrun process group when launched by torchrun (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(str(cfg.device), local)
    threads = int(cfg.threads)
    if threads <= 0 and world > 1 and device.type == "cpu":
        # ranks of one machine share its cores: oversubscription slows every rank down
        threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if threads > 0:
        torch.set_num_threads(threads)
    launched = "TORCHELASTIC_RUN_ID" in os.environ  # torchrun sets it, even for --nproc_per_node=1
    if (world > 1 or launched) and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device, launched)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_states(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


AMP_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Precision:
    """Autocast on CUDA only (CPU autocast is slower than fp32 for these ops); fp16 needs a scaler."""

    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def make(cls, device: torch.device, amp: bool, dtype: str) -> "Precision":
        if not amp or device.type != "cuda":
            return cls(device, None)
        want = AMP_DTYPES[str(dtype)]
        if want == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            want = torch.float16
        return cls(device, want)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)


def make_optimizer(model: torch.nn.Module, optimizer: DictConfig) -> torch.optim.Optimizer:
    """The optimizer of a config's `optimizer` node (a `_partial_` hydra target) over `model`'s
    parameters (conf/train_gnn.yaml: AdamW)."""
    return hydra.utils.instantiate(optimizer)(model.parameters())


def make_scheduler(opt: torch.optim.Optimizer, scheduler: DictConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of a config's `scheduler` node (a `_partial_` hydra target) over `opt` for a
    run of `total` steps (conf/train_gnn.yaml: `warmup_cosine`)."""
    return hydra.utils.instantiate(scheduler)(opt, total)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.05,
                  min_lr_ratio: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first `warmup` fraction of `total_steps` (at least one step), then
    cosine from lr down to lr * min_lr_ratio at `total_steps`. The factor is a closure, so a
    checkpoint keeps only the step count: resuming rebuilds it for the new run's length."""
    warm = max(1, int(float(warmup) * total_steps))
    total, floor = int(total_steps), float(min_lr_ratio)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """Stochastic weight averaging (SWA): the equal-weight mean of a model's floating-point
    weights over the times `update` was called (each epoch's end, from a start epoch on);
    other entries of the state dict (integer buffers) keep their latest value. `state` and
    `count` go into checkpoints, so a resumed run goes on averaging where it stopped."""

    def __init__(self, state: dict[str, torch.Tensor] | None = None, count: int = 0):
        self.state, self.count = state, count

    def update(self, model: torch.nn.Module) -> None:
        current = model.state_dict()
        if self.state is None or self.count == 0:
            self.state, self.count = {k: v.detach().clone() for k, v in current.items()}, 1
            return
        self.count += 1
        for k, v in current.items():
            if v.is_floating_point():
                self.state[k] += (v.detach() - self.state[k]) / self.count
            else:
                self.state[k].copy_(v)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block and its own after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(own)


def save_checkpoint(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "checkpoint not found (train first: make train-gnn, or python -m pipeline.train_gnn)")
    try:
        # our own files; they hold numpy and python RNG states, which weights_only refuses
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise DataError(path, f"cannot be read as a checkpoint ({type(e).__name__}: {e})") from None


def shard(items: list, dist: Dist) -> list:
    return items[dist.rank :: dist.world]


def epoch_order(n: int, repeats: int, seed: int, epoch: int, dist: Dist) -> np.ndarray:
    """This rank's graph indices for one epoch: every graph `repeats` times, shuffled the same
    way on every rank, padded by wrapping so every rank takes the same number of steps (DDP
    needs that), then dealt round-robin."""
    order = np.random.default_rng([seed, 1, epoch]).permutation(np.repeat(np.arange(n), repeats))
    steps = -(-order.size // dist.world)
    order = np.resize(order, steps * dist.world)
    return order[dist.rank :: dist.world]
