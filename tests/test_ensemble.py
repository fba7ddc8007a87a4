"""Ensemble math on synthetic scores whose right weights are known, and the stage on a tiny sample."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
import yaml

from builders import cfg as stage_cfg
from models import ensemble as ens
from pipeline import ensemble as stage, sample_data
from pipeline.baseline import baseline_scores
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover, split_id
from pipeline.io.predictions import read_predictions, write_predictions
from pipeline.io.runtimes import load_runtimes, score_rows
from pipeline.io.submission_csv import rows_from_predictions


def test_normalize_rank_and_minmax():
    s = np.array([3.0, 1.0, 3.0, 10.0])
    assert ens.normalize(s, "rank").tolist() == [1.5 / 3, 0.0, 1.5 / 3, 1.0]  # ties share their mean rank
    assert ens.normalize(s, "minmax").tolist() == [2 / 9, 0.0, 2 / 9, 1.0]
    assert ens.normalize(np.full(3, 7.0), "minmax").tolist() == [0.0, 0.0, 0.0]
    assert ens.normalize(np.array([5.0]), "rank").tolist() == [0.0]
    with pytest.raises(ValueError, match="unknown normalization"):
        ens.normalize(s, "zscore")


def test_simplex_grid_starts_with_one_hots():
    g = ens.simplex_grid(3, 4)
    assert g.shape == (comb(4 + 2, 2), 3)
    assert np.array_equal(g[:3], np.eye(3))
    assert np.allclose(g.sum(1), 1) and (g >= 0).all()
    assert len({tuple(r) for r in g}) == len(g)


def _layout_task(rng, graphs=12, configs=60):
    runtimes = {f"layout:xla:random:g{i}": rng.random(configs) + 0.1 for i in range(graphs)}
    return runtimes


def test_weights_favor_the_member_that_knows_the_truth():
    rng = np.random.default_rng(0)
    rt = _layout_task(rng)
    good = {g: r + rng.normal(0, 0.1, r.size) for g, r in rt.items()}
    noise = {g: rng.random(r.size) for g, r in rt.items()}
    members = {"noise": ens.normalize_all(noise), "good": ens.normalize_all(good)}
    fit = ens.fit_weights("layout", members, rt, steps=10, refine=2)
    assert fit["weights"]["good"] > 0.8 > fit["weights"]["noise"]
    assert fit["members"]["good"] > 0.5 > abs(fit["members"]["noise"])
    assert fit["score"] >= fit["members"]["good"]


def test_two_independent_noisy_members_blend_better_than_either():
    rng = np.random.default_rng(1)
    rt = _layout_task(rng)
    a = {g: r + rng.normal(0, 0.3, r.size) for g, r in rt.items()}
    b = {g: r + rng.normal(0, 0.3, r.size) for g, r in rt.items()}
    fit = ens.fit_weights("layout", {"a": ens.normalize_all(a), "b": ens.normalize_all(b)}, rt, steps=10)
    assert 0.25 < fit["weights"]["a"] < 0.75  # symmetric noise: weights near 1/2
    assert fit["score"] > max(fit["members"].values()) + 0.02


@pytest.mark.parametrize("kind,how", [("layout", "rank"), ("tile", "minmax"), ("layout", "minmax")])
def test_ensemble_never_worse_than_best_member_on_its_fit_data(kind, how):
    rng = np.random.default_rng(2)
    for trial in range(4):
        rt = {f"{kind}:g{i}": rng.random(30) + 0.5 for i in range(6)}
        members = {f"m{k}": ens.normalize_all({g: rng.random(30) + (k == trial % 3) * r for g, r in rt.items()}, how)
                   for k in range(3)}
        fit = ens.fit_weights(kind, members, rt, steps=4, refine=1)
        assert fit["score"] >= max(fit["members"].values())
        again = ens.collection_score(kind, ens.blend(members, fit["weights"], list(rt)), rt)
        assert again == pytest.approx(fit["score"])
        for m in members:  # each member alone scores what the fit says
            assert ens.collection_score(kind, members[m], rt) == pytest.approx(fit["members"][m])


def test_average_seeds_means_normalized_runs():
    a = {"x": np.array([1.0, 2.0, 3.0])}
    b = {"x": np.array([30.0, 20.0, 10.0])}
    both = ens.average_seeds([a, b])["x"]
    assert np.ptp(both) == 0 and both[0] == pytest.approx(0.5, abs=0.1)  # reversed runs: every config ties
    assert ens.average_seeds([a])["x"].tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="different graphs"):
        ens.average_seeds([a, {"y": np.zeros(3)}])


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Tiny valid and test raw files plus two members: baseline, and `oracle` (valid runtimes
    plus noise of a fifth of each graph's spread) that should earn most of the weight. Stale `oracle/seed*/` predictions of the
    reverse order lie beside it: the ensemble must read `oracle/<split>.parquet` only."""
    d = tmp_path_factory.mktemp("ens") / "data"
    sample_data.generate(stage_cfg("sample_data", **{"paths.data_dir": d, "graphs.valid": 3, "graphs.test": 2},
                              splits="[valid,test]", tile_scale=1))
    rng = np.random.default_rng(0)
    pred = d / "predictions/sample"
    for split in ("valid", "test"):
        files = discover(d / "raw/sample", splits=[split])
        write_predictions(pred / "baseline" / f"{split}.parquet", {f.id: baseline_scores(f, 512) for f in files})
        rt = load_runtimes(files) if split == "valid" else {f.id: rng.random(baseline_scores(f, 512).size) for f in files}
        # noise a fifth of each graph's spread: the oracle knows the order well wherever runtimes nearly tie
        write_predictions(pred / "oracle" / f"{split}.parquet",
                          {g: np.log(r) + rng.normal(0, 0.2 * np.log(r).std() + 1e-9, r.size) for g, r in rt.items()})
        for seed in (0, 1):
            write_predictions(pred / "oracle" / f"seed{seed}" / f"{split}.parquet", {g: -r for g, r in rt.items()})
    return d


