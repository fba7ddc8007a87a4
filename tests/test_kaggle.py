"""Kaggle packaging: metadata the CLI accepts, the generated notebook executed locally on a tiny
embedded sample (its submission passes the validator), saved pad statistics, and push refusal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from builders import cfg as stage_cfg
from conftest import ROOT
from pipeline import kaggle, pad, prune, sample_data
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover, rel_path
from pipeline.io.submission_csv import validate_submission

KERNEL_FIELDS = {"id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
                 "enable_internet", "dataset_sources", "competition_sources", "kernel_sources"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny raw tree and the artifacts of a sample run: pruned, padded, saved statistics."""
    root = tmp_path_factory.mktemp("kaggle")
    d = {"raw": root / "raw", "pruned": root / "interim" / "pruned", "padded": root / "interim" / "padded",
         "models": root / "models", "root": root}
    sample_data.generate(stage_cfg("sample_data", out=d["raw"], **{"graphs.train": 2, "graphs.valid": 1, "graphs.test": 1,
                                                                 "tile_scale": 1}))
    prune.run(stage_cfg("prune", data=d["raw"], out=d["pruned"], jobs=1))
    pad.run(stage_cfg("pad", data=d["pruned"], out=d["padded"], jobs=1))
    d["stats"] = d["padded"] / "stats.json"
    return d


def _build(trained: dict[str, Path], out: Path, **kw) -> dict:
    kw = {"models_dir": trained["models"], "stats": trained["stats"], "owner": "someone", "wheels.download": False, **kw}
    cfg = stage_cfg("kaggle", out=out, **kw)
    return kaggle.build(cfg)


def test_metadata_has_what_the_cli_requires(trained, tmp_path) -> None:
    out = tmp_path / "build"
    manifest = _build(trained, out)
    meta = json.loads((out / "kernel" / "kernel-metadata.json").read_text())
    assert KERNEL_FIELDS <= set(meta)
    assert meta["id"] == "someone/tpugraphs-pipeline-submission"
    assert meta["id"].split("/")[1] == kaggle.slugify(meta["title"])  # Kaggle links title and slug
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    assert meta["competition_sources"] == ["predict-ai-model-runtime"]
    ds = json.loads((out / "dataset" / "dataset-metadata.json").read_text())
    assert meta["dataset_sources"] == [ds["id"]] == ["someone/tpugraphs-pipeline-bundle"]
    assert 6 <= len(ds["title"]) <= 50 and ds["licenses"][0]["name"]
    nb = nbformat.read(out / "kernel" / meta["code_file"], as_version=4)
    nbformat.validate(nb)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "DATA = '/kaggle/input/predict-ai-model-runtime/npz_all/npz'" in params.source
    assert "BUNDLE = '/kaggle/input/tpugraphs-pipeline-bundle'" in params.source
    assert "SUBMISSION = '/kaggle/working/submission.csv'" in params.source
    # the bundle: the project without tests or data, the statistics, nothing that was not trained
    code = out / "dataset" / "code"
    assert (code / "pipeline" / "pad.py").is_file() and (code / "conf" / "pad.yaml").is_file()
    assert (code / "pyproject.toml").is_file() and not (code / "tests").exists() and not (code / "data").exists()
    assert not list(code.rglob("__pycache__"))
    assert (out / "dataset" / "artifacts" / "stats.json").read_text() == trained["stats"].read_text()
    assert manifest["models"] == [] and manifest["stats"] is True and (out / ".complete").is_file()


def test_bad_names_are_refused(trained, tmp_path) -> None:
    with pytest.raises(DataError, match="does not match kernel.title"):
        _build(trained, tmp_path / "a", **{"kernel.title": "Another title"})
    with pytest.raises(DataError, match="not a Kaggle slug"):
        _build(trained, tmp_path / "b", **{"dataset.slug": "Bad_Slug"})
    assert not (tmp_path / "a" / "dataset").exists()


