"""Operands told apart from shapes (features.operands): hand-made cases, every real file, and a
real program whose text states each instruction's operands in order."""

from __future__ import annotations

import numpy as np
import pytest

from features.layout import node_rank
from features.operands import AMBIGUOUS, BY_LOOSE_SHAPE, BY_SHAPE, GUESSED, RESOLVED, conv_fits, dot_fits, infer_operands


def test_dot_fits_reads_batch_free_and_contracting_dims() -> None:
    assert dot_fits((8, 4), (8, 16), (16, 4))          # [m, k] x [k, n]
    assert not dot_fits((8, 4), (16, 4), (8, 16))       # swapped: no split gives [8, 4]
    assert dot_fits((2, 8, 4), (2, 16, 8), (2, 16, 4))  # batch 2, contracting 16 (not minor-most)
    assert not dot_fits((2, 8, 4), (2, 16, 4), (2, 16, 8))
    assert dot_fits((5, 7), (5, 7), (5, 7)) and dot_fits((3, 3), (3, 3), (3, 3))
    # attention probabilities [b, h, q, k] times values [b, k, h, d] written as [b, q, h, d]:
    # the batch dims (b, h) are not in front, so only the loose reading fits, and one way only
    probs, values, out = (1, 8, 512, 512), (1, 512, 8, 16), (1, 512, 8, 16)
    assert not dot_fits(out, probs, values) and not dot_fits(out, values, probs)
    assert dot_fits(out, probs, values, batch_anywhere=True) and not dot_fits(out, values, probs, batch_anywhere=True)


def _conv_row(labels: dict[int, int], window: list[int]) -> np.ndarray:
    f = np.zeros(140, np.float32)
    for col, v in labels.items():
        f[col] = v
    f[37 : 37 + len(window)] = window
    return f


def test_conv_fits_reads_dimension_numbers_and_window() -> None:
    # NHWC input [8, 32, 32, 3], HWIO kernel [5, 5, 3, 16] -> [8, 28, 28, 16]
    row = _conv_row({93: 0, 94: 3, 95: 1, 96: 2, 99: 2, 100: 3, 101: 0, 102: 1, 105: 0, 106: 3, 107: 1, 108: 1}, [5, 5])
    out, inp, ker = (8, 28, 28, 16), (8, 32, 32, 3), (5, 5, 3, 16)
    assert conv_fits(row, out, inp, ker) and not conv_fits(row, out, ker, inp)
    grouped = row.copy()
    grouped[107] = 3  # depthwise: kernel input feature 1, input feature 3
    assert conv_fits(grouped, out, inp, (5, 5, 1, 16)) and not conv_fits(row, out, inp, (5, 5, 1, 16))


def _graph(shapes: list[tuple[int, ...]], opcodes: list[int], edges: list[tuple[int, int]]):
    nf = np.zeros((len(shapes), 140), np.float32)
    for i, s in enumerate(shapes):
        nf[i, 21 : 21 + len(s)] = s
    return nf, np.array(opcodes), np.array(edges, np.int64).reshape(-1, 2)


def test_infer_operands_statuses() -> None:
    # 0 [8,16], 1 [16,4] (kernel numbered last), 2 [16,4] (kernel numbered first), 3 [8,16], 4 [5,5], 5 [5,5]
    nf, op, e = _graph([(8, 16), (16, 4), (16, 4), (8, 16), (5, 5), (5, 5), (8, 4), (8, 4), (5, 5), (9,), (3, 3)],
                       [63] * 6 + [34, 34, 34, 34, 34],
                       [(6, 0), (6, 1), (7, 2), (7, 3), (8, 4), (8, 5), (9, 0), (9, 1), (10, 4)])
    ops = infer_operands(nf, op, e, np.array([6, 7, 8, 9, 10]))
    assert ops.slots[:2].tolist() == [[6, 0, 1], [7, 3, 2]]
    assert ops.status.tolist() == [BY_SHAPE, BY_SHAPE, AMBIGUOUS, GUESSED, GUESSED]
    assert ops.slots[2].tolist() == [8, 4, 5]  # ambiguous: id order, flagged
    assert ops.slots[3].tolist() == [9, 0, 1]  # nothing fits [9]: the documented guess, id order
    assert ops.slots[4].tolist() == [10, 4, -1]  # one producer that cannot be both operands
    assert ops.counts() == {"by_shape": 2, "by_loose_shape": 0, "ambiguous": 1, "guessed": 2}
    # the transposed attention output: values (numbered first) are operand 1
    nf, op, e = _graph([(1, 512, 8, 16), (1, 8, 512, 512), (1, 512, 8, 16)], [75, 96, 34], [(2, 0), (2, 1)])
    ops = infer_operands(nf, op, e, np.array([2]))
    assert ops.slots.tolist() == [[2, 1, 0]] and ops.status.tolist() == [BY_LOOSE_SHAPE]
    # a reshape has one operand; a dot reading one tensor twice (x . x) needs no telling apart
    nf, op, e = _graph([(4, 6), (24,), (4, 4)], [63, 75, 34], [(1, 0), (2, 0)])
    ops = infer_operands(nf, op, e, np.array([1, 2]))
    assert ops.slots.tolist() == [[1, 0, -1], [2, 0, 0]] and ops.status.tolist() == [RESOLVED, RESOLVED]


