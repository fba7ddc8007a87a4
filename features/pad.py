"""Feature padding and normalization (pure functions).

node_feat columns 134-139 hold a node's layout (minor_to_major), with unused positions 0, which
collides with dimension 0. A tensor's rank is the number of nonzero shape dims (columns 21-26;
checked on every node of the real sample files: the first `rank` layout entries are a
permutation of 0..rank-1 and the rest are 0). `pad_layout` rewrites the positions beyond the
rank to -1, the padding the layout configs already use, so both share one vocabulary (-1..5).

Normalization: columns constant on the fitting set are dropped, wide-range columns (sizes,
products) get `sign(x) * log1p(|x|)`, then everything is standardized. Statistics are
accumulated as moments (`Moments`), so they can be fitted file by file in bounded memory and
merged across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.layout import LAYOUT_COLS, node_layout, node_rank

tensor_rank = node_rank  # number of nonzero shape dims (0 for scalars and tuples)


def pad_layout(node_feat: np.ndarray) -> np.ndarray:
    """Copy of node_feat (N, 140) with layout entries beyond each node's rank set to -1.

    Afterwards columns 134-139 read as `features.layout.node_layout` does: one -1..5 vocabulary
    for a node's own layout and the config layouts.
    """
    out = np.array(node_feat, dtype=np.float32, copy=True)
    out[:, LAYOUT_COLS] = node_layout(node_feat)
    return out


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Moments:
    """Per-column count, min, max, and sums of x, x^2, signed_log1p(x), its square (float64)."""

    width: int
    n: int = 0
    lo: np.ndarray = field(default=None)  # type: ignore[assignment]
    hi: np.ndarray = field(default=None)  # type: ignore[assignment]
    s: np.ndarray = field(default=None)  # type: ignore[assignment]
    ss: np.ndarray = field(default=None)  # type: ignore[assignment]
    ls: np.ndarray = field(default=None)  # type: ignore[assignment]
    lss: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        w = self.width
        for name, init in (("lo", np.inf), ("hi", -np.inf), ("s", 0.0), ("ss", 0.0), ("ls", 0.0), ("lss", 0.0)):
            if getattr(self, name) is None:
                setattr(self, name, np.full(w, init, dtype=np.float64))

    def add(self, x: np.ndarray) -> "Moments":
        """Accumulate rows of x (n, width)."""
        if x.shape[0] == 0:
            return self
        x = x.astype(np.float64)
        lx = signed_log1p(x)
        self.n += x.shape[0]
        self.lo = np.minimum(self.lo, x.min(0))
        self.hi = np.maximum(self.hi, x.max(0))
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)
        self.ls += lx.sum(0)
        self.lss += (lx * lx).sum(0)
        return self

    def merge(self, other: "Moments") -> "Moments":
        self.n += other.n
        self.lo = np.minimum(self.lo, other.lo)
        self.hi = np.maximum(self.hi, other.hi)
        for k in ("s", "ss", "ls", "lss"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self


@dataclass
class Normalizer:
    """Fitted normalization of a feature matrix: keep -> log -> standardize.

    `keep` (K,) column indices kept; `log` (K,) bool per kept column; `mean`, `std` (K,).
    """

    keep: np.ndarray
    log: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(n, width) -> (n, K) float32."""
        y = x[:, self.keep].astype(np.float64)
        y[:, self.log] = signed_log1p(y[:, self.log])
        return ((y - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"keep": self.keep.tolist(), "log": self.log.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["keep"], dtype=np.int64), np.asarray(d["log"], dtype=bool),
                   np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def fit_normalizer(m: Moments, log_min_abs: float = 1000.0, exclude: np.ndarray | None = None) -> Normalizer:
    """Choose and fit the normalization from accumulated moments.

    Args:
        m: moments of the fitting set (train).
        log_min_abs: a column whose largest |value| reaches this is log-transformed.
        exclude: columns never kept (e.g. categorical layout columns handled elsewhere).
    """
    if m.n == 0:
        raise ValueError("no rows to fit normalization statistics on")
    keep = m.hi > m.lo  # constant columns carry nothing (unless every column is constant)
    if exclude is not None:
        keep[exclude] = False
    cols = np.flatnonzero(keep)
    if cols.size == 0:
        # every column constant on the fitting set (a tiny train split): keep them all, centred,
        # so a model never gets zero inputs and other splits' values still reach it
        keep = np.ones(m.width, dtype=bool)
        if exclude is not None:
            keep[exclude] = False
        cols = np.flatnonzero(keep)
    log = np.maximum(np.abs(m.lo[cols]), np.abs(m.hi[cols])) >= log_min_abs
    s = np.where(log, m.ls[cols], m.s[cols])
    ss = np.where(log, m.lss[cols], m.ss[cols])
    mean = s / m.n
    var = np.maximum(ss / m.n - mean * mean, 0.0)
    std = np.sqrt(var)
    std[std < 1e-12] = 1.0
    return Normalizer(cols.astype(np.int64), log, mean, std)
