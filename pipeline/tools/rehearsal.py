"""A full-size rehearsal: every stage on a generated dataset at real per-graph sizes, timed.

    python -m pipeline.tools.rehearsal [gnn_minutes=3] [generate.graphs.train=3]    (make rehearsal)

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
multiplied by what that setting trains (`pipeline.train.folds.training_cost`: K fold models on
(K-1)/K of the labelled graphs each, a final fit on all of them, times the seeds), and a table
says how many models per collection. `plan_only=true` runs no stage: it prints that table, and
the projections of an earlier rehearsal's `rehearsal.json` scaled to the setting.

Projection (every assumption in conf/rehearsal.yaml and printed under the table): a row's
time scales with the units it processes, per collection: configs (`scale: configs`: the stage
touches every config it reads; on a split a stage caps, e.g. LightGBM's `max_configs_per_graph`,
at most that many per graph) or graphs, over the splits it reads (`reads`), from the rehearsal's
own counts to the real data's (`real_graphs` x `real_configs`, the mean configs per graph).
LightGBM boosts every round of `num_boost_round` here (`stage_args.train_gbdt`: early stopping on two train
graphs stops wherever it does; the real data may use every round).
`cores` gives a second column: the stages that spread over processes or threads (`parallel`)
divided by cores / this machine's cores x `parallel_efficiency`.
The GNN's CPU projection is steps x its measured seconds per step (steps = real train graphs x
epochs x samples_per_graph). Its GPU projection is built from `pipeline.tools.bench_gnn`'s counts on its
full-size graph (K configs), for train_gnn as `gpu_gnn_args` set it: per training step the batch built on the CPU (its measured seconds,
scaled by K and configurable nodes, divided among `prefetch_workers` threads at
`parallel_efficiency`; built ahead, so it overlaps) against
the model step on the GPU, the largest of bytes moved / (`gpu.bandwidth_gbs` x
`gpu.bandwidth_fraction`), FLOPs / (`gpu.tflops` x `gpu.flops_fraction`) and kernels x
`gpu.launch_us` (bytes and FLOPs scaled by K and the collection's kept nodes); plus validation
(valid graphs x `valid_max_configs` x `valid_permutations` configs per epoch) and inference
(every valid and test config, or every labelled one with folds, x `infer_permutations`, or
`labelled_permutations` on the labelled ones) at the
inference counts per config and per group. Where `make gpu-check` measured the step on a GPU,
pass its `s_per_step` as `gpu.measured_step_s` and it replaces the estimate (the table says which).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline import graph
from pipeline.core import peak_rss
from pipeline.core.cli import compose, stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.gnn.steps import configs_per_step
from pipeline.io.catalog import SPLITS, collection_dir, collection_kind, discover
from pipeline.io.npz import read_members
from pipeline.io.predictions import predictions_path, read_predictions, write_predictions
from pipeline.train.folds import training_cost

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


def part_dir(cfg: DictConfig, collection: str) -> Path:
    """Where a member stage run for one collection writes (its predictions and models), merged after."""
    return Path(cfg.paths.data_dir) / "rehearsal-parts" / collection_dir(collection)


def stage_command(cfg: DictConfig, name: str, collection: str | None) -> list[str]:
    cmd = [sys.executable, "-m", f"pipeline.{name}", f"paths.dataset={cfg.paths.dataset}",
           f"paths.data_dir={cfg.paths.data_dir}", "hydra.run.dir=${paths.data_dir}/rehearsal-logs/" + name]
    if collection is not None:
        cmd.append(f"collections=[{collection}]")
        if name in cfg.merged:  # a member run for one collection keeps its outputs apart, merged after
            cmd += [f"paths.predictions={part_dir(cfg, collection) / 'predictions'}", f"paths.models={part_dir(cfg, collection) / 'models'}"]
    if name == GNN.module:
        cmd += [f"time_budget={cfg.gnn_minutes}", "progress=false", *cfg.gnn_args]
    cmd += list((cfg.stage_args or {}).get(name) or [])
    if name == "submission":  # beside the rehearsal's report: never over a submission of the user's
        cmd += [f"submission={Path(cfg.paths.reports) / 'submission.csv'}", "keep_copy=false"]
    return cmd


SUBMISSION = "submission"  # the stage after the graph's: a submission of the ensemble


def data_counts(raw: Path) -> dict[str, dict[str, list[int]]]:
    """Per collection and split: the config count of each file of the rehearsal tree."""
    counts: dict[str, dict[str, list[int]]] = {}
    for f in discover(raw, announce=False):
        n = int(read_members(f.path, ["config_runtime"])["config_runtime"].shape[0])
        counts.setdefault(f.collection, {sp: [] for sp in SPLITS})[f.split].append(n)
    return counts


def merge_parts(cfg: DictConfig, name: str, collections: list[str]) -> None:
    """One predictions file per split of a member run per collection (`merged`), where the
    ensemble reads it."""
    model = compose(name, []).name
    for split in ("valid", "test", "oof"):
        merged: dict[str, np.ndarray] = {}
        for c in collections:
            part = predictions_path(part_dir(cfg, c) / "predictions", model, split)
            if part.is_file():
                merged.update(read_predictions(part))
        if merged:
            write_predictions(predictions_path(cfg.paths.predictions, model, split), dict(sorted(merged.items())))


def graph_sizes(processed: Path, collection: str) -> dict[str, float]:
    """Mean kept nodes and configurable nodes of a collection's extracted GNN graphs."""
    files = sorted((processed / "gnn" / collection_dir(collection)).rglob("*.npz"))
    layout = collection_kind(collection) == "layout"  # tile graphs have no configurable nodes
    arrays = [read_members(p, ["node_opcode", *(["config_node_ids"] if layout else [])]) for p in files]
    return {"kept": float(np.mean([a["node_opcode"].shape[0] for a in arrays])) if arrays else 0.0,
            "config_nodes": float(np.mean([a["config_node_ids"].shape[0] for a in arrays])) if arrays and layout else 0.0}


