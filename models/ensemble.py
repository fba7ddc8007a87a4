"""Per-collection blending of model scores (pure): normalization, seed averaging, weight fitting.

Scores of different models live on different scales (a cost in bytes, a lambdarank margin, a
GNN logit), so each graph's scores are first mapped to [0, 1] (`normalize`): `rank` (average
rank / (C - 1): only the order counts, robust to outliers) or `minmax` (keeps the spacing, so a
confident gap counts more). The blend is the weighted sum of the normalized scores, lower =
predicted faster, as every score in the pipeline.

`fit_weights` searches the simplex of non-negative weights summing to 1 for the best
collection mean of the competition metric (`models.metrics`): first a grid with step
`1/steps` whose first points are the one-hot weights (each member alone), then a coordinate
search moving weight between pairs of members with ever finer steps, taking only strict
improvements. Hence the fitted blend scores at least as well as the best single member on the
data it was fitted on, by construction.

`Blender` holds one choice of all this (normalization, method, search knobs): the object a config
builds (conf/ensemble.yaml `blender`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from models import metrics

NORMALIZERS = ("rank", "minmax")
Preds = Mapping[str, np.ndarray]  # graph ID -> (C,) scores by original config index


def normalize(scores: np.ndarray, how: str = "rank") -> np.ndarray:
    """(C,) scores -> (C,) in [0, 1], same order; equal scores stay equal (0 for C = 1 or
    constant scores)."""
    s = np.asarray(scores, dtype=np.float64)
    c = s.size
    if how == "rank":
        if c < 2:
            return np.zeros(c)
        return metrics.mean_ranks(s) / (c - 1)
    if how == "minmax":
        lo, hi = (s.min(), s.max()) if c else (0.0, 0.0)
        return (s - lo) / (hi - lo) if hi > lo else np.zeros(c)
    raise ValueError(f"unknown normalization '{how}' ({' or '.join(NORMALIZERS)})")


def normalize_all(preds: Preds, how: str = "rank") -> dict[str, np.ndarray]:
    return {gid: normalize(s, how) for gid, s in preds.items()}


def average_seeds(runs: Sequence[Preds], how: str = "rank") -> dict[str, np.ndarray]:
    """Mean of several runs' per-graph normalized scores (seed averaging); one run is returned
    normalized. Every run must cover the same graphs with the same config counts.

    With `rank`, configs whose mean ranks tie but whose scores differ are told apart by the mean
    of their min-max normalized scores, at a weight too small to reorder distinct mean ranks:
    equal scores mean copies of one config to the tile order (`metrics.tile_order`), and mean
    ranks tie far more often than the runs' own scores do."""
    if not runs:
        raise ValueError("average_seeds: no runs")
    ids = set(runs[0])
    for r in runs[1:]:
        if set(r) != ids:
            raise ValueError("average_seeds: runs cover different graphs")
    out = {}
    for gid in runs[0]:
        arrs = [normalize(r[gid], how) for r in runs]
        if len({a.size for a in arrs}) != 1:
            raise ValueError(f"average_seeds: {gid}: runs have different config counts")
        out[gid] = np.mean(arrs, axis=0)
        if how == "rank" and len(runs) > 1 and out[gid].size > 1:
            eps = 0.25 / ((out[gid].size - 1) * len(runs))  # below half the smallest step between distinct mean ranks
            out[gid] = out[gid] + eps * np.mean([normalize(r[gid], "minmax") for r in runs], axis=0)
    return out


