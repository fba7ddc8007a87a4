"""LightGBM's trainer stage: rankers per collection on the extract stage's GBDT tables, through
the trainer skeleton (pipeline/train/trainer.py); the ranker is a `models.gbdt.GBDTRanker`
built from `model` (conf/arch/gbdt.yaml), the rest of the config says on what data.

Per collection it fits on the `train` table (graphs set aside as every trainer sets them
aside), early-stops on `valid` with the competition metric, one model per seed, and writes
`models/<collection dir>/model_seed<k>.txt`, `importance.csv` and `meta.json`; predictions are
the seeds' per-graph rank average.
Invariants: every original config index of every predicted graph gets exactly one score (its
unique row's), checked before writing; training is deterministic for a given config (fixed
seeds and thread count, `deterministic=true`); the training matrix is filled column by column
into one float32 array, never a second copy of the table (docs/FULL_DATA.md "Subsampling at scale").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from omegaconf import DictConfig

from models import gbdt
from models.ensemble import average_seeds
from pipeline.core.cli import instantiate, stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path, write_text_atomic
from pipeline.core.progress import tqdm
from pipeline.io.catalog import collection_dir, collection_kind, wanted_collections
from pipeline.io.tables import table_path
from pipeline.train import folds, trainer

log = logging.getLogger(__name__)


class Table:
    """A GBDT table's row metadata, read without its features: graph of each row (as query
    sizes in row order, rows regrouped when a graph's rows are not contiguous) and the target."""

    def __init__(self, path: Path, need_runtime: bool):
        self.path = path
        try:
            self.schema = pl.read_parquet_schema(path)
        except Exception as e:  # polars raises several types for a non-parquet file
            raise DataError(path, f"not a readable parquet table ({type(e).__name__})") from None
        missing = [c for c in ("id", "configs", "runtime") if c not in self.schema]
        if missing:
            raise DataError(path, f"column '{missing[0]}' missing: not a GBDT table of the extract stage")
        cols = ["id", "runtime"] + (["normalizer"] if "normalizer" in self.schema else [])
        meta = pl.read_parquet(path, columns=cols)
        names = meta["id"].unique(maintain_order=True)
        codes = meta["id"].replace_strict(names, pl.int_range(names.len(), eager=True), return_dtype=pl.Int64).to_numpy()
        self.order = None if np.all(np.diff(codes) >= 0) else gbdt.contiguous_order(codes)
        if self.order is not None:
            codes = codes[self.order]
        self.names = names.to_list()
        _, self.sizes = gbdt.query_groups(codes)
        self.rows = int(codes.size)
        runtime = meta["runtime"].to_numpy()
        norm = meta["normalizer"].to_numpy() if "normalizer" in meta.columns else None
        if self.order is not None:
            runtime = runtime[self.order]
            norm = None if norm is None else norm[self.order]
        self.has_runtime = bool(self.rows) and bool((runtime > 0).all())
        if need_runtime and not self.has_runtime:
            raise DataError(path, "runtime must be positive in every row to train on this table")
        self.target = gbdt.target_runtime(runtime, norm) if self.has_runtime else None
        # graphs with no order to learn (pipeline.train.trainer.set_aside_reason), by name
        self.set_aside: dict[str, str] = {}
        if self.target is not None:
            for name, part in zip(self.names, np.split(self.target, np.cumsum(self.sizes)[:-1])):
                reason = trainer.set_aside_reason(name, part, {})
                if reason is not None:
                    self.set_aside[name] = reason

    def learnable_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, sizes): the regrouped rows of the graphs not set aside, and their query sizes."""
        keep = np.array([n not in self.set_aside for n in self.names], dtype=bool)
        return np.flatnonzero(np.repeat(keep, self.sizes)), self.sizes[keep]

    def features(self, names: list[str], rows: np.ndarray | None = None) -> np.ndarray:
        """(n, F) float32, filled one column at a time (peak: the matrix plus one column).
        `rows` indexes the regrouped row order (all rows when None). A name `z_<column>` is the
        column standardized within each graph over all its rows (`models.gbdt.graph_normalize`)."""
        columns = [gbdt.stored_column(c) for c in names]
        missing = [c for c in columns if c not in self.schema]
        if missing:
            raise DataError(self.path, f"feature column '{missing[0]}' missing (the model was trained on other tables; rerun extract or train)")
        n = self.rows if rows is None else rows.size
        x = np.empty((n, len(names)), dtype=np.float32, order="F")
        for j, (name, c) in enumerate(zip(names, columns)):
            col = pl.scan_parquet(self.path).select(pl.col(c).cast(pl.Float32)).collect().to_series().to_numpy()
            if self.order is not None:
                col = col[self.order]
            if name != c:
                col = gbdt.graph_normalize(col, self.sizes)
            x[:, j] = col if rows is None else col[rows]
        return x

    def config_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (n,), lengths (n,), flat original indices) in the regrouped row order."""
        df = pl.read_parquet(self.path, columns=["id", "configs"])
        if self.order is not None:
            df = df[self.order]
        lengths = df["configs"].list.len().to_numpy()
        flat = df["configs"].explode().to_numpy()
        return df["id"].to_numpy(), lengths, flat


