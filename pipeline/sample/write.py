"""The sample tree's files: one npz per graph in the raw format, its noiseless cost, the stamp.

`generate` writes the tree a `conf/sample_data.yaml` config describes (`pipeline.sample_data` is
its command): for each collection, split and index a graph from `pipeline.sample.graphs`,
configs from `pipeline.sample.configs`, runtimes from `pipeline.sample.costmodel` with noise,
written by `pipeline.io.npz.write_graph` (layout configs streamed chunk by chunk).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig

from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.core.progress import tqdm
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.io.catalog import check_collection, check_split, collection_dir, collection_kind, truth_path
from pipeline.io.npz import write_graph
from pipeline.sample.configs import DUP_POOL, ConfigSpace, tile_configs
from pipeline.sample.costmodel import LayoutContext, TileContext, hash_u01, layout_cost, measure, tile_cost
from pipeline.sample.graphs import TILE_BENCHMARKS, build_tile_graph, make_layout_graph
from pipeline.sample.seeds import SEARCH_ID, SOURCE_ID, SPLIT_ID, derived_key, hex_digest, seed_seq

log = logging.getLogger(__name__)

MARKER = ".sample_data"  # says the folder is a generated tree, so stale files may be removed


def _write_truth(cfg: DictConfig, out: Path, collection: str, split: str, stem: str, cost: np.ndarray) -> None:
    """Write a graph's (C,) noiseless cost atomically (train and valid only, with `truth`)."""
    if not cfg.truth or split == "test":
        return
    with atomic_path(truth_path(out, collection, split, stem)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(cost, dtype=np.float64), allow_pickle=False)


