"""The config searches of the sample: layout config groups per configurable node, tile sizes per kernel.

A layout search draws each configurable node's output / input / kernel layout from
`ConfigSpace`, the layouts the real files allow for the node (reshapes a full minor-to-major
permutation, convolutions and dots of rank >= 3 their two minor-most dims, all -1 the compiler
default), with the probabilities of `SEARCH`; a pool of distinct configs (`DUP_POOL`) makes
duplicated rows common, as in the real data. A tile search draws tile sizes per output dim
around the compiler's default tile. Draws are hashes of the config index
(`pipeline.sample.costmodel.hash_u01`), so a config does not depend on the chunking.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from features.layout import LAYOUT0, SHAPE_COLS
from pipeline.sample.costmodel import Op, hash_u01
from pipeline.sample.graphs import LayoutGraph

# How each search draws a config group: p(all -1, the compiler default), p(the default written
# out), p(near the default: same minor-most dim, the rest permuted); the rest is uniform over
# every layout. Real default searches stay near the compiler's choice, so their spread is small.
SEARCH = {
    "default": (0.25, 0.60, 0.15),
    "random": (0.15, 0.0, 0.0),
}
# distinct-config pool as a fraction of the configs: a smaller pool means more duplicates
DUP_POOL = {"default": 0.7, "random": 2.0}


def _group_layouts(row: np.ndarray, op: int) -> tuple[list[tuple[int, ...]], int, int, int]:
    """The layouts one config group (of a node whose shape and layout `row` holds) may take:
    (options with () = all -1 first, index of the node's own layout, first and count of the
    options sharing its minor-most dim)."""
    options: list[tuple[int, ...]] = [()]
    rank = int((row[SHAPE_COLS] > 0).sum())
    length = rank if op == Op.RESHAPE else min(rank, 2)
    if not length:
        return options, 0, 0, 1
    # lexicographic: the layouts sharing a minor-most dim are contiguous
    options += list(itertools.permutations(range(rank), length))
    minor_to_major = tuple(int(v) for v in row[LAYOUT0 : LAYOUT0 + rank])
    per_minor = (len(options) - 1) // rank
    return options, options.index(minor_to_major[:length]), 1 + minor_to_major[0] * per_minor, per_minor


@dataclass
class ConfigSpace:
    """Per configurable node and group (output, input, kernel): the layouts a search may pick."""

    table: np.ndarray        # (NC, 3, K, 6) float32; index 0 = all -1 (compiler default)
    count: np.ndarray        # (NC, 3) valid entries per group
    default_idx: np.ndarray  # (NC, 3) the explicit default layout
    near_lo: np.ndarray      # (NC, 3) first layout with the default's minor-most dim (they are contiguous)
    near_count: np.ndarray   # (NC, 3) how many such layouts

    @classmethod
    def of(cls, g: LayoutGraph) -> "ConfigSpace":
        """The space of `g`'s configurable nodes: a node's groups are itself, then its first
        operand (two for convolutions and dots), as the real files' 18 columns."""
        n = g.node_feat.shape[0]
        operands: dict[int, list[int]] = {}
        for consumer, producer in g.edge_index.tolist():
            operands.setdefault(consumer, []).append(producer)
        groups = []  # per configurable node, per group: (options, default, near_lo, near_count)
        for node in g.node_config_ids.tolist():
            op = int(g.node_opcode[node])
            slots = [node] + operands.get(node, [])[: 2 if op in (Op.CONVOLUTION, Op.DOT) else 1]
            groups.append([_group_layouts(g.node_feat[slots[s]], op) if s < len(slots) and 0 <= slots[s] < n
                           else ([()], 0, 0, 1) for s in range(3)])
        nc = len(groups)
        kmax = max([len(options) for node in groups for options, *_ in node] + [1])
        table = np.full((nc, 3, kmax, 6), -1.0, dtype=np.float32)
        count = np.ones((nc, 3), dtype=np.int64)
        for j, node in enumerate(groups):
            for s, (options, *_) in enumerate(node):
                count[j, s] = len(options)
                for k, layout in enumerate(options):
                    table[j, s, k, : len(layout)] = layout

        def per_group(field_index: int) -> np.ndarray:
            return np.asarray([[grp[field_index] for grp in node] for node in groups], dtype=np.int64).reshape(nc, 3)

        return cls(table, count, per_group(1), per_group(2), per_group(3))

    def configs(self, key: int, distinct: np.ndarray, search: str) -> np.ndarray:
        """(B, NC, 18) float32 rows of the distinct configs `distinct` (B,) of a search."""
        nc = self.count.shape[0]
        j = np.arange(nc)[None, :, None]
        s = np.arange(3)[None, None, :]
        d = distinct[:, None, None]
        u = hash_u01(key, d, j, s, 0)
        v = hash_u01(key, d, j, s, 1)
        pick = np.where(self.count > 1, 1 + np.floor(v * (self.count - 1)).astype(np.int64), 0)
        near = np.where(self.count > 1, self.near_lo + np.floor(v * self.near_count).astype(np.int64), 0)
        p_unset, p_default, p_near = SEARCH[search]
        choice = np.where(u < p_unset + p_default + p_near, near, pick)
        choice = np.where(u < p_unset + p_default, self.default_idx, choice)
        choice = np.where(u < p_unset, 0, choice)
        rows = self.table[j, s, choice]  # (B, NC, 3, 6)
        return rows.reshape(distinct.size, nc, 18)


def tile_configs(rng: np.random.Generator, dims: tuple[int, ...], minor: int, second: int,
                 n_configs: int) -> tuple[np.ndarray, int]:
    """(C, 24) tile configs of a kernel whose output has `dims` (minor-most dim `minor`, the
    next `second` or -1), and the index of the compiler's default tile among them."""
    r = len(dims)
    candidates = [sorted({min(d, 1 << k) for k in range(12)} | {d}) for d in dims]
    pool_size = max(2, int(n_configs * rng.uniform(0.4, 1.0)))
    pool = np.empty((pool_size, r), dtype=np.int64)
    for i, c in enumerate(candidates):
        a, b = rng.integers(len(c), size=(2, pool_size))
        # the searcher favours wide minor tiles and thin major ones
        pick = np.maximum(a, b) if i in (minor, second) else np.minimum(a, b)
        pool[:, i] = np.asarray(c)[pick]
    tiles = pool[rng.integers(pool_size, size=n_configs)]
    default = np.ones(r, dtype=np.int64)
    default[minor] = min(dims[minor], 128)
    if second >= 0:
        default[second] = min(dims[second], 8)
    at = int(rng.integers(n_configs))
    tiles[at] = default
    bounds = -(-np.asarray(dims, dtype=np.int64) // tiles)  # tiles per dim
    feat = np.zeros((n_configs, 24), dtype=np.float32)
    feat[:, :r] = bounds
    feat[:, 6] = bounds.sum(1)
    feat[:, 7] = bounds.prod(1)
    feat[:, 8 : 8 + r] = tiles
    feat[:, 14] = tiles.sum(1)
    feat[:, 15] = tiles.prod(1)
    return feat, at
