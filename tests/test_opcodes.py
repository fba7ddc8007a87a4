"""The opcode vocabulary of features.layout: names, classes, and their fit to the real files.

The id -> name table is the dataset's own LEARNED_HLO_OPCODE_LIST (docs/FORMAT.md, Opcodes).
The checks on real files read attribute columns (docs/FORMAT.md) that XLA sets only on some
opcodes, and the operand shapes of elementwise ops.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from features import layout as L

ROOT = Path(__file__).resolve().parent.parent
VOCABULARY = set(range(1, 121)) - {97, 101}  # 97 trace, 101 tuple-select: retired
# node_feat columns (docs/FORMAT.md)
ELEMENT_BITS, TUPLE_TYPE, PARAMETER_NUMBER = 1, 18, 30  # 18: type one-hot 2-20, position 16 (tuple)
WINDOW, CONV_DIMS = slice(37, 93), slice(93, 107)
SLICE, DYNAMIC_SLICE, PAD = slice(109, 121), slice(121, 125), slice(125, 133)


def test_classes_partition_the_vocabulary():
    seen = Counter(op for ops in L.OPCODE_CLASSES.values() for op in ops)
    assert [op for op, n in seen.items() if n > 1] == []  # no id in two classes
    assert set(seen) == VOCABULARY
    assert set(L.OPCODE_NAMES) == VOCABULARY and set(L.RETIRED_OPCODES) == {97, 101}
    assert len(set(L.OPCODE_NAMES.values())) == len(L.OPCODE_NAMES)
    for name, ops in L.OPCODE_CLASSES.items():
        assert all(L.opcode_class(op) == name for op in ops)
    for op in (0, 97, 101, 121, 255):
        assert L.opcode_class(op) == "unknown"
    assert L.opcode_name(97) == "opcode-97" and L.opcode_name(np.uint8(63)) == "parameter"


def test_named_sets_are_the_classes():
    c = L.OPCODE_CLASSES
    assert c["elementwise"] is L.ELEMENTWISE and c["layout_free"] is L.LAYOUT_FREE
    assert L.KERNEL_OPCODES == (L.CONVOLUTION, L.DOT) and c["kernel"] == {26, 34}
    assert (L.CONVOLUTION, L.DOT, L.RESHAPE) == (26, 34, 75)
    anchors = {2: "add", 13: "broadcast", 22: "concatenate", 24: "constant", 26: "convolution", 27: "copy",
               34: "dot", 41: "fusion", 45: "get-tuple-element", 57: "maximum", 59: "multiply",
               63: "parameter", 70: "reduce", 75: "reshape", 83: "select", 92: "slice", 98: "transpose",
               100: "tuple", 102: "while"}
    assert {op: L.opcode_name(op) for op in anchors} == anchors
    # the borderline decisions of docs/FORMAT.md
    by_name = {name: L.opcode_class(op) for op, name in L.OPCODE_NAMES.items()}
    assert by_name["copy"] == by_name["bitcast"] == by_name["reshape"] == "data_movement"
    assert {by_name[n] for n in ("convert", "bitcast-convert", "clamp", "select", "reduce-precision")} == {"elementwise"}
    assert {by_name[n] for n in ("broadcast", "constant", "iota", "rng")} == {"layout_free"}
    assert by_name["parameter"] == "structure"


def test_format_doc_lists_the_same_table():
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    section = text[text.index("## Opcodes"):]
    table = section[:section.index("Classes (")]
    pairs = re.findall(r"(?<![\w-])(\d{1,3}) ([a-z][a-z0-9-]*)", table.split("\n\n", 1)[1])
    assert {int(i): n for i, n in pairs} == L.OPCODE_NAMES


@pytest.fixture(scope="module")
def nodes(real_files: list[Path]) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(file, node_opcode, node_feat, edge_index) of every real file."""
    out = []
    for path in real_files:
        with np.load(path) as d:
            out.append((str(path), d["node_opcode"], d["node_feat"], d["edge_index"].reshape(-1, 2)))
    if not out:
        pytest.skip("no .npz files under the real samples folder")
    return out


def test_real_opcodes_fall_in_a_class(nodes):
    unknown = {f: sorted(set(op[[L.opcode_class(o) == "unknown" for o in op]].tolist())) for f, op, _, _ in nodes}
    assert {f: ops for f, ops in unknown.items() if ops} == {}


ATTRIBUTES = [  # (columns, opcodes that always differ from the common value, opcodes that may)
    ("parameter_number", slice(PARAMETER_NUMBER, PARAMETER_NUMBER + 1), set(), {"parameter"}),
    ("convolution dims", CONV_DIMS, {"convolution"}, {"convolution", "custom-call"}),
    ("window", WINDOW, {"reduce-window", "select-and-scatter"},
     {"convolution", "reduce-window", "select-and-scatter", "custom-call"}),
    ("slice", SLICE, {"slice"}, {"slice"}),
    ("dynamic_slice", DYNAMIC_SLICE, {"dynamic-slice"}, {"dynamic-slice"}),
    ("pad", PAD, set(), {"pad"}),
]


@pytest.mark.parametrize("name,cols,every,only", ATTRIBUTES, ids=[a[0] for a in ATTRIBUTES])
def test_attribute_columns_sit_on_their_opcodes(nodes, name, cols, every, only):
    """The nodes whose `name` columns differ from their most common value (the unset value) are
    of the opcodes XLA sets that attribute on; custom-call may carry a window and conv dims."""
    op = np.concatenate([n[1] for n in nodes])
    x = np.concatenate([n[2][:, cols] for n in nodes])
    values, counts = np.unique(x, axis=0, return_counts=True)
    carries = (x != values[counts.argmax()]).any(axis=1)
    if not carries.any():
        pytest.skip(f"no node of these files carries {name}")
    names = np.array([L.opcode_name(o) for o in op])
    assert set(names[carries]) <= only
    for owner in every:
        assert carries[names == owner].all(), f"a {owner} node without {name}"


def test_tuple_nodes_have_tuple_type(nodes):
    op = np.concatenate([n[1] for n in nodes])
    feat = np.concatenate([n[2] for n in nodes])
    tuples = op == 100
    if not tuples.any():
        pytest.skip("no tuple node in these files")
    assert (feat[tuples, TUPLE_TYPE] == 1).all()


def test_elementwise_operands_have_the_output_shape(nodes):
    """Every operand of an ELEMENTWISE node has the node's dims (a clamp's bounds may be scalars,
    a bitcast-convert between bit widths adds or drops a minor dim, map's edges include its computation)."""
    checked, bad = 0, []
    for f, op, feat, edges in nodes:
        shape = feat[:, L.SHAPE_COLS]
        for u, v in edges.tolist():  # u consumes v
            o = int(op[u])
            if o not in L.ELEMENTWISE or o == 56:
                continue
            if o == 17 and not shape[v].any():
                continue
            if o == 12 and feat[u, ELEMENT_BITS] != feat[v, ELEMENT_BITS]:
                continue
            checked += 1
            if not (shape[u] == shape[v]).all():
                bad.append((f, u, L.opcode_name(o), v))
    if not checked:
        pytest.skip("no elementwise node in these files")
    assert bad[:5] == []
