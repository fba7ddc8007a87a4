"""LightGBM rankers on the extract stage's config tables: labels, query groups, params, and
`GBDTRanker`, the model a config builds (conf/arch/gbdt.yaml). No file I/O.

One row of a table is one UNIQUE config of one graph (`id`, `configs` = its original indices,
`runtime`, features). Training treats each graph as a query (optionally split into several,
`split_queries`), so the model only ever compares configs of the same graph, which is all the
metric does.

Targets, both built from the runtime within a graph (tile runtimes divided by their
`normalizer` first, as the metric does):
- `lambdarank`: LightGBM needs integer relevance labels below `len(label_gain)`; a raw rank
  (0..99,999 on the full data) would need a 100k-entry gain table, and its default
  `2**label - 1` gain overflows past label 30. So the within-graph rank is cut into
  `num_labels` quantile bins (`lambdarank_labels`): the fastest `1/num_labels` of each graph
  get `num_labels - 1`, the slowest 0. Quantiles (not runtime values) make every graph use
  every label the same way however wide its runtime spread (a real xla:default graph spans
  ~1.6%). `label_gain` sizes the gain table to exactly `num_labels`: `exponential`
  (`2**l - 1`, NDCG's usual gain: the top bins dominate, what the tile top-5 metric wants) or
  `linear` (`l`: every pair of bins weighs alike, closer to Kendall's tau over the whole order).
- `regression`: pointwise L2 on the within-graph standardized log runtime (`regression_target`).

Scores follow the predictions contract: lower = predicted faster (`to_score` flips lambdarank's
higher-is-more-relevant output).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import lightgbm as lgb
import numpy as np

from models import metrics

# Table columns that are not features: identity, the answer, and the metric's normalizer.
META_COLUMNS = ("id", "configs", "runtime", "normalizer")
OBJECTIVES = ("lambdarank", "regression")
MAX_QUERY_ROWS = 10_000  # LightGBM refuses a lambdarank query of more rows ("exceeds upper limit")
GAINS = ("exponential", "linear")


def query_groups(ids: np.ndarray | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal `ids`: (starts, sizes) in row order.

    Raises ValueError when an id appears in two separate runs (a query must be contiguous for
    LightGBM; `contiguous_order` fixes such a table).
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.r_[True, ids[1:] != ids[:-1]]
    starts = np.flatnonzero(change)
    if np.unique(ids[starts]).size != starts.size:
        raise ValueError("rows of a graph are not contiguous")
    sizes = np.diff(np.r_[starts, ids.size])
    return starts, sizes


def contiguous_order(ids: np.ndarray | Sequence[str]) -> np.ndarray:
    """A stable permutation that makes each id's rows contiguous, graphs in first-seen order."""
    ids = np.asarray(ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    key = np.argsort(np.argsort(first))[inverse]  # graph's first-seen rank per row
    return np.argsort(key, kind="stable")


def group_index(sizes: np.ndarray) -> np.ndarray:
    """(n,) the query number of each row, from the query sizes."""
    return np.repeat(np.arange(len(sizes)), sizes)


def target_runtime(runtime: np.ndarray, normalizer: np.ndarray | None = None) -> np.ndarray:
    """What the metric compares: runtime, or runtime / normalizer for tile (float64)."""
    r = np.asarray(runtime, dtype=np.float64)
    return r if normalizer is None else r / np.asarray(normalizer, dtype=np.float64)


def lambdarank_labels(sizes: np.ndarray, target: np.ndarray, num_labels: int) -> np.ndarray:
    """(n,) int32 relevance in [0, num_labels): quantile bins of the within-graph rank, the
    fastest bin highest. A query of one row gets the top label."""
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    rank = metrics.mean_ranks(target, sizes)  # 0 = fastest; ties share their mean rank
    q = rank / np.repeat(np.asarray(sizes, dtype=np.float64), sizes)  # [0, 1)
    b = np.minimum(np.floor(q * num_labels), num_labels - 1).astype(np.int32)
    return (num_labels - 1 - b).astype(np.int32)


def label_gain(num_labels: int, kind: str = "exponential") -> list[float]:
    """LightGBM's `label_gain`, one entry per label (see the module docstring)."""
    if kind == "exponential":
        return [float(2**i - 1) for i in range(num_labels)]
    if kind == "linear":
        return [float(i) for i in range(num_labels)]
    raise ValueError(f"unknown label_gain '{kind}' ({' or '.join(GAINS)})")


def regression_target(sizes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n,) log runtime standardized inside each query (0 for a query with one value)."""
    lt = np.log(np.asarray(target, dtype=np.float64))
    g = group_index(sizes)
    cnt = np.asarray(sizes, dtype=np.float64)
    mean = np.bincount(g, lt) / cnt
    d = lt - mean[g]
    std = np.sqrt(np.bincount(g, d * d) / cnt)
    return np.where(std[g] > 0, d / np.where(std[g] > 0, std[g], 1.0), 0.0)


def training_target(objective: str, sizes: np.ndarray, target: np.ndarray, num_labels: int) -> np.ndarray:
    if objective == "lambdarank":
        return lambdarank_labels(sizes, target, num_labels)
    if objective == "regression":
        return regression_target(sizes, target)
    raise ValueError(f"unknown objective '{objective}' ({' or '.join(OBJECTIVES)})")


def to_score(raw: np.ndarray, objective: str) -> np.ndarray:
    """Model output -> predictions-contract score (lower = predicted faster)."""
    raw = np.asarray(raw, dtype=np.float64)
    return -raw if objective == "lambdarank" else raw


def select_features(columns: Mapping[str, object] | Iterable[str], exclude: Sequence[str] = (),
                    numeric: Mapping[str, bool] | None = None) -> list[str]:
    """Feature columns of a table: every column but `META_COLUMNS` and those matching an
    `exclude` glob (e.g. `g_*` drops the per-graph statistics); `numeric` (name -> bool), when
    given, drops non-numeric columns too. Table order is kept, so a model's feature order is
    the table's."""
    out = []
    for c in columns:
        if c in META_COLUMNS or any(fnmatch.fnmatchcase(c, p) for p in exclude):
            continue
        if numeric is not None and not numeric.get(c, False):
            continue
        out.append(c)
    return out


FEATURE_NORMS = ("none", "graph")
GRAPH_STAT_PREFIX = "g_"  # per-graph statistics: constant within a graph, never normalized within it


NORMALIZED_PREFIX = "z_"  # a feature `z_<column>`: the column standardized within each graph


def feature_names(columns: Sequence[str], norm: str) -> list[str]:
    """The booster's feature names of table `columns`: with `norm="graph"` every column but the
    per-graph statistics as `z_<column>` (so a saved model says how to rebuild its inputs)."""
    if norm == "none":
        return list(columns)
    return [c if c.startswith(GRAPH_STAT_PREFIX) else NORMALIZED_PREFIX + c for c in columns]


def stored_column(name: str) -> str:
    """The table column a feature name reads (`feature_names`)."""
    return name[len(NORMALIZED_PREFIX):] if name.startswith(NORMALIZED_PREFIX) else name


def graph_normalize(column: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(n,) float32: each value less its graph's mean, over its graph's standard deviation (0 where
    a graph's values are all equal); `sizes` are the rows of each graph, in order. A ranking
    compares configs of one graph only, so a feature's level across graphs carries nothing a
    split should key on; its spread within a graph does."""
    col = np.asarray(column, dtype=np.float64)
    graph = np.repeat(np.arange(sizes.size), sizes)
    n = np.maximum(sizes, 1).astype(np.float64)
    mean = np.bincount(graph, col, minlength=sizes.size) / n
    centred = col - mean[graph]
    std = np.sqrt(np.bincount(graph, centred * centred, minlength=sizes.size) / n)
    return np.where(std[graph] > 0, centred / np.where(std[graph] > 0, std[graph], 1.0), 0.0).astype(np.float32)


def sample_rows(sizes: np.ndarray, max_per_group: int | None, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept for training and the new query sizes: at most `max_per_group` random rows of
    each query (all when None), shuffled inside the query when `shuffle` (so `split_queries`
    cuts random subsets, not runs of the table's order). Rows stay grouped by query.

    Returns (idx (m,) int64 row indices, new_sizes)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if max_per_group is None and not shuffle:
        return np.arange(int(sizes.sum()), dtype=np.int64), sizes
    rng = np.random.default_rng(seed)
    g = group_index(sizes)
    key = rng.random(g.size)
    order = np.lexsort((key, g))  # random order inside each query
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    pos = np.arange(g.size) - starts[g[order]]
    keep = order if max_per_group is None else order[pos < max_per_group]
    if not shuffle:
        keep = np.sort(keep)
    new_sizes = sizes if max_per_group is None else np.minimum(sizes, max_per_group)
    return keep.astype(np.int64), new_sizes


def query_size_for(objective: str, sizes: np.ndarray, query_size: int | None) -> int | None:
    """The query size to train with: `query_size`, capped for lambdarank at LightGBM's limit of
    `MAX_QUERY_ROWS` rows (full-data graphs carry up to 100k unique configs); None = one query
    per graph."""
    if objective != "lambdarank":
        return None
    cap = MAX_QUERY_ROWS if query_size is None else min(int(query_size), MAX_QUERY_ROWS)
    return cap if query_size is not None or (len(sizes) and int(np.max(sizes)) > cap) else None


def split_queries(sizes: np.ndarray, query_size: int | None) -> np.ndarray:
    """Cut each query into near-equal parts of at most `query_size` rows (None: unchanged).

    Lambdarank's cost per query grows with its size times the truncation level; parts of a few
    thousand configs keep it linear in the rows. Rows should be shuffled inside each graph first
    (`sample_rows(shuffle=True)`) so that each part is a random subset of the graph."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if query_size is None:
        return sizes
    out = []
    for s in sizes:
        k = -(-int(s) // int(query_size))
        base, extra = divmod(int(s), k)
        out.extend([base + 1] * extra + [base] * (k - extra))
    return np.asarray(out, dtype=np.int64)


def lgb_params(objective: str, params: Mapping[str, object], seed: int, num_threads: int,
               num_labels: int, gain: str) -> dict:
    """LightGBM parameters: `params` (the config's booster knobs) plus what makes a run
    reproducible and the objective's own settings."""
    p = {k: v for k, v in dict(params).items() if v is not None}
    p.update(objective=objective, seed=int(seed), num_threads=int(num_threads), deterministic=True,
             force_row_wise=True, verbosity=-1, metric="None")
    if objective == "lambdarank":
        p["label_gain"] = label_gain(num_labels, gain)
    else:
        p.pop("lambdarank_truncation_level", None)
    return p


def validation_score(kind: str, sizes: np.ndarray, target: np.ndarray, scores: np.ndarray) -> float:
    """The competition metric over the queries of a table (one query per graph, unique
    configs as rows): mean tile top-5 score or mean Kendall tau; lower `scores` = faster."""
    out, start = [], 0
    for s in sizes:
        t, sc = target[start : start + s], scores[start : start + s]
        out.append(metrics.graph_score(kind, metrics.config_order(kind, sc), t))
        start += s
    return float(np.mean(out)) if out else float("nan")


def expand_to_configs(ids: np.ndarray, lengths: np.ndarray, flat_configs: np.ndarray,
                      row_scores: np.ndarray) -> dict[str, np.ndarray]:
    """Scores by ORIGINAL config index: every index listed in a row's `configs` gets the row's
    score (duplicates of one unique config share it).

    Args:
        ids: (n,) graph ID of each row; rows of a graph contiguous.
        lengths: (n,) number of original configs of each row.
        flat_configs: (sum(lengths),) the rows' `configs` lists concatenated.
        row_scores: (n,) one score per row.

    Raises ValueError when a graph's configs are not exactly 0..C-1, each once.
    """
    starts, sizes = query_groups(ids)
    lengths = np.asarray(lengths, dtype=np.int64)
    flat_configs = np.asarray(flat_configs, dtype=np.int64)
    per_row = np.repeat(np.asarray(row_scores, dtype=np.float64), lengths)
    offs = np.r_[0, np.cumsum(lengths)]
    out: dict[str, np.ndarray] = {}
    for s, n in zip(starts, sizes):
        a, b = offs[s], offs[s + n]
        cfg = flat_configs[a:b]
        c = b - a
        scores = np.full(c, np.nan)
        if cfg.size and (cfg.min() < 0 or cfg.max() >= c):
            raise ValueError(f"{ids[s]}: config indices out of 0..{c - 1}")
        scores[cfg] = per_row[a:b]
        if np.isnan(scores).any() or np.bincount(cfg, minlength=c).max(initial=0) > 1:
            raise ValueError(f"{ids[s]}: configs are not each of 0..{c - 1} exactly once")
        out[str(ids[s])] = scores
    return out


@dataclass(frozen=True)
class GBDTRanker:
    """One LightGBM ranker's settings, and the labels, parameters and training they imply.

    Args:
        objective: `lambdarank` (one query per graph) or `regression` (within-graph
            standardized log runtime), see the module docstring.
        num_labels: lambdarank relevance levels (quantile bins of the within-graph rank), >= 2.
        label_gain: lambdarank gain per level, `linear` or `exponential`.
        num_boost_round: boosting rounds at most (early stopping picks the best).
        early_stopping_rounds: rounds without a better valid metric before stopping.
        feature_norm: per collection kind (layout, tile): `graph`, every feature but the
            per-graph statistics standardized within its graph (`graph_normalize`), for training
            and prediction alike; `none`, as stored (a kind not named: none).
        params: LightGBM booster knobs (None values are left out).

    Raises ValueError (one sentence) for an unknown objective or gain, or too few labels.
    """

    objective: str = "lambdarank"
    num_labels: int = 32
    label_gain: str = "linear"
    num_boost_round: int = 600
    early_stopping_rounds: int = 50
    feature_norm: Mapping[str, str] = field(default_factory=lambda: {"layout": "graph", "tile": "none"})
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got '{self.objective}'")
        norms = {str(k): str(v) for k, v in dict(self.feature_norm).items()}
        bad = {k: v for k, v in norms.items() if v not in FEATURE_NORMS or k not in ("layout", "tile")}
        if bad:
            raise ValueError(f"feature_norm maps layout and tile to one of {', '.join(FEATURE_NORMS)}, got {bad}")
        object.__setattr__(self, "feature_norm", norms)
        if self.label_gain not in GAINS:
            raise ValueError(f"label_gain must be one of {', '.join(GAINS)}, got '{self.label_gain}'")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 2:
            raise ValueError(f"num_labels must be an integer of at least 2 (lambdarank relevance levels), got '{self.num_labels}'")
        object.__setattr__(self, "params", {str(k): v for k, v in dict(self.params).items()})

    def norm(self, kind: str) -> str:
        """The `feature_norm` of a collection kind."""
        return self.feature_norm.get(kind, "none")

    def lgb_params(self, seed: int, num_threads: int) -> dict:
        """The booster parameters of one run (`lgb_params`)."""
        return lgb_params(self.objective, self.params, seed, num_threads, self.num_labels, self.label_gain)

    def labels(self, sizes: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(n,) the training label of each row (`training_target`); `sizes` are the query sizes."""
        return training_target(self.objective, sizes, target, self.num_labels)

    def to_score(self, raw: np.ndarray) -> np.ndarray:
        """Booster output -> predictions-contract score (lower = predicted faster)."""
        return to_score(raw, self.objective)

    def fit(self, params: Mapping[str, object], train: lgb.Dataset, valid: lgb.Dataset | None = None,
            feval: Callable | None = None, callbacks: Sequence[Callable] = ()) -> lgb.Booster:
        """A booster of at most `num_boost_round` rounds; with `valid`, scored there as `valid` by
        `feval` (its first metric) and stopped after `early_stopping_rounds` without a better one
        (`best_iteration`, `best_score["valid"]`)."""
        callbacks = list(callbacks)
        kwargs: dict = {}
        if valid is not None:
            callbacks.append(lgb.early_stopping(int(self.early_stopping_rounds), first_metric_only=True, verbose=False))
            kwargs = dict(valid_sets=[valid], valid_names=["valid"], feval=feval)
        return lgb.train(dict(params), train, num_boost_round=int(self.num_boost_round), callbacks=callbacks, **kwargs)
