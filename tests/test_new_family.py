"""docs/ARCHITECTURE.md's checklist for a new model family, followed to the letter: a toy family
(a constant ranker) added in a copy of the project through its files alone, then `make all` on
the tiny root; make, the ensemble, the report, the rehearsal and transductive lists follow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builders import TINY
from conftest import ROOT

STAGE = '''"""A constant ranker: every config of a graph scores the same (the checklist's toy family)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.gnn.dataset import graph_files, load_graph
from pipeline.io.catalog import collection_dir, wanted_collections
from pipeline.train import trainer


def fit(collection: str, cfg: DictConfig) -> dict | None:
    paths = graph_files(cfg.data, collection, "train")
    if not paths:
        return None
    out = Path(cfg.models) / collection_dir(collection)
    out.mkdir(parents=True, exist_ok=True)
    (out / "constant.json").write_text(json.dumps({"score": 0.0}))
    return {"graphs": len(paths)}


def predict(collection: str, split: str, cfg: DictConfig) -> dict[str, np.ndarray]:
    if not (Path(cfg.models) / collection_dir(collection) / "constant.json").is_file():
        return {}
    graphs = [load_graph(p, collection, split) for p in graph_files(cfg.data, collection, split)]
    return {g.id: g.to_original(np.zeros(g.num_configs)) for g in graphs}


def run(cfg: DictConfig) -> dict:
    cfg = trainer.check(cfg)
    present = [c for c in wanted_collections(cfg.collections) if (Path(cfg.data) / collection_dir(c)).is_dir()]
    return trainer.run_collections(cfg, present, lambda c: fit(c, cfg), lambda c, split: predict(c, split, cfg),
                                   desc="train-constant")


TRAINER = trainer.Trainer("train_constant", run, valid_metric=lambda _: float("-inf"))


@stage("train_constant")
def main(cfg: DictConfig) -> None:
    TRAINER.fit(cfg)


if __name__ == "__main__":
    main()
'''

CONF = """defaults:
  - common
  - paths: default
  - _self_
  - override hydra/job_logging: console

name: constant
mode: train
data: ${paths.processed}/gnn
models: ${paths.models}/${name}
predictions: ${paths.predictions}
collections: null
splits: [valid, test]
"""

STAGE_LINE = '''    Stage("train-constant", "train_constant", ("extract",), "{models}/constant/.complete", trains=True,
          help="a constant ranker -> predictions constant/{valid,test}"),
'''
FAMILY_LINE = '''    Family("constant", "train-constant", ("constant.json",)),
'''


def add_family(copy: Path) -> list[str]:
    """The checklist's files for the toy family (it has no model code or knobs of its own); returns them."""
    (copy / "pipeline/train_constant.py").write_text(STAGE)
    (copy / "conf/train_constant.yaml").write_text(CONF)
    g = copy / "pipeline/graph.py"
    text = g.read_text()
    stages, families = "\nSTAGES: tuple[Stage, ...] = (\n", "\nFAMILIES: tuple[Family, ...] = (\n"
    assert stages in text and families in text
    g.write_text(text.replace(stages, stages + STAGE_LINE).replace(families, families + FAMILY_LINE))
    return ["pipeline/train_constant.py", "conf/train_constant.yaml", "pipeline/graph.py"]


@pytest.mark.slow
def test_a_toy_family_added_through_the_checklist_runs_in_make_all(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    for d in ("pipeline", "features", "models", "conf", "notebooks"):
        shutil.copytree(ROOT / d, copy / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy2(ROOT / f, copy / f)
    touched = add_family(copy)
    assert len(touched) <= 5
    env = {**os.environ, "PYTHONPATH": str(copy), "PROGRESS_INTERVAL": "0"}
    from pipeline.core.cli import compose
    from pipeline.sample_data import generate

    raw = tmp_path / "tiny"
    generate(compose("sample_data", [f"out={raw}", *TINY]))
    data, subs, reports = tmp_path / "data", tmp_path / "subs", tmp_path / "reports"
    proc = subprocess.run(["make", "all", f"VENV={ROOT / '.venv'}", f"DATA={raw}", "DATASET=toy", f"DATA_DIR={data}",
                           f"SUBMISSIONS={subs}", f"REPORTS={reports}", "GNN_ARGS=experiment=gnn_quick"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "-m pipeline.train_constant" in proc.stdout
    pred = data / "predictions" / "toy" / "constant"
    assert (pred / "valid.parquet").is_file() and (pred / "test.parquet").is_file()
    assert (data / "models" / "toy" / "constant" / ".complete").is_file()
    weights = json.loads((data / "models" / "toy" / "ensemble" / "weights.json").read_text())
    assert "constant" in weights["members"]
    validation = json.loads((reports / "toy" / "validation.json").read_text())
    assert "constant" in validation["models"]
    assert (subs / "toy" / "submission.csv").is_file()
    # the lists that follow the stage graph: the rehearsal's stages and transductive's members
    code = ("from pipeline.core.cli import compose; from pipeline.tools import rehearsal; from pipeline import transductive; "
            "r = rehearsal.with_graph_defaults(compose('rehearsal')); t = transductive.with_defaults(compose('transductive')); "
            "print('train_constant' in r.stages and 'train_constant' in r.per_collection and 'train_constant' in r.merged, "
            "'constant' in t.members and 'constant' in t.ensembles.ensemble)")
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
