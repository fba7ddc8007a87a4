"""Optuna sweeps through hydra: each training stage's main returns its valid metric, and a
search under conf/hparams_search/ runs trials that write only into their own sweep folders."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builders import build_tiny_tree
from conftest import ROOT
from pipeline import train_gbdt, train_gnn


def test_valid_metric_is_the_mean_over_collections() -> None:
    assert train_gnn.valid_metric({"a": {"best": 0.2}, "b": {"best": 0.6}, "c": {"best": None}}) == pytest.approx(0.4)
    assert train_gnn.valid_metric({}) == -math.inf
    runs = {"a": {"runs": [{"valid_score": 0.1}, {"valid_score": 0.3}]}, "b": {"runs": [{"valid_score": 0.8}]},
            "c": {"runs": [{"valid_score": None}]}}
    assert train_gbdt.valid_metric(runs) == pytest.approx((0.2 + 0.8) / 2)
    assert train_gbdt.valid_metric({"c": {"runs": [{"valid_score": None}]}}) == -math.inf


@pytest.mark.slow
def test_gnn_optuna_sweep_runs_trials_in_their_own_folders(tmp_path: Path) -> None:
    tiny = build_tiny_tree(tmp_path / "data")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "pipeline.train_gnn", "-m", "hparams_search=gnn_optuna", f"data={tiny['gnn']}",
           "collections=[layout:nlp:random]", "epochs=2", "samples_per_graph=2", "k.random=16",
           "valid_permutations=1", "infer_permutations=1", "device=cpu", "hydra.sweeper.n_trials=2",
           "model.hidden=choice(8,16)", "model.layers=choice(1,2)",
           f"paths.data_dir={tmp_path / 'pipeline'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and -1.0 <= result["best_value"] <= 1.0
    assert set(result["best_params"]) >= {"lr", "model.hidden", "model.layers"}
    for trial in ("0", "1"):
        assert (sweep / trial / "models" / "layout" / "nlp" / "random" / "best.pt").is_file()
        assert (sweep / trial / "predictions" / "gnn" / "valid.parquet").is_file()
    assert not (tmp_path / "pipeline").exists()  # the pipeline's own models are never touched
