"""GNN throughput on a generated full-size layout graph: training and inference configs per second.

    python -m pipeline.bench_gnn [nodes=20000 config_nodes=1000 k=64 devices=[cpu,cuda]]   (make bench-gnn)

Builds in memory (nothing read or written) a layout graph of `nodes` nodes and `config_nodes`
configurable nodes (a DAG in topological order, as `pipeline.bench` generates), prunes it as
the prune stage would (`features.prune.prune`, `hops`), gives it normalized-looking node
features and the node layouts of the pad stage (`features.layout.node_layout`), and `configs`
packed configs of its configurable nodes (each picks one of a few layouts, as a search does).
Then, per device (`devices`; default: cpu, plus cuda when available), times `train_steps`
training steps of K configs (unpack + forward + backward + AdamW; autocast on CUDA as in
train_gnn) and one permutation of `predict_scores` over all configs, and prints one JSON line
each: configs_per_s, s_per_step, the graph's kept size, and the peak GPU memory on CUDA.
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
from models.gnn import GraphBatch, predict_scores
from pipeline.cli import stage
from pipeline.gnn_data import GraphData
from pipeline.train_gnn import Precision, make_optimizer, model_config

log = logging.getLogger(__name__)


def synthetic_graph(nodes: int, config_nodes: int, configs: int, hops: int, feat_dim: int, seed: int) -> tuple[GraphData, dict]:
    """A pruned full-size layout graph with `configs` distinct-ish packed configs."""
    rng = np.random.default_rng(seed)
    rank = rng.integers(1, 5, nodes)
    nf = np.zeros((nodes, 140), dtype=np.float32)
    dims = rng.choice([2, 4, 8, 16, 32, 64, 128, 256], size=(nodes, 6)).astype(np.float32)
    dims[np.arange(6)[None] >= rank[:, None]] = 0
    nf[:, 21:27] = dims
    for i in range(nodes):
        nf[i, 134 : 134 + rank[i]] = np.arange(rank[i])[::-1]
    src = np.arange(1, nodes)
    extra = src[rng.random(nodes - 1) < 0.7]
    back = np.minimum(extra, rng.geometric(0.05, extra.size))
    edges = np.unique(np.concatenate([np.stack([src, src - 1], 1), np.stack([extra, extra - back], 1)]), axis=0).astype(np.int64)
    ids = np.sort(rng.choice(np.arange(1, nodes), config_nodes, replace=False)).astype(np.int64)
    p = prune(nodes, edges, ids, None, hops=hops)
    kept = p.node_ids.size
    lay = node_layout(nf[p.node_ids])
    # 8 candidate layouts per configurable node and group (a permutation of its dims or the default)
    palette = -np.ones((config_nodes, 8, 18), dtype=np.float32)
    for j, n in enumerate(ids):
        r = int(rank[n])
        for c in range(1, 8):
            for g in range(2):
                palette[j, c, 6 * g : 6 * g + r] = rng.permutation(r)
    pick = rng.integers(0, 8, size=(configs, config_nodes))
    codes = pack_layout(palette[np.arange(config_nodes)[None], pick])  # (U, NC, 3)
    graph = GraphBatch(
        opcode=torch.from_numpy(rng.integers(1, 121, kept)),
        node_feat=torch.from_numpy(rng.standard_normal((kept, feat_dim)).astype(np.float32)),
        node_layout=torch.from_numpy(lay.astype(np.int64)),
        edge_index=torch.from_numpy(p.edge_index),
        config_nodes=torch.from_numpy(p.node_config_ids),
        config_layout=torch.zeros(0, config_nodes, 18, dtype=torch.long),
    )
    runtime = rng.random(configs) + 1.0
    g = GraphData("layout:nlp:random:bench", "layout:nlp:random", "train", None, graph, codes, None, runtime,
                  np.arange(configs), runtime)
    return g, {"nodes": nodes, "kept_nodes": int(kept), "edges": int(edges.shape[0]), "kept_edges": int(p.edge_index.shape[0]),
               "config_nodes": config_nodes, "configs": configs}


def bench_device(cfg: DictConfig, g: GraphData, shape: dict, device: torch.device) -> list[dict]:
    torch.manual_seed(int(cfg.seed))
    model = hydra.utils.instantiate(model_config(cfg, {"node_feat_dim": g.graph.node_feat.shape[1]}, "layout")).to(device)
    g = g.to(device)
    prec = Precision.make(device, True, str(cfg.amp_dtype))
    opt = make_optimizer(model, DictConfig({"lr": 1e-3, "weight_decay": 0.0}))
    rng = np.random.default_rng(int(cfg.seed))
    k = int(cfg.k)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> None:
        rows = rng.choice(g.num_configs, k, replace=False)
        with prec.autocast():
            s = model(g.select(rows))
        loss = model.loss(s.float(), torch.from_numpy(g.runtime[rows]).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    step()  # warm-up: allocator, kernels
    sync()
    t = time.perf_counter()
    for _ in range(int(cfg.train_steps)):
        step()
    sync()
    dt = time.perf_counter() - t
    mem = {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device.type == "cuda" else {}
    train = {"bench": "gnn_train", "device": str(device), **shape, "k": k, "steps": int(cfg.train_steps),
             "s_per_step": round(dt / int(cfg.train_steps), 4), "configs_per_s": round(k * int(cfg.train_steps) / dt, 1),
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