@pytest.mark.slow
def test_ensemble_stage_fits_applies_and_beats_every_member(raw: Path):
    over = {"paths.data_dir": raw, "members": "[gnn,oracle,baseline]"}
    doc = stage.run(stage_cfg("ensemble", **over))
    weights = json.loads((raw / "models/sample/ensemble/weights.json").read_text())
    assert weights == json.loads(json.dumps(doc)) and (raw / "models/sample/ensemble/.complete").is_file()
    assert set(weights["members"]) == {"oracle", "baseline"}  # gnn has no predictions: left out
    files = discover(raw / "raw/sample", splits=["valid"])
    rt = load_runtimes(files)
    blended = read_predictions(raw / "predictions/sample/ensemble/valid.parquet")
    got = score_rows(rows_from_predictions(blended, files), rt)["collections"]
    for c, entry in weights["collections"].items():
        assert entry["weights"]["oracle"] >= 0.5
        assert got[c] == pytest.approx(entry["scores"]["ensemble"])
        assert entry["scores"]["ensemble"] >= max(entry["scores"]["oracle"], entry["scores"]["baseline"])
    base = score_rows(rows_from_predictions(read_predictions(raw / "predictions/sample/baseline/valid.parquet"), files), rt)
    for c, s in base["collections"].items():
        assert weights["collections"][c]["scores"]["baseline"] == pytest.approx(s)
    assert {split_id(g)[0] for g in blended} == set(weights["collections"])
    # mode=apply on test reuses the saved weights and reproduces the fit run's test blend
    fitted = read_predictions(raw / "predictions/sample/ensemble/test.parquet")
    (raw / "predictions/sample/ensemble/test.parquet").unlink()
    stage.run(stage_cfg("ensemble", **over, mode="apply", splits="[test]"))
    applied = read_predictions(raw / "predictions/sample/ensemble/test.parquet")
    assert set(applied) == set(fitted) and all(np.array_equal(applied[g], fitted[g]) for g in fitted)