def gnn_counts(cfg: DictConfig) -> dict:
    """bench_gnn's measured and counted figures on its full-size graph: per train step (K configs)
    and per inferred config / group."""
    cmd = [sys.executable, "-m", "pipeline.tools.bench_gnn", "devices=[cpu]", "train_steps=2", "configs=128", *cfg.bench_args]
    _, _, text = run_process(cmd, Path(cfg.paths.reports) / "logs" / "bench_gnn.log")
    rec = {r["bench"]: r for r in (json.loads(line) for line in text.splitlines() if line.startswith("{"))}
    t, i = rec["gnn_train"], rec["gnn_infer"]
    return {"k": t["k"], "kept_nodes": t["kept_nodes"], "config_nodes": t["config_nodes"],
            "train_gflop": t["model_gflop"], "train_gbytes": t["model_gbytes"], "train_kernels": t["kernels"],
            "batch_s": t["batch_s_per_step"], "cpu_model_s": t["model_s_per_step"], "infer_k": i["k"],
            "infer_gflop_per_config": i["gflop_per_config"], "infer_gbytes_per_config": i["gbytes_per_config"],
            "infer_kernels_per_group": i["kernels_per_group"]}


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def units(stage_name: str, cfg: DictConfig, per_split: dict[str, tuple[float, float]], caps: dict[str, int | None]) -> float:
    """What a stage processes of one collection: sum over the splits it reads of graphs, or of
    configs (capped per graph on the splits the stage caps). `per_split`: {split: (graphs, mean configs)}."""
    total = 0.0
    for sp in cfg.reads[stage_name]:
        graphs, mean = per_split[sp]
        if cfg.scale[stage_name] == "graphs":
            total += graphs
        else:
            cap = caps.get(f"{stage_name}.{sp}")
            total += graphs * (mean if cap is None else min(mean, cap))
    return total