def _drawn(cfg: DictConfig, source: str, key: str, rng: np.random.Generator) -> int:
    """A size drawn uniformly from the range `cfg.sizes[source][key]` (both ends included)."""
    lo, hi = cfg.sizes[source][key]
    return int(rng.integers(lo, hi + 1))


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... if already in `used`; the result is added to `used`."""
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def write_tile(cfg: DictConfig, split: str, index: int, out: Path, used: set[str]) -> Path:
    """Write tile:xla graph `index` of `split`: one fused kernel and its tile configs."""
    seq = seed_seq(cfg.seed, SOURCE_ID["tile:xla"], SPLIT_ID[split], index)
    rng = np.random.default_rng(seq)
    h = build_tile_graph(rng, _drawn(cfg, "tile", "nodes", rng))
    node_feat, node_opcode, edge_index = h.arrays()
    ctx = TileContext.from_arrays(node_feat, node_opcode, edge_index)
    root = len(h) - 1
    layout = h.layouts[root]
    feat, at = tile_configs(rng, h.shape(root), layout[0], layout[1] if len(layout) >= 2 else -1,
                            _drawn(cfg, "tile", "configs", rng))
    c = feat.shape[0]
    if split == "test":
        runtime, norm = np.zeros(c, dtype=np.int64), np.ones(c, dtype=np.int64)
        name = hex_digest(seq, 1, 16)
        cost = None
    else:
        cost = tile_cost(ctx, feat)
        runtime = measure(cost, derived_key(seq, 2), np.arange(c), cfg.noise)
        norm = np.full(c, runtime[at], dtype=np.int64)
        name = f"{rng.choice(TILE_BENCHMARKS)}_{'-' if rng.random() < 0.5 else ''}{hex_digest(seq, 1, 8)}"
    name = _unique(name, used)
    path = out / collection_dir("tile:xla") / split / f"{name}.npz"
    write_graph(path, {"node_feat": node_feat, "node_opcode": node_opcode, "edge_index": edge_index,
                       "config_feat": feat, "config_runtime": runtime, "config_runtime_normalizers": norm})
    if cost is not None:
        _write_truth(cfg, out, "tile:xla", split, name, cost / float(norm[0]))  # the target's scale
    return path


def layout_sizes(cfg: DictConfig, source: str, split: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """(nodes, configurable nodes, configs) of one graph: the fixed knobs, else drawn."""
    nodes = cfg.nodes if cfg.nodes is not None else _drawn(cfg, source, "nodes", rng)
    lo, hi = cfg.sizes[source]["config_nodes"]
    drawn = int(np.clip(round(nodes * rng.uniform(0.03, 0.12)), lo, hi))
    nc = cfg.config_nodes if cfg.config_nodes is not None else drawn
    fixed = (cfg.split_configs or {}).get(split)
    fixed = cfg.configs if fixed is None else fixed
    configs = fixed if fixed is not None else _drawn(cfg, source, "configs", rng)
    return int(nodes), int(nc), int(configs)


def write_layout(cfg: DictConfig, collection: str, split: str, index: int, out: Path, used: set[str]) -> Path:
    """Write layout graph `index` of `collection` and `split`, its configs streamed in
    `cfg.chunk` rows: runtimes first (one pass), then `node_config_feat` (a second pass)."""
    _, source, search = collection.split(":")
    graph_seq = seed_seq(cfg.seed, SOURCE_ID[source], SPLIT_ID[split], index)
    n_target, nc_target, n_configs = layout_sizes(cfg, source, split, np.random.default_rng(seed_seq(*graph_seq.entropy, 97)))
    g = make_layout_graph(source, graph_seq, n_target, nc_target)
    name = _unique(hex_digest(graph_seq, 1, 16) if split == "test" else g.name, used)
    space = ConfigSpace.of(g)
    nc = g.node_config_ids.size
    search_seq = seed_seq(cfg.seed, SOURCE_ID[source], SPLIT_ID[split], index, SEARCH_ID[search])
    choice_key, dup_key, noise_key = (derived_key(search_seq, salt) for salt in (1, 2, 3))
    pool = max(1, int(round(n_configs * DUP_POOL[search])))
    chunk = max(1, int(cfg.chunk))
    progress = n_configs > 20 * chunk  # a bar per pass for the large graphs

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n_configs, chunk):
            idx = np.arange(start, min(n_configs, start + chunk))
            distinct = np.floor(hash_u01(dup_key, idx) * pool).astype(np.int64)
            yield idx, space.configs(choice_key, distinct, search)

    # Two passes: the runtimes are written before node_config_feat, and regenerating the configs
    # (a pure function of their indices) is cheaper than holding GBs of them in between.
    runtime = np.zeros(n_configs, dtype=np.int64)
    cost = np.zeros(n_configs, dtype=np.float64)
    bars = {"leave": False, "disable": not progress, "mininterval": 2.0, "unit": "cfg", "total": n_configs}
    if split != "test":
        ctx = LayoutContext.from_arrays(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids)
        bar = tqdm(desc="  runtimes", **bars)
        for idx, rows in chunks():
            c = layout_cost(ctx, rows)
            cost[idx] = c
            runtime[idx] = measure(c, noise_key, idx, cfg.noise)
            bar.update(idx.size)
        bar.close()
    path = out / collection_dir(collection) / split / f"{name}.npz"
    bar = tqdm(desc="  writing", **bars)

    def rows_only() -> Iterator[np.ndarray]:
        for idx, rows in chunks():
            bar.update(idx.size)
            yield rows

    write_graph(path, {"node_feat": g.node_feat, "node_opcode": g.node_opcode, "edge_index": g.edge_index,
                       "node_config_ids": g.node_config_ids, "node_splits": g.node_splits,
                       "config_runtime": runtime},
                node_config_feat_chunks=rows_only(), node_config_feat_shape=(n_configs, nc, 18))
    bar.close()
    _write_truth(cfg, out, collection, split, name, cost)
    return path


def _prepare(out: Path) -> None:
    """Drop the stamp; refuse a folder that holds npz files this stage did not write."""
    begin_stage(out)
    if not (out / MARKER).exists():
        if next(out.rglob("*.npz"), None) is not None:
            raise DataError(out, f"holds .npz files but no {MARKER} marker: not a generated sample tree, "
                                 "refusing to write into it")
        (out / MARKER).write_text("written by pipeline.sample_data; its stale .npz files may be removed\n")


def _remove_stale(cfg: DictConfig, out: Path, written: dict[tuple[str, str], set[Path]]) -> int:
    """Remove the npz (and truth) files of the generated collections and splits that this run
    did not write; return how many npz files went."""
    stale = 0
    for (c, s), paths in written.items():
        for p in (out / collection_dir(c) / s).glob("*.npz"):
            if p not in paths:
                p.unlink()
                stale += 1
        truths = {truth_path(out, c, s, p.stem) for p in paths} if cfg.truth and s != "test" else set()
        for p in truth_path(out, c, s, "-").parent.glob("*.npy"):
            if p not in truths:
                p.unlink()
    return stale


def generate(cfg: DictConfig) -> dict[str, object]:
    """Write the tree `cfg` describes; return a summary {files, bytes, seconds, out}."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    collections = [check_collection(c) for c in cfg.collections]
    splits = [check_split(s) for s in cfg.splits]
    _prepare(out)
    jobs = []
    for c in collections:
        scale = int(cfg.tile_scale) if collection_kind(c) == "tile" else 1
        for s in splits:
            jobs.extend((c, s, i) for i in range(int(cfg.graphs[s]) * scale))
    written: dict[tuple[str, str], set[Path]] = {(c, s): set() for c in collections for s in splits}
    used: dict[tuple[str, str], set[str]] = {}
    for c, s, i in tqdm(jobs, desc="sample_data", unit="file"):
        names = used.setdefault((c, s), set())
        if collection_kind(c) == "tile":
            p = write_tile(cfg, s, i, out, names)
        else:
            p = write_layout(cfg, c, s, i, out, names)
        written[(c, s)].add(p)
    stale = _remove_stale(cfg, out, written)
    nbytes = sum(p.stat().st_size for ps in written.values() for p in ps)
    files = sum(len(ps) for ps in written.values())
    finish_stage(out, {"files": files, "bytes": nbytes})
    secs = time.perf_counter() - t0
    log.info("wrote %d files (%.1f MB) for %s / %s under %s in %.1f s%s", files, nbytes / 1e6,
             ",".join(collections), ",".join(splits), out, secs,
             f"; removed {stale} stale files" if stale else "")
    return {"files": files, "bytes": nbytes, "seconds": secs, "out": str(out)}
