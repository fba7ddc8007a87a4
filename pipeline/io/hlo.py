"""HLO module text (what XLA dumps) -> the arrays of a TpuGraphs layout file.

    from pipeline.io.hlo import parse_hlo, read_hlo
    module = parse_hlo(text, source="model.hlo.txt")   # or read_hlo(path)
    module.node_feat, module.node_opcode, module.edge_index, module.node_splits, module.names

Reads the text form of an `HloModule` (`HloModule ...`, computations `%name (...) -> ... {`
or `ENTRY ...`, one instruction a line, `}`); everything else in a dump (the FileNames /
StackFrames tables newer XLA prints, blank lines, comments) is skipped. Nodes are the
instructions in text order, computations in text order, which is how the dataset's encoder
walks a module proto (every computation, every instruction). numpy and the standard library
only: JAX or XLA are never imported here.

Sources for every convention below (facts only): google-research-datasets/tpu_graphs,
`tpu_graphs/process_data/xla/featurizers.h` (`FeaturizeHloInstruction`: the order and meaning
of the 140 node_feat columns) and `tpu_graphs/process_data/xla/hlo_encoder.cc`
(`EncodeHloModule`: nodes, edges, computation splits); docs/FORMAT.md restates the columns and
checks them on the real files. The column constants live here, beside those features.layout
already names; `pipeline.sample.hlo` imports them from here.

Unknown opcodes, element types and attributes are data: the node gets opcode 0 / no type
one-hot / no feature, and one warning per unknown kind is logged (not one per node). Text that
is not an HLO module raises a one-sentence `DataError` naming the file.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.layout import LAYOUT0, NODE_FEAT_DIM, OPCODE_NAMES, SHAPE0, TYPE_COLS
from pipeline.core.errors import DataError

log = logging.getLogger(__name__)

# -- node_feat columns (featurizers.h, FeaturizeHloInstruction, in push order) ---------------------
# features.layout names: TYPE_COLS 2-20, SHAPE_COLS 21-26, PRODUCT_COL 28, LAYOUT_COLS 134-139.
IS_ROOT_COL = 0            # "is_root": the instruction is its computation's root (ROOT in text)
ELEMENT_SIZE_COL = 1       # "element_size_in_bits": the encoder always writes 0
# "element_type" one-hot over PRIMITIVE_TYPE_FEATURES, in this order (features.layout.ELEMENT_BYTES
# follows it); a type outside the list sets no column, as in the encoder
ELEMENT_TYPES = ("invalid", "pred", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64", "f16", "f32",
                 "f64", "bf16", "c64", "c128", "tuple", "opaque", "token")
ETYPE_COL = {t: TYPE_COLS.start + k for k, t in enumerate(ELEMENT_TYPES)}
DIMS_SUM_COL = 27          # shape "dimensions_sum" (27) and "dimensions_product" (28 = PRODUCT_COL) over all dims
TUPLE_SIZE_COL = 29        # "tuple_shapes_size": top-level element count of a tuple shape
PARAMETER_NUMBER_COL = 30  # "parameter_number" (0 for every non-parameter)
DIMENSIONS_COL = 31        # 31-36 "dimensions": broadcast / reduce / transpose / concatenate ... dims, first 6;
                           # an iota's iota_dimension is its one "dimensions" entry (the proto's field)
# "window" (FeaturizeWindow): six fields of 6 leading values + sum + product (product 1 when
# empty), then window_reversal as 6 bools + true count (91) + false count (92)
WINDOW_SIZE, WINDOW_STRIDE, PAD_LOW, PAD_HIGH, WIN_DILATION, BASE_DILATION = 37, 45, 53, 61, 69, 77
WINDOW_REVERSAL, WINDOW_TRUE_COUNT, WINDOW_FALSE_COUNT = 85, 91, 92
# "convolution_dim_numbers" 93-106: input batch, input feature, input spatial 0-3, kernel input
# feature, kernel output feature, kernel spatial 0-3, output batch, output feature
CONV_DIMS = 93
FEATURE_GROUP_COL, BATCH_GROUP_COL = 107, 108  # "feature_group_count", "batch_group_count"
# the opcodes whose proto carries the two group counts (1 unless set): 1 for every one of them in the
# real files (convolution and custom-call), 0 for every other node
GROUP_COUNT_OPCODES = ("convolution", "custom-call")
# "slice_dims" 109-120: start, stride, limit, each 2 leading values + sum + product
SLICE_START, SLICE_STRIDE, SLICE_LIMIT = 109, 113, 117
DYNAMIC_SLICE_COL = 121    # "dynamic_slice_sizes" 121-124: 2 leading + sum + product
PADDING_LOW, PADDING_HIGH = 125, 129  # "padding_config" edge low / high: 2 leading + sum + product
IS_STABLE_COL = 133        # "is_stable" (sort)
# the product columns of the window, slice, dynamic_slice and padding fields: 1 when the field is empty
EMPTY_PRODUCT_COLS = [44, 52, 60, 68, 76, 84, 112, 116, 120, 124, 128, 132]

OPCODE_IDS = {name: op for op, name in OPCODE_NAMES.items()}
# Layout-configurable nodes. The real layout files (all 8 in tpugraphs-samples, docs/FORMAT.md)
# list only convolution, dot and reshape in node_config_ids: every convolution and dot, and
# almost every reshape; the TpuGraphs paper describes the layout configs as the dimension
# orders of these nodes' inputs and outputs. We take every one of them.
CONFIGURABLE_OPCODES = frozenset({OPCODE_IDS["convolution"], OPCODE_IDS["dot"], OPCODE_IDS["reshape"]})
# the encoder cuts node_splits after a computation whose name contains one of these (hlo_encoder.cc)
SPLIT_NAME_PARTS = ("cluster", "while", "cond")
# attributes that name called computations (the encoder adds an edge to each one's root)
CALL_ATTRS = ("calls", "to_apply", "body", "condition", "branch_computations", "true_computation",
              "false_computation", "select", "scatter", "called_computations")
# attributes read into features, and those known to carry nothing the 140 columns encode
FEATURE_ATTRS = {"dimensions", "window", "dim_labels", "feature_group_count", "batch_group_count", "slice",
                 "dynamic_slice_sizes", "padding", "is_stable", "iota_dimension"}
IGNORED_ATTRS = {
    "metadata", "backend_config", "frontend_attributes", "sharding", "index", "lhs_contracting_dims",
    "rhs_contracting_dims", "lhs_batch_dims", "rhs_batch_dims", "kind", "custom_call_target",
    "api_version", "operand_layout_constraints", "custom_call_has_side_effect", "output_to_operand_aliasing",
    "direction", "type", "replica_groups", "channel_id", "use_global_device_ids",
    "constrain_layout", "exponent_bits", "mantissa_bits", "fft_type", "fft_length", "distribution",
    "offset_dims", "collapsed_slice_dims", "start_index_map", "index_vector_dim", "slice_sizes",
    "indices_are_sorted", "unique_indices", "update_window_dims", "inserted_window_dims",
    "scatter_dims_to_operand_dims", "operand_batching_dims", "start_indices_batching_dims",
    "input_batching_dims", "scatter_indices_batching_dims", "precision_config", "algorithm",
    "operand_precision", "statistics_viz", "schedule", "source_target_pairs", "is_host_transfer",
    "dimensions_to_reduce", "largest", "k", "control-predecessors", "origin", "result_accuracy",
    "is_cross_program_prefetch", "cross_program_prefetch_index", "tuple_index", "literal", "rng_algorithm",
    "custom_call_schedule", "padding_type", "feature_index", "epsilon", "triangular_solve_options",
    "left_side", "lower", "unit_diagonal", "transpose_a", "split_dimension", "concat_dimension",
    "split_count", "async_execution_thread", "layout", "inplace", "sparsity", "mode", "async_group_id",
    "wait_on_operation_queues",
} | set(CALL_ATTRS)


@dataclass
class HloModule:
    """A parsed module as the layout file's arrays, plus what a ranking needs to name nodes.

    Shapes: node_feat (N, 140) float32, node_opcode (N,) uint8, edge_index (E, 2) int64 (row
    [u, v]: u consumes v), node_splits (1, S) int64, names (N,) instruction names, config_ids
    (NC,) int64 the layout-configurable nodes, operands: each node's operand node indices in
    operand order (repeats kept), layouts / dims: each node's minor-to-major layout and shape
    dims, attrs: each node's attributes as text (`dim_labels`, `lhs_batch_dims`, ...), fused:
    (N,) bool, the node lies in a computation a fusion calls, scheduled: the header says
    `is_scheduled=true`.
    """

    name: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    node_splits: np.ndarray
    names: list[str]
    config_ids: np.ndarray
    operands: list[list[int]] = field(repr=False)
    layouts: list[tuple[int, ...]] = field(repr=False)
    computations: list[str] = field(repr=False)
    dims: list[tuple[int, ...]] = field(default_factory=list, repr=False)
    attrs: list[dict[str, str]] = field(default_factory=list, repr=False)
    fused: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    scheduled: bool = False


# -- text scanning -----------------------------------------------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"
_HEADER = re.compile(r"^(ENTRY\s+)?%?([A-Za-z_][\w.\-]*)\s*(\(.*\)\s*->\s*.*)?\{$")
_INSTR = re.compile(r"^(ROOT\s+)?%?([A-Za-z_][\w.\-]*)\s*=\s*(.*)$")
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\](?:\{([^}]*)\})?")
_COMMENT = re.compile(r"/\*.*?\*/")


def _scan(s: str, start: int = 0):
    """(index, character, bracket depth after it) of each character of `s` from `start` that lies
    outside quoted strings."""
    depth, quote = 0, False
    for i in range(start, len(s)):
        ch = s[i]
        if quote:
            quote = ch != '"' or s[i - 1] == "\\"
            continue
        if ch == '"':
            quote = True
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        yield i, ch, depth


def split_top(s: str, sep: str = ",") -> list[str]:
    """`s` split at `sep` outside brackets and quoted strings, pieces stripped, empty ones dropped."""
    out, start = [], 0
    for i, ch, depth in _scan(s):
        if ch == sep and depth == 0:
            out.append(s[start:i].strip())
            start = i + 1
    out.append(s[start:].strip())
    return [p for p in out if p]


def _matching(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i] (quoted strings skipped); -1 if unclosed."""
    return next((j for j, ch, depth in _scan(s, i) if ch in _CLOSE and depth == 0), -1)


