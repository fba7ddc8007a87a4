"""Folds over graphs and seeds for every trainer: K fold models x S seeds per collection,
out-of-fold predictions, and an optional final fit on every labelled graph.

    folds=5            # conf/common.yaml (make: FOLDS=5): every trainer trains 5 fold models per collection
    final=true         # then one model per collection on all labelled graphs (make: FINAL=true)
    seeds=[0,1,2]      # GNN: each fold (or the plain run) trained once per seed

The labelled graphs (train and valid splits) of each collection are dealt into `folds` folds
(`assign_folds`: by graph, deterministic for `fold_seed`, identical graphs in one fold, per
collection). Fold model f trains on the other folds, picks its epoch or early stop on fold f
and predicts fold f and the test split. It is the trainer's ordinary `run` on a *fold view*
of the extract stage's output: `<processed>/folds/k<K>_s<seed>/fold<f>/{gnn,tables}` holds
the other folds as `train`, fold f as `valid` and the test split as it is (GNN tensors are
symlinked, GBDT tables filtered by graph). Every run writes into its own folder under the
trainer's model folder (`fold<f>`, `fold<f>_seed<s>`, `final`, `seed<s>`), listed in
`runs.json` there. Then the trainer's predictions folder gets:
- `oof.parquet`: every config of every labelled graph, scored by the fold models that did not
  see the graph (their seeds' per-graph rank average);
- `valid.parquet`: the same scores on the valid split's graphs (out of fold, so the report
  and the ensemble's valid figures are too);
- `test.parquet`: the per-graph rank average of every fold and seed model (or, with
  `final=true`, of the final models, trained per collection for the fold models' median
  epoch count or boosting rounds).
`mode=predict` on a model folder with `runs.json` predicts with the same models and averages
them the same way (rank, the Kaggle notebook).

A collection with fewer distinct labelled graphs than `folds` gets as many folds as it has
(logged); one with fewer than 2 is skipped by the fold runs (logged) and only a final fit
serves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf

from models.ensemble import average_seeds
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.io.catalog import COLLECTIONS, collection_dir, graph_id
from pipeline.io.predictions import predictions_path, read_predictions, write_predictions

if TYPE_CHECKING:
    from pipeline.train.trainer import Trainer

log = logging.getLogger(__name__)

LABELLED = ("train", "valid")
RUNS = "runs.json"
PLAN = "plan.json"
VIEW_DONE = ".complete"


# ---------------------------------------------------------------------------- fold assignment (pure)


def assign_folds(groups: Mapping[str, str], k: int, seed: int) -> dict[str, int]:
    """Graph id -> fold in [0, min(k, number of groups)): graphs sharing a group key (identical
    graphs) share a fold. Groups are ordered by a hash of (seed, key) and dealt round-robin, so
    the folds differ in size by one group at most and the result depends on nothing else."""
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    keys = sorted(set(groups.values()), key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    n = min(k, len(keys))
    fold_of = {g: i % n for i, g in enumerate(keys)} if n else {}
    return {gid: fold_of[g] for gid, g in sorted(groups.items())}


def fingerprint(path: Path) -> str:
    """A hash of a graph's structure and node features (the extract stage's GNN tensors):
    equal for identical graphs, whatever their names."""
    h = hashlib.sha1()
    try:
        with np.load(path) as z:
            for key in ("node_opcode", "edge_index", "node_feat"):
                a = np.ascontiguousarray(z[key])
                h.update(key.encode() + str(a.shape).encode() + a.tobytes())
    except (OSError, KeyError, ValueError) as e:
        raise DataError(path, f"cannot read the graph for its fold ({e})") from None
    return h.hexdigest()


@dataclass
class Plan:
    """The fold of every labelled graph, per collection, and where the views live."""

    root: Path  # <processed>/folds/k<K>_s<seed>[_<splits>]
    processed: Path
    labelled: list[str]  # the splits dealt into folds (fold_splits)
    folds: dict[str, int]  # collection -> number of folds (>= 2)
    fold: dict[str, dict[str, int]]  # collection -> {graph id: fold}
    split: dict[str, str]  # graph id -> its split, every graph
    files: dict[str, str]  # graph id -> file stem
    skipped: dict[str, str]  # collection -> why it has no folds

    def ids(self, collection: str, fold: int | None = None) -> list[str]:
        return sorted(g for g, f in self.fold.get(collection, {}).items() if fold is None or f == fold)

    @property
    def max_folds(self) -> int:
        return max(self.folds.values(), default=0)

    def role(self, gid: str, collection: str, fold: int | None) -> str | None:
        """Where a graph sits in the view of `fold` (None: the final fit's): train, valid (the
        held-out fold), test (every graph outside the labelled splits), or None (left out)."""
        if self.split[gid] not in self.labelled:
            return "test"
        if fold is None:
            return "train"
        if collection not in self.fold:
            return None
        return "valid" if self.fold[collection][gid] == fold else "train"

    def to_json(self) -> dict:
        return {"labelled": self.labelled, "folds": self.folds, "fold": self.fold, "split": self.split,
                "files": self.files, "skipped": self.skipped}


def _source_stamp(processed: Path) -> str:
    s = processed / ".complete"
    return str(s.stat().st_mtime_ns) if s.is_file() else "none"


def make_plan(processed: str | Path, k: int, seed: int, labelled: list[str] | tuple[str, ...] = LABELLED) -> Plan:
    """The fold plan of the extract stage's output `processed` (its GNN tensors give each
    graph's identity): the graphs of the `labelled` splits dealt into `k` folds per collection.
    Cached in `<processed>/folds/k<K>_s<seed>[_<splits>]/plan.json` and rebuilt, views
    included, when the extract stage has run again since."""
    processed, labelled = Path(processed), [str(s) for s in labelled]
    bad = [s for s in labelled if s not in LABELLED]
    if bad or not labelled:
        raise DataError(None, f"fold_splits must be a non-empty subset of {list(LABELLED)}, got {labelled}", key="fold_splits")
    suffix = "" if sorted(labelled) == sorted(LABELLED) else "_" + "-".join(labelled)
    root = processed / "folds" / f"k{k}_s{seed}{suffix}"
    cached = root / PLAN
    stamp = _source_stamp(processed)
    if cached.is_file():
        doc = json.loads(cached.read_text())
        if doc.get("source") == stamp and "labelled" in doc:
            return Plan(root, processed, doc["labelled"], doc["folds"], doc["fold"], doc["split"], doc["files"],
                        doc["skipped"])
        shutil.rmtree(root)
    gnn = processed / "gnn"
    if not gnn.is_dir():
        raise DataError(gnn, "GNN tensors not found: folds are assigned from them (run the extract stage first)")
    plan = Plan(root, processed, labelled, {}, {}, {}, {}, {})
    for c in COLLECTIONS:
        groups = {}
        for split in ("train", "valid", "test"):
            for p in sorted((gnn / collection_dir(c) / split).glob("*.npz")):
                gid = graph_id(c, p.stem)
                plan.split[gid], plan.files[gid] = split, p.stem
                if split in labelled:
                    groups[gid] = fingerprint(p)
        if not groups:
            continue
        distinct = len(set(groups.values()))
        if distinct < 2:
            plan.skipped[c] = f"{distinct} distinct labelled graph{'s' if distinct != 1 else ''}: no folds"
            log.warning("%s: %s (a final fit, final=true, still trains on it)", c, plan.skipped[c])
            continue
        plan.fold[c] = assign_folds(groups, k, seed)
        plan.folds[c] = min(k, distinct)
        if distinct < k:
            log.warning("%s: %d distinct labelled graphs, fewer than folds=%d: %d folds", c, distinct, k, distinct)
        same = len(groups) - distinct
        log.info("%s: %d labelled graphs (%s) in %d folds%s", c, len(groups), "+".join(labelled), plan.folds[c],
                 f" ({same} identical to another, kept in its fold)" if same else "")
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, json.dumps({"source": stamp, **plan.to_json()}, indent=1) + "\n")
    return plan


# ---------------------------------------------------------------------------- views of the extract output


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _roles(plan: Plan, collection: str, fold: int | None) -> dict[str, str]:
    """{graph id: role} of a collection's graphs in the view of `fold` (left-out graphs absent)."""
    out = {}
    for gid in plan.split:
        if gid.startswith(collection + ":") and (role := plan.role(gid, collection, fold)) is not None:
            out[gid] = role
    return out


