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
# same-shape elementwise ops, through which XLA propagates a layout unchanged, and sources that
# can be materialized in any layout (broadcast, constant)
ELEMENTWISE = frozenset({2, 20, 25, 32, 37, 57, 59, 60, 81, 83, 95, 96})
LAYOUT_FREE = frozenset({13, 24})
# names of the opcodes that matter most (docs/FORMAT.md); any other id reads as `opcode-<id>`
OPCODE_NAMES = {
    2: "add", 13: "broadcast", 20: "compare", 22: "concatenate", 24: "constant", 25: "convert",
    26: "convolution", 27: "copy", 32: "divide", 34: "dot", 37: "exponential", 41: "fusion",
    45: "get-tuple-element", 57: "maximum", 59: "multiply", 60: "negate", 63: "parameter",
    70: "reduce", 75: "reshape", 81: "rsqrt", 83: "select", 92: "slice", 95: "subtract", 96: "tanh",
    98: "transpose", 100: "tuple", 102: "while",
}


def opcode_name(opcode: int) -> str:
    """A readable name of an HLO opcode id (`opcode-<id>` for one without a name here)."""
    return OPCODE_NAMES.get(int(opcode), f"opcode-{int(opcode)}")


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


def slot_nodes(node_opcode: np.ndarray, edge_index: np.ndarray, config_nodes: np.ndarray) -> np.ndarray:
    """(M, 3) int64 node behind each slot of each configurable node, -1 where absent: the node
    itself; operand 0 (its first edge row: files list operands in order, pruning keeps direct
    edges in their order); operand 1 of a convolution or dot."""
    nodes = np.asarray(config_nodes, dtype=np.int64)
    e = np.asarray(edge_index, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(e[:, 0], kind="stable")  # by consumer, operand order kept
    consumer, producer = e[order, 0], e[order, 1]
    first = np.searchsorted(consumer, nodes, "left")
    count = np.searchsorted(consumer, nodes, "right") - first
    out = np.full((nodes.size, 3), -1, dtype=np.int64)
    out[:, 0] = nodes
    if producer.size:
        out[:, 1] = np.where(count > 0, producer[np.minimum(first, producer.size - 1)], -1)
        kernel = (count > 1) & np.isin(np.asarray(node_opcode)[nodes], KERNEL_OPCODES)
        out[kernel, 2] = producer[np.minimum(first + 1, producer.size - 1)][kernel]
    return out


def opcode_kind(node_opcode: np.ndarray) -> np.ndarray:
    """Index into KINDS of each opcode: convolution 0, dot 1, reshape 2, anything else 3."""
    op = np.asarray(node_opcode, dtype=np.int64)
    return np.select([op == CONVOLUTION, op == DOT, op == RESHAPE], [0, 1, 2], 3)
