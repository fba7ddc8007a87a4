"""Generate the embedded sample dataset: a small TpuGraphs tree in the exact raw format.

    python -m pipeline.sample_data                          # data/raw/sample, all 5 collections
    python -m pipeline.sample_data out=/tmp/s graphs.train=2 collections=[tile:xla] splits=[train]
    python -m pipeline.sample_data out=data/raw/bench collections=[layout:nlp:random] \
        splits=[train] graphs.train=1 nodes=20000 config_nodes=1000 configs=100000   # full size

Reads nothing. Writes `<out>/tile/xla/{train,valid,test}/*.npz` and
`<out>/layout/{xla,nlp}/{default,random}/{train,valid,test}/*.npz` (docs/FORMAT.md), then the stamp
`<out>/.complete` last; a stale stamp is removed first, so the stamp exists only over a complete
tree. Beside the data (with `truth=true`, the default), `<out>/.truth/<collection dir>/<split>/<stem>.npy`
holds each train / valid graph's noiseless cost per config: float64 (C,) by config index, on
the scale of the file's target (layout: ns; tile: divided by the file's
`config_runtime_normalizers`). No stage reads it: `pipeline.io.catalog.discover` lists only
`<out>/<collection dir>/<split>/*.npz`; only `pipeline.report` looks there, for the noise
ceiling (the best score a ranking can reach under the measurement noise). Test graphs get none. The default tree builds in seconds; `nodes=`, `config_nodes=`, `configs=` make real-scale
files with memory bounded by `chunk` configs.

Invariants:
- Deterministic: the bytes depend on `seed` and the size knobs only, not on `chunk` (configs
  and noise come from a counter-based hash of their indices) nor on which other collections or
  splits are generated. The two searches of a source (layout:xla:default / :random) share
  their graphs and file names, with different configs, as in the real data.
- Graphs look like XLA programs (conv nets for xla, transformers for nlp, small fusions for
  tile): topological order, every edge [u, v] with u > v, node_feat columns as in the real
  files; the real dataset's opcode ids.
- Runtimes come from `pipeline.sample.costmodel`, a hidden analytical model of graph and config
  (padding, layout copies between producers and consumers, compute efficiency, tile count and
  on-chip spills) with ~1% log-normal noise; test runtimes are 0, test tile normalizers 1.
  Writing the noiseless cost (`.truth`) draws nothing: the `.npz` bytes are the same with
  `truth=false`.
- Duplicated configs (identical rows, slightly different runtimes) are common, as in the real
  data. Layout config groups follow the real files: reshapes name a full minor-to-major
  permutation, convolutions and dots of rank >= 3 only their two minor-most dims; all -1 is the
  compiler default.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig

from features.layout import LAYOUT0, NODE_FEAT_DIM, SHAPE0, SHAPE_COLS
from pipeline.core.progress import tqdm
from pipeline.io.catalog import SPLITS, check_collection, check_split, collection_dir, collection_kind, truth_path
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.io.npz import write_graph
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.sample.costmodel import (
    LayoutContext,
    Op,
    TileContext,
    hash_u01,
    layout_cost,
    measure,
    tile_cost,
)

log = logging.getLogger(__name__)

MARKER = ".sample_data"  # says the folder is a generated tree, so stale files may be removed

# node_feat columns (docs/FORMAT.md)
ETYPE_COL = {"pred": 3, "s32": 6, "u32": 10, "f32": 13, "bf16": 15, "tuple": 18}
EMPTY_PRODUCT_COLS = [44, 52, 60, 68, 76, 84, 112, 116, 120, 124, 128, 132]
WINDOW_SIZE, WINDOW_STRIDE, PAD_LOW, PAD_HIGH, WIN_DILATION, BASE_DILATION = 37, 45, 53, 61, 69, 77
WINDOW_FALSE_COUNT = 92
# convolution dim numbers: input batch, input feature, input spatial 0-3, kernel in feature,
# kernel out feature, kernel spatial 0-3, output batch, output feature
CONV_DIMS = 93
SLICE_START, SLICE_STRIDE, SLICE_LIMIT = 109, 113, 117

_SOURCE_ID = {"tile:xla": 0, "xla": 1, "nlp": 2}
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}
_SEARCH_ID = {"tile": 0, "default": 1, "random": 2}

# How each search draws a config group: p(all -1, the compiler default), p(the default written
# out), p(near the default: same minor-most dim, the rest permuted); the rest is uniform over
# every layout. Real default searches stay near the compiler's choice, so their spread is small.
SEARCH = {
    "default": (0.25, 0.60, 0.15),
    "random": (0.15, 0.0, 0.0),
}
# distinct-config pool as a fraction of the configs: a smaller pool means more duplicates
DUP_POOL = {"default": 0.7, "random": 2.0}


def _seq(*words: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(w) for w in words])


def _key(seq: np.random.SeedSequence, salt: int) -> int:
    return int(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, salt)).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------------------------
# HLO graph building


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

    def __len__(self) -> int:
        return len(self.ops)

    def add(self, opcode: int, shape: tuple[int, ...], dtype: str, operands: tuple[int, ...] = (),
            layout: tuple[int, ...] | None = None, root: bool = False) -> int:
        row = np.zeros(NODE_FEAT_DIM, dtype=np.float32)
        row[EMPTY_PRODUCT_COLS] = 1.0
        row[ETYPE_COL[dtype]] = 1.0
        shape = tuple(int(d) for d in shape)
        r = len(shape)
        row[SHAPE0 : SHAPE0 + r] = shape
        row[27] = sum(shape)
        row[28] = math.prod(shape)
        if layout is None:
            layout = tuple(range(r - 1, -1, -1))  # XLA's default: row-major
        if r:
            row[LAYOUT0 : LAYOUT0 + r] = layout
        row[0] = float(root)
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
        self.rows[i][col : col + len(values)] = values
        if with_sum_product:
            n = 6 if col < 109 else 2
            self.rows[i][col + n] = sum(values)
            self.rows[i][col + n + 1] = math.prod(values)

    def shape(self, i: int) -> tuple[int, ...]:
        return self.shapes[i]

    # -- common node kinds ------------------------------------------------------------------

    def param(self, shape, dtype, number: int, layout=None) -> int:
        i = self.add(Op.PARAMETER, shape, dtype, layout=layout)
        self.rows[i][30] = number
        return i

    def constant(self, dtype: str, shape=()) -> int:
        return self.add(Op.CONSTANT, shape, dtype)

    def broadcast(self, operand: int, shape, dims: list[int]) -> int:
        i = self.add(Op.BROADCAST, shape, self.dtypes[operand], (operand,))
        self.set_dims(i, 31, dims)
        return i

    def scalar_broadcast(self, x: int, dtype: str | None = None) -> int:
        return self.broadcast(self.constant(dtype or self.dtypes[x]), self.shape(x), [])

    def eltwise(self, opcode: int, *operands: int, dtype: str | None = None) -> int:
        a = operands[0]
        return self.add(opcode, self.shape(a), dtype or self.dtypes[a], operands, layout=self.layouts[a])

    def tuple_(self, operands: list[int], root: bool = False) -> int:
        i = self.add(Op.TUPLE, (), "tuple", tuple(operands), root=root)
        self.rows[i][29] = len(operands)
        return i

    def gte(self, tup: int, shape, dtype, layout=None) -> int:
        # the element's index is not a node feature
        return self.add(Op.GET_TUPLE_ELEMENT, shape, dtype, (tup,), layout=layout)

    def reduce(self, x: int, dims: list[int], dtype: str = "f32") -> int:
        init = self.constant(dtype)
        shape = tuple(d for k, d in enumerate(self.shape(x)) if k not in dims)
        i = self.add(Op.REDUCE, shape, dtype, (x, init))
        self.set_dims(i, 31, dims)
        return i

    def transpose(self, x: int, perm: list[int]) -> int:
        shape = tuple(self.shape(x)[p] for p in perm)
        i = self.add(Op.TRANSPOSE, shape, self.dtypes[x], (x,))
        self.set_dims(i, 31, perm)
        return i

    def reshape(self, x: int, shape) -> int:
        assert math.prod(shape) == math.prod(self.shape(x)), (shape, self.shape(x))
        return self.add(Op.RESHAPE, shape, self.dtypes[x], (x,))

    def convert(self, x: int, dtype: str) -> int:
        return self.eltwise(Op.CONVERT, x, dtype=dtype)

    def dot(self, lhs: int, rhs: int) -> int:
        """lhs (..., M, K) x rhs (..., K, N) -> (..., M, N); the cost model assumes this convention."""
        a, b = self.shape(lhs), self.shape(rhs)
        assert a[-1] == b[-2] and a[:-2] == b[:-2], (a, b)
        return self.add(Op.DOT, (*a[:-1], b[-1]), self.dtypes[lhs], (lhs, rhs))

    def conv(self, x: int, w: int, stride: int) -> int:
        """NHWC input, HWIO kernel, NHWC output, 'same' padding."""
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
        self.rows[i][107] = 1  # feature_group_count
        self.rows[i][108] = 1  # batch_group_count
        return i

    def slice_(self, x: int, limits: list[int]) -> int:
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
        """About n more nodes of same-shape elementwise work on x (bias, scale, clamp, mask)."""
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

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        self.count += 1
        if self.tup is None:
            return self.h.param(shape, dtype, self.count - 1, layout=layout)
        return self.h.gte(self.tup, shape, dtype, layout=layout)

    def close(self) -> None:
        if self.tup is not None:
            self.h.rows[self.tup][29] = self.count


def _minor_swapped(rank: int) -> tuple[int, ...]:
    """A TPU-preferred non-row-major layout: the two minor-most dims swapped."""
    desc = list(range(rank - 1, -1, -1))
    desc[0], desc[1] = desc[1], desc[0]
    return tuple(desc)


def _weight_layout(rng: np.random.Generator, rank: int) -> tuple[int, ...] | None:
    # layout assignment leaves some weights in a non-default layout; the cost model sees it
    return _minor_swapped(rank) if rank >= 2 and rng.random() < 0.2 else None


# --------------------------------------------------------------------------------------------
# layout graphs


@dataclass
class LayoutGraph:
    name: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    node_config_ids: np.ndarray
    node_splits: np.ndarray


def _conv_block(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator, fill: int) -> int:
    n, hh, ww, c = h.shape(x)
    cout = int(rng.choice([16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]))
    k = int(rng.choice([1, 3, 3, 3, 5, 7]))
    stride = 2 if hh >= 8 and rng.random() < 0.25 else 1
    w = inp((k, k, c, cout), "bf16", layout=_weight_layout(rng, 4))
    y = h.conv(x, w, stride)
    bias = inp((cout,), "bf16")
    y = h.eltwise(Op.ADD, y, h.broadcast(bias, h.shape(y), [3]))
    if rng.random() < 0.5:  # batch norm in f32
        yf = h.convert(y, "f32")
        mean, var = inp((cout,), "f32"), inp((cout,), "f32")
        yf = h.eltwise(Op.SUBTRACT, yf, h.broadcast(mean, h.shape(y), [3]))
        inv = h.add(Op.RSQRT, (cout,), "f32", (var,))
        yf = h.eltwise(Op.MULTIPLY, yf, h.broadcast(inv, h.shape(y), [3]))
        y = h.convert(yf, "bf16")
    y = h.eltwise(Op.MAXIMUM, y, h.scalar_broadcast(y))  # relu
    return h.filler(y, fill, rng)


def _dot_block(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator, fill: int) -> int:
    """A 1x1 convolution written as reshape -> dot -> reshape, as XLA often emits it."""
    n, hh, ww, c = h.shape(x)
    cout = int(rng.choice([32, 64, 100, 128, 192, 256, 320]))
    flat = h.reshape(x, (n, hh * ww, c)) if rng.random() < 0.5 else h.reshape(x, (n * hh * ww, c))
    if len(h.shape(flat)) == 3:
        w = inp((n, c, cout), "bf16")  # batched weights keep the dot convention simple
    else:
        w = inp((c, cout), "bf16", layout=_weight_layout(rng, 2))
    y = h.dot(flat, w)
    y = h.eltwise(Op.MAXIMUM, y, h.scalar_broadcast(y))
    y = h.filler(y, fill // 2, rng)
    y = h.reshape(y, (n, hh, ww, cout))
    return h.filler(y, fill - fill // 2, rng)


def _residual(h: Hlo, x: int, skip: int, rng: np.random.Generator, fill: int) -> int:
    y = h.eltwise(Op.ADD, x, skip)
    return h.filler(y, fill, rng)


def _conv_head(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator) -> list[int]:
    n, hh, ww, c = h.shape(x)
    pooled = h.reduce(h.convert(x, "f32"), [1, 2])  # global average pool
    pooled = h.eltwise(Op.DIVIDE, pooled, h.scalar_broadcast(pooled))
    feats = h.convert(pooled, "bf16")
    classes = int(rng.choice([10, 91, 100, 1000, 1001]))
    logits = h.dot(feats, inp((c, classes), "bf16", layout=_weight_layout(rng, 2)))
    logits = h.eltwise(Op.ADD, logits, h.broadcast(inp((classes,), "bf16"), h.shape(logits), [1]))
    out = [logits]
    if rng.random() < 0.5:
        out.append(h.reshape(logits, (n, 1, classes)))
    return out


def _conv_body(h: Hlo, inp: Inputs, rng: np.random.Generator, x: int, blocks: int, fill: int, need: int) -> int:
    """At least `blocks` blocks, and more until the module has `need` candidate nodes."""
    skip, done = None, 0
    while done < blocks or len(h.candidates) < need:
        u = rng.random()
        if u < 0.15 and skip is not None and h.shape(skip) == h.shape(x):
            x = _residual(h, x, skip, rng, fill)
        elif u < 0.35:
            x = _dot_block(h, inp, x, rng, fill)
        else:
            skip = x
            x = _conv_block(h, inp, x, rng, fill)
        done += 1
    return x


def _attention_layer(h: Hlo, inp: Inputs, x: int, heads: int, rng: np.random.Generator, fill: int) -> int:
    b, s, hid = h.shape(x)
    dh = hid // heads
    x2 = h.reshape(x, (b * s, hid))

    def proj(t: int, n_out: int) -> int:
        w = inp((h.shape(t)[-1], n_out), "bf16", layout=_weight_layout(rng, 2))
        y = h.dot(t, w)
        return h.eltwise(Op.ADD, y, h.broadcast(inp((n_out,), "bf16"), h.shape(y), [1]))

    q = h.transpose(h.reshape(proj(x2, hid), (b, s, heads, dh)), [0, 2, 1, 3])   # (b, heads, s, dh)
    k = h.transpose(h.reshape(proj(x2, hid), (b, s, heads, dh)), [0, 2, 3, 1])   # (b, heads, dh, s)
    v = h.transpose(h.reshape(proj(x2, hid), (b, s, heads, dh)), [0, 2, 1, 3])   # (b, heads, s, dh)
    scores = h.dot(q, k)                                                            # (b, heads, s, s)
    scores = h.eltwise(Op.MULTIPLY, scores, h.scalar_broadcast(scores))
    mask = h.broadcast(inp((b, s), "pred"), h.shape(scores), [0, 3])
    scores = h.eltwise(Op.SELECT, mask, scores, h.scalar_broadcast(scores), dtype=h.dtypes[scores])
    sf = h.convert(scores, "f32")
    mx = h.reduce(sf, [3])
    sf = h.eltwise(Op.SUBTRACT, sf, h.broadcast(mx, h.shape(sf), [0, 1, 2]))
    sf = h.eltwise(Op.EXPONENTIAL, sf)
    den = h.reduce(sf, [3])
    sf = h.eltwise(Op.DIVIDE, sf, h.broadcast(den, h.shape(sf), [0, 1, 2]))
    probs = h.convert(sf, "bf16")
    ctx = h.dot(probs, v)                                                           # (b, heads, s, dh)
    ctx = h.reshape(h.transpose(ctx, [0, 2, 1, 3]), (b * s, hid))
    out = h.reshape(proj(ctx, hid), (b, s, hid))
    x = _layer_norm(h, inp, h.eltwise(Op.ADD, out, x))
    # feed-forward
    ff = 4 * hid if rng.random() < 0.8 else 3 * hid
    y = proj(h.reshape(x, (b * s, hid)), ff)
    g = h.eltwise(Op.TANH, h.eltwise(Op.MULTIPLY, y, h.scalar_broadcast(y)))        # gelu (tanh form)
    y = h.eltwise(Op.MULTIPLY, y, h.eltwise(Op.ADD, g, h.scalar_broadcast(g)))
    y = h.filler(y, fill, rng)
    y = h.reshape(proj(y, hid), (b, s, hid))
    return _layer_norm(h, inp, h.eltwise(Op.ADD, y, x))


def _layer_norm(h: Hlo, inp: Inputs, x: int) -> int:
    b, s, hid = h.shape(x)
    xf = h.convert(x, "f32")
    mean = h.reduce(xf, [2])
    xc = h.eltwise(Op.SUBTRACT, xf, h.broadcast(mean, h.shape(xf), [0, 1]))
    var = h.reduce(h.eltwise(Op.MULTIPLY, xc, xc), [2])
    inv = h.add(Op.RSQRT, h.shape(var), "f32", (var,))
    y = h.eltwise(Op.MULTIPLY, xc, h.broadcast(inv, h.shape(xf), [0, 1]))
    y = h.eltwise(Op.MULTIPLY, y, h.broadcast(inp((hid,), "f32"), h.shape(xf), [2]))
    y = h.eltwise(Op.ADD, y, h.broadcast(inp((hid,), "f32"), h.shape(xf), [2]))
    return h.convert(y, "bf16")


def _transformer_head(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator) -> list[int]:
    b, s, hid = h.shape(x)
    cls = h.reshape(h.slice_(x, [b, 1, hid]), (b, hid))
    classes = int(rng.choice([2, 3, 5, 1000]))
    pooled = h.eltwise(Op.TANH, h.dot(cls, inp((hid, hid), "bf16")))
    return [h.dot(pooled, inp((hid, classes), "bf16")), x]


XLA_FAMILIES = ["resnet_v1_50_official", "resnet_v2_101", "inception_v3", "efficientnet_b4", "mobilenet_v2",
                "mask_rcnn_resnet50", "retinanet_resnet50", "unet3d", "densenet121", "mnasnet_a1", "vgg16",
                "shapemask", "resnet50.4x4.fp16", "inception_v4"]
NLP_FAMILIES = ["bert_en_uncased", "bert_multi_cased", "small_bert_bert_en_uncased", "albert_en", "electra",
                "talking-heads", "experts_wiki_books", "mobilebert_en_uncased", "lambert_en_uncased"]


def build_layout_graph(source: str, rng: np.random.Generator, n_target: int, nc_target: int,
                       fill: int = 0, fill_rng: np.random.Generator | None = None) -> tuple[Hlo, str]:
    """One xla (conv net) or nlp (transformer) module, grown until it has `nc_target` candidate
    configurable nodes; `fill` elementwise nodes per block pad it towards `n_target`."""
    h = Hlo()
    fill_rng = fill_rng or np.random.default_rng(0)
    h.comp_starts.append(0)
    h.reducer(Op.ADD)
    h.reducer(Op.MAXIMUM)
    comps = int(rng.integers(1, 4))
    if source == "xla":
        batch = int(rng.choice([1, 2, 8, 16, 32, 128]))
        size = int(rng.choice([7, 14, 17, 28, 32, 35, 56, 64]))
        chans = int(rng.choice([3, 16, 32, 64]))
        per_block, head = 1.2, 1  # candidates per block and in the head, for planning
        name = f"{rng.choice(XLA_FAMILIES)}_batch_{batch}_{rng.choice(['train', 'eval', 'inference'])}"
    else:
        batch = int(rng.choice([1, 2, 4, 8, 16, 32]))
        seq = int(rng.choice([16, 32, 64, 128, 256, 384, 512]))
        heads = int(rng.choice([2, 4, 8, 12, 16]))
        hid = heads * int(rng.choice([32, 64, 96]))
        per_block, head = 16.0, 3
        name = f"{rng.choice(NLP_FAMILIES)}_L-{{}}_H-{hid}_A-{heads}_batch_size_{batch}_{rng.choice(['train', 'test'])}"
    blocks_total = max(comps, math.ceil(nc_target / per_block))
    per_comp = [blocks_total // comps + (k < blocks_total % comps) for k in range(comps)]
    x_shape = (batch, size, size, chans) if source == "xla" else (batch, seq, hid)
    layers = 0
    for k, nblocks in enumerate(per_comp):
        entry = k == comps - 1
        need = nc_target - head if entry else 0
        if k:
            h.comp_starts.append(len(h))
        inp = Inputs(h, tuple_param=not entry)
        x = inp(x_shape, "bf16")
        if entry and comps > 1:
            # the entry runs the other computations in a loop; their results come back as tuple elements
            loop = h.add(Op.WHILE, (), "tuple", (h.tuple_([x, inp((), "s32")]),))
            h.rows[loop][29] = 2
            x = h.gte(loop, x_shape, "bf16")
        if source == "xla":
            x = _conv_body(h, inp, rng, x, nblocks, fill, need)
            outs = _conv_head(h, inp, x, rng) if entry else [x]
        else:
            done = 0
            while done < nblocks or len(h.candidates) < need:
                x = _attention_layer(h, inp, x, heads, rng, fill)
                done += 1
            layers += done
            outs = _transformer_head(h, inp, x, rng) if entry else [x]
        if entry and len(h) < n_target - 1:
            outs[0] = h.filler(outs[0], n_target - 1 - len(h), fill_rng)
        inp.close()
        h.tuple_(outs, root=True)
        x_shape = h.shape(x)
    return h, name.format(layers) if source == "nlp" else name


def make_layout_graph(source: str, seq: np.random.SeedSequence, n_target: int, nc_target: int) -> LayoutGraph:
    """Build a graph near `n_target` nodes with exactly min(nc_target, candidates) configurable nodes."""
    h0, _ = build_layout_graph(source, np.random.default_rng(seq), 0, nc_target)  # measures the bare blocks
    blocks = max(1, len(h0.candidates) / (16.0 if source == "nlp" else 1.2))
    fill = max(0, int((n_target - len(h0)) / blocks))
    h, name = build_layout_graph(source, np.random.default_rng(seq), n_target, nc_target, fill,
                                 np.random.default_rng(_seq(*seq.entropy, 99)))
    rng = np.random.default_rng(_seq(*seq.entropy, 98))
    cand = np.asarray(h.candidates, dtype=np.int64)
    ops = np.asarray(h.ops)[cand]
    # real files make every convolution and dot configurable, and most reshapes
    prio = np.where(ops == Op.RESHAPE, 1.0, 0.0) + rng.random(cand.size) * 0.5
    keep = np.sort(cand[np.argsort(prio, kind="stable")[:nc_target]])
    node_feat, node_opcode, edge_index = h.arrays()
    n = node_feat.shape[0]
    splits = np.asarray([h.comp_starts + [n]], dtype=np.int64)
    return LayoutGraph(name, node_feat, node_opcode, edge_index, keep, splits)


@dataclass
class ConfigSpace:
    """Per configurable node and group (output, input, kernel): the layouts a search may pick."""

    table: np.ndarray        # (NC, 3, K, 6) float32; index 0 = all -1 (compiler default)
    count: np.ndarray        # (NC, 3) valid entries per group
    default_idx: np.ndarray  # (NC, 3) the explicit default layout
    near_lo: np.ndarray      # (NC, 3) first layout with the default's minor-most dim (they are contiguous)
    near_count: np.ndarray   # (NC, 3) how many such layouts

    @classmethod
    def of(cls, g: LayoutGraph) -> "ConfigSpace":
        n = g.node_feat.shape[0]
        operands: dict[int, list[int]] = {}
        for u, v in g.edge_index.tolist():
            operands.setdefault(u, []).append(v)
        entries: list[list[list[tuple[int, ...]]]] = []
        dflt, near_lo, near_n = [], [], []
        for i in g.node_config_ids.tolist():
            op = int(g.node_opcode[i])
            slots = [i] + operands.get(i, [])[: 2 if op in (Op.CONVOLUTION, Op.DOT) else 1]
            node_entries, nd, nl, nn = [], [], [], []
            for s in range(3):
                opts: list[tuple[int, ...]] = [()]
                di, lo, cnt = 0, 0, 1
                if s < len(slots) and 0 <= slots[s] < n:
                    row = g.node_feat[slots[s]]
                    r = int((row[SHAPE_COLS] > 0).sum())
                    length = r if op == Op.RESHAPE else min(r, 2)
                    if length:
                        # lexicographic: the layouts sharing a minor-most dim are contiguous
                        opts += list(itertools.permutations(range(r), length))
                        m2m = tuple(int(v) for v in row[LAYOUT0 : LAYOUT0 + r])
                        di = opts.index(m2m[:length])
                        cnt = (len(opts) - 1) // r
                        lo = 1 + m2m[0] * cnt
                node_entries.append(opts)
                nd.append(di)
                nl.append(lo)
                nn.append(cnt)
            entries.append(node_entries)
            dflt.append(nd)
            near_lo.append(nl)
            near_n.append(nn)
        nc = len(entries)
        kmax = max([len(o) for e in entries for o in e] + [1])
        table = np.full((nc, 3, kmax, 6), -1.0, dtype=np.float32)
        count = np.ones((nc, 3), dtype=np.int64)
        for j, e in enumerate(entries):
            for s, opts in enumerate(e):
                count[j, s] = len(opts)
                for k, t in enumerate(opts):
                    table[j, s, k, : len(t)] = t
        def arr(x: list) -> np.ndarray:
            return np.asarray(x, dtype=np.int64).reshape(nc, 3)

        return cls(table, count, arr(dflt), arr(near_lo), arr(near_n))

    def configs(self, key: int, distinct: np.ndarray, search: str) -> np.ndarray:
        """(B, NC, 18) float32 rows of the distinct configs `distinct` (B,) of a search."""
        nc = self.count.shape[0]
        j = np.arange(nc)[None, :, None]
        s = np.arange(3)[None, None, :]
        d = distinct[:, None, None]
        u = hash_u01(key, d, j, s, 0)
        v = hash_u01(key, d, j, s, 1)
        pick = np.where(self.count > 1, 1 + np.floor(v * (self.count - 1)).astype(np.int64), 0)
        near = np.where(self.count > 1, self.near_lo + np.floor(v * self.near_count).astype(np.int64), 0)
        p_unset, p_default, p_near = SEARCH[search]
        choice = np.where(u < p_unset + p_default + p_near, near, pick)
        choice = np.where(u < p_unset + p_default, self.default_idx, choice)
        choice = np.where(u < p_unset, 0, choice)
        rows = self.table[j, s, choice]  # (B, NC, 3, 6)
        return rows.reshape(distinct.size, nc, 18)


# --------------------------------------------------------------------------------------------
# tile graphs


TILE_BENCHMARKS = ["resnet50.4x4.fp16", "retinanet.2x2.fp32", "mask_rcnn.8x8.bf16", "bert_pretraining.4x4.fp16",
                   "transformer.4x4.fp32", "unet_3d.4x4.bf16", "inception_v3.8x8.fp16", "efficientnet_b0.4x4.bf16",
                   "shapemask.4x4.fp32", "mnasnet_a1.2x2.fp32", "dlrm.4x4.bf16", "ncf.2x2.fp32"]
TILE_DIMS = [1, 2, 3, 7, 8, 14, 16, 28, 32, 49, 56, 64, 96, 100, 128, 196, 256, 384, 512, 768, 1000, 1024, 2048]


def build_tile_graph(rng: np.random.Generator, n_target: int) -> Hlo:
    """A fused kernel: operands, a convolution / dot / reduction core or none, elementwise work,
    the root (its output is what a tile config tiles)."""
    h = Hlo()
    dtype = str(rng.choice(["bf16", "f32"]))
    kind = rng.choice(["elementwise", "reduce", "dot", "conv"], p=[0.4, 0.2, 0.25, 0.15])
    pnum = itertools.count()
    if kind == "dot":
        m, k, n = (int(rng.choice(TILE_DIMS[4:])) for _ in range(3))
        x = h.dot(h.param((m, k), dtype, next(pnum)), h.param((k, n), dtype, next(pnum)))
    elif kind == "conv":
        b, s = int(rng.choice([1, 8, 32, 128])), int(rng.choice([7, 14, 28, 56]))
        c, cout, kk = int(rng.choice([3, 32, 64, 128])), int(rng.choice([32, 64, 128, 256])), int(rng.choice([1, 3]))
        x = h.conv(h.param((b, s, s, c), dtype, next(pnum)), h.param((kk, kk, c, cout), dtype, next(pnum)), 1)
    else:
        rank = int(rng.integers(1, 5))
        shape = tuple(int(rng.choice(TILE_DIMS)) for _ in range(rank))
        while math.prod(shape) > 1 << 25:
            shape = shape[1:]
        if kind == "reduce":
            full = (*shape, int(rng.choice(TILE_DIMS[3:])))
            x = h.reduce(h.param(full, "f32", next(pnum)), [len(full) - 1])
        else:
            x = h.param(shape, dtype, next(pnum))
    r = len(h.shape(x))  # elementwise work keeps the shape from here on
    copy_root = r >= 2 and rng.random() < 0.2  # the kernel writes its output in a non-default layout
    stop = max(n_target - copy_root, 3)
    while len(h) < stop:
        u = rng.random() if stop - len(h) >= 3 else 0.6  # near the end: one-node ops only
        if u < 0.35:
            x = h.eltwise(int(rng.choice([Op.ADD, Op.MULTIPLY, Op.SUBTRACT, Op.MAXIMUM])), x,
                          h.param(h.shape(x), h.dtypes[x], next(pnum)))
        elif u < 0.55 and len(h.shape(x)) >= 1:
            last = len(h.shape(x)) - 1
            b = h.param((h.shape(x)[last],), h.dtypes[x], next(pnum))
            x = h.eltwise(Op.ADD, x, h.broadcast(b, h.shape(x), [last]))
        elif u < 0.7:
            x = h.eltwise(int(rng.choice([Op.EXPONENTIAL, Op.TANH, Op.NEGATE, Op.RSQRT])), x)
        elif u < 0.8:
            x = h.convert(x, "f32" if h.dtypes[x] == "bf16" else "bf16")
        else:
            x = h.eltwise(Op.MAXIMUM, x, h.scalar_broadcast(x))
    if copy_root:
        h.add(Op.COPY, h.shape(x), h.dtypes[x], (x,), layout=_minor_swapped(r), root=True)
    else:
        h.rows[x][0] = 1.0  # is_root
    return h


def tile_configs(rng: np.random.Generator, dims: tuple[int, ...], minor: int, second: int,
                 n_configs: int) -> tuple[np.ndarray, int]:
    """(C, 24) tile configs and the index of the compiler's default tile among them."""
    r = len(dims)
    cands = [sorted({min(d, 1 << k) for k in range(12)} | {d}) for d in dims]
    pool_size = max(2, int(n_configs * rng.uniform(0.4, 1.0)))
    pool = np.empty((pool_size, r), dtype=np.int64)
    for i, c in enumerate(cands):
        a, b = rng.integers(len(c), size=(2, pool_size))
        # the searcher favours wide minor tiles and thin major ones
        pick = np.maximum(a, b) if i in (minor, second) else np.minimum(a, b)
        pool[:, i] = np.asarray(c)[pick]
    tiles = pool[rng.integers(pool_size, size=n_configs)]
    default = np.ones(r, dtype=np.int64)
    default[minor] = min(dims[minor], 128)
    if second >= 0:
        default[second] = min(dims[second], 8)
    at = int(rng.integers(n_configs))
    tiles[at] = default
    d = np.asarray(dims, dtype=np.int64)
    bounds = -(-d // tiles)
    feat = np.zeros((n_configs, 24), dtype=np.float32)
    feat[:, :r] = bounds
    feat[:, 6] = bounds.sum(1)
    feat[:, 7] = bounds.prod(1)
    feat[:, 8 : 8 + r] = tiles
    feat[:, 14] = tiles.sum(1)
    feat[:, 15] = tiles.prod(1)
    return feat, at


# --------------------------------------------------------------------------------------------
# files


def _hex(seq: np.random.SeedSequence, salt: int, nbytes: int) -> str:
    words = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, salt)).generate_state(nbytes // 4)
    return "".join(f"{int(w):08x}" for w in words)


def _write_truth(cfg: DictConfig, out: Path, collection: str, split: str, stem: str, cost: np.ndarray) -> None:
    """Write a graph's (C,) noiseless cost atomically (train and valid only, with `truth`)."""
    if not cfg.truth or split == "test":
        return
    with atomic_path(truth_path(out, collection, split, stem)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(cost, dtype=np.float64), allow_pickle=False)


def _range(cfg: DictConfig, source: str, key: str, rng: np.random.Generator) -> int:
    lo, hi = cfg.sizes[source][key]
    return int(rng.integers(lo, hi + 1))


def write_tile(cfg: DictConfig, split: str, index: int, out: Path, used: set[str]) -> Path:
    seq = _seq(cfg.seed, _SOURCE_ID["tile:xla"], _SPLIT_ID[split], index)
    rng = np.random.default_rng(seq)
    h = build_tile_graph(rng, _range(cfg, "tile", "nodes", rng))
    node_feat, node_opcode, edge_index = h.arrays()
    ctx = TileContext.from_arrays(node_feat, node_opcode, edge_index)
    root = len(h) - 1
    lay = h.layouts[root]
    feat, at = tile_configs(rng, h.shape(root), lay[0], lay[1] if len(lay) >= 2 else -1,
                            _range(cfg, "tile", "configs", rng))
    c = feat.shape[0]
    if split == "test":
        runtime, norm = np.zeros(c, dtype=np.int64), np.ones(c, dtype=np.int64)
        name = _hex(seq, 1, 16)
        cost = None
    else:
        cost = tile_cost(ctx, feat)
        runtime = measure(cost, _key(seq, 2), np.arange(c), cfg.noise)
        norm = np.full(c, runtime[at], dtype=np.int64)
        name = f"{rng.choice(TILE_BENCHMARKS)}_{'-' if rng.random() < 0.5 else ''}{_hex(seq, 1, 8)}"
    name = _unique(name, used)
    path = out / collection_dir("tile:xla") / split / f"{name}.npz"
    write_graph(path, {"node_feat": node_feat, "node_opcode": node_opcode, "edge_index": edge_index,
                       "config_feat": feat, "config_runtime": runtime, "config_runtime_normalizers": norm})
    if cost is not None:
        _write_truth(cfg, out, "tile:xla", split, name, cost / float(norm[0]))  # the target's scale
    return path


def _unique(name: str, used: set[str]) -> str:
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def layout_sizes(cfg: DictConfig, source: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """(nodes, configurable nodes, configs) of one graph: the fixed knobs, else drawn."""
    nodes = cfg.nodes if cfg.nodes is not None else _range(cfg, source, "nodes", rng)
    lo, hi = cfg.sizes[source]["config_nodes"]
    drawn = int(np.clip(round(nodes * rng.uniform(0.03, 0.12)), lo, hi))
    nc = cfg.config_nodes if cfg.config_nodes is not None else drawn
    configs = cfg.configs if cfg.configs is not None else _range(cfg, source, "configs", rng)
    return int(nodes), int(nc), int(configs)


def write_layout(cfg: DictConfig, collection: str, split: str, index: int, out: Path, used: set[str],
                 progress: bool = False) -> Path:
    _, source, search = collection.split(":")
    gseq = _seq(cfg.seed, _SOURCE_ID[source], _SPLIT_ID[split], index)
    n_target, nc_target, n_configs = layout_sizes(cfg, source, np.random.default_rng(_seq(*gseq.entropy, 97)))
    g = make_layout_graph(source, gseq, n_target, nc_target)
    name = _hex(gseq, 1, 16) if split == "test" else g.name
    name = _unique(name, used)
    space = ConfigSpace.of(g)
    nc = g.node_config_ids.size
    cseq = _seq(cfg.seed, _SOURCE_ID[source], _SPLIT_ID[split], index, _SEARCH_ID[search])
    choice_key, dup_key, noise_key = _key(cseq, 1), _key(cseq, 2), _key(cseq, 3)
    pool = max(1, int(round(n_configs * DUP_POOL[search])))
    chunk = max(1, int(cfg.chunk))

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n_configs, chunk):
            idx = np.arange(start, min(n_configs, start + chunk))
            distinct = np.floor(hash_u01(dup_key, idx) * pool).astype(np.int64)
            yield idx, space.configs(choice_key, distinct, search)

    # Two passes: the runtimes are written before node_config_feat, and regenerating the configs
    # (a pure function of their indices) is cheaper than holding GBs of them in between.
    runtime = np.zeros(n_configs, dtype=np.int64)
    cost = np.zeros(n_configs, dtype=np.float64)
    bars = {"leave": False, "disable": not progress, "mininterval": 2.0, "unit": "cfg", "total": n_configs}
    if split != "test":
        ctx = LayoutContext.from_arrays(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids)
        bar = tqdm(desc="  runtimes", **bars)
        for idx, rows in chunks():
            c = layout_cost(ctx, rows)
            cost[idx] = c
            runtime[idx] = measure(c, noise_key, idx, cfg.noise)
            bar.update(idx.size)
        bar.close()
    path = out / collection_dir(collection) / split / f"{name}.npz"
    bar = tqdm(desc="  writing", **bars)

    def rows_only() -> Iterator[np.ndarray]:
        for idx, rows in chunks():
            bar.update(idx.size)
            yield rows

    write_graph(path, {"node_feat": g.node_feat, "node_opcode": g.node_opcode, "edge_index": g.edge_index,
                       "node_config_ids": g.node_config_ids, "node_splits": g.node_splits,
                       "config_runtime": runtime},
                node_config_feat_chunks=rows_only(), node_config_feat_shape=(n_configs, nc, 18))
    bar.close()
    _write_truth(cfg, out, collection, split, name, cost)
    return path


def _prepare(out: Path) -> None:
    """Drop the stamp; refuse a folder that holds npz files this stage did not write."""
    begin_stage(out)
    if not (out / MARKER).exists():
        if next(out.rglob("*.npz"), None) is not None:
            raise DataError(out, f"holds .npz files but no {MARKER} marker: not a generated sample tree, "
                                 "refusing to write into it")
        (out / MARKER).write_text("written by pipeline.sample_data; its stale .npz files may be removed\n")


def generate(cfg: DictConfig) -> dict[str, object]:
    """Write the tree `cfg` describes; return a summary {files, bytes, seconds, out}."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    collections = [check_collection(c) for c in cfg.collections]
    splits = [check_split(s) for s in cfg.splits]
    _prepare(out)
    jobs = []
    for c in collections:
        scale = int(cfg.tile_scale) if collection_kind(c) == "tile" else 1
        for s in splits:
            jobs.extend((c, s, i) for i in range(int(cfg.graphs[s]) * scale))
    big = cfg.configs is not None and int(cfg.configs) > 20 * int(cfg.chunk)
    written: dict[tuple[str, str], set[Path]] = {(c, s): set() for c in collections for s in splits}
    used: dict[tuple[str, str], set[str]] = {}
    for c, s, i in tqdm(jobs, desc="sample_data", unit="file"):
        names = used.setdefault((c, s), set())
        if collection_kind(c) == "tile":
            p = write_tile(cfg, s, i, out, names)
        else:
            p = write_layout(cfg, c, s, i, out, names, progress=big)
        written[(c, s)].add(p)
    stale = 0
    for (c, s), paths in written.items():
        for p in (out / collection_dir(c) / s).glob("*.npz"):
            if p not in paths:
                p.unlink()
                stale += 1
        truths = {truth_path(out, c, s, p.stem) for p in paths} if cfg.truth and s != "test" else set()
        for p in truth_path(out, c, s, "-").parent.glob("*.npy"):
            if p not in truths:
                p.unlink()
    nbytes = sum(p.stat().st_size for ps in written.values() for p in ps)
    files = sum(len(ps) for ps in written.values())
    finish_stage(out, {"files": files, "bytes": nbytes})
    secs = time.perf_counter() - t0
    log.info("wrote %d files (%.1f MB) for %s / %s under %s in %.1f s%s", files, nbytes / 1e6,
             ",".join(collections), ",".join(splits), out, secs,
             f"; removed {stale} stale files" if stale else "")
    return {"files": files, "bytes": nbytes, "seconds": secs, "out": str(out)}


@stage("sample_data")
def main(cfg: DictConfig) -> dict[str, object]:
    return generate(cfg)


if __name__ == "__main__":
    main()