def _gnn_view(plan: Plan, fold: int | None, dst: Path) -> None:
    src = plan.processed / "gnn"
    for c in COLLECTIONS:
        cdir = src / collection_dir(c)
        for gid, role in _roles(plan, c, fold).items():
            name = f"{plan.files[gid]}.npz"
            _link(cdir / plan.split[gid] / name, dst / collection_dir(c) / role / name)


def _tables_view(plan: Plan, fold: int | None, dst: Path) -> None:
    src = plan.processed / "tables"
    for c in COLLECTIONS:
        cdir = src / collection_dir(c)
        tables = {s: cdir / f"{s}.parquet" for s in ("train", "valid", "test") if (cdir / f"{s}.parquet").is_file()}
        if not tables:
            continue
        out = dst / collection_dir(c)
        out.mkdir(parents=True, exist_ok=True)
        roles = _roles(plan, c, fold)
        if "test" in tables and {g for g, r in roles.items() if r == "test"} == {g for g in roles if plan.split[g] == "test"}:
            _link(tables["test"], out / "test.parquet")  # the test table as it is
            wanted = ("train", "valid")
        else:
            wanted = ("train", "valid", "test")
        scan = pl.concat([pl.scan_parquet(p) for p in tables.values()], how="vertical_relaxed")
        try:
            for role in wanted:
                ids = sorted(g for g, r in roles.items() if r == role)
                if ids:
                    scan.filter(pl.col("id").is_in(ids)).sink_parquet(out / f"{role}.parquet")
        except Exception as e:  # polars raises several types for unreadable tables
            raise DataError(cdir, f"cannot split the GBDT tables into folds ({type(e).__name__}: {e})") from None