def blend(members: Mapping[str, Preds], weights: Mapping[str, float], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """`sum_m weights[m] * members[m][gid]` for every gid of `ids` (members with weight 0 may
    lack a graph)."""
    used = [(m, float(w)) for m, w in weights.items() if w != 0]
    if not used:
        raise ValueError("blend: every weight is zero")
    out = {}
    for gid in ids:
        acc = used[0][1] * members[used[0][0]][gid]
        for m, w in used[1:]:
            acc = acc + w * members[m][gid]
        out[gid] = acc
    return out


def graph_scores(kind: str, preds: Preds, runtimes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The metric of every graph of `runtimes` (a `tile` or `layout` collection) for `preds`
    (lower = faster; ties broken by config index, as in a submission)."""
    return {gid: metrics.graph_score(kind, metrics.config_order(kind, preds[gid]), r) for gid, r in runtimes.items()}


def collection_score(kind: str, preds: Preds, runtimes: Mapping[str, np.ndarray]) -> float:
    """Mean graph metric over `runtimes`' graphs: what the competition scores per collection."""
    s = graph_scores(kind, preds, runtimes)
    return float(np.mean(list(s.values()))) if s else float("nan")


def simplex_grid(m: int, steps: int) -> np.ndarray:
    """(K, m) weights >= 0 summing to 1, multiples of 1/steps; the m one-hots come first (in
    member order), so a search that keeps the first best never loses to a single member."""
    if m < 1 or steps < 1:
        raise ValueError("simplex_grid: need m >= 1 and steps >= 1")
    pts = [np.eye(m)[i] for i in range(m)]
    for c in itertools.product(range(steps + 1), repeat=m - 1):
        if sum(c) <= steps:
            w = np.array(list(c) + [steps - sum(c)], dtype=np.float64) / steps
            if np.count_nonzero(w) > 1:
                pts.append(w)
    return np.stack(pts)


def fit_weights(kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray],
                steps: int = 10, refine: int = 2) -> dict:
    """Weights maximizing the collection mean metric of the blend on `runtimes`' graphs.

    Args:
        kind: `tile` or `layout`.
        members: name -> per-graph NORMALIZED scores covering every graph of `runtimes`.
        runtimes: graph ID -> (C,) measured runtimes (tile ones divided by their normalizers).
        steps: grid resolution (weights are multiples of 1/steps).
        refine: rounds of coordinate search after the grid, each halving the step.

    Returns `{"weights": {name: w}, "score": blend score, "members": {name: score alone}}`.
    """
    names = list(members)
    ids = list(runtimes)

    def score(w: np.ndarray) -> float:
        return collection_score(kind, blend(members, dict(zip(names, w)), ids), runtimes)

    grid = simplex_grid(len(names), steps)
    single = {}
    best_w, best = grid[0], -np.inf
    for i, w in enumerate(grid):
        s = score(w)
        if i < len(names):
            single[names[i]] = s
        if s > best:
            best_w, best = w, s
    delta = 1.0 / steps
    for _ in range(refine if len(names) > 1 else 0):
        delta /= 2
        improved = True
        while improved:
            improved = False
            for i, j in itertools.permutations(range(len(names)), 2):
                if best_w[j] < delta - 1e-12:
                    continue
                w = best_w.copy()
                w[i] += delta
                w[j] = max(0.0, w[j] - delta)
                s = score(w)
                if s > best:
                    best_w, best, improved = w, s, True
    return {"weights": {n: float(w) for n, w in zip(names, best_w)}, "score": float(best), "members": single}


METHODS = ("search", "shrink", "equal", "best")


def method_weights(method: str, kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray],
                   steps: int = 10, refine: int = 2, shrink: float = 0.5) -> dict[str, float]:
    """Blend weights of one fitting method on `runtimes`' graphs:
    - `search`: `fit_weights` (the in-sample optimum of the grid and coordinate search);
    - `shrink`: `search`'s weights pulled toward equal weights, `(1 - shrink) w + shrink / m`;
    - `equal`: 1/m each (rank averaging when normalized by rank; fits nothing);
    - `best`: all weight on the member that scores best alone (ties: member order).
    """
    names = list(members)
    equal = {n: 1.0 / len(names) for n in names}
    if method == "equal":
        return equal
    if method == "best":
        alone = {n: collection_score(kind, members[n], runtimes) for n in names}
        top = max(names, key=lambda n: (alone[n], -names.index(n)))
        return {n: float(n == top) for n in names}
    w = fit_weights(kind, members, runtimes, steps, refine)["weights"]
    if method == "search":
        return w
    if method == "shrink":
        return {n: (1.0 - shrink) * w[n] + shrink * equal[n] for n in names}
    raise ValueError(f"unknown ensemble method '{method}' (known: {', '.join(METHODS)})")


def out_of_fold_scores(method: str, kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray],
                       steps: int = 10, refine: int = 2, shrink: float = 0.5) -> np.ndarray:
    """Leave-one-graph-out scores of a method, one per graph of `runtimes` (in its order): each
    graph scored with the weights the method fits on every other graph (empty with fewer than
    two graphs)."""
    ids = list(runtimes)
    if len(ids) < 2:
        return np.zeros(0)
    out = []
    for g in ids:
        rest = {h: runtimes[h] for h in ids if h != g}
        w = method_weights(method, kind, members, rest, steps, refine, shrink)
        out.append(collection_score(kind, blend(members, w, [g]), {g: runtimes[g]}))
    return np.asarray(out)


