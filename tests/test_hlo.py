"""HLO text -> layout arrays (pipeline.io.hlo, pipeline.featurize): the sample builder's own
modules read back exactly, hand-written modules classified and featurized at the documented
columns, bad input one line each, and the JAX example within the real files' feature ranges."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.layout import LAYOUT0, NODE_FEAT_DIM, OPCODE_NAMES, PRODUCT_COL, SHAPE0
from pipeline.core.errors import DataError
from pipeline.featurize import hlo_to_arrays, run
from pipeline.io import hlo as H
from pipeline.io.npz import read_graph
from pipeline.sample.graphs import build_layout_graph, build_tile_graph, make_layout_graph
from pipeline.sample.seeds import seed_seq

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "jax_blocks.hlo.txt"

# -- round trip: the sample generator's modules --------------------------------------------------


@pytest.mark.parametrize("source,k", [("xla", 0), ("xla", 1), ("xla", 2), ("nlp", 0), ("nlp", 1)])
def test_sample_module_text_reads_back_into_the_builders_arrays(source: str, k: int) -> None:
    seq = seed_seq(11, k)
    g = make_layout_graph(source, seq, 250, 6)
    h, name = build_layout_graph(source, np.random.default_rng(seq), 250, 6,
                                 *_fill(source, seq))
    text = h.to_text(name)
    m = H.parse_hlo(text, source=name, edges="operands")
    assert np.array_equal(m.node_feat, g.node_feat) and m.node_feat.dtype == np.float32
    assert np.array_equal(m.node_opcode, g.node_opcode) and m.node_opcode.dtype == np.uint8
    assert np.array_equal(m.edge_index, g.edge_index) and m.edge_index.dtype == np.int64
    assert np.array_equal(m.node_splits, g.node_splits)
    assert np.array_equal(m.config_ids, np.asarray(h.candidates))  # every convolution, dot and reshape
    # the generator keeps a subset of them; naming those reproduces its node_config_ids
    arrays, names = hlo_to_arrays(text, 5, seed=0, configurable=[m.names[i] for i in g.node_config_ids],
                                  edges="operands")
    assert np.array_equal(arrays["node_config_ids"], g.node_config_ids)
    assert names == [m.names[i] for i in g.node_config_ids]


def _fill(source: str, seq: np.random.SeedSequence) -> tuple[int, np.random.Generator]:
    """The fill arguments make_layout_graph passes to build_layout_graph (same arithmetic)."""
    h0, _ = build_layout_graph(source, np.random.default_rng(seq), 0, 6)
    blocks = max(1, len(h0.candidates) / (16.0 if source == "nlp" else 1.2))
    return max(0, int((250 - len(h0)) / blocks)), np.random.default_rng(seed_seq(*seq.entropy, 99))


def test_a_tile_kernel_reads_back_too() -> None:
    for k in range(3):
        h = build_tile_graph(np.random.default_rng(k), 12)
        m = H.parse_hlo(h.to_text(), edges="operands")
        nf, op, e = h.arrays()
        assert np.array_equal(m.node_feat, nf) and np.array_equal(m.node_opcode, op)
        assert np.array_equal(m.edge_index, e)


def test_the_parser_imports_neither_the_sample_nor_jax() -> None:
    code = ("import sys, pipeline.io.hlo, pipeline.featurize, features.hlo_configs; "
            "print(sorted(m for m in sys.modules if m.startswith(('pipeline.sample', 'jax'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# -- hand-written modules ------------------------------------------------------------------------

MODULE = """HloModule hand, entry_computation_layout={(f32[8,128]{1,0})->f32[8,128]{1,0}}

%add_f32 (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(f32[] %a, f32[] %b), metadata={op_name="add" source_file="x.py" source_line=3}
}

%fused_computation (p0: f32[8,128]) -> f32[8,128] {
  %p0 = f32[8,128]{1,0} parameter(0)
  ROOT %neg = f32[8,128]{1,0} negate(%p0)
}

%while_body (s: (s32[], f32[8,128])) -> (s32[], f32[8,128]) {
  %s = (s32[], f32[8,128]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%s), index=0
  %x = f32[8,128]{1,0} get-tuple-element(%s), index=1
  %one = s32[] constant(1)
  %inc = s32[] add(%i, %one)
  ROOT %t = (s32[], f32[8,128]{1,0}) tuple(%inc, %x)
}

