"""Completing config layout groups: a group sets only a prefix of its minor-to-major order
(often nothing: all -1 is the compiler's default) and the rest comes from the layout it defaults
to (docs/FORMAT.md, "Config columns").

- `complete_layout(group, own)`: one group completed from a default layout;
- `effective_output_layout`: each configurable node's output layout under each config;
- `group_defaults`: what each group of a configurable node completes from (output: the node's
  own layout; input: operand 0's; kernel: operand 1's for convolution and dot; operands from
  `features.operands`, where two that cannot be told apart default alike);
- `CompletionTable`: completion of packed groups through a table per distinct default layout,
  computed once per graph (the GNN's batches and the GBDT features pay gathers, not the
  comparisons); `GroupCompleter` applies it to each group of a graph's configurable nodes.
"""

from __future__ import annotations

import itertools

import numpy as np

from features.configs import NUM_CODES, pack_layout, unpack_layout
from features.operands import Operands


def complete_layout(group: np.ndarray, own: np.ndarray) -> np.ndarray:
    """A config layout group completed from the node's own layout.

    Real config groups often set only a prefix (the minor-most dims; e.g. `[4, 0, -1, ...]` for
    a rank-5 convolution) or nothing (all -1: the compiler's default). The completed layout is
    the group's prefix followed by the node's own dims in their own order, less those already
    placed, so a prefix of 0 entries gives the node's own layout.
    Shapes: group (..., 6) and own (..., 6), int with -1 padding; returns (..., 6) int8.
    """
    group = np.asarray(group, dtype=np.int8)
    own = np.broadcast_to(np.asarray(own, dtype=np.int8), group.shape)
    k = (group >= 0).sum(-1, keepdims=True)  # (..., 1) prefix length
    placed = (own[..., :, None] == group[..., None, :]).any(-1)  # (..., 6) own dim already in the prefix
    keep = (own >= 0) & ~placed
    order = np.argsort(~keep, axis=-1, kind="stable")  # kept own dims first, in their order
    rest = np.where(np.take_along_axis(keep, order, -1), np.take_along_axis(own, order, -1), -1)
    pos = np.arange(6)
    shifted = np.take_along_axis(rest, np.clip(pos - k, 0, 5), -1)
    return np.where(pos < k, group, shifted).astype(np.int8)


def effective_output_layout(node_layout_: np.ndarray, node_config_ids: np.ndarray, configs: np.ndarray) -> np.ndarray:
    """The output layout each configurable node has under each config (`complete_layout` of
    its output group, columns 0-5, with the node's own layout).
    Shapes: node_layout_ (N, 6) int; node_config_ids (NC,); configs (c, NC, 18);
    returns (c, NC, 6) int8.
    """
    own = node_layout_[node_config_ids].astype(np.int8)  # (NC, 6)
    return complete_layout(configs[..., 0:6], own[None])




def _prefix_groups() -> np.ndarray:
    """(P, 6) every prefix-form group (distinct dims, then -1): the only groups the data has."""
    rows = [list(p) + [-1] * (6 - r) for r in range(7) for p in itertools.permutations(range(6), r)]
    return np.asarray(rows, dtype=np.int8)


_PREFIX = _prefix_groups()  # (1957, 6)
_PREFIX_ROW = np.full(NUM_CODES, -1, dtype=np.int32)  # code -> row of _PREFIX, -1 for other codes
_PREFIX_ROW[pack_layout(_PREFIX)[:, 0]] = np.arange(_PREFIX.shape[0], dtype=np.int32)


def group_defaults(node_layout: np.ndarray, operands: Operands) -> np.ndarray:
    """The layout each config group of each configurable node completes from (see the module
    docstring): own layout, operand 0's (else own), operand 1's for convolution and dot (else
    all -1, which leaves the group as given). Where the two operands cannot be told apart
    (`Operands.ambiguous`) both groups complete from their common layout, or from the
    row-major (descending) order of their rank where the two tensors' layouts differ: a default
    that does not depend on which is which.
    Shapes: node_layout (N, 6); operands.slots (M, 3) -> (M, 3, 6) int8.
    """
    lay = np.asarray(node_layout, dtype=np.int8)
    slots = operands.slots  # (M, 3), -1 absent
    out = np.where((slots >= 0)[..., None], lay[np.maximum(slots, 0)], np.int8(-1))
    out[:, 1] = np.where((slots[:, 1] >= 0)[:, None], out[:, 1], lay[slots[:, 0]])  # no producer: own layout
    amb = operands.ambiguous & ((out[:, 1] != out[:, 2]).any(-1))
    if amb.any():
        rank = (out[amb, 1:] >= 0).sum(-1)[..., None]  # (A, 2, 1)
        pos = np.arange(6)
        out[amb, 1:] = np.where(pos < rank, rank - 1 - pos, -1).astype(np.int8)
    return out


class CompletionTable:
    """Completes packed config groups (`features.configs` codes) from a set of default layouts,
    through a table of every prefix-form group under each default, computed once.

    Args:
        defaults: (T, 6) int8, the distinct layouts groups complete from.

    Shapes: codes (...) int and default_idx (...) int into `defaults`, broadcast together ->
    (...) int32 completed codes (`complete_layout`). The data's groups are prefix-form; any
    other code is completed directly.
    """

    def __init__(self, defaults: np.ndarray):
        self.defaults = np.asarray(defaults, dtype=np.int8).reshape(-1, 6)
        if not len(self.defaults):  # no configurable node varies: nothing to complete
            self.table = np.zeros((0, _PREFIX.shape[0]), dtype=np.int32)
            return
        done = complete_layout(np.broadcast_to(_PREFIX, (len(self.defaults), *_PREFIX.shape)), self.defaults[:, None])
        self.table = pack_layout(done)[..., 0]  # (T, P) completed code of each prefix-form group

    def __call__(self, codes: np.ndarray, default_idx: np.ndarray) -> np.ndarray:
        codes, default_idx = np.broadcast_arrays(np.asarray(codes), np.asarray(default_idx))
        row = _PREFIX_ROW[codes]
        out = self.table[default_idx, np.maximum(row, 0)] if self.table.size else np.zeros(codes.shape, np.int32)
        odd = row < 0
        if odd.any():
            groups = unpack_layout(codes[odd][:, None])  # (n, 6)
            out = out.copy()
            out[odd] = pack_layout(complete_layout(groups, self.defaults[default_idx[odd]]))[:, 0]
        return out.astype(np.int32)


class GroupCompleter:
    """Completes the packed config groups of a graph's configurable nodes from their default
    layouts (`group_defaults`), through a `CompletionTable` of the distinct defaults.

    Args:
        defaults: (M, 3, 6) int8, what each group of each configurable node completes from.

    Shapes: codes (..., M, 3) int32 -> (..., M, 3) int32.
    """

    def __init__(self, defaults: np.ndarray):
        d = np.asarray(defaults, dtype=np.int8)
        uniq, inv = np.unique(d.reshape(-1, 6), axis=0, return_inverse=True)
        self.column = inv.reshape(d.shape[:-1]).astype(np.int64)  # (M, 3) default of each group
        self.table = CompletionTable(uniq)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return self.table(codes, self.column)
