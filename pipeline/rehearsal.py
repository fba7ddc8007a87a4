"""A full-size rehearsal: every stage on a generated dataset at real per-graph sizes, timed.

    python -m pipeline.rehearsal [gnn_minutes=3] [generate.graphs.train=3]    (make rehearsal)

Generates (once; cached by the `generate` overrides in `<raw>/rehearsal.json`) a few graphs
per collection with the embedded sample's generator at the real data's per-graph sizes
(layout: 10k-40k nodes, ~1,000 configurable nodes, 20k-100k train configs, 1,000 configs on
valid and test as the real test graphs; tile: ~2,000 configs), under `paths.dataset=rehearsal`.
Then runs `stages`, each in its own process (`per_collection` ones once per collection),
training the GNN under `time_budget=gnn_minutes`, and prints one table: wall time and peak RSS
per stage and collection, with a projection to the real dataset's graph counts
(`real_graphs`) on this machine and, for the GNN, on one GPU of a stated rate. Writes
`reports/rehearsal/rehearsal.{md,json}` and each stage's log beside them.

With `folds` / `final` (conf/common.yaml) and `gnn_seeds`, the training rows' projections are
multiplied by what that setting trains (`pipeline.core.folds.training_cost`: K fold models on
(K-1)/K of the labelled graphs each, a final fit on all of them, times the seeds), and a table
says how many models per collection. `plan_only=true` runs no stage: it prints that table, and
the projections of an earlier rehearsal's `rehearsal.json` scaled to the setting.

Projection: a row's time scales linearly with the graphs it processes (train graphs for the
training stages, all for the others). The GNN's training projection is steps x its measured
seconds per step (steps = real train graphs x epochs x samples_per_graph). On the GPU it is
the FLOPs of those steps (`pipeline.bench_gnn`'s count at K=64 on its graph, scaled by K and
by the collection's mean kept nodes) at `gpu_fraction` of `gpu_tflops`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.core import peak_rss
from pipeline.core.cli import compose, stage
from pipeline.core.errors import DataError
from pipeline.core.folds import training_cost
from pipeline.core.fsutil import atomic_path
from pipeline.core.gnn_steps import configs_per_step
from pipeline.io.catalog import collection_dir, discover
from pipeline.io.npz import read_members

log = logging.getLogger(__name__)

STEP_LINE = re.compile(r"(\S+): ([\d.]+(?:e[+-]?\d+)?) s per step")
BEST_LINE = re.compile(r"(\S+): best valid \S+ at epoch \d+ \((\d+) steps, ([\d.]+) s\)")


def _flatten(node, prefix: str = "") -> list[str]:
    """`a.b=value` overrides of a nested config node."""
    if isinstance(node, dict):
        return [o for k, v in node.items() for o in _flatten(v, f"{prefix}{k}.")]
    value = json.dumps(node) if isinstance(node, list) else ("null" if node is None else str(node))
    return [f"{prefix[:-1]}={value}"]


def run_process(cmd: list[str], log_path: Path) -> tuple[float, float, str]:
    """Run `cmd` with its output in `log_path`; (wall s, peak RSS MB of it and its children, output)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        # through pipeline.core.peak_rss: spawned from this process, a stage would count its size too
        returncode, rss_mb = peak_rss.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    text = log_path.read_text()
    if returncode != 0:
        tail = text.strip().splitlines()[-1:] or ["(no output)"]
        raise DataError(log_path, f"`{' '.join(cmd[2:4])}` exited {returncode}: {tail[0]}")
    return wall, rss_mb, text


def ensure_data(cfg: DictConfig) -> Path:
    """The generated rehearsal tree (made once per `generate` settings)."""
    raw = Path(cfg.paths.raw)
    wanted = OmegaConf.to_container(cfg.generate, resolve=True) | {"seed": int(cfg.seed)}
    record = raw / "rehearsal.json"
    if (raw / ".complete").is_file() and record.is_file() and json.loads(record.read_text()) == wanted:
        log.info("using the generated rehearsal data in %s", raw)
        return raw
    log.info("generating the rehearsal data in %s (once; minutes per 100k-config graph)", raw)
    cmd = [sys.executable, "-m", "pipeline.sample_data", f"out={raw}", f"seed={cfg.seed}", *_flatten(wanted["sizes"], "sizes."),
           *_flatten({k: v for k, v in wanted.items() if k not in ("sizes", "seed")})]
    wall, rss, _ = run_process(cmd, Path(cfg.paths.reports) / "logs" / "sample_data.log")
    log.info("generated in %.0f s (peak RSS %.0f MB)", wall, rss)
    record.write_text(json.dumps(wanted))
    return raw


def stage_command(cfg: DictConfig, name: str, collection: str | None) -> list[str]:
    cmd = [sys.executable, "-m", f"pipeline.{name}", f"paths.dataset={cfg.paths.dataset}",
           f"paths.data_dir={cfg.paths.data_dir}", "hydra.run.dir=${paths.data_dir}/rehearsal-logs/" + name]
    if collection is not None:
        cmd.append(f"collections=[{collection}]")
    if name == "train_gnn":
        cmd += [f"time_budget={cfg.gnn_minutes}", "progress=false", *cfg.gnn_args]
    if name == "train_gbdt":
        cmd += list(cfg.gbdt_args)
    return cmd


