"""Layout configs: base-7 packing, streaming deduplication, never-varying nodes (pure functions).

A layout config row is (NC, 18): three 6-value groups (output, input, kernel layout), each a
minor-to-major order padded with -1. Values are -1..5, so a group is six base-7 digits
(value + 1) and packs into one int32 code in [0, 7**6): `pack_layout` and `unpack_layout`.
An all -1 group (the compiler's default) packs to 0.

Deduplication streams: `ConfigDeduper.add` takes the configs of one chunk (any fixed-width
rows, e.g. packed codes) with their runtimes and returns the rows seen for the first time, so
the caller can write them out as they come; it keeps only a 16-byte digest per unique row and
the runtime aggregates, so memory is bounded by the number of unique configs, not their size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

GROUP = 6
BASE = 7
NUM_CODES = BASE**GROUP  # 117,649 codes per group
_WEIGHTS = (BASE ** np.arange(GROUP - 1, -1, -1)).astype(np.float32)  # first entry most significant
POLICIES = ("min", "mean", "none")


def pack_layout(configs: np.ndarray) -> np.ndarray:
    """(..., 6*G) layout values in -1..5 -> (..., G) int32 base-7 codes.

    Raises ValueError for a value that is not an integer in -1..5.
    """
    x = np.asarray(configs, dtype=np.float32)
    if x.shape[-1] % GROUP:
        raise ValueError(f"last axis {x.shape[-1]} is not a multiple of {GROUP}")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < -1 or hi > BASE - 2 or not np.array_equal(x, np.rint(x)):
            raise ValueError(f"layout values must be integers in -1..{BASE - 2} (found range {lo}..{hi})")
    groups = x.reshape(*x.shape[:-1], -1, GROUP) + 1.0  # (..., G, 6) digits 0..6
    # float32 holds these integers exactly (< 2**24), and the matmul runs on BLAS
    return (groups @ _WEIGHTS).astype(np.int32)


def unpack_layout(codes: np.ndarray) -> np.ndarray:
    """(..., G) codes -> (..., 6*G) int8 layout values in -1..5 (inverse of `pack_layout`)."""
    c = np.asarray(codes, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= NUM_CODES):
        raise ValueError(f"layout codes must lie in [0, {NUM_CODES})")
    digits = (c[..., None] // _WEIGHTS.astype(np.int64)) % BASE  # (..., G, 6)
    return (digits - 1).astype(np.int8).reshape(*c.shape[:-1], c.shape[-1] * GROUP)


@dataclass
class Dedup:
    """Result of deduplicating C configs into U unique ones.

    config_map (C,) int64: unique row of each original config (predictions come back through it).
    runtime (U,): the policy's runtime per unique row (int64 for min/none, float64 for mean).
    first (U,) int64: original index of each unique row's first occurrence.
    varying (W,) bool: per position of the row's second axis (configurable node), whether its
    value ever differs between configs; None when rows have no second axis.
    """

    config_map: np.ndarray
    runtime: np.ndarray
    first: np.ndarray
    varying: np.ndarray | None

    @property
    def num_unique(self) -> int:
        return int(self.runtime.shape[0])

    def members(self) -> list[np.ndarray]:
        """Original indices of each unique row, ascending."""
        order = np.argsort(self.config_map, kind="stable")
        bounds = np.searchsorted(self.config_map[order], np.arange(self.num_unique + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.num_unique)]


class ConfigDeduper:
    """Streaming deduplication of config rows.

    Args:
        policy: runtime kept for duplicates: `min` (default; the fastest measurement), `mean`,
            or `none` (no deduplication: every config is its own row).
    """

    def __init__(self, policy: str = "min"):
        if policy not in POLICIES:
            raise ValueError(f"unknown dedup policy '{policy}' (known: {', '.join(POLICIES)})")
        self.policy = policy
        self._index: dict[bytes, int] = {}
        self._map: list[np.ndarray] = []
        self._rt_min: list[int] = []
        self._rt_sum: list[float] = []
        self._count: list[int] = []
        self._first: list[int] = []
        self._ref: np.ndarray | None = None  # the first row, to find varying nodes
        self._varying: np.ndarray | None = None
        self._seen = 0
        self.last_new = np.zeros(0, dtype=np.int64)  # chunk positions of the rows `add` last returned

    def add(self, rows: np.ndarray, runtime: np.ndarray) -> np.ndarray:
        """Add c configs. Shapes: rows (c, ...) fixed width; runtime (c,).

        Returns the rows not seen before, in first-occurrence order (their unique indices are
        consecutive, continuing from the previous call).
        """
        rows = np.ascontiguousarray(rows)
        c = rows.shape[0]
        runtime = np.asarray(runtime)
        if runtime.shape != (c,):
            raise ValueError(f"{c} rows but runtime shape {runtime.shape}")
        if c == 0:
            self.last_new = np.zeros(0, dtype=np.int64)
            return rows
        if self._ref is None:
            self._ref = rows[0].copy()
            self._varying = np.zeros(rows.shape[1] if rows.ndim > 1 else 0, dtype=bool)
        if rows.ndim > 2:
            self._varying |= (rows != self._ref).reshape(c, rows.shape[1], -1).any(axis=(0, 2))
        elif rows.ndim == 2:
            self._varying |= (rows != self._ref).any(axis=0)
        buf = memoryview(rows.reshape(c, -1).view(np.uint8).reshape(-1))
        step = len(buf) // c
        cmap = np.empty(c, dtype=np.int64)
        new: list[int] = []
        index, dedup = self._index, self.policy != "none"
        for i in range(c):
            key = hashlib.blake2b(buf[i * step : (i + 1) * step], digest_size=16).digest() if dedup else None
            u = index.get(key) if dedup else None
            rt = int(runtime[i])
            if u is None:
                u = len(self._first)
                if dedup:
                    index[key] = u
                self._first.append(self._seen + i)
                self._rt_min.append(rt)
                self._rt_sum.append(float(rt))
                self._count.append(1)
                new.append(i)
            else:
                if rt < self._rt_min[u]:
                    self._rt_min[u] = rt
                self._rt_sum[u] += rt
                self._count[u] += 1
            cmap[i] = u
        self._map.append(cmap)
        self._seen += c
        self.last_new = np.asarray(new, dtype=np.int64)
        return rows[self.last_new]

    def finish(self) -> Dedup:
        if self._seen == 0:
            raise ValueError("no configs were added")
        if self.policy == "mean":
            runtime = np.asarray(self._rt_sum) / np.asarray(self._count)
        else:
            runtime = np.asarray(self._rt_min, dtype=np.int64)
        varying = self._varying if self._ref is not None and self._ref.ndim >= 1 else None
        return Dedup(np.concatenate(self._map), runtime, np.asarray(self._first, dtype=np.int64), varying)


def dedup_configs(rows: np.ndarray, runtime: np.ndarray, policy: str = "min") -> tuple[Dedup, np.ndarray]:
    """Whole-array convenience: (Dedup, unique rows)."""
    d = ConfigDeduper(policy)
    uniq = d.add(rows, runtime)
    return d.finish(), uniq


def varying_nodes(configs: np.ndarray) -> np.ndarray:
    """(C, NC, ...) -> (NC,) bool: configurable nodes whose config differs between configs.
    A node that never varies gives a ranking model no signal."""
    c = configs.shape[0]
    if c == 0:
        return np.zeros(configs.shape[1], dtype=bool)
    return (configs != configs[:1]).reshape(c, configs.shape[1], -1).any(axis=(0, 2))