def test_wheels_are_bundled_from_the_cache(trained, tmp_path) -> None:
    """No network: a cached wheel is copied into the bundle and named in the manifest."""
    out = tmp_path / "build"
    cache = out / ".wheels"
    cache.mkdir(parents=True)
    (cache / "omegaconf-2.3.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + bytes(18))
    manifest = _build(trained, out, **{"wheels.download": True, "wheels.packages": "['omegaconf==2.3.0']"})
    assert manifest["wheels"] == ["omegaconf==2.3.0"]
    assert (out / "dataset" / "wheels" / "omegaconf-2.3.0-py3-none-any.whl").is_file()


def test_pad_applies_saved_statistics(trained, tmp_path) -> None:
    """Padding test files alone with `stats_from` gives the same tensors as the training run."""
    out = tmp_path / "padded"
    pad.run(stage_cfg("pad", data=trained["pruned"], out=out, splits="[test]", stats_from=trained["stats"], jobs=1))
    saved = json.loads(trained["stats"].read_text())["collections"]
    assert json.loads((out / "stats.json").read_text())["collections"] == saved
    files = discover(trained["pruned"], splits=["test"])
    assert len(files) == 5
    for f in files:
        rel = rel_path(f.collection, f.split, f.stem)
        with np.load(out / rel) as a, np.load(trained["padded"] / rel) as b:
            np.testing.assert_array_equal(a["node_feat_norm"], b["node_feat_norm"])
    # fitting on the test files would differ: the knob is what makes them equal
    refit = tmp_path / "refit"
    pad.run(stage_cfg("pad", data=trained["pruned"], out=refit, splits="[test]", fit_split="test", jobs=1))
    assert json.loads((refit / "stats.json").read_text())["collections"] != saved
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"collections": {"tile:xla": saved["tile:xla"]}}))
    with pytest.raises(DataError, match="no normalization statistics for layout"):
        pad.run(stage_cfg("pad", data=trained["pruned"], out=tmp_path / "p2", splits="[test]", stats_from=partial, jobs=1))


def _execute(nb_path: Path, workdir: Path, **params) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = kaggle.parameterize(nbformat.read(nb_path, as_version=4), **params)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def _output(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_locally_and_writes_a_valid_submission(trained, tmp_path) -> None:
    files = discover(trained["raw"], splits=["test"])
    out = tmp_path / "build"
    _build(trained, out)
    nb_path = out / "kernel" / "tpugraphs-pipeline-submission.ipynb"
    work = tmp_path / "work"

    # 1. no trained model in the bundle: preprocessing with the saved statistics, then the baseline
    sub = tmp_path / "submission.csv"
    nb = _execute(nb_path, tmp_path, DATA=str(trained["raw"]), BUNDLE=str(out / "dataset"), WORK=str(work),
                  SUBMISSION=str(sub), INSTALL=False, PREPROCESS=True, JOBS=1)
    rep = validate_submission(sub, files)
    assert rep.ok, rep.lines()
    padded = json.loads((work / "data" / "interim" / "kaggle" / "padded" / "stats.json").read_text())
    assert padded["applied_from"] == str(out / "dataset" / "artifacts" / "stats.json")
    assert (work / "data" / "processed" / "kaggle" / ".complete").is_file()
    assert "submitting the predictions of: baseline" in _output(nb)

    # 2. a bundled model is detected and run in predict mode, and its predictions are submitted.
    # Its stand-in predict command (the baseline, written where a gbdt writes) keeps this fast.
    models = tmp_path / "models"
    (models / "gbdt").mkdir(parents=True)
    (models / "gbdt" / "model_seed0.txt").write_text("stand-in\n")
    _build(trained, out, models_dir=models)
    manifest_path = out / "dataset" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["models"] == ["gbdt"]
    manifest["inference"]["gbdt"] = "pipeline.baseline splits=[test] name=gbdt"
    manifest_path.write_text(json.dumps(manifest))
    sub2 = tmp_path / "submission2.csv"
    nb = _execute(nb_path, tmp_path, DATA=str(trained["raw"]), BUNDLE=str(out / "dataset"), WORK=str(work),
                  SUBMISSION=str(sub2), INSTALL=False, PREPROCESS=False, JOBS=1)
    assert validate_submission(sub2, files).ok
    text = _output(nb)
    assert "trained models: gbdt" in text and "submitting the predictions of: gbdt" in text
    assert (work / "data" / "models" / "kaggle" / "gbdt" / "model_seed0.txt").is_file()
    assert sub2.read_text() == sub.read_text()  # the stand-in ranks as the baseline does


def _fake_kaggle(bin_dir: Path, log: Path, status_rc: int) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "kaggle"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                      f"if [ \"$1 $2\" = \"datasets status\" ]; then echo ready; exit {status_rc}; fi\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _push(tmp_path: Path, env: dict, out: Path, trained: dict | None = None) -> subprocess.CompletedProcess:
    where = [f"models_dir={trained['models']}", f"stats={trained['stats']}"] if trained else []
    return subprocess.run([sys.executable, "-m", "pipeline.kaggle", "mode=push", f"out={out}", "owner=someone",
                           "wheels.download=false", "push_wait_s=1", *where, f"hydra.run.dir={tmp_path}/h"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_push_without_credentials_says_what_to_set(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path), PATH=os.path.dirname(sys.executable) + ":/usr/bin:/bin")
    proc = _push(tmp_path, env, tmp_path / "build")
    assert proc.returncode == 1
    assert "KAGGLE_USERNAME" in proc.stderr and "kaggle.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "build").exists()  # nothing built before the check


def test_push_runs_the_cli_commands(trained, tmp_path) -> None:
    out = tmp_path / "build"
    log = tmp_path / "calls.txt"
    _fake_kaggle(tmp_path / "bin", log, status_rc=1)  # the dataset does not exist yet: create
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "KAGGLE_USERNAME": "someone", "KAGGLE_KEY": "x"}
    proc = _push(tmp_path, env, out, trained)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "kernel" / "kernel-metadata.json").read_text())["id"] == "someone/tpugraphs-pipeline-submission"
    calls = log.read_text().splitlines()
    assert calls[0] == "datasets status someone/tpugraphs-pipeline-bundle"
    assert calls[1] == f"datasets create -p {out / 'dataset'} --dir-mode zip"
    assert calls[-1] == f"kernels push -p {out / 'kernel'}"
    log.unlink()
    _fake_kaggle(tmp_path / "bin", log, status_rc=0)  # it exists: a new version
    assert _push(tmp_path, env, out, trained).returncode == 0
    assert log.read_text().splitlines()[1].startswith(f"datasets version -p {out / 'dataset'} -m ")


