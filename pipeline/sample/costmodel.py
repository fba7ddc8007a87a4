"""The hidden analytical cost model behind the embedded sample's runtimes.

Used by `pipeline.sample_data` (`python -m pipeline.sample_data`) to give every generated config
a runtime; it is part of data generation, not of the product, and no stage may import it.

Every runtime is a deterministic function of what the written file holds (node_feat,
node_opcode, edge_index, node_config_ids and the configs) times log-normal measurement noise.
So a model that reads graph and configs together can learn it, while a model that reads the
configs alone cannot: the same config vector costs differently in different graphs, because
what it costs depends on tensor shapes, element types, default layouts and on which
configurable nodes feed which.

Layout (per config; all terms in ns):
- padding: a tensor whose minor-most dim is not a multiple of 128 (second-minor: of the
  sublane tile, 8 for 32-bit, 16 for 16-bit) moves padded bytes;
- copies: a producer and a consumer that disagree on a tensor's layout pay a transposing copy
  proportional to its bytes (across chains of elementwise ops, which propagate layouts);
- compute: a convolution or dot is cheapest when its layouts put the feature / contracting
  dims minor-most, and slower when the minor dim fills the 128 lanes badly;
- reshapes are free bitcasts only between row-major (descending) layouts.
Tile (per config, the config being the output tile): padding of the output to whole tiles,
lane/sublane fill of the tile, a fixed overhead per tile and a spill penalty when the tile's
working set overflows the on-chip memory.

Dot convention of the generator (not stored in the files, but consistent, hence learnable):
lhs (..., M, K), rhs (..., K, N), out (..., M, N).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from features import layout
from pipeline.io.hlo import IS_ROOT_COL


class Op:
    """HLO opcode ids of the dataset (XLA's opcode list in alphabetical order)."""

    ADD = 2
    BROADCAST = 13
    COMPARE = 20
    CONCATENATE = 22
    CONSTANT = 24
    CONVERT = 25
    CONVOLUTION = layout.CONVOLUTION
    COPY = 27
    DIVIDE = 32
    DOT = layout.DOT
    EXPONENTIAL = 37
    FUSION = 41
    GET_TUPLE_ELEMENT = 45
    MAXIMUM = 57
    MULTIPLY = 59
    NEGATE = 60
    PARAMETER = 63
    REDUCE = 70
    RESHAPE = layout.RESHAPE
    RSQRT = 81
    SELECT = 83
    SLICE = 92
    SUBTRACT = 95
    TANH = 96
    TRANSPOSE = 98
    TUPLE = 100
    WHILE = 102


# Same-shape elementwise ops: XLA propagates a layout through them, so a layout chosen at a
# configurable node reaches every consumer behind such a chain.
TRANSPARENT = frozenset({Op.ADD, Op.COMPARE, Op.CONVERT, Op.DIVIDE, Op.EXPONENTIAL, Op.MAXIMUM,
                         Op.MULTIPLY, Op.NEGATE, Op.RSQRT, Op.SELECT, Op.SUBTRACT, Op.TANH})
# Sources that can be materialized in any layout for free.
LAYOUT_FREE = frozenset({Op.BROADCAST, Op.CONSTANT})

# node_feat columns (docs/FORMAT.md; the shared ones live in features.layout and pipeline.io.hlo)
IS_ROOT = IS_ROOT_COL
TYPE_COLS = layout.TYPE_COLS
SHAPE_COLS = layout.SHAPE_COLS
LAYOUT_COLS = layout.LAYOUT_COLS
CONV_INPUT_FEATURE = 94
CONV_KERNEL_IN_FEATURE = 99
CONV_KERNEL_OUT_FEATURE = 100
CONV_OUTPUT_FEATURE = 106
ELEMENT_BYTES = layout.ELEMENT_BYTES.astype(np.int64)  # bytes per element of the one-hot types in columns 2-20

# A TPU-like chip, loosely: only ratios matter for rankings.
HBM_BYTES_PER_NS = 1200.0        # ~1.2 TB/s
MXU_FLOPS_PER_NS = {2: 2.0e5, 4: 5.0e4}  # bf16 vs f32 matmul throughput
VPU_ELEMS_PER_NS = 4000.0        # elementwise throughput
LANES = 128                      # minor-most tile dim
SUBLANE_BYTES = 32               # second-minor tile = 32 bytes of elements: f32 8, bf16 16
NODE_OVERHEAD_NS = 30.0          # per-op launch cost
COPY_FACTOR = 4.0                # a transposing copy reads and writes, at poor efficiency
RESHAPE_COPY_FACTOR = 3.0        # a non-bitcast reshape is a relayout copy
TILE_OVERHEAD_NS = 120.0         # per tile: DMA setup and pipeline bubble
TILE_LAUNCH_NS = 1500.0
VMEM_BYTES = 4 << 20             # on-chip budget for one tile's double-buffered working set
SPILL_FACTOR = 6.0

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_u01(key: int, *index: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers that are a pure function of `key` and the broadcast `index` arrays.

    A counter-based generator (splitmix64): a value depends only on its own indices, so configs
    generated in chunks of any size, or regenerated for a duplicate, come out identical.
    """
    with np.errstate(over="ignore"):
        h = np.full((), key & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        for a in index:
            h = _mix(h ^ (np.asarray(a).astype(np.uint64) * _GOLD + np.uint64(0x632BE59BD9B4E019)))
        h = _mix(h)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_normal(key: int, *index: np.ndarray | int) -> np.ndarray:
    """Standard normal numbers, as `hash_u01` (Box-Muller over two hashed streams)."""
    u1 = hash_u01(key, *index, 1)
    u2 = hash_u01(key, *index, 2)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def measure(cost_ns: np.ndarray, key: int, config_index: np.ndarray, noise: float) -> np.ndarray:
    """Measured runtimes (int64 ns): the model's cost times log-normal noise drawn per config."""
    z = hash_normal(key, config_index)
    return np.maximum(1, np.rint(cost_ns * np.exp(noise * z))).astype(np.int64)


def _element_bytes(node_feat: np.ndarray) -> np.ndarray:
    t = node_feat[:, TYPE_COLS]
    return np.where(t.any(axis=1), ELEMENT_BYTES[t.argmax(axis=1)], 0)


def _ceil_to(x: np.ndarray, m: np.ndarray | int) -> np.ndarray:
    return np.ceil(x / m) * m


def _sublane(elem_bytes: np.ndarray) -> np.ndarray:
    return np.maximum(1, SUBLANE_BYTES // np.maximum(elem_bytes, 1))


def _default_positions(layout: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(..., 6) position of each dim in a minor_to_major layout; dims beyond the rank sort last.

    A layout that is not a permutation of 0..rank-1 (malformed input) falls back to row-major.
    """
    layout = layout.astype(np.int64)
    out = np.empty(layout.shape, dtype=np.int64)
    flat_l, flat_r, flat_o = layout.reshape(-1, 6), rank.reshape(-1), out.reshape(-1, 6)
    for i in range(flat_l.shape[0]):
        r = int(flat_r[i])
        m2m = flat_l[i, :r]
        if sorted(m2m.tolist()) != list(range(r)):
            m2m = np.arange(r)[::-1]
        pos = np.arange(6) + 6  # beyond the rank: fixed, after every real dim
        pos[m2m] = np.arange(r)
        flat_o[i] = pos
    return out


def resolve_layout(group: np.ndarray, rank: np.ndarray, default_pos: np.ndarray) -> np.ndarray:
    """Effective layout of config groups as the position of each dim in minor-to-major order.

    Args:
        group: (..., 6) 6-value groups of node_config_feat: a minor-to-major prefix padded with
            -1; all -1 means the compiler default.
        rank: (...) the tensor's rank (broadcast against the group's leading shape).
        default_pos: (..., 6) `_default_positions` of the tensor's default layout.

    The dims named by the group come first in its order; the rest follow in default order.

    Shapes: returns (..., 6) int64; entry d is dim d's minor-to-major position (dims beyond the
    rank keep position d).
    """
    g = group.astype(np.int64)
    dims = np.arange(6)
    rank = np.asarray(rank)[..., None]
    valid = (g >= 0) & (g < rank)
    eq = (g[..., :, None] == dims) & valid[..., :, None]  # (..., prefix pos, dim)
    named = eq.any(axis=-2)
    prefix_pos = (eq * dims[:, None]).sum(axis=-2)
    key = np.where(named, prefix_pos, 6 + default_pos)
    key = np.where(dims >= rank, 12 + dims, key)
    return (key[..., None, :] < key[..., :, None]).sum(axis=-1)


def _code(pos: np.ndarray) -> np.ndarray:
    """One integer per layout, equal iff the layouts are equal."""
    return (pos * (6 ** np.arange(6))).sum(axis=-1)


_WALK_BUDGET = 256  # bounds the layout walks on huge graphs; chains in practice are short


@dataclass
class _Graph:
    """Per-node facts of one graph that both cost models read off the file's arrays.

    Shapes: N nodes.
    """

    op: np.ndarray                # (N,) int64 opcode
    shape: np.ndarray             # (N, 6) int64, 0 beyond the rank
    rank: np.ndarray              # (N,)
    elem_bytes: np.ndarray        # (N,) int64, 0 for a non-array
    elems: np.ndarray             # (N,) int64 element count
    nbytes: np.ndarray            # (N,) float64 raw bytes
    operands: list[list[int]]     # per node, its operands in operand order
    consumers: list[list[int]]    # per node, the nodes that read it

    @classmethod
    def from_arrays(cls, node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray) -> "_Graph":
        """Read the per-node arrays and the adjacency of a graph."""
        num_nodes = node_feat.shape[0]
        shape = node_feat[:, SHAPE_COLS].astype(np.int64)
        elem_bytes = _element_bytes(node_feat)
        elems = np.where(shape > 0, shape, 1).prod(axis=1)
        operands: list[list[int]] = [[] for _ in range(num_nodes)]
        consumers: list[list[int]] = [[] for _ in range(num_nodes)]
        for user, operand in edge_index.tolist():  # row order = operand order
            operands[user].append(operand)
            consumers[operand].append(user)
        return cls(op=node_opcode.astype(np.int64), shape=shape, rank=(shape > 0).sum(axis=1),
                   elem_bytes=elem_bytes, elems=elems, nbytes=(elems * elem_bytes).astype(np.float64),
                   operands=operands, consumers=consumers)

    @property
    def num_nodes(self) -> int:
        return len(self.operands)

    def same_shape(self, a: int, b: int) -> bool:
        return bool((self.shape[a] == self.shape[b]).all())


def _slot_nodes(graph: _Graph, ids: np.ndarray) -> np.ndarray:
    """(NC, 3) int64 node behind each slot of each configurable node, -1 where the slot is absent."""
    slot_node = np.full((ids.size, 3), -1, dtype=np.int64)
    for j, node in enumerate(ids.tolist()):
        operands = graph.operands[node]
        slot_node[j, 0] = node
        if operands:
            slot_node[j, 1] = operands[0]
        if graph.op[node] in (Op.CONVOLUTION, Op.DOT) and len(operands) > 1:
            slot_node[j, 2] = operands[1]
    return slot_node


def _output_readers(graph: _Graph, node: int, cfg: dict[int, int],
                    has: np.ndarray) -> tuple[list[tuple[int, int]], bool]:
    """Who sees a configurable node's output layout, walking forward through elementwise chains.

    Returns the (configurable consumer, input slot) pairs reached, and whether some node with a
    fixed layout reads the output as well.
    """
    readers: list[tuple[int, int]] = []
    reaches_fixed = False
    seen, todo = {node}, deque([node])
    while todo and len(seen) < _WALK_BUDGET:
        producer = todo.popleft()
        for consumer in graph.consumers[producer]:
            if consumer in seen:
                continue
            seen.add(consumer)
            if consumer in cfg:
                slot = graph.operands[consumer].index(producer) + 1
                if slot <= 2 and has[cfg[consumer], slot]:
                    readers.append((cfg[consumer], slot))
            elif graph.op[consumer] in TRANSPARENT and graph.same_shape(consumer, node):
                todo.append(consumer)
            else:
                reaches_fixed = True
    return readers, reaches_fixed


def _fed_by_fixed(graph: _Graph, start: int, cfg: dict[int, int]) -> bool:
    """Whether an input slot fed by `start` is also fed by a fixed-layout node (walking backward)."""
    seen, todo = {start}, deque([start])
    while todo and len(seen) < _WALK_BUDGET:
        node = todo.popleft()
        if node in cfg:
            continue
        if graph.op[node] in TRANSPARENT:
            for operand in graph.operands[node]:
                if operand not in seen and graph.same_shape(operand, start):
                    seen.add(operand)
                    todo.append(operand)
        elif graph.op[node] not in LAYOUT_FREE:
            return True
    return False


def _layout_links(graph: _Graph, node_feat: np.ndarray, ids: np.ndarray, slot_node: np.ndarray,
                  has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which slots touch a fixed layout, and the links between configurable nodes.

    Shapes: returns fixed (NC, 3) bool and links (L, 3) int64 rows (producer, consumer, slot),
    sorted.
    """
    cfg = {int(node): j for j, node in enumerate(ids)}
    fixed = np.zeros((ids.size, 3), dtype=bool)
    links: set[tuple[int, int, int]] = set()
    for j, node in enumerate(ids.tolist()):
        readers, reaches_fixed = _output_readers(graph, node, cfg, has)
        links.update((j, consumer, slot) for consumer, slot in readers)
        fixed[j, 0] = reaches_fixed or node_feat[node, IS_ROOT] > 0
        for slot in (1, 2):
            if has[j, slot]:
                fixed[j, slot] = _fed_by_fixed(graph, int(slot_node[j, slot]), cfg)
    return fixed, np.array(sorted(links), dtype=np.int64).reshape(-1, 3)


def _mxu_work(graph: _Graph, node_feat: np.ndarray, ids: np.ndarray, has: np.ndarray, rank: np.ndarray,
              dims: np.ndarray, elem_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preferred dims and ideal compute time of each configurable convolution or dot.

    Shapes: returns want (NC, 4) int64 (-1 none, or beyond the slot's rank) and flops_ns (NC,).
    """
    want = np.full((ids.size, 4), -1, dtype=np.int64)
    flops = np.zeros(ids.size)
    for j, node in enumerate(ids.tolist()):
        if graph.op[node] == Op.CONVOLUTION:
            feat = node_feat[node]
            want[j] = [feat[CONV_OUTPUT_FEATURE], feat[CONV_INPUT_FEATURE], feat[CONV_KERNEL_OUT_FEATURE],
                       feat[CONV_KERNEL_IN_FEATURE]]
            if has[j, 2]:
                kernel_dims = dims[j, 2, : rank[j, 2]]
                flops[j] = 2.0 * graph.elems[node] * kernel_dims.prod() / max(kernel_dims[want[j, 2]], 1.0)
        elif graph.op[node] == Op.DOT:
            want[j] = [rank[j, 0] - 1, rank[j, 1] - 1, rank[j, 2] - 1, rank[j, 2] - 2]
            if rank[j, 1] > 0:
                flops[j] = 2.0 * graph.elems[node] * dims[j, 1, rank[j, 1] - 1]
    want = np.where(want < np.maximum(rank[:, [0, 1, 2, 2]], 0), want, -1)
    peak = np.array([MXU_FLOPS_PER_NS.get(int(b), MXU_FLOPS_PER_NS[4]) for b in elem_bytes[:, 0]])
    return want, flops / np.maximum(peak, 1.0)


def _base_ns(graph: _Graph, ids: np.ndarray, output_bytes: np.ndarray) -> float:
    """The cost in ns that no config changes: fixed nodes' traffic, launches, configurable outputs."""
    is_cfg = np.zeros(graph.num_nodes, dtype=bool)
    is_cfg[ids] = True
    array_nodes = (graph.rank > 0) & ~is_cfg
    other_mxu = np.isin(graph.op, (Op.CONVOLUTION, Op.DOT)) & ~is_cfg
    base = (2.0 * graph.nbytes[array_nodes].sum() / HBM_BYTES_PER_NS + NODE_OVERHEAD_NS * graph.num_nodes
            + 4.0 * graph.nbytes[other_mxu].sum() / HBM_BYTES_PER_NS
            + 2.0 * output_bytes.sum() / HBM_BYTES_PER_NS)
    return float(base)


@dataclass
class LayoutContext:
    """What the layout cost model needs from one graph, read off the file's arrays.

    Slots s = 0 output, 1 input (operand 0), 2 kernel (operand 1 of a convolution or dot),
    matching the three 6-value groups of node_config_feat.

    Shapes: NC configurable nodes, L producer->consumer links between configurable nodes.
    """

    has: np.ndarray          # (NC, 3) bool: the slot exists
    rank: np.ndarray         # (NC, 3)
    dims: np.ndarray         # (NC, 3, 6) float64, 1 beyond the rank
    nbytes: np.ndarray       # (NC, 3) float64 raw bytes
    elem_bytes: np.ndarray   # (NC, 3)
    default_pos: np.ndarray  # (NC, 3, 6)
    fixed: np.ndarray        # (NC, 3) bool: the slot is also fed by / feeds a fixed-layout node
    link_src: np.ndarray     # (L,) configurable producer
    link_dst: np.ndarray     # (L,) configurable consumer
    link_slot: np.ndarray    # (L,) 1 or 2
    is_reshape: np.ndarray   # (NC,) bool
    is_mxu: np.ndarray       # (NC,) bool: convolution or dot
    want: np.ndarray         # (NC, 4) preferred dims: out minor, in minor, kernel minor, kernel second-minor (-1 none)
    flops_ns: np.ndarray     # (NC,) ideal compute time of a convolution or dot
    base_ns: float           # everything the configs do not change

    @classmethod
    def from_arrays(cls, node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray,
                    node_config_ids: np.ndarray) -> "LayoutContext":
        """Read the layout cost model's view of a graph off a layout file's arrays."""
        graph = _Graph.from_arrays(node_feat, node_opcode, edge_index)
        ids = node_config_ids.astype(np.int64)
        slot_node = _slot_nodes(graph, ids)                          # (NC, 3), -1 absent
        has = slot_node >= 0
        node = np.where(has, slot_node, 0)
        rank = np.where(has, graph.rank[node], 0)
        dims = np.where(has[..., None] & (graph.shape[node] > 0), graph.shape[node], 1).astype(np.float64)
        elem_bytes = np.where(has, graph.elem_bytes[node], 0)
        nbytes = np.where(has, graph.nbytes[node], 0.0)
        default_pos = _default_positions(node_feat[node][..., LAYOUT_COLS], rank)
        fixed, link = _layout_links(graph, node_feat, ids, slot_node, has)
        want, flops_ns = _mxu_work(graph, node_feat, ids, has, rank, dims, elem_bytes)
        opcode = graph.op[ids] if ids.size else np.zeros(0, dtype=np.int64)
        return cls(has=has, rank=rank, dims=dims, nbytes=nbytes, elem_bytes=elem_bytes,
                   default_pos=default_pos, fixed=fixed, link_src=link[:, 0], link_dst=link[:, 1],
                   link_slot=link[:, 2], is_reshape=opcode == Op.RESHAPE,
                   is_mxu=(opcode == Op.CONVOLUTION) | (opcode == Op.DOT),
                   want=want, flops_ns=flops_ns, base_ns=_base_ns(graph, ids, nbytes[:, 0]))

    @property
    def num_config_nodes(self) -> int:
        return int(self.has.shape[0])


def _slot_facts(ctx: LayoutContext, slot: int, group: np.ndarray) -> dict[str, np.ndarray]:
    """Per-config facts of one slot's layouts: {name: (B, NC)}.

    A search draws each node's group from a few dozen layouts, so the groups are resolved once
    per distinct (node, group) and gathered back: this is what keeps 100k-config graphs fast.
    """
    b, nc, _ = group.shape
    g = np.clip(group, -1, 6) + 1                                   # (B, NC, 6) in 0..7
    key = (g * (8 ** np.arange(6))).sum(axis=-1) * nc + np.arange(nc)
    uniq, inv = np.unique(key, return_inverse=True)
    node = uniq % nc
    ug = (uniq // nc)[:, None] // (8 ** np.arange(6)) % 8 - 1       # (U, 6)
    rank = ctx.rank[node, slot]
    pos = resolve_layout(ug, rank, ctx.default_pos[node, slot])     # (U, 6)
    d = ctx.dims[node, slot]
    minor = (d * (pos == 0)).sum(-1)
    second = np.where(rank >= 2, (d * (pos == 1)).sum(-1), 1.0)
    fill = (minor / _ceil_to(minor, LANES)) * (second / _ceil_to(second, _sublane(ctx.elem_bytes[node, slot])))
    nbytes = ctx.nbytes[node, slot]
    u = {
        "code": _code(pos),
        "padded": np.where(ctx.has[node, slot] & (rank > 0), nbytes / fill, nbytes),
        "lane_fill": minor / _ceil_to(minor, LANES),
        "desc": ((pos == rank[:, None] - 1 - np.arange(6)) | (np.arange(6) >= rank[:, None])).all(-1),
    }
    # is the operation's preferred dim away from its best position (minor-most, or second-minor)
    for name, col, at in {0: [("off", 0, 0)], 1: [("off", 1, 0)], 2: [("off", 2, 0), ("off2", 3, 1)]}[slot]:
        w = ctx.want[node, col]
        u[name] = (w >= 0) & (np.take_along_axis(pos, np.maximum(w, 0)[:, None], axis=1)[:, 0] != at)
    inv = inv.reshape(b, nc)
    return {k: v[inv] for k, v in u.items()}


def layout_terms(ctx: LayoutContext, node_config_feat: np.ndarray) -> dict[str, np.ndarray]:
    """The noiseless cost of each config, term by term.

    Args:
        ctx: the graph, from `LayoutContext.from_arrays`.
        node_config_feat: (B, NC, 18) configs.

    Shapes: returns {"padding", "copies", "compute", "reshape": (B,) ns}; the total cost is
    `ctx.base_ns` plus their sum.
    """
    b = node_config_feat.shape[0]
    cf = np.rint(node_config_feat).astype(np.int64)
    f = [_slot_facts(ctx, s, cf[:, :, 6 * s : 6 * s + 6]) for s in range(3)]
    nb = ctx.nbytes
    padding = ((2.0 * (f[0]["padded"] - nb[:, 0]) + (f[1]["padded"] - nb[:, 1]) + (f[2]["padded"] - nb[:, 2]))
               / HBM_BYTES_PER_NS).sum(axis=1)

    copies = np.zeros(b)
    for s in range(3):
        off_default = (f[s]["code"] != _code(ctx.default_pos[:, s])) & ctx.fixed[:, s]
        copies += (off_default * f[s]["padded"]).sum(axis=1) * COPY_FACTOR / HBM_BYTES_PER_NS
    if ctx.link_src.size:
        in_code = np.stack([f[1]["code"], f[2]["code"]], axis=-1)          # (B, NC, 2)
        in_padded = np.stack([f[1]["padded"], f[2]["padded"]], axis=-1)
        dst, slot = ctx.link_dst, ctx.link_slot - 1
        mismatch = f[0]["code"][:, ctx.link_src] != in_code[:, dst, slot]
        copies += (mismatch * in_padded[:, dst, slot]).sum(axis=1) * COPY_FACTOR / HBM_BYTES_PER_NS

    slow = ((1.0 + 0.35 * f[0]["off"]) * (1.0 + 0.25 * f[1]["off"]) * (1.0 + 0.2 * f[2]["off"])
            * (1.0 + 0.1 * f[2]["off2"]) / np.sqrt(f[0]["lane_fill"]))
    compute = (ctx.is_mxu * ctx.flops_ns * slow).sum(axis=1)

    bitcast = f[0]["desc"] & f[1]["desc"]
    trivial = (ctx.rank[:, 0] <= 1) & (ctx.rank[:, 1] <= 1)
    relayout = ctx.is_reshape & ~bitcast & ~trivial
    reshape = (relayout * f[0]["padded"]).sum(axis=1) * RESHAPE_COPY_FACTOR / HBM_BYTES_PER_NS
    return {"padding": padding, "copies": copies, "compute": compute, "reshape": reshape}


def layout_cost(ctx: LayoutContext, node_config_feat: np.ndarray) -> np.ndarray:
    """(B,) noiseless cost in ns of (B, NC, 18) configs."""
    return ctx.base_ns + sum(layout_terms(ctx, node_config_feat).values())


@dataclass
class TileContext:
    """What the tile cost model needs from one kernel (a fused computation).

    The kernel's output is its root node; a tile config's output_bounds (config_feat cols 8-13)
    is the tile of that output, dims in shape order.
    """

    dims: np.ndarray        # (r,) output shape
    minor: int              # minor-most output dim (root layout)
    second: int             # second-minor output dim, -1 for rank 1
    elem_bytes: int
    hbm_bytes: float        # operands read plus output written
    tile_bytes_per_elem: float  # working-set bytes per output element of a tile (double-buffered)
    mxu_ns: float           # ideal matmul/convolution time
    vpu_ns: float           # ideal elementwise time

    @classmethod
    def from_arrays(cls, node_feat: np.ndarray, node_opcode: np.ndarray, edge_index: np.ndarray) -> "TileContext":
        """Read the tile cost model's view of a kernel off a tile file's arrays."""
        graph = _Graph.from_arrays(node_feat, node_opcode, edge_index)
        elem_bytes = graph.elem_bytes
        elems = graph.elems.astype(np.float64)
        root = _kernel_root(node_feat)
        dims, minor_to_major = _root_layout(node_feat, graph, root)
        params = np.flatnonzero(graph.op == Op.PARAMETER)
        out_elems = float(dims.prod())
        hbm = float((elems[params] * elem_bytes[params]).sum() + out_elems * elem_bytes[root])
        per_elem = float(elem_bytes[root]
                         + (elem_bytes[params] * np.minimum(1.0, elems[params] / out_elems)).sum()) * 2.0
        elementwise = np.isin(graph.op, list(TRANSPARENT | {Op.REDUCE, Op.BROADCAST}))
        vpu = float(elems[elementwise].sum()) / VPU_ELEMS_PER_NS
        return cls(dims=dims, minor=int(minor_to_major[0]),
                   second=int(minor_to_major[1]) if minor_to_major.size >= 2 else -1,
                   elem_bytes=int(max(elem_bytes[root], 1)), hbm_bytes=hbm, tile_bytes_per_elem=per_elem,
                   mxu_ns=_kernel_mxu_ns(graph, node_feat, elems), vpu_ns=vpu)


def _kernel_root(node_feat: np.ndarray) -> int:
    """The kernel's output node: its last root, else its last node."""
    roots = np.flatnonzero(node_feat[:, IS_ROOT] > 0)
    return int(roots[-1]) if roots.size else node_feat.shape[0] - 1


def _root_layout(node_feat: np.ndarray, graph: _Graph, root: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel output's dims (float64; a scalar counts as (1,)) and minor_to_major order.

    A layout that is not a permutation of the dims (malformed input) falls back to row-major.
    """
    rank = int(graph.rank[root])
    dims = graph.shape[root, :rank].astype(np.float64) if rank else np.ones(1)
    rank = max(rank, 1)
    minor_to_major = node_feat[root, LAYOUT_COLS].astype(np.int64)[:rank]
    if sorted(minor_to_major.tolist()) != list(range(rank)):
        minor_to_major = np.arange(rank)[::-1]
    return dims, minor_to_major


def _kernel_mxu_ns(graph: _Graph, node_feat: np.ndarray, elems: np.ndarray) -> float:
    """Ideal matmul/convolution time in ns of a kernel's dots and convolutions."""
    mxu = 0.0
    for node in np.flatnonzero(np.isin(graph.op, (Op.CONVOLUTION, Op.DOT))).tolist():
        if len(graph.operands[node]) < 2:
            continue
        lhs, rhs = graph.operands[node][0], graph.operands[node][1]
        if graph.op[node] == Op.DOT:
            contracted = graph.shape[lhs, max(graph.rank[lhs] - 1, 0)]
        else:
            kernel_out = int(node_feat[node, CONV_KERNEL_OUT_FEATURE])
            contracted = elems[rhs] / max(graph.shape[rhs, kernel_out], 1)
        peak = MXU_FLOPS_PER_NS.get(int(graph.elem_bytes[node]), MXU_FLOPS_PER_NS[4])
        mxu += 2.0 * elems[node] * max(float(contracted), 1.0) / peak
    return mxu


def tile_terms(ctx: TileContext, config_feat: np.ndarray) -> dict[str, np.ndarray]:
    """The noiseless cost of (B, 24) tile configs, term by term: {name: (B,) ns}."""
    r = ctx.dims.size
    t = np.clip(config_feat[:, 8 : 8 + r].astype(np.float64), 1.0, ctx.dims)  # (B, r)
    per_dim = np.ceil(ctx.dims / t)
    n_tiles = per_dim.prod(axis=1)
    waste = (per_dim * t).prod(axis=1) / ctx.dims.prod()
    tm = t[:, ctx.minor]
    fill = tm / _ceil_to(tm, LANES)
    if ctx.second >= 0:
        ts = t[:, ctx.second]
        fill = fill * ts / _ceil_to(ts, _sublane(np.array(ctx.elem_bytes)))
    memory = ctx.hbm_bytes * waste / HBM_BYTES_PER_NS / np.sqrt(fill)
    compute = (ctx.mxu_ns / fill + ctx.vpu_ns / np.sqrt(fill)) * waste
    tile_bytes = t.prod(axis=1) * ctx.tile_bytes_per_elem
    spill = np.maximum(0.0, tile_bytes - VMEM_BYTES) * n_tiles * SPILL_FACTOR / HBM_BYTES_PER_NS
    return {"work": np.maximum(memory, compute), "tiles": n_tiles * TILE_OVERHEAD_NS + TILE_LAUNCH_NS,
            "spill": spill}


def tile_cost(ctx: TileContext, config_feat: np.ndarray) -> np.ndarray:
    """(B,) noiseless cost in ns of (B, 24) tile configs."""
    return sum(tile_terms(ctx, config_feat).values())
