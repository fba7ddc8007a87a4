"""The contract of a trainer stage and the skeleton every trainer runs in, written once.

A trainer stage (LightGBM, the analytical ranker, the GNN, a new family) declares one `Trainer`:
its `run(cfg)` (fit per collection in `mode=train`, then predict `splits`, through
`run_collections`), its `valid_metric` (what a sweep maximizes) and its `final_overrides` (what
a final fit changes given the fold runs' summaries). `Trainer.fit(cfg)` is the one way a
trainer is run, from its command line, `make` and `pipeline.graph.run_stage` alike: fold/seed
runs where asked or trained (`pipeline.train.folds`), else the plain run.

Invariants every trainer gets from here:
- the config keys: `name` (its models/ and predictions/ folder), `models` (the model folder),
  `data` (its input), `predictions`, `mode`, `collections`, `splits` (old aliases: `out` and
  `tables`, for a release);
- `mode=train`: the model folder is begun (its stamp removed), the predictions this trainer
  wrote before are removed (a collection no longer trained must not leave stale ones), each
  collection is fitted (in `jobs` processes where asked, the largest first, with the results of
  a sequential run), and only the fitted collections predict; both modes: one predictions file
  per split `<predictions>/<name>/<split>.parquet`, every collection merged; the stamp last;
- under torchrun every rank fits and predicts (the trainer shards and gathers), the main rank
  alone writes;
- a train graph without an order to learn, or excluded by the audit, is set aside from training
  (`set_aside_reason`), logged with its reason.
"""

from __future__ import annotations

import copy
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from omegaconf import DictConfig, open_dict

from features.configs import unlearnable_reason
from pipeline.core.errors import DataError, where
from pipeline.core.progress import tqdm
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.io.audit_json import exclusions
from pipeline.io.predictions import predictions_path, write_predictions

log = logging.getLogger(__name__)
MODES = ("train", "predict")
ALIASES = {"out": "models", "tables": "data"}  # old key -> the key every trainer uses (kept for a release)
TRAINERS: dict[str, Trainer] = {}  # stage module -> its trainer, filled as trainer modules are imported

Scores = dict[str, np.ndarray]


@dataclass(frozen=True)
class Trainer:
    """What a trainer stage is to the rest of the pipeline (module docstring)."""

    module: str  # its stage module, pipeline.<module> (conf/<module>.yaml)
    run: Callable[[DictConfig], dict]  # one plain run: fit per collection (train), predict `splits`; {collection: summary}
    valid_metric: Callable[[dict], float]  # the summaries' valid score (a sweep maximizes it); -inf when none was validated
    final_overrides: Callable[[list[dict]], dict] = lambda _: {}  # a final fit's config changes, from the fold runs' summaries
    seeds_inside: bool = True  # the trainer averages `seeds` itself (False: the fold runs loop over them)

    def __post_init__(self) -> None:
        TRAINERS[self.module] = self

    def fit(self, cfg: DictConfig) -> dict:
        """Fold/seed runs where asked (train) or trained (predict), else the plain run."""
        from pipeline.train import folds

        cfg = check(cfg)
        return folds.dispatch(cfg, self, self.run, cfg.name)

    def main(self, cfg: DictConfig) -> float:
        """The command line's run: `fit`, then the valid score (over the fold runs where there are)."""
        from pipeline.train import folds

        cfg = check(cfg)
        result = self.fit(cfg)
        return folds.fold_metric(result, self.valid_metric) if cfg.mode == "train" and folds.wanted(cfg, self) \
            else self.valid_metric(result)


def registered(module: str) -> Trainer | None:
    """The trainer of the stage module `pipeline.<module>` (imported by the caller), or None."""
    return TRAINERS.get(module)


def check(cfg: DictConfig) -> DictConfig:
    """`mode` is train or predict (one sentence otherwise); an old key alias (`out=`,
    `tables=`) given is moved to its key. Returns the config to use (`cfg` itself without alias)."""
    if cfg.mode not in MODES:
        raise DataError(None, f"mode must be train or predict, got '{cfg.mode}'")
    given = {old: new for old, new in ALIASES.items() if cfg.get(old) is not None}
    if not given:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for old, new in given.items():
            log.info("%s= is the old name of %s=; read as %s=%s", old, new, new, cfg[old])
            cfg[new], cfg[old] = cfg[old], None
    return cfg


check_mode = check  # the earlier name


