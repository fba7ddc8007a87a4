"""An analytical layout cost model whose coefficients are learned: the sums of each config's cost
terms (`features.cost_terms.config_totals`: tile padding, layout changes next to fixed layouts,
producer/consumer disagreements, convolutions off their preferred layout, per opcode kind) are
combined with non-negative weights fitted on the train graphs.

    model = AnalyticalRanker().fit([(totals, runtime), ...])   # one (configs, F) and (configs,) per graph
    scores = model.scores(totals)                             # (configs,), lower = predicted faster
    path.write_text(model.to_json()); AnalyticalRanker.load(path)   # the stage writes it atomically

The fit: each graph's runtimes and totals are divided by its mean runtime and centred, so that
graphs of any size weigh alike and only within-graph differences count; the columns are scaled
to unit root mean square; then non-negative least squares (every term can only add cost, so a
term the data cannot separate from another gets weight 0 rather than a cancelling pair), with
an optional ridge `l2` on the scaled weights. `terms` names the term groups fitted
(`features.cost_terms.TERM_GROUPS`); the totals of the other groups keep weight 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from features.cost_terms import term_groups, term_mask


class AnalyticalRanker:
    """Non-negative weights over named cost totals (module docstring).

    Args:
        l2: ridge penalty on the scaled weights, relative to the number of rows (0 = none).
        names: the totals' column names (kept with the weights, checked at load).
        terms: the term groups fitted (`features.cost_terms.TERM_GROUPS`: slot, link, compute;
            true = all); the other columns get weight 0.
    """

    def __init__(self, l2: float = 0.0, names: tuple[str, ...] | list[str] = (), terms=True):
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        self.names = tuple(names)
        self.terms = term_groups(terms)
        self.weights: np.ndarray | None = None
        self.rows = 0

    def __repr__(self) -> str:
        return f"AnalyticalRanker(l2={self.l2}, terms={list(self.terms)}, {len(self.names)} totals)"

    def fit(self, graphs: list[tuple[np.ndarray, np.ndarray]]) -> "AnalyticalRanker":
        """Fit on `[(totals (n, F), runtime (n,)), ...]`, one pair per train graph. Graphs whose
        runtimes are all equal (or with one config) carry no ranking and are left out; with none
        left every weight is 0 (every config ties)."""
        xs, ys = [], []
        width = None
        for totals, runtime in graphs:
            x, y = np.asarray(totals, dtype=np.float64), np.asarray(runtime, dtype=np.float64)
            width = x.shape[1] if width is None else width
            if x.ndim != 2 or x.shape != (y.size, width):
                raise ValueError(f"totals {x.shape} do not match {y.size} runtimes of width {width}")
            mean = y.mean() if y.size else 0.0
            if y.size < 2 or mean <= 0 or np.ptp(y) == 0:
                continue
            x, y = x / mean, y / mean
            xs.append(x - x.mean(0))
            ys.append(y - y.mean())
        width = width if width is not None else len(self.names)
        self.weights = np.zeros(width)
        if not xs:
            return self
        a, b = np.concatenate(xs), np.concatenate(ys)
        self.rows = a.shape[0]
        scale = np.sqrt((a**2).mean(0))
        used = scale > 0
        if self.names:
            used &= term_mask(self.terms, self.names)
        if not used.any():
            return self
        a = a[:, used] / scale[used]
        if self.l2 > 0:
            a = np.vstack([a, np.sqrt(self.l2 * a.shape[0]) * np.eye(a.shape[1])])
            b = np.concatenate([b, np.zeros(a.shape[1])])
        w, _ = nnls(a, b, maxiter=50 * max(1, a.shape[1]))
        self.weights[used] = w / scale[used]
        return self

    def scores(self, totals: np.ndarray) -> np.ndarray:
        """(n,) predicted relative cost of (n, F) totals: lower = faster."""
        if self.weights is None:
            raise RuntimeError("AnalyticalRanker: fit or load it first")
        return np.asarray(totals, dtype=np.float64) @ self.weights

    def state(self) -> dict:
        w = [] if self.weights is None else self.weights.tolist()
        return {"l2": self.l2, "terms": list(self.terms), "names": list(self.names), "weights": w, "rows": self.rows}

    def to_json(self) -> str:
        """The saved form (`load` reads it back)."""
        return json.dumps(self.state(), indent=1) + "\n"

    @classmethod
    def load(cls, path: str | Path, names: tuple[str, ...] | None = None) -> "AnalyticalRanker":
        """Read a saved model; with `names`, check they are the columns it was fitted on."""
        try:
            return cls.from_state(json.loads(Path(path).read_text()), names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_state(cls, state: dict, names: tuple[str, ...] | None = None) -> "AnalyticalRanker":
        """The model of a `state()` dict; with `names`, check they are the columns it was fitted on."""
        model = cls(state["l2"], state["names"], state.get("terms", True))
        if names is not None and tuple(names) != model.names:
            raise ValueError("fitted on other cost totals than this code computes (rerun `make train-analytical`)")
        model.weights = np.asarray(state["weights"], dtype=np.float64)
        model.rows = int(state.get("rows", 0))
        return model
