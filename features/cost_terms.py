"""Analytical cost terms of layout configs, per configurable node (pure numpy).

What a TPU pays for a layout, read off the file's arrays, as numbers a learned model can
correct rather than rediscover: a tensor is stored in (sublane, 128-lane) tiles over its two
minor-most dims (sublane 8 for 32-bit elements, 16 for 16-bit, 32 for 8-bit), so a badly filled
minor dim moves padding; a layout that differs from what the neighbouring fixed nodes hold costs
a relayout copy; a consumer that wants its input in another layout than its producer writes
costs a copy of the producer's bytes; a convolution runs best with its feature dims minor-most;
a reshape is a free bitcast only between row-major layouts.

- `slot_facts(node_feat, node_opcode, edge_index, operands)`: per configurable node and
  slot (0 output, 1 input = operand 0, 2 kernel = operand 1 of a convolution or dot, as
  `features.operands.infer_operands` tells them apart), the
  slot tensor's dims and element bytes, the dims a convolution wants minor-most and
  second-minor, whether the slot meets a node of fixed layout, and a convolution's or dot's
  matmul flops; written by the extract stage beside the GNN tensors (`config_slots`), from the
  raw (unnormalized) node features and the pruned graph.
- `layout_terms(facts, defaults, pairs, layout, log_bytes=True)`: (k, M, NUM_TERMS) float32
  terms of k configs whose groups are already completed (`features.completion`), `TERM_NAMES` in order;
- `config_totals(terms, kind)`: per config, the terms summed over the nodes of each opcode kind
  (conv, dot, reshape, other): the inputs of the analytical ranker (`models.analytical`).

Terms per slot (out, in, kernel), 11 each (bytes enter as log2(1 + bytes) / 16; "held" bytes
include the tile padding): present; -log2 of the lane fill of the minor-most dim; -log2 of the
sublane fill of the second-minor dim; the padding bytes; changed (the completed layout differs
from the one the group defaults to), the held bytes where changed, and where changed while the
slot meets a node of fixed layout (a copy); row-major; minor-most dim is the last one; how many
of a convolution's wanted dims (feature dim minor-most; kernel input feature second-minor) are
elsewhere, and the held bytes where any is. Then 3 link terms: at each consumer, how many
configurable producers feeding it (`config_pairs`: through chains of at most the prune stage's
`pair_depth` other nodes) write another layout than
its input group asks for, and their bytes; at each producer, how many consumers disagree with it.
Then 2 compute terms of a convolution or dot (flops as log2(1 + flops) / 32): its flops where a
wanted dim is elsewhere (a dot: where a slot's minor-most dim is not its last), and its flops
times the lane waste of its output.
"""

from __future__ import annotations

import numpy as np

from features.layout import CONVOLUTION, DOT, ELEMENT_BYTES, ELEMENTWISE, KINDS, LAYOUT_FREE, SHAPE_COLS, TYPE_COLS
from features.operands import Operands, group_weights

CONVOLUTION_FEATURE_COLS = (106, 94, 100)  # output feature, input feature, kernel output feature (docs/FORMAT.md)
KERNEL_INPUT_FEATURE_COL = 99  # a convolution's kernel input feature: wanted second-minor
SLOT_FACTS = 11  # per slot: 6 dims, element bytes, wanted minor dim, wanted second-minor dim (-1 none), fixed neighbour, matmul flops (output slot)
_WALK_BUDGET = 256  # nodes visited per walk: chains of elementwise ops are short
LANES = 128
SUBLANE_BYTES = 32  # a sublane tile spans 32 bytes of elements: 8 f32, 16 bf16
SLOT_TERMS = ("present", "lane_waste", "sublane_waste", "pad_bytes", "changed", "changed_bytes", "fixed_changed_bytes",
              "row_major", "minor_last", "feature_off", "feature_off_bytes")
SLOTS = ("out", "in", "kernel")
LINK_TERMS = ("in_mismatch", "in_mismatch_bytes", "out_mismatch")
COMPUTE_TERMS = ("flops_off", "flops_lane_waste")
TERM_NAMES = tuple(f"{s}_{t}" for s in SLOTS for t in SLOT_TERMS) + LINK_TERMS + COMPUTE_TERMS
NUM_TERMS = len(TERM_NAMES)
TOTAL_NAMES = tuple(f"{kind}_{name}" for kind in KINDS for name in TERM_NAMES)
# the term groups a model can switch on or off (`model.cost_terms=[...]` of the GNN, `model.terms=[...]`
# of the analytical ranker): each slot tensor's own tiling and layout change, producer/consumer
# disagreements, matmul flops under the layout
TERM_GROUPS = {"slot": TERM_NAMES[: 3 * len(SLOT_TERMS)], "link": LINK_TERMS, "compute": COMPUTE_TERMS}


