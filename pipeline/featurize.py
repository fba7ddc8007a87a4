"""Featurize a program's HLO text into a TpuGraphs layout file whose configs can be ranked.

    python -m pipeline.featurize hlo=<module.hlo.txt> out=<graph.npz> [configs=1000] [search=random] [seed=0]

Reads the text XLA dumps for a module (e.g. JAX's `jax.jit(f).lower(*args).compile().as_text()`;
docs/examples/jax_blocks.py writes one), parses it with `pipeline.io.hlo`, draws candidate
layout configs with `features.hlo_configs` and writes one raw-format layout `.npz` (the keys of
a test file: config_runtime all 0) with `pipeline.io.npz.write_graph`, atomically. It logs
which instruction each configurable node is. Invariant: a file is written only for text that
parses and has at least one configurable node; bad input (missing, empty or binary file, text
that is not HLO, no convolution / dot / reshape) is one line on stderr, exit 1, no file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from features.hlo_configs import candidate_configs
from features.layout import KERNEL_OPCODES, RESHAPE, node_rank
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.io.hlo import HloModule, parse_hlo, read_hlo_text
from pipeline.io.npz import write_graph

log = logging.getLogger(__name__)


def config_inputs(m: HloModule, ids: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, ...] | None]]]:
    """(NC, 3) ranks and NC x 3 layouts of each configurable node's output, input (operand 0)
    and kernel (operand 1 of a convolution or dot); rank -1 where there is no such tensor."""
    rank = node_rank(m.node_feat)
    ranks = np.full((len(ids), 3), -1, dtype=np.int64)
    layouts: list[list[tuple[int, ...] | None]] = []
    for k, i in enumerate(ids):
        slots = [int(i)] + m.operands[i][:1]
        if int(m.node_opcode[i]) in KERNEL_OPCODES:
            slots += m.operands[i][1:2]
        for g, node in enumerate(slots):
            ranks[k, g] = rank[node]
        layouts.append([m.layouts[node] or None for node in slots] + [None] * (3 - len(slots)))
    return ranks, layouts


def hlo_to_arrays(text: str, configs: int = 1000, search: str = "random", seed: int = 0,
                  source: str = "<hlo>", configurable: list[str] | None = None,
                  edges: str = "dataset") -> tuple[dict[str, np.ndarray], list[str]]:
    """The layout file's arrays of the HLO module `text`, and the instruction name of each
    configurable node (node_config_ids order), which a ranking uses to say which tensor gets
    which layout.

    Args:
        text: HLO module text.
        configs: candidate configs wanted (config 0 = the module's own layouts).
        search: "random" or "default" (`features.hlo_configs.candidate_configs`).
        seed: seed of the config draw.
        source: the file name errors name.
        configurable: instruction names to rank layouts for; None = every convolution, dot
            and reshape (`pipeline.io.hlo.CONFIGURABLE_OPCODES`).
        edges: edge convention of `pipeline.io.hlo.parse_hlo` ("dataset" or "operands").

    Raises:
        DataError: not HLO text, a name in `configurable` that is not a configurable
            instruction, or no configurable node.
    """
    if search not in ("random", "default"):  # the settings a user gives, checked before any parsing
        raise DataError(None, f"search must be 'random' or 'default', not '{search}'", key="search")
    if int(configs) < 1:
        raise DataError(None, f"configs must be at least 1, not {configs}", key="configs")
    m = parse_hlo(text, source=source, edges=edges)
    ids = m.config_ids
    if configurable is not None:
        where = {name: i for i, name in enumerate(m.names)}
        wanted = set()
        for name in configurable:
            i = where.get(str(name).lstrip("%"))
            if i is None or i not in set(ids.tolist()):
                raise DataError(source, f"'{name}' is not a convolution, dot or reshape instruction of the module")
            wanted.add(i)
        ids = np.asarray(sorted(wanted), dtype=np.int64)
    if ids.size == 0:
        raise DataError(source, "has no layout-configurable instruction (convolution, dot or reshape) to rank")
    ranks, layouts = config_inputs(m, ids)
    feat = candidate_configs(ranks, layouts, n=configs, search=search, seed=seed,
                             reshape=m.node_opcode[ids] == RESHAPE)
    arrays = {
        "node_feat": m.node_feat, "node_opcode": m.node_opcode, "edge_index": m.edge_index,
        "node_config_ids": ids, "node_config_feat": feat, "node_splits": m.node_splits,
        "config_runtime": np.zeros(feat.shape[0], dtype=np.int64),  # unmeasured, as in a test file
    }
    return arrays, [m.names[i] for i in ids]


def run(hlo: str | Path, out: str | Path, configs: int = 1000, search: str = "random", seed: int = 0) -> list[str]:
    """Write the layout file of the HLO text at `hlo` to `out`; return the configurable nodes' names."""
    text = read_hlo_text(hlo)
    arrays, names = hlo_to_arrays(text, int(configs), search, int(seed), source=str(hlo))
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
    run(cfg.hlo, cfg.out, cfg.configs, cfg.search, cfg.seed)


if __name__ == "__main__":
    main()
