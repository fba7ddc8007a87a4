"""The HLO module builder of the sample generator: nodes, edges and node_feat rows.

`Hlo` grows a module one instruction at a time in topological order (an edge [u, v] means u
consumes v, so u > v) and fills each node's node_feat row the way the real files do: element
type, shape, the node's own layout, and the per-opcode fields (dimensions, window, convolution
dimension numbers, slice). `Inputs` hands out a computation's inputs. The programs built from
these live in `pipeline.sample.graphs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from features.layout import LAYOUT0, NODE_FEAT_DIM, OPCODE_NAMES, PRODUCT_COL, SHAPE0

# node_feat columns beyond those features.layout names have one home, pipeline.io.hlo (each cites
# the dataset's featurizer); its HLO text parser reads the columns this builder writes.
# TUPLE_SIZE_COL is re-exported to pipeline.sample.graphs.
from pipeline.io.hlo import (
    BASE_DILATION,
    BATCH_GROUP_COL,
    CONV_DIMS,
    DIMENSIONS_COL,
    DIMS_SUM_COL,
    EMPTY_PRODUCT_COLS,
    ETYPE_COL,
    FEATURE_GROUP_COL,
    PAD_HIGH,
    PAD_LOW,
    PARAMETER_NUMBER_COL,
    SLICE_LIMIT,
    SLICE_START,
    SLICE_STRIDE,
    TUPLE_SIZE_COL,
    WIN_DILATION,
    WINDOW_FALSE_COUNT,
    WINDOW_SIZE,
    WINDOW_STRIDE,
)
from pipeline.sample.costmodel import IS_ROOT, Op


@dataclass
class Hlo:
    """A growing HLO module: nodes in topological order and their node_feat rows."""

    rows: list[np.ndarray] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    layouts: list[tuple[int, ...]] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # convolutions, dots, reshapes
    comp_starts: list[int] = field(default_factory=list)
    # the values set_dims wrote, by node and first column: what `to_text` prints as attributes
    fields: dict[int, dict[int, list[int]]] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of nodes so far."""
        return len(self.ops)

    def add(self, opcode: int, shape: tuple[int, ...], dtype: str, operands: tuple[int, ...] = (),
            layout: tuple[int, ...] | None = None, root: bool = False) -> int:
        """Append a node of `opcode` consuming `operands`; return its index. `layout` is its
        minor-to-major order (None: row-major); convolutions, dots and reshapes become the
        candidates for configurable nodes."""
        row = np.zeros(NODE_FEAT_DIM, dtype=np.float32)
        row[EMPTY_PRODUCT_COLS] = 1.0
        row[ETYPE_COL[dtype]] = 1.0
        shape = tuple(int(d) for d in shape)
        r = len(shape)
        row[SHAPE0 : SHAPE0 + r] = shape
        row[DIMS_SUM_COL] = sum(shape)
        row[PRODUCT_COL] = math.prod(shape)
        if layout is None:
            layout = tuple(range(r - 1, -1, -1))  # XLA's default: row-major
        if r:
            row[LAYOUT0 : LAYOUT0 + r] = layout
        row[IS_ROOT] = float(root)
        i = len(self.ops)
        self.rows.append(row)
        self.ops.append(opcode)
        self.shapes.append(shape)
        self.dtypes.append(dtype)
        self.layouts.append(tuple(layout))
        self.edges.extend((i, v) for v in operands)
        if opcode in (Op.CONVOLUTION, Op.DOT, Op.RESHAPE):
            self.candidates.append(i)
        return i

    def set_dims(self, i: int, col: int, values: list[int], with_sum_product: bool = False) -> None:
        """Write `values` into node i's field starting at column `col`, and the field's sum and
        product columns when `with_sum_product`."""
        self.rows[i][col : col + len(values)] = values
        self.fields.setdefault(i, {})[col] = [int(v) for v in values]
        if with_sum_product:
            n = 6 if col < SLICE_START else 2  # window fields have 6 dims, slice fields 2
            self.rows[i][col + n] = sum(values)
            self.rows[i][col + n + 1] = math.prod(values)

    def shape(self, i: int) -> tuple[int, ...]:
        """Node i's output shape."""
        return self.shapes[i]

    # -- common node kinds ------------------------------------------------------------------

    def param(self, shape, dtype, number: int, layout=None) -> int:
        """A parameter numbered `number`; return its index."""
        i = self.add(Op.PARAMETER, shape, dtype, layout=layout)
        self.rows[i][PARAMETER_NUMBER_COL] = number
        return i

    def constant(self, dtype: str, shape=()) -> int:
        """A constant (a scalar by default); return its index."""
        return self.add(Op.CONSTANT, shape, dtype)

    def broadcast(self, operand: int, shape, dims: list[int]) -> int:
        """`operand` broadcast to `shape`, its dims mapped to `dims`; return the node's index."""
        i = self.add(Op.BROADCAST, shape, self.dtypes[operand], (operand,))
        self.set_dims(i, DIMENSIONS_COL, dims)
        return i

    def scalar_broadcast(self, x: int, dtype: str | None = None) -> int:
        """A scalar constant broadcast to x's shape; return the broadcast's index."""
        return self.broadcast(self.constant(dtype or self.dtypes[x]), self.shape(x), [])

    def eltwise(self, opcode: int, *operands: int, dtype: str | None = None) -> int:
        """An elementwise op with the first operand's shape and layout; return its index."""
        a = operands[0]
        return self.add(opcode, self.shape(a), dtype or self.dtypes[a], operands, layout=self.layouts[a])

    def tuple_(self, operands: list[int], root: bool = False) -> int:
        """A tuple of `operands`; return its index."""
        i = self.add(Op.TUPLE, (), "tuple", tuple(operands), root=root)
        self.rows[i][TUPLE_SIZE_COL] = len(operands)
        return i

    def gte(self, tup: int, shape, dtype, layout=None) -> int:
        """An element of the tuple `tup` (its index is not a node feature); return the node's index."""
        return self.add(Op.GET_TUPLE_ELEMENT, shape, dtype, (tup,), layout=layout)

    def reduce(self, x: int, dims: list[int], dtype: str = "f32") -> int:
        """x reduced over `dims` (after its init constant); return the reduce's index."""
        init = self.constant(dtype)
        shape = tuple(d for k, d in enumerate(self.shape(x)) if k not in dims)
        i = self.add(Op.REDUCE, shape, dtype, (x, init))
        self.set_dims(i, DIMENSIONS_COL, dims)
        return i

    def transpose(self, x: int, perm: list[int]) -> int:
        """x with its dims permuted by `perm`; return the node's index."""
        shape = tuple(self.shape(x)[p] for p in perm)
        i = self.add(Op.TRANSPOSE, shape, self.dtypes[x], (x,))
        self.set_dims(i, DIMENSIONS_COL, perm)
        return i

    def reshape(self, x: int, shape) -> int:
        """x reshaped to `shape` (same element count); return the node's index."""
        assert math.prod(shape) == math.prod(self.shape(x)), (shape, self.shape(x))
        return self.add(Op.RESHAPE, shape, self.dtypes[x], (x,))

    def convert(self, x: int, dtype: str) -> int:
        """x converted to `dtype`; return the node's index."""
        return self.eltwise(Op.CONVERT, x, dtype=dtype)

    def dot(self, lhs: int, rhs: int) -> int:
        """lhs (..., M, K) x rhs (..., K, N) -> (..., M, N), the convention the cost model assumes;
        return the dot's index."""
        a, b = self.shape(lhs), self.shape(rhs)
        assert a[-1] == b[-2] and a[:-2] == b[:-2], (a, b)
        return self.add(Op.DOT, (*a[:-1], b[-1]), self.dtypes[lhs], (lhs, rhs))

    def conv(self, x: int, w: int, stride: int) -> int:
        """NHWC input x, HWIO kernel w, NHWC output, 'same' padding; return the convolution's index."""
        n, h, wd, _ = self.shape(x)
        kh, kw, _, cout = self.shape(w)
        oh, ow = -(-h // stride), -(-wd // stride)
        i = self.add(Op.CONVOLUTION, (n, oh, ow, cout), self.dtypes[x], (x, w))
        pad_lo, pad_hi = [(kh - 1) // 2, (kw - 1) // 2], [kh // 2, kw // 2]
        self.set_dims(i, WINDOW_SIZE, [kh, kw], True)
        self.set_dims(i, WINDOW_STRIDE, [stride, stride], True)
        self.set_dims(i, PAD_LOW, pad_lo, True)
        self.set_dims(i, PAD_HIGH, pad_hi, True)
        self.set_dims(i, WIN_DILATION, [1, 1], True)
        self.set_dims(i, BASE_DILATION, [1, 1], True)
        self.rows[i][WINDOW_FALSE_COUNT] = 2
        # input batch 0, feature 3, spatial 1 2 | kernel in 2, out 3, spatial 0 1 | output batch 0, feature 3
        self.set_dims(i, CONV_DIMS, [0, 3, 1, 2, 0, 0, 2, 3, 0, 1, 0, 0, 0, 3])
        self.rows[i][FEATURE_GROUP_COL] = 1
        self.rows[i][BATCH_GROUP_COL] = 1
        return i

    def slice_(self, x: int, limits: list[int]) -> int:
        """x[0:limits] with unit strides; return the slice's index."""
        shape = tuple(limits)
        i = self.add(Op.SLICE, shape, self.dtypes[x], (x,))
        starts = [0] * len(limits)
        self.set_dims(i, SLICE_START, starts[:2], True)
        self.set_dims(i, SLICE_STRIDE, [1] * min(2, len(limits)), True)
        self.set_dims(i, SLICE_LIMIT, limits[:2], True)
        return i

    def reducer(self, opcode: int, dtype: str = "f32") -> None:
        """A reduction's to_apply computation: two scalar parameters and the combining root."""
        a = self.param((), dtype, 0)
        b = self.param((), dtype, 1)
        self.add(opcode, (), dtype, (a, b), root=True)

    def filler(self, x: int, n: int, rng: np.random.Generator) -> int:
        """About n more nodes of same-shape elementwise work on x (bias, scale, clamp, mask);
        return the last one's index."""
        stop = len(self) + n
        while len(self) < stop:
            k = rng.integers(4)
            if k == 0:
                x = self.eltwise(Op.MULTIPLY, x, self.scalar_broadcast(x))
            elif k == 1:
                x = self.eltwise(Op.ADD, x, self.scalar_broadcast(x))
            elif k == 2:
                x = self.eltwise(Op.MAXIMUM, x, self.scalar_broadcast(x))
            else:
                mask = self.eltwise(Op.COMPARE, x, self.scalar_broadcast(x), dtype="pred")
                x = self.eltwise(Op.SELECT, mask, x, self.scalar_broadcast(x), dtype=self.dtypes[x])
        return x

    # -- the module as HLO text -----------------------------------------------------------------

    def _shape_text(self, i: int, users: dict[int, list[int]], operands: dict[int, list[int]]) -> str:
        """Node i's result shape as HLO prints it: `bf16[8,16]{1,0}`, `f32[]`, or a tuple of
        its elements (a tuple's operands, a tuple parameter's element reads, a loop's state)."""
        if self.dtypes[i] != "tuple":
            dims = ",".join(str(d) for d in self.shapes[i])
            lay = "{" + ",".join(str(d) for d in self.layouts[i]) + "}" if self.shapes[i] else ""
            return f"{self.dtypes[i]}[{dims}]{lay}"
        if self.ops[i] == Op.TUPLE:
            elems = [self._shape_text(v, users, operands) for v in operands.get(i, [])]
        elif self.ops[i] == Op.WHILE:
            return self._shape_text(operands[i][0], users, operands)
        else:
            elems = [self._shape_text(u, users, operands) for u in users.get(i, [])
                     if self.ops[u] == Op.GET_TUPLE_ELEMENT]
        size = int(self.rows[i][TUPLE_SIZE_COL])
        elems = (elems + ["s32[]"] * size)[:size]
        return "(" + ", ".join(elems) + ")"

    def _attrs_text(self, i: int, reducer: str, body: str | None) -> list[str]:
        """Node i's attributes: every field set_dims wrote, and the computations it calls."""
        f = self.fields.get(i, {})
        out = []
        if DIMENSIONS_COL in f:
            out.append("dimensions={" + ",".join(map(str, f[DIMENSIONS_COL])) + "}")
        if WINDOW_SIZE in f:
            x = "x".join
            pads = x(f"{lo}_{hi}" for lo, hi in zip(f[PAD_LOW], f[PAD_HIGH]))
            out.append(f"window={{size={x(map(str, f[WINDOW_SIZE]))} stride={x(map(str, f[WINDOW_STRIDE]))} "
                       f"pad={pads} lhs_dilate={x(map(str, f[BASE_DILATION]))} "
                       f"rhs_dilate={x(map(str, f[WIN_DILATION]))}}}")
        if CONV_DIMS in f:
            d = f[CONV_DIMS]

            def labels(rank: int, named: dict[int, str], spatial: list[int]) -> str:
                lab = ["?"] * rank
                for pos, c in named.items():
                    lab[pos] = c
                for k, pos in enumerate(spatial):
                    lab[pos] = str(k)
                return "".join(lab)

            inp = labels(4, {d[0]: "b", d[1]: "f"}, d[2:4])
            ker = labels(4, {d[6]: "i", d[7]: "o"}, d[8:10])
            outl = labels(4, {d[12]: "b", d[13]: "f"}, d[2:4])  # output spatial dims as the input's
            out.append(f"dim_labels={inp}_{ker}->{outl}")
        if SLICE_START in f:
            # the builder records only a slice's first two dims (their sum and product too), so
            # the text lists those: the features of the text are the builder's
            out.append("slice={" + ", ".join(f"[{s}:{lim}:{st}]" for s, lim, st in
                                             zip(f[SLICE_START], f[SLICE_LIMIT], f[SLICE_STRIDE])) + "}")
        if self.ops[i] == Op.REDUCE:
            out.append(f"to_apply=%{reducer}")
        if self.ops[i] == Op.WHILE and body is not None:
            out.append(f"body=%{body}")
        return out

    def to_text(self, name: str = "sample") -> str:
        """The module as HLO text that `pipeline.io.hlo.parse_hlo(text, edges="operands")` reads
        back into exactly `arrays()`, with node_splits `comp_starts + [N]`.

        A computation ends at each node flagged is_root (the reducers, each computation's
        result tuple); one that ends where `comp_starts` starts the next is named as a while
        body, so the dataset's split rule (after computations named like a loop) cuts there.
        The last computation is the ENTRY. Nodes are named `<opcode>.<index>`."""
        n = len(self.ops)
        operands: dict[int, list[int]] = {}
        users: dict[int, list[int]] = {}
        for u, v in self.edges:
            operands.setdefault(u, []).append(v)
            users.setdefault(v, []).append(u)
        ends = [i + 1 for i in range(n) if self.rows[i][IS_ROOT] > 0]
        if not ends or ends[-1] != n:
            raise ValueError("the module's last node must be a computation root")
        cuts = set(self.comp_starts[1:])
        lines, start, body, reducer = [f"HloModule {name}", ""], 0, None, None
        for k, end in enumerate(ends):
            entry = k == len(ends) - 1
            comp = "main" if entry else f"while_body.{k}" if end in cuts else f"region.{k}"
            reducer = reducer or comp
            params = [i for i in range(start, end) if self.ops[i] == Op.PARAMETER]
            sig = ", ".join(f"{OPCODE_NAMES[self.ops[p]]}.{p}: {self._shape_text(p, users, operands)}" for p in params)
            lines.append(f"{'ENTRY ' if entry else ''}%{comp} ({sig}) -> {self._shape_text(end - 1, users, operands)} {{")
            for i in range(start, end):
                op = OPCODE_NAMES[self.ops[i]]
                if self.ops[i] == Op.PARAMETER:
                    args = str(int(self.rows[i][PARAMETER_NUMBER_COL]))
                elif self.ops[i] == Op.CONSTANT:
                    args = "0"
                else:
                    args = ", ".join(f"%{OPCODE_NAMES[self.ops[v]]}.{v}" for v in operands.get(i, []))
                attrs = "".join(", " + a for a in self._attrs_text(i, reducer, body))
                root = "ROOT " if self.rows[i][IS_ROOT] > 0 else ""
                lines.append(f"  {root}%{op}.{i} = {self._shape_text(i, users, operands)} {op}({args}){attrs}")
            lines += ["}", ""]
            body = comp if end in cuts else body
            start = end
        return "\n".join(lines)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The module as the file's arrays: node_feat (N, 140) float32, node_opcode (N,) uint8,
        edge_index (E, 2) int64."""
        node_feat = np.stack(self.rows).astype(np.float32)
        node_opcode = np.asarray(self.ops, dtype=np.uint8)
        edge_index = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        return node_feat, node_opcode, edge_index


class Inputs:
    """Hands out a computation's inputs: parameters in the entry, tuple elements in a body."""

    def __init__(self, h: Hlo, tuple_param: bool):
        self.h, self.count = h, 0
        self.tup = h.param((), "tuple", 0) if tuple_param else None

    def __call__(self, shape, dtype: str, layout=None) -> int:
        """The next input of `shape` and `dtype`; return its node index."""
        self.count += 1
        if self.tup is None:
            return self.h.param(shape, dtype, self.count - 1, layout=layout)
        return self.h.gte(self.tup, shape, dtype, layout=layout)

    def close(self) -> None:
        """Record the size of a body's tuple parameter once every input is handed out."""
        if self.tup is not None:
            self.h.rows[self.tup][TUPLE_SIZE_COL] = self.count


def minor_swapped(rank: int) -> tuple[int, ...]:
    """A TPU-preferred non-row-major minor-to-major order: row-major with the two minor-most
    dims swapped."""
    desc = list(range(rank - 1, -1, -1))
    desc[0], desc[1] = desc[1], desc[0]
    return tuple(desc)


def weight_layout(rng: np.random.Generator, rank: int) -> tuple[int, ...] | None:
    """A weight's layout: the minor dims swapped for about one in five weights of rank >= 2
    (layout assignment leaves some so, and the cost model sees it), else None (row-major)."""
    return minor_swapped(rank) if rank >= 2 and rng.random() < 0.2 else None