@pytest.mark.slow
def test_holdout_scores_the_weights_on_graphs_they_were_not_fitted_on(raw: Path, tmp_path: Path):
    pred = tmp_path / "pred"
    for m in ("oracle", "baseline"):
        (pred / m).mkdir(parents=True)
        (pred / m / "valid.parquet").write_bytes((raw / "predictions/sample" / m / "valid.parquet").read_bytes())
    doc = stage.run(stage_cfg("ensemble", **{"paths.data_dir": raw}, members="[oracle,baseline]", holdout=True,
                         predictions=pred, weights=tmp_path / "w.json", splits="[valid]"))
    files = discover(raw / "raw/sample", splits=["valid"])
    rt = load_runtimes(files)
    per_graph = {m: score_rows(rows_from_predictions(read_predictions(pred / m / "valid.parquet"), files), rt)["per_graph"]
                 for m in ("oracle", "baseline", "ensemble")}
    assert doc["holdout"] is True and doc["collections"]
    for c, entry in doc["collections"].items():
        ids = sorted(g for g in rt if split_id(g)[0] == c)
        held = ids[1::2]  # every other graph by ID is held out, the rest fitted on
        assert entry["graphs"] == len(ids) - len(held) and entry["holdout"]["graphs"] == len(held) > 0
        for m, s in entry["holdout"]["scores"].items():
            assert s == pytest.approx(np.mean([per_graph[m][g] for g in held])), (c, m)
        fitted = ids[0::2]
        assert entry["scores"]["ensemble"] == pytest.approx(np.mean([per_graph["ensemble"][g] for g in fitted]))


def test_apply_without_weights_or_members_says_so(raw: Path, tmp_path: Path):
    with pytest.raises(DataError, match="weights not found"):
        stage.run(stage_cfg("ensemble", **{"paths.data_dir": raw}, mode="apply", weights=tmp_path / "w.json"))
    with pytest.raises(DataError, match="no member of gnn has predictions"):
        stage.run(stage_cfg("ensemble", **{"paths.data_dir": raw}, members="[gnn]", weights=tmp_path / "w.json"))


@pytest.mark.parametrize("knob,value,message", [("blender.method", "vote", "method must be auto or one of search"),
                                                 ("blender.methods", "[best,vote]", "methods must list some of search"),
                                                 ("blender.normalize", "zscore", "normalize must be one of rank, minmax")])
def test_blender_mistakes_fail_in_one_sentence(tmp_path: Path, knob, value, message):
    with pytest.raises(DataError, match=message) as e:
        stage.run(stage_cfg("ensemble", **{"paths.data_dir": tmp_path, knob: value}))
    assert e.value.path is None and e.value.key == "blender" and "\n" not in str(e.value)


def test_apply_blends_with_the_normalization_the_weights_were_fitted_with(raw: Path, tmp_path: Path):
    pred = tmp_path / "pred"
    for m in ("oracle", "baseline"):
        for split in ("valid", "test"):
            (pred / m).mkdir(parents=True, exist_ok=True)
            (pred / m / f"{split}.parquet").write_bytes((raw / "predictions/sample" / m / f"{split}.parquet").read_bytes())
    over = {"paths.data_dir": raw, "members": "[oracle,baseline]", "predictions": pred, "weights": tmp_path / "w.json"}
    stage.run(stage_cfg("ensemble", **over, **{"blender.normalize": "minmax", "blender.method": "equal"}))
    fitted = read_predictions(pred / "ensemble/test.parquet")
    stage.run(stage_cfg("ensemble", **over, mode="apply", splits="[test]"))  # blender.normalize=rank unless told
    applied = read_predictions(pred / "ensemble/test.parquet")
    assert fitted.keys() == applied.keys() and all(np.array_equal(fitted[g], applied[g]) for g in fitted)
    members = {m: read_predictions(pred / m / "test.parquet") for m in ("oracle", "baseline")}
    by_rank = ens.blend({m: ens.normalize_all(p, "rank") for m, p in members.items()}, {"oracle": 0.5, "baseline": 0.5}, list(fitted))
    assert any(not np.allclose(by_rank[g], applied[g]) for g in fitted)  # minmax, not the default rank
    saved = yaml.safe_load((pred / "ensemble/test.yaml").read_text())
    assert saved["blender"]["normalize"] == "minmax"