@dataclass
class Shape:
    """An instruction's result shape: element type, dims, minor-to-major layout, tuple size."""

    dtype: str
    dims: tuple[int, ...] = ()
    layout: tuple[int, ...] = ()
    tuple_size: int = 0


UNBOUNDED_SIZE = 1  # an unbounded dim `?`: its place kept (rank, layout), this size (the proto's INT64_MIN is no size)


def parse_shape(s: str) -> tuple[Shape, int]:
    """The shape at the start of `s` and the length of its text. `f32[8,128]{1,0:T(8,128)}`
    (the layout is the minor_to_major list before any ':' tiling), `f32[]`, `token[]` or a
    tuple `(f32[2]{0}, s32[])`; dynamic bounds `<=8` count as their bound, an unbounded `?`
    as UNBOUNDED_SIZE. A layout the text omits is XLA's default, as its parser assigns it:
    descending minor-to-major (`f32[8,128]` is `{1,0}`)."""
    s = s.lstrip()
    if s.startswith("("):
        end = _matching(s, 0)
        if end < 0:
            raise ValueError("unclosed tuple shape")
        return Shape("tuple", tuple_size=len(split_top(s[1:end]))), end + 1
    m = _ARRAY.match(s)
    if not m:
        raise ValueError(f"no shape at '{s[:30]}'")
    dims = tuple(UNBOUNDED_SIZE if d.strip() == "?" else int(d.strip().lstrip("<="))
                 for d in m.group(2).split(",") if d.strip())
    if m.group(3) is not None:
        minor = m.group(3).split(":")[0]
        layout = tuple(int(x) for x in minor.split(",") if x.strip())
    else:
        layout = tuple(range(len(dims) - 1, -1, -1))
    return Shape(m.group(1), dims, layout), m.end()