def _progress_callback(bar: tqdm):
    def cb(env: lgb.callback.CallbackEnv) -> None:
        bar.update(1)
    return cb


def _metric(kind: str, table: Table, model: gbdt.GBDTRanker):
    def feval(preds: np.ndarray, _data: lgb.Dataset) -> tuple[str, float, bool]:
        return "competition", gbdt.validation_score(kind, table.sizes, table.target, model.to_score(preds)), True
    return feval


def _dataset(table: Table, features: list[str], cfg: DictConfig, model: gbdt.GBDTRanker, params: dict,
             reference: lgb.Dataset | None, sample: bool) -> lgb.Dataset:
    """Binned LightGBM dataset of a table; the float32 matrix is freed once binned."""
    objective = model.objective
    label = model.labels(table.sizes, table.target)
    groups = None  # a valid set needs none: the competition metric is computed on table.sizes
    rows = None
    if sample:
        learnable, kept_sizes = table.learnable_rows()
        qsize = gbdt.query_size_for(objective, kept_sizes, cfg.query_size)
        if qsize is not None and cfg.query_size is None:
            log.info("%s: graphs of up to %d rows split into random queries of at most %d (LightGBM's limit)",
                     table.path, int(kept_sizes.max()), qsize)
        rows, sizes = gbdt.sample_rows(kept_sizes, cfg.max_configs_per_graph, qsize is not None, int(cfg.seed))
        rows = learnable[rows]
        groups = gbdt.split_queries(sizes, qsize) if objective == "lambdarank" else None
    x = table.features(features, rows)
    ds = lgb.Dataset(x, label=label if rows is None else label[rows], group=groups,
                     feature_name=features, params=params, reference=reference, free_raw_data=True)
    ds.construct()
    del x
    return ds


def train_collection(collection: str, cfg: DictConfig, model: gbdt.GBDTRanker) -> dict | None:
    """Fit one `model` per seed for `collection`; returns its meta (None when it has no train table)."""
    kind = collection_kind(collection)
    out = Path(cfg.models) / collection_dir(collection)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.txt"):
        old.unlink()  # a model of a seed no longer configured (or a collection now skipped) must not predict
    train_path = table_path(cfg.data, collection, cfg.train_split)
    if not train_path.is_file():
        log.warning("%s: no %s table at %s; not trained", collection, cfg.train_split, train_path)
        return None
    train = Table(train_path, need_runtime=True)
    excluded = trainer.audit_exclusions(cfg)
    train.set_aside.update({n: r for n in train.names if n not in train.set_aside and (r := trainer.set_aside_reason(n, None, excluded))})
    for name, reason in train.set_aside.items():
        trainer.log_set_aside(collection, name, reason)
    if len(train.set_aside) == len(train.names):
        log.warning("%s: no train graph has an order to learn (%d set aside); not trained", collection, len(train.names))
        return None
    features = gbdt.select_features(train.schema, list(cfg.exclude_features),
                                    numeric={c: t.is_numeric() for c, t in train.schema.items()})
    if not features:
        raise DataError(train_path, "no feature columns left after exclude_features")
    features = gbdt.feature_names(features, model.norm(collection_kind(collection)))
    valid_path = table_path(cfg.data, collection, cfg.valid_split)
    valid = Table(valid_path, need_runtime=False) if valid_path.is_file() else None
    if valid is not None and not valid.has_runtime:
        log.warning("%s: %s has no runtimes; training %d rounds without early stopping", collection, valid_path, model.num_boost_round)
        valid = None
    elif valid is None:
        log.warning("%s: no %s table; training %d rounds without early stopping", collection, cfg.valid_split, model.num_boost_round)
    base = model.lgb_params(int(cfg.seeds[0]), int(cfg.num_threads))
    dtrain = _dataset(train, features, cfg, model, base, None, sample=True)
    dvalid = _dataset(valid, features, cfg, model, base, dtrain, sample=False) if valid is not None else None
    gain = np.zeros(len(features))
    split = np.zeros(len(features))
    runs = []
    for seed in cfg.seeds:
        params = dict(base, seed=int(seed))
        with tqdm(total=model.num_boost_round, desc=f"{collection} seed {seed}", unit="round", leave=False) as bar:
            booster = model.fit(params, dtrain, dvalid, feval=_metric(kind, valid, model) if dvalid is not None else None,
                                callbacks=[_progress_callback(bar)])
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        score = booster.best_score.get("valid", {}).get("competition") if dvalid is not None else None
        with atomic_path(out / f"model_seed{seed}.txt") as tmp:
            booster.save_model(str(tmp), num_iteration=best)
        gain += booster.feature_importance("gain", iteration=best)
        split += booster.feature_importance("split", iteration=best)
        runs.append({"seed": int(seed), "best_iteration": int(best), "valid_score": score})
        log.info("%s seed %s: best round %d, %s score on unique configs %s", collection, seed, best, cfg.valid_split,
                 "n/a" if score is None else f"{score:.4f}")
    imp = pl.DataFrame({"feature": features, "gain": gain / len(cfg.seeds), "split": split / len(cfg.seeds)})
    with atomic_path(out / "importance.csv") as tmp:
        imp.sort("gain", descending=True).write_csv(tmp)
    meta = {"collection": collection, "objective": model.objective, "features": features,
            "train_rows": train.rows, "train_graphs": len(train.names), "set_aside": train.set_aside, "runs": runs,
            "params": {k: v for k, v in base.items() if k != "seed"}}
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def _objective(model_file: Path) -> str:
    """The objective recorded in a LightGBM text model (`objective=lambdarank ...`)."""
    with open(model_file) as f:
        for line in f:
            if line.startswith("objective="):
                return line.split("=", 1)[1].split()[0]
            if line.startswith("Tree="):
                break
    raise DataError(model_file, "no objective line: not a LightGBM text model")


