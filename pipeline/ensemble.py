"""Blend the available models' predictions per collection with weights fitted on valid.

    python -m pipeline.ensemble [members=[gnn,gbdt,analytical,baseline]] [blender.normalize=rank|minmax]
    python -m pipeline.ensemble mode=apply splits=[test]      # saved weights (Kaggle notebook)
    make ensemble

Reads each member's `${paths.predictions}/<member>/<split>.parquet` (a model trained with
several seeds has already averaged them there); members without predictions are left out.
The `blender` node builds the `models.ensemble.Blender` that says how: scores are normalized per
graph (`blender.normalize`) and blended with per-collection weights.
`mode=fit` (default) reads the `fit_split` runtimes under `data`, fits the weights to maximize
the competition metric (`blender.method` below) and writes them with each member's and
the blend's score to `weights` (json), then the stamp `.complete` beside it; both modes then
write `${paths.predictions}/ensemble/<split>.parquet` for `splits`. A collection without fitted
weights (no `fit_split` graphs, e.g. a root with test files only) is served by the first of
`members` whose predictions cover it (the training-free baseline at least); `served` in the
weights file records, per split and collection, the members used and their weights.

How the weights are fitted (`blender.method`, models.ensemble): `search` maximizes the metric on
the fit graphs, `shrink` pulls those weights toward equal ones, `equal` averages the members,
`best` takes the member that scores best alone. `auto` (default) scores each of
`blender.methods` leave-one-graph-out (each fit graph scored with the weights fitted on the others)
and uses the one with the best out-of-fold score, except that a blend replaces `best` only where
its mean gain over it exceeds `blender.min_gain_se` standard errors of the per-graph gains
(`models.ensemble.pick_method`); `out_of_fold` in the weights file keeps those
scores, the estimate of how the blend holds on graphs it was not fitted on. The `scores` entry
is in-sample (fitted and scored on the same graphs). `holdout=true` fits each
collection's weights on every other graph of `fit_split` (by ID) and scores those weights, and
each member alone, on the rest: `collections.<c>.holdout` in the weights file, an
out-of-sample estimate of what blending adds. The weights applied are then the half's.
Invariant: every graph of a member gets a blended score for every original config; with
`blender.method=search` the blend scores at least as well in sample as its best single member.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from models.ensemble import Blender, blend, collection_score
from pipeline.core.cli import instantiate, stage
from pipeline.core.errors import DataError, where
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.graph import FAMILIES
from pipeline.io.catalog import COLLECTIONS, collection_kind, discover, split_id
from pipeline.io.predictions import predictions_path, read_predictions, write_predictions
from pipeline.io.runtimes import load_runtimes

log = logging.getLogger(__name__)
NAME = "ensemble"


def load_member(predictions: str | Path, member: str, split: str, blender: Blender) -> dict[str, np.ndarray] | None:
    """A member's per-graph normalized scores on `split`, None if it has no predictions there."""
    path = predictions_path(predictions, member, split)
    return blender.normalize_all(read_predictions(path)) if path.is_file() else None


def load_members(cfg: DictConfig, blender: Blender, split: str) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for m in cfg.members:
        if m == NAME:
            raise DataError(None, "the ensemble cannot be its own member (remove 'ensemble' from members)")
        p = load_member(cfg.predictions, m, split, blender)
        if p is None:
            log.info("%s: no %s predictions; left out", m, split)
        else:
            out[m] = p
    return out


def by_collection(ids) -> dict[str, list[str]]:
    """Graph IDs grouped by collection, collections in the usual order."""
    out: dict[str, list[str]] = defaultdict(list)
    for gid in sorted(ids):
        out[split_id(gid)[0]].append(gid)
    return {c: out[c] for c in COLLECTIONS if c in out}


def covers(preds: dict[str, np.ndarray], sizes: dict[str, int]) -> bool:
    return all(g in preds and preds[g].size == n for g, n in sizes.items())


def fit_split_of(cfg: DictConfig) -> str:
    """`fit_split`, with auto resolved: oof where the members were trained in folds, else valid."""
    if cfg.fit_split == "auto":
        return "oof" if int(cfg.get("folds") or 0) > 0 else "valid"
    return str(cfg.fit_split)


