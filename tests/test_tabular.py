"""GBDT features on a hand-made graph whose counts are known by hand."""

from __future__ import annotations

import numpy as np

from features.configs import pack_layout
from features.pad import pad_layout
from features.tabular import COUNT_NAMES, LAYOUT_NAMES, layout_context, layout_features, tile_features, tile_padding


def _graph():
    # node 0: f32 [256, 10] layout [1, 0] (dot); node 1: f32 [4, 3] layout [0, 1] (reshape)
    # node 1 consumes node 0
    nf = np.zeros((2, 140), dtype=np.float32)
    nf[:, 13] = 1  # f32 one-hot (column 2 + 11)
    nf[0, 21:23] = [256, 10]
    nf[0, 28] = 2560
    nf[0, 134:136] = [1, 0]
    nf[1, 21:23] = [4, 3]
    nf[1, 28] = 12
    nf[1, 134:136] = [0, 1]
    opcode = np.array([34, 75], dtype=np.uint8)
    return pad_layout(nf), opcode


def test_layout_features_by_hand():
    nf, op = _graph()
    ctx = layout_context(nf, op, np.array([0, 1]), np.array([[1, 0, 1]]), {"nodes": 2})
    cfg = -np.ones((3, 2, 18), dtype=np.float32)
    # config 0: all default. config 1: node 1 wants input [1, 0] (matches node 0's own layout)
    # config 2: node 0 outputs [0, 1] while node 1 still wants [1, 0]: a mismatch of 2560*4 bytes
    cfg[1, 1, 6:8] = [1, 0]
    cfg[2, 1, 6:8] = [1, 0]
    cfg[2, 0, 0:2] = [0, 1]
    f = layout_features(ctx, pack_layout(cfg))
    assert set(f) == set(LAYOUT_NAMES)
    assert all(v.shape == (3,) for v in f.values())
    assert f["mismatch_pairs"].tolist() == [0, 0, 1]
    assert f["mismatch_bytes"].tolist() == [0, 0, 2560 * 4]
    # counts: each config counts 2 nodes per group
    total = sum(f[n] for n in COUNT_NAMES)
    assert total.tolist() == [6, 6, 6]
    assert f["cnt_out_dot_def"].tolist() == [1, 1, 0]
    assert f["cnt_out_dot_m0"].tolist() == [0, 0, 1]
    assert f["cnt_in_reshape_m1"].tolist() == [0, 1, 1]
    # padding: own layout of node 0 is minor 1 (size 10 -> 128), second-minor 0 (256 -> 256)
    w_def = 10240 * (128 / 10 - 1) + 48 * (128 / 4 * 8 / 3 - 1)
    assert np.isclose(f["pad_waste_bytes"][0], w_def)
    # config 2 makes node 0 minor 0 (256 -> 256) second-minor 1 (10 -> 16)
    w2 = 10240 * (16 / 10 - 1) + 48 * (128 / 4 * 8 / 3 - 1)
    assert np.isclose(f["pad_waste_bytes"][2], w2)
    assert f["change_pairs"].tolist() == [1, 1, 0]  # own layouts differ; config 2 aligns them


def test_tile_features_by_hand():
    nf = np.zeros((1, 140), dtype=np.float32)
    nf[0, 0] = 1
    nf[0, 13] = 1
    nf[0, 21:23] = [100, 30]
    cf = np.zeros((2, 24), dtype=np.float32)
    cf[0, 8:10] = [64, 16]   # ceil(100/64)=2 x ceil(30/16)=2 tiles, padded 128*32
    f = tile_features(nf, cf)
    assert f["tile_count"].tolist() == [4, 1]
    assert np.isclose(f["tile_pad_waste"][0], 128 * 32 / 3000 - 1) and f["tile_pad_waste"][1] == 0
    assert f["tile_bytes"].tolist() == [64 * 16 * 4, 0]


def _rank3_pair():
    # node 0: f32 [8, 16, 32] own layout [1, 0, 2] (dot) consumed by node 1: f32 [8, 16, 32] (reshape)
    nf = np.zeros((2, 140), dtype=np.float32)
    nf[:, 13] = 1
    nf[:, 21:24] = [8, 16, 32]
    nf[:, 28] = 8 * 16 * 32
    nf[0, 134:137] = [1, 0, 2]
    nf[1, 134:137] = [0, 1, 2]
    ctx = layout_context(pad_layout(nf), np.array([34, 75], np.uint8), np.array([0, 1]), np.array([[1, 0, 1]]), {})
    return ctx


def test_prefix_groups_are_completed_before_comparing():
    ctx = _rank3_pair()
    cfg = -np.ones((4, 2, 18), dtype=np.float32)
    cfg[0, 1, 6:8] = [1, 0]        # consumer asks for [1, 0, *]: the producer's own [1, 0, 2]
    cfg[1, 1, 6:8] = [1, 0]
    cfg[1, 0, 0:1] = [1]           # producer sets only its minor-most dim: still [1, 0, 2]
    cfg[2, 1, 6:7] = [0]           # consumer asks for [0, *] completed from [1, 0, 2]: [0, 1, 2]
    cfg[3, 1, 6:9] = [1, 0, 2]     # the full layout, written out
    cfg[3, 0, 0:3] = [2, 1, 0]     # but the producer now outputs [2, 1, 0]
    f = layout_features(ctx, pack_layout(cfg))
    assert f["mismatch_pairs"].tolist() == [0, 0, 1, 1]
    assert f["mismatch_bytes"].tolist() == [0, 0, 4096 * 4, 4096 * 4]
    # effective outputs: [1, 0, 2] vs the consumer's own [0, 1, 2], except config 3 ([2, 1, 0])
    assert f["change_pairs"].tolist() == [1, 1, 1, 1]


