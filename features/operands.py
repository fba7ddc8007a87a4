"""Which producer is a configurable node's operand 0 and which its operand 1 (pure numpy).

A layout config sets three groups per configurable node: its output's layout, its input's
(operand 0) and, for a convolution or dot, its kernel's (operand 1). The files do not say which
producer is which operand: `edge_index` rows are sorted by `(user, operand)` and each pair is
listed once (docs/FORMAT.md), so the first row is only the lowest-numbered producer. What the
files do say is every tensor's shape (node_feat 21-26) and a convolution's dimension numbers and
window (node_feat 93-108, 37-42), and XLA's operation semantics tie those to the operands
(https://openxla.org/xla/operation_semantics):

- dot: the output is `batch dims, lhs free dims, rhs free dims` in that order; each operand
  holds the batch dims, its own free dims in output order and the contracting dims, which the
  two operands share size by size. A hypothesis (lhs, rhs) fits when some split of the output
  satisfies that.
- convolution: the kernel's output-feature dim is the output's feature dim, its spatial dims are
  the window sizes, its input-feature dim times feature_group_count is the input's feature dim,
  and the input's batch dim is the output's batch dim times batch_group_count.

Per configurable node with operands (convolution, dot) and its producers, ordered by id:
- one producer: both operands are that tensor (`x . x`; rows are deduplicated) -> resolved,
  where its shape fits both roles; else (a graph that lost a producer) it is operand 0 alone
  -> `guessed`;
- two producers: each order is tested; exactly one fits -> resolved (`by_shape`); both fit ->
  `ambiguous` (the operands cannot be told apart: identical shapes, or shapes that fit either
  way); neither fits: a dot is tested again with its batch dims anywhere in the output (a
  transposed output, which XLA itself never writes but other graph writers do), lhs free dims
  still before rhs free dims (`by_loose_shape`, or `ambiguous`); else -> `guessed`;
- three or more producers (never seen in a real file): every ordered pair is tested; exactly one
  fits -> resolved, else `guessed`.
A guess takes the two lowest-numbered producers in id order. Consumers treat an `ambiguous`
node's two operands symmetrically (features that do not depend on the order); a guessed one as
given. Other configurable nodes (reshape, ...) have one operand: the lowest-numbered producer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np

from features.layout import DOT, KERNEL_OPCODES, SHAPE_COLS

# node_feat columns of a convolution (docs/FORMAT.md): dimension numbers, group counts, window sizes
CONV_INPUT_BATCH, CONV_INPUT_FEATURE = 93, 94
CONV_KERNEL_INPUT_FEATURE, CONV_KERNEL_OUTPUT_FEATURE = 99, 100
CONV_KERNEL_SPATIAL = slice(101, 105)
CONV_OUTPUT_BATCH, CONV_OUTPUT_FEATURE = 105, 106
FEATURE_GROUP_COUNT, BATCH_GROUP_COUNT = 107, 108
WINDOW_SIZE = slice(37, 43)

# `Operands.status`; RESOLVED: nothing to tell apart; BY_LOOSE_SHAPE: a dot told apart only once
# its batch dims may sit anywhere in the output (no order fits XLA's batch-first output)
RESOLVED, BY_SHAPE, AMBIGUOUS, GUESSED, BY_LOOSE_SHAPE = 0, 1, 2, 3, 4
TWO_OPERANDS = (BY_SHAPE, AMBIGUOUS, GUESSED, BY_LOOSE_SHAPE)


@dataclass(frozen=True)
class Operands:
    """The tensor behind each slot of M configurable nodes.

    slots: (M, 3) int64 node ids: the node itself, operand 0, operand 1 of a convolution or dot;
        -1 where absent. An ambiguous node's operands are listed in id order.
    status: (M,) int8: RESOLVED (one operand, or one producer for both), BY_SHAPE (told apart by
        shapes), AMBIGUOUS (cannot be told apart), GUESSED (no or several orders fit: id order).
    """

    slots: np.ndarray
    status: np.ndarray

    @property
    def ambiguous(self) -> np.ndarray:
        return self.status == AMBIGUOUS

    @property
    def guessed(self) -> np.ndarray:
        return self.status == GUESSED

    def counts(self) -> dict[str, int]:
        """How many nodes were told apart by shape (strictly, loosely), left ambiguous and guessed."""
        return {"by_shape": int((self.status == BY_SHAPE).sum()), "by_loose_shape": int((self.status == BY_LOOSE_SHAPE).sum()),
                "ambiguous": int(self.ambiguous.sum()), "guessed": int(self.guessed.sum())}

    def summary(self) -> str:
        """One line: the counts, for a log line per graph."""
        c = self.counts()
        two = int(np.isin(self.status, TWO_OPERANDS).sum())
        return (f"{two} convolution/dot nodes with two operands: {c['by_shape']} told apart by shape, "
                f"{c['by_loose_shape']} by shape with the output's batch dims moved, "
                f"{c['ambiguous']} ambiguous (featurized symmetrically), {c['guessed']} guessed (id order)")


def _shape(row: np.ndarray) -> tuple[int, ...]:
    dims = row[SHAPE_COLS].astype(np.int64)
    return tuple(int(d) for d in dims[dims > 0])


def _in_order(sub: tuple[int, ...], full: tuple[int, ...]) -> bool:
    """`sub` is a subsequence of `full`."""
    it = iter(full)
    return all(any(d == f for f in it) for d in sub)


def _remainder(full: tuple[int, ...], *parts: tuple[int, ...]) -> Counter | None:
    """The multiset `full` less every part, None where a part does not fit in it."""
    rest = Counter(full)
    for part in parts:
        rest.subtract(Counter(part))
    return None if any(v < 0 for v in rest.values()) else +rest


def dot_fits(out: tuple[int, ...], lhs: tuple[int, ...], rhs: tuple[int, ...], batch_anywhere: bool = False) -> bool:
    """Some dimension numbers make `dot(lhs, rhs)` of these shapes give `out`: the output is
    batch, lhs free, rhs free dims; contracting dims pair up size by size. `batch_anywhere`
    lets the batch dims sit anywhere in the output (a dot whose output was transposed), the
    lhs free dims still before the rhs free dims."""
    for nb in range(min(len(out), len(lhs), len(rhs)) + 1):
        at_batch = combinations(range(len(out)), nb) if batch_anywhere else [tuple(range(nb))]
        for where in at_batch:
            batch = tuple(out[i] for i in where)
            free = tuple(d for i, d in enumerate(out) if i not in where)
            for nc in range(min(len(lhs), len(rhs)) - nb + 1):
                kl, kr = len(lhs) - nb - nc, len(rhs) - nb - nc
                if kl < 0 or kr < 0 or kl + kr != len(free):
                    continue
                lfree, rfree = free[:kl], free[kl:]
                if not (_in_order(lfree, lhs) and _in_order(rfree, rhs)):
                    continue
                cl, cr = _remainder(lhs, batch, lfree), _remainder(rhs, batch, rfree)
                if cl is not None and cl == cr:
                    return True
    return False


def conv_fits(feat: np.ndarray, out: tuple[int, ...], inp: tuple[int, ...], ker: tuple[int, ...]) -> bool:
    """The convolution whose node_feat row is `feat` can read `inp` as input and `ker` as kernel
    (its dimension numbers, group counts and window against the shapes)."""
    r = len(out)
    if not (len(inp) == len(ker) == r >= 2):
        return False
    f = feat.astype(np.int64)
    ib, if_, kif, kof = f[CONV_INPUT_BATCH], f[CONV_INPUT_FEATURE], f[CONV_KERNEL_INPUT_FEATURE], f[CONV_KERNEL_OUTPUT_FEATURE]
    ob, of = f[CONV_OUTPUT_BATCH], f[CONV_OUTPUT_FEATURE]
    if max(ib, if_, kif, kof, ob, of) >= r or min(ib, if_, kif, kof, ob, of) < 0:
        return False
    fgc, bgc = max(int(f[FEATURE_GROUP_COUNT]), 1), max(int(f[BATCH_GROUP_COUNT]), 1)
    if ker[kof] != out[of] or inp[if_] != ker[kif] * fgc or inp[ib] != out[ob] * bgc:
        return False
    spatial = f[CONV_KERNEL_SPATIAL][: r - 2]
    window = f[WINDOW_SIZE][: r - 2]
    return all(0 <= d < r and (w <= 0 or ker[d] == w) for d, w in zip(spatial.tolist(), window.tolist()))


def _fits(opcode: int, feat: np.ndarray, shapes: dict[int, tuple[int, ...]], node: int, a: int, b: int,
          loose: bool = False) -> bool:
    if opcode == DOT:
        return dot_fits(shapes[node], shapes[a], shapes[b], batch_anywhere=loose)
    return not loose and conv_fits(feat[node], shapes[node], shapes[a], shapes[b])


def infer_operands(node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray,
                   config_nodes: np.ndarray) -> Operands:
    """The operands of each configurable node (module docstring), from the graph's arrays alone.

    Shapes: node_feat (N, 140) RAW features (shapes and dimension numbers as integers);
    node_opcode (N,); edge_index (E, 2) rows `[consumer, producer]`, any order; config_nodes (M,).
    """
    nodes = np.asarray(config_nodes, dtype=np.int64).reshape(-1)
    op = np.asarray(node_opcode)
    e = np.asarray(edge_index, dtype=np.int64).reshape(-1, 2)
    e = e[np.lexsort((e[:, 1], e[:, 0]))]  # by consumer, then producer: the files' own order
    first = np.searchsorted(e[:, 0], nodes, "left")
    count = np.searchsorted(e[:, 0], nodes, "right") - first
    slots = np.full((nodes.size, 3), -1, dtype=np.int64)
    status = np.full(nodes.size, RESOLVED, dtype=np.int8)
    slots[:, 0] = nodes
    has = count > 0
    slots[has, 1] = e[first[has], 1]
    feat = np.asarray(node_feat)
    shapes: dict[int, tuple[int, ...]] = {}

    def shape(n: int) -> tuple[int, ...]:
        if n not in shapes:
            shapes[n] = _shape(feat[n])
        return shapes[n]

    for j in np.flatnonzero(has & np.isin(op[nodes], KERNEL_OPCODES)).tolist():
        node = int(nodes[j])
        producers = np.unique(e[first[j]: first[j] + count[j], 1]).tolist()
        for p in producers:
            shape(p)
        shape(node)
        if len(producers) == 1:  # both operands the one tensor, where its shape allows that
            if _fits(int(op[node]), feat, shapes, node, producers[0], producers[0]):
                slots[j, 2] = producers[0]
            else:
                status[j] = GUESSED
            continue
        orders = list(permutations(producers, 2))
        fitting = [(a, b) for a, b in orders if _fits(int(op[node]), feat, shapes, node, a, b)]
        loose = [] if fitting else [(a, b) for a, b in orders if _fits(int(op[node]), feat, shapes, node, a, b, loose=True)]
        if len(producers) == 2 and (len(fitting) == 2 or len(loose) == 2):
            status[j] = AMBIGUOUS
            slots[j, 1:] = producers
        elif len(fitting) == 1:
            status[j] = BY_SHAPE
            slots[j, 1:] = fitting[0]
        elif len(loose) == 1:
            status[j] = BY_LOOSE_SHAPE
            slots[j, 1:] = loose[0]
        else:
            status[j] = GUESSED
            slots[j, 1:] = producers[:2]
    return Operands(slots, status)


INPUT, KERNEL, EITHER = 1, 2, 3  # the consumer group a producer is read under (bit flags: EITHER = both)


def pair_group(operands: Operands, consumer: np.ndarray, via: np.ndarray) -> np.ndarray:
    """(P,) int64 the group of configurable consumer `consumer` (positions into
    `operands.slots`) under which it reads a tensor reached through its direct producer `via`:
    INPUT through operand 0 (or any operand of a one-operand node), KERNEL through operand 1,
    EITHER where the operands cannot be told apart or `via` is both."""
    slots = operands.slots[np.asarray(consumer, dtype=np.int64)]
    via = np.asarray(via, dtype=np.int64)
    first, second = via == slots[:, 1], (via == slots[:, 2]) & (slots[:, 2] >= 0)
    group = np.where(second & ~first, KERNEL, INPUT) | np.where(second & first, KERNEL, 0)
    return np.where(operands.ambiguous[consumer] & (first | second), EITHER, group).astype(np.int64)


def group_weights(group: np.ndarray) -> np.ndarray:
    """(P, 2) float32 weights of the input and the kernel group of pairs read under `group`
    (INPUT, KERNEL, EITHER: half each, a comparison that does not depend on which is which)."""
    g = np.asarray(group, dtype=np.int64)
    w = np.stack([(g & INPUT) > 0, (g & KERNEL) > 0], axis=-1).astype(np.float32)
    return w / np.maximum(w.sum(-1, keepdims=True), 1.0)
