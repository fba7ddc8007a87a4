"""The competition metric, in pure numpy (docs/FORMAT.md, "Metric").

Per graph:
- tile:xla: `2 - min(runtime[top5_predicted]) / min(runtime[all])`, runtime =
  config_runtime / config_runtime_normalizers. 1.0 when the fastest config is among the five
  predicted; lower (down to -inf in principle) the slower the best of the five is.
- layout:*: Kendall's tau-b between the predicted rank and the measured runtime, the
  `scipy.stats.kendalltau` convention (ties counted as tau-b counts them).

Sign convention: a prediction is an ORDER of config indices, fastest first (the order of
`TopConfigs` in a submission row). Position 0 is predicted rank 0; tau is computed between
predicted rank and runtime, so a perfect ranking scores +1 and the exact reverse -1.

Undefined tau: when every ranked config has the same runtime (or fewer than two configs are
ranked) tau-b is 0/0 and scipy returns nan. `kendall_tau` returns nan too, but a graph's
layout score counts such a graph as 0 (the ranking carries no information, neither right nor
wrong), so a collection mean is never nan; `layout_score(..., nan_as=None)` gives the raw nan.

Aggregation: mean over the graphs of a collection, then the plain mean over the collections
present (each collection weighs the same, whatever its number of graphs).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

TILE_TOP_K = 5
UNDEFINED_TAU_SCORE = 0.0  # how a graph with an undefined (nan) tau counts in a mean


def _dense_ranks(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Dense ranks (0, 1, 2, ...; equal values share one) of `a[order]`, which must be sorted."""
    s = a[order]
    return np.cumsum(np.r_[False, s[1:] != s[:-1]], dtype=np.int64)


def _count_inversions(y: np.ndarray) -> int:
    """Pairs i < j with y[i] > y[j] (strictly), for y in [0, m) integers; O(n log m) numpy.

    Radix view: a strict inversion is counted once, at the highest bit where y[i] and y[j]
    differ: there they share every higher bit, y[i] has a 1 and y[j] a 0. Each pass counts, for
    every element whose bit is 0, the earlier elements of its group (same higher bits) whose
    bit is 1, then stably partitions each group by that bit (zeros first), which is the order
    the next, lower bit needs.
    """
    n = y.size
    if n < 2:
        return 0
    y = np.asarray(y, dtype=np.int64)
    bits = int(y.max()).bit_length()
    pos = np.arange(n, dtype=np.int64)
    total = 0
    for b in range(bits - 1, -1, -1):
        bit = (y >> b) & 1
        hi = y >> (b + 1)
        start = np.r_[True, hi[1:] != hi[:-1]]  # y is sorted by hi: groups are contiguous
        starts = np.flatnonzero(start)
        group = np.cumsum(start) - 1
        ones = np.cumsum(bit)
        ones_before = ones - bit - (ones[starts] - bit[starts])[group]  # earlier 1s in the group
        zero = bit == 0
        total += int(ones_before[zero].sum())
        # Stable partition of each group: its zeros, then its ones.
        zeros_before = (pos - starts[group]) - ones_before
        group_zeros = np.add.reduceat(1 - bit, starts)
        new_pos = np.where(zero, starts[group] + zeros_before, starts[group] + group_zeros[group] + ones_before)
        out = np.empty_like(y)
        out[new_pos] = y
        y = out
    return total