def test_out_of_fold_scores_each_graph_with_weights_fitted_on_the_others():
    """Member `a` is right on graphs g0 and g1 and reversed on g2; member `b` the opposite. Left
    out, each graph is scored with the best member of the other two graphs."""
    rt = {f"g{i}": np.arange(5.0, 0.0, -1.0) for i in range(3)}
    right, wrong = rt["g0"].copy(), -rt["g0"]
    members = {"a": {"g0": right, "g1": right, "g2": wrong}, "b": {"g0": wrong, "g1": wrong, "g2": right}}
    members = {m: ens.normalize_all(p) for m, p in members.items()}
    # g0 left out: a wins on {g1, g2}? a: (1 - 1) / 2 = 0, b: 0 -> tie, a (member order): right on g0
    # g1 left out: same, right; g2 left out: a wins {g0, g1} -> reversed on g2
    assert ens.out_of_fold("best", "layout", members, rt) == pytest.approx((1 + 1 - 1) / 3)
    assert ens.out_of_fold("equal", "layout", members, rt) == pytest.approx(-1.0)  # a + b: all tied, index order
    assert np.isnan(ens.out_of_fold("best", "layout", members, {"g0": rt["g0"]}))
    method, oof = ens.choose_method("layout", members, rt, ["equal", "best"])
    assert method == "best" and oof["best"] > oof["equal"]
    w = ens.method_weights("shrink", "layout", members, rt, shrink=0.5)
    assert sum(w.values()) == pytest.approx(1.0) and min(w.values()) >= 0.25


def test_auto_keeps_the_best_member_unless_a_blend_wins_beyond_the_spread_of_its_gains():
    # the blend's mean is higher, but one graph fails badly: a gain within one standard error
    fragile = {"best": np.array([0.99, 0.99, 0.99, 0.99, 0.99]), "search": np.array([1.0, 1.0, 1.0, 1.0, 0.96])}
    assert np.mean(fragile["search"]) > np.mean(fragile["best"])
    assert ens.pick_method(fragile) == "best"
    assert ens.pick_method(fragile, min_gain_se=0.0) == "search"  # the plain best mean
    steady = {"best": np.array([0.80, 0.70, 0.60, 0.75]), "search": np.array([0.83, 0.72, 0.64, 0.77])}
    assert ens.pick_method(steady) == "search"
    assert ens.pick_method({"equal": np.array([0.5, 0.6]), "shrink": np.array([0.55, 0.4])}) == "equal"  # no best: the top mean
    with pytest.raises(ValueError):
        ens.Blender(method="nope")


def test_weights_file_keeps_out_of_fold_scores(raw: Path):
    doc = stage.run(stage_cfg("ensemble", **{"paths.data_dir": raw}, members="[oracle,baseline]"))
    for c, entry in doc["collections"].items():
        assert set(entry["out_of_fold"]) == {"best", "shrink", "equal", "search"}, c
        top = max(entry["out_of_fold"], key=lambda m: (entry["out_of_fold"][m], -["best", "shrink", "equal", "search"].index(m)))
        assert entry["method"] in (top, "best")  # a blend only where its gain over best is beyond noise
    assert "test" in doc["served"]


def test_seed_average_breaks_rank_ties_by_scores_but_keeps_copies_equal() -> None:
    from models.ensemble import average_seeds

    # configs 0 and 1 tie on mean rank ((0 + 1) / 2 either way); the scores favour 0; 2 and 3 are copies
    a = {"g": np.array([0.0, 0.9, 5.0, 5.0])}
    b = {"g": np.array([0.2, 0.1, 5.0, 5.0])}
    out = average_seeds([a, b], "rank")["g"]
    assert out[0] < out[1] < out[2] == out[3]
    # distinct mean ranks keep their order whatever the scores
    c = {"g": np.array([0.0, 1.0, 100.0, 2.0])}
    d = {"g": np.array([0.0, 1.0, 1.5, 100.0])}
    out = average_seeds([c, d], "rank")["g"]
    assert np.argsort(out).tolist()[:2] == [0, 1]
