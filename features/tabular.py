"""Hand-made per-config features for gradient-boosted rankers (pure functions).

Everything is vectorized over a chunk of configs and works on packed groups (one int32 per
6-value layout group, `features.configs.pack_layout`). Config groups often set only a prefix
(the minor-most dims) or nothing; every comparison below is between COMPLETED layouts
(`features.completion.complete_layout`: the group's prefix, then the node's own dims): a node's
effective output layout is its output group completed from its own layout, and a consumer's
wanted input layout is its input group completed from the producer's own layout. Layout
features (per config):
- `cnt_<group>_<kind>_<cat>`: configurable nodes of an opcode kind (conv, dot, reshape, other)
  whose raw config group (out, in, kernel) is the default (`def`: sets nothing) or has
  minor-most dimension d (`m0`..`m5`): 3 x 4 x 7 counts.
- `mismatch_pairs`, `mismatch_bytes`: producer-consumer pairs of configurable nodes (through
  any chain of other nodes) where the consumer sets the group the producer is read under
  (input, or kernel for a convolution's or dot's operand 1: `features.prune.config_node_pairs`;
  half each where the operands cannot be told apart) and its completed layout differs from the
  producer's effective output layout (a default group asks for nothing), and the producer
  tensor bytes of those pairs; `change_pairs`, `change_bytes`:
  pairs whose effective output layouts differ.
- `pad_waste_bytes`, `pad_waste_minor_bytes`: bytes lost padding each configurable node's tensor
  to TPU tiles (minor-most dim to 128, second-minor to 8; and the minor-most alone) under its
  effective output layout.
Tile features: the 24 config columns, tile counts and padding waste of the output tile over the
kernel's root shape (`tile_padding`, shared with the baseline), tile bytes. Per-graph size
statistics are broadcast to every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.completion import CompletionTable, GroupCompleter, group_defaults
from features.configs import unpack_layout
from features.cost_terms import TOTAL_NAMES, config_totals, layout_terms, slot_facts
from features.layout import CONVOLUTION, ELEMENT_BYTES, KINDS, SHAPE_COLS, TYPE_COLS, node_layout, opcode_kind, root_node, tensor_bytes
from features.operands import CONV_INPUT_BATCH, CONV_OUTPUT_BATCH, group_weights, infer_operands

_D0, _D1 = 7**5, 7**4  # weights of the first two base-7 digits of a packed group

GROUPS = ("out", "in", "kernel")
CATS = ("def",) + tuple(f"m{d}" for d in range(6))
COUNT_NAMES = tuple(f"cnt_{g}_{k}_{c}" for g in GROUPS for k in KINDS for c in CATS)
# the role of the dim a completed group puts minor-most: a convolution's feature dim (the one it
# wants minor in that slot, or the kernel's input feature dim), its batch dim, the tensor's last
# dim (row-major minor-most), any other
ROLES = ("feature", "batch", "last", "other")
RANK_BUCKETS = ("r12", "r3", "r4", "r56")  # tensor ranks 1-2, 3, 4, 5-6
ROLE_NAMES = tuple(f"role_{g}_{k}_{r}" for g in GROUPS for k in KINDS for r in ROLES)
ROLE_BYTES_NAMES = tuple(f"role_bytes_{g}_{k}_{r}" for g in GROUPS for k in KINDS for r in ROLES)
RANK_ROLE_NAMES = tuple(f"rank_role_{g}_{b}_{r}" for g in GROUPS for b in RANK_BUCKETS for r in ROLES)
CHANGED_NAMES = tuple(f"{n}_{g}_{k}" for n in ("changed", "changed_bytes") for g in GROUPS for k in KINDS)
LAYOUT_NAMES = COUNT_NAMES + ("mismatch_pairs", "mismatch_bytes", "change_pairs", "change_bytes",
                              "pad_waste_bytes", "pad_waste_minor_bytes") + ROLE_NAMES + ROLE_BYTES_NAMES + RANK_ROLE_NAMES + CHANGED_NAMES
# the analytical cost terms (`features.cost_terms`), bytes as bytes, summed per opcode kind: the
# analytical ranker's inputs, here beside the rest
TOTALS_NAMES = tuple(f"ct_{name}" for name in TOTAL_NAMES)
LAYOUT_NAMES = LAYOUT_NAMES + TOTALS_NAMES
FLAT_PREFIX = "flat_"  # `flat_<j>_<group>_<d>`: a node's raw group, minor-most first: one graph's own columns
FLAT_DIMS = 2  # the dims a TPU tiles (on unet3d's transductive check all six read no better than these two)
TILE_NAMES = tuple(f"cfg_{i}" for i in range(24)) + ("tile_count", "tile_pad_waste", "tile_bytes")


@dataclass
class LayoutContext:
    """What the layout features need of one graph, for its NC configurable nodes.

    kind (NC,) 0..3; own (NC, 6) int8 node layout (-1 padded); dims (NC, 6) shape dims;
    nbytes (NC,) tensor bytes; pairs (P, 3) `[consumer_pos, producer_pos, group]`; graph (dict) size
    stats; own_idx (NC,) index of each node's own layout among its distinct values, the
