"""The validation report's figures: scores per collection and model, predicted vs measured
rank, best of the model's top K. Invariant: every figure is written atomically as a PNG and
closed (no figure outlives its call); colours follow the order of the models given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, CI or Kaggle
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models import metrics  # noqa: E402
from pipeline.core.fsutil import atomic_path  # noqa: E402
from pipeline.io.catalog import COLLECTIONS, SHORT, split_id  # noqa: E402

CEILING_LABEL = "noise ceiling"


def _colors(models: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _save(fig, path: Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _score_of(scores: dict, column: str) -> float | None:
    """A model's score in a collection, or its overall one; None where it has none."""
    return scores["score"] if column == "overall" else scores["collections"].get(column)


def plot_scores(scores: dict[str, dict], graphs: dict[str, int], path: Path, dpi: int,
                ceiling: dict | None = None) -> None:
    models = list(scores)
    groups = [c for c in COLLECTIONS if c in graphs] + ["overall"]
    colors = _colors(models)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(min(14.0, 2.5 + len(groups) * (0.5 + 0.35 * len(models))), 4.6))
    x = np.arange(len(groups))
    for i, m in enumerate(models):
        vals = [_score_of(scores[m], c) for c in groups]
        vals = [np.nan if v is None else v for v in vals]  # a collection the model does not serve: no bar
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=m, color=colors[m])
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=7, padding=2)
    if ceiling is not None:  # a dashed line over each group: the best any ranking can reach
        label = CEILING_LABEL
        for j, c in enumerate(groups):
            v = ceiling["score"] if c == "overall" else ceiling["collections"].get(c)
            if v is not None:
                ax.hlines(v, j - 0.45, j + 0.45, color="black", lw=1.4, ls="--", label=label)
                label = None
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(len(groups) - 1.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [f"{SHORT.get(c, c)}\n({graphs[c]} graphs)" if c in graphs else "overall\n(mean)" for c in groups])
    ax.set_ylabel("score (higher is better)")
    lo = min(0.0, *(v for m in models for c in groups[:-1] if (v := _score_of(scores[m], c)) is not None))
    ax.set_ylim(lo - 0.1 if lo < 0 else 0, 1.12)
    ax.set_title("Validation score per collection\n(tile: 2 - best-of-top-5 slowdown; layout: Kendall tau)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="model", frameon=False)
    _save(fig, path, dpi)


def plot_ranks(predictions: dict[str, dict], runtimes: Mapping[str, np.ndarray], graph_ids: list[str],
               per_graph: dict[str, dict], path: Path, dpi: int, max_points: int) -> None:
    models = list(predictions)
    colors = _colors(models)
    rows, cols = len(models), len(graph_ids)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.6, 2.7 * rows + 0.6), squeeze=False)
    for j, gid in enumerate(graph_ids):
        r = runtimes[gid]
        truth = metrics.mean_ranks(r)  # equal runtimes share a rank: duplicated configs are no mistake
        # evenly spaced along the measured order: the whole range stays visible on big graphs
        keep = np.argsort(truth, kind="stable")[np.unique(np.linspace(0, r.size - 1, min(r.size, max_points)).astype(int))]
        collection, stem = split_id(gid)
        for i, m in enumerate(models):
            ax = axes[i, j]
            if gid not in per_graph[m]:  # a collection the model does not serve
                ax.axis("off")
                continue
            pred = metrics.order_to_rank(metrics.ranking(predictions[m][gid]), r.size)
            ax.scatter(pred[keep], truth[keep], s=6, alpha=0.5, color=colors[m], linewidths=0)
            ax.plot([0, r.size - 1], [0, r.size - 1], color="grey", lw=0.8, ls="--")
            ax.set_xlim(-0.5, r.size - 0.5)
            ax.set_ylim(-0.5, r.size - 0.5)
            label = "top-5 score" if collection.startswith("tile") else "tau"
            ax.text(0.03, 0.97, f"{m}\n{label} {per_graph[m][gid]:.2f}", transform=ax.transAxes, va="top",
                    fontsize=8, bbox=dict(facecolor="white", alpha=0.8, lw=0))
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(f"{SHORT.get(collection, collection)}\n{stem[:22]} ({r.size} configs)", fontsize=8)
            if i == rows - 1:
                ax.set_xlabel("predicted rank", fontsize=8)
            if j == 0:
                ax.set_ylabel("measured rank", fontsize=8)
    fig.suptitle("Predicted vs measured rank (0 = fastest; the dashed diagonal is a perfect ranking)", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)


def plot_top_k(slowdown: dict[str, dict], collections: list[str], k: int, path: Path, dpi: int) -> None:
    models = list(slowdown)
    colors = _colors(models)
    panels = collections + ["all"]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows + 0.5), squeeze=False)
    ks = np.arange(1, k + 1)
    for idx, c in enumerate(panels):
        ax = axes[idx // cols, idx % cols]
        for m in models:
            if c in slowdown[m]:
                ax.plot(ks, slowdown[m][c], color=colors[m], lw=1.6, label=m, marker="o", ms=2.5)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= k]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_title("all graphs" if c == "all" else SHORT.get(c, c), fontsize=9)
        if idx // cols == rows - 1 or idx + cols >= len(panels):
            ax.set_xlabel("K (best of the model's top K)", fontsize=8)
        if idx % cols == 0:
            ax.set_ylabel("best runtime found / true best", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    for idx in range(len(panels), rows * cols):
        axes[idx // cols, idx % cols].axis("off")
    axes[0, 0].legend(fontsize=8, title="model", title_fontsize=8)
    fig.suptitle("Best-of-top-K slowdown (1.0 = the fastest config is among the model's top K)", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)
