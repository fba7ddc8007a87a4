"""GNN throughput on a generated full-size layout graph: training and inference configs per second.

    python -m pipeline.tools.bench_gnn [nodes=20000 config_nodes=1000 k=64 devices=[cpu,cuda]]   (make bench-gnn)

Builds in memory (nothing read or written) the layout graph `pipeline.tools.bench` generates with its
built-in generator (`synthetic_layout`: `nodes` nodes, `config_nodes` configurable nodes),
prunes it as the prune stage would (`features.prune.prune`, `hops`), gives it
normalized-looking node features and the node layouts of the pad stage
(`features.layout.node_layout`), and `configs` packed configs of its configurable nodes, loaded
as `pipeline.gnn.dataset.GraphData` like an extracted file. Then, per device (`devices`; default:
cpu, plus cuda when available), times `train_steps` steps of the training stage's own
`train_step` on K configs (unpack and complete + forward + backward + clipping + AdamW +
scheduler; autocast on CUDA as in train_gnn) and one permutation of `predict_scores` over all
configs, and prints one JSON line each: configs_per_s, s_per_step, the graph's kept size, the
peak GPU memory on CUDA and the process's peak RSS so far, its user and system CPU seconds.
The step is timed in its two parts one after the other, `batch_s_per_step` (building the batch
on the CPU: sampling, layout completion, cost terms, the copy to the device) and
`model_s_per_step` (forward, backward, optimizer), then as training runs it, with the batches
built `prefetch` steps ahead by `prefetch_workers` threads (`s_per_step`, and `waited_fraction`: the share of
that time the step waited for its batch).

The machine's limit is measured in the same run: `matmul_gflops` is the dense matmul rate at the
model's shapes (a (K x kept nodes, H) by (H, H) product, the SAGE layers' linear maps, in the
step's dtype), `model_gflop` the matmul FLOPs of one step (`torch.utils.flop_counter`: forward
and backward for training; forward over every config for inference), and `of_matmul_rate` their
ratio to the time taken: the fraction of the machine's matmul rate the step achieves. Gathers,
scatters and elementwise work count as time, not FLOPs, so the fraction is below 1 by what they
cost. What bounds the step on a GPU is counted in the same pass (`Traffic`): `model_gbytes`, the
bytes its kernels read and write (every operand and result of every aten op once, as eager
execution runs them, unfused; views move nothing), and `kernels`, the ops launched; inference
gives them per config (`gbytes_per_config`, `gflop_per_config`) and per group of `infer_k`
(`kernels_per_group`). `make rehearsal` turns them into GPU time at a stated bandwidth, rate and
launch cost. `step_tensors_mb` (and `checkpointed_mb`) are the step's tensor peak as `memory_budget`
estimates it (pipeline.gnn.memory). `malloc` sets the C allocator first (`pipeline.gnn.allocator`; `malloc=system` for
glibc's defaults).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time

import hydra.utils
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from features.completion import group_defaults
from features.configs import pack_layout
from features.cost_terms import slot_facts
from features.layout import node_layout
from features.operands import infer_operands
from features.prune import config_node_pairs, prune
from models.gnn import predict_scores
from pipeline.core.cli import stage
from pipeline.core.prefetch import Prefetch
from pipeline.gnn.allocator import set_malloc
from pipeline.gnn.dataset import GraphData, graph_data
from pipeline.gnn.memory import measure
from pipeline.gnn.steps import build_batch, check_choices, model_config, train_step
from pipeline.gnn.training import Precision, make_optimizer, warmup_cosine
from pipeline.tools.bench import COLLECTION, synthetic_configs, synthetic_layout

log = logging.getLogger(__name__)


def synthetic_graph(nodes: int, config_nodes: int, configs: int, hops: int, feat_dim: int, seed: int,
                    pair_depth: int | None = 4) -> tuple[GraphData, dict]:
    """The pruned `pipeline.tools.bench` graph with `configs` distinct-ish packed configs."""
    raw, palette, rng = synthetic_layout(nodes, config_nodes, seed)
    edges = raw["edge_index"]
    p = prune(nodes, edges, raw["node_config_ids"], None, hops=hops)
    kept = p.node_ids.size
    codes = np.concatenate([pack_layout(c) for c in synthetic_configs(palette, configs, rng)])  # (U, NC, 3)
    runtime = rng.random(configs) + 1.0
    opcode, raw_feat = raw["node_opcode"][p.node_ids], raw["node_feat"][p.node_ids]
    operands = infer_operands(raw_feat, opcode, p.edge_index, p.node_config_ids)
    arrays = {"node_feat": rng.standard_normal((kept, feat_dim)).astype(np.float32),
              "node_layout": node_layout(raw_feat), "node_opcode": opcode,
              "edge_index": p.edge_index, "config_map": np.arange(configs), "runtime": runtime, "config_runtime": runtime,
              "config_node_ids": p.node_config_ids, "config_codes": codes,
              "varying": np.ones(config_nodes, dtype=bool),
              "config_pairs": config_node_pairs(edges, nodes, infer_operands(raw["node_feat"], raw["node_opcode"], edges, raw["node_config_ids"]),
                                                pair_depth),
              "config_slots": slot_facts(raw_feat, opcode, p.edge_index, operands),
              "config_defaults": group_defaults(node_layout(raw_feat), operands)}
    g = graph_data(arrays, COLLECTION, "train")
    return g, {"nodes": nodes, "kept_nodes": int(kept), "edges": int(edges.shape[0]), "kept_edges": int(p.edge_index.shape[0]),
               "config_nodes": config_nodes, "configs": configs}


def process_usage() -> dict:
    """Peak RSS (MB) of this process so far and its user and system CPU seconds."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    peak = u.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KB on Linux
    return {"peak_rss_mb": round(peak), "user_s": round(u.ru_utime, 1), "sys_s": round(u.ru_stime, 1)}


