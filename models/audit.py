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

Ceiling (`audit_graph`'s `ceiling` and `ceiling_distinct`): an upper bound of the score any
model can expect on the graph under the noise the data shows, by simulation with a fixed seed
(`simulate_ceiling`): the expected score of an oracle that knows every true runtime, against
re-measured runtimes, scored exactly as a report scores the graph: `ceiling` over every config,
copies included (`pipeline.evaluate`, the validation report), `ceiling_distinct` over the
distinct configs against the fastest of their copies (`pipeline.transductive`, as `extract
dedup=min`). Those differ: duplicates crowd where configs nearly tie, so counting every copy
weighs the near ties (coin tosses) far more than scoring each distinct config once does, and
the fastest of n copies carries less noise than one measurement. The first estimator scored
every copy with one noise width for the whole graph; on an AlexNet graph of xla:random (27,785
of 47,712 configs in duplicate groups, all within 0.3% of the fastest runtime) that put the
ceiling at 0.818 while four models reached 0.841-0.849 on held-out distinct configs
(`pipeline.tools.ceiling_check` reproduces it on a generated graph of that shape).
Why it bounds, each step erring upward: the truth of a config is its copies' mean (one
measurement when alone), so near-equal configs look more separated than they are; the noise is
local to runtime (`local_noise`: windows of duplicate groups along the log target, each a lower
confidence bound of its noise), since noise can differ with runtime and sampling error must not
inflate it; configs that no window reaches count as noiseless (`config_noise`); the better of
two oracles counts for distinct configs (the true order, and the true order shifted by each
config's expected fastest-of-n, which a model could learn). It is n/a with a reason
(`ceiling_support`) when the duplicates cannot support it: no or too few duplicate groups, or
duplicates covering too small a share of the pairs of configs within noise reach (the only
pairs noise can reorder; `noise_coverage`), as when all duplicates sit in one runtime region and
configs tie elsewhere. Its analytic cousin for Gaussian spread (`gaussian_ceiling`, 2/pi
asin(rho)) ignores how the configs cluster and reads near 1 whenever spread >> noise; the
simulation does not, which is why the two part on real graphs where many distinct configs run
within a few noise widths of each other (`near_tie_share`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.stats import binom, chi2, norm

from models import metrics
from models.metrics import TILE_TOP_K

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


@dataclass
class LocalNoise:
    """Noise as a function of runtime, from duplicate groups (W windows along the log target).

    The duplicate groups, sorted by mean log target, are cut into consecutive windows of at
    least `window_dof` degrees of freedom each (the last takes the remainder; fewer in all make
    one window). Per window: its groups' span of mean log target [lo, hi] and `sigma`, a lower
    confidence bound of its noise (`noise_lower_bound`). Shapes (W,); empty without duplicate
    groups. Real graphs need the windows: a file may hold duplicates only where configs nearly
    tie (one AlexNet graph: every duplicate within 0.3% of its fastest runtime), and noise that
    differs with runtime is no single number.
    """

    lo: np.ndarray
    hi: np.ndarray
    sigma: np.ndarray
    groups: int
    dof: int


def noise_lower_bound(g: Groups, confidence: float) -> float:
    """A lower bound of the noise width of `g`'s duplicate groups at `confidence` (one-sided).

    Each group's z_g = s_g^2 / m(k_g) (`estimate_noise`) has median exactly sigma^2, so the
    number of groups with z_g under sigma^2 is Binomial(G, 1/2) whatever the group sizes; its
    j-th smallest z_g, j the binomial's (1 - confidence) quantile, lies under sigma^2 with
    probability at least `confidence` (0 when G is too small for any j). Distribution-free
    given the chi-square law of each group, and as robust as the median: corrupted groups only
    push z_g up.
    """
    dup = g.dup
    k = (g.count[dup] - 1).astype(np.float64)
    z = np.sort(g.ss[dup] / k / (chi2.median(k) / k))
    j = int(binom.ppf(1.0 - confidence, z.size, 0.5))
    return math.sqrt(float(z[j - 1])) if j >= 1 else 0.0


def local_noise(g: Groups, window_dof: int, confidence: float) -> LocalNoise:
    """Per-window noise bounds of `g`'s duplicate groups (see `LocalNoise`)."""
    dup = np.flatnonzero(g.dup)
    dup = dup[np.argsort(g.mean[dup], kind="stable")]
    k = g.count[dup] - 1
    if not dup.size:
        empty = np.zeros(0)
        return LocalNoise(empty, empty, empty, 0, 0)
    per = max(1, int(window_dof))
    window = np.minimum((np.cumsum(k) - 1) // per, max(0, int(k.sum()) // per - 1))
    lo, hi, sigma = [], [], []
    for w in range(int(window.max()) + 1):
        members = dup[window == w]
        sub = Groups(g.count[members], g.mean[members], g.ss[members], g.lo[members], g.hi[members])
        lo.append(float(g.mean[members].min()))
        hi.append(float(g.mean[members].max()))
        sigma.append(noise_lower_bound(sub, confidence))
    return LocalNoise(np.array(lo), np.array(hi), np.array(sigma), int(dup.size), int(k.sum()))


def config_noise(ln: LocalNoise, mean: np.ndarray, margin_widths: float) -> tuple[np.ndarray, np.ndarray]:
    """(U,) noise of each unique config of mean log target `mean` (U,), and (U,) bool whether
    duplicates cover it.

    Windows span disjoint stretches [lo, hi] of the log target (their groups are consecutive in
    it); a config inside one gets its sigma. A config between two windows, or beyond the last,
    is covered by a window whose stretch it lies within `margin_widths` of that window's sigma
    from, and gets the least sigma of those; a config no window reaches gets 0 and is
    uncovered. Both choices can only raise the ceiling: a noiseless config is ordered
    perfectly, so noise nobody measured never pulls the ceiling under what the data allows.
    """
    m = np.asarray(mean, dtype=np.float64)
    sigma = np.zeros(m.size)
    covered = np.zeros(m.size, dtype=bool)
    if not ln.sigma.size:
        return sigma, covered
    left = np.searchsorted(ln.lo, m, side="right") - 1  # the last window starting at or below m
    inside = (left >= 0) & (m <= ln.hi[np.maximum(left, 0)])
    sigma[inside], covered[inside] = ln.sigma[left[inside]], True
    best = np.full(m.size, np.inf)
    below = np.maximum(left, 0)  # the window under m reaches up to hi + margin
    reach = (left >= 0) & ~inside & (m <= ln.hi[below] + margin_widths * ln.sigma[below])
    best[reach] = ln.sigma[below[reach]]
    above = np.minimum(left + 1, ln.sigma.size - 1)  # the window over m reaches down to lo - margin
    reach = (left + 1 < ln.sigma.size) & ~inside & (m >= ln.lo[above] - margin_widths * ln.sigma[above])
    best[reach] = np.minimum(best[reach], ln.sigma[above[reach]])
    gap = ~inside & np.isfinite(best)
    sigma[gap], covered[gap] = best[gap], True
    return sigma, covered


def _near_pairs(mean: np.ndarray, reach: float) -> int:
    """Pairs of values of `mean` at most `reach` apart."""
    m = np.sort(mean)
    return int(np.maximum(np.searchsorted(m, m + reach, side="right") - np.arange(1, m.size + 1), 0).sum())


def noise_coverage(mean: np.ndarray, covered: np.ndarray, reach: float) -> float:
    """Share of the pairs of unique configs within `reach` in mean log target (the pairs noise
    could reorder) whose two configs are both covered by duplicates; 1 when there is no such pair."""
    m = np.asarray(mean, dtype=np.float64)
    near = _near_pairs(m, reach)
    return 1.0 if near == 0 else _near_pairs(m[covered], reach) / near


def min_normal_mean(n: np.ndarray) -> np.ndarray:
    """E[min of n independent standard normals] for each n >= 1 (0 for 1, -0.564 for 2), by quadrature."""
    n = np.asarray(n, dtype=np.int64)
    x = np.linspace(-9.0, 9.0, 6001)
    dx = x[1] - x[0]
    out = {}
    for k in np.unique(n):
        out[int(k)] = -float(np.sum(x * k * norm.pdf(x) * norm.cdf(x) ** (k - 1)) * dx)
    return np.array([out[int(k)] for k in n], dtype=np.float64)


SCORINGS = ("configs", "distinct")


def simulate_ceiling(mean: np.ndarray, sigma: np.ndarray, count: np.ndarray, config_map: np.ndarray, metric: str,
                     scoring: str, draws: int, seed: int, max_configs: int, fraction: float = 1.0) -> float:
    """Expected score of an oracle that knows every true runtime, scored as the reports score.

    Each unique config u has true log target `mean[u]`, noise `sigma[u]` (in log) and `count[u]`
    measured copies; `config_map` (C,) gives each config's unique config. A draw re-measures
    every copy as mean + sigma N(0, 1), then scores:
    - `configs` (`pipeline.evaluate`, `pipeline.report`): every config, copies included; the
      oracle's order is the true log target, copies side by side by index (`metrics.ranking`),
      layout: Kendall tau-b of that order against the draw; tile: the top-5 score, the better
      in expectation of listing copies or each config once (`metrics.tile_order`).
    - `distinct` (`pipeline.transductive`): each unique config once against the fastest of its
      copies (the min of `count` draws, as `extract dedup=min`); tile: on a random `fraction`
      of the unique configs per draw (the held-out share). The ceiling is the better in
      expectation of two oracles: ranking by the true runtime, and by the true runtime shifted
      by the expected minimum of its copies (`min_normal_mean`), which a model could learn when
      how often a config was measured follows from its features.
    tau is taken on a random subset of at most `max_configs` configs per draw (a subset's tau
    is an unbiased estimate of the whole's, up to tau-b's tie correction). Seeded by `seed`.
    """
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring '{scoring}' (known: {', '.join(SCORINGS)})")
    if metric not in ("tau", "top5"):
        raise ValueError(f"unknown metric '{metric}' (known: tau, top5)")
    mean = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    count = np.asarray(count, dtype=np.int64)
    rng = np.random.default_rng(seed)

    def score(keys: list[np.ndarray], m: np.ndarray) -> list[float]:
        if metric == "tau":
            return [metrics.layout_score(metrics.ranking(k), m) for k in keys]
        r = np.exp(m - m.min())
        return [metrics.tile_score(o, r) for k in keys for o in (metrics.ranking(k), metrics.tile_order(k))]

    scores = []
    if scoring == "configs":
        cmap = np.asarray(config_map, dtype=np.int64)
        for _ in range(draws):
            c = cmap
            if metric == "tau" and c.size > max_configs:
                c = c[np.sort(rng.choice(c.size, max_configs, replace=False))]
            scores.append(score([mean[c]], mean[c] + sigma[c] * rng.standard_normal(c.size)))
    else:
        starts = np.r_[0, np.cumsum(count)[:-1]]
        shifted = mean + sigma * min_normal_mean(count)
        u = mean.size
        keep = min(u, max_configs) if metric == "tau" else min(u, max(TILE_TOP_K + 1, int(round(fraction * u))))
        for _ in range(draws):
            fastest = np.minimum.reduceat(rng.standard_normal(int(count.sum())), starts)
            m = mean + sigma * fastest
            s = np.arange(u) if keep >= u else np.sort(rng.choice(u, keep, replace=False))
            scores.append(score([mean[s], shifted[s]], m[s]))
    return float(np.max(np.mean(scores, axis=0)))


def ceiling_support(g: Groups, ln: LocalNoise, coverage: float | None, min_groups: int,
                    min_coverage: float) -> str | None:
    """Why the duplicates cannot support a ceiling for `g` (one line), or None when they can."""
    if g.count.size < 2:
        return "one unique config"
    if float(g.mean.min()) == float(g.mean.max()):
        return "every unique config has the same runtime"
    if ln.groups == 0:
        return "no duplicate configs: the noise is unknown"
    if ln.groups < min_groups:
        return f"{ln.groups} duplicate group(s), under min_noise_groups={min_groups}: too few to estimate the noise"
    if coverage is not None and coverage < min_coverage:
        return (f"duplicates (runtimes {math.exp(ln.lo.min()):.4g}..{math.exp(ln.hi.max()):.4g}) cover "
                f"{100 * coverage:.0f}% of the pairs of configs within noise reach, under min_noise_coverage="
                f"{min_coverage:g}: the noise of the rest is unknown")
    return None


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
                ceiling_max_configs: int, near_tie_widths: float, seed: int, noise_window_dof: int,
                noise_confidence: float, min_noise_groups: int, min_noise_coverage: float, held_out_fraction: float = 1.0,
                runtime: np.ndarray | None = None, normalizers: np.ndarray | None = None) -> dict:
    """Every number of one graph's audit, as plain JSON-ready values (flags come from `flag_graph`).

    Args:
        config_map: (C,) unique config of each config.
        target: (C,) the positive training target (layout runtime; tile runtime / normalizer).
        varying: (W,) bool, per configurable node (tile: per config column) whether it ever
            varies; None when unknown.
        metric: `tau` (layout) or `top5` (tile), the ceiling's metric.
        noise_window_dof, noise_confidence, min_noise_groups, min_noise_coverage: the local
            noise (`local_noise`) and when it supports a ceiling (`ceiling_support`).
        held_out_fraction: share of the unique configs the transductive check scores (tile's
            `ceiling_distinct` depends on it; tau's does not).
        runtime, normalizers: (C,) tile only, for `normalizer_check`.

    The ceilings: `ceiling` as `pipeline.evaluate` and the report score a graph (every config),
    `ceiling_distinct` as the transductive check does (distinct configs against their fastest
    copy); both None with the reason in `ceiling_why` when the duplicates cannot support them.
    """
    target = _positive_target(target)
    cmap = np.asarray(config_map, dtype=np.int64)
    g = group_stats(cmap, np.log(target))
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
    ln = local_noise(g, noise_window_dof, noise_confidence)
    sigma, covered = config_noise(ln, g.mean, near_tie_widths)
    coverage = noise_coverage(g.mean, covered, near_tie_widths * float(ln.sigma.max())) if ln.groups else None
    why = ceiling_support(g, ln, coverage, min_noise_groups, min_noise_coverage)
    args = (g.mean, sigma, g.count, cmap, metric)
    sim = (ceiling_draws, seed, ceiling_max_configs)
    stats.update({
        "noise_windows": int(ln.sigma.size),
        "noise_local_min": float(ln.sigma.min()) if ln.groups else None,
        "noise_local_max": float(ln.sigma.max()) if ln.groups else None,
        "noise_coverage": coverage,
        "ceiling": None if why else simulate_ceiling(*args, "configs", *sim),
        "ceiling_distinct": None if why else simulate_ceiling(*args, "distinct", *sim, fraction=held_out_fraction),
        "ceiling_why": why,
        "ceiling_metric": metric,
        "ceiling_gaussian": gaussian_ceiling(stats["spread_std"], noise.sigma),
    })
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
