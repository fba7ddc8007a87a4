"""Tiny raw files for tests: a 2-node graph with the given runtimes, in the real format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.npz import write_graph


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
