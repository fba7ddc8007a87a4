"""The analytical cost terms of layout configs on a hand-made 5-node graph whose answers are known.

Graph (edge [u, v]: u consumes v; raw node_feat, f32 unless said):
    0 parameter (8, 200) ───┬─> 2 convolution* (8, 130) ─> 3 add (8, 130) ─> 4 dot* (8, 130), root
    1 parameter (200, 130) ─┘ (kernel)
* varying configurable nodes: 2 (output feature dim 1, input feature dim 1, kernel output
feature dim 1, kernel input feature dim 0) and 4. Every default layout is row-major (1, 0).
"""

from __future__ import annotations

import numpy as np

from features.completion import complete_layout, group_defaults
from features.cost_terms import NUM_TERMS, SLOT_FACTS, TERM_NAMES, layout_terms, slot_facts
from features.layout import NODE_FEAT_DIM, node_layout
from features.operands import BY_SHAPE, RESOLVED, Operands, infer_operands

F32 = 2 + 11  # one-hot column of f32 (docs/FORMAT.md: 2-20 element types, f32 the 12th)
SHAPES = [(8, 200), (200, 130), (8, 130), (8, 130), (8, 130)]
OPCODES = np.array([63, 63, 26, 2, 34])
EDGES = np.array([[2, 0], [2, 1], [3, 2], [4, 3]])
CONFIG_NODES = np.array([2, 4])


def raw_node_feat() -> np.ndarray:
    nf = np.zeros((5, NODE_FEAT_DIM), dtype=np.float32)
    for i, shape in enumerate(SHAPES):
        nf[i, F32] = 1
        nf[i, 21:23] = shape
        nf[i, 28] = np.prod(shape)
        nf[i, 134:136] = [1, 0]
    nf[4, 0] = 1  # root
    nf[2, [106, 94, 100, 99]] = [1, 1, 1, 0]
    return nf


def operands() -> Operands:
    """The slots of nodes 2 and 4: the convolution reads 0 (input) and 1 (kernel); the dot reads
    the add as operand 0 and, in these tests, nothing as operand 1 (`infer_operands` would read
    the add as both: a batch-only dot of [8, 130] by itself fits, test_operands_from_shapes)."""
    return Operands(np.array([[2, 0, 1], [4, 3, -1]]), np.array([BY_SHAPE, RESOLVED], dtype=np.int8))


def test_operands_from_shapes_whatever_the_edge_order() -> None:
    nf = raw_node_feat()
    for edges in (EDGES, EDGES[::-1], EDGES[[1, 0, 2, 3]]):
        ops = infer_operands(nf, OPCODES, edges, CONFIG_NODES)
        assert ops.slots.tolist() == [[2, 0, 1], [4, 3, 3]] and ops.status.tolist() == [BY_SHAPE, RESOLVED]
    # the kernel numbered before the input: told apart by the dimension numbers, not the ids
    swap = np.array([1, 0, 2, 3, 4])
    ops = infer_operands(nf[swap], OPCODES[swap], swap[EDGES], CONFIG_NODES)
    assert ops.slots[0].tolist() == [2, 1, 0]


def terms(groups: list[list[int]]) -> dict[str, np.ndarray]:
    """Terms of one config given as the 18 raw values of nodes 2 and 4, by name: (2,) per node."""
    nf = raw_node_feat()
    ops = operands()
    facts = slot_facts(nf, OPCODES, EDGES, ops)
    defaults = group_defaults(node_layout(nf), ops)
    raw = np.asarray(groups, dtype=np.int8).reshape(1, 2, 3, 6)
    done = complete_layout(raw, defaults[None]).reshape(1, 2, 18)
    t = layout_terms(facts, defaults, np.array([[1, 0, 1]]), done)
    assert t.shape == (1, 2, NUM_TERMS) and t.dtype == np.float32
    return {name: t[0, :, i] for i, name in enumerate(TERM_NAMES)}


def g(*parts: list[int]) -> list[int]:
    """The 18 raw values of one node: output, input, kernel groups, each padded with -1."""
    parts = parts + ([],) * (3 - len(parts))
    return [v for p in parts for v in list(p) + [-1] * (6 - len(p))]


def test_slot_facts_read_the_slot_tensors_and_their_neighbours() -> None:
    nf = raw_node_feat()
    facts = slot_facts(nf, OPCODES, EDGES, operands())
    assert facts.shape == (2, 3, SLOT_FACTS)
    conv, dot = facts
    assert conv[:, :2].tolist() == [[8, 130], [8, 200], [200, 130]]  # output, operand 0, operand 1
    assert (conv[:, 6] == 4).all() and conv[:, 7].tolist() == [1, 1, 1] and conv[:, 8].tolist() == [-1, -1, 0]
    # the dot reads the add (operand 0); it has no operand 1, so no kernel slot
    assert dot[1, :2].tolist() == [8, 130] and dot[2].tolist() == [0] * 7 + [-1, -1, 0, 0]
    # matmul flops (output slot): 2 x 1040 outputs x 200 contracted (kernel 200 x 130 over its
    # output feature dim, 130); the dot has no kernel in this graph, so nothing to count
    assert conv[0, 10] == 2 * 8 * 130 * 200 and dot[0, 10] == 0 and (facts[:, 1:, 10] == 0).all()
    # fixed neighbours: the convolution's output flows through the add (elementwise, same shape)
    # into the dot, which varies: no fixed reader; its inputs are parameters: fixed. The dot is
    # the root (fixed output); its input comes through the add from the convolution: not fixed.
    assert conv[:, 9].tolist() == [0, 1, 1] and dot[:, 9].tolist() == [1, 0, 0]


