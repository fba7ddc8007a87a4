"""Transductive check: how well every model ranks unseen configs of a real graph it has trained on.

    python -m pipeline.transductive data=../shared/tpugraphs-samples        # every labelled graph with enough configs
    python -m pipeline.transductive file=<train or valid .npz> seeds=[0]     # one file
    make transductive DATA=<root>    |    make transductive FILE=<npz>

Per graph and seed, the graph's configs are deduplicated (identical node_config_feat rows
packed with `features.configs`, or identical tile config_feat rows; the fastest measurement
kept, as `extract dedup=min` does), so two copies of one config never land on both sides, and
the unique configs are split at random into a train half and a held-out half. Each half is
written as the same graph under `<work>/raw/<collection dir>/{train,test}/<stem>.npz` (held out
as `test`, so no epoch is picked on it) and the product's own stages run on that tree: prune,
pad (statistics fitted on train), extract, then every member: `baseline`, `gbdt`
(`pipeline.train_gbdt`, no early stopping: there is no valid graph), `analytical` (layout) and
`gnn` (`pipeline.train_gnn` with the `gnn` overrides, `gnn_seeds` models averaged by their
per-config ranks, as the 1st place's seed averaging). `lightgbm` is a reference outside the
pipeline: a LightGBM regressor on the flattened config features, target log(runtime).

The `ensemble` is blended out of fold on the train half only: the train half is cut into
`blend_folds` folds, every member is trained on the other folds and predicts its fold
(`blend_gnn_seeds` GNNs each), `models.ensemble.Blender` (`blender`, as conf/ensemble.yaml)
fits the weights on those out-of-fold predictions (each fold a graph), and the weights blend the
members' held-out predictions. Extra blends of other member sets: `ensembles.<name>=[...]`.

With `data=` the graphs are every train/valid file of the root with at least `min_configs`
unique configs (tile graphs too); the noise ceiling of each graph is the audit's
`ceiling_distinct` (`models.audit.audit_graph`: an upper bound of the score a model can expect,
scored as here: each distinct config once against the fastest of its copies, tile on the
held-out share), computed on the whole graph; `—` with the audit's reason where the duplicates
cannot support one. Writes `<report>/transductive.json` (every
figure per graph, model and seed), `transductive.md` (per graph and model: mean over seeds,
spread, the ceiling) and `transductive.png`; the work trees go under `out`.
Invariant: no config (after dedup) is on both sides; every model sees the same split; nothing
about the held-out half (runtimes, order) reaches any model or the blend weights.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from features.configs import unpack_layout  # noqa: E402
from models.audit import audit_graph  # noqa: E402
from models.ensemble import Blender, average_seeds, blend, collection_score, normalize  # noqa: E402
from pipeline import audit  # noqa: E402
from pipeline.baseline import baseline_scores  # noqa: E402
from pipeline.core.cli import compose, instantiate, stage  # noqa: E402
from pipeline.core.errors import DataError  # noqa: E402
from pipeline.core.fsutil import write_text_atomic  # noqa: E402
from pipeline.graph import ENSEMBLE, FAMILIES, StageConfig, flat, model_order, run_feature_stages, run_stage  # noqa: E402
from pipeline.io.catalog import GraphFile, collection_kind, collection_of_path, discover, graph_id, rel_path  # noqa: E402
from pipeline.io.npz import read_graph, write_graph  # noqa: E402
from pipeline.io.predictions import predictions_path, read_predictions  # noqa: E402

log = logging.getLogger(__name__)
MEMBERS = tuple(m for m in model_order() if m != ENSEMBLE)  # the pipeline's members, in pipeline order
GNN = "gnn"  # the member averaged over gnn_seeds models (its `gnn` block: train_gnn overrides)
REFERENCE = "lightgbm"


@dataclass
class Unique:
    """One graph's distinct configs: the arrays without configs, the configs (packed layout codes
    (U, NC, 3) or tile rows (U, 24)), the target (U,) (layout runtime; tile runtime / normalizer),
    the raw runtime and normalizers (U,), the varying configurable nodes (layout), the original
    config count, and the audit's numbers of the whole graph."""

    kind: str
    arrays: dict
    configs: np.ndarray
    runtime: np.ndarray
    normalizers: np.ndarray | None
    varying: np.ndarray | None
    num_configs: int
    audit: dict

    @property
    def target(self) -> np.ndarray:
        r = self.runtime.astype(np.float64)
        return r if self.normalizers is None else r / self.normalizers

    def features(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), F) float32 flat config features of the reference regressor."""
        if self.kind == "tile":
            return self.configs[rows].astype(np.float32)
        return unpack_layout(self.configs[rows][:, self.varying]).reshape(rows.size, -1).astype(np.float32)

    def write(self, root: Path, collection: str, split: str, stem: str, rows: np.ndarray, chunk: int) -> None:
        """The configs at `rows` as one raw file; layout configs are unpacked `chunk` at a time
        (memory holds one chunk of float32 configs, not the half)."""
        dst = root / rel_path(collection, split, stem)
        rows = np.sort(rows)
        if self.kind == "tile":
            write_graph(dst, {**self.arrays, "config_feat": self.configs[rows], "config_runtime": self.runtime[rows],
                              "config_runtime_normalizers": self.normalizers[rows]})
            return
        codes = self.configs[rows]
        u, nc = codes.shape[:2]
        chunks = (unpack_layout(codes[i : i + chunk]).astype(np.float32) for i in range(0, u, chunk))  # (c, NC, 18)
        write_graph(dst, {**self.arrays, "config_runtime": self.runtime[rows]}, chunks, (u, nc, 18))


def read_unique(path: Path, split: str | None, chunk: int, audit_params: dict, held_out_fraction: float = 0.5) -> Unique:
    """A raw train/valid file's distinct configs (`Unique`), deduplicated as `make audit` does;
    its audit's `ceiling_distinct` scores `held_out_fraction` of them, as `check_graph` does."""
    g = read_graph(path, split=split)
    drop = ("node_config_feat", "config_runtime", "config_feat", "config_runtime_normalizers")
    arrays = {k: v for k, v in g.arrays().items() if k not in drop}
    d, rows, target, extra, metric = audit.deduplicated(g, path, chunk, progress=False)
    stats = audit_graph(d.config_map, target, d.varying, metric, **audit_params, **extra,
                        held_out_fraction=held_out_fraction)
    norm = None if g.kind == "layout" else g.config_runtime_normalizers[d.first]
    varying = d.varying if g.kind == "layout" else None
    return Unique(g.kind, arrays, rows, d.runtime.astype(np.int64), norm, varying, g.num_configs, stats)


