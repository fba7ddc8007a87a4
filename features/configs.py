"""Layout configs: base-7 packing and streaming deduplication (pure functions).

A layout config row is (NC, 18): three 6-value groups (output, input, kernel layout), each a
minor-to-major order padded with -1. Values are -1..5, so a group is six base-7 digits
(value + 1) and packs into one int32 code in [0, 7**6): `pack_layout` and `unpack_layout`.
An all -1 group (the compiler's default) packs to 0.

Deduplication streams: `ConfigDeduper.add` takes the configs of one chunk (any fixed-width
rows, e.g. packed codes) with their runtimes and returns the rows seen for the first time, so
the caller can write them out as they come; it keeps only a 16-byte digest per unique row and
the runtime aggregates, so memory is bounded by the number of unique configs, not their size.
The digest is two 64-bit multilinear hashes of the row's 32-bit words with fixed random odd
multipliers, computed for the whole chunk at once: two different rows share it with
probability about 2**-94 for layout codes (values below 2**17), so across the 5e9 pairs of a
100k-config graph a false merge is out of reach in practice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP = 6
BASE = 7
NUM_CODES = BASE**GROUP  # 117,649 codes per group
_WEIGHTS = (BASE ** np.arange(GROUP - 1, -1, -1)).astype(np.float32)  # first entry most significant
POLICIES = ("min", "mean", "none")


_BLOCK = 1 << 18  # values packed at a time: the temporaries stay in cache (1.5x faster on a full chunk)


def _group_weights(groups: int) -> np.ndarray:
    """(6*G, G) float32 block-diagonal digit weights: row-of-values @ it = the G codes less the
    +1 offset of each digit (one BLAS gemm; a (.., 6) @ (6,) matvec per group is 7x slower)."""
    w = np.zeros((groups * GROUP, groups), dtype=np.float32)
    for j in range(groups):
        w[j * GROUP : (j + 1) * GROUP, j] = _WEIGHTS
    return w


def pack_layout(configs: np.ndarray) -> np.ndarray:
    """(..., 6*G) layout values in -1..5 -> (..., G) int32 base-7 codes.

    Raises ValueError for a value that is not an integer in -1..5.
    """
    x = np.asarray(configs, dtype=np.float32)
    if x.shape[-1] % GROUP:
        raise ValueError(f"last axis {x.shape[-1]} is not a multiple of {GROUP}")
    groups = x.shape[-1] // GROUP
    rows = x.reshape(-1, x.shape[-1])  # (R, 6*G)
    codes = np.empty((rows.shape[0], groups), dtype=np.int32)
    weights = _group_weights(groups)
    offset = np.float32(_WEIGHTS.sum())  # the +1 of every digit: a value v is the digit v + 1
    step = max(1, min(rows.shape[0], _BLOCK // max(1, x.shape[-1])))
    # block temporaries allocated once (fresh ones per block cost a third of the time)
    rounded = np.empty((step, rows.shape[1]), dtype=np.float32)
    exact = np.empty((step, rows.shape[1]), dtype=bool)
    packed = np.empty((step, groups), dtype=np.float32)
    for i in range(0, rows.shape[0], step):
        block = rows[i : i + step]
        n = block.shape[0]
        if block.min() < -1 or block.max() > BASE - 2 or not np.equal(block, np.rint(block, out=rounded[:n]), out=exact[:n]).all():
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(f"layout values must be integers in -1..{BASE - 2} (found range {lo}..{hi})")
        # float32 holds these integers and every partial sum exactly (< 7**6 < 2**24)
        np.matmul(block, weights, out=packed[:n])
        packed[:n] += offset
        codes[i : i + n] = packed[:n]
    return codes.reshape(*x.shape[:-1], -1)


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
        self._rt_min = np.zeros(0, dtype=np.int64)  # per unique row, grown by doubling
        self._rt_sum = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.int64)
        self._first = np.zeros(0, dtype=np.int64)
        self._u = 0  # unique rows so far
        self._mult: np.ndarray | None = None  # (words, 2) uint64 hash multipliers
        self._ref: np.ndarray | None = None  # the first row, to find varying nodes
        self._varying: np.ndarray | None = None
        self._seen = 0
        self.last_new = np.zeros(0, dtype=np.int64)  # chunk positions of the rows `add` last returned

    def _digests(self, rows: np.ndarray) -> np.ndarray:
        """(c, ...) rows -> (c,) 16-byte digests (dtype V16)."""
        c = rows.shape[0]
        raw = rows.reshape(c, -1).view(np.uint8)
        if raw.shape[1] % 4:
            raw = np.concatenate([raw, np.zeros((c, 4 - raw.shape[1] % 4), np.uint8)], axis=1)
        words = raw.view(np.uint32).astype(np.uint64)
        if self._mult is None:
            rng = np.random.default_rng(0x7b9)
            self._mult = rng.integers(0, 2**63, size=(words.shape[1], 2), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        return np.ascontiguousarray(words @ self._mult).view("V16").reshape(c)  # wraps mod 2**64

    def _grow(self, n: int) -> None:
        if n > self._first.size:
            cap = max(n, 2 * self._first.size, 1024)
            for name in ("_rt_min", "_rt_sum", "_count", "_first"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[: old.size] = old
                setattr(self, name, new)

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
        if rows.ndim >= 2:
            # any over the config axis of a 2-D view runs row by row (fast); then per node
            flat = (rows.reshape(c, -1) != self._ref.reshape(-1)).any(axis=0)
            self._varying |= flat.reshape(rows.shape[1], -1).any(axis=1)
        if self.policy == "none":
            new = np.arange(c, dtype=np.int64)
            cmap = self._u + new
        else:
            # duplicates inside the chunk first, then one dict lookup per distinct digest
            keys, pos, inv = np.unique(self._digests(rows), return_index=True, return_inverse=True)
            order = np.argsort(pos, kind="stable")  # distinct digests in first-occurrence order
            ids = np.empty(keys.size, dtype=np.int64)
            new_list: list[int] = []
            index, u = self._index, self._u
            for j, key in zip(order.tolist(), keys[order].tolist()):
                got = index.get(key)
                if got is None:
                    got = index[key] = u + len(new_list)
                    new_list.append(j)
                ids[j] = got
            new = pos[np.asarray(new_list, dtype=np.int64)]
            cmap = ids[inv.reshape(-1)]
        n_new = new.size
        self._grow(self._u + n_new)
        self._first[self._u : self._u + n_new] = self._seen + new
        self._rt_min[self._u : self._u + n_new] = np.iinfo(np.int64).max
        self._u += n_new
        rt = runtime.astype(np.int64)
        np.minimum.at(self._rt_min, cmap, rt)
        np.add.at(self._rt_sum, cmap, rt.astype(np.float64))
        np.add.at(self._count, cmap, 1)
        self._map.append(cmap)
        self._seen += c
        self.last_new = new
        return rows[new]

    def finish(self) -> Dedup:
        if self._seen == 0:
            raise ValueError("no configs were added")
        u = self._u
        if self.policy == "mean":
            runtime = self._rt_sum[:u] / self._count[:u]
        else:
            runtime = self._rt_min[:u].copy()
        varying = self._varying if self._ref is not None and self._ref.ndim >= 1 else None
        return Dedup(np.concatenate(self._map), runtime, self._first[:u].copy(), varying)


def dedup_configs(rows: np.ndarray, runtime: np.ndarray, policy: str = "min") -> tuple[Dedup, np.ndarray]:
    """Deduplicate rows held in memory at once (tile configs): (Dedup, unique rows)."""
    d = ConfigDeduper(policy)
    uniq = d.add(rows, runtime)
    return d.finish(), uniq


def unlearnable_reason(unique_runtime: np.ndarray) -> str | None:
    """Why a graph gives a ranker nothing to learn from, or None when it does.

    `unique_runtime` (U,) is the training target of each unique config of one graph. A graph
    with fewer than two unique configs (all its configs identical, or configurable nodes that
    never vary) or whose configs all share one runtime has no order to learn; training sets it
    aside, prediction still scores it (any order is right for identical configs).
    """
    r = np.asarray(unique_runtime)
    if r.size < 2:
        return "one unique config" if r.size == 1 else "no configs"
    if float(np.min(r)) == float(np.max(r)):
        return f"all {r.size} unique configs have the same runtime"
    return None
