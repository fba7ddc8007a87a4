"""`make all` from raw files to a validated submission, on a small embedded sample."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline.io.catalog import discover
from pipeline.io.submission_csv import validate_submission

SMALL = "graphs.train=3 graphs.valid=2 graphs.test=2 tile_scale=1"
QUICK_GNN = "experiment=gnn_quick"


@pytest.mark.slow
def test_make_all_writes_a_valid_submission(tmp_path: Path) -> None:
    subs, reports, data_dir = tmp_path / "subs", tmp_path / "reports", tmp_path / "data"
    args = ["make", "all", f"DATA_DIR={data_dir}", f"SUBMISSIONS={subs}", f"REPORTS={reports}", f"SAMPLE_ARGS={SMALL}",
            f"GNN_ARGS={QUICK_GNN}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and " -m pipeline." not in again.stdout, again.stdout  # settled: no stage runs
    sub = subs / "submission.csv"
    files = discover(data_dir / "raw" / "sample", splits=["test"])
    assert len(files) == 2 * 5
    report = validate_submission(sub, files)
    assert not report.errors, report.errors
    with sub.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["ID"] for r in rows} == {f.id for f in files}
    assert len(list(subs.glob("sample_ensemble_test_*.csv"))) == 1  # the kept copy
    for model in ("baseline", "gbdt", "gnn", "ensemble"):
        assert (data_dir / "predictions" / "sample" / model / "test.parquet").is_file(), model
    validation = json.loads((reports / "sample" / "validation.json").read_text())
    assert {"baseline", "gbdt", "gnn", "ensemble"} <= set(validation["models"])
    scores = json.loads((reports / "sample" / "evaluation_valid.json").read_text())
    assert set(scores["collections"]) == {"tile:xla", "layout:xla:default", "layout:xla:random",
                                          "layout:nlp:default", "layout:nlp:random"}
    assert -1.0 <= scores["score"] <= 2.0
    # make rank on one test file of each kind gives the order the submission wrote for it
    by_id = {r["ID"]: [int(v) for v in r["TopConfigs"].split(";")] for r in rows}
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    for f in (next(f for f in files if f.kind == "tile"), next(f for f in files if f.collection == "layout:xla:random")):
        out = tmp_path / f"rank-{f.stem}.json"
        proc = subprocess.run(["make", "rank", f"DATA_DIR={data_dir}", f"FILE={f.path}", f"OUT={out}", "TOP=3"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        order = json.loads(out.read_text())["order"]
        assert order[: len(by_id[f.id])] == by_id[f.id], f.id
        assert "ranked by ensemble" in proc.stdout and proc.stdout.count("\n") >= 5, proc.stdout
    # a program of a real frontend, from its HLO text, through the trained models
    out = tmp_path / "rank-hlo.json"
    proc = subprocess.run(["make", "rank", f"DATA_DIR={data_dir}", f"HLO={ROOT / 'docs/examples/jax_blocks.hlo.txt'}",
                           "CONFIGS=200", f"OUT={out}", "TOP=3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert sorted(doc["order"]) == list(range(200)) and "ranked by ensemble" in proc.stdout, proc.stdout
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file()) == before  # nothing written in data/


@pytest.mark.slow
def test_submission_refuses_a_graph_without_predictions(tmp_path: Path) -> None:
    """Predictions that miss a test graph: the validator fails and no CSV is written."""
    import numpy as np

    from builders import write_tiny_graph
    from pipeline.io.predictions import write_predictions

    root = tmp_path / "raw"
    for stem in ("a", "b"):
        write_tiny_graph(root / "tile/xla/test" / f"{stem}.npz", "tile", [0] * 6)
    pred = tmp_path / "pred.parquet"
    write_predictions(pred, {"tile:xla:a": np.arange(6.0)})
    out = tmp_path / "sub.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.submission", f"data={root}", f"predictions={pred}",
         f"submission={out}", f"hydra.run.dir={tmp_path}/h"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "tile:xla:b" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
