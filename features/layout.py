"""Node tensor facts read off node_feat: rank, bytes, the node's own layout, the graph's root.

node_feat columns (docs/FORMAT.md): 0 is_root, 2-20 element type one-hot, 21-26 shape dims, 28 dims product,
134-139 layout minor_to_major padded with 0 beyond the rank.
"""

from __future__ import annotations

import numpy as np

NODE_FEAT_DIM = 140  # node_feat columns
TILE_CONFIG_DIM = 24  # tile config_feat columns
LAYOUT_CONFIG_DIM = 18  # layout node_config_feat: output, input, kernel groups of 6
NUM_OPCODES = 121  # opcode ids 1..120; an embedding of 121 rows covers all
SHAPE_COLS = slice(21, 27)
PRODUCT_COL = 28
LAYOUT_COLS = slice(134, 140)
SHAPE0, LAYOUT0 = SHAPE_COLS.start, LAYOUT_COLS.start  # first shape dim, first layout column
TYPE_COLS = slice(2, 21)
# bytes per element for the one-hot element types of columns 2-20, in order:
# invalid, pred, s8, s16, s32, s64, u8, u16, u32, u64, f16, f32, f64, bf16, c64, c128, tuple, opaque, token
ELEMENT_BYTES = np.array([0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 2, 8, 16, 0, 0, 0], dtype=np.float64)


CONVOLUTION, DOT, RESHAPE = 26, 34, 75  # the opcodes of most configurable layout nodes
KERNEL_OPCODES = (CONVOLUTION, DOT)  # operand 1 is the kernel
KINDS = ("conv", "dot", "reshape", "other")  # opcode kinds of configurable nodes (`opcode_kind`)
# The node_opcode vocabulary: the dataset's own stable id list, LEARNED_HLO_OPCODE_LIST in
# google-research-datasets/tpu_graphs, tpu_graphs/process_data/xla/hlo_opcode.h (the encoder
# stores StringToOpcodeID(instruction.opcode()) as uint8; 0 would be an unknown name). It is not
# XLA's HloOpcode enum order. docs/FORMAT.md shows the table and the checks on real files.
OPCODE_NAMES = {
    1: "abs", 2: "add", 3: "add-dependency", 4: "after-all", 5: "all-reduce", 6: "all-to-all", 7: "atan2",
    8: "batch-norm-grad", 9: "batch-norm-inference", 10: "batch-norm-training", 11: "bitcast",
    12: "bitcast-convert", 13: "broadcast", 14: "call", 15: "ceil", 16: "cholesky", 17: "clamp",
    18: "collective-permute", 19: "count-leading-zeros", 20: "compare", 21: "complex", 22: "concatenate",
    23: "conditional", 24: "constant", 25: "convert", 26: "convolution", 27: "copy", 28: "copy-done",
    29: "copy-start", 30: "cosine", 31: "custom-call", 32: "divide", 33: "domain", 34: "dot",
    35: "dynamic-slice", 36: "dynamic-update-slice", 37: "exponential", 38: "exponential-minus-one",
    39: "fft", 40: "floor", 41: "fusion", 42: "gather", 43: "get-dimension-size", 44: "set-dimension-size",
    45: "get-tuple-element", 46: "imag", 47: "infeed", 48: "iota", 49: "is-finite", 50: "log",
    51: "log-plus-one", 52: "and", 53: "not", 54: "or", 55: "xor", 56: "map", 57: "maximum", 58: "minimum",
    59: "multiply", 60: "negate", 61: "outfeed", 62: "pad", 63: "parameter", 64: "partition-id",
    65: "popcnt", 66: "power", 67: "real", 68: "recv", 69: "recv-done", 70: "reduce",
    71: "reduce-precision", 72: "reduce-window", 73: "remainder", 74: "replica-id", 75: "reshape",
    76: "reverse", 77: "rng", 78: "rng-get-and-update-state", 79: "rng-bit-generator",
    80: "round-nearest-afz", 81: "rsqrt", 82: "scatter", 83: "select", 84: "select-and-scatter",
    85: "send", 86: "send-done", 87: "shift-left", 88: "shift-right-arithmetic", 89: "shift-right-logical",
    90: "sign", 91: "sine", 92: "slice", 93: "sort", 94: "sqrt", 95: "subtract", 96: "tanh",
    98: "transpose", 99: "triangular-solve", 100: "tuple", 102: "while", 103: "cbrt", 104: "all-gather",
    105: "collective-permute-start", 106: "collective-permute-done", 107: "logistic",
    108: "dynamic-reshape", 109: "all-reduce-start", 110: "all-reduce-done", 111: "reduce-scatter",
    112: "all-gather-start", 113: "all-gather-done", 114: "opt-barrier", 115: "async-start",
    116: "async-update", 117: "async-done", 118: "round-nearest-even", 119: "stochastic-convert", 120: "tan",
}
RETIRED_OPCODES = frozenset({97, 101})  # trace, tuple-select: tombstones, removed from HLO, never emitted
# Every vocabulary id in exactly one class (tests/test_opcodes.py), by XLA's operation semantics.
# elementwise: each output element from the same-index operand elements, output shape = operand
# shape, so XLA propagates a layout through unchanged (convert, bitcast-convert, clamp, select,
# reduce-precision, map included; copy is not: it is where XLA changes a layout)
ELEMENTWISE = frozenset({
    1, 2, 7, 12, 15, 17, 19, 20, 21, 25, 30, 32, 37, 38, 40, 46, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,
    59, 60, 65, 66, 67, 71, 73, 80, 81, 83, 87, 88, 89, 90, 91, 94, 95, 96, 103, 107, 118, 119, 120,
})
# sources whose values do not depend on an operand's layout, so they can be materialized in any
# layout: broadcast, constant, iota, the random number ops, the scalar replica/partition ids
LAYOUT_FREE = frozenset({13, 24, 48, 64, 74, 77, 78, 79})
# ops that move or reinterpret elements without arithmetic (copy: the relayout op; bitcast and
# reshape depend on the layouts at both ends)
DATA_MOVEMENT = frozenset({11, 22, 27, 28, 29, 35, 36, 42, 62, 75, 76, 82, 92, 98, 108})
# ops that combine elements across dims or windows through a called computation (sort: reorders
# along a dim with a comparator computation)
REDUCTIONS = frozenset({70, 72, 84, 93})
# multi-step numeric ops XLA expands or hands to a library: batch norm, cholesky, fft, triangular-solve
COMPOSITE = frozenset({8, 9, 10, 16, 39, 99})
# cross-device communication: all-reduce, all-gather, all-to-all, reduce-scatter, collective-permute
COLLECTIVES = frozenset({5, 6, 18, 104, 105, 106, 109, 110, 111, 112, 113})
# transfers with the host or another program: infeed, outfeed, send, recv and their done halves
TRANSFERS = frozenset({47, 61, 68, 69, 85, 86})
# graph plumbing without data compute: parameters, tuples, ordering tokens, barriers, domains,
# dynamic-size metadata
STRUCTURE = frozenset({3, 4, 33, 43, 44, 45, 63, 100, 114})
# ops that run another computation or an opaque kernel: call, conditional, while, fusion,
# custom-call, async start/update/done
CALLS = frozenset({14, 23, 31, 41, 102, 115, 116, 117})
OPCODE_CLASSES = {
    "elementwise": ELEMENTWISE, "layout_free": LAYOUT_FREE, "kernel": frozenset(KERNEL_OPCODES),
    "data_movement": DATA_MOVEMENT, "reductions": REDUCTIONS, "composite": COMPOSITE,
    "collectives": COLLECTIVES, "transfers": TRANSFERS, "structure": STRUCTURE, "calls": CALLS,
}
_CLASS_OF = {op: name for name, ops in OPCODE_CLASSES.items() for op in ops}