defaults of `complete`.
    """

    kind: np.ndarray
    own: np.ndarray
    dims: np.ndarray
    nbytes: np.ndarray
    pairs: np.ndarray
    graph: dict[str, float]
    own_idx: np.ndarray
    complete: CompletionTable  # packed groups completed from own layouts: complete(codes, own_idx)
    groups: GroupCompleter  # every group completed from the layout it defaults to (its slot tensor's)
    role: np.ndarray  # (NC, 3, 7) int8 role (ROLES index) of a completed group's first digit; -1 none
    slot_bytes: np.ndarray  # (NC, 3) bytes of each slot tensor (0 absent)
    rank_bucket: np.ndarray  # (NC, 3) RANK_BUCKETS index of each slot tensor (-1 absent)
    facts: np.ndarray  # (NC, 3, SLOT_FACTS) `features.cost_terms.slot_facts`
    defaults: np.ndarray  # (NC, 3, 6) what each group completes from (`features.completion.group_defaults`)
    flat: bool = False  # also `flat_<j>_<group>_<d>` columns: the graph's own groups (one graph trained and scored)


def layout_context(node_feat: np.ndarray, node_opcode: np.ndarray, node_config_ids: np.ndarray,
                   pairs: np.ndarray, graph: dict[str, float], edge_index: np.ndarray | None = None,
                   flat: bool = False) -> LayoutContext:
    """What `layout_features` needs of one graph: RAW node_feat (N, 140), its opcodes, the NC
    configurable nodes, `config_pairs` (P, 3), per-graph statistics and the graph's edges (operands:
    `features.operands`; None: no operand tensors); `flat` adds the graph's own group columns."""
    nf = node_feat[node_config_ids]
    kind = opcode_kind(node_opcode[node_config_ids])
    nb = tensor_bytes(nf)
    stats = dict(graph)
    stats["config_bytes"] = float(nb.sum())
    for k, name in enumerate(KINDS):
        stats[f"n_{name}"] = float((kind == k).sum())
    own = node_layout(nf)
    owns, own_idx = np.unique(own.reshape(-1, 6), axis=0, return_inverse=True)
    edges = np.zeros((0, 2), dtype=np.int64) if edge_index is None else edge_index
    operands = infer_operands(node_feat, node_opcode, edges, node_config_ids)
    facts = slot_facts(node_feat, node_opcode, edges, operands)  # (NC, 3, SLOT_FACTS)
    role, slot_bytes, bucket = _slot_roles(node_feat, node_opcode, operands.slots, facts)
    defaults = group_defaults(node_layout(node_feat), operands)
    return LayoutContext(kind, own, nf[:, SHAPE_COLS].astype(np.float64), nb,
                         np.asarray(pairs, dtype=np.int64).reshape(-1, 3), stats,
                         own_idx.reshape(-1).astype(np.int64), CompletionTable(owns),
                         GroupCompleter(defaults), role, slot_bytes, bucket, facts, defaults, flat)