def test_defaults_change_nothing_and_pay_only_the_padding_of_their_layout() -> None:
    t = terms([g(), g()])
    assert t["out_present"].tolist() == [1, 1] and t["kernel_present"].tolist() == [1, 0]
    for name in ("changed", "changed_bytes", "fixed_changed_bytes"):
        for slot in ("out", "in", "kernel"):
            assert (t[f"{slot}_{name}"] == 0).all(), f"{slot}_{name}"
    # row-major (8, 130): the minor dim 130 fills 130 of 256 lanes, the 8 rows one f32 sublane tile
    np.testing.assert_allclose(t["out_lane_waste"], -np.log2(130 / 256), rtol=1e-6)
    assert (t["out_sublane_waste"] == 0).all() and (t["out_row_major"] == 1).all()
    # the padding bytes: 8 x 256 x 4 held for 8 x 130 x 4
    np.testing.assert_allclose(t["out_pad_bytes"], np.log2(1 + 8 * 126 * 4) / 16, rtol=1e-6)
    assert (t["in_mismatch"] == 0).all() and (t["out_mismatch"] == 0).all()
    # the convolution's output feature dim (1) is minor-most; its kernel input feature dim (0)
    # is second-minor: nothing is off
    assert t["out_feature_off"][0] == 0 and t["kernel_feature_off"][0] == 0 and t["in_feature_off"][0] == 0
    assert t["flops_off"][0] == 0
    np.testing.assert_allclose(t["flops_lane_waste"][0], np.log2(1 + 2 * 8 * 130 * 200 * -np.log2(130 / 256)) / 32, rtol=1e-6)


def test_a_transposed_output_pads_changes_and_disagrees_with_its_reader() -> None:
    t = terms([g([0, 1]), g()])  # the convolution's output column-major: (8 rows minor)
    conv, dot = 0, 1
    assert t["out_changed"][conv] == 1 and t["out_row_major"][conv] == 0 and t["out_minor_last"][conv] == 0
    np.testing.assert_allclose(t["out_lane_waste"][conv], -np.log2(8 / 128), rtol=1e-6)
    np.testing.assert_allclose(t["out_sublane_waste"][conv], -np.log2(130 / 136), rtol=1e-6)
    held = 128 * 136 * 4
    np.testing.assert_allclose(t["out_changed_bytes"][conv], np.log2(1 + held) / 16, rtol=1e-6)
    assert t["out_fixed_changed_bytes"][conv] == 0, "the convolution's output meets no fixed layout"
    assert t["out_feature_off"][conv] == 1, "its feature dim left the minor-most position"
    np.testing.assert_allclose(t["flops_off"][conv], np.log2(1 + 2 * 8 * 130 * 200) / 32, rtol=1e-6)
    # the dot's input group is its default, (1, 0): it now disagrees with what the convolution writes
    assert t["in_mismatch"].tolist() == [0, 1] and t["out_mismatch"].tolist() == [1, 0]
    np.testing.assert_allclose(t["in_mismatch_bytes"][dot], np.log2(1 + 8 * 130 * 4) / 16, rtol=1e-6)


def test_a_changed_input_next_to_a_fixed_producer_is_a_copy() -> None:
    t = terms([g([], [0, 1]), g([], [0, 1])])
    assert t["in_changed"].tolist() == [1, 1]
    assert t["in_fixed_changed_bytes"][0] > 0, "the convolution's input is a parameter: a copy"
    assert t["in_fixed_changed_bytes"][1] == 0, "the dot's input comes from the convolution"
    # the dot asks for (0, 1) while the convolution still writes (1, 0)
    assert t["in_mismatch"].tolist() == [0, 1]
    agree = terms([g([0, 1]), g([], [0, 1])])
    assert agree["in_mismatch"].tolist() == [0, 0]


def test_terms_of_many_configs_are_the_terms_of_each() -> None:
    nf = raw_node_feat()
    ops = operands()
    facts = slot_facts(nf, OPCODES, EDGES, ops)
    defaults = group_defaults(node_layout(nf), ops)
    rng = np.random.default_rng(0)
    raw = np.full((7, 2, 3, 6), -1, dtype=np.int8)
    raw[..., :2] = np.where(rng.random((7, 2, 3, 1)) < 0.5, [[1, 0]], [[0, 1]])
    raw[rng.random((7, 2, 3)) < 0.3] = -1
    done = complete_layout(raw, defaults[None]).reshape(7, 2, 18)
    pairs = np.array([[1, 0, 1]])
    together = layout_terms(facts, defaults, pairs, done)
    one_by_one = np.concatenate([layout_terms(facts, defaults, pairs, done[i : i + 1]) for i in range(7)])
    np.testing.assert_array_equal(together, one_by_one)
    assert np.isfinite(together).all() and len(np.unique(together[:, 0, :], axis=0)) > 1


def test_term_groups_partition_the_terms_and_select_totals_by_group() -> None:
    from features.cost_terms import TERM_GROUPS, TOTAL_NAMES, term_groups, term_mask

    assert sorted(t for g in TERM_GROUPS.values() for t in g) == sorted(TERM_NAMES)
    assert term_groups(True) == ("slot", "link", "compute") and term_groups(False) == () == term_groups([])
    assert term_groups(["compute", "slot"]) == ("slot", "compute")  # group order, whatever the order given
    link = term_mask(["link"], TOTAL_NAMES)
    assert link.sum() == 4 * len(TERM_GROUPS["link"])  # one per opcode kind
    assert all(n.split("_", 1)[1] in TERM_GROUPS["link"] for n, keep in zip(TOTAL_NAMES, link) if keep)
    assert term_mask([], ["some_feature"]).all()  # a name that is no cost term is kept