def load_models(collection: str, models_dir: str | Path) -> list[tuple[str, lgb.Booster, str]]:
    """(name, booster, objective) of every `model*.txt` of a collection, in name order."""
    d = Path(models_dir) / collection_dir(collection)
    files = sorted(d.glob("model*.txt"))
    out = []
    for f in files:
        try:
            booster = lgb.Booster(model_file=str(f))
        except lgb.basic.LightGBMError as e:
            raise DataError(f, f"cannot load the LightGBM model ({str(e).splitlines()[0]})") from None
        out.append((f.stem, booster, _objective(f)))
    return out


def predict_table(table: Table, models: list[tuple[str, lgb.Booster, str]], num_threads: int) -> dict[str, dict[str, np.ndarray]]:
    """{model name: {graph ID: (C,) scores by original config}} for every graph of a table."""
    features = models[0][1].feature_name()
    x = table.features(features)
    ids, lengths, flat = table.config_lists()
    out = {}
    for name, booster, objective in models:
        if booster.feature_name() != features:
            raise DataError(table.path, f"{name} was trained on other features than {models[0][0]}")
        raw = booster.predict(x, num_threads=num_threads)
        try:
            out[name] = gbdt.expand_to_configs(ids, lengths, flat, gbdt.to_score(raw, objective))
        except ValueError as e:
            raise DataError(table.path, str(e)) from None
    return out


def predict_collection(c: str, split: str, cfg: DictConfig) -> dict[str, np.ndarray]:
    """Scores of the `split` table of collection `c`: its seeds' models, rank-averaged per graph."""
    path = table_path(cfg.data, c, split)
    if not path.is_file():
        return {}
    models = load_models(c, cfg.models)
    if not models:
        log.warning("%s: no model under %s; %s not predicted", c, Path(cfg.models) / collection_dir(c), split)
        return {}
    preds = predict_table(Table(path, need_runtime=False), models, int(cfg.num_threads))
    runs = [preds[n] for n in sorted(preds)]
    return runs[0] if len(runs) == 1 else average_seeds(runs, "rank")


def run(cfg: DictConfig) -> dict:
    cfg = trainer.check(cfg)
    model: gbdt.GBDTRanker = instantiate(cfg.model, "model")
    if not cfg.seeds:
        raise DataError(None, "seeds must list at least one seed")
    wanted = wanted_collections(cfg.collections)
    if not Path(cfg.data).is_dir():
        raise DataError(cfg.data, "no GBDT tables found (run the extract stage first)")
    present = [c for c in wanted if (Path(cfg.data) / collection_dir(c)).is_dir()]
    if not present:
        log.warning("%s: no table of the requested collections; nothing to train or predict", cfg.data)
    return trainer.run_collections(cfg, present, fit=lambda c: train_collection(c, cfg, model),
                                   predict=lambda c, split: predict_collection(c, split, cfg), desc="train-gbdt",
                                   stamp=lambda metas: {c: m["runs"] for c, m in metas.items()})


def valid_metric(metas: dict[str, dict]) -> float:
    """The mean valid score over the collections trained, each the mean of its seeds' scores at
    their best round (what a sweep maximizes); -inf when none was validated."""
    per = [np.mean(v) for m in metas.values() if (v := [r["valid_score"] for r in m["runs"] if r["valid_score"] is not None])]
    return float(np.mean(per)) if per else float("-inf")


def final_overrides(fold_metas: list[dict]) -> dict:
    """A final fit boosts for the fold models' median best round (no early stopping: no valid)."""
    rounds = [r["best_iteration"] for m in fold_metas for r in m["runs"]]
    return {"model.num_boost_round": folds.median_int(rounds, 0)} if rounds else {}


TRAINER = trainer.Trainer("train_gbdt", run, valid_metric, final_overrides, seeds_inside=True)


@stage("train_gbdt")
def main(cfg: DictConfig) -> float:
    return TRAINER.main(cfg)


if __name__ == "__main__":
    main()