def _slot_roles(node_feat: np.ndarray, node_opcode: np.ndarray, slots: np.ndarray,
                facts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per configurable node and slot: the ROLES index of each dim (by the digit a packed group
    gives it: dim + 1; -1 for no dim), the slot tensor's bytes and its rank bucket."""
    dims = facts[..., :6]
    rank = (dims > 0).sum(-1)  # (NC, 3)
    present = (slots >= 0) & (rank > 0)
    nbytes = np.where(dims > 0, dims, 1).prod(-1).astype(np.float64) * facts[..., 6] * present
    nc = slots.shape[0]
    conv = np.asarray(node_opcode)[slots[:, 0]] == CONVOLUTION
    batch = np.full((nc, 3), -1, dtype=np.int64)  # a convolution's batch dim: output, input
    if nc:
        batch[conv, 0] = node_feat[slots[conv, 0], CONV_OUTPUT_BATCH].astype(np.int64)
        batch[conv, 1] = node_feat[slots[conv, 0], CONV_INPUT_BATCH].astype(np.int64)
    role = np.full((nc, 3, 7), -1, dtype=np.int8)
    for d in range(6):
        is_feature = (facts[..., 7] == d) | (facts[..., 8] == d)
        r = np.select([is_feature, batch == d, rank - 1 == d], [0, 1, 2], 3)
        role[..., d + 1] = np.where(present & (d < rank), r, -1)
    bucket = np.where(present, np.digitize(rank, [3, 4, 5]), -1)
    return role, nbytes, bucket


def _tile_padding(size: np.ndarray, tile: int) -> np.ndarray:
    s = np.maximum(size, 1.0)
    return np.ceil(s / tile) * tile / s


def _waste_tables(ctx: LayoutContext) -> tuple[np.ndarray, np.ndarray]:
    """Per node, bytes wasted by tile padding for each (minor, second-minor) dim choice.

    Indexed by digit (dim + 1, 0 = none): (NC, 7, 7) both dims padded, (NC, 7) minor-most only.
    """
    nc = ctx.dims.shape[0]
    sizes = np.concatenate([np.ones((nc, 1)), ctx.dims], axis=1)  # digit 0 (no dim) -> size 1
    f0 = _tile_padding(sizes, 128)  # (NC, 7)
    f1 = _tile_padding(sizes, 8)
    both = (f0[:, :, None] * f1[:, None, :] - 1.0) * ctx.nbytes[:, None, None]
    return both, (f0 - 1.0) * ctx.nbytes[:, None]


def layout_features(ctx: LayoutContext, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Features of a chunk of configs, from their packed codes.

    codes (c, NC, 3) int32 (`features.configs.pack_layout` of (c, NC, 18) configs); everything
    works on one int32 per group, so the cost per config is O(NC + pairs), not O(18 NC).
    Returns name -> (c,).
    """
    codes = np.asarray(codes)
    c, nc = codes.shape[0], codes.shape[1]
    first = codes // _D0  # (c, NC, 3) first digit: 0 default, else 1 + minor-most dim
    # flat bin per (group, kind, cat); offset per config so one bincount does the chunk
    base = ((np.arange(3)[None, :] * len(KINDS) + ctx.kind[:, None]) * len(CATS)).astype(np.int32)  # (NC, 3)
    bins = first + base[None]
    bins += (np.arange(c, dtype=np.int32) * len(COUNT_NAMES))[:, None, None]
    counts = np.bincount(bins.ravel(), minlength=c * len(COUNT_NAMES)).reshape(c, len(COUNT_NAMES))
    out = {name: counts[:, i].astype(np.float32) for i, name in enumerate(COUNT_NAMES)}

    eff = ctx.complete(codes[..., 0], ctx.own_idx[None, :])  # (c, NC) effective output layout
    cons, prod = ctx.pairs[:, 0], ctx.pairs[:, 1]
    pbytes = ctx.nbytes[prod].astype(np.float32)  # (P,)
    have = eff[:, prod]  # producer's effective output layout (c, P)
    w = group_weights(ctx.pairs[:, 2])  # (P, 2) the input and kernel group each pair is read under
    mism = np.zeros(have.shape, dtype=np.float32)
    for s in (1, 2):
        on = w[:, s - 1] > 0
        given = codes[:, cons[on], s]  # consumer's configured group (c, P')
        want = ctx.complete(given, ctx.own_idx[prod[on]][None, :])
        mism[:, on] += w[on, s - 1] * ((given != 0) & (want != have[:, on]))
    change = eff[:, cons] != have
    out["mismatch_pairs"] = mism.sum(axis=1)
    out["mismatch_bytes"] = (mism @ pbytes).astype(np.float64)
    out["change_pairs"] = np.count_nonzero(change, axis=1).astype(np.float32)
    out["change_bytes"] = (change.astype(np.float32) @ pbytes).astype(np.float64)

    out.update(_role_features(ctx, codes))
    if ctx.flat:  # the raw group's minor-most and second-minor dims (-1 unset) of every node
        raw = unpack_layout(codes).reshape(c, nc, 3, 6)
        for j in range(nc):
            for g, name in enumerate(GROUPS):
                for d in range(FLAT_DIMS):
                    out[f"{FLAT_PREFIX}{j}_{name}_{d}"] = raw[:, j, g, d].astype(np.float32)

    both, minor_only = _waste_tables(ctx)
    # the first two digits of a code (minor-most, second-minor) read as one number 0..48
    d01 = eff // _D1 + (np.arange(nc, dtype=np.int32) * 49)[None, :]  # flat index into both (NC, 7, 7)
    out["pad_waste_bytes"] = both.ravel()[d01].sum(1)
    out["pad_waste_minor_bytes"] = minor_only.ravel()[d01 // 7].sum(1)  # node * 49 // 7 = node * 7
    return out


def _role_features(ctx: LayoutContext, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per config, the configurable nodes pooled by what their completed groups do, in terms
    that mean the same in every graph: the analytical cost terms summed per opcode kind; the role
    of the dim each group puts minor-most, counted and weighted by the slot tensor's bytes per
    opcode kind, counted per rank bucket; and the groups that differ from the layout they
    default to (count and bytes) per opcode kind."""
    c, nc = codes.shape[0], codes.shape[1]
    done = ctx.groups(codes)  # (c, NC, 3) completed packed groups
    terms = layout_terms(ctx.facts, ctx.defaults, ctx.pairs, unpack_layout(done), log_bytes=False)
    out: dict[str, np.ndarray] = dict(zip(TOTALS_NAMES, config_totals(terms, ctx.kind).T))
    digit = done // _D0  # (c, NC, 3) minor-most dim + 1
    role = np.take_along_axis(ctx.role[None], digit[..., None].astype(np.int64), -1)[..., 0]  # (c, NC, 3)
    has = role >= 0
    g_idx = np.arange(3)[None, :]
    nr, nk, nb = len(ROLES), len(KINDS), len(RANK_BUCKETS)
    offset = np.arange(c)[:, None, None]

    def pooled(bin_of_slot: np.ndarray, size: int, weight: np.ndarray | None, mask: np.ndarray = has) -> np.ndarray:
        b = np.broadcast_to(bin_of_slot, mask.shape) + offset * size
        w = None if weight is None else np.broadcast_to(weight, mask.shape)[mask]
        return np.bincount(b[mask], w, minlength=c * size).reshape(c, size)

    kind_bin = (g_idx * nk + ctx.kind[:, None]) * nr  # (NC, 3)
    counts = pooled(kind_bin[None] + role, 3 * nk * nr, None)
    nbytes = pooled(kind_bin[None] + role, 3 * nk * nr, ctx.slot_bytes[None])
    rank_bin = (g_idx * nb + np.maximum(ctx.rank_bucket, 0)) * nr
    ranks = pooled(rank_bin[None] + role, 3 * nb * nr, None)
    for i, name in enumerate(ROLE_NAMES):
        out[name] = counts[:, i].astype(np.float32)
        out[ROLE_BYTES_NAMES[i]] = nbytes[:, i]
    for i, name in enumerate(RANK_ROLE_NAMES):
        out[name] = ranks[:, i].astype(np.float32)
    default = ctx.groups(np.zeros((1, nc, 3), dtype=np.int32))  # (1, NC, 3) what an unset group completes to
    changed = has & (done != default)
    group_kind = (g_idx * nk + ctx.kind[:, None])[None]  # (1, NC, 3)
    cnt = pooled(group_kind, 3 * nk, None, changed)
    byt = pooled(group_kind, 3 * nk, ctx.slot_bytes[None], changed)
    half = len(CHANGED_NAMES) // 2
    for i in range(half):
        out[CHANGED_NAMES[i]] = cnt[:, i].astype(np.float32)
        out[CHANGED_NAMES[half + i]] = byt[:, i]
    return out


def tile_graph_stats(node_feat: np.ndarray, node_opcode: np.ndarray, num_edges: int) -> dict[str, float]:
    kind = opcode_kind(node_opcode)
    stats = {"nodes": float(node_feat.shape[0]), "edges": float(num_edges),
             "total_bytes": float(tensor_bytes(node_feat).sum())}
    for k, name in enumerate(KINDS):
        stats[f"n_{name}"] = float((kind == k).sum())
    return stats


def tile_padding(shape: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cutting a tensor of `shape` (6,) into tiles of `bounds` (c, 6): padding waste (padded
    volume over true volume, minus 1) and tile count, (c,) each. Dims 0 in either are unused."""
    shape = np.asarray(shape, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    used = (bounds > 0) & (shape[None] > 0)
    b = np.where(used, bounds, 1.0)
    s = np.where(used, shape[None], 1.0)
    tiles = np.ceil(s / b)
    return (tiles * b).prod(1) / s.prod(1) - 1.0, tiles.prod(1)


def tile_features(node_feat: np.ndarray, config_feat: np.ndarray) -> dict[str, np.ndarray]:
    """Tile config features. node_feat (N, 140); config_feat (c, 24); returns name -> (c,).

    The kernel's output shape is its root node's shape (`features.layout.root_node`).
    """
    root = node_feat[root_node(node_feat)]
    shape = root[SHAPE_COLS].astype(np.float64)  # (6,)
    elem = float(root[TYPE_COLS] @ ELEMENT_BYTES)
    cf = np.asarray(config_feat, dtype=np.float64)
    out = {f"cfg_{i}": cf[:, i].astype(np.float32) for i in range(cf.shape[1])}
    bounds = cf[:, 8:14]  # output tile dims (c, 6)
    waste, count = tile_padding(shape, bounds)
    out["tile_count"], out["tile_pad_waste"] = count, waste
    used = (bounds > 0) & (shape[None] > 0)
    out["tile_bytes"] = np.where(used.any(1), bounds.clip(min=1).prod(1, where=used), 0.0) * elem
    return out
