"""Featurize a program's HLO text into a TpuGraphs layout file whose configs can be ranked.

    python -m pipeline.featurize hlo=<module.hlo.txt> out=<graph.npz> [configs=1000] [search=random] [seed=0] [allow_optimized=false]

Reads a module's HLO text as it stands before XLA's optimizations, the form the dataset's graphs
were built from (JAX: `jax.jit(f).lower(*args).as_text(dialect="hlo")`; any XLA frontend: the
`*.before_optimizations.txt` of an `--xla_dump_to` dump; docs/examples/jax_blocks.py writes one),
parses it with `pipeline.io.hlo`, draws candidate layout configs by dimension role with
`features.hlo_configs` (config 0 the compiler's default) and writes one raw-format layout `.npz`
(the keys of a test file: config_runtime all 0) with `pipeline.io.npz.write_graph`, atomically.
It logs which instruction each configurable node is. Invariant: a file is written only for text
that parses, is not HLO after XLA's optimizations (fusions, bitcasts, copies, assigned layouts:
`pipeline.io.hlo.optimized_reasons`; `allow_optimized=true` featurizes it anyway, with a
warning) and has at least one configurable node; bad input (missing, empty or binary file, text
that is not HLO, optimized HLO, no convolution / dot / reshape) is one line on stderr, exit 1,
no file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from features.hlo_configs import Group, Node, candidate_configs, reshape_carry
from features.layout import CONVOLUTION, DOT, RESHAPE
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.io.hlo import BEFORE_OPTIMIZATIONS, CONFIGURABLE_OPCODES, HloModule, optimization_signs, optimized_reasons, parse_hlo, read_hlo_text
from pipeline.io.npz import write_graph

log = logging.getLogger(__name__)


def _pair(rank: int, roles: list[list[int]], batch: list[int] = ()) -> tuple[int, ...]:
    """The dims a convolution's or dot's group lists, in descending order: the minor-most dim of
    each role in `roles`, filled up to two (the whole order below rank 2) with the other
    non-batch dims, then any, minor-most first; () for a scalar or an absent tensor."""
    want = min(rank, 2)
    picked = [max(r) for r in roles if r]
    for pool in ([d for d in range(rank) if d not in batch], list(range(rank))):
        for d in sorted(pool, reverse=True):
            if len(picked) >= want:
                break
            if d not in picked:
                picked.append(d)
    return tuple(sorted(picked[:want], reverse=True))


def _dims_attr(attrs: dict[str, str], key: str) -> list[int]:
    return [int(x) for x in attrs.get(key, "").strip("{}").split(",") if x.strip()]


def config_nodes(m: HloModule, ids: np.ndarray) -> list[Node]:
    """Each configurable node's kind and the role dims of its output, input (operand 0) and
    kernel (operand 1 of a convolution or dot) groups (`features.hlo_configs.Node`): a
    convolution's batch and feature dims (kernel: input and output feature) from its
    dim_labels; a dot's free and contracting dims from its dimension numbers; a reshape's whole
    order, and which input dims each output dim covers."""
    nodes = []
    for i in ids:
        i = int(i)
        ops = m.operands[i]
        kind = {CONVOLUTION: "convolution", DOT: "dot", RESHAPE: "reshape"}[int(m.node_opcode[i])]
        shapes = [m.dims[i]] + [m.dims[v] for v in ops[: 1 if kind == "reshape" else 2]]
        ranks = [len(d) for d in shapes] + [0] * (3 - len(shapes))
        a = m.attrs[i]
        if kind == "reshape":
            groups = [Group(r, tuple(range(r - 1, -1, -1))) for r in ranks[:2]] + [Group(0)]
            carry = reshape_carry(shapes[1], shapes[0]) if len(shapes) > 1 and ranks[0] and ranks[1] else None
            nodes.append(Node(kind, tuple(groups), carry))
            continue
        if kind == "convolution":
            out_l, _, rest = a.get("dim_labels", "").partition("->")
            inp_l, _, ker_l = out_l.partition("_")
            labels = (rest, inp_l, ker_l)
            want = ("bf", "bf", "io")
            roles = [[[lab.find(c)] if c in lab else [] for c in w] for lab, w in zip(labels, want)]
            groups = [Group(r, _pair(r, roles[g])) for g, r in enumerate(ranks)]
        else:
            lb, lc = _dims_attr(a, "lhs_batch_dims"), _dims_attr(a, "lhs_contracting_dims")
            rb, rc = _dims_attr(a, "rhs_batch_dims"), _dims_attr(a, "rhs_contracting_dims")
            lfree = [d for d in range(ranks[1]) if d not in lb + lc]
            rfree = [d for d in range(ranks[2]) if d not in rb + rc]
            nb, nm = len(lb), len(lfree)
            out_m, out_n = list(range(nb, nb + nm)), list(range(nb + nm, ranks[0]))
            groups = [Group(ranks[0], _pair(ranks[0], [out_m, out_n], list(range(nb)))),
                      Group(ranks[1], _pair(ranks[1], [lfree, lc], lb)),
                      Group(ranks[2], _pair(ranks[2], [rc, rfree], rb))]
        nodes.append(Node(kind, tuple(groups)))
    return nodes


def hlo_to_arrays(text: str, configs: int = 1000, search: str = "random", seed: int = 0,
                  source: str = "<hlo>", configurable: list[str] | None = None,
                  edges: str = "dataset", allow_optimized: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """The layout file's arrays of the HLO module `text`, and the instruction name of each
    configurable node (node_config_ids order), which a ranking uses to say which tensor gets
    which layout.

    Args:
        text: HLO module text.
        configs: candidate configs wanted (config 0 = the compiler's default).
        search: "random" or "default" (`features.hlo_configs.candidate_configs`).
        seed: seed of the config draw.
        source: the file name errors name.
        configurable: instruction names to rank layouts for; None = every convolution, dot
            and reshape (`pipeline.io.hlo.CONFIGURABLE_OPCODES`).
        edges: edge convention of `pipeline.io.hlo.parse_hlo` ("dataset" or "operands").
        allow_optimized: featurize a module after XLA's optimizations anyway (a warning), which
            is refused otherwise (`pipeline.io.hlo.optimized_reasons`).

    Raises:
        DataError: not HLO text, a module after XLA's optimizations (unless `allow_optimized`),
            a name in `configurable` that is not a configurable instruction, or no configurable node.
    """
    if search not in ("random", "default"):  # the settings a user gives, checked before any parsing
        raise DataError(None, f"search must be 'random' or 'default', not '{search}'", key="search")
    if int(configs) < 1:
        raise DataError(None, f"configs must be at least 1, not {configs}", key="configs")
    m = parse_hlo(text, source=source, edges=edges)
    reasons = optimized_reasons(optimization_signs(m))
    if reasons and not allow_optimized:
        raise DataError(source, f"is HLO after XLA's optimizations ({', '.join(reasons)}), but the dataset's graphs "
                                f"are programs before them: {BEFORE_OPTIMIZATIONS}; or pass allow_optimized=true "
                                "(make: ALLOW_OPTIMIZED=true) to rank it anyway")
    ids = m.config_ids
    if reasons:
        log.warning("%s: HLO after XLA's optimizations (%s), featurized anyway (allow_optimized=true): its fusions, "
                    "copies and assigned layouts are not what the models were trained on", source, ", ".join(reasons))
        # an optimized module's convolutions and dots mostly sit in fusions: rank those too
        ids = np.flatnonzero(np.isin(m.node_opcode, list(CONFIGURABLE_OPCODES))).astype(np.int64)
    if configurable is not None:
        where = {name: i for i, name in enumerate(m.names)}
        wanted = set()
        for name in configurable:
            i = where.get(str(name).lstrip("%"))
            if i is None or i not in set(ids.tolist()):
                raise DataError(source, f"'{name}' is not a convolution, dot or reshape instruction of the module "
                                        "outside fused computations")
            wanted.add(i)
        ids = np.asarray(sorted(wanted), dtype=np.int64)
    if ids.size == 0:
        raise DataError(source, "has no layout-configurable instruction (convolution, dot or reshape) to rank")
    feat = candidate_configs(config_nodes(m, ids), n=configs, search=search, seed=seed)
    arrays = {
        "node_feat": m.node_feat, "node_opcode": m.node_opcode, "edge_index": m.edge_index,
        "node_config_ids": ids, "node_config_feat": feat, "node_splits": m.node_splits,
        "config_runtime": np.zeros(feat.shape[0], dtype=np.int64),  # unmeasured, as in a test file
    }
    return arrays, [m.names[i] for i in ids]


def run(hlo: str | Path, out: str | Path, configs: int = 1000, search: str = "random", seed: int = 0,
        allow_optimized: bool = False) -> list[str]:
    """Write the layout file of the HLO text at `hlo` to `out`; return the configurable nodes' names."""
    text = read_hlo_text(hlo)
    arrays, names = hlo_to_arrays(text, int(configs), search, int(seed), source=str(hlo),
                                  allow_optimized=bool(allow_optimized))
    write_graph(out, arrays)
    c, nc, _ = arrays["node_config_feat"].shape
    log.info("%s: %d nodes, %d edges, %d configurable nodes (%s), %d %s configs -> %s", hlo,
             arrays["node_feat"].shape[0], arrays["edge_index"].shape[0], nc,
             ", ".join(names[:8]) + (", ..." if nc > 8 else ""), c, search, out)
    return names


@stage("featurize")
def main(cfg: DictConfig) -> None:
    if cfg.hlo is None or cfg.out is None:
        raise DataError(None, "give the HLO text and the output file: hlo=<module.hlo.txt> out=<graph.npz>")
    run(cfg.hlo, cfg.out, cfg.configs, cfg.search, cfg.seed, cfg.allow_optimized)


if __name__ == "__main__":
    main()