def term_groups(groups) -> tuple[str, ...]:
    """The term groups a knob names, in `TERM_GROUPS` order: a list of group names, true (all) or
    false / None / [] (none). Raises ValueError (one sentence) for an unknown group."""
    if groups is True:
        return tuple(TERM_GROUPS)
    if groups is False or groups is None:
        return ()
    if isinstance(groups, str):
        groups = [groups]
    unknown = sorted(set(groups) - set(TERM_GROUPS))
    if unknown:
        raise ValueError(f"unknown cost term group(s) {unknown} (known: {', '.join(TERM_GROUPS)})")
    return tuple(g for g in TERM_GROUPS if g in set(groups))


def term_mask(groups, names: tuple[str, ...] = TERM_NAMES) -> np.ndarray:
    """(len(names),) bool: which of `names` (term names, or `<kind>_<term>` totals) belong to
    the groups of `term_groups(groups)`; a name that is no cost term is kept."""
    wanted = {t for g in term_groups(groups) for t in TERM_GROUPS[g]}
    prefixes = tuple(f"{kind}_" for kind in KINDS)

    def term(name: str) -> str:
        for p in prefixes:
            if name.startswith(p) and name[len(p):] in TERM_NAMES:
                return name[len(p):]
        return name

    return np.array([term(n) in wanted or term(n) not in TERM_NAMES for n in names], dtype=bool)


def _fixed_slots(node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray, slots: np.ndarray,
                 varying: np.ndarray) -> np.ndarray:
    """(M, 3) bool: the slot's tensor meets a node of fixed layout, looking through same-shape
    elementwise chains (XLA propagates layouts through them): the output is the root or is read
    by such a node; an input is fed by one that is not layout-free (broadcast, constant)."""
    n = node_feat.shape[0]
    consumers: list[list[int]] = [[] for _ in range(n)]
    producers: list[list[int]] = [[] for _ in range(n)]
    for u, v in np.asarray(edge_index, dtype=np.int64).reshape(-1, 2).tolist():
        consumers[v].append(u)
        producers[u].append(v)
    shape = node_feat[:, SHAPE_COLS]
    op = np.asarray(node_opcode)
    free = np.zeros(n, dtype=bool)  # never fixed: varying configurable nodes (forward: also walked past)
    free[varying] = True

    def passes(node: int, start: int) -> bool:  # the layout flows through this node unchanged
        return int(op[node]) in ELEMENTWISE and bool((shape[node] == shape[start]).all())

    def reads_fixed(start: int) -> bool:
        seen, todo = {start}, [start]
        while todo and len(seen) < _WALK_BUDGET:
            for c in consumers[todo.pop()]:
                if c in seen or free[c]:
                    continue
                if not passes(c, start):
                    return True
                seen.add(c)
                todo.append(c)
        return False

    def fed_fixed(start: int) -> bool:
        seen, todo = {start}, [start]
        while todo and len(seen) < _WALK_BUDGET:
            node = todo.pop()
            if free[node] or int(op[node]) in LAYOUT_FREE:
                continue
            if not passes(node, start):
                return True
            for p in producers[node]:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return False

    fixed = np.zeros(slots.shape, dtype=bool)
    for j, (out, inp, ker) in enumerate(slots.tolist()):
        fixed[j, 0] = bool(node_feat[out, 0] > 0) or reads_fixed(out)
        fixed[j, 1] = inp >= 0 and fed_fixed(inp)
        fixed[j, 2] = ker >= 0 and fed_fixed(ker)
    return fixed


def slot_facts(node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray,
               operands: Operands) -> np.ndarray:
    """(M, 3, SLOT_FACTS) int64 facts of each slot tensor (module docstring), from RAW node_feat
    (N, 140): dims 0-5 (0 beyond the rank), element bytes (0: absent or not an array), the dims a
    convolution wants minor-most and second-minor in that slot (-1: none), and whether the slot
    meets a node of fixed layout (`operands.slots[:, 0]` are the nodes whose layout varies; every
    other node, configurable or not, holds its layout). The two operand slots of a node whose
    operands cannot be told apart (`operands.ambiguous`) carry the same tensor facts: the larger
    of each (equal where the shapes are), and a fixed neighbour where either meets one.
    """
    nf = np.asarray(node_feat)
    slots = operands.slots
    nodes = slots[:, 0]
    present = slots >= 0
    node = np.where(present, slots, 0)
    out = np.zeros((*slots.shape, SLOT_FACTS), dtype=np.int64)
    feat = nf[node]  # (M, 3, 140)
    out[..., :6] = np.where(present[..., None], feat[..., SHAPE_COLS], 0)
    out[..., 6] = np.where(present, feat[..., TYPE_COLS] @ ELEMENT_BYTES, 0)
    out[..., 7:9] = -1
    conv = np.asarray(node_opcode)[nodes] == CONVOLUTION
    rank = (out[..., :6] > 0).sum(-1)  # (M, 3)
    wanted = [(s, 7, col) for s, col in enumerate(CONVOLUTION_FEATURE_COLS)] + [(2, 8, KERNEL_INPUT_FEATURE_COL)]
    for s, at, col in wanted:
        want = nf[nodes, col].astype(np.int64)
        ok = conv & present[:, s] & (want >= 0) & (want < rank[:, s])
        out[ok, s, at] = want[ok]
    out[..., 9] = _fixed_slots(nf, node_opcode, edge_index, slots, nodes) & present
    amb = operands.ambiguous
    if amb.any():  # tensor facts (dims, bytes, fixed neighbour) that do not depend on which operand is which
        both = np.maximum(out[amb, 1], out[amb, 2])
        for s in (1, 2):
            out[amb, s, :7] = both[:, :7]
            out[amb, s, 9] = both[:, 9]
    out[:, 0, 10] = _matmul_flops(out, np.asarray(node_opcode)[nodes])
    return out