def graph_counts(raw: Path) -> dict[str, list[int]]:
    """Per collection: [train, valid, test] graphs of the rehearsal tree."""
    counts: dict[str, list[int]] = {}
    for f in discover(raw):
        counts.setdefault(f.collection, [0, 0, 0])[["train", "valid", "test"].index(f.split)] += 1
    return counts


def kept_nodes(processed: Path, collection: str) -> float:
    """Mean node count of a collection's extracted GNN graphs (after pruning)."""
    sizes = [read_members(p, ["node_opcode"])["node_opcode"].shape[0]
             for p in sorted((processed / "gnn" / collection_dir(collection)).rglob("*.npz"))]
    return float(np.mean(sizes)) if sizes else 0.0


def gnn_flops(cfg: DictConfig) -> dict:
    """bench_gnn's FLOP count on its full-size graph (K=64): per train step and per inferred config."""
    cmd = [sys.executable, "-m", "pipeline.bench_gnn", "devices=[cpu]", "train_steps=1", "configs=128", *cfg.bench_args]
    _, _, text = run_process(cmd, Path(cfg.paths.reports) / "logs" / "bench_gnn.log")
    rec = {r["bench"]: r for r in (json.loads(line) for line in text.splitlines() if line.startswith("{"))}
    return {"train_gflop": rec["gnn_train"]["model_gflop"], "k": rec["gnn_train"]["k"],
            "kept_nodes": rec["gnn_train"]["kept_nodes"], "infer_gflop_per_config": rec["gnn_infer"]["model_gflop"] / 128,
            "cpu_infer_configs_per_s": rec["gnn_infer"]["configs_per_s"]}


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def project(cfg: DictConfig, rows: list[dict], counts: dict[str, list[int]], gnn: dict) -> None:
    """Add `projected_h` (this machine) to every row and `gpu_h` to the GNN's."""
    real = {c: list(v) for c, v in cfg.real_graphs.items()}
    train_cfg = compose("train_gnn", [])
    for r in rows:
        cols = [r["collection"]] if r["collection"] != "all" else list(counts)
        have = sum(sum(counts[c][i] for i in r["_splits"]) for c in cols)
        want = sum(sum(real[c][i] for i in r["_splits"]) for c in cols if c in real)
        # a time-budgeted GNN run does not scale with its graphs: its rows below use s per step
        r["projected_h"] = None if r["stage"] == "train_gnn" else _sig(r["wall_s"] * want / max(1, have) / 3600)
    for c, s_per_step in gnn["s_per_step"].items():
        k = configs_per_step(train_cfg, c)
        steps = real[c][0] * int(train_cfg.epochs) * int(train_cfg.samples_per_graph)
        scale = k / gnn["k"] * max(1.0, gnn["kept"][c]) / gnn["kept_nodes"]
        flops = steps * gnn["train_gflop"] * scale * 1e9
        rows.append({"stage": "train_gnn (training, projected from s/step)", "collection": c, "wall_s": None, "peak_rss_mb": None,
                     "projected_h": _sig(steps * s_per_step / 3600),
                     "gpu_h": _sig(flops / (cfg.gpu_tflops * 1e12 * cfg.gpu_fraction) / 3600)})


TRAINED = ("train_gbdt", "train_analytical")  # rows that train per fold (the GNN's projected rows too)


def fold_costs(cfg: DictConfig) -> dict[str, dict]:
    """Per collection of `real_graphs`: the models the setting (folds, final; the GNN's
    `gnn_seeds`) trains and its training-time multiple against one plain run
    (`pipeline.core.folds.training_cost`), for LightGBM / the analytical ranker and for the GNN."""
    k, final = int(cfg.folds), bool(cfg.final)
    fold_valid = "valid" in list(cfg.fold_splits)
    out = {}
    for c, (train, valid, _test) in cfg.real_graphs.items():
        out[c] = {"trees": training_cost(k, 1, final, train, valid, fold_valid),
                  "gnn": training_cost(k, int(cfg.gnn_seeds), final, train, valid, fold_valid)}
    return out


def apply_fold_costs(cfg: DictConfig, rows: list[dict]) -> None:
    """Scale the training rows' projections by the setting's multiples (graph-weighted for rows
    over all collections); unchanged for folds=0, final=false, one GNN seed."""
    costs = fold_costs(cfg)
    real = {c: v[0] for c, v in cfg.real_graphs.items()}
    for r in rows:
        if r.get("projected_h") is None:
            continue
        gnn = r["stage"].startswith("train_gnn")
        if not gnn and r["stage"] not in TRAINED:
            continue
        key = "gnn" if gnn else "trees"
        cols = [r["collection"]] if r["collection"] in costs else list(costs)
        mult = sum(costs[c][key]["multiple"] * real[c] for c in cols) / max(1, sum(real[c] for c in cols))
        r["projected_h"] = _sig(r["projected_h"] * mult)
        if r.get("gpu_h") is not None:
            r["gpu_h"] = _sig(r["gpu_h"] * mult)