def stage_caps(cfg: DictConfig) -> dict[str, int | None]:
    """The per-graph config caps of the stages, as their configs set them (`<stage>.<split>`)."""
    caps = {}
    for name in trained_stages(cfg):
        c = compose(name, list((cfg.stage_args or {}).get(name) or []))
        key = next((k for k in CAP_KEYS if k in c), None)
        caps[f"{name}.train"] = None if key is None else c[key]
    return caps


def gpu_seconds(gpu: DictConfig, gbytes: float, gflop: float, kernels: float) -> tuple[float, str]:
    """The larger of memory time, matmul time and launch time on the stated GPU, and which bound."""
    t = {"bytes": gbytes * 1e9 / (gpu.bandwidth_gbs * 1e9 * gpu.bandwidth_fraction),
         "flops": gflop * 1e9 / (gpu.tflops * 1e12 * gpu.flops_fraction),
         "launches": kernels * gpu.launch_us * 1e-6}
    bound = max(t, key=t.get)
    return t[bound], bound


def gnn_gpu_rows(cfg: DictConfig, gnn: dict, sizes: dict[str, dict], s_per_step: dict[str, float]) -> list[dict]:
    """The GNN's training and inference rows per collection: CPU hours from the measured s per
    step, GPU hours from the counted bytes / FLOPs / kernels (module docstring)."""
    train_cfg = compose(GNN.module, list(cfg.gpu_gnn_args))
    gpu = cfg.gpu
    real, conf = {c: list(v) for c, v in cfg.real_graphs.items()}, {c: list(v) for c, v in cfg.real_configs.items()}
    folds_on = int(cfg.folds) > 0
    rows = []
    for c in s_per_step:
        if c not in real:
            continue
        k = configs_per_step(train_cfg, c)
        size = sizes[c]
        scale = k / gnn["k"] * max(1.0, size["kept"]) / gnn["kept_nodes"]
        workers = int(train_cfg.prefetch_workers)  # threads building batches: assumed to scale as the parallel stages
        batch_s = gnn["batch_s"] * k / gnn["k"] * size["config_nodes"] / max(1, gnn["config_nodes"]) \
            / (1.0 if workers <= 1 else workers * float(cfg.parallel_efficiency))
        model_s, bound = gpu_seconds(gpu, gnn["train_gbytes"] * scale, gnn["train_gflop"] * scale, gnn["train_kernels"])
        measured = gpu.measured_step_s is not None
        if measured:
            model_s, bound = float(gpu.measured_step_s) * scale, "measured"
        step_s = max(batch_s, model_s) if int(train_cfg.prefetch) > 0 else batch_s + model_s
        steps = real[c][0] * int(train_cfg.epochs) * int(train_cfg.samples_per_graph)
        per_config = max(1.0, size["kept"]) / gnn["kept_nodes"]
        infer_k = gnn["infer_k"]

        def infer_s(configs: float) -> float:
            t, _ = gpu_seconds(gpu, gnn["infer_gbytes_per_config"] * per_config * configs,
                               gnn["infer_gflop_per_config"] * per_config * configs, gnn["infer_kernels_per_group"] * configs / infer_k)
            return t

        valid_cap = train_cfg.valid_max_configs
        valid_configs = real[c][1] * min(conf[c][1], valid_cap if valid_cap is not None else conf[c][1]) * int(train_cfg.valid_permutations)
        labelled = (real[c][0] * conf[c][0] if folds_on else 0) + real[c][1] * conf[c][1]
        perms = int(train_cfg.infer_permutations)
        labelled_perms = perms if train_cfg.labelled_permutations is None else int(train_cfg.labelled_permutations)
        scored = labelled * labelled_perms + real[c][2] * conf[c][2] * perms
        rows.append({"stage": f"{GNN.module} (training, projected from s/step)", "collection": c, "wall_s": None, "peak_rss_mb": None,
                     "projected_h": _sig(steps * s_per_step[c] / 3600),
                     "gpu_h": _sig((steps * step_s + int(train_cfg.epochs) * infer_s(valid_configs)) / 3600),
                     "gpu_step": {"batch_s": _sig(batch_s), "model_s": _sig(model_s), "bound": bound, "waits_for_cpu": batch_s > model_s,
                                  "steps": steps, "measured": measured}})
        rows.append({"stage": f"{GNN.module} (inference)", "collection": c, "wall_s": None, "peak_rss_mb": None, "projected_h": None,
                     "gpu_h": _sig(infer_s(scored) / 3600), "configs_x_permutations": int(scored)})
    return rows