def _matmul_flops(facts: np.ndarray, opcode: np.ndarray) -> np.ndarray:
    """(M,) int64 multiply-add flops of each convolution or dot (0 for other ops): 2 x output
    elements x the contracted size, for a convolution the kernel's elements over its output
    feature dim, for a dot sqrt(lhs x rhs / output) elements (M K x K N / M N = K^2)."""
    elems = np.where(facts[..., :6] > 0, facts[..., :6], 1).prod(-1).astype(np.float64)  # (M, 3)
    elems = np.where(facts[..., 6] > 0, elems, 0.0)
    kernel_out = np.take_along_axis(facts[:, 2, :6], np.maximum(facts[:, 2, 7:8], 0), 1)[:, 0]
    conv = (opcode == CONVOLUTION) & (facts[:, 2, 7] >= 0) & (kernel_out > 0)
    contracted = np.where(conv, elems[:, 2] / np.maximum(kernel_out, 1), 0.0)
    dot = (opcode == DOT) & (elems[:, 0] > 0)
    contracted = np.where(dot, np.sqrt(elems[:, 1] * elems[:, 2] / np.maximum(elems[:, 0], 1.0)), contracted)
    return np.rint(2.0 * elems[:, 0] * contracted).astype(np.int64)


def _fill(size: np.ndarray, tile: np.ndarray | int) -> np.ndarray:
    size = np.maximum(size, 1.0)
    return size / (np.ceil(size / tile) * tile)


def _log_bytes(x: np.ndarray) -> np.ndarray:
    return np.log2(1.0 + np.maximum(x, 0.0)) / 16.0