def lightgbm_scores(u: Unique, tr: np.ndarray, te: np.ndarray, params: dict, seed: int) -> np.ndarray:
    """The reference: a LightGBM regressor (L2) on the flat config features of `tr`, target
    log(target); scores of `te` (lower = faster)."""
    import lightgbm as lgb

    p = {"objective": "regression", "seed": seed, "verbose": -1, "num_threads": 1, **params}
    booster = lgb.train(p, lgb.Dataset(u.features(tr), np.log(u.target[tr])))
    return booster.predict(u.features(te))


def score(kind: str, scores: np.ndarray, target: np.ndarray) -> float:
    """The competition metric of one graph (tau for layout, top-5 slowdown score for tile)."""
    return collection_score(kind, {"g": scores}, {"g": target})


def train_members(u: Unique, collection: str, stem: str, tr: np.ndarray, te: np.ndarray, work: Path, cfg: DictConfig,
                  gnn_seeds: list[int]) -> tuple[dict[str, np.ndarray], dict]:
    """Every member trained on the configs `tr` and scoring the configs `te` (in sorted `te`
    order), through the product's stages on a tree under `work`; and the GNN's per-seed scores
    and training summary."""
    if work.exists():
        shutil.rmtree(work)
    raw, chunk = work / "raw", int(cfg.chunk_configs)
    u.write(raw, collection, "train", stem, tr, chunk)
    u.write(raw, collection, "test", stem, te, chunk)
    gid = graph_id(collection, stem)
    common = {"jobs": 1, "seed": gnn_seeds[0]}
    wanted = set(cfg.members)
    out: dict[str, np.ndarray] = {}
    if "baseline" in wanted:
        out["baseline"] = baseline_scores(GraphFile(collection, "test", raw / rel_path(collection, "test", stem)), chunk)
    if REFERENCE in wanted:
        out[REFERENCE] = lightgbm_scores(u, np.sort(tr), np.sort(te), OmegaConf.to_container(cfg.lightgbm, resolve=True), gnn_seeds[0])
    runs: list[dict] = []
    if not wanted & {f.name for f in FAMILIES if f.trained}:
        return out, {"gnn_seed_scores": [], "gnn_epochs": None}
    processed = run_feature_stages(raw, work, common, {"extract": {"flat_configs": True}})  # one graph: its own groups are features
    preds = work / "predictions"
    summary: dict = {}
    for f in FAMILIES:  # the trained members, each through its own stage (the GNN once per seed of gnn_seeds)
        if f.name not in wanted or not f.trained or u.kind not in f.kinds:
            continue
        block = cfg.get(f.name)  # its stage's overrides, where the config has a block for it
        over = flat(OmegaConf.to_container(block, resolve=True)) if block is not None else {}
        inputs = {"data": processed / f.reads, "collections": [collection], "splits": ["test"]}
        if f.name != GNN:
            run_stage(StageConfig.of(f.module, inputs, common, over, models=work / "models" / f.name, predictions=preds))
            out[f.name] = read_predictions(predictions_path(preds, f.name, "test"))[gid]
            continue
        for seed in gnn_seeds:
            sub = f"{f.name}_seed{seed}"
            summary = run_stage(StageConfig.of(f.module, inputs, {"models": work / "models" / sub, "predictions": preds / sub,
                                                                  "seed": seed, "progress": bool(cfg.progress), "jobs": 1}, over))
            runs.append({gid: read_predictions(predictions_path(preds / sub, f.name, "test"))[gid]})
        if runs:  # seed averaging (1st place): the mean of the models' per-config ranks, as train_gbdt's seeds
            out[f.name] = runs[0][gid] if len(runs) == 1 else average_seeds(runs, "rank")[gid]
    return out, {"gnn_seed_scores": [r[gid] for r in runs], "gnn_epochs": summary.get(collection, {}).get("epochs")}


