"""Rank the configurations of one program with the models trained here.

    python -m pipeline.rank file=<npz> [collection=layout:xla:random] [model=ensemble] [top=10] [out=<json>]
    python -m pipeline.rank hlo=<HLO text> [configs=1000] [search=random] [collection=layout:xla:<search>] [allow_optimized=false] ...
    make rank FILE=<npz> [COLLECTION=...] [MODEL=ensemble] [TOP=10] [OUT=<json>] [DATA=<training root>]
    make rank HLO=<HLO text> [CONFIGS=1000] ...

`hlo` is a program's HLO module text before XLA's optimizations (any frontend; JAX's
`jax.jit(f).lower(*args).as_text(dialect="hlo")`, docs/examples/jax_blocks.py; optimized HLO is
refused unless `allow_optimized=true`): it is featurized (`pipeline.featurize.hlo_to_arrays`: the
layout file's arrays and `configs` candidate configs drawn by `search`, config 0 the compiler's
default) and ranked as a
file of collection `layout:xla:<search>` unless `collection` says otherwise; the printed configs
name each tensor by its HLO instruction.

`file` is one program in the TpuGraphs `.npz` format. Its collection is read from its place in a
TpuGraphs tree (`.../<kind>/<source>/<search>/<split>/<stem>.npz`); elsewhere `collection=` must
be given. The models are those trained on `paths.dataset` (make: the dataset of DATA): `model`
is ensemble, gnn, gbdt (any LightGBM model name), analytical or baseline. The file goes through the same
code as the pipeline, in a temporary folder: prune, pad with the training run's saved
statistics, extract, then each model the answer needs in predict-only mode (the ensemble with
its saved weights, after its members), each stage composed from its own `conf/<stage>.yaml`.
Nothing is written under `data/`.

Prints the `top` configs predicted fastest, with each config in readable form (tile: the
kernel / output / input bounds; layout: each configurable node whose layout is not the
compiler's default, its opcode and its output/input/kernel minor-to-major order) and the
predicted relative score (0 = the predicted fastest, 1 = the slowest). `out=<json>` also writes
the full order in original config indices, with the scores.

From Python, for autotuner loops: `rank_file(path, collection, model)`, `rank_arrays(arrays,
collection, model)` (the arrays of one graph, as in a raw file) or `rank_hlo(text, ...)` return a
`Ranking` (`rank_hlo`: with the configurable instructions' names and the configs' arrays).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from omegaconf import DictConfig

from features.layout import opcode_name
from models.metrics import config_order
from pipeline.core.cli import compose, stage as entry_point
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.progress import silenced
from pipeline.graph import ENSEMBLE, FAMILIES, StageConfig, family, run_feature_stages, run_stage, stage_named
from pipeline.io.catalog import GraphFile, check_collection, collection_dir, collection_kind, collection_of_path
from pipeline.io.npz import Graph, iter_node_config_feat, read_graph, write_graph
from pipeline.io.predictions import predictions_path, read_predictions
from pipeline.train import folds

log = logging.getLogger(__name__)

QUIET = ("pipeline", "features", "models")  # loggers of the stages run inside: warnings only, unless verbose


@dataclass
class Ranking:
    """The configs of one graph, predicted fastest first."""

    file: str
    collection: str
    model: str
    order: np.ndarray  # (C,) original config indices, predicted fastest first
    scores: np.ndarray  # (C,) the model's score by original config index (lower = faster)
    served: dict[str, float] = field(default_factory=dict)  # ensemble: the members and their weights
    nodes: list[str] = field(default_factory=list)  # from HLO: the configurable instructions, node_config_ids order
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # from HLO: the featurized program

    def relative(self) -> np.ndarray:
        """(C,) scores scaled to 0 (predicted fastest) .. 1 (slowest), by original index."""
        lo, hi = float(self.scores.min()), float(self.scores.max())
        return np.zeros_like(self.scores) if hi <= lo else (self.scores - lo) / (hi - lo)

    def to_dict(self) -> dict:
        return {"file": self.file, "collection": self.collection, "model": self.model, "served": self.served,
                **({"configurable_nodes": self.nodes} if self.nodes else {}),
                "num_configs": int(self.order.size), "order": self.order.tolist(), "scores": self.scores.tolist()}


collection_of = collection_of_path  # the file's collection (pipeline.io.catalog)


def check_file(path: Path, collection: str) -> Graph:
    g = read_graph(path, split="test")
    if g.kind != collection_kind(collection):
        raise DataError(path, f"a {g.kind} graph, but {collection} is a {collection_kind(collection)} collection")
    if g.num_configs == 0:
        raise DataError(path, "has no configs to rank")
    return g


def model_kind(models: Path, name: str, collection: str) -> str | None:
    """The family that serves the model `name` for `collection` (pipeline/graph.py), or the
    ensemble; None: not trained for it."""
    if name == ENSEMBLE:
        return ENSEMBLE if (models / name / "weights.json").is_file() else None
    if name in {f.name for f in FAMILIES if not f.trained}:
        return name  # needs no training
    dirs = [r / collection_dir(collection) for r in folds.model_dirs(models / name)]  # fold/seed runs: every run's models
    files = [p.name for d in dirs if d.is_dir() for p in d.iterdir()]
    return next((f.name for f in FAMILIES if f.trained and f.is_trained(files)), None)


def trained_for(models: Path, collection: str) -> list[str]:
    names = sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    return [n for n in names if n != ENSEMBLE and model_kind(models, n, collection)]


def ensemble_members(weights: Path, collection: str, models: Path) -> list[str]:
    """The members the ensemble's saved weights use for `collection`."""
    try:
        doc = json.loads(weights.read_text())
        entry = doc["collections"].get(collection)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(weights, "not an ensemble weights file (no 'collections')") from None
    if entry is not None:
        return [m for m, w in entry["weights"].items() if w > 0]
    # no weights for it: the ensemble serves the first member, in its order, that covers the graph
    order = list(doc.get("members") or [f.name for f in FAMILIES])
    untrained = next(f.name for f in FAMILIES if not f.trained)
    return [next((m for m in order if model_kind(models, m, collection)), untrained)]


@contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    levels = {n: logging.getLogger(n).level for n in QUIET}
    if verbose:
        yield
        return
    for n in QUIET:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with silenced():
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


class Ranker:
    """Runs one file through prune, pad, extract and the models in a temporary folder."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        # this run's paths, one process, no bars
        self.common = {**{f"paths.{k}": cfg.paths[k] for k in ("dataset", "data_dir")}, "jobs": 1}
        self.models = Path(cfg.paths.models)
        self.stats = Path(cfg.stats)

    def plan(self, collection: str, model: str) -> list[tuple[str, str]]:
        """[(model name, kind)] to predict, in order (the ensemble's members for an ensemble)."""
        kind = model_kind(self.models, model, collection)
        if kind is None:
            have = trained_for(self.models, collection)
            where = self.models / model / ("" if model == "ensemble" else collection_dir(collection))
            raise DataError(where, f"no trained {model} for {collection} (trained for it: "
                                   f"{', '.join(have) if have else 'none'}; baseline needs no training; train with make all "
                                   f"DATA=<root>, or pick another model=)")
        if kind != ENSEMBLE:
            return [(model, kind)]
        members = ensemble_members(self.models / ENSEMBLE / "weights.json", collection, self.models)
        plan = []
        for m in members:
            k = model_kind(self.models, m, collection)
            if k is None:
                raise DataError(self.models / m, f"the ensemble's weights use {m} for {collection}, but it is not trained")
            plan.append((m, k))
        return plan

    def run(self, path: Path, collection: str, model: str) -> Ranking:
        check_file(path, collection)
        plan = self.plan(collection, model)
        with tempfile.TemporaryDirectory(prefix="rank-", dir=self.cfg.tmp) as tmp:
            t = Path(tmp)
            raw = t / "raw" / collection_dir(collection) / "test" / path.name
            raw.parent.mkdir(parents=True)
            try:
                os.symlink(path.resolve(), raw)
            except OSError:
                shutil.copyfile(path, raw)
            gf = GraphFile(collection, "test", raw)
            pred = t / "predictions"
            with quiet(bool(self.cfg.verbose)):
                features = self.features(t, collection) if any(family(k).needs_features for _, k in plan) else None
                for name, kind in plan:
                    self.predict(t, gf, name, kind, features)
                served = {}
                if model == ENSEMBLE:
                    served = self.blend(t, collection, [n for n, _ in plan])
            scores = read_predictions(predictions_path(pred, model, "test"))
            s = scores[gf.id]
        return Ranking(str(path), collection, model, config_order(collection_kind(collection), s), s, served)

    def features(self, t: Path, collection: str) -> Path:
        """The feature stages of the stage graph on the file under `t` (pad applying the training
        run's statistics); returns the extract output."""
        if not self.stats.is_file():
            raise DataError(self.stats, "normalization statistics of the training run not found (run make pad on the "
                                        "training root first)")
        return run_feature_stages(t / "raw", t, {**self.common, "collections": [collection], "splits": ["test"]},
                                  {"pad": {"stats": t / "stats.json", "stats_from": self.stats}})

    def predict(self, t: Path, gf: GraphFile, name: str, kind: str, features: Path | None) -> None:
        """The model `name` of family `kind` in predict mode on the file under `t` (`features`:
        the extract output, for the families that read it)."""
        pred = t / "predictions"
        f = family(kind)
        only = {"collections": [gf.collection], "splits": ["test"], "predictions": pred,
                **({"name": name} if name != f.name else {})}
        if not f.trained:  # its stage reads the raw file
            run_stage(StageConfig.of(f.module, self.common, only, data=t / "raw"))
        else:
            extra = {k: v.format(device=self.cfg.device) if isinstance(v, str) else v for k, v in f.predict_values}
            run_stage(StageConfig.of(f.module, self.common, {"mode": "predict", "models": self.models / name,
                                                             "data": features / f.reads}, extra, only))
        if not predictions_path(pred, name, "test").is_file():
            raise DataError(self.models / name, f"{name} wrote no predictions for {gf.collection}")

    def blend(self, t: Path, collection: str, members: list[str]) -> dict[str, float]:
        result = run_stage(StageConfig.of(stage_named(ENSEMBLE).module, self.common, {
            "mode": "apply", "splits": ["test"], "data": t / "raw", "predictions": t / "predictions",
            "weights": self.models / ENSEMBLE / "weights.json", "members": list(members)}))
        return {m: float(w) for m, w in result["served"]["test"][collection].items()}


def rank_file(path: str | Path, collection: str | None = None, model: str = "ensemble", **overrides: object) -> Ranking:
    """Rank the configs of one `.npz` file with the trained `model`; `overrides` are rank
    config keys (e.g. `paths={"dataset": "kaggle"}` is written `**{"paths.dataset": "kaggle"}`)."""
    cfg = compose("rank", [f"{k}={v}" for k, v in overrides.items()])
    path = Path(path)
    return Ranker(cfg).run(path, collection_of(path, collection), model)


def rank_arrays(arrays: Mapping[str, np.ndarray], collection: str, model: str = "ensemble", stem: str = "program",
                **overrides: object) -> Ranking:
    """Rank the configs of one graph given as arrays (the keys of a raw file), e.g. inside an
    autotuner loop; the arrays are written to a temporary `.npz` and ranked like a file."""
    with tempfile.TemporaryDirectory(prefix="rank-arrays-") as tmp:
        path = Path(tmp) / f"{stem}.npz"
        write_graph(path, dict(arrays))
        return rank_file(path, collection, model, **overrides)


def hlo_collection(search: str, given: str | None) -> str:
    """The collection HLO configs are ranked as: `given`, else the layout:xla one of their search."""
    if given:
        check_collection(given)
        if collection_kind(given) != "layout":
            raise DataError(None, f"collection={given}: HLO text gives layout configs; pick a layout collection")
        return given
    return f"layout:xla:{search}"


def rank_hlo(text: str, collection: str | None = None, model: str = "ensemble", configs: int = 1000,
             search: str = "random", seed: int = 0, source: str = "<hlo>", cfg: DictConfig | None = None,
             allow_optimized: bool = False, **overrides: object) -> Ranking:
    """Rank candidate layout configs of the HLO module `text` with the trained `model` (`cfg`: a
    composed rank config, else `overrides` of its keys); the Ranking's `nodes` name the
    configurable instructions and `arrays` hold the featurized program and its configs. HLO after
    XLA's optimizations is refused unless `allow_optimized` (`pipeline.featurize.hlo_to_arrays`)."""
    from pipeline.featurize import hlo_to_arrays

    arrays, names = hlo_to_arrays(text, int(configs), search, int(seed), source=source,
                                  allow_optimized=bool(allow_optimized))
    collection = hlo_collection(search, collection)
    cfg = cfg if cfg is not None else compose("rank", [f"{k}={v}" for k, v in overrides.items()])
    with tempfile.TemporaryDirectory(prefix="rank-hlo-", dir=cfg.tmp) as tmp:
        path = Path(tmp) / f"{Path(source).name.split('.')[0] or 'program'}.npz"
        write_graph(path, arrays)
        r = Ranker(cfg).run(path, collection, model)
    r.file, r.nodes, r.arrays = source, names, arrays
    return r


def describe_tile(config_feat: np.ndarray) -> str:
    parts = []
    for name, lo in (("kernel", 0), ("output", 8), ("input", 16)):
        dims = [int(v) for v in config_feat[lo:lo + 6] if v > 0]
        if dims:
            parts.append(f"{name} {'x'.join(map(str, dims))}")
    return ", ".join(parts) or "all bounds 0"


def _order(group: np.ndarray) -> str:
    dims = [str(int(v)) for v in group if v >= 0]
    return "{" + ",".join(dims) + "}" if dims else "-"


def describe_layout(config: np.ndarray, node_ids: np.ndarray, opcodes: np.ndarray, max_nodes: int,
                    names: list[str] | None = None) -> str:
    """The configurable nodes whose layout is not the compiler's default (a group all -1), each by
    its HLO instruction name where `names` (node_config_ids order) are known."""
    set_nodes = np.flatnonzero((config >= 0).any(axis=1))
    if not set_nodes.size:
        return "compiler default everywhere"
    items = []
    for i in set_nodes[:max_nodes]:
        out, inp, ker = config[i, :6], config[i, 6:12], config[i, 12:]
        who = f"%{names[i]}" if names else f"node {int(node_ids[i])}"
        items.append(f"{who} {opcode_name(opcodes[node_ids[i]])} out {_order(out)} in {_order(inp)}"
                     + (f" ker {_order(ker)}" if (ker >= 0).any() else ""))
    more = set_nodes.size - max_nodes
    return "; ".join(items) + (f"; +{more} more nodes" if more > 0 else "")


def describe_configs(path: Path, indices: np.ndarray, max_nodes: int, chunk_configs: int,
                     names: list[str] | None = None) -> dict[int, str]:
    """A readable form of each config in `indices` (layout configs are streamed, never all read)."""
    g = read_graph(path, split="test")
    if g.kind == "tile":
        return {int(i): describe_tile(g.config_feat[i]) for i in indices}
    want = {int(i) for i in indices}
    out = {}
    for start, chunk in iter_node_config_feat(g, chunk_configs):
        for i in want.intersection(range(start, start + len(chunk))):
            out[i] = describe_layout(chunk[i - start], g.node_config_ids, g.node_opcode, max_nodes, names)
        if len(out) == len(want):
            break
    return out


def format_ranking(r: Ranking, text: Mapping[int, str], top: int) -> str:
    rel = r.relative()
    served = f" ({' + '.join(f'{m} {w:.2f}' for m, w in r.served.items())})" if r.served else ""
    lines = [f"{r.file}: {r.collection}, {r.order.size} configs, ranked by {r.model}{served}; "
             f"top {min(top, r.order.size)}, predicted fastest first (score 0 = fastest, 1 = slowest)",
             f"{'rank':>4} {'config':>7} {'score':>6}  config"]
    for k, i in enumerate(r.order[:top]):
        lines.append(f"{k + 1:>4} {int(i):>7} {rel[i]:>6.3f}  {text.get(int(i), '')}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> Ranking:
    if bool(cfg.file) == bool(cfg.get("hlo")):
        raise DataError(None, "give the program to rank: file=<npz> or hlo=<HLO text> (make rank FILE=<npz> or HLO=<file>), "
                              "one of the two")
    if int(cfg.top) < 1:
        raise DataError(None, f"top must be at least 1, got {cfg.top}")
    if cfg.get("hlo"):
        r = rank_hlo_file(cfg)
        shown = r.order[: int(cfg.top)]
        feat, ids, opcodes = r.arrays["node_config_feat"], r.arrays["node_config_ids"], r.arrays["node_opcode"]
        text = {int(i): describe_layout(feat[i], ids, opcodes, int(cfg.max_nodes), r.nodes) for i in shown}
    else:
        path = Path(cfg.file)
        if not path.is_file():
            raise DataError(path, "file not found")
        r = Ranker(cfg).run(path, collection_of(path, cfg.collection), str(cfg.model))
        shown = r.order[: int(cfg.top)]
        text = describe_configs(path, shown, int(cfg.max_nodes), int(cfg.chunk_configs))
    print(format_ranking(r, text, int(cfg.top)), flush=True)
    if cfg.out:
        write_text_atomic(cfg.out, json.dumps(r.to_dict()) + "\n")
        log.info("wrote %s (the full order of %d configs)", cfg.out, r.order.size)
    return r


def rank_hlo_file(cfg: DictConfig) -> Ranking:
    """The ranking of the HLO text file `cfg.hlo` with this run's settings."""
    from pipeline.io.hlo import read_hlo_text

    source = Path(cfg.hlo)
    return rank_hlo(read_hlo_text(source), cfg.collection, str(cfg.model), int(cfg.configs), str(cfg.search), int(cfg.seed),
                    str(source), cfg=cfg, allow_optimized=bool(cfg.get("allow_optimized", False)))


@entry_point("rank")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
