"""LightGBM rankers: labels and queries on hand-made tables, mapping back through dedup, and a
short train/predict run on a tiny generated sample."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from builders import cfg as stage_cfg
from models import ensemble as ens, gbdt
from pipeline import extract, pad, prune, sample_data, train_gbdt
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover
from pipeline.io.npz import read_graph
from pipeline.io.predictions import read_predictions
from pipeline.io.tables import table_path

# Two graphs, rows contiguous: a has four unique configs, b two with equal runtimes.
IDS = np.array(["a", "a", "a", "a", "b", "b"])
RUNTIME = np.array([4.0, 1.0, 3.0, 2.0, 5.0, 5.0])


def test_query_groups():
    starts, sizes = gbdt.query_groups(IDS)
    assert starts.tolist() == [0, 4] and sizes.tolist() == [4, 2]


def test_lambdarank_labels_are_quantile_bins_fastest_highest():
    _, sizes = gbdt.query_groups(IDS)
    # rank / size = [.75, 0, .5, .25 | .25, .25] -> bins of width 1/4 -> label = 3 - bin
    assert gbdt.lambdarank_labels(sizes, RUNTIME, 4).tolist() == [0, 3, 1, 2, 2, 2]
    assert gbdt.lambdarank_labels(sizes, RUNTIME, 2).tolist() == [0, 1, 0, 1, 1, 1]
    many = gbdt.lambdarank_labels(np.array([1000]), np.random.default_rng(0).random(1000), 32)
    assert many.min() == 0 and many.max() == 31
    assert np.ptp(np.bincount(many)) <= 1  # equal-size quantile bins
    assert len(gbdt.label_gain(32, "linear")) == 32 and gbdt.label_gain(3, "exponential") == [0.0, 1.0, 3.0]


def test_tile_target_divides_by_normalizer_and_regression_target_is_standardized():
    t = gbdt.target_runtime(np.array([10, 30, 20]), np.array([10, 10, 40]))
    assert t.tolist() == [1.0, 3.0, 0.5]
    _, sizes = gbdt.query_groups(IDS)
    y = gbdt.regression_target(sizes, RUNTIME)
    assert abs(y[:4].mean()) < 1e-12 and abs(y[:4].std() - 1) < 1e-12
    assert np.argsort(y[:4]).tolist() == [1, 3, 2, 0]  # same order as the runtimes
    assert y[4:].tolist() == [0.0, 0.0]  # a graph of equal runtimes carries no target


def test_non_contiguous_graph_rows_are_regrouped():
    ids = np.array(["a", "b", "a", "c", "b"])
    with pytest.raises(ValueError, match="contiguous"):
        gbdt.query_groups(ids)
    order = gbdt.contiguous_order(ids)
    assert ids[order].tolist() == ["a", "a", "b", "b", "c"] and order.tolist() == [0, 2, 1, 4, 3]


def test_sampling_and_query_splitting_keep_graphs_apart():
    sizes = np.array([7, 3])
    rows, new = gbdt.sample_rows(sizes, 4, shuffle=True, seed=0)
    assert new.tolist() == [4, 3]
    assert set(rows[:4].tolist()) <= set(range(7)) and sorted(rows[4:].tolist()) == [7, 8, 9]
    assert len(set(rows.tolist())) == rows.size
    assert gbdt.split_queries(np.array([10, 3]), 4).tolist() == [4, 3, 3, 3]
    assert gbdt.split_queries(sizes, None).tolist() == [7, 3]
    # LightGBM refuses lambdarank queries over 10,000 rows: bigger graphs are always split
    assert gbdt.query_size_for("lambdarank", np.array([9000, 25000]), None) == gbdt.MAX_QUERY_ROWS
    assert gbdt.query_size_for("lambdarank", np.array([9000]), None) is None
    assert gbdt.query_size_for("lambdarank", np.array([9000]), 50000) == gbdt.MAX_QUERY_ROWS
    assert gbdt.query_size_for("regression", np.array([25000]), 100) is None


def test_lightgbm_accepts_labels_gain_and_groups_and_learns_the_order():
    """A feature equal to the runtime: the fitted lambdarank must rank every graph right."""
    rng = np.random.default_rng(0)
    sizes = np.array([40] * 10)
    runtime = rng.random(400) + 0.1
    x = np.c_[runtime, rng.random(400)].astype(np.float32)
    label = gbdt.lambdarank_labels(sizes, runtime, 16)
    params = gbdt.lgb_params("lambdarank", {"min_data_in_leaf": 5, "num_leaves": 7}, 0, 1, 16, "linear")
    booster = lgb.train(params, lgb.Dataset(x, label=label, group=sizes, params=params), num_boost_round=30)
    score = gbdt.to_score(booster.predict(x), "lambdarank")
    assert gbdt.validation_score("layout", sizes, runtime, score) > 0.9
    assert gbdt.validation_score("layout", sizes, runtime, -score) < -0.9  # the sign matters


def test_ranker_fits_the_functions_settings_and_stops_early_on_valid():
    """GBDTRanker gives the module functions' labels and parameters, and its booster equals a plain
    `lgb.train` of them; on a valid set whose order is the reverse of train's, early stopping
    keeps an early round."""
    rng = np.random.default_rng(0)
    sizes = np.array([40] * 10)
    runtime = rng.random(400) + 0.1
    x = np.c_[runtime, rng.random(400)].astype(np.float32)
    model = gbdt.GBDTRanker(num_labels=16, num_boost_round=30, early_stopping_rounds=3,
                            params={"min_data_in_leaf": 5, "num_leaves": 7, "learning_rate": None})
    assert np.array_equal(model.labels(sizes, runtime), gbdt.lambdarank_labels(sizes, runtime, 16))
    params = model.lgb_params(seed=0, num_threads=1)
    assert params == gbdt.lgb_params("lambdarank", {"min_data_in_leaf": 5, "num_leaves": 7}, 0, 1, 16, "linear")
    label = model.labels(sizes, runtime)
    train = lgb.Dataset(x, label=label, group=sizes, params=params)
    alone = model.fit(params, train)
    plain = lgb.train(params, lgb.Dataset(x, label=label, group=sizes, params=params), num_boost_round=30)
    assert alone.current_iteration() == 30 and np.array_equal(alone.predict(x), plain.predict(x))
    valid = lgb.Dataset(x, label=label, group=sizes, params=params, reference=train)

    def reversed_order(preds, _data):
        return "competition", gbdt.validation_score("layout", sizes, -runtime, model.to_score(preds)), True

    rounds = []
    stopped = model.fit(params, train, valid, feval=reversed_order, callbacks=[lambda env: rounds.append(env.iteration)])
    assert len(rounds) == stopped.best_iteration + 3 < 30  # 3 rounds without a better valid score
    assert stopped.best_score["valid"]["competition"] == pytest.approx(
        gbdt.validation_score("layout", sizes, -runtime, model.to_score(stopped.predict(x))))


@pytest.mark.parametrize("knob,value,message", [("objective", "rank", "objective must be one of lambdarank, regression"),
                                                 ("label_gain", "log", "label_gain must be one of exponential, linear"),
                                                 ("num_labels", 1, "num_labels must be an integer of at least 2"),
                                                 ("num_labels", 8.0, "num_labels must be an integer")])
def test_ranker_refuses_unknown_settings(knob, value, message):
    with pytest.raises(ValueError, match=message):
        gbdt.GBDTRanker(**{knob: value})


def test_predictions_map_back_to_original_indices_through_dedup():
    # graph g: originals 0 and 3 are one unique config, 1 and 2 others; graph h: one row
    ids = np.array(["g", "g", "g", "h"])
    lengths = np.array([2, 1, 1, 2])
    flat = np.array([0, 3, 2, 1, 1, 0])
    out = gbdt.expand_to_configs(ids, lengths, flat, np.array([0.5, 0.1, 0.9, 7.0]))
    assert out["g"].tolist() == [0.5, 0.9, 0.1, 0.5]
    assert out["h"].tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="exactly once"):
        gbdt.expand_to_configs(ids[:3], lengths[:3], np.array([0, 3, 2, 0]), np.zeros(3))
    with pytest.raises(ValueError, match="out of"):
        gbdt.expand_to_configs(ids[:1], np.array([2]), np.array([0, 5]), np.zeros(1))


def test_feature_selection_drops_meta_and_excluded_columns():
    cols = {"id": False, "configs": False, "runtime": True, "normalizer": True, "cfg_0": True,
            "g_nodes": True, "name": False}
    assert gbdt.select_features(cols, numeric=cols) == ["cfg_0", "g_nodes"]
    assert gbdt.select_features(cols, ["g_*"], numeric=cols) == ["cfg_0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny generated sample taken through prune, pad and extract: `<root>/data` layout."""
    root = tmp_path_factory.mktemp("gbdt")
    d = root / "data"
    over = dict(**{"paths.data_dir": d}, jobs=1)
    sample_data.generate(stage_cfg("sample_data", **over, **{"graphs.train": 3, "graphs.valid": 2, "graphs.test": 2},
                              tile_scale=1))
    prune.run(stage_cfg("prune", **over))
    pad.run(stage_cfg("pad", **over))
    extract.run(stage_cfg("extract", **over))
    return d