def test_a_pair_is_compared_under_the_group_it_is_read_under():
    """The same producer read as a dot's operand 1 (kernel group), as its operand 0 (input
    group), and as either of two operands that cannot be told apart (half each)."""
    nf = np.zeros((2, 140), dtype=np.float32)
    nf[:, 13] = 1
    nf[:, 21:23] = [16, 16]
    nf[:, 28] = 256
    nf[:, 134:136] = [1, 0]
    cfg = -np.ones((3, 2, 18), dtype=np.float32)
    cfg[1, 1, 12:14] = [0, 1]  # the kernel group asks for the transpose
    cfg[2, 1, 6:8] = [0, 1]    # the input group asks for the transpose
    got = {}
    for group in (1, 2, 3):
        ctx = layout_context(pad_layout(nf), np.array([75, 34], np.uint8), np.array([0, 1]), np.array([[1, 0, group]]), {})
        got[group] = layout_features(ctx, pack_layout(cfg))["mismatch_pairs"].tolist()
    assert got == {1: [0, 0, 1], 2: [0, 1, 0], 3: [0, 0.5, 0.5]}


def test_role_features_name_what_each_group_puts_minor_most():
    """A convolution (NHWC input [8, 32, 32, 3] numbered after its HWIO kernel [5, 5, 3, 16], output
    [8, 28, 28, 16]) and a reshape of its output: each group's minor-most dim by its role."""
    nf = np.zeros((4, 140), dtype=np.float32)
    nf[:, 13] = 1
    for i, shape in enumerate([(5, 5, 3, 16), (8, 32, 32, 3), (8, 28, 28, 16), (8, 784, 16)]):
        nf[i, 21 : 21 + len(shape)] = shape
        nf[i, 28] = np.prod(shape)
        nf[i, 134 : 134 + len(shape)] = np.arange(len(shape))[::-1]
    nf[2, [93, 94, 95, 96, 99, 100, 101, 102, 105, 106, 107, 108]] = [0, 3, 1, 2, 2, 3, 0, 1, 0, 3, 1, 1]
    nf[2, 37:39] = [5, 5]
    op = np.array([63, 63, 26, 75], np.uint8)
    edges = np.array([[2, 0], [2, 1], [3, 2]])
    ctx = layout_context(nf, op, np.array([2, 3]), np.zeros((0, 3)), {}, edges, flat=True)
    cfg = -np.ones((3, 2, 18), dtype=np.float32)
    cfg[1, 0, 0:2] = [0, 3]    # the convolution's output with its batch dim minor-most
    cfg[1, 0, 6:8] = [1, 0]    # ... its input with a spatial dim minor-most
    cfg[2, 0, 12:14] = [2, 3]  # its kernel with its input feature dim minor-most; the reshape's output too
    cfg[2, 1, 0:2] = [1, 0]
    f = layout_features(ctx, pack_layout(cfg))
    # defaults: every tensor keeps its row-major layout, whose last dim is a convolution's feature dim
    assert f["role_out_conv_feature"].tolist() == [1, 0, 1] and f["role_out_conv_batch"].tolist() == [0, 1, 0]
    assert f["role_in_conv_feature"].tolist() == [1, 0, 1] and f["role_in_conv_other"].tolist() == [0, 1, 0]
    assert f["role_kernel_conv_feature"].tolist() == [1, 1, 1]  # input and output feature both count
    assert f["role_out_reshape_last"].tolist() == [1, 1, 0] and f["role_out_reshape_other"].tolist() == [0, 0, 1]
    assert f["role_bytes_out_conv_batch"].tolist() == [0, 8 * 28 * 28 * 16 * 4, 0]
    assert f["rank_role_out_r3_last"].tolist() == [1, 1, 0] and f["rank_role_in_r4_other"].tolist() == [0, 1, 0]
    assert f["changed_out_conv"].tolist() == [0, 1, 0] and f["changed_kernel_conv"].tolist() == [0, 0, 1]
    assert f["changed_bytes_in_conv"].tolist() == [0, 8 * 32 * 32 * 3 * 4, 0]
    # the graph's own groups, for one graph trained and scored
    assert f["flat_0_out_0"].tolist() == [-1, 0, -1] and f["flat_0_out_1"].tolist() == [-1, 3, -1]
    assert f["flat_0_kernel_0"].tolist() == [-1, -1, 2] and "flat_1_kernel_1" in f


def test_padding_waste_uses_the_completed_layout():
    nf, op = _graph()
    ctx = layout_context(nf, op, np.array([0, 1]), np.array([[1, 0, 1]]), {"nodes": 2})
    cfg = -np.ones((2, 2, 18), dtype=np.float32)
    cfg[0, 0, 0:2] = [0, 1]
    cfg[1, 0, 0:1] = [0]  # a 1-element prefix: completed from the own [1, 0] it is [0, 1] too
    f = layout_features(ctx, pack_layout(cfg))
    w = 10240 * (16 / 10 - 1) + 48 * (128 / 4 * 8 / 3 - 1)
    assert np.allclose(f["pad_waste_bytes"], [w, w])
    assert np.allclose(f["pad_waste_minor_bytes"], [0 + 48 * (128 / 4 - 1)] * 2)


def test_tile_padding_counts_and_waste():
    waste, count = tile_padding(np.array([100, 30, 0, 0, 0, 0]), np.array([[64, 16, 0, 0, 0, 0], [100, 0, 0, 0, 0, 0]]))
    assert count.tolist() == [4, 1]
    assert np.allclose(waste, [128 * 32 / 3000 - 1, 0])
