"""Config-node extraction: deduplicate and pack configs, write GNN tensors and GBDT tables.

    python -m pipeline.extract data=<padded root> dedup=min chunk_configs=1024 jobs=0

Reads the padded tree under `data` (output of `pipeline.pad`). Layout `node_config_feat` is
streamed `chunk_configs` configs at a time straight from the compressed member: each chunk is
packed (base 7, one int32 per 6-value layout group), deduplicated by a 16-byte digest per row,
and only its new unique rows are kept (spooled to a temporary file beside the output), so
memory is bounded by the chunk and the unique-config count, not the file; a reader thread
inflates the next chunks meanwhile, and the table features of new unique rows fill the main
thread's waits for it. Then the spooled rows are deflated into the GNN file while a second
thread computes the features still owed. Writes:
- `out/gnn/<collection dir>/<split>/<stem>.npz`: `config_codes` (U, NV, 3) int32 packed unique
  configs of the NV configurable nodes that vary; `config_map` (C,) original index -> unique row;
  `runtime` (U,) by the `dedup` policy; `config_first` (U,) first original index of each row;
  `config_runtime` (C,) the raw runtimes; `varying` (NC,) bool; `config_node_ids` (NV,) node
  ids of the varying configurable nodes; the graph tensors `node_feat` (N, K) normalized,
  `node_layout` (N, 6) int8 (a configurable node that never varies has one config under every
  config, so its row holds its effective output layout under it,
  `features.pad.effective_output_layout`, not its own layout), `node_opcode`, `edge_index`,
  `node_splits`, `node_config_ids`, `node_ids` (original ids), `config_pairs`, `config_slots`
  (NV, 3, `features.cost_terms.SLOT_FACTS`) the raw tensor facts of each varying node's slots,
  `config_defaults` (NV, 3, 6) int8 the layout each of their groups completes from
  (`features.completion.group_defaults`; operands told apart by `features.operands`, one log
  line per graph where some could not be). Tile:
  `config_feat` (U, 24) raw and `config_feat_norm`, `config_runtime_normalizers` (U,) of each
  row's first occurrence.
- `out/tables/<collection dir>/<split>.parquet`: one row per unique config: `id` (Kaggle ID),
  `configs` (list of original indices), `runtime`, then the features of `features.tabular`
  and per-graph size statistics (per-graph parts are kept in `<split>.parts/`); with
  `flat_configs=true` also each configurable node's own groups (`flat_<j>_<group>_<d>`), which mean
  something only where one graph is both trained and scored (the transductive check).
Then `out/.complete`.
Invariant: every original config index appears exactly once across a graph's rows (`configs`)
and in `config_map`, so predictions come back in original indices; `dedup=none` keeps every
config as its own row; runtimes are the raw ones aggregated by the policy.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from features.completion import effective_output_layout, group_defaults
from features.configs import ConfigDeduper, dedup_configs, pack_layout
from features.cost_terms import slot_facts
from features.operands import infer_operands
from features.tabular import layout_context, layout_features, tile_features, tile_graph_stats
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.core.runner import Task, begin_stage, chunk_bar, config_hash, finish_stage, run_tasks
from pipeline.io.catalog import discover, rel_path
from pipeline.io.npz import Stream, iter_node_config_feat, read_graph, read_members, write_npz
from pipeline.io.tables import table_path

log = logging.getLogger(__name__)
VERSION = 5
PADDED_KEYS = ("node_feat_norm", "node_layout", "node_ids", "original_size")


def _extras(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return read_members(path, keys, what="padded file (run the prune and pad stages on it)")


def _members_column(config_map: np.ndarray, n_unique: int) -> pl.Series:
    """Original config indices of each unique row, as a list column in unique-row order."""
    df = pl.DataFrame({"u": config_map, "i": np.arange(config_map.size, dtype=np.int64)})
    g = df.group_by("u").agg(pl.col("i").sort()).sort("u")
    assert g.height == n_unique
    return g["i"].alias("configs")


def _table(gid: str, dedup, feats: dict[str, np.ndarray], stats: dict[str, float]) -> pl.DataFrame:
    """A graph's table part: one row per unique config (`dedup`), its features and graph stats."""
    cols: dict[str, object] = {"id": pl.Series("id", [gid] * dedup.num_unique, dtype=pl.String)}
    cols["configs"] = _members_column(dedup.config_map, dedup.num_unique)
    cols["runtime"] = dedup.runtime
    for k, v in feats.items():
        cols[k] = np.asarray(v, dtype=np.float32 if v.dtype == np.float32 else np.float64)
    for k, v in stats.items():
        cols[f"g_{k}"] = np.full(dedup.num_unique, v, dtype=np.float64)
    return pl.DataFrame(cols)


