"""The synthetic HLO programs of the sample: conv nets (xla), transformers (nlp), fused kernels (tile).

A layout graph is one module of up to three computations (the entry runs the others in a
while loop), grown block by block until it has enough convolutions, dots and reshapes to make
the requested number of configurable nodes, then padded with elementwise work towards the
requested node count. A tile graph is a single fused kernel whose root's output
is what a tile config tiles. Every draw comes from the generator given, so a graph is a pure
function of its seed sequence (`pipeline.sample.seeds`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from pipeline.sample.costmodel import IS_ROOT, Op
from pipeline.sample.hlo import TUPLE_SIZE_COL, Hlo, Inputs, minor_swapped, weight_layout
from pipeline.sample.seeds import seed_seq


@dataclass
class LayoutGraph:
    """A layout graph's arrays as the file holds them, and its name."""

    name: str
    node_feat: np.ndarray        # (N, 140) float32
    node_opcode: np.ndarray      # (N,) uint8
    edge_index: np.ndarray       # (E, 2) int64, [consumer, operand]
    node_config_ids: np.ndarray  # (NC,) int64, ascending
    node_splits: np.ndarray      # (1, computations + 1) int64: each computation's first node, then N


def _conv_block(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator, fill: int) -> int:
    """Convolution, bias, an f32 batch norm half the time, relu and `fill` more elementwise
    nodes on the NHWC x; return the block's output."""
    n, hh, ww, c = h.shape(x)
    cout = int(rng.choice([16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]))
    k = int(rng.choice([1, 3, 3, 3, 5, 7]))
    stride = 2 if hh >= 8 and rng.random() < 0.25 else 1
    w = inp((k, k, c, cout), "bf16", layout=weight_layout(rng, 4))
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
    """A 1x1 convolution written as reshape -> dot -> reshape, as XLA often emits it, on the
    NHWC x; return the block's NHWC output."""
    n, hh, ww, c = h.shape(x)
    cout = int(rng.choice([32, 64, 100, 128, 192, 256, 320]))
    flat = h.reshape(x, (n, hh * ww, c)) if rng.random() < 0.5 else h.reshape(x, (n * hh * ww, c))
    if len(h.shape(flat)) == 3:
        w = inp((n, c, cout), "bf16")  # batched weights keep the dot convention simple
    else:
        w = inp((c, cout), "bf16", layout=weight_layout(rng, 2))
    y = h.dot(flat, w)
    y = h.eltwise(Op.MAXIMUM, y, h.scalar_broadcast(y))
    y = h.filler(y, fill // 2, rng)
    y = h.reshape(y, (n, hh, ww, cout))
    return h.filler(y, fill - fill // 2, rng)


def _residual(h: Hlo, x: int, skip: int, rng: np.random.Generator, fill: int) -> int:
    """x + skip and `fill` elementwise nodes; return the last one."""
    y = h.eltwise(Op.ADD, x, skip)
    return h.filler(y, fill, rng)


def _conv_head(h: Hlo, inp: Inputs, x: int, rng: np.random.Generator) -> list[int]:
    """Global average pool and a dense classifier on the NHWC x; return the module's outputs."""
    n, hh, ww, c = h.shape(x)
    pooled = h.reduce(h.convert(x, "f32"), [1, 2])  # global average pool
    pooled = h.eltwise(Op.DIVIDE, pooled, h.scalar_broadcast(pooled))
    feats = h.convert(pooled, "bf16")
    classes = int(rng.choice([10, 91, 100, 1000, 1001]))
    logits = h.dot(feats, inp((c, classes), "bf16", layout=weight_layout(rng, 2)))
    logits = h.eltwise(Op.ADD, logits, h.broadcast(inp((classes,), "bf16"), h.shape(logits), [1]))
    out = [logits]
    if rng.random() < 0.5:
        out.append(h.reshape(logits, (n, 1, classes)))
    return out


def _conv_body(h: Hlo, inp: Inputs, rng: np.random.Generator, x: int, blocks: int, fill: int, need: int) -> int:
    """At least `blocks` conv / dot / residual blocks on x, and more until the module has
    `need` candidate nodes; return the last block's output."""
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
    """A transformer encoder layer (multi-head self-attention, feed-forward, two layer norms)
    on x (batch, seq, hidden); return its output of the same shape."""
    b, s, hid = h.shape(x)
    dh = hid // heads
    x2 = h.reshape(x, (b * s, hid))

    def proj(t: int, n_out: int) -> int:
        w = inp((h.shape(t)[-1], n_out), "bf16", layout=weight_layout(rng, 2))
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
    """Layer norm over the last dim of x (batch, seq, hidden), in f32; return its bf16 output."""
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
    """A pooled classifier on the first token of x (batch, seq, hidden); return the module's
    outputs (the logits and x)."""
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
    configurable nodes; `fill` elementwise nodes per block pad it towards `n_target`. Return the
    module and its name (a model family, batch size and mode, as the real file names)."""
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
            h.rows[loop][TUPLE_SIZE_COL] = 2
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
    """The graph of `seq`: near `n_target` nodes, with exactly min(nc_target, candidates)
    configurable nodes."""
    h0, _ = build_layout_graph(source, np.random.default_rng(seq), 0, nc_target)  # measures the bare blocks
    blocks = max(1, len(h0.candidates) / (16.0 if source == "nlp" else 1.2))
    fill = max(0, int((n_target - len(h0)) / blocks))
    h, name = build_layout_graph(source, np.random.default_rng(seq), n_target, nc_target, fill,
                                 np.random.default_rng(seed_seq(*seq.entropy, 99)))
    rng = np.random.default_rng(seed_seq(*seq.entropy, 98))
    cand = np.asarray(h.candidates, dtype=np.int64)
    ops = np.asarray(h.ops)[cand]
    # real files make every convolution and dot configurable, and most reshapes
    prio = np.where(ops == Op.RESHAPE, 1.0, 0.0) + rng.random(cand.size) * 0.5
    keep = np.sort(cand[np.argsort(prio, kind="stable")[:nc_target]])
    node_feat, node_opcode, edge_index = h.arrays()
    n = node_feat.shape[0]
    splits = np.asarray([h.comp_starts + [n]], dtype=np.int64)
    return LayoutGraph(name, node_feat, node_opcode, edge_index, keep, splits)


TILE_BENCHMARKS = ["resnet50.4x4.fp16", "retinanet.2x2.fp32", "mask_rcnn.8x8.bf16", "bert_pretraining.4x4.fp16",
                   "transformer.4x4.fp32", "unet_3d.4x4.bf16", "inception_v3.8x8.fp16", "efficientnet_b0.4x4.bf16",
                   "shapemask.4x4.fp32", "mnasnet_a1.2x2.fp32", "dlrm.4x4.bf16", "ncf.2x2.fp32"]
TILE_DIMS = [1, 2, 3, 7, 8, 14, 16, 28, 32, 49, 56, 64, 96, 100, 128, 196, 256, 384, 512, 768, 1000, 1024, 2048]


def build_tile_graph(rng: np.random.Generator, n_target: int) -> Hlo:
    """A fused kernel: operands, a convolution / dot / reduction core or none, elementwise work,
    the root (its output is what a tile config tiles). Return the module, its root last."""
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
        h.add(Op.COPY, h.shape(x), h.dtypes[x], (x,), layout=minor_swapped(r), root=True)
    else:
        h.rows[x][IS_ROOT] = 1.0
    return h
