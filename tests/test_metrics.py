"""The competition metric against scipy and against hand-worked cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import kendalltau

from models import metrics
from models.metrics import _count_inversions, kendall_tau, layout_score, tile_score


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) < 1e-12


def _scipy_tau(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input before returning nan
        return float(kendalltau(x, y).statistic)


def test_count_inversions_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        y = rng.integers(0, int(rng.integers(1, 12)), n)
        brute = sum(int(y[i] > y[j]) for i in range(n) for j in range(i + 1, n))
        assert _count_inversions(y) == brute


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    for case in range(150):
        n = int(rng.integers(0, 80)) if case % 10 else int(rng.integers(500, 5000))
        # From heavy ties (2 levels) to none (continuous), on either side.
        x = rng.integers(0, int(rng.integers(1, 6)), n) if case % 3 == 0 else rng.integers(0, n + 1, n)
        y = rng.normal(size=n) if case % 4 == 1 else rng.integers(0, int(rng.integers(1, 40)), n)
        if case % 5 == 2:
            x, y = y, x
        assert _same(kendall_tau(x, y), _scipy_tau(x, y)), (seed, case, n)


def test_kendall_tau_correlated_large_n():
    rng = np.random.default_rng(7)
    n = 5000
    runtime = rng.integers(1000, 1100, n)  # many ties, as real layout runtimes
    pred = runtime + rng.normal(scale=20, size=n)
    tau = kendall_tau(pred, runtime)
    assert tau > 0.3
    assert _same(tau, _scipy_tau(pred, runtime))


def test_kendall_tau_perfect_reversed_constant():
    r = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    # Exactly scipy's float (0.9999999999999999 for a perfect 6-element ranking).
    assert kendall_tau(r, r) == _scipy_tau(r, r) == pytest.approx(1.0)
    assert kendall_tau(r, -r) == _scipy_tau(r, -r) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau(r, np.ones_like(r)))
    assert np.isnan(kendall_tau([1.0], [2.0]))
    assert np.isnan(_scipy_tau(r, np.ones_like(r)))


def test_kendall_tau_100k_exact():  # its speed: `make bench` (kendall-tau-100k)
    rng = np.random.default_rng(3)
    n = 100_000
    runtime = rng.integers(0, 5000, n)
    pred = runtime + rng.integers(-2000, 2000, n)
    assert _same(kendall_tau(pred, runtime), _scipy_tau(pred, runtime))


def test_tile_score_hand_worked():
    runtime = np.array([5, 3, 9, 1, 7, 2])
    norm = np.array([1, 1, 12, 1, 1, 1])
    # runtime / normalizer = [5, 3, 0.75, 1, 7, 2]: config 2 is the fastest, though raw slowest.
    assert tile_score([0, 4, 5, 1, 2], runtime, norm) == pytest.approx(1.0)
    assert tile_score([2, 0, 1, 3, 4, 5], runtime, norm) == pytest.approx(1.0)
    # Best of the five is config 3 (1.0): 2 - 1 / 0.75.
    assert tile_score([4, 0, 1, 5, 3, 2], runtime, norm) == pytest.approx(2 - 4 / 3)
    # Best of the five is config 5 (2.0): 2 - 2 / 0.75 (only the first five count).
    assert tile_score([4, 0, 1, 5, 2, 3][:4] + [0], runtime, norm) == pytest.approx(2 - 8 / 3)
    # Without normalizers config 3 (1) is the fastest.
    assert tile_score([3, 0, 1, 2, 4], runtime) == pytest.approx(1.0)
    assert tile_score([5, 0, 1, 2, 4], runtime) == pytest.approx(2 - 2 / 1)


def test_layout_score_sign_and_partial_order():
    runtime = np.array([40, 10, 30, 20, 50])
    fastest_first = np.argsort(runtime)
    assert layout_score(fastest_first, runtime) == pytest.approx(1.0)
    assert layout_score(fastest_first[::-1], runtime) == pytest.approx(-1.0)
    assert layout_score([1, 3, 0, 2, 4], runtime) == pytest.approx(0.8)  # one swapped pair of 10
    # Only the listed configs are compared: config 4 unlisted, the rest perfectly ordered.
    assert layout_score([1, 3, 2, 0], runtime) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    r = rng.integers(0, 6, 50)  # ties
    order = rng.permutation(50)
    rank = metrics.order_to_rank(order)
    assert _same(layout_score(order, r), _scipy_tau(rank, r))


def test_layout_score_undefined_tau():
    runtime = np.array([7, 7, 7])
    assert layout_score([0, 1, 2], runtime) == metrics.UNDEFINED_TAU_SCORE == 0.0
    assert np.isnan(layout_score([0, 1, 2], runtime, nan_as=None))


def test_order_to_rank():
    assert metrics.order_to_rank([2, 0, 3], 5).tolist() == [1, -1, 0, 2, -1]


def test_mean_ranks_and_ranking_by_hand_and_against_scipy():
    from scipy.stats import rankdata

    assert metrics.mean_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]
    # groups are ranked apart: a (4 values) then b (2 equal ones)
    assert metrics.mean_ranks([4.0, 1.0, 3.0, 2.0, 5.0, 5.0], [4, 2]).tolist() == [3, 0, 2, 1, 0.5, 0.5]
    assert metrics.mean_ranks([]).size == 0 and metrics.mean_ranks([7.0]).tolist() == [0.0]
    with pytest.raises(ValueError, match="sizes sum to 3"):
        metrics.mean_ranks([1.0, 2.0], [3])
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 30, 20)
    v = rng.integers(0, 6, int(sizes.sum())).astype(float)
    want = np.concatenate([rankdata(part, method="average") - 1 for part in np.split(v, np.cumsum(sizes)[:-1])])
    assert np.array_equal(metrics.mean_ranks(v, sizes), want)
    # ranking: ascending score, equal scores by index; its inverse is order_to_rank
    s = np.array([2.0, 1.0, 2.0, 0.5])
    assert metrics.ranking(s).tolist() == [3, 1, 0, 2]
    assert metrics.order_to_rank(metrics.ranking(s)).tolist() == [2, 1, 3, 0]


def test_collection_means_and_overall():
    per_graph = {"a": 1.0, "b": 0.5, "c": -0.5}
    coll = {"a": "tile:xla", "b": "tile:xla", "c": "layout:xla:random"}
    means = metrics.collection_means(per_graph, coll)
    assert means == {"tile:xla": 0.75, "layout:xla:random": -0.5}
    # Plain mean over collections, not over graphs.
    assert metrics.overall_score(means) == pytest.approx(0.125)
    assert np.isnan(metrics.overall_score({}))


def test_tile_order_lists_one_copy_of_each_tied_score_first() -> None:
    from models.metrics import config_order, ranking, tile_order
    assert tile_order([1, 1, 1, 2, 3], k=3).tolist() == [0, 3, 4, 1, 2]
    assert tile_order([3.0, 1.0, 1.0, 2.0, 1.0, 0.5], k=2).tolist() == [5, 1, 2, 4, 3, 0]
    assert tile_order([2.0, 2.0], k=5).tolist() == [0, 1]  # fewer distinct scores than k
    assert tile_order([0.0, np.nan, 1.0], k=5).tolist() == [0, 2, 1]
    scores = np.array([1.0, 1.0, 1.0, 2.0])
    assert config_order("layout", scores).tolist() == [0, 1, 2, 3]
    # five copies of a slow config scored best no longer hide the fast one scored second
    runtime = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 1.0])
    scores = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1])
    assert tile_score(ranking(scores), runtime) == pytest.approx(2 - 5.0)
    assert tile_score(config_order("tile", scores), runtime) == pytest.approx(1.0)
