"""`torchrun --nproc_per_node=2 -m pipeline.train_gnn` on CPU (gloo): two ranks train one model
on their shards of the graphs, it learns, and rank 0 writes checkpoints and predictions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import build_tiny_tree
from conftest import ROOT
from pipeline.io.catalog import discover
from pipeline.io.npz import read_graph
from pipeline.io.predictions import read_predictions

TORCHRUN = Path(sys.executable).parent / "torchrun"  # beside the interpreter running the tests


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_learn_and_write_predictions(tmp_path: Path) -> None:
    if not TORCHRUN.is_file():
        pytest.skip(f"{TORCHRUN} not found (make venv)")
    tiny = build_tiny_tree(tmp_path / "data")
    out = tmp_path / "run"
    collection = "layout:nlp:random"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "pipeline.train_gnn",
           f"data={tiny['gnn']}", f"out={out / 'models'}", f"predictions={out / 'pred'}", f"collections=[{collection}]",
           "device=cpu", "epochs=8", "samples_per_graph=4", "model.hidden=16", "model.layers=2", "k.random=24",
           "valid_permutations=1", "infer_permutations=2", "progress=false", "lr=3e-3", f"hydra.run.dir={tmp_path / 'logs'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 ranks" in proc.stdout + proc.stderr  # it really ran distributed
    ck = torch.load(out / "models/layout/nlp/random/last.pt", weights_only=False)
    # 2 train graphs x 4 samples = 8 per epoch, shared by 2 ranks: 4 steps each per epoch
    assert ck["step"] == 8 * 4 and len(ck["history"]) == 8
    losses = [h["train_loss"] for h in ck["history"]]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    for split in ("valid", "test"):
        pred = read_predictions(out / "pred" / "gnn" / f"{split}.parquet")
        files = discover(tiny["raw"], collections=[collection], splits=[split])
        assert set(pred) == {f.id for f in files}
        assert all(pred[f.id].size == read_graph(f.path).num_configs for f in files)
    assert (out / "models" / ".complete").is_file()
