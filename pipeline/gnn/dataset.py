"""The extract stage's per-graph GNN tensors, loaded as `GraphData` that builds `GraphBatch`es.

    graphs = load_graphs("data/processed/sample/gnn", "layout:xla:default", "train")
    rows = sample_rows(graphs[0].num_configs, 64, rng)      # (k,) unique-config rows
    batch, runtime = graphs[0].select(rows), graphs[0].runtime[rows]
    unique = predict_scores(model, graphs[0], k=64)          # (U,): GraphData is a batch source
    scores = graphs[0].to_original(unique)                   # (C,) by ORIGINAL config index

Reads `<root>/<collection dir>/<split>/<stem>.npz` as written by `pipeline.extract`. Layout
configs stay packed (`config_codes` (U, NV, 3) int32, base 7, `features.configs`) until a batch
needs them: `select` unpacks only the k rows asked for, so a graph of 100k configs costs its
codes (1.2 KB per config at 100 varying nodes), not its (U, NV, 18) long layouts. Only the
varying configurable nodes carry configs; the never-varying ones have the same config under
every config and keep their own layout, like any other node.

Config groups are completed here, not in the model: a group sets only a prefix of its
minor-to-major order (often nothing: -1 everywhere is the compiler's default), and
`features.completion.complete_layout` fills the rest from the layout the group defaults to:
- output group: the node's own layout;
- input group: the layout of operand 0 (the producer it reads), the tensor the group lays out;
  a node without a producer in the graph falls back to its own layout;
- kernel group: the layout of operand 1 of a convolution or dot (the kernel); other nodes have
  no kernel, and their kernel group stays as given.
The files do not say which producer is which operand; the extract stage tells them apart from
the tensors' shapes (`features.operands`) and writes what each group completes from
(`config_defaults`, `features.completion.group_defaults`).
The completion of every prefix-form group under each distinct default layout of a graph is
tabulated once per graph (`features.completion.GroupCompleter`), so `select` pays two gathers per batch, not the
(k, NV, 3, 6, 6) comparisons of `complete_layout`.
A batch also carries `config_terms` (k, NV, `features.cost_terms.NUM_TERMS`): the analytical
cost terms of each varying node under each selected config (padding of every slot tensor to
TPU tiles, layout changes against the defaults, producer/consumer disagreements along
`config_pairs`), from the raw slot facts the extract stage writes (`config_slots`).
Invariant: `to_original` maps unique-row scores back through `config_map`, so every original
config index of the raw file gets a score.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from features.completion import GroupCompleter
from features.configs import unpack_layout
from features.cost_terms import SLOT_FACTS, config_totals, layout_terms
from features.layout import opcode_kind
from models.gnn import GraphBatch
from pipeline.core.errors import DataError
from pipeline.io.catalog import collection_dir, collection_kind, graph_id
from pipeline.io.npz import read_members

LAYOUT_KEYS = ("node_feat", "node_layout", "node_opcode", "edge_index", "config_map", "runtime",
               "config_runtime", "config_node_ids", "config_codes", "varying", "config_pairs", "config_slots",
               "config_defaults")
TILE_KEYS = ("node_feat", "node_layout", "node_opcode", "edge_index", "config_map", "runtime",
             "config_runtime", "config_feat_norm", "config_runtime_normalizers")
@dataclass
class GraphData:
    """One graph of a collection and all its unique configs.

    Attributes:
        id: Kaggle ID; collection, split, path: where it came from.
        graph: the config-free part as a GraphBatch (config_nodes set for layout, no configs).
        codes: (U, NV, 3) int32 packed layouts of the varying configurable nodes, as in the
            file (layout); `select` completes them.
        complete: the GroupCompleter of those nodes (layout).
        terms: what `features.cost_terms.layout_terms` reads of those nodes (layout; None when
            the arrays carry no `config_slots`: batches then have no `config_terms`).
        config_feat: (U, F') float32 normalized tile configs (tile).
        runtime: (U,) float64 training target per unique row (tile: runtime / normalizer).
        config_map: (C,) int64 original config index -> unique row.
        original_runtime: (C,) float64 measured runtime of each original config (tile:
            normalized), all 0 on test.
    """

    id: str
    collection: str
    split: str
    path: Path | None
    graph: GraphBatch
    codes: np.ndarray | None
    complete: GroupCompleter | None
    terms: TermInputs | None
    config_feat: Tensor | None
    runtime: np.ndarray
    config_map: np.ndarray
    original_runtime: np.ndarray

    @property
    def kind(self) -> str:
        return "tile" if self.config_feat is not None else "layout"

    @property
    def num_configs(self) -> int:
        """U, the unique configs (rows); `num_original` is C."""
        return int(self.runtime.shape[0])

    @property
    def num_original(self) -> int:
        return int(self.config_map.shape[0])

    @property
    def device(self) -> torch.device:
        return self.graph.device

    def to(self, device: torch.device | str) -> "GraphData":
        feat = None if self.config_feat is None else self.config_feat.to(device)
        return replace(self, graph=self.graph.to(device), config_feat=feat)

    def select(self, rows: Tensor | np.ndarray) -> GraphBatch:
        """The graph with the unique configs at `rows` ((k,) ints), in that order, on its device;
        layout groups completed (module docstring)."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        if self.config_feat is not None:
            return replace(self.graph, config_feat=self.config_feat[idx.to(self.config_feat.device)])
        layout = self.completed(idx.cpu().numpy())  # (k, NV, 18) int8
        terms = None
        if self.terms is not None:
            terms = torch.from_numpy(layout_terms(self.terms.facts, self.terms.defaults, self.terms.pairs, layout)).to(self.device)
        return replace(self.graph, config_layout=torch.from_numpy(layout).long().to(self.device), config_terms=terms)

    def completed(self, rows: np.ndarray) -> np.ndarray:
        """(k, NV, 18) int8 completed layout groups of the unique configs at `rows` (layout)."""
        return unpack_layout(self.complete(self.codes[np.asarray(rows, dtype=np.int64)]))

    def cost_totals(self, rows: np.ndarray) -> np.ndarray:
        """(k, `features.cost_terms.TOTAL_NAMES`) float64: the cost terms of the unique configs at
        `rows`, bytes as bytes, summed per opcode kind of the varying nodes (layout)."""
        if self.terms is None:
            raise DataError(self.path, "carries no config_slots (rerun `make extract`)", "config_slots")
        t = self.terms
        terms = layout_terms(t.facts, t.defaults, t.pairs, self.completed(rows), log_bytes=False)
        kind = opcode_kind(self.graph.opcode[self.graph.config_nodes].numpy())
        return config_totals(terms, kind)

    def subset(self, rows: np.ndarray) -> "GraphData":
        """The same graph with only the unique rows `rows` and the original configs that map to
        them (a bounded validation set for graphs with very many configs)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        new = np.full(self.num_configs, -1, dtype=np.int64)
        new[rows] = np.arange(rows.size)
        mapped = new[self.config_map]
        keep = mapped >= 0
        return replace(
            self,
            codes=None if self.codes is None else self.codes[rows],
            config_feat=None if self.config_feat is None else self.config_feat[torch.from_numpy(rows).to(self.config_feat.device)],
            runtime=self.runtime[rows], config_map=mapped[keep], original_runtime=self.original_runtime[keep])

    def to_original(self, unique_scores: Tensor | np.ndarray) -> np.ndarray:
        """(U,) scores of the unique rows -> (C,) float64 scores by original config index."""
        s = unique_scores.detach().cpu().numpy() if isinstance(unique_scores, Tensor) else np.asarray(unique_scores)
        if s.shape != (self.num_configs,):
            raise ValueError(f"{self.id}: {s.shape} scores for {self.num_configs} unique configs")
        return s.astype(np.float64)[self.config_map]


@dataclass
class TermInputs:
    """The per-graph inputs of `features.cost_terms.layout_terms` for the NV varying nodes:
    facts (NV, 3, SLOT_FACTS), defaults (NV, 3, 6), pairs (P, 3) positions into NV and the group."""

    facts: np.ndarray
    defaults: np.ndarray
    pairs: np.ndarray


def varying_pairs(pairs: np.ndarray, varying: np.ndarray) -> np.ndarray:
    """(P, 3) `[consumer, producer, group]` rows, positions into all configurable nodes -> the
    pairs whose both ends vary, as positions into the varying ones."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    varying = np.asarray(varying, dtype=bool)
    pos = np.where(varying, np.cumsum(varying) - 1, -1)
    mapped = np.concatenate([pos[pairs[:, :2]], pairs[:, 2:]], axis=1) if pairs.size else pairs
    return mapped[(mapped[:, :2] >= 0).all(1)]


def sample_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct rows of n in random order (all n, shuffled, when n <= k)."""
    return rng.permutation(n) if n <= k else rng.choice(n, size=k, replace=False)


def load_graph(path: str | Path, collection: str, split: str) -> GraphData:
    """Read one extracted file; a malformed one raises DataError naming it and the problem."""
    path = Path(path)
    keys = LAYOUT_KEYS if collection_kind(collection) == "layout" else TILE_KEYS
    a = read_members(path, keys, what="GNN tensor file of the extract stage (run `make extract`)")
    return graph_data(a, collection, split, path)


def graph_data(a: dict[str, np.ndarray], collection: str, split: str, path: str | Path | None = None) -> GraphData:
    """A GraphData from the arrays of an extracted file (`LAYOUT_KEYS` or `TILE_KEYS`), checked;
    a problem raises DataError naming `path` (None: arrays built in memory)."""
    kind = collection_kind(collection)
    n, u = a["node_opcode"].shape[0], a["runtime"].shape[0]
    cmap = a["config_map"].astype(np.int64)
    if u == 0 or cmap.size == 0:
        raise DataError(path, "has zero configs")
    if cmap.min() < 0 or cmap.max() >= u or np.unique(cmap).size != u:
        raise DataError(path, f"config_map must cover the unique rows 0..{u - 1} exactly", "config_map")
    if a["config_runtime"].shape != cmap.shape:
        raise DataError(path, f"config_runtime has {a['config_runtime'].shape[0]} entries for {cmap.size} configs", "config_runtime")
    if a["node_feat"].shape[0] != n or a["node_layout"].shape != (n, 6):
        raise DataError(path, f"node_feat / node_layout do not have {n} rows", "node_feat")
    graph = GraphBatch(
        opcode=torch.from_numpy(a["node_opcode"].astype(np.int64)),
        node_feat=torch.from_numpy(a["node_feat"].astype(np.float32)),
        node_layout=torch.from_numpy(a["node_layout"].astype(np.int64)),
        edge_index=torch.from_numpy(a["edge_index"].astype(np.int64).reshape(-1, 2)),
    )
    runtime = a["runtime"].astype(np.float64)
    original = a["config_runtime"].astype(np.float64)
    codes = feat = complete = terms = None
    if kind == "layout":
        codes = a["config_codes"]
        nodes = a["config_node_ids"].astype(np.int64)
        if codes.ndim != 3 or codes.shape[0] != u or codes.shape[1:] != (nodes.size, 3):
            raise DataError(path, f"config_codes has shape {codes.shape}, expected ({u}, {nodes.size}, 3)", "config_codes")
        graph = replace(graph, config_nodes=torch.from_numpy(nodes), config_layout=torch.zeros(0, nodes.size, 18, dtype=torch.long))
    else:
        norm = a["config_runtime_normalizers"].astype(np.float64)
        if norm.shape != (u,) or a["config_feat_norm"].shape[0] != u:
            raise DataError(path, f"tile config arrays do not have {u} rows", "config_feat_norm")
        if (norm > 0).all():  # test files carry normalizers of 1 and runtimes of 0
            runtime = runtime / norm
            original = original / norm[cmap]
        feat = torch.from_numpy(a["config_feat_norm"].astype(np.float32))
        graph = replace(graph, config_feat=feat[:0])
    try:
        graph.select(torch.zeros(0, dtype=torch.long)).check()
    except ValueError as e:
        raise DataError(path, str(e)) from None
    if kind == "layout":  # after the check: ids and layouts are in range
        if "config_defaults" not in a:
            raise DataError(path, "has no config_defaults (written by an older extract stage): rerun `make extract`", "config_defaults")
        defaults = np.asarray(a["config_defaults"], dtype=np.int8)
        if defaults.shape != (nodes.size, 3, 6):
            raise DataError(path, f"config_defaults has shape {defaults.shape}, expected ({nodes.size}, 3, 6)", "config_defaults")
        complete = GroupCompleter(defaults)
        if "config_slots" in a:
            facts = np.asarray(a["config_slots"])
            if facts.shape != (nodes.size, 3, SLOT_FACTS):
                raise DataError(path, f"config_slots has shape {facts.shape}, expected ({nodes.size}, 3, {SLOT_FACTS})", "config_slots")
            varying, pairs = np.asarray(a["varying"], dtype=bool), np.asarray(a["config_pairs"])
            if pairs.ndim != 2 or pairs.shape[1] != 3:
                raise DataError(path, f"config_pairs has shape {pairs.shape}, expected (P, 3) (written by an older prune stage: rerun `make prune`)",
                                "config_pairs")
            if int(varying.sum()) != nodes.size or (pairs.size and (pairs[:, :2].min() < 0 or pairs[:, :2].max() >= varying.size)):
                raise DataError(path, f"varying / config_pairs do not match the {nodes.size} varying configurable nodes", "config_pairs")
            terms = TermInputs(facts, defaults, varying_pairs(pairs, varying))
    stem = "graph" if path is None else Path(path).stem
    return GraphData(graph_id(collection, stem), collection, split, None if path is None else Path(path), graph,
                     codes, complete, terms, feat, runtime, cmap, original)


def graph_files(root: str | Path, collection: str, split: str) -> list[Path]:
    d = Path(root) / collection_dir(collection) / split
    return sorted(d.glob("*.npz")) if d.is_dir() else []


def load_graphs(root: str | Path, collection: str, split: str, paths: list[Path] | None = None) -> list[GraphData]:
    """Every graph of a collection and split under `root` (or only `paths`), sorted by name."""
    return [load_graph(p, collection, split) for p in (graph_files(root, collection, split) if paths is None else paths)]


def feature_dims(graphs: list[GraphData]) -> dict[str, int]:
    """The widths the model is built with; every graph of a collection must agree."""
    dims = {(g.graph.node_feat.shape[1], 0 if g.config_feat is None else g.config_feat.shape[1]) for g in graphs}
    if len(dims) != 1:
        raise DataError(graphs[0].path.parent, f"graphs of {graphs[0].collection} disagree on feature widths {sorted(dims)}: "
                        "were they padded with the same statistics? (rerun `make pad extract`)")
    f, c = dims.pop()
    return {"node_feat_dim": int(f), **({"config_feat_dim": int(c)} if c else {})}
