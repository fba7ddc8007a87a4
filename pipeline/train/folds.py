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

import json
import logging
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from models.ensemble import average_seeds
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.io.catalog import COLLECTIONS, collection_dir
from pipeline.io.predictions import predictions_path, read_predictions, write_predictions
from pipeline.train.fold_plan import LABELLED, PLAN, Plan, assign_folds, fingerprint, make_plan  # noqa: F401 (the plan's names, here too)
from pipeline.train.fold_views import VIEW_DONE, view  # noqa: F401

if TYPE_CHECKING:
    from pipeline.train.trainer import Trainer

log = logging.getLogger(__name__)

RUNS = "runs.json"


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