@dataclass
class Instruction:
    """One instruction line, split into its parts."""

    name: str
    root: bool
    shape: Shape
    opcode: str
    args: list[str]
    attrs: dict[str, str]


def parse_instruction(line: str) -> Instruction | None:
    """The instruction on `line`, or None when the line is not one."""
    m = _INSTR.match(line)
    if not m:
        return None
    rest = m.group(3)
    try:
        shape, n = parse_shape(rest)
    except ValueError:
        return None
    rest = rest[n:].lstrip()
    op = re.match(r"([a-z][a-z0-9\-]*)\s*\(", rest)
    if not op:
        return None
    start = op.end() - 1
    end = _matching(rest, start)
    if end < 0:
        return None
    args = split_top(rest[start + 1 : end])
    attrs = {}
    for part in split_top(rest[end + 1 :]):
        key, eq, value = part.partition("=")
        attrs[key.strip()] = value.strip() if eq else ""
    return Instruction(m.group(2), bool(m.group(1)), shape, op.group(1), args, attrs)


def _operand_name(arg: str) -> str:
    """The instruction an operand names: `%x`, `x` or `f32[8]{0} %x` -> `x`."""
    return arg.split()[-1].lstrip("%") if arg.split() else ""


def _ints(s: str) -> list[int]:
    """Every integer in `s`, in order."""
    return [int(x) for x in re.findall(r"-?\d+", s)]