VIEWS: dict[str, Callable[[Plan, int | None, Path], None]] = {"gnn": _gnn_view, "tables": _tables_view}


def view(plan: Plan, fold: int | None, what: str) -> Path:
    """The extract output as fold `fold` sees it (None: the final fit's view, every labelled
    graph as train), built once: `what` is gnn or tables."""
    if what not in VIEWS:
        raise ValueError(f"no fold view of '{what}' (gnn or tables)")
    dst = plan.root / ("all" if fold is None else f"fold{fold}") / what
    if (dst / VIEW_DONE).is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    VIEWS[what](plan, fold, tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / VIEW_DONE).write_text("")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


# ---------------------------------------------------------------------------- runs of a trainer


INPUT, MODELS = "data", "models"  # the trainer's config keys of its input (a view: gnn or tables) and its model folder


def seeds_of(cfg: DictConfig, trainer: Trainer) -> list[int]:
    """The seeds the fold runs loop over ([None] where the trainer averages them itself)."""
    if trainer.seeds_inside:
        return [None]
    seeds = cfg.get("seeds")
    return [int(s) for s in seeds] if seeds else [int(cfg.seed)]


def wanted(cfg: DictConfig, trainer: Trainer) -> bool:
    """Whether training goes through fold/seed runs rather than one plain run."""
    return int(cfg.get("folds") or 0) > 0 or bool(cfg.get("final")) or len(seeds_of(cfg, trainer)) > 1


def run_name(base: str, seed: int | None, seeds: int) -> str:
    """`base` (fold3, final), with `_seed<s>` where several seeds are trained; `seed<s>` alone."""
    if not base:
        return f"seed{seed}"
    return base if seed is None or seeds == 1 else f"{base}_seed{seed}"


def _run_cfg(cfg: DictConfig, trainer: Trainer, out: Path, pred: Path, overrides: dict) -> DictConfig:
    c = OmegaConf.to_container(cfg, resolve=True)
    c = OmegaConf.create(c)
    c[MODELS] = str(out)
    c.predictions = str(pred)
    c.folds, c.final = 0, False
    if "seeds" in c and not trainer.seeds_inside:
        c.seeds = None
    for k, v in overrides.items():
        OmegaConf.update(c, k, v, force_add=True)
    return c


