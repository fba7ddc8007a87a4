"""Validation report: every model's per-collection scores, with plots a person can read at a glance.

    python -m pipeline.report [split=valid] [models=null] [data=<npz root>]
    make report

Reads `${paths.predictions}/<model>/<split>.parquet` of every model present (or of `models`) and
the measured runtimes of the `split` files under `data`. Writes into `out`, atomically:
- `validation.md`: a table of per-collection scores for every model (the best in bold), the
  best-of-top-K table, and the figures below embedded;
- `validation_scores.png`: scores per collection and model (grouped bars);
- `validation_ranks.png`: predicted vs measured rank, one panel per graph (one graph per
  collection, the one with the most configs) and model;
- `validation_topk.png`: best-of-top-K slowdown against K (mean over a collection's graphs of
  min runtime among the model's top K / the true min runtime), one panel per collection;
- `validation.json`: the same figures for machines (`models.<m>.collections`, `.score`,
  `.per_graph`, `top_k.slowdown.<m>.<collection>`, `rank_graphs`, `skipped`, and
  `noise_ceiling` below when present).

Noise ceiling (`noise_ceiling=true`, when `<data>/.truth/` exists, as on the embedded sample; on
other data, where `audit` names a `make audit` report, its per-graph estimates from duplicate
configs, `noise_ceiling.source` = `audit`):
the generator's noiseless cost of every config (`<npz root>/.truth/<collection dir>/<split>/<stem>.npy`,
see `pipeline.sample_data`) ranks the configs as well as anything can, so its score against the
measured runtimes is the best reachable under the measurement noise. Per graph: the competition
metric of the submission ordered by the noiseless cost (ties by config index, as in every
submission; `ceiling_score`): layout, its Kendall tau against the measured runtimes; tile, the
tile score of the noiseless top 5. A collection's
ceiling is the mean over its graphs, only for collections whose every graph has its truth.
JSON: `noise_ceiling.collections.<c>`, `.score` (mean of the collections, null unless every
scored collection has a ceiling), `.graphs.<c>`, `.per_graph.<ID>`, `.missing` (IDs without a
usable truth file or audit ceiling; `.why.<ID>`: the audit's reason) and `.fraction.<m>.<c>` / `.fraction.<m>.overall` (model score / ceiling; null
where the ceiling is not positive or absent). In `validation.md`: a `noise ceiling` row under
the scores and a table of the fractions. Without `.truth/` or an audit all of it is absent.
Invariant: scores are those of `pipeline.evaluate` on the submission `pipeline.submission` would
write from the same predictions (same rows, same validator, same metric code); a model whose
predictions do not cover the split is left out with its reason, never scored on a subset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, CI or Kaggle
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from models import metrics  # noqa: E402
from pipeline.core.cli import stage  # noqa: E402
from pipeline.core.errors import DataError  # noqa: E402
from pipeline.core.fsutil import write_text_atomic  # noqa: E402
from pipeline.graph import model_order  # noqa: E402
from pipeline.io.catalog import COLLECTIONS, TRUTH, GraphFile, collection_kind, discover, resolve_root, split_id, truth_path  # noqa: E402
from pipeline.io.predictions import predictions_path, read_predictions  # noqa: E402
from pipeline.io.runtimes import load_runtimes, score_submission  # noqa: E402
from pipeline.io.submission_csv import rows_from_predictions  # noqa: E402
from pipeline.reporting.markdown import IN_SAMPLE, VALID_FOLDS, _markdown, _num, _served_lines  # noqa: E402, F401
from pipeline.reporting.plots import CEILING_LABEL, _score_of, plot_ranks, plot_scores, plot_top_k  # noqa: E402, F401

log = logging.getLogger(__name__)

# Known models first, in pipeline order, so colours and table rows stay put from run to run.
MODEL_ORDER = tuple(model_order())


def model_names(predictions: str | Path, split: str, wanted: list[str] | None) -> list[str]:
    """Models with `<split>.parquet` under `predictions` (or the `wanted` ones), in a stable order."""
    root = Path(predictions)
    found = sorted(p.parent.name for p in root.glob(str(predictions_path("", "*", split)))) if root.is_dir() else []
    if wanted is not None:
        missing = [m for m in wanted if m not in found]
        if missing:
            raise DataError(predictions_path(root, missing[0], split), "predictions not found (run that model's stage first)")
        found = list(wanted)
    return sorted(found, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))


def top_k_slowdown(scores: np.ndarray, runtime: np.ndarray, k: int, kind: str = "tile", tile_copies: str = "once") -> np.ndarray:
    """(k,) min runtime among the first K configs a submission lists (`metrics.config_order`) /
    min runtime, for K = 1..k."""
    order = metrics.config_order(kind, scores, k, tile_copies)[:k]
    best = np.minimum.accumulate(runtime[order]) / runtime.min()
    # a graph with fewer than k configs has found its best once all are listed
    return np.concatenate([best, np.full(k - best.size, best[-1])])


def pick_rank_graphs(files: list[GraphFile], runtimes: Mapping[str, np.ndarray], n: int) -> list[str]:
    """One graph per collection (the one with the most configs, the clearest picture), up to `n`."""
    by_c: dict[str, list[GraphFile]] = {}
    for f in files:
        by_c.setdefault(f.collection, []).append(f)
    ranked = {c: sorted(fs, key=lambda f: (-runtimes[f.id].size, f.id)) for c, fs in by_c.items()}
    picked: list[str] = []
    depth = 0
    while len(picked) < n and any(depth < len(v) for v in ranked.values()):
        for c in COLLECTIONS:
            if c in ranked and depth < len(ranked[c]) and len(picked) < n:
                picked.append(ranked[c][depth].id)
        depth += 1
    return picked


def load_truth(root: str | Path, files: list[GraphFile], runtimes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Noiseless cost by graph ID, for the files whose truth exists with one value per config.

    None when the npz root has no `.truth/` folder (real data). A file that is missing, not
    readable or of the wrong length is left out with a warning.
    """
    base = resolve_root(root)
    if not (base / TRUTH).is_dir():
        return None
    out: dict[str, np.ndarray] = {}
    for f in files:
        p = truth_path(base, f.collection, f.split, f.stem)
        if not p.is_file():
            continue
        try:
            t = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("noise ceiling: %s unreadable, left out: %s", p, e)
            continue
        if t.shape != runtimes[f.id].shape or not np.isfinite(t).all():
            log.warning("noise ceiling: %s has shape %s (or non-finite values) for %d configs, left out",
                        p, t.shape, runtimes[f.id].size)
            continue
        out[f.id] = t.astype(np.float64)
    return out