def _called(value: str) -> list[str]:
    """Computation names in a `calls=` style value: `%c` or `{%a, %b}`."""
    return [v.strip().lstrip("%") for v in value.strip("{}").split(",") if v.strip()]


# -- featurization -----------------------------------------------------------------------------------


def _put(row: np.ndarray, col: int, values: list[int], lead: int, aggregate: bool) -> None:
    """`lead` leading values from `col`, then (with `aggregate`) their sum and product over all of them."""
    k = min(lead, len(values))
    row[col : col + k] = values[:k]
    if aggregate:
        row[col + lead] = sum(values)
        row[col + lead + 1] = math.prod(values)


def _window(row: np.ndarray, value: str, warn) -> None:
    """The `window={size=3x3 stride=1x1 pad=1_1x1_1 lhs_dilate=.. rhs_dilate=.. rhs_reversal=..}` field."""
    parts = dict(p.split("=", 1) for p in value.strip("{}").split() if "=" in p)
    size = [int(x) for x in parts.get("size", "").split("x") if x]
    n = len(size)

    def field_(key: str, default: int) -> list[int]:
        return [int(x) for x in parts[key].split("x")] if key in parts else [default] * n

    pads = [p.split("_") for p in parts["pad"].split("x")] if "pad" in parts else [["0", "0"]] * n
    for col, vals in ((WINDOW_SIZE, size), (WINDOW_STRIDE, field_("stride", 1)),
                      (PAD_LOW, [int(p[0]) for p in pads]), (PAD_HIGH, [int(p[1]) for p in pads]),
                      (WIN_DILATION, field_("rhs_dilate", 1)), (BASE_DILATION, field_("lhs_dilate", 1))):
        _put(row, col, vals, 6, True)
    rev = field_("rhs_reversal", 0)
    _put(row, WINDOW_REVERSAL, rev, 6, False)
    row[WINDOW_TRUE_COUNT] = sum(1 for r in rev if r)
    row[WINDOW_FALSE_COUNT] = sum(1 for r in rev if not r)
    for key in set(parts) - {"size", "stride", "pad", "lhs_dilate", "rhs_dilate", "rhs_reversal"}:
        warn(f"window field '{key}'")


def _dim_labels(row: np.ndarray, value: str) -> None:
    """Convolution dimension numbers from `dim_labels=b01f_01io->b01f` (b batch, f feature,
    i / o kernel input / output feature, digits the spatial dims in order)."""
    lhs, _, out = value.partition("->")
    inp, _, ker = lhs.partition("_")

    def spatial(labels: str) -> list[int]:
        return [labels.index(str(k)) for k in range(sum(c.isdigit() for c in labels))]

    vals = [inp.find("b"), inp.find("f"), *(spatial(inp) + [0] * 4)[:4], ker.find("i"), ker.find("o"),
            *(spatial(ker) + [0] * 4)[:4], out.find("b"), out.find("f")]
    row[CONV_DIMS : CONV_DIMS + 14] = [max(v, 0) for v in vals]


def _slices(value: str) -> tuple[list[int], list[int], list[int]]:
    """Starts, strides and limits of `slice={[0:4:1], [0:8]}` (stride 1 when absent)."""
    starts, strides, limits = [], [], []
    for part in re.findall(r"\[([^\]]*)\]", value):
        nums = [int(x) for x in part.split(":")]
        starts.append(nums[0])
        limits.append(nums[1])
        strides.append(nums[2] if len(nums) > 2 else 1)
    return starts, strides, limits