%while_cond (s: (s32[], f32[8,128])) -> pred[] {
  %s.1 = (s32[], f32[8,128]{1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%s.1), index=0
  %n = s32[] constant(4)
  ROOT %lt = pred[] compare(%i.1, %n), direction=LT
}

ENTRY %main (x: f32[8,128], w: bf16[3,3,16,32]) -> f32[8,128] {
  %x.0 = f32[8,128]{1,0:T(8,128)} parameter(0)
  %w.0 = bf16[3,3,16,32]{3,2,1,0} parameter(1)
  %img = bf16[2,8,8,16]{3,2,1,0} parameter(2)
  %conv = bf16[2,8,8,32]{3,2,1,0} convolution(%img, %w.0), window={size=3x3 stride=2x1 pad=1_1x0_2 rhs_reversal=1x0}, dim_labels=b01f_01io->b01f, feature_group_count=2
  %r = f32[128,8]{0,1} reshape(%x.0)
  %d = f32[8,8]{1,0} dot(%x.0, %r), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %bc = f32[8,8]{1,0} bitcast(%d)
  %s0 = f32[4,8]{1,0} slice(%bc), slice={[0:8:2], [0:8]}
  %pd = f32[6,9]{1,0} pad(%s0, %zero), padding=1_1x0_1
  %zero = f32[] constant(0)
  %red = f32[8]{0} reduce(%x.0, %zero), dimensions={1}, to_apply=%add_f32
  %ds = f32[2,128]{1,0} dynamic-slice(%x.0, %i0, %i0), dynamic_slice_sizes={2,128}
  %i0 = s32[] constant(0)
  %srt = f32[8,128]{1,0} sort(%x.0), dimensions={1}, is_stable=true, to_apply=%add_f32
  %f = f32[8,128]{1,0} fusion(%x.0), kind=kLoop, calls=%fused_computation
  %init = (s32[], f32[8,128]{1,0}) tuple(%i0, %f)
  %loop = (s32[], f32[8,128]{1,0}) while(%init), condition=%while_cond, body=%while_body
  %cc = f32[8,128]{1,0} custom-call(%f), custom_call_target="MyKernel", backend_config="{\\"a\\": [1, 2]}"
  %tok = token[] after-all()
  %odd = f32[8,128]{1,0} frobnicate(%cc), weird_attr={1,2}
  ROOT %out = f32[8,128]{1,0} get-tuple-element(%loop), index=1
}
"""  # noqa: E501  (HLO text: one instruction per line, the convolution's attributes are long)


@pytest.fixture(scope="module")
def hand() -> H.HloModule:
    return H.parse_hlo(MODULE, source="hand.hlo")


def node(m: H.HloModule, name: str) -> np.ndarray:
    return m.node_feat[m.names.index(name)]


def test_every_instruction_becomes_a_node_in_text_order(hand: H.HloModule) -> None:
    assert hand.name == "hand" and hand.node_feat.shape == (len(hand.names), NODE_FEAT_DIM)
    assert hand.names[:3] == ["a", "b", "sum"] and hand.names[-1] == "out"
    assert hand.computations == ["add_f32", "fused_computation", "while_body", "while_cond", "main"]
    ops = {n: OPCODE_NAMES.get(int(o), "?") for n, o in zip(hand.names, hand.node_opcode)}
    assert ops["conv"] == "convolution" and ops["f"] == "fusion" and ops["loop"] == "while"
    assert ops["cc"] == "custom-call" and ops["bc"] == "bitcast" and ops["tok"] == "after-all"
    assert hand.node_opcode[hand.names.index("odd")] == 0  # unknown opcode: id 0, as the encoder
    assert [hand.names[i] for i in hand.config_ids] == ["conv", "r", "d"]


def test_shape_type_layout_and_root_columns(hand: H.HloModule) -> None:
    x = node(hand, "x.0")
    assert x[H.ETYPE_COL["f32"]] == 1 and x[SHAPE0 : SHAPE0 + 3].tolist() == [8, 128, 0]
    assert x[H.DIMS_SUM_COL] == 136 and x[PRODUCT_COL] == 1024 and x[H.PARAMETER_NUMBER_COL] == 0
    assert x[LAYOUT0 : LAYOUT0 + 2].tolist() == [1, 0]  # the tiling after ':' is not a layout
    assert node(hand, "r")[LAYOUT0 : LAYOUT0 + 2].tolist() == [0, 1]
    assert node(hand, "img")[H.PARAMETER_NUMBER_COL] == 2
    t = node(hand, "init")
    assert t[H.ETYPE_COL["tuple"]] == 1 and t[H.TUPLE_SIZE_COL] == 2 and t[PRODUCT_COL] == 1
    assert node(hand, "tok")[H.ETYPE_COL["token"]] == 1
    roots = [hand.names[i] for i in np.flatnonzero(hand.node_feat[:, H.IS_ROOT_COL])]
    assert roots == ["sum", "neg", "t", "lt", "out"]


def test_attribute_columns(hand: H.HloModule) -> None:
    c = node(hand, "conv")
    assert c[H.WINDOW_SIZE : H.WINDOW_SIZE + 8].tolist() == [3, 3, 0, 0, 0, 0, 6, 9]
    assert c[H.WINDOW_STRIDE : H.WINDOW_STRIDE + 8].tolist() == [2, 1, 0, 0, 0, 0, 3, 2]
    assert c[H.PAD_LOW : H.PAD_LOW + 2].tolist() == [1, 0] and c[H.PAD_HIGH : H.PAD_HIGH + 2].tolist() == [1, 2]
    assert c[H.WIN_DILATION + 6 : H.WIN_DILATION + 8].tolist() == [2, 1]  # sum, product of [1, 1]
    assert c[H.WINDOW_REVERSAL : H.WINDOW_REVERSAL + 2].tolist() == [1, 0]
    assert c[H.WINDOW_TRUE_COUNT] == 1 and c[H.WINDOW_FALSE_COUNT] == 1
    assert c[H.CONV_DIMS : H.CONV_DIMS + 14].tolist() == [0, 3, 1, 2, 0, 0, 2, 3, 0, 1, 0, 0, 0, 3]
    assert c[H.FEATURE_GROUP_COL] == 2 and c[H.BATCH_GROUP_COL] == 1
    assert node(hand, "d")[H.FEATURE_GROUP_COL] == 0  # only convolutions and custom-calls carry group counts
    s = node(hand, "s0")
    assert s[H.SLICE_START : H.SLICE_START + 12].tolist() == [0, 0, 0, 0, 2, 1, 3, 2, 8, 8, 16, 64]
    p = node(hand, "pd")
    assert p[H.PADDING_LOW : H.PADDING_LOW + 8].tolist() == [1, 0, 1, 0, 1, 1, 2, 1]
    assert node(hand, "ds")[H.DYNAMIC_SLICE_COL : H.DYNAMIC_SLICE_COL + 4].tolist() == [2, 128, 130, 256]
    assert node(hand, "red")[H.DIMENSIONS_COL] == 1 and node(hand, "srt")[H.IS_STABLE_COL] == 1
    # fields an instruction lacks: zeros, and 1 in the empty products
    x = node(hand, "x.0")
    assert x[H.EMPTY_PRODUCT_COLS].tolist() == [1] * 12 and x[H.WINDOW_SIZE] == 0


def test_iota_custom_call_default_layout_and_unbounded_columns() -> None:
    text = """HloModule cols

ENTRY %main (p: f32[4,8]) -> f32[4,8] {
  %p = f32[4,8] parameter(0)
  %io = s32[4,8]{1,0} iota(), iota_dimension=1
  %cc = f32[4,8]{1,0} custom-call(%p), custom_call_target="K"
  %u = f32[?,8]{1,0} parameter(1)
  ROOT %s = f32[] constant(0)
}
"""
    m = H.parse_hlo(text)
    assert node(m, "io")[H.DIMENSIONS_COL] == 1  # iota_dimension, the proto's dimensions field
    cc = node(m, "cc")
    assert cc[H.FEATURE_GROUP_COL] == 1 and cc[H.BATCH_GROUP_COL] == 1  # 1, as in every real file
    assert node(m, "p")[LAYOUT0 : LAYOUT0 + 2].tolist() == [1, 0]  # omitted: XLA's default, descending
    u = node(m, "u")
    assert u[SHAPE0 : SHAPE0 + 3].tolist() == [H.UNBOUNDED_SIZE, 8, 0] and u[LAYOUT0 : LAYOUT0 + 2].tolist() == [1, 0]


def test_nodes_in_fused_computations_are_not_configurable() -> None:
    text = MODULE.replace("ROOT %neg = f32[8,128]{1,0} negate(%p0)",
                          "%rs = f32[128,8]{1,0} reshape(%p0)\n  ROOT %neg = f32[8,128]{1,0} negate(%p0)")
    m = H.parse_hlo(text)
    assert "rs" in m.names and m.fused[m.names.index("rs")] and not m.fused[m.names.index("r")]
    assert [m.names[i] for i in m.config_ids] == ["conv", "r", "d"]


def test_edges_follow_the_dataset_encoder(hand: H.HloModule) -> None:
    e = {(hand.names[u], hand.names[v]) for u, v in hand.edge_index}
    assert ("d", "x.0") in e and ("d", "r") in e and ("conv", "img") in e and ("conv", "w.0") in e
    assert ("red", "sum") in e and ("f", "neg") in e  # a call: an edge to the called root
    assert ("loop", "t") in e and ("loop", "lt") in e and ("loop", "init") in e
    assert ("pd", "zero") in e  # an operand defined further down still connects
    key = hand.edge_index[:, 0] * 10**6 + hand.edge_index[:, 1]
    assert (np.diff(key) > 0).all()  # sorted, no repeats


def test_an_operand_name_resolves_in_its_own_computation_first() -> None:
    text = MODULE.replace("%s.1", "%s")  # while_body and while_cond both name their parameter %s
    m = H.parse_hlo(text)
    reads = [(m.names[u], int(v)) for u, v in m.edge_index if m.names[u] in ("i", "i.1")]
    assert reads == [("i", 5), ("i.1", 11)]  # each reads the parameter of its own computation


def test_node_splits_cut_after_loop_computations(hand: H.HloModule) -> None:
    ends = np.cumsum([3, 2, 6, 4])  # add_f32, fused_computation, while_body, while_cond
    assert hand.node_splits.tolist() == [[0, ends[2], ends[3], len(hand.names)]]


def test_unknown_kinds_warn_once_each(caplog: pytest.LogCaptureFixture) -> None:
    text = MODULE.replace("%odd = f32[8,128]{1,0} frobnicate(%cc), weird_attr={1,2}",
                          "%odd = f32[8,128]{1,0} frobnicate(%cc), weird_attr={1,2}\n"
                          "  %odd2 = f8e4m3fn[8]{0} frobnicate(%cc), weird_attr={3}")
    with caplog.at_level(logging.WARNING, logger="pipeline.io.hlo"):
        H.parse_hlo(text, source="w.hlo")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("opcode 'frobnicate'" in s for s in msgs) == 1
    assert sum("attribute 'weird_attr'" in s for s in msgs) == 1
    assert sum("element type 'f8e4m3fn'" in s for s in msgs) == 1
    assert all(s.startswith("w.hlo: ") for s in msgs) and len(msgs) == 3


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content,problem", [
    (b"", "is empty"),
    (b"\x00\x01\x02binary\xff", "binary file"),
    (b"def f(x):\n    return x\n", "is not HLO module text"),
    (b"HloModule m\n\nENTRY %main () -> f32[] {\n  ROOT %c = f32[] constant(0)\n}\n", "no layout-configurable"),
    (b"HloModule m\n\nENTRY %main () -> f32[] {\n  this is not an instruction\n}\n", "line 4 is not an HLO"),
])
def test_bad_input_is_one_line_nonzero_exit_and_no_file(tmp_path: Path, content: bytes, problem: str) -> None:
    src, out = tmp_path / "in.hlo.txt", tmp_path / "out.npz"
    src.write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        run(src, out, configs=4)
    assert str(src) in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_the_command_writes_a_layout_file_and_fails_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "jax.npz"
    cmd = [sys.executable, "-m", "pipeline.featurize", f"hlo={EXAMPLE}", f"out={out}", "configs=20", "search=default"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    g = read_graph(out)
    assert g.kind == "layout" and g.num_configs == 20 and g.num_config_nodes == 14  # 6 dots, 1 convolution, 7 reshapes
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.featurize", f"hlo={bad}", f"out={tmp_path / 'b.npz'}"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "error:" in r.stderr
    assert not (tmp_path / "b.npz").exists()


# -- the JAX example against the real files (tests/test_hlo_real.py: its statistics) ---------------


def test_jax_example_is_parsed_whole() -> None:
    m = H.read_hlo(EXAMPLE)
    assert (m.node_opcode > 0).all()  # every opcode of the example is in the dataset's vocabulary
    ops = {OPCODE_NAMES[int(o)] for o in m.node_opcode[m.config_ids]}
    assert ops == {"dot", "convolution", "reshape"}
    arrays, names = hlo_to_arrays(EXAMPLE.read_text(), configs=30, seed=1)
    assert arrays["node_config_feat"].shape == (30, len(names), 18) and "conv_general_dilated.1" in names


# columns where the example may leave the real files' range, and why that is the program, not the parser
EXEMPT = {
    30: "parameter_number: the example's entry takes 7 arrays (0-6); the sample files' entries take at most 4",
}


def test_jax_example_features_lie_within_the_real_files_ranges(real_files: list[Path]) -> None:
    layout = [p for p in real_files if "layout" in p.parts]
    lo = np.full(NODE_FEAT_DIM, np.inf)
    hi = np.full(NODE_FEAT_DIM, -np.inf)
    for p in layout:
        with np.load(p) as z:
            nf = z["node_feat"]
        lo, hi = np.minimum(lo, nf.min(0)), np.maximum(hi, nf.max(0))
    m = H.read_hlo(EXAMPLE)
    outside = [c for c in range(NODE_FEAT_DIM)
               if c not in EXEMPT and ((m.node_feat[:, c] < lo[c]).any() or (m.node_feat[:, c] > hi[c]).any())]
    assert outside == [], {c: (m.node_feat[:, c].min(), m.node_feat[:, c].max(), lo[c], hi[c]) for c in outside}
