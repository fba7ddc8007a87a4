"""Candidate layout configs of a program: the node_config_feat rows the dataset's autotuner would try.

A layout file's node_config_feat (C, NC, 18) gives, per config and configurable node, three
groups of 6: the output's, the input's (operand 0) and the kernel's (operand 1 of a convolution
or dot) minor-to-major dimension order, padded with -1; a group all -1 leaves that tensor to the
compiler (docs/FORMAT.md, "Config columns"). What the real files hold (ROLE_TABLE's files):

- a convolution's or dot's group lists the two minor-most dims of its tensor (its whole order
  up to rank 2), and the two are always the same pair of ROLES, in either order: a
  convolution's output and input take their batch and feature dims, its kernel its input and
  output feature dims (never a spatial dim, never -1); a dot's tensor takes its two minor-most
  non-batch dims (output: the lhs and rhs free dims; lhs: free and contracting; rhs:
  contracting and free), or -1 for its operands now and then;
- a reshape's group lists its tensor's whole order (rank 4 too), or is -1; its kernel group
  is always -1; when both sides have dims, the input's order is the output's carried through
  the reshape (each output dim's input dims, minor first; size-1 input dims major-most), and
  -1 with it; a rank-1 group is [0] or -1.

So each group here is drawn by role, not by position: `Group` holds the dims of its roles, and
ROLE_TABLE (learned from real files by `learn_role_table`, see its provenance) says how often
the autotuner lists them in the compiler's order ("descending": the pair in descending dim
order, which is XLA's default for that tensor; the dataset's own default config lists it for
49 of its 53 convolutions' output and input groups), the other way ("swapped"; a reshape:
"permuted", any other order of its dims) or leaves the tensor to the compiler ("unset", -1).

Config 0 is the compiler's default as the dataset's default config writes it: every
convolution and dot group in descending order, a reshape's rank >= 2 groups in their
descending order and its rank-1 groups -1. `search="random"` draws every group from the
random-search files' frequencies; `search="default"` changes one to three nodes of config 0
per config, each node's groups drawn from the default-search files' frequencies. numpy only; a
pure function of its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.layout import LAYOUT_CONFIG_DIM, node_rank

GROUPS = 3  # output, input, kernel
KINDS = ("convolution", "dot", "reshape")
SEARCHES = ("default", "random")
MAX_ROUNDS = 50  # draws of fresh configs before accepting fewer than asked (a small config space)

# How often the autotuner lists each group's role dims in the compiler's (descending) order, the
# other way, or leaves it to the compiler, per (kind, group) and search: counts of (config, node)
# values in the real files. Regenerate with `python -m features.hlo_configs <data root>` (prints
# this dict). Learned 2026-12-08 from the 6 layout files of tpugraphs-samples:
# layout/xla/default/{train/unet3d,test/cd708819d3f5103afd6460b15e74eaf3},
# layout/xla/random/{train/openai_v0_rnn_optimized,test/cd708819d3f5103afd6460b15e74eaf3},
# layout/nlp/default/test/3a0c5517a87df8d82fd637b83298a3ba, layout/nlp/random/test/23559853d9702baaaacbb0c83fd32266.
# The convolution rows come from unet3d alone (the only sample file with convolutions; no
# random-search file has one, so random search uses the default counts there). Never learned
# from ../shared/tpugraphs-hlo (the module whose configs score this table, tests/test_hlo_real.py).
ROLE_TABLE: dict[tuple[str, str], dict[str, dict[str, int]]] = {
    ("convolution", "input"): {"default": {"descending": 49753, "swapped": 11674, "unset": 0}},
    ("convolution", "kernel"): {"default": {"descending": 44266, "swapped": 17161, "unset": 0}},
    ("convolution", "output"): {"default": {"descending": 57006, "swapped": 4421, "unset": 0}},
    ("dot", "input"): {"default": {"descending": 514477, "swapped": 301713, "unset": 7610},
                       "random": {"descending": 27721, "swapped": 28258, "unset": 2701}},
    ("dot", "kernel"): {"default": {"descending": 459800, "swapped": 356390, "unset": 7610},
                        "random": {"descending": 27585, "swapped": 28394, "unset": 2701}},
    ("dot", "output"): {"default": {"descending": 440001, "swapped": 383799, "unset": 0},
                        "random": {"descending": 30121, "swapped": 28559, "unset": 0}},
    ("reshape", "input"): {"default": {"descending": 6517, "permuted": 0, "unset": 8497},
                           "random": {"descending": 2293, "permuted": 0, "unset": 2727}},
    ("reshape", "output"): {"default": {"descending": 22275, "permuted": 7083, "unset": 22153},
                            "random": {"descending": 13309, "permuted": 8254, "unset": 9977}},
}
GROUP_NAMES = ("output", "input", "kernel")
OUTCOMES = {"convolution": ("descending", "swapped", "unset"), "dot": ("descending", "swapped", "unset"),
            "reshape": ("descending", "permuted", "unset")}


@dataclass(frozen=True)
class Group:
    """One tensor of a configurable node: its rank and the dims its group lists.

    `roles`: for a convolution or dot, the two dims of its roles in descending order (a rank-1
    tensor: (0,)); for a reshape, all its dims in descending order. Empty: no tensor or a
    scalar, always -1."""

    rank: int
    roles: tuple[int, ...] = ()


@dataclass(frozen=True)
class Node:
    """A configurable node: its kind ("convolution", "dot", "reshape"), its output, input and
    kernel groups, and for a reshape with dims on both sides the input dims each output dim
    covers (`carry[j]`: input dims of output dim j; None when the reshape is no bitcast)."""

    kind: str
    groups: tuple[Group, Group, Group]
    carry: tuple[tuple[int, ...], ...] | None = None


def reshape_carry(in_dims: tuple[int, ...], out_dims: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | None:
    """The input dims each output dim of a reshape covers when it only merges and splits dims
    (a bitcast in some layout): `[a,b,c] -> [a*b,c]` gives ((0, 1), (2,)). Size-1 dims cover
    nothing. None when the dims do not line up (a reshape that moves data)."""
    ins = [i for i, d in enumerate(in_dims) if d != 1]
    outs = [j for j, d in enumerate(out_dims) if d != 1]
    carry: list[list[int]] = [[] for _ in out_dims]
    a = b = 0
    while a < len(ins) and b < len(outs):
        grp_in, grp_out = [ins[a]], [outs[b]]
        pi, po = in_dims[ins[a]], out_dims[outs[b]]
        a, b = a + 1, b + 1
        while pi != po:
            if pi < po and a < len(ins):
                pi *= in_dims[ins[a]]
                grp_in.append(ins[a])
                a += 1
            elif po < pi and b < len(outs):
                po *= out_dims[outs[b]]
                grp_out.append(outs[b])
                b += 1
            else:
                return None
        if len(grp_in) > 1 and len(grp_out) > 1:
            return None  # a many-to-many regrouping moves data
        carry[grp_out[-1]] = grp_in  # a split: the input dim goes with its minor-most output piece
    if a < len(ins) or b < len(outs):
        return None
    return tuple(tuple(c) for c in carry)


def carried_order(out_order: np.ndarray, carry: tuple[tuple[int, ...], ...], in_rank: int) -> np.ndarray:
    """The input order a reshape's output order implies: each output dim's input dims (minor
    first), then the input dims no output dim covers (size-1), major-most, descending."""
    order = [i for j in out_order for i in sorted(carry[int(j)], reverse=True)]
    rest = [i for i in range(in_rank - 1, -1, -1) if i not in order]
    return np.asarray(order + rest, dtype=np.int64)


def probabilities(kind: str, group: str, search: str, table: dict | None = None) -> np.ndarray:
    """P(outcome) over OUTCOMES[kind] for one (kind, group) and search: the table's counts for
    that search, else for any search (pooled), else all outcomes alike."""
    entry = (table if table is not None else ROLE_TABLE).get((kind, group), {})
    counts = entry.get(search) or {}
    if not sum(counts.values()):
        counts = {o: sum(c.get(o, 0) for c in entry.values()) for o in OUTCOMES[kind]}
    p = np.array([counts.get(o, 0) for o in OUTCOMES[kind]], dtype=np.float64)
    return p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))


def _put(row: np.ndarray, g: int, order: np.ndarray | None) -> None:
    row[6 * g : 6 * g + 6] = -1
    if order is not None:
        row[6 * g : 6 * g + min(6, len(order))] = order[:6]


def default_row(node: Node) -> np.ndarray:
    """The compiler's default of one node, as the dataset's default config lists it (18 values)."""
    row = np.full(LAYOUT_CONFIG_DIM, -1, dtype=np.float32)
    for g, grp in enumerate(node.groups):
        if not grp.roles or (node.kind == "reshape" and grp.rank < 2):
            continue
        _put(row, g, np.asarray(grp.roles, dtype=np.int64))
    return row


def _draw_order(rng: np.random.Generator, kind: str, grp: Group, outcome: str) -> np.ndarray | None:
    """The order `outcome` gives one group (None: -1)."""
    roles = np.asarray(grp.roles, dtype=np.int64)
    if outcome == "unset" or not roles.size:
        return None
    if outcome == "descending" or roles.size < 2:
        return roles
    if kind != "reshape":
        return roles[::-1].copy()
    while True:  # permuted: any order of the reshape's dims but the descending one
        perm = rng.permutation(roles)
        if not np.array_equal(perm, roles):
            return perm


def draw_node(rng: np.random.Generator, node: Node, search: str, table: dict | None = None) -> np.ndarray:
    """One node's 18 values drawn by role from the table's frequencies for `search`."""
    row = np.full(LAYOUT_CONFIG_DIM, -1, dtype=np.float32)
    outcomes = OUTCOMES[node.kind]
    pick = {name: outcomes[rng.choice(len(outcomes), p=probabilities(node.kind, name, search, table))]
            for name in GROUP_NAMES}
    out, inp, _ = node.groups
    if node.kind == "reshape":
        if out.roles and inp.roles:  # the input follows the output through the reshape, -1 with it
            order = _draw_order(rng, "reshape", out, pick["output"])
            _put(row, 0, order)
            if order is not None:
                _put(row, 1, carried_order(order, node.carry, inp.rank) if node.carry is not None
                     else np.asarray(inp.roles, dtype=np.int64))
        else:
            _put(row, 0, _draw_order(rng, "reshape", out, pick["output"]))
            _put(row, 1, _draw_order(rng, "reshape", inp, pick["input"]))
        return row
    for g, name in enumerate(GROUP_NAMES):
        _put(row, g, _draw_order(rng, node.kind, node.groups[g], pick[name]))
    return row


def candidate_configs(nodes: list[Node], n: int = 1000, search: str = "random", seed: int = 0,
                      table: dict | None = None) -> np.ndarray:
    """node_config_feat of up to `n` distinct configs; config 0 is the compiler's default.

    Args:
        nodes: the configurable nodes, node_config_ids order.
        n: configs wanted (default 1000); fewer come back when fewer distinct ones exist.
        search: "random" (every group drawn) or "default" (one to three nodes of config 0 redrawn).
        seed: the numpy Generator's seed; the same arguments give the same configs.
        table: the role frequencies (default ROLE_TABLE).

    Shapes:
        returns (C, NC, 18) float32, C <= n, groups padded with -1.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be 'default' or 'random', not {search!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    bad = {nd.kind for nd in nodes} - set(KINDS)
    if bad:
        raise ValueError(f"node kinds must be among {KINDS}, not {sorted(bad)}")
    rng = np.random.default_rng(seed)
    nc = len(nodes)
    base = np.stack([default_row(nd) for nd in nodes]) if nc else np.zeros((0, LAYOUT_CONFIG_DIM), np.float32)
    varied = [k for k, nd in enumerate(nodes) if any(g.roles for g in nd.groups)]
    kept, seen = [base], {base.tobytes()}
    for _ in range(MAX_ROUNDS):
        if len(kept) >= n or not varied:
            break
        for _c in range(n - len(kept)):
            cfg = base.copy()
            if search == "random":
                for k in varied:
                    cfg[k] = draw_node(rng, nodes[k], search, table)
            else:
                for k in rng.choice(varied, size=min(len(varied), int(rng.integers(1, 4))), replace=False):
                    cfg[k] = draw_node(rng, nodes[k], search, table)
            key = cfg.tobytes()
            if key not in seen:
                seen.add(key)
                kept.append(cfg)
    return np.stack(kept).astype(np.float32)


# -- learning the table from real files ----------------------------------------------------------

CONV_LABELS = 93  # node_feat 93-106: input batch, input feature, 4 input spatial, kernel input
                  # feature, kernel output feature, 4 kernel spatial, output batch, output feature
_CONV_ROLE_COLS = {"output": (105, 106), "input": (93, 94), "kernel": (99, 100)}


def _classify(vals: np.ndarray, roles: tuple[int, ...] | None) -> dict[str, int]:
    """Counts of each outcome among (C, 6) group values: unset (all -1), descending / swapped
    (the role dims listed, a pair of them when `roles` is given, else any listed dims) or
    permuted (any other order); values outside `roles` count as "other"."""
    n = vals.shape[0]
    unset = (vals < 0).all(axis=1)
    descending = ((vals[:, 1:] < 0) | (vals[:, :-1] > vals[:, 1:])).all(axis=1) & ~unset
    out = {"unset": int(unset.sum()), "descending": int(descending.sum())}
    rest = n - out["unset"] - out["descending"]
    if roles is not None:
        pair = np.full(6, -1.0)
        pair[: len(roles)] = roles
        inside = ((vals == pair).all(axis=1) | (vals == np.r_[pair[: len(roles)][::-1], pair[len(roles):]]).all(axis=1))
        out["descending"] = int((inside & descending).sum())
        out["swapped"] = int((inside & ~descending & ~unset).sum())
        out["other"] = int((~inside & ~unset).sum())
    else:
        out["swapped"] = out["permuted"] = rest
    return out


def learn_role_table(root: str | Path) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    """ROLE_TABLE's counts from every layout `.npz` under `root` (a TpuGraphs tree or the shared
    samples); a file's search is its `default` / `random` folder. Convolution roles come from
    node_feat 93-106; a dot's two listed dims and a reshape's listed order are taken as its role
    dims (the files hold no dot dimension numbers); a reshape's input group counts only where
    its output is a scalar (elsewhere it follows the output)."""
    from features.layout import CONVOLUTION, DOT, RESHAPE  # the opcode ids of the three kinds

    table: dict[tuple[str, str], dict[str, dict[str, int]]] = {}

    def add(kind: str, group: str, search: str, counts: dict[str, int]) -> None:
        slot = table.setdefault((kind, group), {}).setdefault(search, {o: 0 for o in OUTCOMES[kind]})
        for o in OUTCOMES[kind]:
            slot[o] += counts.get(o, 0)

    for path in sorted(Path(root).rglob("*.npz")):
        search = next((s for s in SEARCHES if s in path.parts), None)
        with np.load(path) as z:
            if search is None or "node_config_feat" not in z.files:
                continue
            nf, op, ids, cf = z["node_feat"], z["node_opcode"], z["node_config_ids"], z["node_config_feat"]
        rank = node_rank(nf)
        for j, i in enumerate(ids):
            o = int(op[i])
            if o == CONVOLUTION:
                for name, cols in _CONV_ROLE_COLS.items():
                    g = GROUP_NAMES.index(name)
                    roles = tuple(sorted((int(nf[i, c]) for c in cols), reverse=True)) if rank[i] >= 2 else (0,)
                    add("convolution", name, search, _classify(cf[:, j, 6 * g : 6 * g + 6], roles))
            elif o == DOT:
                for g, name in enumerate(GROUP_NAMES):
                    add("dot", name, search, _classify(cf[:, j, 6 * g : 6 * g + 6], None))
            elif o == RESHAPE:
                if rank[i] >= 1:
                    add("reshape", "output", search, _classify(cf[:, j, 0:6], None))
                else:
                    add("reshape", "input", search, _classify(cf[:, j, 6:12], None))
    return table


def main(argv: list[str] | None = None) -> None:
    """`python -m features.hlo_configs <data root>`: print ROLE_TABLE learned from the root's files."""
    import pprint
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m features.hlo_configs <folder of TpuGraphs layout .npz files>")
    pprint.pprint(learn_role_table(args[0]), width=120, sort_dicts=True)


if __name__ == "__main__":
    main()