def project(cfg: DictConfig, rows: list[dict], counts: dict[str, dict[str, list[int]]], gnn: dict, sizes: dict[str, dict],
            s_per_step: dict[str, float]) -> None:
    """Add `projected_h` (this machine) and `projected_h_cores` to every timed row, then the GNN's
    projected rows."""
    want = {c: {sp: (float(cfg.real_graphs[c][i]), float(cfg.real_configs[c][i])) for i, sp in enumerate(SPLITS)}
            for c in cfg.real_graphs}
    caps = stage_caps(cfg)
    speedup = max(1.0, int(cfg.cores) / max(1, os.cpu_count() or 1) * float(cfg.parallel_efficiency))
    for r in rows:
        if r["stage"] == GNN.module:  # a time-budgeted run does not scale with its graphs: the rows below use s per step
            r["projected_h"] = r["projected_h_cores"] = None
            continue
        cols = [r["collection"]] if r["collection"] != "all" else [c for c in counts if c in want]
        w = sum(units(r["stage"], cfg, want[c], caps) for c in cols)
        # the rehearsal ran its stages with the same caps: its own units are capped alike
        h = sum(units(r["stage"], cfg, {sp: (len(counts[c][sp]), _capped_mean(counts[c][sp], caps.get(f"{r['stage']}.{sp}")))
                                        for sp in SPLITS}, {}) for c in cols)
        r["projected_h"] = _sig(r["wall_s"] * w / max(1e-9, h) / 3600)
        r["projected_h_cores"] = _sig(r["projected_h"] / (speedup if r["stage"] in cfg.parallel else 1.0))
    rows.extend(gnn_gpu_rows(cfg, gnn, sizes, s_per_step))


def _capped_mean(sizes: list[int], cap: int | None) -> float:
    return float(np.mean([n if cap is None else min(n, cap) for n in sizes])) if sizes else 0.0


CAP_KEYS = ("max_configs_per_graph", "fit_max_configs")  # a trainer's knob capping the configs it fits per train graph
GNN = graph.family("gnn")  # the family projected from its seconds per step (time-budgeted), not from its graphs


def trained_stages(cfg: DictConfig) -> list[str]:
    """The trainer stages timed per collection and scaled per fold (every trained family's but the GNN's)."""
    return [f.module for f in graph.FAMILIES if f.trained and f.name != GNN.name]


