"""The analytical ranker's trainer stage: non-negative weights over each config's analytical
cost totals (`features.cost_terms`), fitted per layout collection by
`models.analytical.AnalyticalRanker`, through the trainer skeleton (pipeline/train/trainer.py).

Invariants: each train graph's fitted configs are a fixed random subset for (seed, graph
index), the same whichever process computes it; every config of every predicted graph gets a
score, by original config index; tile collections are left to the other members (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from features.cost_terms import TOTAL_NAMES
from models.analytical import AnalyticalRanker
from models.metrics import kendall_tau
from pipeline.core.cli import instantiate, stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import parallel_map
from pipeline.gnn.dataset import GraphData, graph_files, load_graph
from pipeline.io.catalog import collection_dir, collection_kind, wanted_collections
from pipeline.train import trainer

log = logging.getLogger(__name__)


def graph_totals(g: GraphData, rows: np.ndarray, chunk: int) -> np.ndarray:
    """(len(rows), F) cost totals of a graph's unique configs at `rows`, `chunk` at a time."""
    parts = [g.cost_totals(rows[i : i + chunk]) for i in range(0, rows.size, max(1, chunk))]
    return np.concatenate(parts) if parts else np.zeros((0, len(TOTAL_NAMES)))


def fit_totals(path: Path, collection: str, cap: int | None, seed: list[int], chunk: int,
               excluded: dict[str, str]) -> tuple[str, str | None, tuple[np.ndarray, np.ndarray] | None]:
    """(graph ID, reason it is set aside or None, (totals, runtimes) of at most `cap` of its unique
    configs, a fixed random subset for `seed`)."""
    g = load_graph(path, collection, "train")
    reason = trainer.set_aside_reason(g.id, g.runtime, excluded)
    if reason is not None:
        return g.id, reason, None
    n = g.num_configs
    rows = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)) if cap is not None and n > cap else np.arange(n)
    return g.id, None, (graph_totals(g, rows, chunk), g.runtime[rows])


def score_graph(path: Path, collection: str, split: str, state: dict, chunk: int) -> tuple[str, np.ndarray]:
    """(graph ID, (C,) scores by original config) of one graph under a fitted model's `state`."""
    model = AnalyticalRanker.from_state(state, TOTAL_NAMES)
    g = load_graph(path, collection, split)
    return g.id, g.to_original(model.scores(graph_totals(g, np.arange(g.num_configs), chunk)))


def fit_collection(collection: str, cfg: DictConfig) -> dict | None:
    """Fit and save one collection's model; None (and no model) when no train graph has an order
    to learn."""
    out = Path(cfg.models) / collection_dir(collection) / "model.json"
    out.unlink(missing_ok=True)
    paths = graph_files(cfg.data, collection, "train")
    if not paths:
        return None
    excluded = trainer.audit_exclusions(cfg)
    cap = None if cfg.fit_max_configs is None else int(cfg.fit_max_configs)
    # every train graph's subset is drawn from its own generator (seed, graph index): the same
    # rows whichever process computes it
    items = [{"path": p, "collection": collection, "cap": cap, "seed": [int(cfg.seed), i], "chunk": int(cfg.chunk_configs),
              "excluded": excluded} for i, p in enumerate(paths)]
    data = []
    for gid, reason, part in parallel_map(fit_totals, items, [str(p) for p in paths], int(cfg.jobs), desc=f"{collection} train"):
        if reason is not None:
            trainer.log_set_aside(collection, gid, reason)
        else:
            data.append(part)
    model: AnalyticalRanker = instantiate(cfg.model, "model", names=TOTAL_NAMES)
    model.fit(data)
    if model.rows == 0:
        log.warning("%s: no train graph has an order to learn (%d set aside); not trained", collection, len(paths))
        return None
    taus = [kendall_tau(model.scores(x), y) for x, y in data if np.ptp(y) > 0]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, model.to_json())
    used = int((model.weights > 0).sum())
    log.info("%s: %d train graphs fitted, %d configs, %d of %d totals weighted; train tau %.4f",
             collection, len(data), model.rows, used, len(TOTAL_NAMES), float(np.mean(taus)) if taus else float("nan"))
    return {"graphs": len(data), "rows": model.rows, "weighted": used}


def predict_split(collection: str, split: str, cfg: DictConfig) -> dict[str, np.ndarray]:
    """{Kaggle ID: (C,) scores by original config} of a collection's graphs in `split`."""
    model_file = Path(cfg.models) / collection_dir(collection) / "model.json"
    paths = graph_files(cfg.data, collection, split)
    if not paths:
        return {}
    if not model_file.is_file():
        log.warning("%s: no model at %s; %s not predicted", collection, model_file, split)
        return {}
    try:
        model = AnalyticalRanker.load(model_file, TOTAL_NAMES)
    except (ValueError, KeyError) as e:
        raise DataError(model_file, str(e)) from None
    state = model.state()
    items = [{"path": p, "collection": collection, "split": split, "state": state, "chunk": int(cfg.chunk_configs)} for p in paths]
    return dict(parallel_map(score_graph, items, [str(p) for p in paths], int(cfg.jobs), desc=f"{collection} {split}"))


def run(cfg: DictConfig) -> dict:
    cfg = trainer.check(cfg)
    if not Path(cfg.data).is_dir():
        raise DataError(cfg.data, "no GNN tensors found (run the extract stage first)")
    wanted = wanted_collections(cfg.collections)
    for c in wanted:
        if collection_kind(c) == "tile":
            log.info("%s: no analytical layout terms for tile configs; left to the other members", c)
    layout = [c for c in wanted if collection_kind(c) == "layout" and (Path(cfg.data) / collection_dir(c)).is_dir()]
    return trainer.run_collections(cfg, layout, fit=lambda c: fit_collection(c, cfg),
                                   predict=lambda c, split: predict_split(c, split, cfg), desc="train-analytical")


def valid_metric(_metas: dict[str, dict]) -> float:
    """No valid score: the fit has no epochs or rounds to pick."""
    return float("-inf")


TRAINER = trainer.Trainer("train_analytical", run, valid_metric, seeds_inside=True)


@stage("train_analytical")
def main(cfg: DictConfig) -> None:
    TRAINER.fit(cfg)


if __name__ == "__main__":
    main()