def _write_parquet(df: pl.DataFrame, dst: str | Path) -> None:
    with atomic_path(dst) as tmp:
        df.write_parquet(tmp)


class _TableFeatures:
    """The table features of a graph's unique rows, computed in row order as the rows come:
    while the reader thread has no chunk ready (`step` as its idle work), inline once more than
    `max_bytes` of rows wait, and the rest after the streaming (`finish`)."""

    def __init__(self, ctx, feature_batch: int, max_bytes: int = 64 << 20):
        self.ctx = ctx
        # temporaries ~ batch x pairs
        self.batch = max(1, min(feature_batch, (1 << 22) // max(1, ctx.own_idx.shape[0], ctx.pairs.shape[0])))
        self.max_bytes = max_bytes
        self.waiting: deque[np.ndarray] = deque()  # (m, NC, 3) unique rows not featurized yet
        self.waiting_bytes = 0
        self.pieces: dict[str, list[np.ndarray]] = defaultdict(list)

    def add(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self.waiting.append(rows)
            self.waiting_bytes += rows.nbytes
        while self.waiting_bytes > self.max_bytes:
            self.step()

    def step(self) -> bool:
        """Featurize one batch of the waiting rows; False when none wait."""
        if not self.waiting:
            return False
        rows = self.waiting[0]
        head = rows[: self.batch]
        for name, values in layout_features(self.ctx, head).items():
            self.pieces[name].append(values)
        self.waiting_bytes -= head.nbytes
        if head.shape[0] < rows.shape[0]:
            self.waiting[0] = rows[self.batch :]
        else:
            self.waiting.popleft()
        return True

    def finish(self) -> dict[str, np.ndarray]:
        while self.step():
            pass
        return {name: np.concatenate(pieces) for name, pieces in self.pieces.items()}


def _spool_unique_codes(src: str, g, deduper: ConfigDeduper, spool: Path, chunk_configs: int,
                        features: _TableFeatures | None) -> np.ndarray | None:
    """Stream a graph's configs chunk by chunk into `deduper`, appending each chunk's new unique
    packed rows (int32 bytes) to the file `spool` and handing them to `features`; the first
    config ((NC, 18) float32, None without configs)."""
    first = None  # (NC, 18) the first config: the fixed config of the nodes that never vary
    with open(spool, "wb") as fp:
        chunks = iter_node_config_feat(g, chunk_configs, idle=features.step if features is not None else None)
        for start, chunk in chunk_bar(chunks, g.num_configs, chunk_configs, Path(src).name):
            try:
                codes = pack_layout(chunk)  # (c, NC, 3)
            except ValueError as e:
                raise DataError(src, f"configs {start}..{start + len(chunk) - 1}: {e}", "node_config_feat") from None
            if first is None and len(chunk):
                first = np.asarray(chunk[0], dtype=np.float32).copy()
            new_rows = deduper.add(codes, g.config_runtime[start : start + len(chunk)])  # (new, NC, 3)
            fp.write(new_rows.data)
            if features is not None:
                features.add(new_rows)
    return first


def _read_spool(spool: Path, num_unique: int, num_config_nodes: int, varying: np.ndarray, rows: int):
    """The spooled unique codes, `rows` at a time, of the varying nodes only: (m, NV, 3) int32."""
    # plain reads, not a memmap: mapped pages would count towards the peak RSS
    every = bool(varying.all())
    with open(spool, "rb") as f:
        for i in range(0, num_unique, rows):
            m = min(rows, num_unique - i)
            codes = np.fromfile(f, dtype=np.int32, count=m * num_config_nodes * 3).reshape(m, num_config_nodes, 3)
            yield codes if every else codes[:, varying]


def _node_layout(g, padded: dict[str, np.ndarray], varying: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """(N, 6) node layouts, a never-varying configurable node's row set to its effective output layout."""
    node_layout = padded["node_layout"].copy()
    if first is not None and not varying.all():
        fixed = g.node_config_ids[~varying]
        node_layout[fixed] = effective_output_layout(padded["node_layout"], fixed, first[None, ~varying])[0]
    return node_layout


def extract_layout(src: str, gnn: str, part: str | None, gid: str, split: str, policy: str,
                   chunk_configs: int, feature_batch: int, codes_level: int | None = 1, flat: bool = False) -> dict:
    """Deduplicate a padded layout graph's configs; write its GNN file and, with `part`, its table part.

    Two phases, each keeping both cores busy: the configs stream through packing and dedup
    while a reader thread inflates the next chunks, the table features of the new unique rows
    filling the waits for the reader; then the unique codes are deflated into the GNN file while
    a second thread computes the features still owed. One BLAS thread throughout:
    the other core always has work (a second BLAS thread would only wait for it; the packing
    gemm runs 6x slower with two while the other core inflates).
    """
    with threadpool_limits(1, user_api="blas"):
        return _extract_layout(src, gnn, part, gid, split, policy, chunk_configs, feature_batch, codes_level, flat)


def _extract_layout(src, gnn, part, gid, split, policy, chunk_configs, feature_batch, codes_level, flat) -> dict:
    g = read_graph(src, split=split)
    padded = _extras(src, PADDED_KEYS + ("config_pairs",))
    nc = g.num_config_nodes
    graph = {"nodes": float(padded["original_size"][0]), "edges": float(padded["original_size"][1]),
             "kept_nodes": float(g.num_nodes), "config_nodes": float(nc), "configs": float(g.num_configs)}
    ctx = layout_context(g.node_feat, g.node_opcode, g.node_config_ids, padded["config_pairs"], graph, g.edge_index, flat)
    deduper = ConfigDeduper(policy)
    spool = Path(gnn).with_name(f".{Path(gnn).name}.codes-{os.getpid()}")
    spool.parent.mkdir(parents=True, exist_ok=True)
    try:
        features = _TableFeatures(ctx, feature_batch) if part is not None else None
        first = _spool_unique_codes(src, g, deduper, spool, chunk_configs, features)
        dedup = deduper.finish()
        num_unique = dedup.num_unique
        varying = dedup.varying if dedup.varying is not None else np.zeros(nc, dtype=bool)  # (NC,) bool
        operands = infer_operands(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids[varying])
        node_layout = _node_layout(g, padded, varying, first)
        codes = Stream((num_unique, int(varying.sum()), 3), np.int32,
                       _read_spool(spool, num_unique, nc, varying, max(1, chunk_configs)))
        arrays = {
            "config_map": dedup.config_map, "runtime": dedup.runtime, "config_first": dedup.first,
            "config_runtime": g.config_runtime, "varying": varying,
            "config_node_ids": g.node_config_ids[varying], "node_config_ids": g.node_config_ids,
            "node_feat": padded["node_feat_norm"], "node_layout": node_layout,
            "node_opcode": g.node_opcode, "edge_index": g.edge_index, "node_splits": g.node_splits,
            "node_ids": padded["node_ids"], "config_pairs": padded["config_pairs"],
            "config_slots": slot_facts(g.node_feat, g.node_opcode, g.edge_index, operands),
            "config_defaults": group_defaults(node_layout, operands),
        }
        with ThreadPoolExecutor(1, thread_name_prefix="extract-features") as pool:
            feats = pool.submit(features.finish) if features is not None else None
            write_npz(gnn, arrays, {"config_codes": codes}, stream_level=codes_level)
            merged = feats.result() if feats is not None else None
    finally:
        spool.unlink(missing_ok=True)
    if part is not None:
        graph.update(ctx.graph, varying_nodes=float(varying.sum()), unique_configs=float(num_unique))
        _write_parquet(_table(gid, dedup, merged, graph), part)
    counts = operands.counts()
    unsure = counts["ambiguous"] + counts["guessed"] + counts["by_loose_shape"]
    return {"configs": g.num_configs, "unique": num_unique, "config_nodes": nc, "varying": int(varying.sum()),
            "operands": operands.summary() if unsure else None}


def extract_tile(src: str, gnn: str, part: str | None, gid: str, split: str, policy: str,
                 chunk_configs: int, feature_batch: int, codes_level: int | None = 1) -> dict:
    g = read_graph(src, split=split)
    x = _extras(src, PADDED_KEYS + ("config_feat_norm",))
    d, uniq = dedup_configs(g.config_feat, g.config_runtime, policy)
    write_npz(gnn, {
        "config_map": d.config_map, "runtime": d.runtime, "config_first": d.first,
        "config_runtime": g.config_runtime, "config_feat": uniq,
        "config_feat_norm": x["config_feat_norm"][d.first],
        "config_runtime_normalizers": g.config_runtime_normalizers[d.first],
        "node_feat": x["node_feat_norm"], "node_layout": x["node_layout"], "node_opcode": g.node_opcode,
        "edge_index": g.edge_index, "node_ids": x["node_ids"],
    })
    if part is not None:
        stats = tile_graph_stats(g.node_feat, g.node_opcode, g.edge_index.shape[0])
        stats.update(configs=float(g.num_configs), unique_configs=float(d.num_unique))
        df = _table(gid, d, tile_features(g.node_feat, uniq), stats)
        df = df.with_columns(pl.Series("normalizer", g.config_runtime_normalizers[d.first]))
        _write_parquet(df, part)
    return {"configs": g.num_configs, "unique": d.num_unique}


def combine_tables(parts: list[Path], dst: Path) -> None:
    """Concatenate per-graph parts into one table, streaming (never all in memory). Always
    rebuilt: the set of graphs may have changed even when no part did."""
    with atomic_path(dst) as tmp:
        pl.scan_parquet(parts).sink_parquet(tmp)


def run(cfg: DictConfig) -> dict[str, dict]:
    if not Path(cfg.data).is_dir():
        raise DataError(cfg.data, "padded files not found (run the pad stage first)")
    files = discover(cfg.data, cfg.collections, cfg.splits, announce=True)
    out = begin_stage(cfg.out)
    if not files:
        # a root where no collection could be padded (no train split): only the baseline serves it
        log.warning("%s: no padded .npz files; nothing to extract", cfg.data)
        finish_stage(out, {"files": 0})
        return {}
    tasks: list[Task] = []
    parts: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for f in files:
        rel = rel_path(f.collection, f.split, f.stem)
        gnn = out / "gnn" / rel
        part = table_path(out / "tables", f.collection, f.split).with_suffix(".parts") / f"{f.stem}.parquet"
        outputs = [gnn] + ([part] if cfg.tables else [])
        parts[(f.collection, f.split)].append(part)
        fn = extract_tile if f.kind == "tile" else extract_layout
        flat = {"flat": bool(cfg.flat_configs)} if f.kind == "layout" else {}
        tasks.append(Task(str(rel), [f.path], outputs, dict(
            fn=fn, src=str(f.path), gnn=str(gnn), part=str(part) if cfg.tables else None, gid=f.id,
            split=f.split, policy=str(cfg.dedup), chunk_configs=int(cfg.chunk_configs),
            feature_batch=int(cfg.feature_batch), codes_level=cfg.codes_level, **flat)))
    h = config_hash({"dedup": cfg.dedup, "tables": cfg.tables, "codes_level": cfg.codes_level,
                     "flat_configs": bool(cfg.flat_configs)}, VERSION)
    results = run_tasks(_dispatch, tasks, out, h, cfg.jobs, desc="extract")
    if cfg.tables:
        for (c, s), ps in parts.items():
            dst = table_path(out / "tables", c, s)
            combine_tables(ps, dst)
            log.info("%s/%s: table %s", c, s, dst)
    for rel, r in sorted(results.items()):  # one line per graph whose operands were not all told apart
        if r.get("operands"):
            log.info("%s: %s", rel, r["operands"])
    tot_c = sum(r["configs"] for r in results.values())
    tot_u = sum(r["unique"] for r in results.values())
    log.info("%d graphs: %d configs -> %d unique (%.1f%%)", len(files), tot_c, tot_u, 100 * tot_u / max(tot_c, 1))
    finish_stage(out, {"files": len(files), "hash": h})
    return results


def _dispatch(fn, **kwargs) -> dict:
    return fn(**kwargs)


@stage("extract")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