@pytest.mark.slow
def test_train_gbdt_predicts_every_original_config_and_predict_mode_reproduces(tiny: Path):
    over = {"paths.data_dir": tiny, "model.num_boost_round": 20, "model.early_stopping_rounds": 5}
    train_gbdt.run(stage_cfg("train_gbdt", **over, seeds="[0,1]"))
    models = tiny / "models/sample/gbdt"
    assert (models / ".complete").is_file()
    assert sorted(p.name for p in (models / "layout/xla/random").iterdir()) == \
        ["importance.csv", "meta.json", "model_seed0.txt", "model_seed1.txt"]
    imp = pl.read_csv(models / "tile/xla/importance.csv")
    assert imp.height > 0 and imp["gain"].min() >= 0
    preds = tiny / "predictions/sample/gbdt"
    for split in ("valid", "test"):
        p = read_predictions(preds / f"{split}.parquet")  # checks 0..C-1 once per graph
        files = discover(tiny / "raw/sample", splits=[split])
        assert set(p) == {f.id for f in files}
        for f in files:
            assert p[f.id].size == read_graph(f.path, split=split).num_configs
    before = read_predictions(preds / "test.parquet")
    train_gbdt.run(stage_cfg("train_gbdt", **over, mode="predict", splits="[test]"))
    after = read_predictions(preds / "test.parquet")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # the seeds' rank average is the model's only predictions (the ensemble reads nothing else)
    assert sorted(p.name for p in preds.iterdir()) == ["test.parquet", "test.yaml", "valid.parquet", "valid.yaml"]
    table = train_gbdt.Table(table_path(tiny / "processed/sample/tables", "tile:xla", "test"), False)
    per_seed = train_gbdt.predict_table(table, train_gbdt.load_models("tile:xla", models), 1)
    assert sorted(per_seed) == ["model_seed0", "model_seed1"]
    for gid in per_seed["model_seed0"]:
        mean = np.mean([ens.normalize(per_seed[n][gid]) for n in per_seed], axis=0)
        # the mean rank, with its ties broken by the scores (models.ensemble.average_seeds)
        assert np.allclose(after[gid], mean, atol=0.25 / ((mean.size - 1) * len(per_seed)))
        lower = np.subtract.outer(mean, mean) < 0
        assert (np.subtract.outer(after[gid], after[gid])[lower] < 0).all()
    # a retrain with one seed leaves no model of the other seed for mode=predict to average in
    train_gbdt.run(stage_cfg("train_gbdt", **over, **{"model.objective": "regression"}, splits="[test]"))
    assert not (models / "tile/xla/model_seed1.txt").exists()