def ceiling_score(kind: str, truth: np.ndarray, runtime: np.ndarray, k: int = metrics.TILE_TOP_K) -> float:
    """One graph's noise ceiling: the score of the noiseless cost `truth` against `runtime`.

    The score a model that knew the noiseless cost would get: the competition metric of the
    submission ordered by `truth` (ties by config index, as every submission). layout: the
    Kendall tau of that order against the measured runtimes (configs of equal noiseless cost,
    e.g. a default layout written out and written as -1, count as the coin flips a strict
    order makes of them, which tau-b of `truth` itself would leave out); tile: the tile score
    of the `k` configs of least noiseless cost. Copies of the best config all count here (the
    oracle knows they are the best, and their measurements differ by noise alone), while a
    model's submission lists each config once in its first `k` (`metrics.tile_order`).
    """
    if kind == "tile":
        return metrics.tile_score(metrics.ranking(truth), runtime, k=k)
    return metrics.layout_score(metrics.ranking(truth), runtime)


def noise_ceiling(files: list[GraphFile], runtimes: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                  scored: Mapping[str, dict], tile_k: int = metrics.TILE_TOP_K) -> dict | None:
    """The `noise_ceiling` entry of the report (see the module docstring); None without any truth."""
    per_graph = {f.id: ceiling_score(f.kind, truth[f.id], runtimes[f.id], tile_k) for f in files if f.id in truth}
    return ceiling_entry(files, per_graph, scored)