def cost_markdown(cfg: DictConfig) -> str:
    """What `folds` / `final` / `gnn_seeds` train per collection of the real data, and the multiple."""
    lines = [f"Setting: folds={cfg.folds} (fold_splits={list(cfg.fold_splits)}), final={cfg.final}, GNN seeds={cfg.gnn_seeds}",
             "", "| collection | train / valid graphs | LightGBM, analytical: models | x training | GNN: models | x training |",
             "|---|---|---:|---:|---:|---:|"]
    for c, v in fold_costs(cfg).items():
        tr, va = cfg.real_graphs[c][:2]
        lines.append(f"| {c} | {tr} / {va} | {v['trees']['models']} | {v['trees']['multiple']:.2f} | {v['gnn']['models']} | "
                     f"{v['gnn']['multiple']:.2f} |")
    return "\n".join(lines) + "\n"


def _markdown(rows: list[dict], cfg: DictConfig, total_s: float) -> str:
    head = ["| stage | collection | wall_s | peak_rss_mb | projected h (this machine) | GNN on one GPU, h |", "|---|---|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else (f"{v:.0f}" if isinstance(v, float) and v >= 100 else str(v))  # noqa: E731
    body = [f"| {r['stage']} | {r['collection']} | {fmt(r['wall_s'])} | {fmt(r['peak_rss_mb'])} | {fmt(r['projected_h'])} | "
            f"{fmt(r.get('gpu_h'))} |" for r in rows]
    note = (f"\nRehearsal wall time {total_s / 60:.1f} min. Projection to the real graph counts ({dict(cfg.real_graphs)}); "
            f"GPU: {cfg.gpu_name} at an assumed {cfg.gpu_fraction} of its rate.\n")
    return "\n".join(head + body) + "\n" + note


def rehearse(cfg: DictConfig) -> list[dict]:
    t0 = time.perf_counter()
    raw = ensure_data(cfg)
    counts = graph_counts(raw)
    logs = Path(cfg.paths.reports) / "logs"
    rows, gnn_text = [], ""
    for name in cfg.stages:
        collections = sorted(counts) if name in cfg.per_collection else [None]
        for c in collections:
            wall, rss, text = run_process(stage_command(cfg, name, c), logs / f"{name}{'-' + c.replace(':', '_') if c else ''}.log")
            splits = [0] if name in ("train_gbdt", "train_gnn") else [0, 1, 2]
            rows.append({"stage": name, "collection": c or "all", "wall_s": round(wall, 1), "peak_rss_mb": round(rss), "_splits": splits})
            log.info("%s %s: %.1f s, peak RSS %.0f MB", name, c or "(all collections)", wall, rss)
            if name == "train_gnn":
                gnn_text = text
    gnn = gnn_flops(cfg)
    # the estimate after the first steps, else (a short run) the whole run's seconds per step
    whole = {m.group(1): float(m.group(3)) / max(1, int(m.group(2))) for m in BEST_LINE.finditer(gnn_text)}
    gnn["s_per_step"] = whole | {m.group(1): float(m.group(2)) for m in STEP_LINE.finditer(gnn_text)}
    gnn["kept"] = {c: kept_nodes(Path(cfg.paths.processed), c) for c in gnn["s_per_step"]}
    project(cfg, rows, counts, gnn)
    apply_fold_costs(cfg, rows)
    for r in rows:
        r.pop("_splits", None)
    total = time.perf_counter() - t0
    out = Path(cfg.paths.reports)
    with atomic_path(out / "rehearsal.json") as tmp:
        tmp.write_text(json.dumps({"rows": rows, "graphs": counts, "gnn": gnn, "seconds": round(total)}, indent=1))
    md = _markdown(rows, cfg, total) + "\n" + cost_markdown(cfg)
    with atomic_path(out / "rehearsal.md") as tmp:
        tmp.write_text(md)
    print(md, flush=True)
    return rows


def reproject(cfg: DictConfig) -> list[dict]:
    """`plan_only=true`: no stage runs; the setting's models and multiples, and, where an earlier
    rehearsal left `rehearsal.json`, its projections scaled to the setting."""
    print(cost_markdown(cfg), flush=True)
    done = Path(cfg.paths.reports) / "rehearsal.json"
    if not done.is_file():
        log.info("no %s yet (make rehearsal measures the stages); the multiples above apply to its projections", done)
        return []
    rows = json.loads(done.read_text())["rows"]
    apply_fold_costs(cfg, rows)
    print(_markdown(rows, cfg, json.loads(done.read_text()).get("seconds", 0)), flush=True)
    return rows


@stage("rehearsal")
def main(cfg: DictConfig) -> list[dict]:
    return reproject(cfg) if cfg.plan_only else rehearse(cfg)


if __name__ == "__main__":
    main()
