"""Audit the measured runtimes: how far each graph's targets can be trusted.

    python -m pipeline.audit paths.raw=<npz root> paths.dataset=<name> [thresholds.max_noise=0.1]
    make audit DATA=<npz root> DATASET=<name>

Reads every train and valid `.npz` under `data` (test files carry no runtimes: they are
skipped with one log line). Per graph it deduplicates the configs as the extract stage does
(layout rows streamed in chunks of `chunk_configs`, packed with `features.configs.pack_layout`;
tile rows are the 24-column `config_feat`; both digested by `ConfigDeduper`) and computes the
numbers of `models.audit.audit_graph`: configs, unique configs, spread, noise estimated from
duplicate groups, spread-to-noise ratio, outlier duplicate groups, tile normalizer agreement and
the noise ceilings (`ceiling`, `ceiling_distinct`, or n/a with `ceiling_why`); flags come from `models.audit.flag_graph` with `thresholds`.

Writes into `out`, atomically: `audit.md` (a table and what its columns mean), `audit.json`
(every number and flag per graph by Kaggle ID, the thresholds and the resolved config) and
`audit.png` (spread against noise per graph, log axes, flagged graphs marked). Per-graph results
are cached under `cache` (one JSON per graph, the raw layout), so a rerun with the same
per-graph knobs only re-reads changed files; thresholds apply afterwards and never invalidate it.
Memory per graph is bounded by one chunk of configs plus O(configs) runtimes.

Training stages leave flagged graphs out with `pipeline.io.audit_json.exclusions` (`exclude=audit`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, CI or Kaggle
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from features.configs import ConfigDeduper, Dedup, pack_layout  # noqa: E402
from models.audit import FLAGS, audit_graph, flag_graph  # noqa: E402
from pipeline.core.cli import stage  # noqa: E402
from pipeline.core.errors import DataError  # noqa: E402
from pipeline.core.fsutil import atomic_path, write_text_atomic  # noqa: E402
from pipeline.core.runner import Task, chunk_bar, config_hash, run_tasks
from pipeline.io.catalog import COLLECTIONS, SHORT, discover, rel_path  # noqa: E402
from pipeline.io.npz import Graph, iter_node_config_feat, read_graph  # noqa: E402

log = logging.getLogger(__name__)

AUDITED_SPLITS = ("train", "valid")
# knobs that change the per-graph numbers (the cache is keyed on them); the other thresholds
# are applied to cached numbers
PER_GRAPH_KEYS = ("ceiling_draws", "ceiling_max_configs", "near_tie_widths", "seed", "noise_window_dof", "noise_confidence",
                  "min_noise_groups", "min_noise_coverage")
PER_GRAPH_THRESHOLDS = ("outlier_factor", "outlier_min_log_range")


def deduplicated(g: Graph, src: str | Path, chunk_configs: int, progress: bool = True) -> tuple[Dedup, np.ndarray, np.ndarray, dict, str]:
    """One raw graph's configs deduplicated as the extract stage does (the fastest runtime of
    identical configs kept): the `Dedup`, the unique config rows (layout: packed codes
    (U, NC, 3), streamed `chunk_configs` at a time; tile: config_feat rows (U, 24)), the target
    of every config (layout runtime; tile runtime / normalizer), the audit's extra arguments and
    the ceiling metric (`tau` or `top5`)."""
    dd = ConfigDeduper("min")
    if g.kind == "layout":
        chunks = iter_node_config_feat(g, chunk_configs)
        uniq = []
        for start, chunk in chunk_bar(chunks, g.num_configs, chunk_configs, Path(src).name) if progress else chunks:
            try:
                codes = pack_layout(chunk)  # (c, NC, 3)
            except ValueError as e:
                raise DataError(src, f"configs {start}..{start + len(chunk) - 1}: {e}", "node_config_feat") from None
            uniq.append(dd.add(codes, g.config_runtime[start : start + len(chunk)]))
        return dd.finish(), np.concatenate(uniq), g.config_runtime.astype(np.float64), {}, "tau"
    rows = dd.add(g.config_feat, g.config_runtime)
    target = g.config_runtime / g.config_runtime_normalizers.astype(np.float64)
    extra = {"runtime": g.config_runtime, "normalizers": g.config_runtime_normalizers}
    return dd.finish(), rows, target, extra, "top5"


def audit_file(src: str, split: str, out: str, chunk_configs: int, params: dict) -> dict:
    """Audit one raw file; writes its numbers as JSON to `out` and returns them."""
    g = read_graph(src, split=split)
    d, _, target, extra, metric = deduplicated(g, src, chunk_configs)
    stats = audit_graph(d.config_map, target, d.varying, metric, **params, **extra)
    write_text_atomic(out, json.dumps(stats, sort_keys=True) + "\n")
    return stats


def per_graph_params(cfg: DictConfig) -> dict:
    return {**{k: cfg[k] for k in PER_GRAPH_KEYS}, **{k: cfg.thresholds[k] for k in PER_GRAPH_THRESHOLDS}}


# ---------------------------------------------------------------------------------------------
# report


def _g(v: float | None, fmt: str = ".3g") -> str:
    return "n/a" if v is None else format(v, fmt)


def _row(gid: str, g: Mapping) -> str:
    flags = ", ".join(g["flags"]) or "-"
    return (f"| `{gid}` | {g['split']} | {g['configs']} | {g['unique']} | {g['spread']:.4g} | {_g(g['noise'], '.2e')} "
            f"| {_g(g['ratio'], '.3g')} | {_g(g['ceiling'], '.3f')} | {_g(g['ceiling_distinct'], '.3f')} | {flags} |")


def _markdown(result: dict, name: str) -> str:
    graphs = result["graphs"]
    th = result["thresholds"]
    counts = result["summary"]["flagged"]
    lines = [
        f"# Runtime audit: `{result['data']}`", "",
        f"{len(graphs)} train/valid graphs audited ({result['summary']['skipped_test']} test files skipped: no runtimes); "
        + ", ".join(f"{counts[f]} {f}" for f in FLAGS) + f", {result['summary']['clean']} unflagged.", "",
        "| graph | split | configs | unique | spread | noise | ratio | ceiling | distinct | flags |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(gid, g) for gid, g in graphs.items()]
    lines += [
        "",
        "**Columns.** *configs*: configs in the file; *unique*: distinct configs after deduplication as the "
        "extract stage does it. *spread*: max / min of the target (layout: runtime; tile: runtime / normalizer). "
        "*noise*: the relative measurement noise, the standard deviation of log runtime among identical configs, "
        "estimated robustly from the duplicate groups (each group's variance scaled by the median of its chi-square "
        "law, then the weighted median; n/a without duplicates). *ratio*: standard deviation of log runtime across "
        "unique configs divided by the noise (n/a when the noise is unknown or zero). *ceiling*: an upper bound of "
        "the score a model can expect under the measurement noise: the score of an oracle knowing every true runtime "
        "against re-measured runtimes (layout: Kendall tau-b; tile: the top-5 score), mean of "
        f"{result['config']['ceiling_draws']} seeded re-draws, scored as `make evaluate` and the validation report "
        "score a graph (every config, copies included). *distinct*: the same, scored as `make transductive` does "
        "(each distinct config once, against the fastest of its copies). The noise behind both is estimated per "
        f"runtime window of {result['config']['noise_window_dof']} degrees of freedom of duplicate groups, each a "
        f"{result['config']['noise_confidence']:g} lower confidence bound; configs no window reaches count as "
        "noiseless. n/a: the duplicates cannot support a ceiling (reasons below).",
        "",
        f"**Flags.** *degenerate*: fewer than two unique configs, no configurable node that ever varies, or one "
        f"runtime for all. *noise-dominated*: ratio under {th['noise_dominated']}. *inconsistent*: more than "
        f"{th['max_outlier_groups']} duplicate groups wider than {th['outlier_factor']} noise widths (and "
        f"{th['outlier_min_log_range']} in log), noise over {th['max_noise']}, or tile normalizers that differ among "
        f"themselves or from every config's runtime by over {th['normalizer_tolerance']} in log (the normalizer is "
        "the default config's runtime). Reasons are in `audit.json`; training stages leave flagged graphs out "
        "with `pipeline.io.audit_json.flagged_graphs`.",
        "",
        "**What tiny noise implies.** Duplicate configs of real files differ by a few parts per million, so the "
        "noise column reads 1e-6 to 1e-5 and the ratio is huge; yet many distinct configs also run within a few "
        "ppm of each other, and noise alone decides their measured order. Kendall tau counts every such pair as a "
        "coin toss, so the ceiling sits below 1 by roughly the share of pairs within noise of each other "
        "(`near_tie_share` in the JSON), however large the ratio. A Gaussian-spread approximation "
        "(`ceiling_gaussian`), which ignores that clustering, would put it at 1.",
    ]
    notes = [f"- `{gid}`: ceiling n/a: {g['ceiling_why']}." for gid, g in graphs.items() if g.get("ceiling_why")]
    for gid, g in graphs.items():
        c, cg, nt = g["ceiling"], g["ceiling_gaussian"], g["near_tie_share"]
        if c is not None and cg is not None and nt is not None and cg - c > 0.02:
            notes.append(f"- `{gid}`: ratio {_g(g['ratio'])}, Gaussian approximation {cg:.3f}, simulated ceiling "
                         f"{c:.3f}; {100 * nt:.1f}% of its pairs of distinct configs lie within "
                         f"{result['config']['near_tie_widths']} noise widths.")
    if notes:
        lines += ["", *notes]
    lines += ["", f"![Spread against noise]({name}.png)", ""]
    return "\n".join(lines)


def _scatter_collections(ax, pts: list[tuple[str, Mapping]], noise: np.ndarray, spread: np.ndarray,
                         floor: float) -> None:
    """One marker style per collection, flagged or not, with spread or not (drawn at `floor`)."""
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(COLLECTIONS):
        in_collection = np.array([g["collection"] == c for _, g in pts])
        if not in_collection.any():
            continue
        is_flagged = np.array([bool(g["flags"]) for _, g in pts])
        for flat in (False, True):
            for flagged in (False, True):
                m = in_collection & (is_flagged == flagged) & ((spread == 0) == flat)
                if not m.any():
                    continue
                y = np.full(m.sum(), floor) if flat else spread[m]
                label = SHORT[c] + (" (flagged)" if flagged else "") + (", no spread" if flat else "")
                ax.scatter(noise[m], y, s=60 if flagged else 22, marker="v" if flat else "o", label=label,
                           facecolors="none" if flagged else cmap(i), edgecolors=cmap(i),
                           linewidths=1.4 if flagged else 0, alpha=1.0 if flagged else 0.8)


def _annotate_flags(ax, pts: list[tuple[str, Mapping]], noise: np.ndarray, spread: np.ndarray,
                    floor: float) -> None:
    """Name the flags beside each flagged graph (only when there are few graphs)."""
    if len(pts) > 40:
        return
    for (_, g), x, y in zip(pts, noise, spread):
        if g["flags"]:
            ax.annotate(", ".join(g["flags"]), (x, y if y > 0 else floor), fontsize=7, xytext=(6, 4),
                        textcoords="offset points")


def _draw_audit_points(ax, pts: list[tuple[str, Mapping]], thresholds: Mapping) -> None:
    """The graphs' spread against noise on log axes, with the noise-dominated threshold lines."""
    noise = np.array([g["noise"] for _, g in pts])
    spread = np.array([g["spread_std"] for _, g in pts])
    positive = spread[spread > 0]
    floor = min(noise.min(), positive.min(initial=np.inf)) / 10  # where graphs without spread are drawn
    lo, hi = floor / 2, max(noise.max(), spread.max()) * 3  # one range on both axes: the diagonal is at 45 degrees
    _scatter_collections(ax, pts, noise, spread, floor)
    _annotate_flags(ax, pts, noise, spread, floor)
    grid = np.array([lo, hi])
    k = float(thresholds["noise_dominated"])
    ax.plot(grid, grid, color="grey", lw=0.8, ls="--", label="spread = noise")
    ax.plot(grid, k * grid, color="grey", lw=0.8, ls=":", label=f"spread = {k:g} x noise (noise-dominated below)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    ax.grid(alpha=0.3, which="both")


def plot_audit(graphs: Mapping[str, Mapping], thresholds: Mapping, path: Path, dpi: int) -> int:
    """Spread (std of log runtime across unique configs) against noise per graph, log axes.

    Graphs without spread (one unique config) sit on the bottom edge as triangles; graphs
    without a noise estimate (no duplicates) or with zero noise cannot be drawn. Returns the
    number of graphs drawn.
    """
    pts = [(gid, g) for gid, g in graphs.items() if g["noise"]]
    fig, ax = plt.subplots(figsize=(7.2, 5.6))
    if not pts:
        ax.text(0.5, 0.5, "no graph has a noise estimate (no duplicate configs)", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        _draw_audit_points(ax, pts, thresholds)
    ax.set_xlabel("noise: std of log runtime among identical configs")
    ax.set_ylabel("spread: std of log runtime across unique configs")
    ax.set_title(f"Runtime audit: spread against noise ({len(pts)} of {len(graphs)} graphs drawn; "
                 "hollow = flagged)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return len(pts)


def run(cfg: DictConfig) -> dict:
    files = discover(cfg.data, collections=None if cfg.collections is None else list(cfg.collections),
                     splits=list(AUDITED_SPLITS), announce=False)
    tests = discover(cfg.data, collections=None if cfg.collections is None else list(cfg.collections), splits=["test"])
    if tests:
        log.info("skipped %d test file(s): they carry no measured runtimes", len(tests))
    if not files:
        raise DataError(cfg.data, "no train or valid .npz files to audit (test files carry no runtimes)")
    params = per_graph_params(cfg)
    cache = Path(cfg.cache)
    tasks = []
    for f in files:
        out = cache / rel_path(f.collection, f.split, f.stem).with_suffix(".json")
        tasks.append(Task(key=f.id + f"@{f.split}", inputs=[f.path], outputs=[out],
                          args={"src": str(f.path), "split": f.split, "out": str(out),
                                "chunk_configs": int(cfg.chunk_configs), "params": params}))
    h = config_hash(params, str(Path(cfg.data).resolve()), exclude=())
    results = run_tasks(audit_file, tasks, cache, h, jobs=int(cfg.jobs), desc="audit")

    thresholds = OmegaConf.to_container(cfg.thresholds, resolve=True)
    graphs: dict[str, dict] = {}
    for f, t in zip(files, tasks):
        g = dict(results[t.key])
        g.update(collection=f.collection, split=f.split, path=str(f.path), flags=flag_graph(g, thresholds))
        graphs[f.id] = g
    counts = {flag: sum(flag in g["flags"] for g in graphs.values()) for flag in FLAGS}
    out = Path(cfg.out)
    name = cfg.name
    result = {
        "data": str(cfg.data),
        "thresholds": thresholds,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "summary": {"graphs": len(graphs), "flagged": counts, "clean": sum(not g["flags"] for g in graphs.values()),
                    "skipped_test": len(tests)},
        "graphs": graphs,
        "figure": f"{name}.png",
    }
    result["summary"]["drawn"] = plot_audit(graphs, thresholds, out / f"{name}.png", int(cfg.dpi))
    write_text_atomic(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(out / f"{name}.md", _markdown(result, name))
    for gid, g in graphs.items():
        if len(graphs) <= int(cfg.log_graphs) or g["flags"]:
            ceiling = (f"{g['ceiling']:.3f} distinct={g['ceiling_distinct']:.3f}" if g["ceiling_why"] is None
                       else f"n/a ({g['ceiling_why']})")
            log.info("%s: configs=%d unique=%d spread=%.4g noise=%s ratio=%s ceiling=%s flags=%s", gid, g["configs"],
                     g["unique"], g["spread"], _g(g["noise"], ".2e"), _g(g["ratio"]), ceiling,
                     "; ".join(f"{k} ({v})" for k, v in g["flags"].items()) or "-")
    log.info("audited %d graphs: %s, %d unflagged; report written to %s (%s.md, %s.json, %s.png)", len(graphs),
             ", ".join(f"{n} {f}" for f, n in counts.items()), result["summary"]["clean"], out, name, name, name)
    return result


@stage("audit")
def main(cfg: DictConfig) -> dict:
    return run(cfg)["summary"]


if __name__ == "__main__":
    main()
