"""Model predictions on disk: one score per ORIGINAL config index of every graph.

`${paths.predictions}/<model>/<split>.parquet`, columns `id` (Kaggle ID), `config` (original
config index in the raw file), `score` (lower = predicted faster), with the resolved config of
the run that wrote it in `<split>.yaml` beside it. Every model (baseline, gnn, gbdt, ensemble)
writes this format, so `make submission MODEL=<model>` and `make evaluate` treat them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf

from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path, write_text_atomic

COLUMNS = ("id", "config", "score")


def predictions_path(predictions_dir: str | Path, model: str, split: str) -> Path:
    """`<predictions_dir>/<model>/<split>.parquet`: the one place this layout is spelled out."""
    return Path(predictions_dir) / model / f"{split}.parquet"


def write_predictions(path: str | Path, scores: Mapping[str, np.ndarray], cfg: DictConfig | None = None) -> None:
    """Write `{id: (C,) scores indexed by original config}` atomically, with the config beside it."""
    path = Path(path)
    ids, configs, values = [], [], []
    for gid, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 1 or not np.isfinite(s).all():
            raise ValueError(f"{gid}: scores must be a finite 1-D array, got shape {s.shape}")
        ids.append(np.full(s.size, gid, dtype=object))
        configs.append(np.arange(s.size, dtype=np.int32))
        values.append(s)
    frame = pl.DataFrame({
        "id": pl.Series(np.concatenate(ids) if ids else [], dtype=pl.Utf8),
        "config": pl.Series(np.concatenate(configs) if configs else [], dtype=pl.Int32),
        "score": pl.Series(np.concatenate(values) if values else [], dtype=pl.Float64),
    })
    if cfg is not None:
        write_text_atomic(path.with_suffix(".yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """`{id: (C,) scores}`; every graph must cover configs 0..C-1 exactly once."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "predictions not found (run the model's stage for this split first)")
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise DataError(path, f"not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(path, f"column '{missing[0]}' missing: not a predictions file (columns {', '.join(COLUMNS)})")
    try:
        frame = frame.select(pl.col("id").cast(pl.Utf8), pl.col("config").cast(pl.Int64), pl.col("score").cast(pl.Float64))
    except pl.exceptions.PolarsError:
        raise DataError(path, "id, config or score has the wrong type (text, integer, number expected)") from None
    if frame.null_count().sum_horizontal().item() or not np.isfinite(frame["score"].to_numpy()).all():
        raise DataError(path, "null or non-finite values (every config needs one finite score)")
    frame = frame.sort(["id", "config"])
    out: dict[str, np.ndarray] = {}
    for (gid,), part in frame.group_by(["id"], maintain_order=True):
        cfg = part["config"].to_numpy()
        if not np.array_equal(cfg, np.arange(cfg.size)):
            raise DataError(path, f"{gid}: configs are not exactly 0..{cfg.size - 1}")
        out[str(gid)] = part["score"].to_numpy()
    return out

