"""Tiny raw files for tests: a 2-node graph with the given runtimes, in the real format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io.npz import write_graph


def tiny_graph(kind: str, runtime: Sequence[int], normalizers: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Arrays of a 2-node raw file with one config per runtime (tile normalizers default to 1)."""
    c = len(runtime)
    arrays = {
        "node_feat": np.zeros((2, 140), np.float32),
        "node_opcode": np.array([63, 2], np.uint8),
        "edge_index": np.array([[1, 0]], np.int64),
        "config_runtime": np.asarray(runtime, np.int64),
    }
    if kind == "tile":
        arrays["config_feat"] = np.zeros((c, 24), np.float32)
        arrays["config_runtime_normalizers"] = np.asarray(np.ones(c) if normalizers is None else normalizers, np.int64)
    else:
        arrays["node_config_ids"] = np.array([1], np.int64)
        arrays["node_splits"] = np.array([[0]], np.int64)
        arrays["node_config_feat"] = np.full((c, 1, 18), -1, np.float32)
    return arrays


def write_tiny_graph(path: Path, kind: str, runtime: Sequence[int], normalizers: Sequence[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_graph(path, tiny_graph(kind, runtime, normalizers))


def cfg(name: str, *overrides: str, **kw):
    """A stage's composed config with `key=value` overrides (`kw` values are formatted as is)."""
    from pipeline.core.cli import compose

    return compose(name, list(overrides) + [f"{k}={v}" for k, v in kw.items()])


# layout groups of a rank-2 tensor: the compiler's default, and the two orders it can take
DEFAULT, ROW_MAJOR, COL_MAJOR = [-1] * 6, [1, 0, -1, -1, -1, -1], [0, 1, -1, -1, -1, -1]


def chain_graph(kind: str, configs: np.ndarray, runtime: Sequence[int],
                normalizers: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Arrays of a 5-node chain `parameter -> convolution -> add -> dot -> reshape` of rank-2
    (8, 128) f32 tensors, in the real format.

    kind "tile": `configs` (C, 24) tile configs. kind "layout": `configs` (C, 2, 18) for the
    two configurable nodes, the convolution (1) and the dot (3)."""
    configs = np.asarray(configs, np.float32)
    nf = np.zeros((5, 140), np.float32)
    nf[:, 21:23] = [8, 128]
    nf[:, 27], nf[:, 28] = 136, 1024
    nf[:, 13] = 1  # f32
    nf[:, 134:136] = [1, 0]
    nf[4, 0] = 1  # root
    arrays = {
        "node_feat": nf,
        "node_opcode": np.array([63, 26, 2, 34, 75], np.uint8),
        "edge_index": np.array([[1, 0], [2, 1], [3, 2], [4, 3]], np.int64),
        "config_runtime": np.asarray(runtime, np.int64),
    }
    if kind == "tile":
        arrays["config_feat"] = configs
        c = configs.shape[0]
        arrays["config_runtime_normalizers"] = np.asarray(np.ones(c) if normalizers is None else normalizers, np.int64)
    else:
        arrays["node_config_ids"] = np.array([1, 3], np.int64)
        arrays["node_splits"] = np.array([[0, 5]], np.int64)
        arrays["node_config_feat"] = configs
    return arrays


def layout_configs(*rows: Sequence[Sequence[int]]) -> np.ndarray:
    """(C, 2, 18) layout configs from per-config (conv output group, dot output group) pairs;
    input and kernel groups are the default."""
    out = np.full((len(rows), 2, 18), -1, np.float32)
    for i, (conv, dot) in enumerate(rows):
        out[i, 0, :6], out[i, 1, :6] = conv, dot
    return out


def tile_configs(*sizes: int) -> np.ndarray:
    """(C, 24) tile configs whose output tile is (size, 128)."""
    out = np.zeros((len(sizes), 24), np.float32)
    for i, s in enumerate(sizes):
        out[i, 8:10], out[i, 14], out[i, 15] = [s, 128], s + 128, s * 128
    return out


def write_chain_graph(path: Path, kind: str, configs: np.ndarray, runtime: Sequence[int],
                      normalizers: Sequence[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_graph(path, chain_graph(kind, configs, runtime, normalizers))
    return path


# the embedded sample at its smallest
TINY = ["graphs.train=2", "graphs.valid=1", "graphs.test=1", "tile_scale=1"]


def build_tiny_tree(root: Path) -> dict[str, Path]:
    """The embedded sample at its smallest, through prune, pad and extract (about a second)."""
    from pipeline import extract, pad, prune
    from pipeline.core.cli import compose
    from pipeline.sample_data import generate

    d = {"raw": root / "raw", "pruned": root / "pruned", "padded": root / "padded", "processed": root / "processed"}
    generate(compose("sample_data", [f"out={d['raw']}", *TINY]))
    prune.run(compose("prune", [f"data={d['raw']}", f"out={d['pruned']}", "jobs=1"]))
    pad.run(compose("pad", [f"data={d['pruned']}", f"out={d['padded']}", "jobs=1"]))
    extract.run(compose("extract", [f"data={d['padded']}", f"out={d['processed']}", "jobs=1", "tables=false", "chunk_configs=64"]))
    d["gnn"] = d["processed"] / "gnn"
    return d
