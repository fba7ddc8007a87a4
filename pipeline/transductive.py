"""Transductive check: how well the GNN ranks unseen configs of a graph it has trained on.

    python -m pipeline.transductive file=../shared/tpugraphs-samples/layout/xla/default/train/unet3d.npz
    make transductive FILE=<layout npz>

Reads one raw layout file. Its configs are deduplicated first (identical node_config_feat
rows, packed with `features.configs`; the fastest measurement kept, as `extract dedup=min`
does), so two copies of one config can never land on both sides; the unique configs are then
split at random (`seed`) into a train and a held-out half. Each half is written as the same
graph under `out/raw/<collection dir>/{train,test}/<stem>.npz` (held out as `test`, so no
epoch is picked on it), and the real stages run on that tree
(prune, pad with statistics fitted on train, extract, train_gnn with the `gnn` overrides), so the
check exercises exactly the product's code; with `gnn_seeds` = n > 1 the GNN is trained n times
(seeds `seed` * n .. `seed` * n + n - 1) and scored by the mean of their per-config ranks. A LightGBM regressor on the flattened
node_config_feat of the varying configurable nodes, target log(runtime), is fitted on the same
train half as a reference, and so is the analytical ranker (`pipeline.train_analytical`). Writes `out/report.json` and prints one JSON line: Kendall's tau of
each model on the held-out half, the config counts and the times.
Invariant: no config (after dedup) is on both sides; both models see the same split.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from features.configs import ConfigDeduper, pack_layout, unpack_layout
from models.ensemble import average_seeds
from models.metrics import kendall_tau
from pipeline import extract, pad, prune, train_analytical, train_gnn
from pipeline.io.catalog import COLLECTIONS, graph_id
from pipeline.core.cli import compose, stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.io.npz import iter_node_config_feat, read_graph, write_graph
from pipeline.io.predictions import predictions_path, read_predictions
from pipeline.core.runner import rel_path

log = logging.getLogger(__name__)


def _compose(name: str, overrides: list[str]) -> DictConfig:
    """A stage's config, also from inside this stage's own hydra run (which holds hydra's
    global state, so `pipeline.core.cli.compose` cannot initialize it again)."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=name, overrides=overrides)
    return compose(name, overrides)


