"""Baseline rankers that need no training: the walking skeleton's model and a floor for others.

Layout: a config costs the bytes copied where a producer's output layout and its consumer's
expected layout disagree in the two minor-most dimensions (the ones TPU tiling depends on; real
config groups often set only those two). A configurable node's output layout is its config's
output group completed from its own node_feat layout (`features.completion.complete_layout`; all -1 is
the compiler default); a configurable consumer expects, of its operand 0, its input group and, of
a convolution's or dot's operand 1, its kernel group (`features.operands`), each completed from
the producer's own layout; a consumer that is not configurable expects the producer's own
layout. Every edge touching a configurable node contributes `bytes(producer) * [mismatch]`; the
two operands of a node that cannot be told apart each count half under either group, and a
producer read as both operands counts once per operand.

Tile: a config costs its padding waste, the padded output volume over the true volume when the
output is cut into tiles of `output_bounds`, with the tile count as a small tie-break.

Both return a cost per config: lower is predicted faster.
"""

from __future__ import annotations

import numpy as np

from features.completion import CompletionTable
from features.configs import NUM_CODES, pack_layout, unpack_layout
from features.layout import SHAPE_COLS, node_layout, root_node, tensor_bytes
from features.operands import infer_operands
from features.tabular import tile_padding

MINOR = 2  # layout positions compared: the minor-most and second-minor dimensions
# packed group code -> one int for its MINOR minor-most dims (codes: features.configs)
_MINOR_KEY = (unpack_layout(np.arange(NUM_CODES)[:, None])[:, :MINOR].astype(np.int32) + 1) @ (7 ** np.arange(MINOR, dtype=np.int32))


def _minor_key(layouts: np.ndarray) -> np.ndarray:
    """(..., 6) layouts -> (...) the key of their MINOR minor-most dims."""
    return _MINOR_KEY[pack_layout(layouts)[..., 0]]


class LayoutCopyCost:
    """Precomputes the reads that touch configurable nodes; then scores config chunks.

    Args:
        node_feat: (N, 140) float32, raw.
        node_opcode: (N,) opcode ids.
        edge_index: (E, 2) int64, row [u, v]: u consumes v.
        node_config_ids: (NC,) int64.
    """

    def __init__(self, node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray,
                 node_config_ids: np.ndarray):
        n = node_feat.shape[0]
        ids = np.asarray(node_config_ids, dtype=np.int64)
        slot = np.full(n, -1, dtype=np.int64)
        slot[ids] = np.arange(ids.size)
        e = np.asarray(edge_index, dtype=np.int64).reshape(-1, 2)
        u, v = e[:, 0], e[:, 1]
        # reads by unconfigurable consumers of configurable producers: they expect the producer's layout
        plain = (slot[u] < 0) & (slot[v] >= 0)
        cons, prod, group, weight = [np.full(int(plain.sum()), -1)], [v[plain]], [np.full(int(plain.sum()), 1)], [np.ones(int(plain.sum()))]
        # reads by configurable consumers: operand 0 under the input group, operand 1 under the kernel group
        ops = infer_operands(node_feat, node_opcode, e, ids)
        half = np.where(ops.ambiguous, 0.5, 1.0)
        for s_, g_, w_ in ((1, 1, half), (2, 2, half), (1, 2, 1.0 - half), (2, 1, 1.0 - half)):
            ok = (ops.slots[:, s_] >= 0) & (w_ > 0)
            cons.append(np.flatnonzero(ok))
            prod.append(ops.slots[ok, s_])
            group.append(np.full(int(ok.sum()), g_))
            weight.append(np.broadcast_to(w_, ok.shape)[ok])
        # any further producer (not an operand slot) of a configurable consumer: under its input group
        known = set(zip(np.repeat(ids, 2).tolist(), ops.slots[:, 1:].reshape(-1).tolist()))
        extra = np.asarray([slot[a] >= 0 and (a, b) not in known for a, b in e.tolist()], dtype=bool).reshape(-1)
        cons.append(slot[u[extra]])
        prod.append(v[extra])
        group.append(np.full(int(extra.sum()), 1))
        weight.append(np.ones(int(extra.sum())))
        self.cons_slot = np.concatenate(cons).astype(np.int64)  # (R,) consumer's config slot or -1
        producer = np.concatenate(prod).astype(np.int64)  # (R,) producer node
        self.group = np.concatenate(group).astype(np.int64)  # (R,) the consumer's group that lays the read out
        self.prod_slot = slot[producer]  # (R,) producer's config slot or -1
        default = node_layout(node_feat)[producer]  # (R, 6) producer's own layout
        self.default_key = _minor_key(default)  # (R,)
        self.weight = tensor_bytes(node_feat)[producer] * np.concatenate(weight)  # (R,)
        # completion through packed codes, one table per graph (features.completion.CompletionTable):
        # output groups from each configurable node's own layout, input and kernel groups from the producer's
        own = node_layout(node_feat)[ids]  # (NC, 6)
        layouts, idx = np.unique(np.concatenate([own, default]).astype(np.int8).reshape(-1, 6), axis=0, return_inverse=True)
        self.table = CompletionTable(layouts)
        idx = idx.reshape(-1)
        self.own_idx, self.default_idx = idx[: own.shape[0]], idx[own.shape[0]:]

    def __call__(self, config_chunk: np.ndarray) -> np.ndarray:
        """(c, NC, 18) float32 -> (c,) copied bytes."""
        c = config_chunk.shape[0]
        if self.weight.size == 0:
            return np.zeros(c)
        ps, cs = self.prod_slot, self.cons_slot
        codes = pack_layout(config_chunk)  # (c, NC, 3): output, input and kernel groups
        out = _MINOR_KEY[self.table(codes[..., 0], self.own_idx[None])]  # (c, NC)
        produced = np.where((ps >= 0)[None], out[:, np.maximum(ps, 0)], self.default_key[None])  # (c, R)
        wanted_in = _MINOR_KEY[self.table(codes[:, np.maximum(cs, 0), self.group], self.default_idx[None])]  # (c, R)
        wanted = np.where((cs >= 0)[None], wanted_in, self.default_key[None])
        return (produced != wanted).astype(np.float64) @ self.weight


def tile_padding_cost(node_feat: np.ndarray, config_feat: np.ndarray) -> np.ndarray:
    """(C,) padding waste of tiling the kernel's output (the root node's shape) by output_bounds."""
    shape = node_feat[root_node(node_feat), SHAPE_COLS]
    waste, count = tile_padding(shape, config_feat[:, 8:14])
    return 1.0 + waste + 1e-3 * np.log(count)
