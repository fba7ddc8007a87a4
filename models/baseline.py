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
from features.completion import complete_layout
from features.tabular import tile_padding

MINOR = 2  # layout positions compared: the minor-most and second-minor dimensions


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
        self.default = node_layout(node_feat)[v[keep]]  # (E', 6) producer's own layout
        self.weight = tensor_bytes(node_feat)[v[keep]]  # (E',)
        self.slot_default = node_layout(node_feat)[node_config_ids]  # (NC, 6)

    def __call__(self, config_chunk: np.ndarray) -> np.ndarray:
        """(c, NC, 18) float32 -> (c,) copied bytes."""
        c = config_chunk.shape[0]
        if self.weight.size == 0:
            return np.zeros(c)
        ps, cs = self.prod_slot, self.cons_slot
        out = complete_layout(config_chunk[:, :, 0:6], self.slot_default[None])[..., :MINOR]  # (c, NC, 2)
        default = self.default[None, :, :MINOR]  # (1, E', 2)
        produced = np.where((ps >= 0)[None, :, None], out[:, np.maximum(ps, 0)], default)  # (c, E', 2)
        wanted_in = complete_layout(config_chunk[:, np.maximum(cs, 0), 6:12], self.default[None])[..., :MINOR]
        wanted = np.where((cs >= 0)[None, :, None], wanted_in, default)  # (c, E', 2)
        mismatch = (produced != wanted).any(-1)  # (c, E')
        return mismatch.astype(np.float64) @ self.weight


def tile_padding_cost(node_feat: np.ndarray, config_feat: np.ndarray) -> np.ndarray:
    """(C,) padding waste of tiling the kernel's output (the root node's shape) by output_bounds."""
    shape = node_feat[root_node(node_feat), SHAPE_COLS]
    waste, count = tile_padding(shape, config_feat[:, 8:14])
    return 1.0 + waste + 1e-3 * np.log(count)
