"""Training and inference that fit a memory budget: measured per graph, then planned.

    python -m pipeline.train_gnn memory_budget=8    # GB a step may take on the device

A GNN step's memory is linear in K, the configs per step: every activation is (K, N, H) or
(K, E, H). `measure` runs the model on 2 and 4 configs of a graph and records the peak of the
tensors allocated (CPU: the profiler's allocation timeline; CUDA: the allocator's peak), which
gives the fixed and the per-config bytes for three ways of running: training as configured,
training with activation checkpointing (each layer recomputed in backward: about a third of the
memory for one more forward pass), and inference. `plan` then keeps the configured K when it
fits, else turns checkpointing on, else lowers K until it fits, and picks the inference group size
the same way; `MemoryPlan.describe` is the log line that says what it chose and why. Measuring
draws no random numbers and leaves no gradients behind, so a run with a budget that fits is the
run without one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

GB = 2**30
PROBE_K = (2, 4)


@dataclass(frozen=True)
class Line:
    """Bytes of a step on k configs: `fixed + per_config * k`."""

    fixed: float
    per_config: float

    def at(self, k: int) -> float:
        return self.fixed + self.per_config * k

    def most_configs(self, budget: float) -> int:
        """The largest k whose bytes fit `budget` (0 when none does)."""
        if self.per_config <= 0:
            return 0 if self.fixed > budget else 2**31
        return max(0, math.floor((budget - self.fixed) / self.per_config))


@dataclass(frozen=True)
class Footprint:
    """A graph's measured memory lines: training, training with checkpointing, inference."""

    train: Line
    checkpointed: Line
    infer: Line


@dataclass(frozen=True)
class MemoryPlan:
    k: int
    checkpoint: bool
    infer_k: int
    train_bytes: float
    infer_bytes: float
    reason: str

    def describe(self, budget: float) -> str:
        how = "with activation checkpointing" if self.checkpoint else "without checkpointing"
        return (f"memory_budget={budget / GB:g} GB: {self.reason}; training {how} at K={self.k} "
                f"(~{self.train_bytes / GB:.2f} GB), inference in groups of {self.infer_k} (~{self.infer_bytes / GB:.2f} GB)")


def plan(budget: float, k: int, infer_k: int, fp: Footprint, checkpoint: bool = False) -> MemoryPlan:
    """The K, checkpointing and inference group size for a step within `budget` bytes, given the
    configured `k`, `infer_k` and `checkpoint`. Raises ValueError (one sentence) when even 2
    configs with checkpointing do not fit."""
    full = fp.checkpointed if checkpoint else fp.train
    if full.at(k) <= budget:
        use_ckpt, use_k = checkpoint, k
        reason = f"K={k} fits as configured (~{full.at(k) / GB:.2f} GB)"
    elif fp.checkpointed.at(k) <= budget:
        use_ckpt, use_k = True, k
        reason = f"K={k} needs ~{full.at(k) / GB:.2f} GB, ~{fp.checkpointed.at(k) / GB:.2f} GB with checkpointing"
    else:
        use_ckpt, use_k = True, min(k, fp.checkpointed.most_configs(budget))
        if use_k < 2:
            raise ValueError(f"memory_budget={budget / GB:g} GB is too small: 2 configs with checkpointing need "
                             f"~{fp.checkpointed.at(2) / GB:.2f} GB")
        reason = (f"K={k} needs ~{full.at(k) / GB:.2f} GB, still ~{fp.checkpointed.at(k) / GB:.2f} GB with "
                  f"checkpointing, so fewer configs per step")
    group = infer_group(budget, infer_k, fp.infer)
    return MemoryPlan(use_k, use_ckpt, group, (fp.checkpointed if use_ckpt else fp.train).at(use_k), fp.infer.at(group), reason)


def infer_group(budget: float, infer_k: int, infer: Line) -> int:
    """Configs per inference pass within `budget`: `infer_k`, or fewer (at least 1)."""
    return max(1, min(infer_k, infer.most_configs(budget)))


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """The peak of tensor memory allocated while `fn()` runs, above what was allocated before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's C++ side prints a line at start and at stop
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    # each event's own allocations less its frees, in the order they started
    now = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        now += event.self_cpu_memory_usage
        peak = max(peak, now)
    return int(peak)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null for the block (C++ writes bypass sys.stderr)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _line(sizes: tuple[int, ...], peaks: list[int]) -> Line:
    if len(sizes) == 1:  # a graph with too few configs for two probes: all of it per config
        return Line(0.0, peaks[0] / sizes[0])
    slope = max(0.0, (peaks[-1] - peaks[0]) / (sizes[-1] - sizes[0]))
    return Line(max(0.0, peaks[0] - slope * sizes[0]), slope)


def measure(model: torch.nn.Module, graph, autocast: Callable[[], object], train: bool = True) -> Footprint:
    """The memory lines of `model` on `graph` (a pipeline.gnn.dataset.GraphData or GraphBatch
    on the model's device): a forward and backward of the ranking loss on its first 2 and 4
    configs (`PROBE_K`), with and without checkpointing (`train`; else those lines are empty),
    and a forward without gradients. `autocast` is the training's autocast context factory."""
    device = next(model.parameters()).device
    sizes = tuple(sorted({min(k, graph.num_configs) for k in PROBE_K}))
    was_training, was_checkpoint = model.training, model.checkpoint
    target = torch.from_numpy(np.linspace(1.0, 2.0, max(sizes), dtype=np.float32)).to(device)

    def train_pass(k: int) -> None:
        with autocast():
            scores = model(graph.select(np.arange(k)))
        model.loss(scores.float(), target[:k]).backward()

    def infer_pass(k: int) -> None:
        with torch.no_grad(), autocast():
            model(graph.select(np.arange(k)))

    lines = {"train": Line(0.0, 0.0), "checkpointed": Line(0.0, 0.0)}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model.train()
            for name, ckpt in (("train", False), ("checkpointed", True)) if train else ():
                model.checkpoint = ckpt
                lines[name] = _line(sizes, [peak_bytes(lambda: train_pass(k), device) for k in sizes])
                model.zero_grad(set_to_none=True)
            model.eval()
            lines["infer"] = _line(sizes, [peak_bytes(lambda: infer_pass(k), device) for k in sizes])
    finally:
        model.train(was_training)
        model.checkpoint = was_checkpoint
        model.zero_grad(set_to_none=True)
    return Footprint(**lines)