def audit_ceiling(files: list[GraphFile], audit_json: str | Path) -> dict[str, float]:
    """Per graph ID, the ceiling `make audit` estimated from duplicate configs (`models.audit`'s
    `ceiling`: an upper bound of the score a model can expect, scored as here, every config
    against its measured runtime); graphs without one (n/a: the duplicates cannot support it,
    the reason in the audit) are left out, and so is their collection's ceiling."""
    graphs = json.loads(Path(audit_json).read_text()).get("graphs", {})
    return {f.id: float(graphs[f.id]["ceiling"]) for f in files
            if graphs.get(f.id, {}).get("ceiling") is not None}


def audit_ceiling_reasons(files: list[GraphFile], audit_json: str | Path) -> dict[str, str]:
    """Per graph ID of `files` without an audit ceiling, why (the audit's `ceiling_why`; a graph
    the audit did not cover: "not audited")."""
    graphs = json.loads(Path(audit_json).read_text()).get("graphs", {})
    return {f.id: (graphs[f.id].get("ceiling_why") or "no reason recorded") if f.id in graphs else "not audited"
            for f in files if graphs.get(f.id, {}).get("ceiling") is None}


def ceiling_entry(files: list[GraphFile], per_graph: Mapping[str, float], scored: Mapping[str, dict]) -> dict | None:
    """The `noise_ceiling` entry from one ceiling per graph (a collection gets one only where
    every graph has it); None when no collection does."""
    missing = [f.id for f in files if f.id not in per_graph]
    covered = {c for c in COLLECTIONS if any(f.collection == c for f in files)} - {split_id(g)[0] for g in missing}
    if not covered:
        return None
    if missing:
        log.warning("noise ceiling: %d graphs have none; their collections get no ceiling: %s",
                    len(missing), ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    kept = {g: v for g, v in per_graph.items() if split_id(g)[0] in covered}
    means = metrics.collection_means(kept, {g: split_id(g)[0] for g in kept})
    collections = {c: means[c] for c in COLLECTIONS if c in means}
    graphs = {c: sum(1 for g in kept if split_id(g)[0] == c) for c in collections}
    all_collections = {f.collection for f in files}
    score = metrics.overall_score(collections) if set(collections) == all_collections else None

    def frac(v: float, ceiling: float | None) -> float | None:
        return float(v / ceiling) if ceiling is not None and ceiling > 0 else None

    fraction = {m: {c: frac(s["collections"][c], collections[c]) for c in collections if c in s["collections"]}
                   | {"overall": None if s["score"] is None else frac(s["score"], score)} for m, s in scored.items()}
    return {"collections": collections, "score": score, "graphs": graphs, "per_graph": kept,
            "missing": missing, "fraction": fraction}


def ensemble_served(weights: str | Path | None) -> dict:
    """`{"ensemble": {"served": {split: {collection: {member: weight}}}, "method": {collection:
    method}, "out_of_fold": {collection: {method: score}}}}` from the ensemble's weights file;
    empty when there is none."""
    try:
        doc = json.loads(Path(weights).read_text()) if weights else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or "served" not in doc:
        return {}
    cols = doc.get("collections", {})
    return {"ensemble": {"served": doc["served"], "method": {c: e.get("method") for c, e in cols.items()},
                         "out_of_fold": {c: e.get("out_of_fold", {}) for c, e in cols.items()}}}


def _split_and_models(cfg: DictConfig) -> tuple[list[GraphFile], list[str]]:
    """The split's files and the models with predictions for it; raises `DataError` without either."""
    if cfg.split == "test":
        raise DataError(None, "the test split has no measured runtimes (all zero): report split=valid or split=train")
    files = discover(cfg.data, splits=list(cfg.fold_splits) if cfg.split == "oof" else [cfg.split], announce=True)
    if not files:
        raise DataError(cfg.data, f"no .npz files in the '{cfg.split}' split to score against")
    models = model_names(cfg.predictions, cfg.split, None if cfg.models is None else list(cfg.models))
    if not models:
        raise DataError(cfg.predictions, f"no <model>/{cfg.split}.parquet predictions (run `make baseline` or a model stage first)")
    return files, models


def covered_files(files: list[GraphFile], predictions: Mapping[str, np.ndarray]) -> list[GraphFile]:
    """The files of the collections whose every graph has predictions (a model may serve only
    some collections: it is scored on those, with no overall score)."""
    missing = {f.collection for f in files if f.id not in predictions}
    return [f for f in files if f.collection not in missing]


def _score_models(cfg: DictConfig, models: list[str], files: list[GraphFile],
                  runtimes: Mapping[str, np.ndarray]) -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """Score each model's predictions as the submission they would make.

    Returns (scores, predictions) of the models scored and the reason of each one left out;
    raises `DataError` when no model could be scored.
    """
    scored: dict[str, dict] = {}
    preds: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    all_collections = {f.collection for f in files}
    for m in models:
        path = predictions_path(cfg.predictions, m, cfg.split)
        try:
            predictions = read_predictions(path)
            mine = covered_files(files, predictions)
            if not mine:
                raise DataError(path, f"predicts none of the {cfg.split} collections' graphs in full")
            scored[m] = score_submission(rows_from_predictions(predictions, mine, cfg.tile_top, str(cfg.tile_copies)), mine,
                                         {f.id: runtimes[f.id] for f in mine})
            if {f.collection for f in mine} != all_collections:  # no overall over a part of the split
                scored[m]["score"] = None
                log.info("%s predicts only %s", m, ", ".join(c for c in COLLECTIONS if c in scored[m]["collections"]))
        except DataError as e:
            skipped[m] = str(e)
            log.warning("%s left out of the report: %s", m, e)
            continue
        preds[m] = predictions
        log.info("%s: overall %s (%s)", m, _num(scored[m]["score"]),
                 ", ".join(f"{c} {v:.4f}" for c, v in scored[m]["collections"].items()))
    if not scored:
        raise DataError(cfg.predictions, f"no model's {cfg.split} predictions cover the split's files (see the warnings above)")
    return scored, preds, skipped


def _top_k_slowdowns(preds: dict[str, dict], runtimes: Mapping[str, np.ndarray],
                     ids_by_collection: dict[str, list[str]], collections: list[str], k: int,
                     tile_copies: str) -> dict[str, dict]:
    """`{model: {collection or "all": mean best-of-top-K slowdown curve, (k,) as a list}}`."""
    kind = {gid: collection_kind(c) for c, ids in ids_by_collection.items() for gid in ids}
    slowdown: dict[str, dict] = {}
    for m, predictions in preds.items():
        curves = {gid: top_k_slowdown(predictions[gid], runtimes[gid], k, kind[gid], tile_copies)
                  for gid in runtimes if gid in predictions}
        slowdown[m] = {c: np.mean([curves[g] for g in ids_by_collection[c]], axis=0).tolist()
                       for c in collections if all(g in curves for g in ids_by_collection[c])}
        if len(slowdown[m]) == len(collections):  # "all" only over the whole split
            slowdown[m]["all"] = np.mean(list(curves.values()), axis=0).tolist()
    return slowdown


def _report_ceiling(cfg: DictConfig, files: list[GraphFile], runtimes: Mapping[str, np.ndarray],
                    scored: Mapping[str, dict]) -> dict | None:
    """The noise ceiling when asked for and the data has truth files (logged); else None."""
    if not cfg.noise_ceiling:
        return None
    ceiling = None
    truth = load_truth(cfg.data, files, runtimes)
    if truth is not None:
        ceiling = noise_ceiling(files, runtimes, truth, scored, min(int(cfg.tile_top), metrics.TILE_TOP_K))
        if ceiling is not None:
            ceiling["source"] = "truth"
    elif cfg.audit and Path(cfg.audit).is_file():
        ceiling = ceiling_entry(files, audit_ceiling(files, cfg.audit), scored)
        if ceiling is not None:
            ceiling["source"] = "audit"
            ceiling["why"] = audit_ceiling_reasons(files, cfg.audit)
    if ceiling is not None:
        log.info("noise ceiling: overall %s (%s)", "n/a" if ceiling["score"] is None else f"{ceiling['score']:.4f}",
                 ", ".join(f"{c} {v:.4f}" for c, v in ceiling["collections"].items()))
    return ceiling


def _best_models(scored: Mapping[str, dict], collections: list[str]) -> dict[str, str]:
    """The best-scoring model per collection and overall."""
    def best(column: str) -> str | None:
        have = [m for m in scored if _score_of(scored[m], column) is not None]
        return max(have, key=lambda m: _score_of(scored[m], column)) if have else None

    return {c: best(c) for c in collections + ["overall"]}


def run(cfg: DictConfig) -> dict:
    """Score every model on the split, draw the figures and write the report; returns its JSON content."""
    files, models = _split_and_models(cfg)
    runtimes = load_runtimes(files)
    scored, preds, skipped = _score_models(cfg, models, files, runtimes)
    k = int(cfg.top_k)
    ids_by_collection: dict[str, list[str]] = {}
    for f in files:
        ids_by_collection.setdefault(f.collection, []).append(f.id)
    collections = [c for c in COLLECTIONS if c in ids_by_collection]
    slowdown = _top_k_slowdowns(preds, runtimes, ids_by_collection, collections, k, str(cfg.tile_copies))

    rank_ids = pick_rank_graphs(files, runtimes, int(cfg.rank_graphs))
    out = Path(cfg.out)
    name = cfg.name
    figures = {"scores": f"{name}_scores.png", "topk": f"{name}_topk.png"} | ({"ranks": f"{name}_ranks.png"} if rank_ids else {})
    graphs = {c: len(ids_by_collection[c]) for c in collections}
    ceiling = _report_ceiling(cfg, files, runtimes, scored)
    plot_scores(scored, graphs, out / figures["scores"], cfg.dpi, ceiling)
    if "ranks" in figures:
        plot_ranks(preds, runtimes, rank_ids, {m: s["per_graph"] for m, s in scored.items()},
                   out / figures["ranks"], cfg.dpi, int(cfg.rank_points))
    plot_top_k(slowdown, collections, k, out / figures["topk"], cfg.dpi)

    result = {
        "split": cfg.split, "data": str(cfg.data), "predictions": str(cfg.predictions), "graphs": graphs,
        "models": {m: {key: s[key] for key in ("collections", "score", "graphs", "undefined_tau", "per_graph")}
                   for m, s in scored.items()},
        "skipped": skipped,
        "best": _best_models(scored, collections),
        "top_k": {"k": k, "slowdown": slowdown},
        "rank_graphs": {g: {m: scored[m]["per_graph"][g] for m in scored if g in scored[m]["per_graph"]} for g in rank_ids},
        "figures": figures,
        "folds": any(predictions_path(cfg.predictions, m, "oof").is_file() for m in models),
    } | ({"noise_ceiling": ceiling} if ceiling is not None else {}) | ensemble_served(cfg.get("weights"))
    write_text_atomic(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(out / f"{name}.md", _markdown(result, name))
    log.info("report written to %s (%s.md, %s.json, %d figures)", out, name, name, len(figures))
    return result


@stage("report")
def main(cfg: DictConfig) -> float:
    result = run(cfg)
    best = result["best"]["overall"]
    return float("-inf") if best is None else result["models"][best]["score"]


if __name__ == "__main__":
    main()
