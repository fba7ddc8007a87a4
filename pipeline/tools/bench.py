"""Benchmark of the preprocessing stages on one full-size layout graph.

    python -m pipeline.tools.bench                      # make bench; configs=20000 for a quicker run

Generates (once per size; cached as `raw/cache/bench-<generator>-<nodes>n-<config_nodes>cn-
<configs>c-seed<seed>.npz`) a layout:nlp:random train graph of `nodes` nodes, `config_nodes`
configurable nodes and `configs` configs, with the embedded sample generator
(`generator=sample_data`) or the small built-in one (`synthetic_layout`, also what
`pipeline.tools.bench_gnn` builds in memory). The cached graph is hard-linked (copied where links are
refused) as `raw/layout/nlp/random/train/bench.npz`, the only graph the stages see, so asking
for another size never reuses a graph of the old one. Then runs prune, pad and extract on it,
each in its own process with `jobs=1` (one core), and prints one JSON line per stage: wall_s,
peak_rss_mb (of that process), inflated_mb (node_config_feat once inflated), mb_per_s
(inflated_mb / wall_s); plus a line for a pure zlib inflate of the same member in this
process, the floor any stage reading it pays. Writes nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig

from features.layout import LAYOUT0, NODE_FEAT_DIM, SHAPE_COLS
from pipeline.core import peak_rss
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.runner import MANIFEST
from pipeline.io.catalog import collection_dir
from pipeline.io.npz import LAZY_KEY, write_graph

log = logging.getLogger(__name__)
COLLECTION = "layout:nlp:random"
GENERATORS = ("sample_data", "builtin")


def synthetic_layout(nodes: int, config_nodes: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.random.Generator]:
    """A plausible layout graph: a DAG in topological order, configurable dot/reshape nodes of
    rank 1-4, and 8 candidate layouts per configurable node and group (a permutation of its dims
    or the default), of which each config picks one, as a search would.

    Returns the raw-format arrays without configs (`node_feat` (N, 140), `node_opcode`,
    `edge_index` rows [consumer, producer], operand 0 first, `node_config_ids`, `node_splits`),
    the palette (NC, 8, 18) float32 for `synthetic_configs`, and the generator to draw them with.
    """
    rng = np.random.default_rng(seed)
    nf = np.zeros((nodes, NODE_FEAT_DIM), dtype=np.float32)
    rank = rng.integers(1, 5, nodes)
    dims = rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], size=(nodes, 6)).astype(np.float32)
    dims[np.arange(6)[None] >= rank[:, None]] = 0
    nf[:, SHAPE_COLS] = dims
    nf[:, 27] = dims.sum(1)
    nf[:, 28] = np.where(dims > 0, dims, 1).prod(1)
    nf[:, 13] = 1  # f32
    for i in range(nodes):
        nf[i, LAYOUT0 : LAYOUT0 + rank[i]] = np.arange(rank[i])[::-1]
    nf[-1, 0] = 1
    opcode = rng.choice([2, 13, 41, 45, 57, 59, 63, 70, 83, 98], nodes).astype(np.uint8)
    ids = np.sort(rng.choice(np.arange(1, nodes), config_nodes, replace=False)).astype(np.int64)
    opcode[ids] = rng.choice([34, 75], config_nodes)
    src = np.arange(1, nodes)
    extra = src[rng.random(nodes - 1) < 0.7]  # a second operand, mostly produced nearby
    back = np.minimum(extra, rng.geometric(0.05, extra.size))
    edges = np.concatenate([np.stack([src, src - 1], 1), np.stack([extra, extra - back], 1)]).astype(np.int64)
    edges = np.unique(edges, axis=0)
    palette = -np.ones((config_nodes, 8, 18), dtype=np.float32)
    for j, n in enumerate(ids):
        r = int(rank[n])
        for k in range(1, 8):
            for g in range(2):
                palette[j, k, 6 * g : 6 * g + r] = rng.permutation(r)
    arrays = {"node_feat": nf, "node_opcode": opcode, "edge_index": edges, "node_config_ids": ids,
              "node_splits": np.array([[0, nodes // 2]], dtype=np.int64)}
    return arrays, palette, rng


def synthetic_configs(palette: np.ndarray, configs: int, rng: np.random.Generator, chunk: int = 1024) -> Iterator[np.ndarray]:
    """`configs` configs drawn from the palette of `synthetic_layout`, `chunk` at a time:
    (c, NC, 18) float32 each."""
    nc = palette.shape[0]
    for start in range(0, configs, chunk):
        pick = rng.integers(0, 8, size=(min(chunk, configs - start), nc))
        yield palette[np.arange(nc)[None], pick]


def _synthetic(path: Path, nodes: int, config_nodes: int, configs: int, seed: int) -> None:
    arrays, palette, rng = synthetic_layout(nodes, config_nodes, seed)
    arrays["config_runtime"] = rng.integers(10**6, 10**8, configs).astype(np.int64)
    write_graph(path, arrays, synthetic_configs(palette, configs, rng), (configs, config_nodes, 18))


def cache_path(cfg: DictConfig) -> Path:
    """Where the graph of these sizes, generator and seed is kept."""
    name = f"bench-{cfg.generator}-{cfg.nodes}n-{cfg.config_nodes}cn-{cfg.configs}c-seed{cfg.seed}.npz"
    return Path(cfg.paths.raw) / "cache" / name


def _generate(cfg: DictConfig, path: Path) -> None:
    log.info("generating %s (%d nodes, %d configurable, %d configs); cached for later runs",
             path, cfg.nodes, cfg.config_nodes, cfg.configs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if cfg.generator == "builtin":
        _synthetic(path, int(cfg.nodes), int(cfg.config_nodes), int(cfg.configs), int(cfg.seed))
        return
    # a tree of its own: sample_data owns its output root (it removes stale files there)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=path.parent))
    try:
        subprocess.run([sys.executable, "-m", "pipeline.sample_data", f"out={tmp}", f"seed={cfg.seed}",
                        f"collections=[{COLLECTION}]", "splits=[train]", "graphs.train=1", f"nodes={cfg.nodes}",
                        f"config_nodes={cfg.config_nodes}", f"configs={cfg.configs}"], check=True)
        made = sorted((tmp / collection_dir(COLLECTION) / "train").glob("*.npz"))
        if not made:
            raise DataError(tmp, "pipeline.sample_data wrote no layout:nlp:random train graph")
        made[0].replace(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_graph(cfg: DictConfig) -> Path:
    """The benchmark graph of the configured sizes (generated on first use), in place as the
    one graph under `raw` that the stages read."""
    if cfg.generator not in GENERATORS:
        raise DataError(None, f"unknown generator '{cfg.generator}' (one of {', '.join(GENERATORS)})")
    cached = cache_path(cfg)
    if cached.exists():
        log.info("using cached benchmark graph %s", cached)
    else:
        _generate(cfg, cached)
    path = Path(cfg.paths.raw) / collection_dir(COLLECTION) / "train" / "bench.npz"
    if path.exists() and os.path.samefile(path, cached):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    try:
        os.link(cached, path)
    except OSError:  # a file system without hard links
        shutil.copyfile(cached, path)
    return path


def _member_mb(path: Path) -> float:
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(f"{LAZY_KEY}.npy").file_size / 1e6


def inflate_floor(path: str | Path) -> float:
    """Pure zlib inflate of node_config_feat, 1 MB at a time (zipfile's fastest), nothing else; returns MB."""
    n = 0
    with zipfile.ZipFile(path) as zf, zf.open(f"{LAZY_KEY}.npy") as fp:
        while block := fp.read(1 << 20):
            n += len(block)
    return n / 1e6


def measure(name: str, code: str, inflated_mb: float) -> dict:
    """Run `code` in a fresh interpreter; wall time and that process's peak RSS (its own, not
    this process's: `pipeline.core.peak_rss`)."""
    t = time.perf_counter()
    returncode, rss_mb = peak_rss.run([sys.executable, "-c", code])
    wall = time.perf_counter() - t
    if returncode != 0:
        raise DataError(None, f"the {name} run exited with status {returncode} (its error is above)")
    return {"stage": name, "wall_s": round(wall, 2), "peak_rss_mb": round(rss_mb, 1),
            "inflated_mb": round(inflated_mb, 1), "mb_per_s": round(inflated_mb / wall, 1)}


def stage_code(name: str, overrides: list[str]) -> str:
    """`python -m pipeline.<name> overrides...` as code for `measure`."""
    return (f"import runpy, sys\nsys.argv = {['pipeline.' + name, *overrides]!r}\n"
            f"runpy.run_module('pipeline.{name}', run_name='__main__', alter_sys=True)\n")


def format_figures(tmp: Path, seed: int = 0) -> list[dict]:
    """Seconds for the metric and the submission CSV at full size: Kendall tau over 100k
    configs, and writing + validating a 100k-config layout row and 894 rows of 1000 configs."""
    from models.metrics import kendall_tau
    from pipeline.io.catalog import GraphFile
    from pipeline.io.npz import write_graph
    from pipeline.io.submission_csv import validate_submission, write_submission

    rng = np.random.default_rng(seed)
    runtime = rng.integers(0, 5000, 100_000)
    t = time.perf_counter()
    kendall_tau(runtime + rng.integers(-2000, 2000, runtime.size), runtime)
    out = [{"stage": "kendall-tau-100k", "wall_s": round(time.perf_counter() - t, 3)}]
    big = tmp / "layout" / "nlp" / "random" / "test" / "big.npz"
    arrays, _, _ = synthetic_layout(50, 2, seed)
    arrays.update(config_runtime=np.zeros(100_000, np.int64), node_config_feat=np.full((100_000, 2, 18), -1, np.float32))
    big.parent.mkdir(parents=True, exist_ok=True)
    write_graph(big, arrays)
    files = [GraphFile("layout:nlp:random", "test", big)]
    t = time.perf_counter()
    write_submission(tmp / "big.csv", {files[0].id: rng.permutation(100_000)}, files)
    validate_submission(tmp / "big.csv", files)
    out.append({"stage": "submission-csv-100k-row", "wall_s": round(time.perf_counter() - t, 3)})
    rows = {f"layout:xla:random:g{i}": rng.permutation(1000) for i in range(894)}
    t = time.perf_counter()
    write_submission(tmp / "many.csv", rows, None)
    validate_submission(tmp / "many.csv")
    out.append({"stage": "submission-csv-894x1000", "wall_s": round(time.perf_counter() - t, 3)})
    return out


@stage("bench")
def main(cfg: DictConfig) -> list[dict]:
    path = ensure_graph(cfg)
    mb = _member_mb(path)
    common = [f"paths.dataset={cfg.paths.dataset}", f"paths.data_dir={cfg.paths.data_dir}", "jobs=1",
              f"collections=[{COLLECTION}]", "hydra.run.dir=${paths.data_dir}/bench-logs"]
    # the floor: inflating the member and nothing else (the interpreter start is counted, as for stages)
    lines = [measure("zlib-inflate", f"from pipeline.tools.bench import inflate_floor\ninflate_floor({str(path)!r})\n", mb)]
    print(json.dumps(lines[-1]), flush=True)
    outs = {"prune": Path(cfg.paths.interim) / "pruned", "pad": Path(cfg.paths.interim) / "padded",
            "extract": Path(cfg.paths.processed)}
    for name in cfg.stages:
        (outs[name] / MANIFEST).unlink(missing_ok=True)  # forget finished work: the point is to time it
        extra = [f"chunk_configs={cfg.chunk_configs}"] if name == "extract" else []
        lines.append(measure(name, stage_code(name, common + extra), mb))
        print(json.dumps(lines[-1]), flush=True)
    if cfg.formats:
        with tempfile.TemporaryDirectory() as tmp:
            for line in format_figures(Path(tmp)):
                lines.append(line)
                print(json.dumps(line), flush=True)
    return lines


if __name__ == "__main__":
    main()