def feature_row(inst: Instruction, warn) -> np.ndarray:
    """The 140 node_feat values of one instruction (featurizers.h, FeaturizeHloInstruction)."""
    row = np.zeros(NODE_FEAT_DIM, dtype=np.float32)
    row[EMPTY_PRODUCT_COLS] = 1.0
    row[IS_ROOT_COL] = float(inst.root)
    sh = inst.shape
    if sh.dtype in ETYPE_COL:
        row[ETYPE_COL[sh.dtype]] = 1.0
    else:
        warn(f"element type '{sh.dtype}'")
    _put(row, SHAPE0, list(sh.dims), 6, True)
    row[TUPLE_SIZE_COL] = sh.tuple_size
    row[LAYOUT0 : LAYOUT0 + min(6, len(sh.layout))] = sh.layout[:6]
    a = inst.attrs
    if inst.opcode == "parameter" and inst.args:
        row[PARAMETER_NUMBER_COL] = _ints(inst.args[0])[0]
    if "dimensions" in a:
        _put(row, DIMENSIONS_COL, _ints(a["dimensions"]), 6, False)
    elif "iota_dimension" in a:
        _put(row, DIMENSIONS_COL, _ints(a["iota_dimension"]), 6, False)
    if "window" in a:
        _window(row, a["window"], warn)
    grouped = "dim_labels" in a or inst.opcode in GROUP_COUNT_OPCODES
    if "dim_labels" in a:
        _dim_labels(row, a["dim_labels"])
    # the proto holds 1 for a convolution's or custom-call's group counts; the text prints them only when not 1
    row[FEATURE_GROUP_COL] = int(a.get("feature_group_count", 1 if grouped else 0))
    row[BATCH_GROUP_COL] = int(a.get("batch_group_count", 1 if grouped else 0))
    if "slice" in a:
        starts, strides, limits = _slices(a["slice"])
        _put(row, SLICE_START, starts, 2, True)
        _put(row, SLICE_STRIDE, strides, 2, True)
        _put(row, SLICE_LIMIT, limits, 2, True)
    if "dynamic_slice_sizes" in a:
        _put(row, DYNAMIC_SLICE_COL, _ints(a["dynamic_slice_sizes"]), 2, True)
    if "padding" in a and inst.opcode == "pad":  # `padding=0_1x2_3_1`: low_high[_interior] per dim
        dims = [[int(x) for x in d.split("_")] for d in a["padding"].split("x")]
        _put(row, PADDING_LOW, [d[0] for d in dims], 2, True)
        _put(row, PADDING_HIGH, [d[1] for d in dims], 2, True)
    row[IS_STABLE_COL] = float(a.get("is_stable", "false") == "true")
    for key in a:
        if key not in FEATURE_ATTRS and key not in IGNORED_ATTRS:
            warn(f"attribute '{key}'")
    return row


# -- the module --------------------------------------------------------------------------------------