def test_every_real_group_fits_the_tensor_it_is_attached_to(real_files) -> None:
    """Conformance on every real layout file: each config value of each group is below the rank
    of the tensor the group is attached to; the counts of told-apart, ambiguous and guessed
    operands are printed."""
    layout = [p for p in real_files if "layout" in p.parts]
    assert layout
    for path in layout:
        with np.load(path) as z:
            nf, op, e, ids = z["node_feat"], z["node_opcode"], z["edge_index"], z["node_config_ids"]
            top = z["node_config_feat"].max(axis=0)  # (NC, 18) the largest value of each column
        ops = infer_operands(nf, op, e, ids)
        rank = node_rank(nf)
        for s in range(3):
            attached = ops.slots[:, s] >= 0
            largest = top[:, 6 * s : 6 * s + 6].max(1)
            wrong = attached & (largest >= rank[np.maximum(ops.slots[:, s], 0)])
            assert not wrong.any(), f"{path.name}: {int(wrong.sum())} group(s) {s} larger than their tensor's rank"
            assert not ((largest >= 0) & ~attached).any(), f"{path.name}: a set group {s} has no tensor"
        print(f"{path.relative_to(path.parents[3])}: {ops.summary()}")
        assert ops.counts()["guessed"] == 0, path.name


@pytest.fixture(scope="module")
def unet3d(shared_hlo):
    from pipeline.io.hlo import read_hlo

    return read_hlo(shared_hlo / "unet3d_layout_module.hlo.txt")


def test_operands_of_a_real_program_match_its_text(unet3d) -> None:
    """The unet3d training step as the dataset writes it (edges sorted, each pair once): every
    convolution whose operands the arrays can tell apart gets the text's operand 0 and 1; the
    weight-gradient convolutions with identical operand shapes are reported ambiguous."""
    m = unet3d
    e = np.asarray(m.edge_index)
    assert (np.diff(e[:, 0] * (e.max() + 1) + e[:, 1]) > 0).all(), "rows sorted by (user, operand), each once"
    ids = np.flatnonzero(np.isin(m.node_opcode, (26, 34)))
    ops = infer_operands(m.node_feat, m.node_opcode, e, ids)
    truth = np.array([m.operands[i][:2] for i in ids])
    told = ops.status != AMBIGUOUS
    assert (ops.slots[told, 1:] == truth[told]).all()
    ambiguous = sorted(m.names[i] for i in ids[~told])
    assert len(ambiguous) == 6 and "convolution.10053" in ambiguous, ambiguous
    # ambiguous means what it says: the two operands carry the same shape and element type
    for i in ids[~told]:
        a, b = m.operands[i][:2]
        assert (m.node_feat[a, 2:29] == m.node_feat[b, 2:29]).all()
    assert (ops.status[told] == BY_SHAPE).all() and told.sum() == 47


def test_ambiguous_operands_are_featurized_alike_whichever_is_which() -> None:
    """A dot of two [5, 5] tensors laid out differently: the slot facts and the defaults of its
    input and kernel groups do not depend on which producer the ids put first."""
    from features.completion import group_defaults
    from features.cost_terms import slot_facts
    from features.layout import node_layout

    nf, op, e = _graph([(5, 5), (5, 5), (5, 5)], [63, 24, 34], [(2, 0), (2, 1)])
    nf[:, 13] = 1  # f32
    nf[0, 134:136], nf[1, 134:136], nf[2, 134:136] = [0, 1], [1, 0], [1, 0]
    swap = np.array([1, 0, 2])
    got = []
    for perm in (np.arange(3), swap):
        ops = infer_operands(nf[perm], op[perm], e, np.array([2]))
        assert ops.status.tolist() == [AMBIGUOUS]
        got.append((slot_facts(nf[perm], op[perm], e, ops), group_defaults(node_layout(nf[perm]), ops)))
    (facts_a, defaults_a), (facts_b, defaults_b) = got
    assert np.array_equal(facts_a, facts_b) and np.array_equal(defaults_a, defaults_b)
    # layouts that differ: both groups complete from the row-major order; the parameter (0) is
    # fixed, the constant (1) is not: the shared facts say a fixed neighbour
    assert defaults_a[0, 1].tolist() == defaults_a[0, 2].tolist() == [1, 0, -1, -1, -1, -1]
    assert facts_a[0, 1, 9] == facts_a[0, 2, 9] == 1
