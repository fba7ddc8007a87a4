"""How far a graph's measured runtimes can be trusted (pure functions on small arrays).

Everything works on the log of the target (layout: config_runtime; tile: config_runtime /
config_runtime_normalizers), so noise is relative: a noise of 1e-5 means measurements of one
config scatter by about 10 parts per million.

Duplicate groups are the configs that share one unique config (a `config_map` from
`features.configs.ConfigDeduper`). A group of n > 1 configs is n measurements of one config;
their spread is measurement noise, the only direct evidence of it in the data.

Noise estimator (`estimate_noise`): for each duplicate group g with n_g members, the sample
variance s_g^2 of its log runtimes (ddof 1, k_g = n_g - 1 degrees of freedom). Under log-normal
noise of width sigma, s_g^2 ~ sigma^2 chi2(k_g) / k_g, whose median is sigma^2 m(k_g) with
m(k) = median(chi2(k)) / k (0.455 for a pair). So z_g = s_g^2 / m(k_g) has median exactly
sigma^2 whatever k_g, and so does any mixture of them: the k-weighted median of the z_g is
median-unbiased for sigma^2 (and its square root for sigma) and consistent as the number of
groups grows. Being a median, it breaks down only when half the duplicate weight is corrupted
(below that, corruption moves it up to a higher quantile of the clean law, not to the corrupted
values), which is what lets `outlier_groups` see corrupted groups against it. The classic pooled
estimate sqrt(sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1)), unbiased for sigma^2 under clean noise
but dragged up by a single corrupted group, is reported beside it (`pooled`).

Ceiling (`noise_ceiling`): the best score any model can expect on the graph when the measured
runtimes carry the estimated noise, by simulation with a fixed seed. The truth of each config
is its unique config's mean log runtime; each config's measurement is re-drawn as truth +
N(0, sigma^2); layout: the mean over draws of Kendall's tau-b between truth and re-draw over all
configs, duplicates included as the metric sees them (what a model that knows every true runtime
scores); tile: the mean of `2 - min(rt[top5 by truth]) /
min(rt)`. Observed means carry noise themselves, so near-equal configs look slightly more
separated than they are: the ceiling leans optimistic, an upper bound rather than a forecast.
Its analytic cousin for Gaussian spread (`gaussian_ceiling`, 2/pi asin(rho)) ignores how the
configs cluster and reads near 1 whenever spread >> noise; the simulation does not, which is
why the two part on real graphs where many distinct configs run within a few noise widths of
each other (`near_tie_share`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.stats import chi2

from models.metrics import TILE_TOP_K, kendall_tau

FLAGS = ("degenerate", "noise-dominated", "inconsistent")


@dataclass
class Groups:
    """Per unique config of one graph (U of them): Shapes (U,).

    count: configs sharing it; mean: mean log target; ss: sum of squared deviations of its
    configs' log targets from `mean`; lo, hi: its smallest and largest log target.
    """

    count: np.ndarray
    mean: np.ndarray
    ss: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def dup(self) -> np.ndarray:
        """(U,) bool: groups with at least two configs (duplicate groups)."""
        return self.count >= 2


def group_stats(config_map: np.ndarray, log_target: np.ndarray) -> Groups:
    """Per-group moments of `log_target` (C,) for `config_map` (C,) int in [0, U).

    Two passes (mean, then squared deviations), so ppm-level spreads of runtimes near 2e10 ns
    keep their digits.
    """
    cmap = np.asarray(config_map, dtype=np.int64)
    x = np.asarray(log_target, dtype=np.float64)
    if cmap.shape != x.shape:
        raise ValueError(f"config_map shape {cmap.shape} does not match log_target shape {x.shape}")
    u = int(cmap.max()) + 1 if cmap.size else 0
    count = np.bincount(cmap, minlength=u)
    if (count == 0).any():
        raise ValueError("config_map skips a unique index")
    mean = np.bincount(cmap, x, minlength=u) / count
    ss = np.bincount(cmap, (x - mean[cmap]) ** 2, minlength=u)
    lo = np.full(u, np.inf)
    hi = np.full(u, -np.inf)
    np.minimum.at(lo, cmap, x)
    np.maximum.at(hi, cmap, x)
    return Groups(count, mean, ss, lo, hi)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, 0.5 * cw[-1])])


@dataclass
class Noise:
    """Noise of one graph, in log-runtime standard deviations (None without duplicate groups)."""

    sigma: float | None  # the robust estimate (module docstring)
    pooled: float | None  # the classic pooled within-group estimate, for comparison
    groups: int  # duplicate groups used
    dof: int  # their degrees of freedom, sum of (n_g - 1)


def estimate_noise(g: Groups) -> Noise:
    """Robust noise estimate from the duplicate groups of `g` (see the module docstring)."""
    dup = g.dup
    k = (g.count[dup] - 1).astype(np.float64)
    if k.size == 0:
        return Noise(None, None, 0, 0)
    s2 = g.ss[dup] / k
    z = s2 / (chi2.median(k) / k)
    return Noise(math.sqrt(_weighted_median(z, k)), math.sqrt(float(g.ss[dup].sum() / k.sum())),
                 int(k.size), int(k.sum()))


def outlier_groups(g: Groups, sigma: float | None, factor: float, min_log_range: float) -> np.ndarray:
    """Unique indices of duplicate groups that disagree far beyond the graph's noise.

    A group is an outlier when its standard deviation (ddof 1) exceeds `factor` x `sigma` AND
    its largest and smallest log runtimes differ by more than `min_log_range` (so a group 10x
    wider than a ppm-level noise, but still a few ppm wide, is no outlier).
    """
    if sigma is None:
        return np.zeros(0, dtype=np.int64)
    dup = np.flatnonzero(g.dup)
    sd = np.sqrt(g.ss[dup] / (g.count[dup] - 1))
    bad = (sd > factor * sigma) & (g.hi[dup] - g.lo[dup] > min_log_range)
    return dup[bad]


def normalizer_check(runtime: np.ndarray, normalizers: np.ndarray) -> dict[str, float]:
    """How far tile normalizers stray from what they should be: the default config's runtime.

    Returns `normalizer_spread` = log(max / min) of the normalizers (one config measured, so
    they should agree) and `normalizer_offset` = the smallest |log(runtime / median normalizer)|
    over the configs (the default config is one of them, so some runtime should match).
    """
    rt = np.asarray(runtime, dtype=np.float64)
    nz = np.asarray(normalizers, dtype=np.float64)
    ref = float(np.median(nz))
    return {"normalizer_spread": float(np.log(nz.max() / nz.min())),
            "normalizer_offset": float(np.min(np.abs(np.log(rt / ref))))}


def near_tie_share(unique_mean: np.ndarray, sigma: float | None, widths: float) -> float | None:
    """Share of pairs of distinct configs whose mean log runtimes lie within `widths` x `sigma`."""
    m = np.sort(np.asarray(unique_mean, dtype=np.float64))
    u = m.size
    if sigma is None or u < 2:
        return None
    upto = np.searchsorted(m, m + widths * sigma, side="right")
    close = np.maximum(upto - np.arange(1, u + 1), 0).sum()
    return float(close / (u * (u - 1) / 2))


def gaussian_ceiling(spread_std: float, sigma: float | None) -> float | None:
    """Expected Kendall tau between X and X + E for Gaussian X (std `spread_std`) and E (std sigma)."""
    if sigma is None or spread_std <= 0:
        return None
    if sigma == 0:
        return 1.0
    rho = spread_std / math.hypot(spread_std, sigma)
    return 2.0 / math.pi * math.asin(rho)


def noise_ceiling(truth: np.ndarray, sigma: float | None, metric: str, draws: int, seed: int,
                  max_configs: int) -> float | None:
    """Simulated best expected score (module docstring); None when it is undefined.

    Args:
        truth: (C,) the true log target of every config (its unique config's mean).
        sigma: noise width in log space.
        metric: `tau` (layout) or `top5` (tile).
        draws: re-draws averaged.
        seed: the generator's seed (the same graph always gets the same ceiling).
        max_configs: tau is taken on a random subset of this many configs at most (a subset's
            tau is an unbiased estimate of the whole graph's).
    """
    t = np.asarray(truth, dtype=np.float64)
    if sigma is None or t.size < 2 or float(t.min()) == float(t.max()):
        return None
    if sigma == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    if metric == "tau":
        if t.size > max_configs:
            t = t[np.sort(rng.choice(t.size, max_configs, replace=False))]
        return float(np.mean([kendall_tau(t, t + sigma * rng.standard_normal(t.size)) for _ in range(draws)]))
    if metric == "top5":
        top = np.argsort(t, kind="stable")[:TILE_TOP_K]
        scores = []
        for _ in range(draws):
            m = t + sigma * rng.standard_normal(t.size)
            scores.append(2.0 - math.exp(float(m[top].min() - m.min())))
        return float(np.mean(scores))
    raise ValueError(f"unknown metric '{metric}' (known: tau, top5)")


def _positive_target(target: np.ndarray) -> np.ndarray:
    """The target as float64; raises `ValueError` unless it is non-empty, positive and finite."""
    target = np.asarray(target, dtype=np.float64)
    if target.size == 0 or (target <= 0).any() or not np.isfinite(target).all():
        raise ValueError("the target must be positive and finite for every config")
    return target


def _worst_group(g: Groups, sigma: float | None) -> dict | None:
    """The duplicate group of the widest scatter (std of its log target), None without noise."""
    dup = np.flatnonzero(g.dup)
    if sigma is None or not dup.size:
        return None
    sd = np.sqrt(g.ss[dup] / (g.count[dup] - 1))
    i = int(np.argmax(sd))
    return {"unique": int(dup[i]), "configs": int(g.count[dup[i]]), "std": float(sd[i]),
            "log_range": float(g.hi[dup[i]] - g.lo[dup[i]]),
            "std_over_noise": float(sd[i] / sigma) if sigma > 0 else None}


def _spread_stats(target: np.ndarray, g: Groups, noise: Noise, outlier_factor: float,
                  outlier_min_log_range: float, near_tie_widths: float) -> dict:
    """How far the target spreads (over the unique configs, and overall) against the noise."""
    sigma = noise.sigma
    spread_std = float(g.mean.std()) if g.count.size > 1 else 0.0
    log_range = float(np.log(target.max() / target.min()))
    outliers = outlier_groups(g, sigma, outlier_factor, outlier_min_log_range)
    return {
        "spread": float(target.max() / target.min()),
        "log_range": log_range,
        "spread_std": spread_std,
        "noise": sigma,
        "noise_pooled": noise.pooled,
        "ratio": spread_std / sigma if sigma else None,  # null: noise unknown (no duplicates) or zero
        "range_ratio": log_range / sigma if sigma else None,
        "outlier_groups": int(outliers.size),
        "worst_group": _worst_group(g, sigma),
        "near_tie_share": near_tie_share(g.mean, sigma, near_tie_widths),
    }


def audit_graph(config_map: np.ndarray, target: np.ndarray, varying: np.ndarray | None, metric: str, *,
                outlier_factor: float, outlier_min_log_range: float, ceiling_draws: int,
                ceiling_max_configs: int, near_tie_widths: float, seed: int,
                runtime: np.ndarray | None = None, normalizers: np.ndarray | None = None) -> dict:
    """Every number of one graph's audit, as plain JSON-ready values (flags come from `flag_graph`).

    Args:
        config_map: (C,) unique config of each config.
        target: (C,) the positive training target (layout runtime; tile runtime / normalizer).
        varying: (W,) bool, per configurable node (tile: per config column) whether it ever
            varies; None when unknown.
        metric: `tau` (layout) or `top5` (tile), the ceiling's metric.
        runtime, normalizers: (C,) tile only, for `normalizer_check`.
    """
    target = _positive_target(target)
    g = group_stats(config_map, np.log(target))
    noise = estimate_noise(g)
    num_unique = int(g.count.size)
    stats = {
        "configs": int(target.size),
        "unique": num_unique,
        "duplicate_groups": noise.groups,
        "duplicate_dof": noise.dof,
        "varying": None if varying is None else int(np.count_nonzero(varying)),
        "width": None if varying is None else int(np.size(varying)),
        **_spread_stats(target, g, noise, outlier_factor, outlier_min_log_range, near_tie_widths),
    }
    stats["ceiling"] = noise_ceiling(g.mean[np.asarray(config_map, dtype=np.int64)], noise.sigma, metric,
                                     ceiling_draws, seed, ceiling_max_configs) if num_unique > 1 else None
    stats["ceiling_metric"] = metric
    stats["ceiling_gaussian"] = gaussian_ceiling(stats["spread_std"], noise.sigma)
    if normalizers is not None:
        stats.update(normalizer_check(runtime, normalizers))
    return stats


def flag_graph(stats: Mapping, thresholds: Mapping) -> dict[str, str]:
    """Flags of one graph (name -> one-line reason) from `audit_graph`'s numbers.

    thresholds: `noise_dominated` (flag when spread_std < this many noise widths),
    `max_outlier_groups` (flag when more outlier groups), `max_noise` (flag when the noise
    itself is wider, in log units), `normalizer_tolerance` (flag tile normalizers that disagree
    among themselves or with every config's runtime by more, in log units; None: no check).
    """
    flags: dict[str, str] = {}
    u = stats["unique"]
    layout = stats["ceiling_metric"] == "tau"
    if layout and stats.get("width") == 0:
        flags["degenerate"] = "no configurable nodes"
    elif layout and stats.get("varying") == 0:
        flags["degenerate"] = f"no configurable node ever varies (all {stats['configs']} configs identical)"
    elif u < 2:
        flags["degenerate"] = f"one unique config (all {stats['configs']} configs identical)"
    elif stats["spread"] == 1.0:
        flags["degenerate"] = f"all {u} unique configs have the same runtime"
    sigma = stats["noise"]
    if "degenerate" not in flags and stats["ratio"] is not None and stats["ratio"] < thresholds["noise_dominated"]:
        flags["noise-dominated"] = (f"runtime spread across unique configs ({stats['spread_std']:.3g}) is "
                                    f"{stats['ratio']:.2g} noise widths ({sigma:.3g}), under {thresholds['noise_dominated']}")
    why = []
    if stats["outlier_groups"] > thresholds["max_outlier_groups"]:
        w = stats["worst_group"]
        widths = "the noise is 0" if w["std_over_noise"] is None else f"{w['std_over_noise']:.3g} noise widths"
        why.append(f"{stats['outlier_groups']} of {stats['duplicate_groups']} duplicate groups disagree beyond "
                   f"the noise (worst: {w['configs']} identical configs {math.expm1(w['log_range']):.3g}x apart, {widths})")
    if sigma is not None and sigma > thresholds["max_noise"]:
        why.append(f"identical configs scatter by {sigma:.3g} in log runtime, over max_noise {thresholds['max_noise']}")
    tol = thresholds.get("normalizer_tolerance")
    if tol is not None and "normalizer_spread" in stats:
        if stats["normalizer_spread"] > tol:
            why.append(f"normalizers disagree among themselves by {stats['normalizer_spread']:.3g} in log, over {tol}")
        if stats["normalizer_offset"] > tol:
            why.append(f"normalizer matches no config's runtime (closest {stats['normalizer_offset']:.3g} off in log, over {tol})")
    if why:
        flags["inconsistent"] = "; ".join(why)
    return flags