def _given(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def with_graph_defaults(cfg: DictConfig) -> DictConfig:
    """The stage lists left null in conf/rehearsal.yaml, from the stage graph (pipeline/graph.py):
    `stages` every stage in order then submission; `per_collection` and `parallel` the feature
    stages and every family's stage but the GNN's; `merged` those families'; `layout_only` the
    families serving layout only; `cpu_stages` every stage but the GNN's; `reads` what each reads
    (feature stages and trainers: every split; the others: valid and test; submission: test);
    `scale` configs unless given."""
    cfg = copy.deepcopy(cfg)
    order = [s.module for s in graph.order()] + [SUBMISSION]
    members = [f.module for f in graph.FAMILIES if f.name != GNN.name]
    features = [s.module for s in graph.feature_stages()]
    trainers = {f.module for f in graph.FAMILIES if f.trained}
    default = {"stages": order, "per_collection": features + members, "parallel": features + members, "merged": members,
               "layout_only": [f.module for f in graph.FAMILIES if tuple(f.kinds) == ("layout",)],
               "cpu_stages": [m for m in order if m != GNN.module]}
    with open_dict(cfg):
        for key, value in default.items():
            if cfg.get(key) is None:
                cfg[key] = value
        reads = {m: list(SPLITS) if m in features or m in trainers else ["valid", "test"] for m in order}
        reads[SUBMISSION] = ["test"]
        cfg.reads = reads | _given(cfg.get("reads"))
        cfg.scale = {m: "configs" for m in order} | _given(cfg.get("scale"))
    return cfg


def fold_costs(cfg: DictConfig) -> dict[str, dict]:
    """Per collection of `real_graphs`: the models the setting (folds, final; the GNN's
    `gnn_seeds`) trains and its training-time multiple against one plain run
    (`pipeline.train.folds.training_cost`), for LightGBM / the analytical ranker and for the GNN."""
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
        gnn = r["stage"].startswith(f"{GNN.module} (training")
        if not gnn and r["stage"] not in trained_stages(cfg):
            continue
        key = "gnn" if gnn else "trees"
        cols = [r["collection"]] if r["collection"] in costs else list(costs)
        mult = sum(costs[c][key]["multiple"] * real[c] for c in cols) / max(1, sum(real[c] for c in cols))
        r["projected_h"] = _sig(r["projected_h"] * mult)
        if r.get("projected_h_cores") is not None:
            r["projected_h_cores"] = _sig(r["projected_h_cores"] * mult)
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
    cores = f"{cfg.cores} cores"
    head = [f"| stage | collection | wall_s | peak_rss_mb | projected h (this machine) | projected h ({cores}) | GNN on one GPU, h |",
            "|---|---|---:|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else (f"{v:.0f}" if isinstance(v, float) and v >= 100 else str(v))  # noqa: E731
    body = [f"| {r['stage']} | {r['collection']} | {fmt(r['wall_s'])} | {fmt(r['peak_rss_mb'])} | {fmt(r['projected_h'])} | "
            f"{fmt(r.get('projected_h_cores'))} | {fmt(r.get('gpu_h'))} |" for r in rows]
    cpu = [r for r in rows if r["stage"] in cfg.cpu_stages and r.get("projected_h") is not None]
    totals = (f"\nCPU stages together ({', '.join(cfg.cpu_stages)}): {sum(r['projected_h'] for r in cpu):.2f} h on this machine, "
              f"{sum(r['projected_h_cores'] for r in cpu):.2f} h on {cores}; the GNN on one GPU: "
              f"{sum(r.get('gpu_h') or 0 for r in rows):.2f} h.\n")
    steps = [f"| {r['collection']} | {r['gpu_step']['steps']} | {r['gpu_step']['batch_s']} | {r['gpu_step']['model_s']} | "
             f"{r['gpu_step']['bound']} | {'yes' if r['gpu_step']['waits_for_cpu'] else 'no'} |" for r in rows if "gpu_step" in r]
    step_table = ["", "GNN step on the GPU (seconds; model: the largest of the bounds below, or measured):", "",
                  "| collection | steps | batch on the CPU | model on the GPU | bound | GPU waits for the CPU |",
                  "|---|---:|---:|---:|---|---|", *steps] if steps else []
    g = cfg.gpu
    note = (f"\nRehearsal wall time {total_s / 60:.1f} min. Assumptions: real graphs per collection [train, valid, test] "
            f"{_plain(cfg.real_graphs)}; mean configs per graph {_plain(cfg.real_configs)}; stages scaled by configs or graphs "
            f"{_plain(cfg.scale)} over the splits they read; {cores}: the stages {list(cfg.parallel)} at "
            f"{cfg.parallel_efficiency} parallel efficiency, the others as here. GPU ({g.name}): {g.bandwidth_gbs} GB/s x "
            f"{g.bandwidth_fraction}, {g.tflops} TFLOP/s x {g.flops_fraction}, {g.launch_us} us per kernel launch"
            f"{'' if g.measured_step_s is None else f', step measured at {g.measured_step_s} s'}; bytes and FLOPs counted by "
            f"pipeline.tools.bench_gnn on this machine (float32; bf16 autocast moves fewer).\n")
    return "\n".join(head + body) + "\n" + totals + "\n".join(step_table) + "\n" + note


def _plain(node) -> str:
    return json.dumps(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)


def rehearse(cfg: DictConfig) -> list[dict]:
    t0 = time.perf_counter()
    cfg = with_graph_defaults(cfg)
    raw = ensure_data(cfg)
    counts = data_counts(raw)
    # every stage from nothing: the preprocessing stages skip outputs already up to date
    for name in ("interim", "processed", "models", "predictions"):
        shutil.rmtree(cfg.paths[name], ignore_errors=True)
    shutil.rmtree(Path(cfg.paths.data_dir) / "rehearsal-parts", ignore_errors=True)
    logs = Path(cfg.paths.reports) / "logs"
    rows, gnn_text = [], ""
    stages, layout_only = list(cfg.stages), list(cfg.layout_only)
    for name in stages:
        collections = [c for c in sorted(counts) if name not in layout_only or collection_kind(c) == "layout"] \
            if name in cfg.per_collection else [None]
        for c in collections:
            wall, rss, text = run_process(stage_command(cfg, name, c), logs / f"{name}{'-' + c.replace(':', '_') if c else ''}.log")
            rows.append({"stage": name, "collection": c or "all", "wall_s": round(wall, 1), "peak_rss_mb": round(rss)})
            log.info("%s %s: %.1f s, peak RSS %.0f MB", name, c or "(all collections)", wall, rss)
            if name == GNN.module:
                gnn_text = text
        if name in cfg.merged and name in cfg.per_collection:
            merge_parts(cfg, name, collections)
    gnn = gnn_counts(cfg)
    # the estimate after the first steps, else (a short run) the whole run's seconds per step
    whole = {m.group(1): float(m.group(3)) / max(1, int(m.group(2))) for m in BEST_LINE.finditer(gnn_text)}
    s_per_step = whole | {m.group(1): float(m.group(2)) for m in STEP_LINE.finditer(gnn_text)}
    sizes = {c: graph_sizes(Path(cfg.paths.processed), c) for c in s_per_step}
    project(cfg, rows, counts, gnn, sizes, s_per_step)
    apply_fold_costs(cfg, rows)
    gnn |= {"s_per_step": s_per_step, "sizes": sizes}
    counts = {c: {sp: {"graphs": len(v), "configs": int(sum(v))} for sp, v in per.items()} for c, per in counts.items()}
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
    cfg = with_graph_defaults(cfg)
    print(cost_markdown(cfg), flush=True)
    done = Path(cfg.paths.reports) / "rehearsal.json"
    if not done.is_file():
        log.info("no %s yet (make rehearsal measures the stages); the multiples above apply to its projections", done)
        return []
    doc = json.loads(done.read_text())
    # the GNN's projected rows again for this setting (its inference scores every labelled
    # config with folds); then the fold multiples on the training rows of a plain rehearsal
    rows = [r for r in doc["rows"] if not r["stage"].startswith(f"{GNN.module} (")]
    gnn = doc.get("gnn", {})
    if "sizes" in gnn:
        rows += gnn_gpu_rows(cfg, gnn, gnn["sizes"], gnn["s_per_step"])
    apply_fold_costs(cfg, rows)
    print(_markdown(rows, cfg, doc.get("seconds", 0)), flush=True)
    return rows


@stage("rehearsal")
def main(cfg: DictConfig) -> list[dict]:
    return reproject(cfg) if cfg.plan_only else rehearse(cfg)


if __name__ == "__main__":
    main()