def check_graph(u: Unique, collection: str, stem: str, seed: int, cfg: DictConfig, blender: Blender, work: Path) -> dict:
    """One graph, one seed: every member's and every blend's held-out metric (module docstring)."""
    t0 = time.monotonic()
    kind, n = u.kind, u.configs.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    cut = int(round(n * (1 - float(cfg.valid_fraction))))
    tr, te = np.sort(perm[:cut]), np.sort(perm[cut:])
    log.info("%s seed %d: %d configs, %d distinct; %d train / %d held out", graph_id(collection, stem), seed, u.num_configs,
             n, tr.size, te.size)
    n_gnn = int(cfg.gnn_seeds)
    if n_gnn < 1:
        raise DataError(None, f"gnn_seeds must be at least 1 (got {n_gnn})")
    # seed * n + i: the models of one split and those of another never share a seed
    held, extra = train_members(u, collection, stem, tr, te, work / "outer", cfg, [seed * n_gnn + i for i in range(n_gnn)])
    target = u.target
    result = {"seed": seed, "train": int(tr.size), "held_out": int(te.size),
              "scores": {m: round(score(kind, s, target[te]), 4) for m, s in held.items()},
              "gnn_seed_scores": [round(score(kind, s, target[te]), 4) for s in extra["gnn_seed_scores"]],
              "gnn_epochs": extra["gnn_epochs"]}

    # out-of-fold predictions on the train half: the blend's weights are fitted on them alone
    folds = int(cfg.blend_folds)
    if folds >= 2 and tr.size >= 2 * folds:
        fold_of = np.random.default_rng([seed, 1]).permutation(tr.size) % folds
        oof: dict[str, dict[str, np.ndarray]] = {}
        runtimes: dict[str, np.ndarray] = {}
        for f in range(folds):
            inner_tr, inner_te = tr[fold_of != f], tr[fold_of == f]
            preds, _ = train_members(u, collection, stem, inner_tr, inner_te, work / f"fold{f}", cfg,
                                     [seed * n_gnn + 100 + f * int(cfg.blend_gnn_seeds) + i for i in range(int(cfg.blend_gnn_seeds))])
            fid = f"{graph_id(collection, stem)}#fold{f}"
            runtimes[fid] = target[np.sort(inner_te)]
            for m, s in preds.items():
                oof.setdefault(m, {})[fid] = s
        result["fold_scores"] = {m: round(collection_score(kind, p, runtimes), 4) for m, p in oof.items()}
        result["blends"] = {}
        for name, members in OmegaConf.to_container(cfg.ensembles, resolve=True).items():
            members = [m for m in members if m in held]
            fitted = {m: blender.normalize_all(oof[m]) for m in members}
            method, weights, method_oof = blender.weights(kind, fitted, runtimes)
            gid = graph_id(collection, stem)
            mixed = blend({m: {gid: normalize(held[m], blender.normalize)} for m in members}, weights, [gid])[gid]
            result["scores"][name] = round(score(kind, mixed, target[te]), 4)
            result["blends"][name] = {"method": method, "weights": {m: round(w, 4) for m, w in weights.items()},
                                      "out_of_fold": {k: round(v, 4) for k, v in method_oof.items()}}
    elif folds >= 2:
        log.warning("%s: %d train configs, too few for %d blend folds; no ensemble", graph_id(collection, stem), tr.size, folds)
    result["seconds"] = round(time.monotonic() - t0, 1)
    log.info("%s seed %d: %s (%.0f s)", graph_id(collection, stem), seed,
             ", ".join(f"{m} {v:.4f}" for m, v in result["scores"].items()), result["seconds"])
    return result


