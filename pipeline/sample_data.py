"""Generate the embedded sample dataset: a small TpuGraphs tree in the exact raw format.

    python -m pipeline.sample_data                          # data/raw/sample, all 5 collections
    python -m pipeline.sample_data out=/tmp/s graphs.train=2 collections=[tile:xla] splits=[train]
    python -m pipeline.sample_data out=data/raw/bench collections=[layout:nlp:random] \
        splits=[train] graphs.train=1 nodes=20000 config_nodes=1000 configs=100000   # full size

Reads nothing. Writes `<out>/tile/xla/{train,valid,test}/*.npz` and
`<out>/layout/{xla,nlp}/{default,random}/{train,valid,test}/*.npz` (docs/FORMAT.md), then the stamp
`<out>/.complete` last; a stale stamp is removed first, so the stamp exists only over a complete
tree. Beside the data (with `truth=true`, the default), `<out>/.truth/<collection dir>/<split>/<stem>.npy`
holds each train / valid graph's noiseless cost per config: float64 (C,) by config index, on
the scale of the file's target (layout: ns; tile: divided by the file's
`config_runtime_normalizers`). No stage reads it: `pipeline.io.catalog.discover` lists only
`<out>/<collection dir>/<split>/*.npz`; only `pipeline.report` looks there, for the noise
ceiling (the best score a ranking can reach under the measurement noise). Test graphs get none.
The default tree builds in seconds; `nodes=`, `config_nodes=`, `configs=` make real-scale
files with memory bounded by `chunk` configs.

Invariants:
- Deterministic: the bytes depend on `seed` and the size knobs only, not on `chunk` (configs
  and noise come from a counter-based hash of their indices) nor on which other collections or
  splits are generated. The two searches of a source (layout:xla:default / :random) share
  their graphs and file names, with different configs, as in the real data.
- Graphs look like XLA programs (conv nets for xla, transformers for nlp, small fusions for
  tile): topological order, every edge [u, v] with u > v, node_feat columns as in the real
  files; the real dataset's opcode ids.
- Runtimes come from `pipeline.sample.costmodel`, a hidden analytical model of graph and config
  (padding, layout copies between producers and consumers, compute efficiency, tile count and
  on-chip spills) with ~1% log-normal noise; test runtimes are 0, test tile normalizers 1.
  Writing the noiseless cost (`.truth`) draws nothing: the `.npz` bytes are the same with
  `truth=false`.
- Duplicated configs (identical rows, slightly different runtimes) are common, as in the real
  data. Layout config groups follow the real files: reshapes name a full minor-to-major
  permutation, convolutions and dots of rank >= 3 only their two minor-most dims; all -1 is the
  compiler default.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.sample.write import generate

__all__ = ["generate", "main"]


@stage("sample_data")
def main(cfg: DictConfig) -> dict[str, object]:
    return generate(cfg)


if __name__ == "__main__":
    main()