def fit(cfg: DictConfig, blender: Blender) -> dict:
    """Fit per-collection weights on `fit_split`; returns (and writes) the weights document.
    A collection without `fit_split` graphs (or predictions on them) gets no weights: `apply`
    serves it with its first available member."""
    fit_split = cfg.fit_split
    files = discover(cfg.data, splits=list(cfg.fold_splits) if fit_split == "oof" else [fit_split], announce=True)
    runtimes = load_runtimes(files) if files else {}
    members = load_members(cfg, blender, fit_split) if files else {}
    doc = {"normalize": blender.normalize, "fit_split": fit_split, "out_of_fold_fit": fit_split == "oof",
           "fit_graphs": len(runtimes), "holdout": bool(cfg.holdout), "members": list(members), "collections": {}}
    if fit_split == "oof":
        log.info("fitting the weights on the members' out-of-fold predictions of %d labelled graphs", len(runtimes))
    if not files:
        log.warning("no %s files under %s: no weights fitted; each collection is served by its first available "
                    "member in the order %s", fit_split, cfg.data, ", ".join(cfg.members))
    elif not members:
        log.warning("no member has %s predictions: no weights fitted", fit_split)
    for c, ids in (by_collection(runtimes).items() if members else ()):
        with where(c):
            entry = fit_collection(cfg, blender, c, ids, members, runtimes)
        if entry is not None:
            doc["collections"][c] = entry
    write_text_atomic(cfg.weights, json.dumps(doc, indent=2) + "\n")
    log.info("wrote %s", cfg.weights)
    return doc


def fit_collection(cfg: DictConfig, blender: Blender, c: str, ids: list[str], members: dict[str, dict[str, np.ndarray]],
                   runtimes: dict[str, np.ndarray]) -> dict | None:
    """The weights entry of one collection (None when no member covers its graphs)."""
    held: list[str] = []
    if cfg.holdout:
        if len(ids) < 2:
            log.warning("%s: one %s graph, nothing to hold out; weights fitted (and scored) on it", c, cfg.fit_split)
        else:
            ids, held = ids[0::2], ids[1::2]
    rt = {g: runtimes[g] for g in ids}
    sizes = {g: r.size for g, r in rt.items()}
    avail = [m for m in members if covers(members[m], sizes)]
    partial = [m for m in members if m not in avail and any(g in members[m] for g in ids)]
    for m in partial:
        log.warning("%s: %s lacks some %s graphs (or has other config counts); left out here", c, m, cfg.fit_split)
    if not avail:
        log.warning("%s: no member covers every %s graph; no weights fitted", c, cfg.fit_split)
        return None
    kind, use = collection_kind(c), {m: members[m] for m in avail}
    method, weights, oof = blender.weights(kind, use, rt)
    alone = {m: collection_score(kind, use[m], rt) for m in use}
    fitted = collection_score(kind, blend(use, weights, list(rt)), rt)
    entry = {"method": method, "weights": weights, "scores": {**alone, NAME: fitted}, "graphs": len(ids),
             "out_of_fold": oof}
    log.info("%s: %s weights %s -> %.4f in sample (best single %.4f)%s", c, method,
             ", ".join(f"{m}={w:.3f}" for m, w in weights.items()), fitted, max(alone.values()),
             "; out of fold " + ", ".join(f"{m} {v:.4f}" for m, v in oof.items()) if oof else "")
    if held:
        entry["holdout"] = holdout_scores(collection_kind(c), {m: members[m] for m in avail}, weights,
                                          {g: runtimes[g] for g in held})
        log.info("%s: %d held-out graphs: %s", c, len(held),
                 ", ".join(f"{m} {v:.4f}" for m, v in entry["holdout"]["scores"].items()))
    return entry


def holdout_scores(kind: str, members: dict[str, dict[str, np.ndarray]], weights: dict[str, float],
                   runtimes: dict[str, np.ndarray]) -> dict:
    """Each member's collection score alone and the blend's with `weights`, on graphs the weights
    were not fitted on. A member lacking a held-out graph (or its config count) is not scored."""
    sizes = {g: r.size for g, r in runtimes.items()}
    avail = {m: p for m, p in members.items() if covers(p, sizes)}
    used = {m: w for m, w in weights.items() if w > 0}
    scores = {m: collection_score(kind, p, runtimes) for m, p in avail.items()}
    if all(m in avail for m in used):
        scores[NAME] = collection_score(kind, blend(avail, used, list(runtimes)), runtimes)
    return {"graphs": len(runtimes), "scores": scores}