def candidate_files(cfg: DictConfig) -> list[tuple[Path, str, str | None]]:
    """(path, collection, split) of the graphs the check may run on: `file=`, or every
    train/valid file of `data=` (collections `collections`)."""
    if cfg.file:
        src = Path(cfg.file)
        if not src.is_file():
            raise DataError(src, "file not found")
        return [(src, cfg.collection or collection_of_path(src), None)]
    if not cfg.data:
        raise DataError(None, "give data=<npz root> (every labelled graph) or file=<train/valid .npz>")
    files = discover(cfg.data, list(cfg.collections) if cfg.collections else None, ["train", "valid"], announce=True)
    return [(f.path, f.collection, f.split) for f in files]


def summarize(graphs: dict) -> dict:
    """Per graph and model: mean and spread (population std) over seeds."""
    for g in graphs.values():
        models = sorted({m for r in g["runs"] for m in r["scores"]}, key=_model_order)
        g["mean"] = {m: round(float(np.mean([r["scores"][m] for r in g["runs"] if m in r["scores"]])), 4) for m in models}
        g["std"] = {m: round(float(np.std([r["scores"][m] for r in g["runs"] if m in r["scores"]])), 4) for m in models}
    return graphs


def _model_order(m: str) -> tuple[int, str]:
    order = [*MEMBERS, REFERENCE]
    return (order.index(m), m) if m in order else (len(order), m)