def parse_hlo(text: str, source: str = "<hlo>", edges: str = "dataset") -> HloModule:
    """Parse HLO module text into the layout file's arrays.

    Args:
        text: the module's text (`HloModule` header optional when computations follow).
        source: the file name that errors and warnings name.
        edges: "dataset" (default) builds edge_index as the dataset's encoder does
            (hlo_encoder.cc): each instruction's operands deduplicated, one edge from an
            instruction to the root of each computation it calls, all rows sorted.
            "operands" keeps each operand in operand order, repeats included, and adds no
            call edges (the embedded sample generator's convention).

    Raises:
        DataError: the text holds no HLO computation with an instruction, or an instruction
            line cannot be read.
    """
    if edges not in ("dataset", "operands"):
        raise ValueError(f"edges must be 'dataset' or 'operands', not {edges!r}")
    warned: set[str] = set()

    def warn(kind: str) -> None:
        if kind not in warned:
            warned.add(kind)
            log.warning("%s: unknown %s, left out of the features (warned once)", source, kind)

    module_name, scheduled = "", False
    comps: list[tuple[str, int, int, int]] = []  # name, first node, end, root node
    insts: list[Instruction] = []
    current: tuple[str, int] | None = None
    root = -1
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line or line.startswith("//") or line.startswith("#"):
            continue
        if current is None:
            if line.startswith("HloModule"):
                module_name = (line.split() + [""])[1].rstrip(",")
                scheduled = re.search(r"\bis_scheduled=true\b", line) is not None
                continue
            m = _HEADER.match(line)
            if m:
                current, root = (m.group(2), len(insts)), -1
            continue
        if line == "}":
            if len(insts) == current[1]:
                raise DataError(source, f"computation '{current[0]}' (line {lineno}) has no instruction")
            comps.append((current[0], current[1], len(insts), root if root >= 0 else len(insts) - 1))
            current = None
            continue
        inst = parse_instruction(line)
        if inst is None:
            raise DataError(source, f"line {lineno} is not an HLO instruction: '{line[:60]}'")
        if inst.root:
            root = len(insts)
        insts.append(inst)
    if current is not None:
        raise DataError(source, f"computation '{current[0]}' is not closed by '}}'")
    if not comps:
        raise DataError(source, "is not HLO module text (no computation with instructions found)")

    n = len(insts)
    index = {inst.name: i for i, inst in enumerate(insts)}  # XLA's names are unique in a module;
    local = [{insts[i].name: i for i in range(first, end)} for _, first, end, _ in comps]  # else: own computation first
    comp_of = np.repeat(np.arange(len(comps)), [end - first for _, first, end, _ in comps])
    comp_root = {name: r for name, _, _, r in comps}
    opcodes = np.zeros(n, dtype=np.uint8)
    rows, operands, rows_e = [], [], []
    for i, inst in enumerate(insts):
        op = OPCODE_IDS.get(inst.opcode, 0)
        if not op:
            warn(f"opcode '{inst.opcode}'")
        opcodes[i] = op
        rows.append(feature_row(inst, warn))
        ops: list[int] = []
        if inst.opcode not in ("constant", "parameter", "iota", "rng-get-and-update-state"):
            for arg in inst.args:
                v = local[comp_of[i]].get(_operand_name(arg), index.get(_operand_name(arg)))
                if v is None:
                    warn(f"operand reference '{_operand_name(arg)[:30]}'")
                else:
                    ops.append(v)
        operands.append(ops)
        if edges == "operands":
            rows_e.extend((i, v) for v in ops)
            continue
        rows_e.extend((i, v) for v in sorted(set(ops)))
        for key in CALL_ATTRS:
            for comp in _called(inst.attrs.get(key, "")) if key in inst.attrs else []:
                if comp in comp_root:
                    rows_e.append((i, comp_root[comp]))
                else:
                    warn(f"called computation '{comp[:30]}'")
    edge_index = np.asarray(rows_e, dtype=np.int64).reshape(-1, 2)
    if edges == "dataset" and edge_index.size:
        edge_index = np.unique(edge_index, axis=0)  # the encoder's sparse tensor: sorted, unique rows
    # node_splits: 0, the end of every computation named like a loop / cluster, then N
    splits = [0] + [end for name, _, end, _ in comps if any(p in name for p in SPLIT_NAME_PARTS)]
    if splits[-1] < n:
        splits.append(n)
    fused = _fused_nodes(insts, comps, comp_of)
    # configurable: every convolution, dot and reshape outside fused computations, as the dataset's
    config_ids = np.flatnonzero(np.isin(opcodes, list(CONFIGURABLE_OPCODES)) & ~fused).astype(np.int64)
    return HloModule(
        name=module_name,
        node_feat=np.stack(rows).astype(np.float32),
        node_opcode=opcodes,
        edge_index=edge_index,
        node_splits=np.asarray([splits], dtype=np.int64),
        names=[inst.name for inst in insts],
        config_ids=config_ids,
        operands=operands,
        layouts=[inst.shape.layout for inst in insts],
        computations=[c[0] for c in comps],
        dims=[inst.shape.dims for inst in insts],
        attrs=[inst.attrs for inst in insts],
        fused=fused,
        scheduled=scheduled,
    )


def _fused_nodes(insts: list[Instruction], comps: list[tuple[str, int, int, int]], comp_of: np.ndarray) -> np.ndarray:
    """(N,) bool: the node lies in a computation a fusion instruction calls, or one such a
    computation calls in turn (a fused computation is one kernel, not layout-configurable nodes)."""
    called: dict[str, set[str]] = {}
    fused_roots: set[str] = set()
    for i, inst in enumerate(insts):
        here = comps[comp_of[i]][0]
        for key in CALL_ATTRS:
            if key in inst.attrs:
                names = set(_called(inst.attrs[key]))
                called.setdefault(here, set()).update(names)
                if inst.opcode == "fusion":
                    fused_roots |= names
    seen, stack = set(), list(fused_roots)
    while stack:
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(called.get(c, ()))
    in_comp = np.array([name in seen for name, *_ in comps], dtype=bool)
    return in_comp[comp_of] if len(comp_of) else np.zeros(0, dtype=bool)


