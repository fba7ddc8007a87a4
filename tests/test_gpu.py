"""The CUDA paths, run only where a CUDA device is present (`make gpu-check` runs them there):
a bf16 and an fp16 (grad-scaled) training run, its checkpoint reloaded to predict the same
scores, and a 1-rank `torchrun` run on nccl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import build_tiny_tree, cfg
from conftest import ROOT
from pipeline import train_gnn
from pipeline.io.catalog import discover
from pipeline.io.npz import read_graph
from pipeline.io.predictions import read_predictions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (torch.cuda.is_available() is False): these run on a GPU machine, `make gpu-check`")

COLLECTION = "layout:nlp:random"
SMALL = ["device=cuda", f"collections=[{COLLECTION}]", "model.hidden=16", "model.layers=2", "k.random=24",
         "valid_permutations=1", "infer_permutations=2", "progress=false", "lr=3e-3", "epochs=3", "samples_per_graph=4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_tree(tmp_path_factory.mktemp("tiny_gpu"))


def run_stage(tiny: dict[str, Path], out: Path, *extra: str) -> dict:
    return train_gnn.run(cfg("train_gnn", f"data={tiny['gnn']}", f"out={out / 'models'}",
                             f"predictions={out / 'pred'}", *SMALL, *extra))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_training_saves_a_checkpoint_that_reloads_to_the_same_predictions(tiny, tmp_path: Path, dtype: str) -> None:
    summary = run_stage(tiny, tmp_path / "train", f"amp_dtype={dtype}")
    losses = summary[COLLECTION]["train_loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    ck = torch.load(tmp_path / "train/models/layout/nlp/random/best.pt", weights_only=False, map_location="cpu")
    assert ck["config"]["amp_dtype"] == dtype
    trained = read_predictions(tmp_path / "train/pred/gnn/valid.parquet")
    # a fresh process state: the checkpoint alone drives the prediction
    run_stage(tiny, tmp_path / "train", f"amp_dtype={dtype}", "mode=predict", f"predictions={tmp_path / 'again'}")
    again = read_predictions(tmp_path / "again/gnn/valid.parquet")
    for f in discover(tiny["raw"], collections=[COLLECTION], splits=["valid"]):
        assert trained[f.id].size == read_graph(f.path).num_configs
        assert np.corrcoef(trained[f.id], again[f.id])[0, 1] > 0.999


def test_torchrun_one_rank_on_nccl(tiny, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=1", "-m", "pipeline.train_gnn", f"data={tiny['gnn']}",
           f"out={tmp_path / 'models'}", f"predictions={tmp_path / 'pred'}", *SMALL, f"hydra.run.dir={tmp_path / 'logs'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "nccl" in log, log[-3000:]
    assert (tmp_path / "models/layout/nlp/random/best.pt").is_file()
    pred = read_predictions(tmp_path / "pred/gnn/test.parquet")
    assert set(pred) == {f.id for f in discover(tiny["raw"], collections=[COLLECTION], splits=["test"])}