def markdown(report: dict) -> str:
    graphs = report["graphs"]
    models = sorted({m for g in graphs.values() for m in g["mean"]}, key=_model_order)
    lines = [f"# Transductive check: {report['source']}", "",
             "Held-out half of each graph's distinct configs (Kendall tau for layout, top-5 score for tile), "
             f"mean over seeds {report['seeds']} ± population std; ceiling: the audit's noise ceiling of the whole graph scored "
             "as here (distinct configs against their fastest copy; `models.audit`), an upper bound of what a model can expect. "
             f"`lightgbm` is a reference regressor outside the pipeline; `ensemble` is blended out of fold on the train half.", "",
             "| graph | configs | distinct | " + " | ".join(models) + " | ceiling |",
             "|---|---:|---:|" + "---:|" * (len(models) + 1)]
    for gid, g in graphs.items():
        best = max((g["mean"][m] for m in models if m in g["mean"]), default=None)
        cells = []
        for m in models:
            if m not in g["mean"]:
                cells.append("—")
                continue
            v = f"{g['mean'][m]:.4f} ± {g['std'][m]:.4f}"
            cells.append(f"**{v}**" if g["mean"][m] == best else v)
        ceil = g["ceiling"]
        lines.append(f"| {gid} | {g['configs']} | {g['distinct']} | " + " | ".join(cells) + f" | {'—' if ceil is None else f'{ceil:.3f}'} |")
    lines += [f"- {gid}: no ceiling: {g['ceiling_why']}." for gid, g in graphs.items() if g.get("ceiling_why")]
    lines += ["", "Per seed:", ""]
    for gid, g in graphs.items():
        for r in g["runs"]:
            blends = "; ".join(f"{n}: {b['method']} {b['weights']}" for n, b in r.get("blends", {}).items())
            lines.append(f"- {gid} seed {r['seed']}: " + ", ".join(f"{m} {v:.4f}" for m, v in r["scores"].items())
                         + f"; GNN single models {r['gnn_seed_scores']}" + (f"; blend weights {blends}" if blends else "")
                         + f" ({r['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    graphs = report["graphs"]
    if not graphs:
        return
    models = sorted({m for g in graphs.values() for m in g["mean"]}, key=_model_order)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(graphs) * len(models) / 4), 4))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + i * width for j, g in enumerate(graphs.values()) if m in g["mean"]]
        ys = [g["mean"][m] for g in graphs.values() if m in g["mean"]]
        es = [g["std"][m] for g in graphs.values() if m in g["mean"]]
        ax.bar(xs, ys, width, yerr=es, label=m, capsize=2)
    for j, g in enumerate(graphs.values()):
        if g["ceiling"] is not None:
            ax.hlines(g["ceiling"], j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="dashed",
                      label="noise ceiling" if j == 0 else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(graphs))], [gid.split(":")[-1][:24] for gid in graphs], rotation=20)
    ax.set_ylabel("held-out score (tau / top-5)")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(f"transductive check: {report['source']} (seeds {report['seeds']})", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def with_defaults(cfg: DictConfig) -> DictConfig:
    """The config with `members` (null: every family of pipeline/graph.py and the reference) and
    `ensembles` (null: one blend of every family) filled in, as a copy."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if cfg.members is None:
            cfg.members = [*MEMBERS, REFERENCE]
        if cfg.ensembles is None:
            cfg.ensembles = {ENSEMBLE: list(MEMBERS)}
    return cfg


def run(cfg: DictConfig) -> dict:
    t0 = time.monotonic()
    cfg = with_defaults(cfg)
    unknown = sorted(set(cfg.members) - {*MEMBERS, REFERENCE})
    if unknown:
        raise DataError(None, f"members: unknown model(s) {unknown} (known: {', '.join([*MEMBERS, REFERENCE])})")
    blender_values = flat(OmegaConf.to_container(cfg.blender, resolve=True), "blender.")
    blender: Blender = instantiate(StageConfig.of(ENSEMBLE, blender_values).compose().blender, "blender")
    seeds = [int(s) for s in (cfg.seeds if OmegaConf.is_list(cfg.seeds) else [cfg.seeds])]
    if not seeds:
        raise DataError(None, "seeds must list at least one seed, e.g. seeds=[0,1,2]")
    audit_cfg = compose("audit", [f"seed={seeds[0]}"])
    audit_params = audit.per_graph_params(audit_cfg)
    graphs, per_collection = {}, {}
    for src, collection, split in candidate_files(cfg):
        if cfg.max_graphs is not None and per_collection.get(collection, 0) >= int(cfg.max_graphs):
            continue
        u = read_unique(src, split, int(cfg.chunk_configs), audit_params, float(cfg.valid_fraction))
        gid = graph_id(collection, src.stem)
        if u.kind != collection_kind(collection):
            raise DataError(src, f"is a {u.kind} file; collection {collection} holds {collection_kind(collection)} files")
        if u.configs.shape[0] < int(cfg.min_configs):
            log.info("%s: %d distinct configs, under min_configs=%d; skipped", gid, u.configs.shape[0], int(cfg.min_configs))
            continue
        per_collection[collection] = per_collection.get(collection, 0) + 1
        runs = [check_graph(u, collection, src.stem, s, cfg, blender, Path(cfg.out) / collection_kind(collection) / src.stem / f"s{s}")
                for s in seeds]
        graphs[gid] = {"file": str(src), "kind": u.kind, "configs": u.num_configs, "distinct": int(u.configs.shape[0]),
                       "ceiling": None if u.audit["ceiling_distinct"] is None else round(float(u.audit["ceiling_distinct"]), 4),
                       "ceiling_why": u.audit["ceiling_why"], "runs": runs}
    if not graphs:
        raise DataError(cfg.file or cfg.data, f"no labelled graph with at least min_configs={int(cfg.min_configs)} distinct configs")
    report = {"source": str(cfg.file or cfg.data), "seeds": seeds, "graphs": summarize(graphs),
              "seconds": round(time.monotonic() - t0, 1), "config": OmegaConf.to_container(cfg, resolve=True)}
    out = Path(cfg.report)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{cfg.name}.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / f"{cfg.name}.md", markdown(report))
    plot(report, out / f"{cfg.name}.png")
    print(markdown(report), flush=True)
    log.info("report written to %s (%s.md, .json, .png)", out, cfg.name)
    return report


@stage("transductive")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
