"""The analytical ranker: non-negative weights recovered from costs built of known terms, graphs
of any scale weighing alike, degenerate graphs left out, saved and loaded; and its stage on the
smallest sample (every config of every valid and test layout graph scored, predict mode alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from builders import build_tiny_tree, cfg
from models.analytical import AnalyticalRanker
from models.metrics import kendall_tau
from pipeline import train_analytical
from pipeline.io.catalog import discover
from pipeline.io.npz import read_graph
from pipeline.io.predictions import predictions_path, read_predictions


def synthetic(rng: np.random.Generator, n: int, scale: float, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((n, weights.size)) * scale
    return x, 1000.0 * scale + x @ weights


def test_the_fit_recovers_non_negative_weights_across_graphs_of_any_scale() -> None:
    rng = np.random.default_rng(0)
    w = np.array([2.0, 0.0, 0.5, 0.0])
    graphs = [synthetic(rng, 50, s, w) for s in (1.0, 1e3, 1e6)]
    m = AnalyticalRanker(names=("a", "b", "c", "d")).fit(graphs)
    np.testing.assert_allclose(m.weights, w, atol=1e-6)
    x, y = synthetic(rng, 30, 10.0, w)
    assert kendall_tau(m.scores(x), y) == pytest.approx(1.0)


def test_a_term_that_only_saves_cost_gets_no_weight() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((80, 2))
    y = 100.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1]  # the second term lowers the cost
    m = AnalyticalRanker().fit([(x, y)])
    assert m.weights[1] == 0.0 and m.weights[0] > 0


def test_graphs_without_a_ranking_are_left_out_and_nothing_left_ties() -> None:
    rng = np.random.default_rng(2)
    flat = (rng.random((10, 3)), np.full(10, 7.0))
    single = (rng.random((1, 3)), np.array([5.0]))
    m = AnalyticalRanker().fit([flat, single])
    assert m.rows == 0 and (m.weights == 0).all()
    assert np.ptp(m.scores(rng.random((4, 3)))) == 0
    w = np.array([1.0, 0.0, 0.0])
    m = AnalyticalRanker().fit([flat, synthetic(rng, 20, 1.0, w)])
    assert m.rows == 20


def test_saved_form_and_load_round_trip_and_check_the_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    m = AnalyticalRanker(l2=0.01, names=("a", "b")).fit([synthetic(rng, 20, 1.0, np.array([1.0, 2.0]))])
    (tmp_path / "model.json").write_text(m.to_json())
    back = AnalyticalRanker.load(tmp_path / "model.json", ("a", "b"))
    np.testing.assert_array_equal(back.weights, m.weights)
    assert back.l2 == 0.01
    with pytest.raises(ValueError, match="other cost totals"):
        AnalyticalRanker.load(tmp_path / "model.json", ("a", "c"))
    with pytest.raises(ValueError, match="l2"):
        AnalyticalRanker(l2=-1)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        AnalyticalRanker().fit([(np.zeros((3, 2)), np.zeros(4))])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_tree(tmp_path_factory.mktemp("tiny"))


@pytest.mark.slow  # runs stages end to end
def test_the_stage_scores_every_config_of_every_layout_graph(tiny, tmp_path: Path) -> None:
    args = [f"data={tiny['gnn']}", f"models={tmp_path / 'models'}", f"predictions={tmp_path / 'pred'}"]
    metas = train_analytical.run(cfg("train_analytical", *args))
    assert sorted(metas) == ["layout:nlp:default", "layout:nlp:random", "layout:xla:default", "layout:xla:random"]
    assert all(m["rows"] > 0 and m["weighted"] > 0 for m in metas.values())
    assert (tmp_path / "models" / ".complete").is_file()
    for split in ("valid", "test"):
        pred = read_predictions(predictions_path(tmp_path / "pred", "analytical", split))
        files = [f for f in discover(tiny["raw"], splits=[split]) if f.kind == "layout"]
        assert sorted(pred) == sorted(f.id for f in files)
        for f in files:
            assert pred[f.id].shape == (read_graph(f.path).num_configs,)
    # predict mode reads the saved models and writes the same scores
    first = read_predictions(predictions_path(tmp_path / "pred", "analytical", "valid"))
    train_analytical.run(cfg("train_analytical", *args, "mode=predict"))
    again = read_predictions(predictions_path(tmp_path / "pred", "analytical", "valid"))
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_the_stage_says_what_is_missing(tmp_path: Path) -> None:
    from pipeline.core.errors import DataError

    with pytest.raises(DataError, match="no GNN tensors"):
        train_analytical.run(cfg("train_analytical", f"data={tmp_path / 'absent'}"))


def test_terms_fits_only_the_named_groups() -> None:
    from features.cost_terms import TOTAL_NAMES, term_mask

    rng = np.random.default_rng(0)
    graphs = [(rng.random((40, len(TOTAL_NAMES))), rng.random(40) + 1.0) for _ in range(3)]
    for x, y in graphs:
        y += 5.0 * x[:, list(TOTAL_NAMES).index("conv_in_mismatch")]  # runtime driven by a link term
    slot = AnalyticalRanker(names=TOTAL_NAMES, terms=["slot"]).fit(graphs)
    assert (slot.weights[~term_mask(["slot"], TOTAL_NAMES)] == 0).all()
    link = AnalyticalRanker(names=TOTAL_NAMES, terms=["link"]).fit(graphs)
    assert link.weights[list(TOTAL_NAMES).index("conv_in_mismatch")] > 0
    assert (link.weights[~term_mask(["link"], TOTAL_NAMES)] == 0).all()
    none = AnalyticalRanker(names=TOTAL_NAMES, terms=[]).fit(graphs)
    assert (none.weights == 0).all()
    assert AnalyticalRanker(names=TOTAL_NAMES, terms=["link"]).state()["terms"] == ["link"]
