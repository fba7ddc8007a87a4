"""GNN throughput on a generated full-size layout graph: training and inference configs per second.

    python -m pipeline.bench_gnn [nodes=20000 config_nodes=1000 k=64 devices=[cpu,cuda]]   (make bench-gnn)

Builds in memory (nothing read or written) the layout graph `pipeline.bench` generates with its
built-in generator (`synthetic_layout`: `nodes` nodes, `config_nodes` configurable nodes),
prunes it as the prune stage would (`features.prune.prune`, `hops`), gives it
normalized-looking node features and the node layouts of the pad stage
(`features.layout.node_layout`), and `configs` packed configs of its configurable nodes, loaded
as `pipeline.io.gnn_tensors.GraphData` like an extracted file. Then, per device (`devices`; default:
cpu, plus cuda when available), times `train_steps` steps of the training stage's own
`train_step` on K configs (unpack and complete + forward + backward + clipping + AdamW +
scheduler; autocast on CUDA as in train_gnn) and one permutation of `predict_scores` over all
configs, and prints one JSON line each: configs_per_s, s_per_step, the graph's kept size, and
the peak GPU memory on CUDA.
"""

from __future__ import annotations

import json
import logging
import time

import hydra.utils
import numpy as np
import torch
from omegaconf import DictConfig

from features.configs import pack_layout
from features.layout import node_layout
from features.prune import prune
from models.gnn import predict_scores
from pipeline.bench import COLLECTION, synthetic_configs, synthetic_layout
from pipeline.core.cli import stage
from pipeline.io.gnn_tensors import GraphData, graph_data
from pipeline.core.gnn_steps import check_choices, model_config, train_step
from pipeline.core.training import Precision, make_optimizer, warmup_cosine

log = logging.getLogger(__name__)


def synthetic_graph(nodes: int, config_nodes: int, configs: int, hops: int, feat_dim: int, seed: int) -> tuple[GraphData, dict]:
    """The pruned `pipeline.bench` graph with `configs` distinct-ish packed configs."""
    raw, palette, rng = synthetic_layout(nodes, config_nodes, seed)
    edges = raw["edge_index"]
    p = prune(nodes, edges, raw["node_config_ids"], None, hops=hops)
    kept = p.node_ids.size
    codes = np.concatenate([pack_layout(c) for c in synthetic_configs(palette, configs, rng)])  # (U, NC, 3)
    runtime = rng.random(configs) + 1.0
    arrays = {"node_feat": rng.standard_normal((kept, feat_dim)).astype(np.float32),
              "node_layout": node_layout(raw["node_feat"][p.node_ids]), "node_opcode": raw["node_opcode"][p.node_ids],
              "edge_index": p.edge_index, "config_map": np.arange(configs), "runtime": runtime, "config_runtime": runtime,
              "config_node_ids": p.node_config_ids, "config_codes": codes}
    g = graph_data(arrays, COLLECTION, "train")
    return g, {"nodes": nodes, "kept_nodes": int(kept), "edges": int(edges.shape[0]), "kept_edges": int(p.edge_index.shape[0]),
               "config_nodes": config_nodes, "configs": configs}


def bench_device(cfg: DictConfig, g: GraphData, shape: dict, device: torch.device) -> list[dict]:
    torch.manual_seed(int(cfg.seed))
    model = hydra.utils.instantiate(model_config(cfg, {"node_feat_dim": g.graph.node_feat.shape[1]}, "layout")).to(device)
    g = g.to(device)
    prec = Precision.make(device, True, str(cfg.amp_dtype))
    steps = int(cfg.train_steps)
    opt = make_optimizer(model, DictConfig({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 1e-4}))
    sched = warmup_cosine(opt, steps + 1, warmup=0.0, min_lr_ratio=0.05)  # one warmup step
    scaler = prec.scaler()
    rng = np.random.default_rng(int(cfg.seed))
    k = int(cfg.k)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> None:
        train_step(model, model, g, rng.choice(g.num_configs, k, replace=False), opt, sched, scaler, prec, 1.0)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    step()  # warm-up: allocator, kernels
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t
    mem = {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device.type == "cuda" else {}
    train = {"bench": "gnn_train", "device": str(device), **shape, "k": k, "steps": steps,
             "s_per_step": round(dt / steps, 4), "configs_per_s": round(k * steps / dt, 1),
             "threads": torch.get_num_threads(), **mem}
    t = time.perf_counter()
    with prec.autocast():
        predict_scores(model, g, k=int(cfg.infer_k), permutations=1, generator=torch.Generator().manual_seed(0))
    sync()
    dt = time.perf_counter() - t
    infer = {"bench": "gnn_infer", "device": str(device), **shape, "k": int(cfg.infer_k), "s": round(dt, 3),
             "configs_per_s": round(g.num_configs / dt, 1), "threads": torch.get_num_threads()}
    return [train, infer]


@stage("bench_gnn")
def main(cfg: DictConfig) -> list[dict]:
    check_choices(cfg)
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    g, shape = synthetic_graph(int(cfg.nodes), int(cfg.config_nodes), int(cfg.configs), int(cfg.hops), int(cfg.feat_dim), int(cfg.seed))
    devices = list(cfg.devices) if cfg.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines = []
    for d in devices:
        for rec in bench_device(cfg, g, shape, torch.device(d)):
            print(json.dumps(rec), flush=True)
            lines.append(rec)
    return lines


if __name__ == "__main__":
    main()