@pytest.mark.slow
def test_notebook_with_a_trained_gbdt(trained, tmp_path) -> None:
    """The real thing on the tiny sample: a LightGBM run's artifacts, predicted on the test files."""
    from pipeline import extract, train_gbdt

    processed = tmp_path / "processed"
    extract.run(stage_cfg("extract", data=trained["padded"], out=processed, jobs=1))
    models = tmp_path / "models"
    train_gbdt.run(stage_cfg("train_gbdt", data=processed / "tables", models=models / "gbdt", predictions=tmp_path / "pred",
                        splits="[valid]", **{"model.num_boost_round": 10}))
    out = tmp_path / "build"
    assert _build(trained, out, models_dir=models)["models"] == ["gbdt"]
    sub = tmp_path / "submission.csv"
    nb = _execute(out / "kernel" / "tpugraphs-pipeline-submission.ipynb", tmp_path, DATA=str(trained["raw"]),
                  BUNDLE=str(out / "dataset"), WORK=str(tmp_path / "work"), SUBMISSION=str(sub), INSTALL=False, JOBS=1)
    assert validate_submission(sub, discover(trained["raw"], splits=["test"])).ok
    text = _output(nb)
    assert "pipeline.extract" in text and "stats_from=" in text  # "auto" preprocessed for the gbdt
    assert "submitting the predictions of: gbdt" in text


@pytest.mark.slow  # runs stages end to end
def test_bundle_with_gbdt_fold_models_predicts_their_mean(trained, tmp_path) -> None:
    """LightGBM trained in folds: the bundle carries every fold model (not their predictions), and
    predict mode on the bundled models (what the notebook runs) gives the fold models' mean, as at
    training."""
    from pipeline import extract, train_gbdt
    from pipeline.io.predictions import read_predictions

    processed = tmp_path / "processed"
    extract.run(stage_cfg("extract", data=trained["padded"], out=processed, jobs=1))
    models, pred = tmp_path / "models", tmp_path / "pred"
    cfg = stage_cfg("train_gbdt", data=processed / "tables", models=models / "gbdt", predictions=pred, folds=2,
                    **{"model.num_boost_round": 10})
    train_gbdt.TRAINER.fit(cfg)
    out = tmp_path / "build"
    assert _build(trained, out, models_dir=models)["models"] == ["gbdt"]
    bundled = out / "dataset" / "artifacts" / "models" / "gbdt"
    assert (bundled / "runs.json").is_file() and (bundled / "fold0").is_dir() and (bundled / "fold1").is_dir()
    assert not list(bundled.rglob("*.parquet"))  # the runs' own predictions stay home
    again = tmp_path / "again"
    train_gbdt.TRAINER.fit(stage_cfg("train_gbdt", data=processed / "tables", models=bundled, predictions=again, mode="predict",
                             splits="[test]"))
    got = read_predictions(again / "gbdt" / "test.parquet")
    want = read_predictions(pred / "gbdt" / "test.parquet")
    assert set(got) == set(want) and all(np.allclose(got[g], want[g]) for g in want)