def set_aside_reason(gid: str, runtime: np.ndarray | None, excluded: dict[str, str]) -> str | None:
    """Why a train graph is set aside from training: no order to learn in its runtimes, or the
    audit's exclusion (`excluded`, from `audit_exclusions`); None: it trains."""
    return (unlearnable_reason(runtime) if runtime is not None else None) or excluded.get(gid)


def audit_exclusions(cfg: DictConfig) -> dict[str, str]:
    """{graph id: reason} the audit flags, where the trainer's `exclude=audit` asks for it."""
    return exclusions(cfg.exclude, cfg.audit)


def log_set_aside(collection: str, gid: str, reason: str) -> None:
    log.info("%s: %s set aside from training: %s", collection, gid, reason)


class Ranks(Protocol):
    """The processes of one run: torchrun's ranks (pipeline.gnn.training.Dist), or one."""

    @property
    def main(self) -> bool: ...

    def barrier(self) -> None: ...


class OneProcess:
    main = True

    def barrier(self) -> None:
        pass


def _fit_and_predict(fit: Callable[[str], dict | None], predict: Callable[[str, str], Scores], splits: list[str],
                     complete: Callable[[dict], bool], c: str) -> tuple[dict | None, dict[str, Scores]]:
    """One collection in a worker process: fit it, then predict its splits."""
    with where(c):
        meta = fit(c)
        if meta is None or not complete({c: meta}):
            return meta, {}
        return meta, {split: predict(c, split) for split in splits}


def every_fit_complete(metas: dict[str, dict]) -> bool:
    return True


def _init_worker() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")


def run_collections(cfg: DictConfig, collections: list[str], fit: Callable[[str], dict | None],
                    predict: Callable[[str, str], Scores], desc: str,
                    stamp: Callable[[dict[str, dict]], dict] = lambda metas: metas, *, ranks: Ranks | None = None,
                    jobs: int = 1, size: Callable[[str], float] | None = None,
                    complete: Callable[[dict[str, dict]], bool] = every_fit_complete) -> dict[str, dict]:
    """Train (`mode=train`) and predict `collections` (module docstring); returns the fitted
    collections' summaries (empty in predict mode). `jobs` > 1: each collection fitted and
    predicted in its own process (`fit` and `predict` then picklable), the largest by `size`
    first. `complete(summaries)` False (a run stopped on purpose part way): no predictions and
    no stamp."""
    cfg = check(cfg)
    ranks = ranks or OneProcess()
    models_dir = Path(cfg.models)
    metas: dict[str, dict] = {}
    scores: dict[str, dict[str, Scores]] = {}  # split -> collection -> its scores
    parallel = cfg.mode == "train" and jobs > 1 and len(collections) > 1
    if cfg.mode == "train":
        if ranks.main:
            begin_stage(models_dir)
            for split in cfg.splits:
                predictions_path(cfg.predictions, cfg.name, split).unlink(missing_ok=True)
        ranks.barrier()
        if parallel:
            log.info("training %d collections, %d at a time (jobs=%s; one process each)", len(collections), jobs, cfg.jobs)
            first = sorted(collections, key=lambda c: -(size(c) if size else 0))
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
                futures = {c: pool.submit(_fit_and_predict, fit, predict, list(cfg.splits), complete, c) for c in first}
                for c in collections:
                    m, part = futures[c].result()
                    if m is not None:
                        metas[c] = m
                    for split, s in part.items():
                        scores.setdefault(split, {})[c] = s
        else:
            for c in tqdm(collections, desc=desc, unit="collection", disable=not ranks.main):
                with where(c):
                    m = fit(c)
                if m is not None:
                    metas[c] = m
        predicted = [c for c in collections if c in metas]
    else:
        predicted = list(collections)
    if not complete(metas):
        return metas
    for split in cfg.splits:
        if not parallel:
            for c in predicted:
                with where(f"{c} {split}"):
                    scores.setdefault(split, {})[c] = predict(c, split)
        merged = {gid: s for c in predicted for gid, s in scores.get(split, {}).get(c, {}).items()}
        if not ranks.main:
            continue
        if merged:
            dst = predictions_path(cfg.predictions, cfg.name, split)
            write_predictions(dst, dict(sorted(merged.items())), cfg)
            log.info("wrote %s (%d graphs, %d configs)", dst, len(merged), sum(v.size for v in merged.values()))
        elif collections:
            log.warning("no %s predictions written (no %s data or no model for %s)", split, split, ", ".join(collections))
    if cfg.mode == "train" and ranks.main:
        finish_stage(models_dir, stamp(metas))
    ranks.barrier()
    return metas