def _read_runs(pred: Path, name: str, split: str) -> list[dict[str, np.ndarray]]:
    return [read_predictions(p) for p in sorted(pred.glob(f"**/{name}/{split}.parquet"))]


def average_runs(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per graph, the rank average of the runs that scored it (a collection with fewer folds is
    in fewer runs)."""
    by: dict[str, list[np.ndarray]] = {}
    for r in runs:
        for gid, s in r.items():
            by.setdefault(gid, []).append(s)
    return {gid: average_seeds([{gid: s} for s in ss], "rank")[gid] for gid, ss in sorted(by.items())}


RUN_DIR = re.compile(r"^(fold\d+|seed-?\d+|final)(_seed-?\d+)?$")


def _clear(out: Path) -> None:
    """Remove the run folders of an earlier fold/seed training (those runs.json lists, and any
    left by a training that was stopped before it wrote runs.json)."""
    doc = out / RUNS
    names = {r["name"] for r in json.loads(doc.read_text()).get("runs", [])} if doc.is_file() else set()
    names |= {p.name for p in out.iterdir() if p.is_dir() and RUN_DIR.match(p.name)} if out.is_dir() else set()
    for n in names:
        shutil.rmtree(out / n, ignore_errors=True)
    doc.unlink(missing_ok=True)


def train(cfg: DictConfig, trainer: Trainer, run_one: Callable[[DictConfig], dict], name: str) -> dict:
    """Train through fold/seed runs (see the module docstring); returns {run name: summary}."""
    out, pred_dir = Path(cfg[MODELS]), Path(cfg.predictions)
    k, fseed = int(cfg.get("folds") or 0), int(cfg.get("fold_seed") or 0)
    seeds = seeds_of(cfg, trainer)
    begin_stage(out)
    _clear(out)
    for split in ("oof", *cfg.splits, *(f"{sp}_fold_mean" for sp in cfg.splits)):
        predictions_path(pred_dir, name, split).unlink(missing_ok=True)
    processed = Path(cfg[INPUT]).parent
    labelled = list(cfg.get("fold_splits") or LABELLED)
    plan = make_plan(processed, max(k, 2), fseed, labelled) if k or cfg.get("final") else None
    runs: list[dict] = []
    summaries: dict[str, dict] = {}
    t_all = time.monotonic()

    def one(rname: str, fold: int | None, seed: int | None, role: str, inputs: dict, extra: dict) -> None:
        rout = out / rname
        over = {**inputs, **extra, **({"seed": seed} if seed is not None else {})}
        part = rout / "predictions"
        if "collections" in extra:  # final runs share a model folder, one collection each
            part = part / extra["collections"][0].replace(":", "_")
        t0 = time.monotonic()
        log.info("%s: run %s (%s%s%s)", name, rname, role, "" if fold is None else f", held-out fold {fold}",
                 f", {extra['collections'][0]}" if "collections" in extra else "")
        s = run_one(_run_cfg(cfg, trainer, rout, part, over)) or {}
        runs.append({"name": rname, "fold": fold, "seed": seed, "role": role, "seconds": round(time.monotonic() - t0, 1),
                     **({"collections": extra["collections"]} if "collections" in extra else {})})
        summaries.setdefault(rname, {}).update(s)
        if len(runs) == 1 and planned > 1:
            per = runs[0]["seconds"]
            log.info("%s: run 1 of %d took %.1f min; about %.1f min for the other %d at that pace", name, planned,
                     per / 60, per * (planned - 1) / 60, planned - 1)

    n = plan.max_folds if k else 0
    finals = [c for c in COLLECTIONS if any(g.startswith(c + ":") for g in plan.split)] if cfg.get("final") else []
    if cfg.get("final") and cfg.collections:
        finals = [c for c in finals if c in set(cfg.collections)]
    planned = (n or (0 if finals else 1)) * len(seeds) + len(finals) * len(seeds)
    log.info("%s: %d fold%s x %d seed%s%s = %d training runs (each trains every collection it has data for)", name, n,
             "" if n == 1 else "s", len(seeds), "" if len(seeds) == 1 else "s",
             f", then {len(finals)} x {len(seeds)} final fits (one per collection)" if finals else "", planned)
    if plan is not None:
        for c in sorted({c for c in plan.fold} | set(finals), key=COLLECTIONS.index):
            ids = [g for g in plan.split if g.startswith(c + ":")]
            cost = training_cost(plan.folds.get(c, 0) if k else 0, len(seeds), c in finals, sum(plan.split[g] == "train" for g in ids),
                                 sum(plan.split[g] == "valid" for g in ids), "valid" in plan.labelled)
            log.info("%s: %s: %d models, about %.1fx the training time of one model on the train graphs", name, c,
                     cost["models"], cost["multiple"])
    if k:
        for f in range(n):
            inputs = {INPUT: str(view(plan, f, Path(cfg[INPUT]).name))}
            for s in seeds:
                one(run_name(f"fold{f}", s, len(seeds)), f, s, "fold", inputs, {"splits": ["valid", "test"]})
    elif not cfg.get("final"):
        for s in seeds:  # seeds only: each trained on the plain splits
            one(run_name("", s, len(seeds)), None, s, "seed", {}, {})
    if cfg.get("final"):
        inputs = {INPUT: str(view(plan, None, Path(cfg[INPUT]).name))}
        for c in finals:
            fold_sums = [v[c] for r, v in summaries.items() if c in v]
            extra = {"collections": [c], "splits": ["test"], **trainer.final_overrides(fold_sums)}
            for s in seeds:
                one(run_name("final", s, len(seeds)), None, s, "final", inputs, extra)
    # predictions: oof from the fold runs; a labelled split's = its graphs' oof; any other split's
    # = the test-role runs' mean (in fold and final views its graphs sit under test)
    fold_runs = [r for r in runs if r["role"] == "fold"]
    oof: dict[str, np.ndarray] = {}
    for f in sorted({r["fold"] for r in fold_runs}):
        parts = [p for r in fold_runs if r["fold"] == f for p in _read_runs(out / r["name"] / "predictions", name, "valid")]
        oof.update(average_runs(parts))
    if oof:
        write_predictions(predictions_path(pred_dir, name, "oof"), oof, cfg)
        log.info("wrote %s (%d graphs, out of fold)", predictions_path(pred_dir, name, "oof"), len(oof))
    test_role = "final" if cfg.get("final") else "fold" if k else "seed"

    def mean_of(role: str, split: str) -> dict[str, np.ndarray]:
        src = split if plan is None else "test"
        got = average_runs([p for r in runs if r["role"] == role for p in _read_runs(out / r["name"] / "predictions", name, src)])
        return got if plan is None else {g: v for g, v in got.items() if plan.split.get(g) == split}

    for split in cfg.splits:
        from_oof = bool(k) and split in plan.labelled
        scores = {g: v for g, v in oof.items() if plan.split.get(g) == split} if from_oof else mean_of(test_role, split)
        if scores:
            write_predictions(predictions_path(pred_dir, name, split), scores, cfg)
            log.info("wrote %s (%d graphs, %s)", predictions_path(pred_dir, name, split), len(scores),
                     "out of fold" if from_oof else f"mean of the {test_role} runs")
        if not from_oof and k and cfg.get("final"):  # what the fold models' mean would have given, to compare
            side = mean_of("fold", split)
            if side:
                write_predictions(predictions_path(pred_dir, name, f"{split}_fold_mean"), side, cfg)
    doc = {"folds": k, "fold_seed": fseed, "fold_splits": labelled, "seeds": seeds, "final": bool(cfg.get("final")), "test_from": test_role,
           "plan": str(plan.root) if plan else None, "oof_graphs": len(oof), "runs": runs,
           "seconds": round(time.monotonic() - t_all, 1)}
    write_text_atomic(out / RUNS, json.dumps(doc, indent=2, default=str) + "\n")
    finish_stage(out, {"runs": len(runs), "test_from": test_role, "oof_graphs": len(oof)})
    return summaries


def predict(cfg: DictConfig, trainer: Trainer, run_one: Callable[[DictConfig], dict], name: str) -> None:
    """mode=predict on a model folder trained through runs: every test-role run predicts
    `splits` of the given data; their per-graph rank average is written."""
    out, pred_dir = Path(cfg[MODELS]), Path(cfg.predictions)
    doc = json.loads((out / RUNS).read_text())
    role = doc["test_from"]
    seed_of = {r["name"]: r["seed"] for r in doc["runs"] if r["role"] == role}  # inference draws from the run's seed
    names = sorted(seed_of)
    if cfg.get("collections"):  # runs without a model of the collections asked for (fewer folds there) are passed over
        names = [n for n in names if any((out / n / collection_dir(c)).is_dir() for c in cfg.collections)] or names
    tmp = pred_dir / f".{name}-runs"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rname in names:
            seed = {} if seed_of[rname] is None else {"seed": seed_of[rname]}
            run_one(_run_cfg(cfg, trainer, out / rname, tmp / rname, {"mode": "predict", **seed}))
        for split in cfg.splits:
            scores = average_runs(_read_runs(tmp, name, split))
            if scores:
                write_predictions(predictions_path(pred_dir, name, split), scores, cfg)
                log.info("wrote %s (%d graphs, mean of %d %s runs)", predictions_path(pred_dir, name, split), len(scores),
                         len(names), role)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_dirs(out: str | Path) -> list[Path]:
    """The folders holding a trainer's models: the run folders that predict the test split
    (runs.json), or `out` itself for a plain run."""
    out = Path(out)
    if not (out / RUNS).is_file():
        return [out]
    doc = json.loads((out / RUNS).read_text())
    return [out / n for n in sorted({r["name"] for r in doc["runs"] if r["role"] == doc["test_from"]})]


def dispatch(cfg: DictConfig, trainer: Trainer, run_one: Callable[[DictConfig], dict], name: str) -> dict:
    """A trainer's entry: fold/seed runs where asked (train) or trained (predict), else its plain run."""
    out = Path(cfg[MODELS])
    if cfg.mode == "train":
        if wanted(cfg, trainer):
            return train(cfg, trainer, run_one, name)
        _clear(out)
        for split in ("oof", *(f"{sp}_fold_mean" for sp in cfg.splits)):  # a plain run has none of these
            predictions_path(cfg.predictions, name, split).unlink(missing_ok=True)
        return run_one(cfg)
    if (out / RUNS).is_file():
        predict(cfg, trainer, run_one, name)
        return {}
    return run_one(cfg)


def fold_metric(summaries: dict[str, dict], metric: Callable[[dict], float]) -> float:
    """The mean of `metric` over the fold runs' summaries (a cross-validated score for sweeps);
    over every run when there are no fold runs."""
    folds_ = {r: s for r, s in summaries.items() if r.startswith("fold")} or summaries
    vals = [v for s in folds_.values() if np.isfinite(v := metric(s))]
    return float(np.mean(vals)) if vals else float("-inf")


def training_cost(k: int, seeds: int, final: bool, train: int, valid: int, fold_valid: bool = True) -> dict:
    """What a setting trains for one collection of `train` / `valid` graphs, against one plain
    run (one model on the train graphs): models, and `multiple`, the graphs seen per epoch summed
    over the models relative to the plain run (training time scales with it). K fold models each
    see (K-1)/K of the labelled graphs; a final fit sees them all; every one of them `seeds` times."""
    labelled = train + (valid if fold_valid else 0)
    if k <= 0 and not final:
        return {"models": seeds, "multiple": float(seeds)}
    per_fold = (k - 1) / k * labelled if k > 0 else 0.0
    seen = seeds * (k * per_fold + (labelled if final else 0))
    return {"models": seeds * (max(k, 0) + (1 if final else 0)), "multiple": seen / max(1, train)}


def median_int(values: list[float], default: int) -> int:
    """The median of `values` rounded up to an int (at least 1); `default` when empty."""
    return max(1, int(np.ceil(statistics.median(values)))) if values else default