def out_of_fold(method: str, kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray],
                steps: int = 10, refine: int = 2, shrink: float = 0.5) -> float:
    """The mean of `out_of_fold_scores` (nan with fewer than two graphs)."""
    s = out_of_fold_scores(method, kind, members, runtimes, steps, refine, shrink)
    return float(s.mean()) if s.size else float("nan")


def pick_method(per_graph: Mapping[str, np.ndarray], min_gain_se: float = 1.0) -> str:
    """The method with the best mean out-of-fold score (`per_graph`: method -> per-graph
    scores, in tie-break order), unless `best` is a candidate and the winner's mean gain over it
    is within `min_gain_se` standard errors of the per-graph differences: then `best`.

    Why: a blend's fitted weights can fail badly on one graph (a weak member in a rank blend
    pushes a tile graph's fastest configs out of the top 5: one graph at -0.66 among 47 at
    ~1.0), while its mean over a few graphs moves by less than that noise. A blend is used only
    where it wins on the held-out graphs by more than their spread says chance would."""
    names = list(per_graph)
    means = {m: float(np.mean(per_graph[m])) for m in names}
    top = max(names, key=lambda m: (means[m], -names.index(m)))
    if top == "best" or "best" not in per_graph:
        return top
    d = np.asarray(per_graph[top]) - np.asarray(per_graph["best"])
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
    return top if d.mean() > min_gain_se * se else "best"


def choose_method(kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray],
                  methods: Sequence[str] = METHODS, steps: int = 10, refine: int = 2,
                  shrink: float = 0.5, min_gain_se: float = 1.0) -> tuple[str, dict[str, float]]:
    """The method `pick_method` takes from the out-of-fold scores of `methods`, and every
    method's mean out-of-fold score. With fewer than two graphs nothing can be held out: the
    first method is returned with no scores."""
    if len(runtimes) < 2 or not methods:
        return (methods[0] if methods else "equal"), {}
    per_graph = {m: out_of_fold_scores(m, kind, members, runtimes, steps, refine, shrink) for m in methods}
    return pick_method(per_graph, min_gain_se), {m: float(s.mean()) for m, s in per_graph.items()}


@dataclass(frozen=True)
class Blender:
    """How members are blended per collection: their scores normalized per graph, then weighted
    with the weights of a fitting method.

    Args:
        method: `auto` (the method of `methods` with the best out-of-fold score, `choose_method`,
            unless it beats `best` by no more than `min_gain_se` standard errors) or one of
            `METHODS` (`method_weights`).
        methods: candidates of `auto`, in tie-break order.
        shrink: `shrink`'s weight of equal weights.
        normalize: per-graph score normalization, one of `NORMALIZERS`.
        grid_steps: weights searched on a simplex grid of step 1/grid_steps.
        refine: rounds of coordinate search after the grid, each halving the step.
        min_gain_se: `auto` keeps `best` unless a blend's mean out-of-fold gain over it exceeds
            this many standard errors of the per-graph gains (`pick_method`).

    Raises ValueError (one sentence) for an unknown method or normalization.
    """

    method: str = "auto"
    methods: Sequence[str] = METHODS
    shrink: float = 0.5
    normalize: str = "rank"
    grid_steps: int = 10
    refine: int = 2
    min_gain_se: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        if self.method != "auto" and self.method not in METHODS:
            raise ValueError(f"method must be auto or one of {', '.join(METHODS)}, got '{self.method}'")
        if self.method == "auto" and (not self.methods or any(m not in METHODS for m in self.methods)):
            raise ValueError(f"methods must list some of {', '.join(METHODS)}, got {list(self.methods)}")
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZERS)}, got '{self.normalize}'")

    def normalize_all(self, preds: Preds) -> dict[str, np.ndarray]:
        """A member's per-graph scores, normalized for blending."""
        return normalize_all(preds, self.normalize)

    def weights(self, kind: str, members: Mapping[str, Preds], runtimes: Mapping[str, np.ndarray]
                ) -> tuple[str, dict[str, float], dict[str, float]]:
        """(method used, {member: weight}, out-of-fold score per candidate method: empty unless
        `auto` chose) on `runtimes`' graphs; `members` normalized (`normalize_all`)."""
        knobs = dict(steps=int(self.grid_steps), refine=int(self.refine), shrink=float(self.shrink))
        method, oof = self.method, {}
        if method == "auto":
            method, oof = choose_method(kind, members, runtimes, list(self.methods), **knobs,
                                        min_gain_se=float(self.min_gain_se))
        return method, method_weights(method, kind, members, runtimes, **knobs), oof