@pytest.mark.parametrize("knob,value,message", [("model.label_gain", "exponentail", "label_gain must be one of exponential, linear"),
                                                 ("model.num_labels", 1, "num_labels must be an integer of at least 2"),
                                                 ("model.objective", "rank", "objective must be one of lambdarank"),
                                                 ("seeds", "[]", "seeds must list at least one seed")])
def test_config_mistakes_fail_in_one_sentence(tmp_path: Path, knob, value, message):
    with pytest.raises(DataError, match=message) as e:
        train_gbdt.run(stage_cfg("train_gbdt", **{"paths.data_dir": tmp_path, knob: value}))
    assert e.value.path is None and "\n" not in str(e.value)


def test_predict_without_models_or_tables_says_so(tmp_path: Path):
    with pytest.raises(DataError, match="no GBDT tables"):
        train_gbdt.run(stage_cfg("train_gbdt", **{"paths.data_dir": tmp_path}, mode="predict"))


def test_graph_normalize_standardizes_within_each_graph() -> None:
    col = np.array([1.0, 2.0, 3.0, 100.0, 100.0, 10.0, 30.0])
    sizes = np.array([3, 2, 2])
    z = gbdt.graph_normalize(col, sizes)
    # each graph centred and scaled alone: a graph's level and scale are gone, its order stays
    np.testing.assert_allclose(z[:3], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert z[3:5].tolist() == [0.0, 0.0] and z[5:].tolist() == [-1.0, 1.0]
    np.testing.assert_allclose(gbdt.graph_normalize(col * 7 + 3, sizes), z, rtol=1e-5)


def test_feature_norm_names_say_how_to_rebuild_the_inputs() -> None:
    names = gbdt.feature_names(["cnt_a", "g_nodes", "ct_b"], "graph")
    assert names == ["z_cnt_a", "g_nodes", "z_ct_b"]
    assert [gbdt.stored_column(n) for n in names] == ["cnt_a", "g_nodes", "ct_b"]
    assert gbdt.feature_names(["cnt_a"], "none") == ["cnt_a"]
    m = gbdt.GBDTRanker(feature_norm={"layout": "graph"})
    assert m.norm("layout") == "graph" and m.norm("tile") == "none"
    with pytest.raises(ValueError, match="feature_norm"):
        gbdt.GBDTRanker(feature_norm={"layout": "rank"})
