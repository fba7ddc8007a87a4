"""Check the audit's noise ceiling on generated graphs whose true noise is known.

    python -m pipeline.tools.ceiling_check [--unique 3000] [--draws 40] [--seed 0]

Each generated graph has true log runtimes (one per distinct config), a number of measured
copies per config and a known noise law; one measurement of every copy is the "file". Its true
ceiling is computed by Monte Carlo (`true_ceiling`: the mean score of an oracle that knows the
true runtimes, against fresh measurements, scored as the reports score them); the audit sees
only the file (`models.audit.audit_graph`). Prints, per noise kind and scoring, the true
ceiling and the estimate. Kinds (`KINDS`):
- `homoscedastic`: one noise width everywhere, duplicates everywhere;
- `proportional`: noise growing with runtime (width x runtime / fastest), duplicates everywhere;
- `drifting`: measurements drift with their position in the file (a slow sine), plus noise;
- `alexnet`: shaped like the held-out AlexNet training step of xla:random where four models
  beat the old ceiling: a third of the distinct configs tie within 0.25% of the fastest, every
  one of them measured 2 to 58 times with 3e-4 noise, the rest measured once, spread over 5x.
The tests (`tests/test_audit.py`) use the same generators.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from models import metrics
from models.audit import audit_graph

KINDS = ("homoscedastic", "proportional", "drifting", "alexnet")
BASE = float(np.log(8e7))  # ~80 ms in ns


@dataclass
class Sim:
    """A generated graph: `truth` (U,) true log runtime of each distinct config, `config_map`
    (C,) each config's distinct config, `sigma` (C,) each measurement's noise width and
    `offset` (C,) its systematic shift (drift), and one measured `runtime` (C,) drawn with them."""

    truth: np.ndarray
    config_map: np.ndarray
    sigma: np.ndarray
    offset: np.ndarray
    runtime: np.ndarray

    def measure(self, rng: np.random.Generator) -> np.ndarray:
        """(C,) fresh measured log runtimes of every config."""
        return self.truth[self.config_map] + self.offset + self.sigma * rng.standard_normal(self.config_map.size)


def generate(kind: str, unique: int = 3000, seed: int = 0) -> Sim:
    """A graph of `unique` distinct configs with the noise law `kind` (module docstring)."""
    rng = np.random.default_rng(seed)
    if kind == "alexnet":
        tied = unique // 3
        truth = np.r_[BASE + rng.uniform(0, 0.0025, tied),
                      BASE + np.minimum(0.0025 + rng.exponential(0.45, unique - tied), 1.68)]
        count = np.r_[np.minimum(2 + rng.geometric(0.55, tied) - 1, 58), np.ones(unique - tied, np.int64)]
        count[rng.choice(tied, 3, replace=False)] = 58  # a few configs measured many times
    else:  # half the configs tie within 0.4%, half spread over ~4x
        half = unique // 2
        truth = np.r_[BASE + rng.uniform(0, 0.004, half), BASE + 0.004 + np.abs(0.5 * rng.standard_normal(unique - half))]
        count = rng.choice([1, 2, 3], size=unique, p=[0.4, 0.4, 0.2])
    cmap = np.repeat(np.arange(unique), count)
    cmap = cmap[rng.permutation(cmap.size)]  # copies at random places in the file
    t = truth[cmap]
    offset = np.zeros(cmap.size)
    if kind in ("homoscedastic", "alexnet"):
        sigma = np.full(cmap.size, 3e-4)
    elif kind == "proportional":
        sigma = 2e-4 * np.exp(t - BASE)
    elif kind == "drifting":
        sigma = np.full(cmap.size, 1e-4)
        offset = 4e-4 * np.sin(2 * np.pi * np.arange(cmap.size) / cmap.size)
    else:
        raise ValueError(f"unknown kind '{kind}' (known: {', '.join(KINDS)})")
    sim = Sim(truth, cmap, sigma, offset, np.zeros(0))
    sim.runtime = np.exp(sim.measure(rng))
    return sim


def oracle_score(sim: Sim, measured: np.ndarray, scoring: str) -> float:
    """The score of the order by true runtime against `measured` (C,) log runtimes, as the
    reports score: `configs` every config (`pipeline.evaluate`), `distinct` each distinct
    config against its fastest copy (`pipeline.transductive`)."""
    if scoring == "configs":
        return metrics.layout_score(metrics.ranking(sim.truth[sim.config_map]), measured)
    fastest = np.full(sim.truth.size, np.inf)
    np.minimum.at(fastest, sim.config_map, measured)
    return metrics.layout_score(metrics.ranking(sim.truth), fastest)


def true_ceiling(sim: Sim, scoring: str, draws: int, seed: int = 1) -> tuple[float, float]:
    """Mean and standard error of `oracle_score` over `draws` fresh measurements."""
    rng = np.random.default_rng(seed)
    s = np.array([oracle_score(sim, sim.measure(rng), scoring) for _ in range(draws)])
    return float(s.mean()), float(s.std(ddof=1) / np.sqrt(draws))


AUDIT = {"outlier_factor": 10.0, "outlier_min_log_range": 1e-3, "ceiling_draws": 10, "ceiling_max_configs": 20000,
         "near_tie_widths": 2.0, "noise_window_dof": 100, "noise_confidence": 0.95, "min_noise_groups": 10, "min_noise_coverage": 0.5}


def estimate(sim: Sim, seed: int = 0, **params) -> dict:
    """The audit's numbers of the generated file (`AUDIT` knobs, overridden by `params`)."""
    return audit_graph(sim.config_map, sim.runtime, None, "tau", seed=seed, **{**AUDIT, **params})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unique", type=int, default=3000)
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"{'kind':<14} {'scoring':<9} {'true':>15} {'estimate':>9}")
    for kind in KINDS:
        sim = generate(kind, a.unique, a.seed)
        est = estimate(sim)
        for scoring, key in (("configs", "ceiling"), ("distinct", "ceiling_distinct")):
            m, se = true_ceiling(sim, scoring, a.draws)
            e = est[key]
            print(f"{kind:<14} {scoring:<9} {m:>8.4f} ± {se:.4f} {'n/a' if e is None else f'{e:.4f}':>9}"
                  + (f"  ({est['ceiling_why']})" if e is None else ""))


if __name__ == "__main__":
    main()
