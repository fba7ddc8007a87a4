"""Check raw TpuGraphs files against the format and print what they hold.

    python -m pipeline.inspect path=<file.npz>          # one file
    python -m pipeline.inspect data=<npz root>          # every file under a root
    make inspect DATA=<npz root>

Reads only; writes nothing. Every file that violates the format gets one line naming the file,
the key and the problem; the run then exits 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.progress import tqdm
from pipeline.io.catalog import COLLECTIONS, discover
from pipeline.io.npz import Graph, iter_node_config_feat, read_graph

log = logging.getLogger(__name__)


def describe(g: Graph) -> str:
    extra = f" config_nodes={g.num_config_nodes}" if g.kind == "layout" else ""
    return f"{g.path}: {g.kind} nodes={g.num_nodes} edges={g.edge_index.shape[0]} configs={g.num_configs}{extra}"


def check(path: Path, split: str | None, cfg: DictConfig) -> Graph:
    g = read_graph(path, split=split)
    if cfg.stream_configs and g.kind == "layout":
        for _ in iter_node_config_feat(g, cfg.chunk_configs):
            pass
    return g


@stage("inspect")
def main(cfg: DictConfig) -> None:
    if cfg.path:
        print(describe(check(Path(cfg.path), None, cfg)))
        return
    files = discover(cfg.data, announce=True)
    counts = {c: 0 for c in COLLECTIONS}
    bad = []
    for f in tqdm(files, desc="inspect", unit="file"):
        try:
            check(f.path, f.split, cfg)
        except DataError as e:
            bad.append(str(e))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        counts[f.collection] += 1
    log.info("%d of %d files valid under %s: %s", len(files) - len(bad), len(files), cfg.data,
             ", ".join(f"{c} {n}" for c, n in counts.items() if n))
    if bad:
        raise DataError(cfg.data, f"{len(bad)} invalid file(s), listed above")


if __name__ == "__main__":
    main()
