"""The skeleton a per-collection trainer runs in either mode, written once.

    metas = trainer.run_collections(cfg, models_dir, collections, fit=fit_one, predict=predict_one,
                                    desc="train-gbdt", stamp=lambda metas: {...})

`mode=train`: the model folder is begun (its stamp removed), the predictions of `splits` this
trainer wrote before are removed (a collection no longer trained must not leave stale ones),
then `fit(collection)` runs per collection (its summary kept when not None). Both modes: per
split, `predict(collection, split)` over the collections, merged into one predictions file
`<predictions>/<name>/<split>.parquet`. `mode=train` ends with the stamp, written last.
Failures name the collection (and split) they happened in. The GNN's trainer keeps its own
loop (collections in parallel processes, torchrun ranks) around the same steps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig

from pipeline.core.errors import DataError, where
from pipeline.core.progress import tqdm
from pipeline.core.runner import begin_stage, finish_stage
from pipeline.io.predictions import predictions_path, write_predictions

log = logging.getLogger(__name__)
MODES = ("train", "predict")


def check_mode(cfg: DictConfig) -> None:
    """`mode` is train or predict (one sentence otherwise)."""
    if cfg.mode not in MODES:
        raise DataError(None, f"mode must be train or predict, got '{cfg.mode}'")


def run_collections(cfg: DictConfig, models_dir: str | Path, collections: list[str],
                    fit: Callable[[str], dict | None], predict: Callable[[str, str], dict[str, np.ndarray]],
                    desc: str, stamp: Callable[[dict[str, dict]], dict] = lambda metas: metas) -> dict[str, dict]:
    """Train (`mode=train`) and predict `collections` (module docstring); returns the fitted
    collections' summaries (empty in predict mode)."""
    check_mode(cfg)
    metas: dict[str, dict] = {}
    if cfg.mode == "train":
        begin_stage(models_dir)
        for split in cfg.splits:
            predictions_path(cfg.predictions, cfg.name, split).unlink(missing_ok=True)
        for c in tqdm(collections, desc=desc, unit="collection"):
            with where(c):
                m = fit(c)
            if m is not None:
                metas[c] = m
    for split in cfg.splits:
        scores: dict[str, np.ndarray] = {}
        for c in collections:
            with where(f"{c} {split}"):
                scores.update(predict(c, split))
        if scores:
            dst = predictions_path(cfg.predictions, cfg.name, split)
            write_predictions(dst, scores, cfg)
            log.info("wrote %s (%d graphs)", dst, len(scores))
        elif collections:
            log.warning("no %s predictions written (no %s data or no model for %s)", split, split, ", ".join(collections))
    if cfg.mode == "train":
        finish_stage(models_dir, stamp(metas))
    return metas