def opcode_name(opcode: int) -> str:
    """A readable name of an HLO opcode id (`opcode-<id>` for one without a name here)."""
    return OPCODE_NAMES.get(int(opcode), f"opcode-{int(opcode)}")


def opcode_class(opcode: int) -> str:
    """The `OPCODE_CLASSES` name of an opcode id ('unknown' for an id outside the vocabulary)."""
    return _CLASS_OF.get(int(opcode), "unknown")


def node_rank(node_feat: np.ndarray) -> np.ndarray:
    """(N,) number of dimensions of each node's tensor: the count of non-zero shape dims."""
    return (node_feat[:, SHAPE_COLS] > 0).sum(axis=1)


def node_layout(node_feat: np.ndarray) -> np.ndarray:
    """(N, 6) int8 minor-to-major layout with -1 beyond the rank (the config vocabulary)."""
    lay = node_feat[:, LAYOUT_COLS].astype(np.int8)
    beyond = np.arange(6)[None, :] >= node_rank(node_feat)[:, None]
    lay[beyond] = -1
    return lay


def tensor_bytes(node_feat: np.ndarray) -> np.ndarray:
    """(N,) bytes of each node's output tensor (0 for tuples and tokens)."""
    elem = node_feat[:, TYPE_COLS] @ ELEMENT_BYTES
    return node_feat[:, PRODUCT_COL].astype(np.float64) * elem


def root_node(node_feat: np.ndarray) -> int:
    """Index of the graph's root (a tile kernel's output): the last node flagged is_root
    (column 0), or the last node when none is flagged."""
    roots = np.flatnonzero(node_feat[:, 0] > 0)
    return int(roots[-1]) if roots.size else node_feat.shape[0] - 1


def opcode_kind(node_opcode: np.ndarray) -> np.ndarray:
    """Index into KINDS of each opcode: convolution 0, dot 1, reshape 2, anything else 3."""
    op = np.asarray(node_opcode, dtype=np.int64)
    return np.select([op == CONVOLUTION, op == DOT, op == RESHAPE], [0, 1, 2], 3)
