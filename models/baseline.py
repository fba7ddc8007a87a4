"""Baseline rankers that need no training: the walking skeleton's model and a floor for others.

Layout: a config costs the bytes copied where a producer's output layout and its consumer's
expected layout disagree in the two minor-most dimensions (the ones TPU tiling depends on; real
config groups often set only those two). A configurable node's output layout is its config's
output group completed from its own node_feat layout (`features.completion.complete_layout`; all -1 is
the compiler default); a consumer expects its configured input group, completed from the
producer's own layout, when it is configurable, and the producer's own layout otherwise. Every edge touching a configurable node contributes
`bytes(producer) * [mismatch]`.

Tile: a config costs its padding waste, the padded output volume over the true volume when the
output is cut into tiles of `output_bounds`, with the tile count as a small tie-break.

Both return a cost per config: lower is predicted faster.
"""

from __future__ import annotations

import numpy as np

from features.layout import SHAPE_COLS, node_layout, root_node, tensor_bytes
from features.completion import CompletionTable
from features.configs import NUM_CODES, pack_layout, unpack_layout
from features.tabular import tile_padding

MINOR = 2  # layout positions compared: the minor-most and second-minor dimensions
# packed group code -> one int for its MINOR minor-most dims (codes: features.configs)
_MINOR_KEY = (unpack_layout(np.arange(NUM_CODES)[:, None])[:, :MINOR].astype(np.int32) + 1) @ (7 ** np.arange(MINOR, dtype=np.int32))


def _minor_key(layouts: np.ndarray) -> np.ndarray:
    """(..., 6) layouts -> (...) the key of their MINOR minor-most dims."""
    return _MINOR_KEY[pack_layout(layouts)[..., 0]]


class LayoutCopyCost:
    """Precomputes the edges that touch configurable nodes; then scores config chunks.

    Args:
        node_feat: (N, 140) float32.
        edge_index: (E, 2) int64, row [u, v]: u consumes v.
        node_config_ids: (NC,) int64.
    """

    def __init__(self, node_feat: np.ndarray, edge_index: np.ndarray, node_config_ids: np.ndarray):
        n = node_feat.shape[0]
        slot = np.full(n, -1, dtype=np.int64)
        slot[node_config_ids] = np.arange(node_config_ids.size)
        u, v = edge_index[:, 0], edge_index[:, 1]
        keep = (slot[u] >= 0) | (slot[v] >= 0)
        self.cons_slot = slot[u[keep]]  # (E',) consumer's config slot or -1
        self.prod_slot = slot[v[keep]]  # (E',) producer's config slot or -1
        default = node_layout(node_feat)[v[keep]]  # (E', 6) producer's own layout
        self.default_key = _minor_key(default)  # (E',)
        self.weight = tensor_bytes(node_feat)[v[keep]]  # (E',)
        # completion through packed codes, one table per graph (features.completion.CompletionTable):
        # output groups from each configurable node's own layout, input groups from the producer's
        own = node_layout(node_feat)[node_config_ids]  # (NC, 6)
        layouts, idx = np.unique(np.concatenate([own, default]).astype(np.int8), axis=0, return_inverse=True)
        self.table = CompletionTable(layouts)
        self.own_idx, self.default_idx = idx[: own.shape[0]], idx[own.shape[0]:]

    def __call__(self, config_chunk: np.ndarray) -> np.ndarray:
        """(c, NC, 18) float32 -> (c,) copied bytes."""
        c = config_chunk.shape[0]
        if self.weight.size == 0:
            return np.zeros(c)
        ps, cs = self.prod_slot, self.cons_slot
        codes = pack_layout(config_chunk[:, :, 0:12])  # (c, NC, 2): output and input groups
        out = _MINOR_KEY[self.table(codes[..., 0], self.own_idx[None])]  # (c, NC)
        produced = np.where((ps >= 0)[None], out[:, np.maximum(ps, 0)], self.default_key[None])  # (c, E')
        wanted_in = _MINOR_KEY[self.table(codes[:, np.maximum(cs, 0), 1], self.default_idx[None])]  # (c, E')
        wanted = np.where((cs >= 0)[None], wanted_in, self.default_key[None])
        return (produced != wanted).astype(np.float64) @ self.weight


def tile_padding_cost(node_feat: np.ndarray, config_feat: np.ndarray) -> np.ndarray:
    """(C,) padding waste of tiling the kernel's output (the root node's shape) by output_bounds."""
    shape = node_feat[root_node(node_feat), SHAPE_COLS]
    waste, count = tile_padding(shape, config_feat[:, 8:14])
    return 1.0 + waste + 1e-3 * np.log(count)