def apply(cfg: DictConfig, blender: Blender, doc: dict, split: str) -> dict[str, dict[str, float]]:
    """Blend `split` with the weights of `doc` and write the ensemble's predictions; returns
    what served each collection ({collection: {member: weight}})."""
    members = load_members(cfg, blender, split)
    ids = set().union(*(set(p) for p in members.values())) if members else set()
    if not ids:
        log.warning("no member has %s predictions; nothing written", split)
        return {}
    out: dict[str, np.ndarray] = {}
    served: dict[str, dict[str, float]] = {}
    for c, gids in by_collection(ids).items():
        entry = doc["collections"].get(c)
        if entry is None:
            fallback = next((m for m in cfg.members if m in members and all(g in members[m] for g in gids)), None)
            if fallback is None:
                raise DataError(cfg.weights, f"{c}: no fitted weights and no member covers every {split} graph")
            log.warning("%s: no fitted weights; %s served by %s alone (the first member, in the order %s, that "
                        "covers every graph)", c, split, fallback, ", ".join(cfg.members))
            weights = {fallback: 1.0}
        else:
            weights = {m: w for m, w in entry["weights"].items() if w > 0}
        served[c] = weights
        for m in weights:
            if m not in members or not all(g in members[m] for g in gids):
                raise DataError(predictions_path(cfg.predictions, m, split),
                                f"{c}: member '{m}' (weight {weights[m]:.3f}) has no predictions for every {split} graph")
        sizes = {g: members[next(iter(weights))][g].size for g in gids}
        for m in weights:
            if not covers(members[m], sizes):
                raise DataError(predictions_path(cfg.predictions, m, split), f"{c}: config counts differ from the other members'")
        out.update(blend(members, weights, gids))
    dst = predictions_path(cfg.predictions, NAME, split)
    write_predictions(dst, out, cfg)
    log.info("wrote %s (%d graphs)", dst, len(out))
    for c, w in served.items():
        log.info("%s %s: served by %s", split, c, " + ".join(f"{m} {v:.2f}" for m, v in w.items()))
    return served


def format_table(doc: dict) -> str:
    """Per collection: each member's score alone and the ensemble's on the graphs the weights were
    fitted on (in-sample), then on the held-out graphs when `holdout` was on."""
    cols = list(doc["members"]) + [NAME]
    blocks = [("fitted on", "scores")] + ([("held out", "holdout")] if doc.get("holdout") else [])
    width = max(10, *(len(m) + 2 for m in cols))
    lines = []
    for title, key in blocks:
        lines.append(f"{title + ' (' + doc['fit_split'] + ')':<20}" + "".join(f"{m:>{width}}" for m in cols))
        for c in COLLECTIONS:
            e = doc["collections"].get(c, {})
            s = e.get("scores") if key == "scores" else e.get("holdout", {}).get("scores")
            if s is not None:
                lines.append(f"{c:<20}" + "".join(f"{s[m]:>{width}.4f}" if m in s else f"{'-':>{width}}" for m in cols))
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict:
    if cfg.mode not in ("fit", "apply"):
        raise DataError(None, f"mode must be fit or apply, got '{cfg.mode}'")
    blender: Blender = instantiate(cfg.blender, "blender")
    cfg = copy.deepcopy(cfg)  # resolved below as saved beside the predictions; the caller's config stays as given
    if cfg.members is None:
        cfg.members = [f.name for f in FAMILIES]
    cfg.fit_split = fit_split_of(cfg)  # auto resolved once
    if not any(predictions_path(cfg.predictions, m, sp).is_file() for m in cfg.members for sp in [cfg.fit_split, *cfg.splits]):
        raise DataError(cfg.predictions, f"no member of {', '.join(cfg.members)} has predictions "
                                         f"(run {' or '.join(f.stage for f in FAMILIES)} first)")
    stamp_dir = Path(cfg.weights).parent
    if cfg.mode == "fit":
        begin_stage(stamp_dir)
        predictions_path(cfg.predictions, NAME, "oof").unlink(missing_ok=True)  # written again only when fitted out of fold
        doc = fit(cfg, blender)
    else:
        path = Path(cfg.weights)
        if not path.is_file():
            raise DataError(path, "ensemble weights not found (run `make ensemble` with valid predictions first, or copy weights.json here)")
        try:
            doc = json.loads(path.read_text())
            doc["collections"]
        except (ValueError, KeyError, TypeError):
            raise DataError(path, "not an ensemble weights file (no 'collections')") from None
        if doc.get("normalize", blender.normalize) != blender.normalize:
            log.warning("weights were fitted with blender.normalize=%s; using it", doc["normalize"])
            blender = dataclasses.replace(blender, normalize=doc["normalize"])
            cfg.blender.normalize = doc["normalize"]  # as saved beside the predictions
    # split -> collection -> {member: weight}: what served each collection (fit: also saved)
    # fitted out of fold: the blend of the members' oof predictions too (in sample for the weights)
    splits = [*cfg.splits, *(["oof"] if cfg.mode == "fit" and doc.get("fit_split") == "oof" else [])]
    doc["served"] = {split: apply(cfg, blender, doc, split) for split in splits}
    if cfg.mode == "fit":
        write_text_atomic(cfg.weights, json.dumps(doc, indent=2) + "\n")
        print(format_table(doc), flush=True)
        finish_stage(stamp_dir, {c: e["weights"] for c, e in doc["collections"].items()})
    return doc


@stage("ensemble")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