def _overrides(d: dict, prefix: str = "") -> list[str]:
    """{"epochs": 40, "model": {"hidden": 32}} -> ["epochs=40", "model.hidden=32"]."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _overrides(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={'null' if v is None else v}")
    return out


def infer_collection(path: Path) -> str:
    """`.../layout/xla/default/train/x.npz` -> `layout:xla:default`."""
    parts = path.resolve().parts
    for i in range(len(parts) - 2):
        name = ":".join(parts[i : i + 3])
        if parts[i] == "layout" and name in COLLECTIONS:
            return name
    raise DataError(path, "cannot tell its collection from the path (pass collection=layout:xla:default)")


def dedup_file(path: Path, chunk: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, int]:
    """The graph's arrays (without configs), its unique packed configs (U, NC, 3), their min
    runtimes (U,), the varying configurable nodes (NC,) bool, and the original config count."""
    g = read_graph(path)
    if g.kind != "layout":
        raise DataError(path, "is a tile file; the transductive split needs a layout file")
    dd = ConfigDeduper("min")
    uniq = []
    for start, feat in iter_node_config_feat(g, chunk):
        try:
            uniq.append(dd.add(pack_layout(feat), g.config_runtime[start : start + len(feat)]))
        except ValueError as e:
            raise DataError(path, str(e), "node_config_feat") from None
    d = dd.finish()
    arrays = {k: v for k, v in g.arrays().items() if k not in ("node_config_feat", "config_runtime")}
    return arrays, np.concatenate(uniq), d.runtime.astype(np.int64), d.varying, g.num_configs


def write_half(root: Path, collection: str, split: str, stem: str, arrays: dict, codes: np.ndarray, runtime: np.ndarray,
               chunk: int) -> Path:
    """One half as a raw file; node_config_feat is unpacked `chunk` configs at a time (the raw
    -1..5 values back), so memory holds one chunk of float32 configs, not the half."""
    dst = root / rel_path(collection, split, stem)
    u, nc = codes.shape[:2]
    chunks = (unpack_layout(codes[i : i + chunk]).astype(np.float32) for i in range(0, u, chunk))  # (c, NC, 18)
    write_graph(dst, {**arrays, "config_runtime": runtime}, chunks, (u, nc, 18))
    return dst


def lightgbm_tau(codes: np.ndarray, varying: np.ndarray, runtime: np.ndarray, tr: np.ndarray, va: np.ndarray, params: dict,
                 seed: int) -> float:
    """The reference: a LightGBM regressor (L2) on the flattened node_config_feat of the varying
    configurable nodes (`varying` (NC,) bool), target log(runtime). `params` are LightGBM's
    (num_iterations, learning_rate, ...)."""
    import lightgbm as lgb

    x = unpack_layout(codes[:, varying]).reshape(codes.shape[0], -1).astype(np.float32)
    p = {"objective": "regression", "seed": seed, "verbose": -1, "num_threads": 1, **params}
    booster = lgb.train(p, lgb.Dataset(x[tr], np.log(runtime[tr].astype(np.float64))))
    return kendall_tau(booster.predict(x[va]), runtime[va])


def run(cfg: DictConfig) -> dict:
    if not cfg.file:
        raise DataError(None, "file=<layout .npz> is required (e.g. ../shared/tpugraphs-samples/layout/xla/default/train/unet3d.npz)")
    src = Path(cfg.file)
    if not src.is_file():
        raise DataError(src, "file not found")
    collection = cfg.collection or infer_collection(src)
    out = Path(cfg.out)
    t0 = time.monotonic()
    arrays, codes, runtime, varying, n_configs = dedup_file(src, int(cfg.chunk_configs))
    u = codes.shape[0]
    if u < 4:
        raise DataError(src, f"has only {u} distinct configs; nothing to split")
    perm = np.random.default_rng(int(cfg.seed)).permutation(u)
    cut = int(round(u * (1 - float(cfg.valid_fraction))))
    tr, va = np.sort(perm[:cut]), np.sort(perm[cut:])
    stem = src.stem
    log.info("%s: %d configs, %d distinct (duplicates merged, fastest runtime kept); %d train / %d valid",
             src, n_configs, u, tr.size, va.size)
    raw = out / "raw"
    # the held-out half goes in as `test`: train_gnn then has no valid graphs to pick an epoch
    # on, so nothing about the held-out runtimes leaks into the model (it keeps the last epoch)
    for split, rows in (("train", tr), ("test", va)):
        write_half(raw, collection, split, stem, arrays, codes[rows], runtime[rows], int(cfg.chunk_configs))

    t1 = time.monotonic()
    lgb_tau = lightgbm_tau(codes, varying, runtime, tr, va, OmegaConf.to_container(cfg.lightgbm, resolve=True), int(cfg.seed))
    t_lgb = time.monotonic() - t1
    log.info("LightGBM reference: tau %.4f on the held-out half (%.1f s)", lgb_tau, t_lgb)

    common = [f"seed={cfg.seed}", "jobs=1"]
    prune.run(_compose("prune", [f"data={raw}", f"out={out / 'pruned'}", *common]))
    pad.run(_compose("pad", [f"data={out / 'pruned'}", f"out={out / 'padded'}", *common]))
    extract.run(_compose("extract", [f"data={out / 'padded'}", f"out={out / 'processed'}", "tables=false", *common]))
    train_analytical.run(_compose("train_analytical", [
        f"data={out / 'processed' / 'gnn'}", f"models={out / 'models' / 'analytical'}", f"predictions={out / 'predictions'}",
        f"collections=[{collection}]", "splits=[test]", *common]))
    analytical = read_predictions(predictions_path(out / "predictions", "analytical", "test"))[graph_id(collection, stem)]
    analytical_tau = kendall_tau(analytical, runtime[va])
    log.info("analytical reference: tau %.4f on the held-out half", analytical_tau)
    t2 = time.monotonic()
    gnn = _overrides(OmegaConf.to_container(cfg.gnn, resolve=True))
    n_seeds = int(cfg.gnn_seeds)
    if n_seeds < 1:
        raise DataError(None, f"gnn_seeds must be at least 1 (got {n_seeds})")
    gid = graph_id(collection, stem)
    runs, seed_taus = [], []
    for i in range(n_seeds):
        # seed * n + i: the models of one split and those of another never share a seed
        seed, sub = int(cfg.seed) * n_seeds + i, (f"seed{i}" if n_seeds > 1 else "")
        summary = train_gnn.run(_compose("train_gnn", [
            f"data={out / 'processed' / 'gnn'}", f"out={out / 'models' / sub}", f"predictions={out / 'predictions' / sub}",
            f"collections=[{collection}]", "splits=[test]", f"seed={seed}", f"progress={cfg.progress}", *gnn]))
        runs.append({gid: read_predictions(predictions_path(out / "predictions" / sub, "gnn", "test"))[gid]})
        seed_taus.append(round(kendall_tau(runs[-1][gid], runtime[va]), 4))  # lower score = faster
        log.info("GNN seed %d: tau %.4f on the held-out half", seed, seed_taus[-1])
    t_gnn = time.monotonic() - t2
    # seed averaging (1st place): the mean of the models' per-config ranks, as train_gbdt's seeds
    scores = runs[0][gid] if n_seeds == 1 else average_seeds(runs, "rank")[gid]
    gnn_tau = kendall_tau(scores, runtime[va])
    report = {
        "file": str(src), "collection": collection, "configs": int(n_configs), "distinct": int(u),
        "train": int(tr.size), "valid": int(va.size), "seed": int(cfg.seed),
        "gnn_tau": round(gnn_tau, 4), "gnn_seed_taus": seed_taus, "lightgbm_tau": round(lgb_tau, 4), "analytical_tau": round(analytical_tau, 4),
        "gnn_epochs": summary[collection]["epochs"], "gnn_s": round(t_gnn, 1), "lightgbm_s": round(t_lgb, 1),
        "total_s": round(time.monotonic() - t0, 1), "gnn_overrides": gnn,
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps(report), flush=True)
    return report


@stage("transductive")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