# -- before or after XLA's optimizations -------------------------------------------------------------
# The dataset's graphs are modules as they stood before XLA's optimizations (docs/FORMAT.md, "From
# HLO text"). Signs of a module after them, with the thresholds that call it optimized; the real
# layout files (tpugraphs-samples) and the dataset's own unet3d module stay far inside each one:
# - `is_scheduled=true` in the header: only the scheduler, XLA's last pass, sets it;
# - any bitcast: XLA's simplifier and layout assignment make them, frontends never do (real: 0);
# - fusions above FUSION_MAX_SHARE of the instructions and above FUSION_MAX_COUNT (real files: 0 to
#   2 fusions, at most 0.41 % of a graph; a fused CPU or TPU module: one for most elementwise chains);
# - copies above the same share and count (real files: none; layout assignment inserts them);
# - non-default layouts on more than NONDEFAULT_MAX_SHARE of the rank >= 2 array tensors (real
#   files: 1 to 14 %; XLA's TPU layout assignment sets most of them).
FUSION_MAX_COUNT, FUSION_MAX_SHARE = 2, 0.01
NONDEFAULT_MAX_SHARE = 0.30


def optimization_signs(m: HloModule) -> dict[str, float]:
    """Counts of what XLA's optimizations leave in a module: fusion, bitcast and copy
    instructions, instructions in all, rank >= 2 array tensors and the share of them whose
    layout is not the default descending one, and whether the header says it is scheduled."""
    op = m.node_opcode
    ranked = [i for i, d in enumerate(m.dims) if len(d) >= 2 and len(m.layouts[i]) == len(d)]
    nondefault = sum(m.layouts[i] != tuple(range(len(m.dims[i]) - 1, -1, -1)) for i in ranked)
    return {"instructions": int(op.size), "fusion": int((op == OPCODE_IDS["fusion"]).sum()),
            "bitcast": int((op == OPCODE_IDS["bitcast"]).sum()), "copy": int((op == OPCODE_IDS["copy"]).sum()),
            "rank2_tensors": len(ranked), "nondefault_share": nondefault / max(len(ranked), 1),
            "scheduled": float(m.scheduled)}


def optimized_reasons(signs: dict[str, float]) -> list[str]:
    """The signs (optimization_signs) past their thresholds, each in a few words; [] = a module
    before XLA's optimizations."""
    n, out = signs["instructions"], []
    if signs["scheduled"]:
        out.append("is_scheduled=true")
    if signs["bitcast"]:
        out.append(f"{signs['bitcast']} bitcasts")
    for kind in ("fusion", "copy"):
        if signs[kind] > max(FUSION_MAX_COUNT, FUSION_MAX_SHARE * n):
            out.append(f"{signs[kind]} {kind} instructions")
    if signs["nondefault_share"] > NONDEFAULT_MAX_SHARE:
        out.append(f"{signs['nondefault_share']:.0%} of rank>=2 tensors with assigned layouts")
    return out


BEFORE_OPTIMIZATIONS = ("dump the module before XLA's optimizations instead: `jax.jit(f).lower(*args)"
                        ".as_text(dialect=\"hlo\")` in JAX, or the `*.before_optimizations.txt` file of "
                        "XLA_FLAGS=--xla_dump_to=<dir>")


def read_hlo_text(path: str | Path) -> str:
    """The text of an HLO dump; a missing, empty or binary file is a one-sentence DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "HLO text file not found")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, "is empty, not HLO module text")
    if b"\x00" in data[:4096]:
        raise DataError(path, "is a binary file, not HLO module text (dump the module as text, e.g. `.as_text()`)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text, not HLO module text") from None


def read_hlo(path: str | Path, edges: str = "dataset") -> HloModule:
    """`parse_hlo` of the file at `path`."""
    return parse_hlo(read_hlo_text(path), source=str(path), edges=edges)