def kendall_tau(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Kendall's tau-b of two equal-length vectors, as `scipy.stats.kendalltau(x, y).statistic`.

    O(n log n): 100,000 values take a few tens of milliseconds. Returns nan when either side is
    constant or n < 2 (scipy's behaviour).

    Args:
        x, y: (n,) numbers; ties allowed on both sides.
    """
    x = np.asarray(x).ravel()
    y = np.asarray(y).ravel()
    if x.size != y.size:
        raise ValueError(f"kendall_tau: lengths differ ({x.size} vs {y.size})")
    n = x.size
    if n < 2:
        return float("nan")
    # Sort by x, ties by y (scipy: argsort on y, then a stable sort on x), as dense ranks.
    perm = np.lexsort((y, x))
    xr = _dense_ranks(x, perm)
    yr_sorted = np.argsort(y[perm], kind="stable")
    yr = np.empty(n, dtype=np.int64)
    yr[yr_sorted] = _dense_ranks(y[perm], yr_sorted)
    # Discordant pairs: x strictly increasing and y strictly decreasing. Inside an x-tie y does
    # not decrease (ties were sorted by y), so they are exactly the strict inversions of yr.
    dis = _count_inversions(yr)
    joint = np.r_[True, (xr[1:] != xr[:-1]) | (yr[1:] != yr[:-1]), True]
    cnt = np.diff(np.flatnonzero(joint))
    ntie = int((cnt * (cnt - 1) // 2).sum())
    cx = np.bincount(xr)
    cy = np.bincount(yr)
    xtie = int((cx * (cx - 1) // 2).sum())
    ytie = int((cy * (cy - 1) // 2).sum())
    tot = n * (n - 1) // 2
    if xtie == tot or ytie == tot:
        return float("nan")
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    tau = con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    return float(min(1.0, max(-1.0, tau)))


def ranking(scores: np.ndarray | Sequence[float]) -> np.ndarray:
    """Config indices fastest first: ascending score, equal scores by index (a submission's order)."""
    return np.argsort(np.asarray(scores), kind="stable")


def tile_order(scores: np.ndarray | Sequence[float], k: int = TILE_TOP_K) -> np.ndarray:
    """`ranking` with its first `k` places given to configs of distinct scores.

    The tile score counts only the fastest of the first `k` configs. Configs a model scores
    exactly alike are copies of one config (real tile files repeat configs: one sample file
    lists a single config 25 times) or configs the model cannot tell apart; listing a second
    copy re-measures a config already listed, while the next distinct config is a second chance.
    So the first copy of each of the `k` lowest distinct scores leads, then every other config in
    `ranking` order. Example: `tile_order([1, 1, 1, 2, 3], k=3) == [0, 3, 4, 1, 2]`.
    """
    order = ranking(scores)
    s = np.asarray(scores)[order]
    lead = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])[:k]  # first of each run of equal scores
    rest = np.ones(order.size, dtype=bool)
    rest[lead] = False
    return np.concatenate([order[lead], order[rest]])


TILE_COPIES = ("once", "all")


def config_order(kind: str, scores: np.ndarray | Sequence[float], k: int = TILE_TOP_K, tile_copies: str = "once") -> np.ndarray:
    """The order a submission lists for a graph of `kind`: `tile_order` for tile, `ranking` for
    layout. Every score of a model (validation, early stopping, ensemble fits, report,
    submission) goes through it, so what is measured is what is submitted. `tile_copies="all"`
    (the report's and the submission's `tile_copies=all`) ranks tile configs plainly instead,
    copies of one config side by side."""
    if tile_copies not in TILE_COPIES:
        raise ValueError(f"tile_copies={tile_copies} is not one of {', '.join(TILE_COPIES)}")
    return tile_order(scores, k) if kind == "tile" and tile_copies == "once" else ranking(scores)


def mean_ranks(values: np.ndarray | Sequence[float], sizes: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """(n,) float64 0-based rank of each value, ascending; equal values share their mean rank.

    With `sizes`, the values are contiguous groups of those sizes (the graphs of a table, in row
    order) and each is ranked within its own group only. Mean ranks (not first-come) keep
    duplicated configs from looking better or worse than each other.

    Example: `mean_ranks([3, 1, 3, 2]) == [2.5, 0, 2.5, 1]`.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    sizes = np.array([n], dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64)
    if int(sizes.sum()) != n:
        raise ValueError(f"mean_ranks: sizes sum to {int(sizes.sum())}, not to the {n} values")
    if n == 0:
        return np.zeros(0)
    g = np.repeat(np.arange(sizes.size), sizes)
    order = np.lexsort((v, g))
    gs, vs = g[order], v[order]
    pos = np.arange(n, dtype=np.float64) - np.r_[0, np.cumsum(sizes)[:-1]][gs]  # position in the group
    run = np.cumsum(np.r_[True, (gs[1:] != gs[:-1]) | (vs[1:] != vs[:-1])]) - 1  # runs of equal values
    out = np.empty(n)
    out[order] = (np.bincount(run, pos) / np.bincount(run))[run]
    return out


def order_to_rank(order: np.ndarray | Sequence[int], num_configs: int | None = None) -> np.ndarray:
    """Predicted rank of each config from an order, fastest first: `rank[order[k]] = k`.

    Configs not in `order` get rank -1. Shapes: order (k,) -> rank (num_configs,).
    """
    order = np.asarray(order, dtype=np.int64)
    n = int(order.max()) + 1 if num_configs is None else num_configs
    rank = np.full(n, -1, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank


def tile_score(
    order: np.ndarray | Sequence[int],
    runtime: np.ndarray,
    normalizers: np.ndarray | None = None,
    k: int = TILE_TOP_K,
) -> float:
    """`2 - min(runtime[order[:k]]) / min(runtime)` for one tile graph; 1.0 is perfect.

    Args:
        order: predicted config indices, fastest first; only the first `k` count.
        runtime: (C,) measured runtimes of all configs.
        normalizers: (C,) `config_runtime_normalizers`, or None when `runtime` is already
            normalized. runtime / normalizer is what is compared.
    """
    r = np.asarray(runtime, dtype=np.float64)
    if normalizers is not None:
        r = r / np.asarray(normalizers, dtype=np.float64)
    top = np.asarray(order, dtype=np.int64)[:k]
    if top.size == 0:
        raise ValueError("tile_score: empty order")
    best = r.min()
    if not best > 0:
        raise ValueError("tile_score: runtimes must be positive")
    return float(2.0 - r[top].min() / best)


def layout_score(
    order: np.ndarray | Sequence[int],
    runtime: np.ndarray,
    nan_as: float | None = UNDEFINED_TAU_SCORE,
) -> float:
    """Kendall's tau-b between the predicted order (fastest first) and measured runtimes.

    Only the configs listed in `order` are compared (a full permutation compares all); +1 when
    the listed order sorts them by runtime ascending. An undefined tau (all listed runtimes
    equal, or fewer than two listed) returns `nan_as` (0 by default; None keeps nan).

    Args:
        order: (k,) distinct config indices, fastest first.
        runtime: (C,) measured runtimes.
    """
    order = np.asarray(order, dtype=np.int64)
    r = np.asarray(runtime)[order]
    tau = kendall_tau(np.arange(order.size), r)
    if np.isnan(tau) and nan_as is not None:
        return float(nan_as)
    return tau


def graph_score(kind: str, order: np.ndarray | Sequence[int], runtime: np.ndarray, normalizers: np.ndarray | None = None) -> float:
    """The per-graph score of a `tile` or `layout` graph (see `tile_score`, `layout_score`)."""
    if kind == "tile":
        return tile_score(order, runtime, normalizers)
    if kind == "layout":
        return layout_score(order, runtime)
    raise ValueError(f"unknown kind '{kind}' (tile or layout)")


def collection_means(per_graph: Mapping[str, float], collection_of: Mapping[str, str]) -> dict[str, float]:
    """Mean graph score per collection, over the graphs in `per_graph`.

    Args:
        per_graph: graph ID -> score (no nan: see `UNDEFINED_TAU_SCORE`).
        collection_of: graph ID -> collection name.
    """
    sums: dict[str, list[float]] = {}
    for gid, s in per_graph.items():
        sums.setdefault(collection_of[gid], []).append(float(s))
    return {c: float(np.mean(v)) for c, v in sums.items()}


def overall_score(collection_scores: Mapping[str, float] | Iterable[float]) -> float:
    """Plain mean over the collections present (nan when none is)."""
    vals = list(collection_scores.values() if isinstance(collection_scores, Mapping) else collection_scores)
    return float(np.mean(vals)) if vals else float("nan")