def matmul_gflops(rows: int, hidden: int, device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """The dense matmul rate (GFLOP/s) of a (rows, hidden) by (hidden, hidden) product on
    `device`, best of repeated timings over about `seconds`."""
    a = torch.randn(rows, hidden, device=device, dtype=dtype)
    w = torch.randn(hidden, hidden, device=device, dtype=dtype)
    out = torch.empty(rows, hidden, device=device, dtype=dtype)
    torch.mm(a, w, out=out)  # warm-up
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, w, out=out)
        _sync(device)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return 2 * rows * hidden * hidden / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ops that allocate or relabel without running a kernel over memory
_NO_KERNEL = {"aten.empty.memory_format", "aten.empty_strided.default", "aten.empty_like.default", "aten.detach.default",
              "aten.lift_fresh.default", "aten.alias.default", "aten._local_scalar_dense.default"}


class Traffic(TorchDispatchMode):
    """Counts, for the aten ops run under it, the kernels launched and the bytes they read and
    write: every tensor operand and result once (eager execution: one kernel per op, nothing
    fused, so intermediates make the round trip to memory). Views and allocations count neither."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and str(func) not in _NO_KERNEL:
            leaves = tree_flatten((args, kwargs or {}))[0] + tree_flatten(out)[0]
            self.bytes += sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
            self.kernels += 1
        return out


def count(fn) -> dict:
    """FLOPs (matmuls, `torch.utils.flop_counter`), bytes moved and kernels of one call of `fn`."""
    traffic = Traffic()
    with FlopCounterMode(display=False) as counter, traffic:
        fn()
    return {"flops": int(counter.get_total_flops()), "bytes": traffic.bytes, "kernels": traffic.kernels}


def bench_device(cfg: DictConfig, g: GraphData, shape: dict, device: torch.device) -> list[dict]:
    """The training and inference records of one device (see the module docstring)."""
    torch.manual_seed(int(cfg.seed))
    model = hydra.utils.instantiate(model_config(cfg, {"node_feat_dim": g.graph.node_feat.shape[1]}, "layout")).to(device)
    g = g.to(device)
    prec = Precision.make(device, True, str(cfg.amp_dtype))
    steps = int(cfg.train_steps)
    opt = make_optimizer(model, DictConfig({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 1e-4}))
    sched = warmup_cosine(opt, steps + 2, warmup=0.0, min_lr_ratio=0.05)  # one warmup step
    scaler = prec.scaler()
    rng = np.random.default_rng(int(cfg.seed))
    k, infer_k = int(cfg.k), int(cfg.infer_k)
    dtype = (prec.dtype or torch.float32) if device.type == "cuda" else torch.float32
    limit = {"matmul_gflops": round(matmul_gflops(k * g.graph.node_feat.shape[0], int(cfg.model.hidden), device, dtype), 1)}

    def batch() -> tuple:
        return build_batch(g, rng.choice(g.num_configs, k, replace=False))

    def step(b: tuple | None = None) -> None:
        train_step(model, model, *(b or batch()), opt, sched, scaler, prec, 1.0)

    footprint = measure(model, g, prec.autocast)  # what memory_budget plans with (pipeline.gnn.memory)
    planned = {"step_tensors_mb": round(footprint.train.at(k) / 2**20), "checkpointed_mb": round(footprint.checkpointed.at(k) / 2**20)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    counted = count(step)  # also the warm-up: allocator, kernels
    step_flops = counted["flops"]
    _sync(device)
    # the step's two parts, one after the other: building the batch (CPU), then the model step
    build_s = model_s = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        b = batch()
        _sync(device)
        t1 = time.perf_counter()
        step(b)
        _sync(device)
        build_s, model_s = build_s + t1 - t, model_s + time.perf_counter() - t1
    # and as training runs them: batches built `prefetch` steps ahead by a thread
    draws = [rng.choice(g.num_configs, k, replace=False) for _ in range(steps)]
    feed = Prefetch(draws, lambda rows: build_batch(g, rows), int(cfg.prefetch), int(cfg.prefetch_workers))
    t = time.perf_counter()
    for _, b in feed:
        step(b)
    _sync(device)
    dt = time.perf_counter() - t
    mem = {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device.type == "cuda" else {}
    train = {"bench": "gnn_train", "device": str(device), **shape, "k": k, "steps": steps,
             "s_per_step": round(dt / steps, 4), "configs_per_s": round(k * steps / dt, 1),
             "batch_s_per_step": round(build_s / steps, 4), "model_s_per_step": round(model_s / steps, 4),
             "prefetch": int(cfg.prefetch), "prefetch_workers": int(cfg.prefetch_workers), "waited_fraction": round(feed.waited_s / dt, 3),
             "model_gflop": float(f"{step_flops / 1e9:.4g}"), "model_gbytes": float(f"{counted['bytes'] / 1e9:.4g}"),
             "kernels": counted["kernels"], **limit,
             "of_matmul_rate": float(f"{step_flops * steps / dt / 1e9 / limit['matmul_gflops']:.3g}"),
             "threads": torch.get_num_threads(), "malloc": str(cfg.malloc), **planned, **mem, **process_usage()}
    model.eval()
    with torch.no_grad(), prec.autocast():
        group = torch.arange(min(infer_k, g.num_configs), device=device)
        group_counts = count(lambda: model(g.select(group)))
    per_config = {k: group_counts[k] / group.numel() for k in ("flops", "bytes")}
    infer_flops = per_config["flops"] * g.num_configs  # linear in configs
    t = time.perf_counter()
    with prec.autocast():
        predict_scores(model, g, k=infer_k, permutations=1, generator=torch.Generator().manual_seed(0))
    _sync(device)
    dt = time.perf_counter() - t
    infer = {"bench": "gnn_infer", "device": str(device), **shape, "k": infer_k, "s": round(dt, 3),
             "configs_per_s": round(g.num_configs / dt, 1), "model_gflop": float(f"{infer_flops / 1e9:.4g}"),
             "gflop_per_config": float(f"{per_config['flops'] / 1e9:.4g}"), "gbytes_per_config": float(f"{per_config['bytes'] / 1e9:.4g}"),
             "kernels_per_group": group_counts["kernels"], **limit,
             "of_matmul_rate": float(f"{infer_flops / dt / 1e9 / limit['matmul_gflops']:.3g}"),
             "threads": torch.get_num_threads(), "malloc": str(cfg.malloc), **process_usage()}
    return [train, infer]


@stage("bench_gnn")
def main(cfg: DictConfig) -> list[dict]:
    check_choices(cfg)
    set_malloc(str(cfg.malloc))
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    g, shape = synthetic_graph(int(cfg.nodes), int(cfg.config_nodes), int(cfg.configs), int(cfg.hops), int(cfg.feat_dim), int(cfg.seed),
                               None if cfg.pair_depth is None else int(cfg.pair_depth))
    devices = list(cfg.devices) if cfg.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines = []
    for d in devices:
        for rec in bench_device(cfg, g, shape, torch.device(d)):
            print(json.dumps(rec), flush=True)
            lines.append(rec)
    return lines


if __name__ == "__main__":
    main()
