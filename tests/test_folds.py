"""Folds over graphs for every trainer (pipeline.train.folds): the assignment, the views, the
out-of-fold predictions, and `make all FOLDS=3` to a validated submission."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from pipeline.io.catalog import discover, graph_id
from pipeline.io.npz import read_graph
from pipeline.io.predictions import read_predictions
from pipeline.io.submission_csv import validate_submission
from pipeline.train import folds


def test_assignment_is_by_graph_deterministic_and_covers_every_graph_once() -> None:
    groups = {f"c:g{i}": f"h{i}" for i in range(11)}
    a = folds.assign_folds(groups, 5, seed=0)
    assert a == folds.assign_folds(dict(reversed(list(groups.items()))), 5, seed=0)  # order of the input: no matter
    assert set(a) == set(groups) and set(a.values()) == set(range(5))
    sizes = np.bincount(list(a.values()))
    assert sizes.max() - sizes.min() <= 1  # round-robin over groups
    assert folds.assign_folds(groups, 5, seed=1) != a  # the seed changes which graphs share a fold


def test_identical_graphs_share_a_fold() -> None:
    groups = {"c:a": "x", "c:b": "x", "c:c": "y", "c:d": "z", "c:e": "x"}
    for seed in range(5):
        a = folds.assign_folds(groups, 3, seed)
        assert a["c:a"] == a["c:b"] == a["c:e"]
        assert len(set(a.values())) == 3


def test_fewer_groups_than_folds_gives_fewer_folds() -> None:
    a = folds.assign_folds({"c:a": "x", "c:b": "y"}, 5, seed=0)
    assert sorted(a.values()) == [0, 1]
    with pytest.raises(ValueError, match="at least 2"):
        folds.assign_folds({"c:a": "x"}, 1, seed=0)


def test_average_runs_covers_the_union_of_runs() -> None:
    r1 = {"g": np.array([3.0, 1.0, 2.0]), "h": np.array([1.0, 2.0])}
    r2 = {"g": np.array([1.0, 3.0, 2.0])}
    out = folds.average_runs([r1, r2])
    assert set(out) == {"g", "h"}
    assert np.argsort(out["h"]).tolist() == [0, 1]
    assert out["g"][2] == pytest.approx(out["g"][0])  # the two runs disagree on 0 and 1 and agree on 2


def _tensors(root: Path, collection_dir: str, split: str, stem: str, opcodes: list[int]) -> None:
    d = root / "gnn" / collection_dir / split
    d.mkdir(parents=True, exist_ok=True)
    n = len(opcodes)
    np.savez(d / f"{stem}.npz", node_opcode=np.array(opcodes), edge_index=np.zeros((0, 2), np.int64),
             node_feat=np.zeros((n, 2), np.float32))


def test_plan_keeps_duplicates_together_and_says_when_folds_are_fewer(tmp_path: Path, caplog) -> None:
    processed = tmp_path / "processed"
    for i, stem in enumerate(["a", "b", "c"]):
        _tensors(processed, "layout/xla/random", "train", stem, [1, 2 + i])
    _tensors(processed, "layout/xla/random", "valid", "a_copy", [1, 2])  # identical to a
    _tensors(processed, "layout/nlp/random", "train", "only", [5])  # one labelled graph
    _tensors(processed, "layout/nlp/random", "test", "t", [5])
    (processed / ".complete").write_text("{}")
    caplog.set_level("INFO")
    plan = folds.make_plan(processed, 5, seed=0)
    c = "layout:xla:random"
    assert plan.folds[c] == 3 and "fewer than folds=5: 3 folds" in caplog.text
    assert plan.fold[c][graph_id(c, "a")] == plan.fold[c][graph_id(c, "a_copy")]
    assert "layout:nlp:random" in plan.skipped and "no folds" in caplog.text
    # the fold view: the held-out fold as valid, the rest as train, test as it is
    for f in range(3):
        v = folds.view(plan, f, "gnn") / "layout/xla/random"
        held = {p.stem for p in (v / "valid").glob("*.npz")}
        rest = {p.stem for p in (v / "train").glob("*.npz")}
        assert held and not held & rest and held | rest == {"a", "b", "c", "a_copy"}
        assert held == {plan.files[g] for g in plan.ids(c, f)}
    assert not (folds.view(plan, 0, "gnn") / "layout/nlp/random/train").exists()  # skipped: no fold runs
    final = folds.view(plan, None, "gnn")
    assert {p.stem for p in (final / "layout/nlp/random/train").glob("*.npz")} == {"only"}
    assert {p.stem for p in (final / "layout/nlp/random/test").glob("*.npz")} == {"t"}
    # cached, and rebuilt when the extract stage has run again
    assert folds.make_plan(processed, 5, seed=0).fold == plan.fold
    _tensors(processed, "layout/xla/random", "train", "d", [7, 7, 7])
    import os
    import time
    os.utime(processed / ".complete", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert graph_id(c, "d") in folds.make_plan(processed, 5, seed=0).fold[c]


SMALL = "graphs.train=3 graphs.valid=2 graphs.test=2 tile_scale=1"


@pytest.mark.slow
def test_make_all_with_folds_writes_out_of_fold_predictions_and_a_valid_submission(tmp_path: Path) -> None:
    subs, reports, data_dir = tmp_path / "subs", tmp_path / "reports", tmp_path / "data"
    args = ["make", "all", "FOLDS=3", f"DATA_DIR={data_dir}", f"SUBMISSIONS={subs}", f"REPORTS={reports}",
            f"SAMPLE_ARGS={SMALL}", "GNN_ARGS=experiment=gnn_quick seeds=[0,1]"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    raw = data_dir / "raw" / "sample"
    labelled = {f.id: read_graph(f.path, split=f.split).num_configs for f in discover(raw, splits=["train", "valid"])}
    pred = data_dir / "predictions" / "sample"
    for member in ("baseline", "gbdt", "analytical", "gnn"):
        oof = read_predictions(pred / member / "oof.parquet")
        want = {g: n for g, n in labelled.items() if member != "analytical" or g.startswith("layout")}
        assert {g: s.size for g, s in oof.items()} == want, member  # every config of every labelled graph, once
        assert all(np.isfinite(s).all() for s in oof.values()), member
    runs = json.loads((data_dir / "models" / "sample" / "gnn" / "runs.json").read_text())
    assert sorted(r["name"] for r in runs["runs"]) == [f"fold{f}_seed{s}" for f in range(3) for s in (0, 1)]
    weights = json.loads((data_dir / "models" / "sample" / "ensemble" / "weights.json").read_text())
    assert weights["out_of_fold_fit"] is True and weights["fit_split"] == "oof"
    assert weights["fit_graphs"] == len(labelled)
    sub = subs / "submission.csv"
    files = discover(raw, splits=["test"])
    report = validate_submission(sub, files)
    assert not report.errors, report.errors
    # make rank uses every fold model and gives the submission's order
    with sub.open() as fh:
        by_id = {r["ID"]: [int(v) for v in r["TopConfigs"].split(";")] for r in csv.DictReader(fh)}
    f = next(f for f in files if f.collection == "layout:xla:random")
    out = tmp_path / "rank.json"
    proc = subprocess.run(["make", "rank", f"DATA_DIR={data_dir}", f"FILE={f.path}", f"OUT={out}", "TOP=3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(out.read_text())["order"][: len(by_id[f.id])] == by_id[f.id]


def test_training_cost_counts_models_and_graphs_seen() -> None:
    # 5 folds over 8 train + 2 valid graphs: each fold model sees 8 of the 10, 5 of them = 40 graphs, 5x the 8 of one plain run
    assert folds.training_cost(5, 1, False, 8, 2) == {"models": 5, "multiple": 5.0}
    # plus a final fit on all 10 (10 / 8 more), everything twice over 2 seeds
    assert folds.training_cost(5, 2, True, 8, 2) == {"models": 12, "multiple": pytest.approx(2 * (40 + 10) / 8)}
    assert folds.training_cost(0, 3, False, 8, 2) == {"models": 3, "multiple": 3.0}
    assert folds.training_cost(4, 1, False, 8, 2, fold_valid=False)["multiple"] == pytest.approx(4 * 6 / 8)


def test_rehearsal_plan_only_prints_the_setting_cost(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.rehearsal", "plan_only=true", "folds=5", "final=true",
                           "gnn_seeds=2", f"paths.reports={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| layout:xla:default"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    want = folds.training_cost(5, 1, True, 61, 7)
    assert cells[2] == str(want["models"]) and cells[4] == str(folds.training_cost(5, 2, True, 61, 7)["models"])
    assert float(cells[3]) == pytest.approx(want["multiple"], abs=0.01)


def test_the_trainer_skeleton_trains_predicts_and_stamps(tmp_path: Path) -> None:
    """pipeline.train.trainer: train mode fits each collection, removes stale predictions, writes
    one file per split and the stamp last; predict mode only predicts; a bad mode is one sentence."""
    from omegaconf import OmegaConf

    from pipeline.core.errors import DataError
    from pipeline.io.predictions import predictions_path, read_predictions
    from pipeline.train import trainer

    pred, models = tmp_path / "pred", tmp_path / "models"
    cfg = OmegaConf.create({"mode": "train", "splits": ["valid", "test"], "predictions": str(pred), "name": "m", "models": str(models)})
    stale = predictions_path(pred, "m", "test")
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    fitted = []
    metas = trainer.run_collections(cfg, ["tile:xla", "layout:xla:random"], fit=lambda c: fitted.append(c) or {"c": c},
                                    predict=lambda c, split: {f"{c}:{split}": np.arange(3.0)} if split == "valid" else {},
                                    desc="t")
    assert fitted == ["tile:xla", "layout:xla:random"] and set(metas) == set(fitted)
    assert set(read_predictions(predictions_path(pred, "m", "valid"))) == {"tile:xla:valid", "layout:xla:random:valid"}
    assert not stale.exists() and (models / ".complete").is_file()
    cfg.mode = "predict"
    assert trainer.run_collections(cfg, ["tile:xla"], fit=lambda c: 1 / 0, predict=lambda c, s: {}, desc="t") == {}
    cfg.mode = "fit"
    with pytest.raises(DataError, match="mode must be train or predict, got 'fit'"):
        trainer.run_collections(cfg, [], fit=lambda c: None, predict=lambda c, s: {}, desc="t")