def layout_terms(facts: np.ndarray, defaults: np.ndarray, pairs: np.ndarray, layout: np.ndarray,
                 log_bytes: bool = True) -> np.ndarray:
    """Cost terms of k configs (module docstring).

    Args:
        facts: (M, 3, SLOT_FACTS) `slot_facts` of the M configurable nodes.
        defaults: (M, 3, 6) the layouts the groups complete from (`features.completion.group_defaults`).
        pairs: (P, 3) `[consumer, producer, group]`: positions into M (a configurable producer
            feeding a configurable consumer, `config_pairs`) and the consumer's group it is read
            under (`features.operands.pair_group`).
        layout: (k, M, 18) completed groups, -1 beyond the rank.
        log_bytes: bytes as log2(1 + bytes) / 16 (model inputs); False: as bytes (sums of them
            are an additive cost, `config_totals`).

    Returns (k, M, NUM_TERMS) float32.
    """
    scale = _log_bytes if log_bytes else (lambda x: np.maximum(x, 0.0))
    scale_flops = (lambda x: np.log2(1.0 + np.maximum(x, 0.0)) / 32.0) if log_bytes else scale
    lay = np.asarray(layout, dtype=np.int16)  # values -1..5: narrow ints make the comparisons cheap
    k, m = lay.shape[0], lay.shape[1]
    facts = np.asarray(facts, dtype=np.float64)
    out = np.zeros((k, m, NUM_TERMS), dtype=np.float32)
    if m == 0:
        return out
    groups = lay.reshape(k, m, 3, 6)
    dims = facts[..., :6]                                        # (M, 3, 6)
    elem = facts[..., 6]                                         # (M, 3)
    rank = (dims > 0).sum(-1).astype(np.int16)                   # (M, 3)
    present = (rank > 0) & (elem > 0)
    nbytes = np.where(dims > 0, dims, 1.0).prod(-1) * elem * present
    padded = np.concatenate([np.ones((m, 3, 1)), np.maximum(dims, 1.0)], axis=-1).reshape(-1)  # per slot: index 0 = no dim
    base = (np.arange(m * 3) * 7).reshape(m, 3)

    def size_at(pos: int) -> np.ndarray:  # (k, M, 3) size of the dim at minor-to-major position `pos`
        d = groups[..., pos]
        return padded[base[None] + np.where((d >= 0) & (d < rank[None]), d + 1, 0)]

    lane = _fill(size_at(0), LANES)
    sublane = np.where(rank[None] >= 2, _fill(size_at(1), np.maximum(1, SUBLANE_BYTES // np.maximum(elem, 1))[None]), 1.0)
    changed = (groups != np.asarray(defaults, dtype=np.int16)[None]).any(-1)
    fixed = facts[..., 9] > 0
    positions = np.arange(6)
    row_major = ((groups == (rank[..., None] - 1 - positions).astype(np.int16)[None]) | (positions >= rank[..., None])[None]).all(-1)
    want_minor, want_second = facts[..., 7].astype(np.int16), facts[..., 8].astype(np.int16)
    feature_off = ((want_minor[None] >= 0) & (groups[..., 0] != want_minor[None])).astype(np.float64)
    feature_off += (want_second[None] >= 0) & (groups[..., 1] != want_second[None])
    held = nbytes[None] / (lane * sublane)                       # bytes as stored, padding included
    scaled_held = scale(held)
    minor_last = groups[..., 0] == rank[None] - 1
    per_slot = np.empty((k, m, 3, len(SLOT_TERMS)), dtype=np.float32)  # each term zero on absent slots
    for j, term in enumerate((
        np.broadcast_to(present[None], (k, m, 3)),
        -np.log2(lane), -np.log2(sublane), scale(held - nbytes[None]),
        changed, changed * scaled_held, (changed & fixed[None]) * scaled_held,
        row_major, minor_last,
        feature_off, (feature_off > 0) * scaled_held,
    )):
        np.multiply(term, present[None], out=per_slot[..., j], casting="unsafe")
    out[..., : 3 * len(SLOT_TERMS)] = per_slot.reshape(k, m, -1)

    flops = facts[:, 0, 10]                                      # (M,)
    off = feature_off.sum(-1)                                     # (k, M): wanted dims elsewhere, over the slots
    is_dot = (flops > 0) & (facts[:, 2, 7] < 0)                  # a dot: its minor dims should stay the last ones
    off = off + (is_dot[None, :, None] & present[None] & ~minor_last).sum(-1)
    c = 3 * len(SLOT_TERMS) + len(LINK_TERMS)
    out[..., c] = scale_flops(flops[None] * (off > 0))
    out[..., c + 1] = scale_flops(flops[None] * -np.log2(lane[..., 0]))

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    if pairs.size:
        n = len(SLOT_TERMS) * 3
        code = (groups.astype(np.int64) + 1) @ (8 ** np.arange(6))  # (k, M, 3): output, input and kernel layouts, one integer each
        offset = (np.arange(k) * m)[:, None]
        sums = np.zeros((3, k * m))
        block = max(1, (1 << 22) // k)  # pairs compared at once: temporaries stay ~k x block, whatever the pair count
        for i in range(0, pairs.shape[0], block):
            cons, prod = pairs[i : i + block, 0], pairs[i : i + block, 1]
            w = group_weights(pairs[i : i + block, 2])  # (P, 2) input and kernel group weights
            mism = np.zeros((k, cons.size))  # (k, P) the consumer wants another layout
            for s in (1, 2):
                on = w[:, s - 1] > 0
                mism[:, on] += w[on, s - 1] * ((code[:, cons[on], s] != code[:, prod[on], 0]) & present[cons[on], s])
            for row, at, weight in ((0, cons, mism), (1, cons, mism * nbytes[prod, 0]), (2, prod, mism)):
                sums[row] += np.bincount((at[None] + offset).ravel(), weight.ravel(), minlength=k * m)
        out[..., n] = sums[0].reshape(k, m)
        out[..., n + 1] = scale(sums[1].reshape(k, m))
        out[..., n + 2] = sums[2].reshape(k, m)
    return out


def config_totals(terms: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """(k, M, T) terms (`log_bytes=False`) summed over the nodes of each opcode kind
    (`kind` (M,) in 0..len(KINDS)-1): (k, len(KINDS) * T), kind-major (`TOTAL_NAMES`)."""
    k, m, t = terms.shape
    onehot = np.zeros((m, len(KINDS)), dtype=np.float64)
    onehot[np.arange(m), np.asarray(kind, dtype=np.int64)] = 1.0
    return np.einsum("kmt,mj->kjt", terms.astype(np.float64), onehot).reshape(k, len(KINDS) * t)
